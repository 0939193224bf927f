//! The door station's signaling client actor.
//!
//! It connects to the hub over WebSocket, authenticates with `hello`, and
//! then forwards frames both ways. When the connection fails or goes
//! silent it reconnects forever: the first retry after about
//! `reconnect_initial`, doubling up to `reconnect_max`, each delay spread by
//! ± `jitter` so that a building full of stations does not reconnect in
//! lockstep. Errors are logged, never fatal. The controller learns about
//! the link through [`ClientEvent::Up`]/[`ClientEvent::Down`].

use std::fmt;
use std::time::Duration;

use crate::logging::PeerText;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::protocol::{self, IceServerInfo, Message, PROTOCOL_VERSION, Role};
use super::socketio::{Incoming, PONG, SocketIoWire};

/// How messages travel on the WebSocket.
#[derive(Clone, Debug, PartialEq)]
pub enum Wire {
    /// intercomd's own protocol: one JSON object per text frame.
    Native,
    /// Events on a Socket.IO v4 server's namespace.
    SocketIo(SocketIoWire),
}

#[derive(Clone)]
pub struct ClientSettings {
    pub url: String,
    pub token: String,
    pub name: String,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub jitter: f64,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub dead_peer_timeout: Duration,
    pub max_message_bytes: usize,
    pub wire: Wire,
    /// Trust for `wss://`: the system's CA store plus any configured CA.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// The TLS client configuration for `wss://` hubs: the system's CA store
/// plus `extra_ca` (a private CA, or a hub's self-signed certificate).
pub fn tls_config(
    extra_ca: Option<&std::path::Path>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, crate::hub::tls::TlsError> {
    let roots = crate::hub::tls::trust_roots(extra_ca)?;
    Ok(crate::hub::tls::client_config(roots))
}

impl ClientSettings {
    /// The URL as logs and errors show it: user information and query
    /// values (a token in `?token=`) hidden.
    pub fn shown_url(&self) -> String {
        crate::config::redact_url(&self.url)
    }
}

impl fmt::Debug for ClientSettings {
    // The token is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("url", &self.shown_url())
            .field("token", &"<redacted>")
            .field("reconnect_initial", &self.reconnect_initial)
            .field("reconnect_max", &self.reconnect_max)
            .field("jitter", &self.jitter)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// What the client tells the controller.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Authenticated; the ICE servers the hub hands out.
    Up {
        session: String,
        ice_servers: Vec<IceServerInfo>,
    },
    /// The connection is gone; a reconnection is scheduled.
    Down { reason: String },
    /// A message from the hub.
    Message(Message),
}

/// Sends messages to the hub. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SignalingHandle {
    tx: mpsc::Sender<Message>,
}

impl SignalingHandle {
    /// Queue a message; never blocks. Returns false when the queue is full
    /// (the caller logs; the call machine keeps call state regardless).
    pub fn try_send(&self, msg: Message) -> bool {
        self.tx.try_send(msg).is_ok()
    }
}

/// The delay before reconnection attempt `attempt` (0 = first retry).
/// `r` is a uniform random number in [0, 1) supplied by the caller so the
/// function stays deterministic under test.
pub fn backoff_delay(
    attempt: u32,
    initial: Duration,
    max: Duration,
    jitter: f64,
    r: f64,
) -> Duration {
    let base = initial
        .checked_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let spread = jitter.clamp(0.0, 1.0) * (2.0 * r.clamp(0.0, 1.0) - 1.0);
    base.mul_f64(1.0 + spread)
}

pub fn spawn(
    settings: ClientSettings,
    events: mpsc::Sender<ClientEvent>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> SignalingHandle {
    let (tx, rx) = mpsc::channel(256);
    tracker.spawn(run(settings, events, rx, cancel));
    SignalingHandle { tx }
}

#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("connecting to {url} timed out after {secs} s")]
    ConnectTimeout { url: String, secs: u64 },
    #[error("cannot connect to {url}: {error}")]
    Connect { url: String, error: String },
    #[error("hub at {url} refused us: {code}: {message}")]
    Refused {
        url: String,
        code: &'static str,
        message: String,
    },
    #[error("no welcome from {url} within {secs} s")]
    NoWelcome { url: String, secs: u64 },
    #[error("connection to {url} closed: {reason}")]
    Closed { url: String, reason: String },
    #[error("hub at {url} silent for {secs} s: declared dead")]
    Dead { url: String, secs: u64 },
    #[error("Socket.IO server at {url} did not open the session properly: {detail}")]
    SocketIoHandshake { url: String, detail: String },
    #[error("stopping")]
    Cancelled,
}

async fn run(
    s: ClientSettings,
    events: mpsc::Sender<ClientEvent>,
    mut outbound: mpsc::Receiver<Message>,
    cancel: CancellationToken,
) {
    let mut attempt: u32 = 0;
    loop {
        info!(url = %s.shown_url(), attempt = attempt + 1, "signaling connecting");
        let started = Instant::now();
        let end = session(&s, &events, &mut outbound, &cancel, &mut attempt).await;
        if let SessionEnd::Cancelled = end {
            break;
        }
        let _ = events.try_send(ClientEvent::Down {
            reason: end.to_string(),
        });
        // A session that stayed up a while starts the backoff afresh.
        if started.elapsed() > s.reconnect_max * 2 {
            attempt = 0;
        }
        let delay = backoff_delay(
            attempt,
            s.reconnect_initial,
            s.reconnect_max,
            s.jitter,
            rand::random::<f64>(),
        );
        warn!(
            message_id = crate::logging::message_id::SIGNALING_LOST,
            url = %s.shown_url(),
            error = %PeerText::new(&end.to_string()),
            attempt = attempt + 1,
            delay_ms = delay.as_millis() as u64,
            "signaling connection lost; reconnect in {} ms",
            delay.as_millis()
        );
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => break,
        }
    }
    debug!("signaling client stopped");
}

async fn session(
    s: &ClientSettings,
    events: &mpsc::Sender<ClientEvent>,
    outbound: &mut mpsc::Receiver<Message>,
    cancel: &CancellationToken,
    attempt: &mut u32,
) -> SessionEnd {
    let ws = match connect(s, cancel).await {
        Ok(ws) => ws,
        Err(end) => return end,
    };
    let (mut sink, mut stream) = ws.split();
    let mut dead_after = s.dead_peer_timeout;
    let handshake = match &s.wire {
        Wire::Native => native_handshake(s, &mut sink, &mut stream, cancel).await,
        Wire::SocketIo(w) => {
            socketio_handshake(s, w, &mut sink, &mut stream, cancel, &mut dead_after).await
        }
    };
    let (session_id, ice_servers) = match handshake {
        Ok(v) => v,
        Err(end) => return end,
    };
    *attempt = 0;
    if events
        .send(ClientEvent::Up {
            session: session_id,
            ice_servers,
        })
        .await
        .is_err()
    {
        return SessionEnd::Cancelled;
    }

    let mut keepalive = tokio::time::interval(s.keepalive_interval);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    let mut last_seen = Instant::now();
    // A hub sending rubbish costs one line per interval, not one per frame.
    let mut refusals = crate::hub::guard::Refusals::default();
    loop {
        tokio::select! {
            frame = stream.next() => {
                last_seen = Instant::now();
                let text = match frame_text(s, frame, &mut refusals) {
                    Ok(Some(text)) => text,
                    Ok(None) => continue,
                    Err(end) => return end,
                };
                let decoded = match decode(s, text.as_str(), &mut sink).await {
                    Ok(decoded) => decoded,
                    Err(end) => return end,
                };
                match decoded {
                    Ok(Some(m)) => {
                        if events.send(ClientEvent::Message(m)).await.is_err() {
                            return SessionEnd::Cancelled;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let reason = PeerText::new(&e).to_string();
                        if let Some(line) = refusals.refused(reason, Instant::now().into_std()) {
                            warn!(url = %s.shown_url(), error = %line, "dropping malformed frame from the hub");
                        }
                    }
                }
            }
            msg = outbound.recv() => {
                let Some(msg) = msg else { return SessionEnd::Cancelled };
                let frame = match &s.wire {
                    Wire::Native => msg.to_json(),
                    Wire::SocketIo(w) => w.encode(&msg),
                };
                if let Err(e) = sink.send(WsMessage::Text(frame.into())).await {
                    return SessionEnd::Closed { url: s.shown_url(), reason: e.to_string() };
                }
            }
            _ = keepalive.tick() => {
                if last_seen.elapsed() >= dead_after {
                    return SessionEnd::Dead { url: s.shown_url(), secs: dead_after.as_secs() };
                }
                // Socket.IO servers ping us; our own pings are for the native hub.
                if s.wire != Wire::Native {
                    continue;
                }
                if let Err(e) = sink.send(WsMessage::Ping(Vec::new().into())).await {
                    return SessionEnd::Closed { url: s.shown_url(), reason: e.to_string() };
                }
            }
            _ = cancel.cancelled() => {
                let _ = sink.send(WsMessage::Close(None)).await;
                return SessionEnd::Cancelled;
            }
        }
    }
}

type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    WsMessage,
>;
type Stream = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

/// The WebSocket to the hub, within `connect_timeout`.
async fn connect(
    s: &ClientSettings,
    cancel: &CancellationToken,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    SessionEnd,
> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(s.max_message_bytes.max(1 << 20)))
        .max_frame_size(Some(s.max_message_bytes.max(1 << 20)));
    let url = match &s.wire {
        Wire::Native => s.url.clone(),
        Wire::SocketIo(_) => SocketIoWire::connect_url(&s.url),
    };
    let connector = s.tls.clone().map(tokio_tungstenite::Connector::Rustls);
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        Some(config),
        true,
        connector,
    );
    let ws = tokio::select! {
        r = timeout(s.connect_timeout, connect) => match r {
            Err(_) => return Err(SessionEnd::ConnectTimeout { url: s.shown_url(), secs: s.connect_timeout.as_secs() }),
            Ok(Err(e)) => return Err(SessionEnd::Connect { url: s.shown_url(), error: e.to_string() }),
            Ok(Ok((ws, _))) => ws,
        },
        _ = cancel.cancelled() => return Err(SessionEnd::Cancelled),
    };
    Ok(ws)
}

/// The text of a frame from the hub; `None` for a frame that carries none
/// (a binary one is refused); or the end of the session.
fn frame_text(
    s: &ClientSettings,
    frame: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    refusals: &mut crate::hub::guard::Refusals,
) -> Result<Option<tokio_tungstenite::tungstenite::Utf8Bytes>, SessionEnd> {
    match frame {
        Some(Ok(WsMessage::Text(t))) => Ok(Some(t)),
        Some(Ok(WsMessage::Close(f))) => Err(SessionEnd::Closed {
            url: s.shown_url(),
            reason: f
                .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                .unwrap_or_else(|| "close frame".into()),
        }),
        Some(Ok(WsMessage::Binary(_))) => {
            if let Some(line) = refusals.refused("binary frame".into(), Instant::now().into_std()) {
                warn!(url = %s.shown_url(), error = %line, "dropping binary frame from the hub");
            }
            Ok(None)
        }
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(SessionEnd::Closed {
            url: s.shown_url(),
            reason: e.to_string(),
        }),
        None => Err(SessionEnd::Closed {
            url: s.shown_url(),
            reason: "end of stream".into(),
        }),
    }
}

/// A text frame from the hub: a message, nothing (a Socket.IO frame
/// answered or ignored), or why it was refused; or the end of the session.
async fn decode(
    s: &ClientSettings,
    text: &str,
    sink: &mut Sink,
) -> Result<Result<Option<Message>, String>, SessionEnd> {
    Ok(match &s.wire {
        Wire::Native => protocol::decode(text, s.max_message_bytes)
            .map(Some)
            .map_err(|e| format!("{} ({})", e, e.code().as_str())),
        Wire::SocketIo(w) => match w.decode(text, s.max_message_bytes) {
            Ok(Incoming::Message(m)) => Ok(Some(m)),
            Ok(Incoming::Ping) => {
                if let Err(e) = sink.send(WsMessage::Text(PONG.into())).await {
                    return Err(SessionEnd::Closed {
                        url: s.shown_url(),
                        reason: e.to_string(),
                    });
                }
                Ok(None)
            }
            Ok(Incoming::Closed(why)) => {
                return Err(SessionEnd::Closed {
                    url: s.shown_url(),
                    reason: why,
                });
            }
            Ok(other) => {
                debug!(url = %s.shown_url(), frame = %PeerText::new(&format!("{other:?}")), "Socket.IO frame ignored");
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        },
    })
}

/// Wait for the next text frame within `deadline`.
async fn next_text(
    s: &ClientSettings,
    stream: &mut Stream,
    cancel: &CancellationToken,
    deadline: Instant,
) -> Result<String, SessionEnd> {
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout_at(deadline, stream.next()) => f,
            _ = cancel.cancelled() => return Err(SessionEnd::Cancelled),
        };
        match frame {
            Err(_) => {
                return Err(SessionEnd::NoWelcome {
                    url: s.shown_url(),
                    secs: s.connect_timeout.as_secs(),
                });
            }
            Ok(None) => {
                return Err(SessionEnd::Closed {
                    url: s.shown_url(),
                    reason: "closed during the handshake".into(),
                });
            }
            Ok(Some(Err(e))) => {
                return Err(SessionEnd::Closed {
                    url: s.shown_url(),
                    reason: e.to_string(),
                });
            }
            Ok(Some(Ok(WsMessage::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(WsMessage::Close(f)))) => {
                return Err(SessionEnd::Closed {
                    url: s.shown_url(),
                    reason: f
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "close frame".into()),
                });
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// `hello` → `welcome`, within the connect timeout.
async fn native_handshake(
    s: &ClientSettings,
    sink: &mut Sink,
    stream: &mut Stream,
    cancel: &CancellationToken,
) -> Result<(String, Vec<IceServerInfo>), SessionEnd> {
    let hello = Message::Hello {
        v: PROTOCOL_VERSION,
        role: Role::Door,
        token: s.token.clone(),
        name: Some(s.name.clone()),
    };
    if let Err(e) = sink.send(WsMessage::Text(hello.to_json().into())).await {
        return Err(SessionEnd::Connect {
            url: s.shown_url(),
            error: e.to_string(),
        });
    }
    let deadline = Instant::now() + s.connect_timeout;
    loop {
        let text = next_text(s, stream, cancel, deadline).await?;
        match protocol::decode(&text, s.max_message_bytes) {
            Ok(Message::Welcome {
                session,
                ice_servers,
                id,
                ..
            }) => {
                info!(
                    message_id = crate::logging::message_id::SIGNALING_CONNECTED,
                    url = %s.shown_url(),
                    session = %PeerText::new(&session),
                    station = %PeerText::new(&id),
                    "Socket connected"
                );
                return Ok((session, ice_servers));
            }
            Ok(Message::Error { code, message, .. }) => {
                return Err(SessionEnd::Refused {
                    url: s.shown_url(),
                    code: code.as_str(),
                    message,
                });
            }
            Ok(other) => debug!(kind = other.type_name(), "ignoring message before welcome"),
            Err(e) => {
                warn!(url = %s.shown_url(), error = %PeerText::new(&e.to_string()), "dropping malformed frame from the hub")
            }
        }
    }
}

/// Engine.IO open → Socket.IO CONNECT with the token → connected.
async fn socketio_handshake(
    s: &ClientSettings,
    w: &SocketIoWire,
    sink: &mut Sink,
    stream: &mut Stream,
    cancel: &CancellationToken,
    dead_after: &mut Duration,
) -> Result<(String, Vec<IceServerInfo>), SessionEnd> {
    let deadline = Instant::now() + s.connect_timeout;
    let bad = |detail: String| SessionEnd::SocketIoHandshake {
        url: s.shown_url(),
        detail,
    };
    let text = next_text(s, stream, cancel, deadline).await?;
    match w.decode(&text, s.max_message_bytes) {
        Ok(Incoming::Open {
            ping_interval,
            ping_timeout,
            ..
        }) => {
            // The server pings every interval and waits `timeout` for our
            // pong; silence beyond both (plus slack) means it is gone.
            let server = ping_interval + ping_timeout + Duration::from_secs(1);
            if !ping_interval.is_zero() {
                *dead_after = server;
            }
        }
        Ok(other) => return Err(bad(format!("expected an open packet, got {other:?}"))),
        Err(e) => return Err(bad(e.to_string())),
    }
    if let Err(e) = sink
        .send(WsMessage::Text(w.connect_packet(&s.token).into()))
        .await
    {
        return Err(SessionEnd::Connect {
            url: s.shown_url(),
            error: e.to_string(),
        });
    }
    loop {
        let text = next_text(s, stream, cancel, deadline).await?;
        match w.decode(&text, s.max_message_bytes) {
            Ok(Incoming::Connected { sid }) => {
                info!(
                    message_id = crate::logging::message_id::SIGNALING_CONNECTED,
                    url = %s.shown_url(),
                    session = %PeerText::new(&sid),
                    protocol = "socket.io",
                    "Socket connected"
                );
                return Ok((sid, Vec::new()));
            }
            Ok(Incoming::ConnectError(message)) => {
                return Err(SessionEnd::Refused {
                    url: s.shown_url(),
                    code: "connect_error",
                    message,
                });
            }
            Ok(Incoming::Ping) => {
                let _ = sink.send(WsMessage::Text(PONG.into())).await;
            }
            Ok(other) => {
                debug!(frame = %PeerText::new(&format!("{other:?}")), "ignoring Socket.IO frame before connect")
            }
            Err(e) => {
                warn!(url = %s.shown_url(), error = %PeerText::new(&e.to_string()), "dropping malformed Socket.IO frame")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_starts_near_one_second_and_caps_at_five() {
        let d = |a, r| backoff_delay(a, S, 5 * S, 0.2, r);
        assert_eq!(d(0, 0.5), S);
        assert_eq!(d(1, 0.5), 2 * S);
        assert_eq!(d(2, 0.5), 4 * S);
        assert_eq!(d(3, 0.5), 5 * S);
        assert_eq!(d(1000, 0.5), 5 * S);
        assert_eq!(d(0, 0.0), Duration::from_millis(800));
        assert_eq!(d(3, 0.999_999_999).as_millis(), 5999);
    }

    #[test]
    fn jitter_spreads_stations_apart() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100 {
            let r = i as f64 / 100.0;
            let dl = backoff_delay(0, S, 5 * S, 0.2, r);
            assert!(dl >= Duration::from_millis(800) && dl <= Duration::from_millis(1200));
            seen.insert(dl.as_millis());
        }
        assert!(seen.len() > 50);
    }

    #[test]
    fn nonsense_inputs_are_clamped() {
        assert_eq!(backoff_delay(0, S, 5 * S, 7.0, 2.0), 2 * S);
        assert_eq!(backoff_delay(0, S, 5 * S, -1.0, 0.3), S);
    }

    #[test]
    fn credentials_in_the_url_never_reach_logs_or_errors() {
        let s = ClientSettings {
            url: "wss://door:s3cret@hub.example.net:8443/ws?token=t0ken&site=7".into(),
            token: "t0ken".into(),
            name: "door".into(),
            reconnect_initial: S,
            reconnect_max: 5 * S,
            jitter: 0.2,
            connect_timeout: S,
            keepalive_interval: S,
            dead_peer_timeout: S,
            max_message_bytes: 1024,
            wire: Wire::Native,
            tls: None,
        };
        let shown = s.shown_url();
        assert_eq!(
            shown,
            "wss://<redacted>@hub.example.net:8443/ws?token=<redacted>&site=<redacted>"
        );
        let end = SessionEnd::Connect {
            url: s.shown_url(),
            error: "refused".into(),
        };
        for text in [format!("{s:?}"), end.to_string()] {
            assert!(
                !text.contains("s3cret") && !text.contains("t0ken"),
                "{text}"
            );
        }
    }
}
