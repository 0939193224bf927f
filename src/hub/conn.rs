//! Connection hygiene shared by every HTTP listener of the station (the
//! hub's listeners and the simulated panel): connections are admitted
//! against a total and a per-address cap, served by hyper with a timer (a
//! request head must arrive within `header_read_timeout`; a connection with
//! no byte either way for `idle_timeout` is closed), and accept errors such
//! as EMFILE are backed off and logged once per interval.
//!
//! Without this, idle sockets, half-sent requests and silent upgraded
//! WebSockets each keep a descriptor and buffers for ever, and a few
//! thousand of them take the process to its descriptor limit: then nobody,
//! the station's own client included, gets in.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Refusals and accept errors are logged at most once per this interval,
/// with the number left out since.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// Accept errors back off from here, doubling…
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// …up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A request head larger than this is refused (431): the hub's requests are
/// GETs and a WebSocket upgrade of well under 4 KiB.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A connection still open this long after shutdown was asked is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Timeouts and caps of one group of listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
}

impl Default for ConnLimits {
    /// The shipped defaults (config/defaults.toml).
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_address: 32,
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_address` are open from this address.
    PerAddress,
}

/// Counts open connections, in total and per source address.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            open: Mutex::default(),
        })
    }

    /// A slot for a connection from `ip`, released when the slot drops.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let ip = ip.to_canonical();
        // A poisoned lock only means a holder panicked between two counter
        // updates; the counts are still usable.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max_total {
            return Err(Refused::Total);
        }
        let from = open.by_address.entry(ip).or_insert(0);
        if *from >= self.max_per_address {
            return Err(Refused::PerAddress);
        }
        *from += 1;
        open.total += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// One admitted connection; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.ip);
            }
        }
    }
}

/// Says when a repeated event should be logged again: at most once per
/// [`LOG_EVERY`], with how many were left out in between. A shared
/// [`crate::limits::LogThrottle`] with the clock read here.
#[derive(Debug)]
pub struct Throttle(Mutex<crate::limits::LogThrottle>);

impl Default for Throttle {
    fn default() -> Self {
        Self::new(LOG_EVERY)
    }
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Self(Mutex::new(crate::limits::LogThrottle::new(every)))
    }

    /// `Some(left out since the last line)` when this one should be logged.
    pub fn ready(&self) -> Option<u64> {
        let now = Instant::now().into_std();
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // `hit` counts this event too.
        t.hit(now).map(|n| n - 1)
    }
}

/// A socket that fails with `TimedOut` once no byte has moved either way
/// for its idle timeout, and that holds its connection's [`Slot`] until it
/// is dropped (after a WebSocket upgrade too). Both directions are polled
/// from one task (hyper's, then the WebSocket's), which the timer wakes.
pub struct IdleIo<T> {
    io: T,
    timeout: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
    _slot: Option<Slot>,
}

impl<T> IdleIo<T> {
    pub fn new(io: T, timeout: Duration, slot: Option<Slot>) -> Self {
        let now = Instant::now();
        Self {
            io,
            timeout,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
            _slot: slot,
        }
    }

    /// Ready with an error once the connection has been idle too long;
    /// otherwise the timer is armed for the current deadline.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        // Bounded: each round either waits, fails, or moves the deadline
        // into the future, after which the sleep is pending.
        for _ in 0..3 {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last + self.timeout;
            if Instant::now() >= due {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("idle for {} ms", self.timeout.as_millis()),
                ));
            }
            self.sleep.as_mut().reset(due);
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.expired(cx).map(Err),
            r => r,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends, its
/// head or idle timeout strikes, or `cancel` asks for shutdown.
pub async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    tls: bool,
    cancel: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(super::policy::OverTls(tls));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = http.serve_connection(TokioIo::new(io), svc).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "http connection ended");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// Accepts on `listener` until `cancel`, handing each admitted connection
/// (no-delay set) with its slot to `on_conn`. Refused connections are
/// closed at once. `what` names the listener in the log.
pub async fn accept_loop<F>(
    listener: TcpListener,
    what: &'static str,
    admission: Arc<Admission>,
    cancel: CancellationToken,
    mut on_conn: F,
) where
    F: FnMut(TcpStream, SocketAddr, Slot),
{
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let errors = Throttle::default();
    let refusals = Throttle::default();
    let mut backoff = BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = cancel.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = BACKOFF_MIN;
                match admission.admit(peer.ip()) {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        on_conn(stream, peer, slot);
                    }
                    Err(why) => {
                        // Closed at once: a refused client holds nothing.
                        drop(stream);
                        if let Some(suppressed) = refusals.ready() {
                            let (limit, max) = match why {
                                Refused::Total => ("max_connections", admission.max_total),
                                Refused::PerAddress => {
                                    ("max_connections_per_address", admission.max_per_address)
                                }
                            };
                            warn!(
                                listen = %local,
                                %peer,
                                limit,
                                max,
                                open = admission.open(),
                                suppressed,
                                "{what}: connection refused: {limit} ({max}) reached"
                            );
                        }
                    }
                }
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS: nothing to do but wait for
                // connections to close; spinning would only burn the CPU the
                // call needs, and a line per failure would flood the journal.
                if let Some(suppressed) = errors.ready() {
                    warn!(
                        listen = %local,
                        error = %e,
                        suppressed,
                        retry_ms = backoff.as_millis() as u64,
                        "{what}: accepting connections fails, backing off"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// `scheme://host[:port]` in lower case, without a default port; `None`
/// for anything else (paths, user info, other schemes, `null`).
pub fn parse_origin(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    let (scheme, rest) = text.split_once("://")?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let authority = normal_authority(rest, default_port)?;
    Some(format!("{scheme}://{authority}"))
}

/// `host[:port]` checked and in lower case, the port left out when it is
/// `default_port`.
pub fn normal_authority(text: &str, default_port: &str) -> Option<String> {
    let text = text.to_ascii_lowercase();
    let ok = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
    if text.is_empty() || !text.chars().all(ok) {
        return None;
    }
    let (host, port) = split_host_port(&text)?;
    if host.is_empty() {
        return None;
    }
    match port {
        Some(p) if p != default_port => Some(format!("{host}:{p}")),
        _ => Some(host.to_owned()),
    }
}

/// `door.local:8443` → (`door.local`, `Some("8443")`), `[::1]` →
/// (`[::1]`, None). `None` when the port is not a number.
pub fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if text.starts_with('[') {
        let end = text.find(']')?;
        let (h, rest) = text.split_at(end + 1);
        match rest {
            "" => (h, None),
            r => (h, Some(r.strip_prefix(':')?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_total_and_per_address_and_frees_on_drop() {
        let a = Admission::new(3, 2);
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.admit(x).unwrap();
        let _s2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).unwrap_err(), Refused::PerAddress);
        // An IPv4-mapped address counts as the same source.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(a.admit(mapped).unwrap_err(), Refused::PerAddress);
        let _s3 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).unwrap_err(), Refused::Total);
        assert_eq!(a.open(), 3);
        drop(s1);
        assert_eq!(a.open(), 2);
        let _s4 = a.admit(x).unwrap();
    }

    #[tokio::test]
    async fn throttle_logs_once_per_interval_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_millis(100));
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(t.ready(), Some(2));
    }

    #[tokio::test]
    async fn idle_io_times_out_only_without_traffic() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(64);
        let idle = Duration::from_millis(300);
        let mut io = IdleIo::new(a, idle, None);
        // Traffic every 150 ms keeps it open well past 300 ms.
        let t0 = Instant::now();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            b.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            io.read_exact(&mut one).await.unwrap();
        }
        assert!(t0.elapsed() >= Duration::from_millis(600));
        let mut one = [0u8; 1];
        let t1 = Instant::now();
        let e = io.read_exact(&mut one).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let waited = t1.elapsed();
        assert!(
            waited >= idle && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn silent_and_slow_requests_are_closed_at_the_header_timeout() {
        use tokio::io::AsyncWriteExt;
        let head = Duration::from_millis(300);
        for first in [&b""[..], b"GET / HTTP/1.1\r\nHost: x\r\n"] {
            let (a, mut b) = tokio::io::duplex(1024);
            let peer = SocketAddr::from(([127, 0, 0, 1], 1));
            let t0 = Instant::now();
            let served = tokio::spawn(serve_http(
                a,
                peer,
                Router::new(),
                head,
                false,
                CancellationToken::new(),
            ));
            b.write_all(first).await.unwrap();
            tokio::time::timeout(Duration::from_secs(3), served)
                .await
                .expect("closed by the header timeout")
                .unwrap();
            assert!(t0.elapsed() >= head);
        }
    }

    #[test]
    fn origins_are_normalised_or_refused() {
        assert_eq!(
            parse_origin("HTTPS://Door.Example.net:443").as_deref(),
            Some("https://door.example.net")
        );
        assert_eq!(
            parse_origin("http://10.0.0.5:8080").as_deref(),
            Some("http://10.0.0.5:8080")
        );
        assert_eq!(
            parse_origin("https://[fd00::1]:8443").as_deref(),
            Some("https://[fd00::1]:8443")
        );
        for bad in [
            "null",
            "https://x/path",
            "ftp://x",
            "https://",
            "https://a:b",
            "https://u@h",
        ] {
            assert_eq!(parse_origin(bad), None, "{bad}");
        }
    }
}
