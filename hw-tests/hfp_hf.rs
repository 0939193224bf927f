//! The headset side of the Bluetooth hardware tests: a Hands-Free unit that
//! connects to the door station's Audio Gateway over RFCOMM from a chosen
//! local controller, runs the service level connection (HFP 1.8, no codec
//! negotiation: CVSD) and then tries the SCO audio link.
//!
//! ```text
//! hfp-hf <local address> <gateway address> [channel]
//! ```
//!
//! Prints one line per step (`SLC established`, `SCO connected`, or the
//! reason it failed) and exits 0 only when the service level connection
//! was established. The SCO result is reported, not judged: the test that
//! runs this decides what it expects of the emulated controllers.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use bluer::Address;
use bluer::rfcomm::{Socket, SocketAddr};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const STEP: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(local), Some(gateway)) = (
        args.get(1).and_then(|a| a.parse::<Address>().ok()),
        args.get(2).and_then(|a| a.parse::<Address>().ok()),
    ) else {
        eprintln!("usage: hfp-hf <local address> <gateway address> [channel]");
        return ExitCode::from(2);
    };
    let channel = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(13u8);
    match run(local, gateway, channel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(local: Address, gateway: Address, channel: u8) -> Result<(), String> {
    let socket = Socket::new().map_err(|e| format!("RFCOMM socket: {e}"))?;
    socket
        .bind(SocketAddr::new(local, 0))
        .map_err(|e| format!("bind to {local}: {e}"))?;
    let stream = tokio::time::timeout(STEP, socket.connect(SocketAddr::new(gateway, channel)))
        .await
        .map_err(|_| format!("RFCOMM connect to {gateway} channel {channel} timed out"))?
        .map_err(|e| format!("RFCOMM connect to {gateway} channel {channel}: {e}"))?;
    println!("RFCOMM connected to {gateway} channel {channel}");
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);

    // Features: remote volume control only; no codec negotiation, so the
    // gateway uses CVSD.
    let brsf = command(&mut read, &mut write, "AT+BRSF=16").await?;
    if !brsf.iter().any(|l| l.starts_with("+BRSF:")) {
        return Err(format!("no +BRSF in {brsf:?}"));
    }
    let cind = command(&mut read, &mut write, "AT+CIND=?").await?;
    if !cind.iter().any(|l| l.starts_with("+CIND:") && l.contains("\"call\"")) {
        return Err(format!("no indicator list in {cind:?}"));
    }
    command(&mut read, &mut write, "AT+CIND?").await?;
    command(&mut read, &mut write, "AT+CMER=3,0,0,1").await?;
    println!("SLC established");

    match sco_connect(local, gateway).await {
        Ok(mtu) => println!("SCO connected (mtu {mtu})"),
        Err(e) => println!("SCO not connected: {e}"),
    }
    Ok(())
}

/// Sends one AT command; returns the reply lines up to the final `OK`.
async fn command<R, W>(read: &mut R, write: &mut W, line: &str) -> Result<Vec<String>, String>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    println!("> {line}");
    write
        .write_all(format!("{line}\r").as_bytes())
        .await
        .map_err(|e| format!("write {line}: {e}"))?;
    let mut out = Vec::new();
    loop {
        let mut l = String::new();
        let n = tokio::time::timeout(STEP, read.read_line(&mut l))
            .await
            .map_err(|_| format!("no answer to {line}"))?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("gateway closed the channel after {line}"));
        }
        let l = l.trim().to_owned();
        if l.is_empty() {
            continue;
        }
        println!("< {l}");
        match l.as_str() {
            "OK" => return Ok(out),
            "ERROR" => return Err(format!("{line} answered ERROR")),
            _ => out.push(l),
        }
    }
}

const AF_BLUETOOTH: libc::c_int = 31;
const BTPROTO_SCO: libc::c_int = 2;
const SOL_SCO: libc::c_int = 17;
const SCO_OPTIONS: libc::c_int = 1;

#[repr(C)]
struct SockaddrSco {
    family: libc::sa_family_t,
    bdaddr: [u8; 6],
}

fn sco_addr(a: Address) -> SockaddrSco {
    // The kernel keeps addresses least significant byte first.
    let mut b = a.0;
    b.reverse();
    SockaddrSco {
        family: AF_BLUETOOTH as libc::sa_family_t,
        bdaddr: b,
    }
}

/// Opens a SCO link (CVSD) to the gateway from `local`; returns its MTU.
async fn sco_connect(local: Address, gateway: Address) -> Result<u16, String> {
    let task = tokio::task::spawn_blocking(move || -> Result<u16, String> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(AF_BLUETOOTH, libc::SOCK_SEQPACKET, BTPROTO_SCO) };
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = std::mem::size_of::<SockaddrSco>() as libc::socklen_t;
        let src = sco_addr(local);
        // SAFETY: src is a valid sockaddr_sco of `len` bytes.
        if unsafe { libc::bind(fd.as_raw_fd(), (&src as *const SockaddrSco).cast(), len) } < 0 {
            return Err(format!("bind: {}", std::io::Error::last_os_error()));
        }
        let dst = sco_addr(gateway);
        // SAFETY: dst is a valid sockaddr_sco of `len` bytes.
        if unsafe { libc::connect(fd.as_raw_fd(), (&dst as *const SockaddrSco).cast(), len) } < 0 {
            return Err(format!("connect: {}", std::io::Error::last_os_error()));
        }
        #[repr(C)]
        #[derive(Default)]
        struct ScoOptions {
            mtu: u16,
        }
        let mut opts = ScoOptions::default();
        let mut olen = std::mem::size_of::<ScoOptions>() as libc::socklen_t;
        // SAFETY: opts is writable for olen bytes.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                SOL_SCO,
                SCO_OPTIONS,
                (&mut opts as *mut ScoOptions).cast(),
                &mut olen,
            )
        };
        if r < 0 {
            return Err(format!("SCO_OPTIONS: {}", std::io::Error::last_os_error()));
        }
        Ok(opts.mtu)
    });
    match tokio::time::timeout(Duration::from_secs(30), task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("task: {e}")),
        Err(_) => Err("connect timed out after 30 s".into()),
    }
}
