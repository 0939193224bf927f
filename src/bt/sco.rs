//! SCO sockets (the synchronous voice link of the Hands-Free Profile) with
//! libc and tokio's [`AsyncFd`]: bluer has none. A [`ScoListener`] accepts
//! links on an adapter's address; [`ScoStream::connect`] opens one. Each
//! packet is one `SOCK_SEQPACKET` message of at most [`ScoStream::mtu`]
//! bytes. With CVSD (the voice setting 0x0060, the kernel's default) the
//! host side carries 16-bit little-endian linear PCM at 8 kHz, mono; with
//! the transparent setting (0x0003, for mSBC) the bytes go on air as the
//! host writes them ([`VoiceSetting`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::adapter::DeviceAddr;

/// Registers an owned socket with the reactor.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor that stays open, with
    // the same number, until the AsyncFd owning it drops or gives it back.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

const AF_BLUETOOTH: libc::c_int = 31;
const BTPROTO_SCO: libc::c_int = 2;
const SOL_SCO: libc::c_int = 17;
const SCO_OPTIONS: libc::c_int = 1;
const SOL_BLUETOOTH: libc::c_int = 274;
const BT_VOICE: libc::c_int = 11;

/// The voice setting of a SCO socket (`BT_VOICE`), set before it connects:
/// what the controller does with the audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoiceSetting {
    /// The controller codes CVSD; the host side is 16-bit linear PCM
    /// (`BT_VOICE_CVSD_16BIT`, the kernel's default).
    Cvsd,
    /// The controller passes the bytes through: the host codes the audio
    /// itself, as mSBC needs (`BT_VOICE_TRANSPARENT`).
    Transparent,
}

impl VoiceSetting {
    /// The value of `struct bt_voice`'s `setting`.
    pub fn bits(self) -> u16 {
        match self {
            VoiceSetting::Cvsd => 0x0060,
            VoiceSetting::Transparent => 0x0003,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VoiceSetting::Cvsd => "cvsd",
            VoiceSetting::Transparent => "transparent",
        }
    }
}

/// Sets the socket's voice setting (`setsockopt(SOL_BLUETOOTH, BT_VOICE)`).
fn set_voice(fd: &OwnedFd, voice: VoiceSetting) -> io::Result<()> {
    /// `struct bt_voice`.
    #[repr(C)]
    struct BtVoice {
        setting: u16,
    }
    let v = BtVoice {
        setting: voice.bits(),
    };
    // SAFETY: v is a readable bt_voice of the length given.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_BLUETOOTH,
            BT_VOICE,
            (&v as *const BtVoice).cast(),
            std::mem::size_of::<BtVoice>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `struct sockaddr_sco`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockaddrSco {
    family: libc::sa_family_t,
    bdaddr: [u8; 6],
}

fn sockaddr(addr: &DeviceAddr) -> SockaddrSco {
    let mut bdaddr = [0u8; 6];
    // DeviceAddr is validated as six hex pairs; the kernel keeps the
    // least significant byte first.
    for (i, part) in addr.as_str().split(':').rev().enumerate().take(6) {
        bdaddr[i] = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    SockaddrSco {
        family: AF_BLUETOOTH as libc::sa_family_t,
        bdaddr,
    }
}

fn device_addr(sa: &SockaddrSco) -> Option<DeviceAddr> {
    let b = sa.bdaddr;
    DeviceAddr::parse(&format!(
        "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
        b[5], b[4], b[3], b[2], b[1], b[0]
    ))
}

const SOCKADDR_LEN: libc::socklen_t = std::mem::size_of::<SockaddrSco>() as libc::socklen_t;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A non-blocking SCO socket bound to `local`.
fn bound_socket(local: &DeviceAddr) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = check(unsafe {
        libc::socket(
            AF_BLUETOOTH,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            BTPROTO_SCO,
        )
    })?;
    // SAFETY: fd is a fresh descriptor owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = sockaddr(local);
    // SAFETY: sa is a valid sockaddr_sco of SOCKADDR_LEN bytes.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const SockaddrSco).cast(),
            SOCKADDR_LEN,
        )
    })?;
    Ok(fd)
}

/// Accepts SCO links to one adapter.
pub struct ScoListener {
    fd: AsyncFd<OwnedFd>,
}

impl ScoListener {
    /// Listens on the adapter whose address is `local`.
    pub fn bind(local: &DeviceAddr) -> io::Result<ScoListener> {
        ScoListener::bind_with_voice(local, VoiceSetting::Cvsd)
    }

    /// Listens on the adapter whose address is `local`; the links it
    /// accepts carry `voice` (set on the socket before it listens, and
    /// inherited by every link accepted from it).
    pub fn bind_with_voice(local: &DeviceAddr, voice: VoiceSetting) -> io::Result<ScoListener> {
        let fd = bound_socket(local)?;
        if voice != VoiceSetting::Cvsd {
            set_voice(&fd, voice)?;
        }
        // SAFETY: fd is a bound socket.
        check(unsafe { libc::listen(fd.as_raw_fd(), 1) })?;
        Ok(ScoListener { fd: register(fd)? })
    }

    /// The next link and the remote device's address.
    pub async fn accept(&self) -> io::Result<(ScoStream, DeviceAddr)> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                let mut sa = SockaddrSco {
                    family: 0,
                    bdaddr: [0; 6],
                };
                let mut len = SOCKADDR_LEN;
                // SAFETY: sa is writable for len bytes.
                let c = check(unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        (&mut sa as *mut SockaddrSco).cast(),
                        &mut len,
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    )
                })?;
                // SAFETY: c is a fresh descriptor from accept4.
                Ok((unsafe { OwnedFd::from_raw_fd(c) }, sa))
            });
            match r {
                Ok(Ok((fd, sa))) => {
                    let peer = device_addr(&sa).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "unparsable peer address")
                    })?;
                    return Ok((ScoStream::from_fd(fd)?, peer));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// One SCO link.
pub struct ScoStream {
    fd: AsyncFd<OwnedFd>,
    mtu: u16,
}

impl ScoStream {
    fn from_fd(fd: OwnedFd) -> io::Result<ScoStream> {
        #[repr(C)]
        #[derive(Default)]
        struct ScoOptions {
            mtu: u16,
        }
        let mut opts = ScoOptions::default();
        let mut len = std::mem::size_of::<ScoOptions>() as libc::socklen_t;
        // SAFETY: opts is writable for len bytes.
        check(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                SOL_SCO,
                SCO_OPTIONS,
                (&mut opts as *mut ScoOptions).cast(),
                &mut len,
            )
        })?;
        Ok(ScoStream {
            fd: register(fd)?,
            mtu: opts.mtu,
        })
    }

    /// Opens a link from the adapter `local` to `remote` (an ACL link is
    /// set up first if there is none) with the voice setting `voice`. The
    /// kernel's default, CVSD, is left as it is; a controller that cannot
    /// carry transparent data fails the connect (`EOPNOTSUPP`).
    pub async fn connect(
        local: &DeviceAddr,
        remote: &DeviceAddr,
        voice: VoiceSetting,
    ) -> io::Result<ScoStream> {
        let fd = bound_socket(local)?;
        if voice != VoiceSetting::Cvsd {
            set_voice(&fd, voice)?;
        }
        let sa = sockaddr(remote);
        // SAFETY: sa is a valid sockaddr_sco of SOCKADDR_LEN bytes.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa as *const SockaddrSco).cast(),
                SOCKADDR_LEN,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        let fd = register(fd)?;
        // Connected once writable; the outcome is in SO_ERROR.
        let guard = fd.writable().await?;
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: err is writable for len bytes.
        check(unsafe {
            libc::getsockopt(
                fd.get_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        drop(guard);
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        ScoStream::from_fd(fd.into_inner())
    }

    /// Two connected `SOCK_SEQPACKET` Unix sockets standing in for the two
    /// ends of a SCO link (packets keep their boundaries the same way): for
    /// tests that play a headset without a radio.
    pub fn test_pair(mtu: u16) -> io::Result<(ScoStream, ScoStream)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds has room for the two descriptors socketpair writes.
        check(unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        })?;
        // SAFETY: both are fresh descriptors owned from here on.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((
            ScoStream {
                fd: register(a)?,
                mtu,
            },
            ScoStream {
                fd: register(b)?,
                mtu,
            },
        ))
    }

    /// The largest packet the link carries, in bytes.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Receives one packet; `Ok(0)`: the link closed.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                // SAFETY: buf is writable for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            })
            .await
    }

    /// Sends one packet (at most [`ScoStream::mtu`] bytes).
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                // SAFETY: packet is readable for its length.
                let n = unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_to_the_kernel_least_significant_byte_first() {
        let a = DeviceAddr::parse("00:AA:01:01:00:01").expect("valid address");
        let sa = sockaddr(&a);
        assert_eq!(sa.bdaddr, [0x01, 0x00, 0x01, 0x01, 0xAA, 0x00]);
        assert_eq!(device_addr(&sa), Some(a));
    }

    #[test]
    fn voice_settings_are_the_kernels_values() {
        assert_eq!(VoiceSetting::Cvsd.bits(), 0x0060);
        assert_eq!(VoiceSetting::Transparent.bits(), 0x0003);
    }
}
