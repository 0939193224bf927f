//! TURN over TCP and TLS for a WebRTC stack that only speaks TURN over UDP.
//!
//! Restrictive networks (hotels, offices, some mobile carriers) only let
//! TCP 443 out, so a door station must reach its TURN server over TCP or
//! TLS. The WebRTC stack skips such servers, so each one is replaced by a
//! local UDP endpoint on loopback: every datagram the stack sends there is
//! written to a TCP (or TLS) connection to the real server, and the byte
//! stream coming back is cut into STUN messages and ChannelData frames
//! (RFC 5766 §2.1 and §11.5: over TCP, ChannelData is padded to a multiple
//! of four bytes) that go back as datagrams. One connection per local UDP
//! source, so each allocation keeps its own 5-tuple at the server.
//!
//! The stream carries only the call's relayed media (and its TURN control
//! messages), so with `ice.dscp` its segments are marked Expedited
//! Forwarding: `IP_TOS` (IPv4) or `IPV6_TCLASS` set on the socket before it
//! connects. Unlike the UDP path, no part of the stack rewrites it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A TURN server reached over a stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamTarget {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("TURN URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot open the local TURN bridge socket: {0}")]
    Bind(std::io::Error),
    #[error("TLS setup for TURN server {host}: {reason}")]
    Tls { host: String, reason: String },
}

/// What a `turn:`/`turns:` URL asks for, if it needs a stream bridge.
/// Returns `None` for TURN over UDP and for STUN URLs (used as they are).
pub fn stream_target(url: &str) -> Result<Option<StreamTarget>, BridgeError> {
    let err = |reason: &str| BridgeError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("turns:") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("turn:") {
        (false, r)
    } else {
        return Ok(None);
    };
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, q),
        None => (rest, ""),
    };
    let transport = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("transport="))
        .unwrap_or(if tls { "tcp" } else { "udp" });
    match transport {
        "udp" if !tls => return Ok(None),
        "udp" => return Err(err("turns: over UDP (DTLS) is not supported")),
        "tcp" => {}
        other => return Err(err(&format!("unknown transport `{other}`"))),
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p.parse::<u16>().map_err(|_| err("bad port"))?;
            (h, port)
        }
        _ => (hostport, if tls { 5349 } else { 3478 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(err("no host"));
    }
    Ok(Some(StreamTarget {
        host: host.to_owned(),
        port,
        tls,
    }))
}

/// Length of the first complete frame in `buf` (STUN message or padded
/// ChannelData), `Ok(None)` if more bytes are needed, `Err` if the stream
/// carries something that is neither.
pub fn frame_len(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let (frame, padded) = match buf[0] >> 6 {
        // STUN: 20-byte header, attributes already padded.
        0b00 => (20 + len, 20 + len),
        // ChannelData (channel numbers 0x4000..=0x7FFF): padded on streams.
        0b01 => (4 + len, (4 + len).div_ceil(4) * 4),
        _ => {
            return Err(format!(
                "unexpected byte 0x{:02x} on the TURN stream",
                buf[0]
            ));
        }
    };
    if buf.len() < padded {
        return Ok(None);
    }
    Ok(Some((frame, padded)))
}

/// Pad a datagram for the stream: ChannelData to four bytes, STUN as is.
fn pad_for_stream(datagram: &[u8]) -> Vec<u8> {
    let mut v = datagram.to_vec();
    if datagram.first().is_some_and(|b| b >> 6 == 0b01) {
        v.resize(datagram.len().div_ceil(4) * 4, 0);
    }
    v
}

/// Trust anchors for `turns:` servers: the system's roots plus an optional
/// PEM file (a private CA, or a self-signed server certificate).
#[derive(Clone, Debug, Default)]
pub struct TlsTrust {
    pub extra_ca_file: Option<PathBuf>,
}

fn tls_connector(host: &str, trust: &TlsTrust) -> Result<tokio_rustls::TlsConnector, BridgeError> {
    let roots = crate::hub::tls::trust_roots(trust.extra_ca_file.as_deref()).map_err(|e| {
        BridgeError::Tls {
            host: host.to_owned(),
            reason: e.to_string(),
        }
    })?;
    Ok(tokio_rustls::TlsConnector::from(
        crate::hub::tls::client_config(roots),
    ))
}

/// DSCP Expedited Forwarding (46) in the TOS / traffic-class byte.
pub const TOS_EF: u8 = 46 << 2;

/// Start a bridge for `target`; returns the loopback UDP address to give
/// the WebRTC stack as `turn:<addr>?transport=udp`. `tos`: the TOS /
/// traffic-class byte for the TCP connections to the server (`Some(TOS_EF)`
/// with `ice.dscp`), or the system's default.
pub async fn start(
    target: StreamTarget,
    trust: TlsTrust,
    tos: Option<u8>,
    cancel: CancellationToken,
) -> Result<SocketAddr, BridgeError> {
    let connector = if target.tls {
        Some(tls_connector(&target.host, &trust)?)
    } else {
        None
    };
    let udp = Arc::new(
        UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(BridgeError::Bind)?,
    );
    let local = udp.local_addr().map_err(BridgeError::Bind)?;
    info!(
        server = %format!("{}:{}", target.host, target.port),
        tls = target.tls,
        bridge = %local,
        tos = %tos.map(|t| format!("{t:#04x}")).unwrap_or_else(|| "default".into()),
        "TURN over {} bridged through {local}",
        if target.tls { "TLS" } else { "TCP" }
    );
    tokio::spawn(run(udp, target, connector, tos, cancel));
    Ok(local)
}

async fn run(
    udp: Arc<UdpSocket>,
    target: StreamTarget,
    connector: Option<tokio_rustls::TlsConnector>,
    tos: Option<u8>,
    cancel: CancellationToken,
) {
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            r = udp.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    debug!(error = %e, "TURN bridge receive error");
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        flows.retain(|_, tx| !tx.is_closed());
        let tx = flows.entry(from).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(flow(
                udp.clone(),
                from,
                target.clone(),
                connector.clone(),
                tos,
                rx,
                cancel.clone(),
            ));
            tx
        });
        // A full queue means the server is not keeping up: drop, as UDP would.
        let _ = tx.try_send(pad_for_stream(&buf[..n]));
    }
}

/// Connect to `server` (`host:port`), trying each resolved address in turn,
/// with the TOS / traffic-class byte set before the handshake so that every
/// segment carries it.
async fn connect(server: &str, tos: Option<u8>) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(server).await? {
        let attempt = async {
            let sock = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(t) = tos {
                if addr.is_ipv4() {
                    sock.set_tos_v4(u32::from(t))?;
                } else {
                    sock.set_tclass_v6(u32::from(t))?;
                }
            }
            sock.connect(addr).await
        };
        match attempt.await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
    }))
}

async fn flow(
    udp: Arc<UdpSocket>,
    client: SocketAddr,
    target: StreamTarget,
    connector: Option<tokio_rustls::TlsConnector>,
    tos: Option<u8>,
    rx: mpsc::Receiver<Vec<u8>>,
    cancel: CancellationToken,
) {
    let server = format!("{}:{}", target.host, target.port);
    let tcp = match connect(&server, tos).await {
        Ok(s) => s,
        Err(e) => {
            warn!(server = %server, error = %e, "cannot reach TURN server over TCP");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    match connector {
        None => pump(tcp, udp, client, rx, cancel, &server).await,
        Some(c) => {
            let name = match rustls::pki_types::ServerName::try_from(target.host.clone()) {
                Ok(n) => n,
                Err(e) => {
                    warn!(server = %server, error = %e, "bad TLS server name");
                    return;
                }
            };
            match c.connect(name, tcp).await {
                Ok(tls) => pump(tls, udp, client, rx, cancel, &server).await,
                Err(e) => {
                    warn!(server = %server, error = %e, "TLS handshake with TURN server failed")
                }
            }
        }
    }
}

async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    udp: Arc<UdpSocket>,
    client: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    cancel: CancellationToken,
    server: &str,
) {
    debug!(server, %client, "TURN stream flow open");
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut acc: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    loop {
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { return };
                if let Err(e) = wr.write_all(&d).await {
                    warn!(server, error = %e, "TURN stream write failed");
                    return;
                }
            }
            r = rd.read(&mut chunk) => {
                let n = match r {
                    Ok(0) => { debug!(server, "TURN server closed the stream"); return; }
                    Ok(n) => n,
                    Err(e) => { warn!(server, error = %e, "TURN stream read failed"); return; }
                };
                acc.extend_from_slice(&chunk[..n]);
                loop {
                    match frame_len(&acc) {
                        Ok(Some((len, padded))) => {
                            let _ = udp.send_to(&acc[..len], client).await;
                            acc.drain(..padded);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            warn!(server, error = %e, "TURN stream out of sync; closing it");
                            return;
                        }
                    }
                }
            }
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip_tos(s: &TcpStream) -> u8 {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket fd, and `v`/`len` describe an int buffer.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_TOS,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt(IP_TOS)");
        v as u8
    }

    #[tokio::test]
    async fn stream_to_the_server_carries_the_requested_tos() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let marked = connect(&addr, Some(TOS_EF)).await.unwrap();
        assert_eq!(ip_tos(&marked), 0xb8);
        let plain = connect(&addr, None).await.unwrap();
        assert_eq!(ip_tos(&plain), 0);
        assert!(connect("127.0.0.1:1", Some(TOS_EF)).await.is_err());
    }

    #[test]
    fn urls_that_need_a_bridge() {
        assert_eq!(stream_target("stun:s.example.org:3478").unwrap(), None);
        assert_eq!(stream_target("turn:t.example.org:3478").unwrap(), None);
        assert_eq!(
            stream_target("turn:t.example.org:3478?transport=udp").unwrap(),
            None
        );
        assert_eq!(
            stream_target("turn:t.example.org:443?transport=tcp").unwrap(),
            Some(StreamTarget {
                host: "t.example.org".into(),
                port: 443,
                tls: false
            })
        );
        assert_eq!(
            stream_target("turns:t.example.org:443").unwrap(),
            Some(StreamTarget {
                host: "t.example.org".into(),
                port: 443,
                tls: true
            })
        );
        assert_eq!(
            stream_target("turns:t.example.org?transport=tcp").unwrap(),
            Some(StreamTarget {
                host: "t.example.org".into(),
                port: 5349,
                tls: true
            })
        );
        assert_eq!(
            stream_target("turn:[2001:db8::1]:3478?transport=tcp")
                .unwrap()
                .map(|t| (t.host, t.port)),
            Some(("2001:db8::1".into(), 3478))
        );
        assert!(stream_target("turn:h:99999?transport=tcp").is_err());
        assert!(stream_target("turn:h:1?transport=sctp").is_err());
        assert!(stream_target("turns:h:1?transport=udp").is_err());
    }

    #[test]
    fn stream_framing() {
        // A STUN binding request header with 8 bytes of attributes.
        let mut stun = vec![0x00, 0x01, 0x00, 0x08];
        stun.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[1; 8]);
        assert_eq!(frame_len(&stun[..10]), Ok(None));
        assert_eq!(frame_len(&stun), Ok(Some((28, 28))));
        // ChannelData of 5 bytes: padded to 12 on the stream.
        let cd = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5];
        let padded = pad_for_stream(&cd);
        assert_eq!(padded.len(), 12);
        assert_eq!(frame_len(&padded), Ok(Some((9, 12))));
        assert_eq!(frame_len(&padded[..9]), Ok(None));
        // Two frames back to back.
        let mut both = padded.clone();
        both.extend_from_slice(&stun);
        assert_eq!(frame_len(&both), Ok(Some((9, 12))));
        assert_eq!(frame_len(&both[12..]), Ok(Some((28, 28))));
        // Garbage.
        assert!(frame_len(&[0xff, 0, 0, 0]).is_err());
        // STUN is never padded by us.
        assert_eq!(pad_for_stream(&stun).len(), 28);
    }
}
