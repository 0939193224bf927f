//! The hub's I/O shell: an axum server that serves the answering page and
//! the `/ws` signaling endpoint, and one actor task that owns
//! [`HubState`]. Connection tasks turn socket frames into events for the
//! actor; the actor answers with `try_send` into each connection's bounded
//! queue, so a slow client can never stall the hub.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::conn::{Admission, ConnLimits, IdleIo, accept_loop, serve_http};
use super::policy::HttpPolicy;
use super::push::{PushMessage, PushOutcome, VapidKeys, WebPush, endpoint_host};
use super::quiet::WeekMinute;
use super::state::{Action, ConnId, HubSettings, HubState, LogLevel, PushJob};
use super::store::{HubStore, SqliteStore, StoreError, StoreWorker};
use super::tls::TlsAccept;
use crate::signaling::protocol::Message;

const INDEX_HTML: &str = include_str!("../../web/index.html");
// app.js is the page's shell; it imports the call's state machine and the
// signaling and media modules (ES modules, no build step).
const APP_JS: &str = include_str!("../../web/app.js");
const CALL_JS: &str = include_str!("../../web/call.js");
const SIGNAL_JS: &str = include_str!("../../web/signal.js");
const MEDIA_JS: &str = include_str!("../../web/media.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");
// The installable app: service worker, icons (drawn by
// web/icons/make_icons.py) and the favicon.
const SW_JS: &str = include_str!("../../web/sw.js");
const ICON_192: &[u8] = include_bytes!("../../web/icons/icon-192.png");
const ICON_512: &[u8] = include_bytes!("../../web/icons/icon-512.png");
const ICON_MASKABLE: &[u8] = include_bytes!("../../web/icons/maskable-512.png");
const APPLE_TOUCH_ICON: &[u8] = include_bytes!("../../web/icons/apple-touch-icon.png");
const FAVICON: &[u8] = include_bytes!("../../web/favicon.ico");

/// Frames beyond this are cut by the WebSocket layer itself whatever the
/// configuration; below it the cap is twice `max_message_bytes` (see
/// [`ws_limit`]).
const HARD_FRAME_LIMIT: usize = 1 << 20;
/// The WebSocket's read chunk and write batch. Signaling messages are a
/// few hundred bytes (an SDP a few KiB); tungstenite's 128 KiB defaults
/// cost a silent socket ~137 KB until its hello timeout.
const WS_READ_BUFFER: usize = 4096;
const WS_WRITE_BUFFER: usize = 4096;
const CONN_QUEUE: usize = 256;
/// Pushes in flight at once; more wait for a slot.
const PUSHES_IN_FLIGHT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot listen on {addr}{}", bind_hint(source))]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("hub server on {addr} failed: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
}

/// What a technician can do about a failed bind (the cause itself follows
/// in the error chain).
fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another program, or another intercomd, uses this port: stop it or choose \
             another address: `hub.listen` in the configuration, `intercomd demo --listen …`, \
             `make demo ARGS=\"--listen 0.0.0.0:9443\"`)"
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need CAP_NET_BIND_SERVICE, which the systemd unit grants)"
        }
        std::io::ErrorKind::AddrNotAvailable => " (no interface of this machine has that address)",
        _ => "",
    }
}

/// Runtime knobs of the connection tasks.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    pub ping_interval: Duration,
    /// The https:// address residents should open (`hub.public_url`),
    /// served to the answering page by `/client.json`.
    pub public_url: Option<String>,
    /// Where `hub.sqlite3` and the VAPID key live; `None`: no history and
    /// no push.
    pub state_dir: Option<std::path::PathBuf>,
    /// `None`: `hub.push.enabled = false`.
    pub push: Option<PushSettings>,
    /// `station.name`: the installed app's name on the resident's phone.
    pub station_name: String,
    /// Timeouts and caps of every listener.
    pub limits: ConnLimits,
    /// The names and origins the hub answers to, and HSTS.
    pub policy: HttpPolicy,
}

#[derive(Clone, Debug)]
pub struct PushSettings {
    /// The VAPID `sub` claim.
    pub subject: String,
    /// Extra trust for push services (tests).
    pub ca_file: Option<std::path::PathBuf>,
}

enum Outbound {
    Text(String),
    Close(u16, &'static str),
}

enum Event {
    Connected {
        conn: ConnId,
        peer: SocketAddr,
        tx: mpsc::Sender<Outbound>,
    },
    Text(ConnId, String),
    Binary(ConnId),
    Closed(ConnId),
    /// The store's subscriptions, read once at start.
    Subscriptions(Vec<(String, super::push::Subscription)>),
    /// A push service said this subscription is gone.
    PushGone {
        answerer: String,
        endpoint: String,
    },
}

#[derive(Clone)]
struct AppState {
    events: mpsc::Sender<Event>,
    next_conn: std::sync::Arc<std::sync::atomic::AtomicU64>,
    conn: ConnSettings,
    cancel: CancellationToken,
    /// The HTTPS port when the main listener has TLS: the page opened over
    /// plain HTTP points there.
    https_port: Option<u16>,
    /// `signaling.max_message_bytes`: the WebSocket's own frame cap.
    max_message_bytes: usize,
}

/// Bind the hub's listener, naming the address on failure.
pub async fn bind(addr: &str) -> Result<TcpListener, HubError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HubError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// Where the hub serves. Every listener serves the same page and `/ws`,
/// except `redirect`, which only sends browsers to HTTPS.
pub struct Listeners {
    /// HTTPS and WSS with `tls`, plain HTTP and WS without.
    pub main: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Plain HTTP on loopback: a browser on this machine (`localhost` is a
    /// secure context) and a standalone station's own client.
    pub loopback: Vec<TcpListener>,
    /// Plain HTTP answering every request with a redirect to the main
    /// listener's HTTPS.
    pub redirect: Option<TcpListener>,
    /// Plain HTTP on loopback for this station's own signaling client
    /// only: its connections are not counted against the public caps, so
    /// no load from the network can keep the station off its hub.
    pub own: Option<TcpListener>,
}

impl Listeners {
    /// One plain listener (tests, `tls = "off"`).
    pub fn plain(main: TcpListener) -> Self {
        Self {
            main,
            tls: None,
            loopback: Vec::new(),
            redirect: None,
            own: None,
        }
    }
}

/// Connections the station's own listener admits: its signaling client
/// needs one; the rest is room for a reconnect racing the old socket.
const OWN_CONNECTIONS: usize = 8;

/// Serve until `shutdown` is cancelled. The listeners are passed in so
/// tests can bind port 0 and read the addresses first.
pub async fn run(
    listeners: Listeners,
    settings: HubSettings,
    conn: ConnSettings,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    let main_addr = listeners.main.local_addr().ok();
    let addr = main_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    let max_message_bytes = settings.max_message_bytes;
    let (events_tx, actor) = start_actor(settings, &conn, &shutdown).await;
    let limits = conn.limits.clone();
    let policy = Arc::new(conn.policy.clone());
    let app_state = AppState {
        events: events_tx,
        next_conn: Default::default(),
        conn,
        cancel: shutdown.clone(),
        https_port: listeners.tls.as_ref().and(main_addr.map(|a| a.port())),
        max_message_bytes,
    };
    let app = router(app_state).layer(axum::middleware::from_fn_with_state(
        policy.clone(),
        super::policy::guard,
    ));
    let serving = Serving {
        limits,
        conns: TaskTracker::new(),
        shutdown: shutdown.clone(),
    };
    let loops = spawn_accept_loops(listeners, main_addr, &addr, app, &policy, &serving);
    let conns = serving.conns;
    futures_util::future::join_all(loops).await;
    shutdown.cancel();
    conns.close();
    // Each connection gives up within its own grace after the cancel.
    let _ = tokio::time::timeout(Duration::from_secs(3), conns.wait()).await;
    let _ = actor.await;
    info!(listen = %addr, "hub stopped");
    Ok(())
}

/// The hub's state and its data, served by the actor task: returns the
/// actor's inbox and its handle.
async fn start_actor(
    settings: HubSettings,
    conn: &ConnSettings,
    shutdown: &CancellationToken,
) -> (mpsc::Sender<Event>, tokio::task::JoinHandle<()>) {
    let (events_tx, events_rx) = mpsc::channel(1024);
    let answerer_ids: Vec<String> = settings.answerers.iter().map(|a| a.id.clone()).collect();
    let mut state = HubState::new(settings);
    let data = start_data(conn, answerer_ids, events_tx.clone()).await;
    state.set_push_key(data.push_key.clone());
    let dir = conn.state_dir.clone();
    match tokio::task::spawn_blocking(move || route_key(dir.as_deref())).await {
        Ok(key) => state.set_route_key(&key),
        Err(e) => {
            warn!(error = %e, "hub route key unavailable: doors cannot resume calls after a hub restart")
        }
    }
    let actor = tokio::spawn(actor(
        state,
        events_rx,
        events_tx.clone(),
        data,
        shutdown.clone(),
    ));
    (events_tx, actor)
}

/// What every accepted connection is served with.
struct Serving {
    limits: ConnLimits,
    conns: TaskTracker,
    shutdown: CancellationToken,
}

impl Serving {
    /// Plain HTTP on `l`, each connection counted by `admission`.
    fn plain(
        &self,
        l: TcpListener,
        what: &'static str,
        admission: Arc<Admission>,
        app: Router,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let (conns, cancel, limits) = (
            self.conns.clone(),
            self.shutdown.clone(),
            self.limits.clone(),
        );
        accept_loop(
            l,
            what,
            admission,
            self.shutdown.clone(),
            move |stream, peer, slot| {
                let io = IdleIo::new(stream, limits.idle_timeout, Some(slot));
                conns.spawn(serve_http(
                    io,
                    peer,
                    app.clone(),
                    limits.header_read_timeout,
                    false,
                    cancel.clone(),
                ));
            },
        )
    }

    /// HTTPS on `l`: the handshake, then HTTP.
    fn tls(
        &self,
        l: TcpListener,
        config: Arc<rustls::ServerConfig>,
        admission: Arc<Admission>,
        app: Router,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let tls = TlsAccept::new(config, self.limits.header_read_timeout);
        let (conns, cancel, limits) = (
            self.conns.clone(),
            self.shutdown.clone(),
            self.limits.clone(),
        );
        accept_loop(
            l,
            "hub",
            admission,
            self.shutdown.clone(),
            move |stream, peer, slot| {
                let io = IdleIo::new(stream, limits.idle_timeout, Some(slot));
                let (tls, app, cancel) = (tls.clone(), app.clone(), cancel.clone());
                let head = limits.header_read_timeout;
                conns.spawn(async move {
                    if let Some(s) = tls.handshake(io, peer).await {
                        serve_http(s, peer, app, head, true, cancel).await;
                    }
                });
            },
        )
    }
}

/// One accept loop per listener, and the trim after bursts.
fn spawn_accept_loops(
    listeners: Listeners,
    main_addr: Option<SocketAddr>,
    addr: &str,
    app: Router,
    policy: &Arc<HttpPolicy>,
    serving: &Serving,
) -> Vec<tokio::task::JoinHandle<()>> {
    let limits = &serving.limits;
    // One count for every listener the public can reach, so the caps hold
    // for the process; the station's own listener counts apart.
    let shared = Admission::new(limits.max_connections, limits.max_connections_per_address);
    let mut loops = Vec::new();
    let plain = |l, what, admission, app| serving.plain(l, what, admission, app);
    match listeners.tls {
        Some(config) => {
            info!(listen = %addr, scheme = "https", "hub listening (HTTPS and WSS)");
            loops.push(tokio::spawn(serving.tls(
                listeners.main,
                config,
                shared.clone(),
                app.clone(),
            )));
        }
        None => {
            info!(listen = %addr, scheme = "http", "hub listening");
            loops.push(tokio::spawn(plain(
                listeners.main,
                "hub",
                shared.clone(),
                app.clone(),
            )));
        }
    }
    for l in listeners.loopback {
        let a = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        debug!(listen = %a, scheme = "http", "hub listening on loopback");
        loops.push(tokio::spawn(plain(l, "hub", shared.clone(), app.clone())));
    }
    if let Some(l) = listeners.own {
        let a = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        debug!(listen = %a, "hub listening for this station's own client");
        let own = Admission::new(OWN_CONNECTIONS, OWN_CONNECTIONS);
        loops.push(tokio::spawn(plain(
            l,
            "hub (station's own)",
            own,
            app.clone(),
        )));
    }
    if let Some(l) = listeners.redirect {
        let a = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let port = main_addr.map(|m| m.port()).unwrap_or(443);
        info!(listen = %a, to_port = port, "hub redirecting plain HTTP to HTTPS");
        let redirect = redirect_router(port, policy.clone());
        loops.push(tokio::spawn(plain(
            l,
            "hub redirect",
            shared.clone(),
            redirect,
        )));
    }
    loops.push(tokio::spawn(trim_after_bursts(
        shared.clone(),
        serving.shutdown.clone(),
    )));
    loops
}

/// A burst this large (connections open at once) is worth trimming after.
const TRIM_BURST: usize = 256;

/// After a burst of connections (an attack, a crowd of phones) glibc keeps
/// the freed buffers in its arenas: measured, 3,000 connections left ~34 MB
/// behind on a station whose baseline is ~47 MB. Once the burst is over,
/// the memory goes back to the system.
async fn trim_after_bursts(admission: Arc<Admission>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let open = admission.open();
        peak = peak.max(open);
        if peak >= TRIM_BURST && open <= peak / 8 {
            debug!(peak, open, "connection burst over: returning freed memory");
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only walks the allocator's own free lists.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
            peak = open;
        }
    }
}

/// Every route of the hub, as a table the header tests walk.
fn routes() -> Vec<(&'static str, axum::routing::MethodRouter<AppState>)> {
    vec![
        ("/", get(|| async { Html(INDEX_HTML) })),
        ("/app.js", get(|| async { js(APP_JS) })),
        ("/call.js", get(|| async { js(CALL_JS) })),
        ("/signal.js", get(|| async { js(SIGNAL_JS) })),
        ("/media.js", get(|| async { js(MEDIA_JS) })),
        (
            "/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STYLE_CSS,
                )
            }),
        ),
        ("/manifest.webmanifest", get(manifest)),
        (
            "/sw.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        // A new page version reaches installed apps at once.
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    SW_JS,
                )
            }),
        ),
        ("/icons/icon-192.png", get(|| async { png(ICON_192) })),
        ("/icons/icon-512.png", get(|| async { png(ICON_512) })),
        (
            "/icons/maskable-512.png",
            get(|| async { png(ICON_MASKABLE) }),
        ),
        (
            "/icons/apple-touch-icon.png",
            get(|| async { png(APPLE_TOUCH_ICON) }),
        ),
        (
            "/apple-touch-icon.png",
            get(|| async { png(APPLE_TOUCH_ICON) }),
        ),
        (
            "/favicon.ico",
            get(|| async { ([(header::CONTENT_TYPE, "image/x-icon")], FAVICON) }),
        ),
        ("/healthz", get(|| async { "ok\n" })),
        ("/client.json", get(client_json)),
        ("/ws", get(ws_handler)),
    ]
}

/// Answers every request with a redirect to HTTPS on `port`.
fn redirect_router(port: u16, policy: Arc<HttpPolicy>) -> Router {
    Router::new()
        .fallback(move |req: axum::extract::Request| async move { redirect_to_https(&req, port) })
        .layer(axum::middleware::from_fn_with_state(
            policy,
            super::policy::guard,
        ))
}

fn router(app_state: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |r, (path, method)| r.route(path, method))
        .with_state(app_state)
}

/// `http://host[:port]/path` → `https://host:<port>/path` (308 keeps the
/// method). The host comes from the request; without one there is nothing
/// to send the browser to.
fn redirect_to_https(req: &axum::extract::Request, port: u16) -> axum::response::Response {
    use axum::http::StatusCode;
    let Some(host) = request_host(req.headers()) else {
        return (
            StatusCode::BAD_REQUEST,
            "HTTPS only: open this address with https://\n",
        )
            .into_response();
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
        "HTTPS only\n",
    )
        .into_response()
}

/// The request's `Host` without its port, when it is a plain name or
/// address: anything else could smuggle text into a header or a link.
fn request_host(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_without_port)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
}

/// `example.org:8080` → `example.org`, `[::1]:80` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// What the answering page needs before it signs in: where to find the
/// station over HTTPS when it was opened without a microphone. No secrets.
/// Without `public_url`, a hub serving HTTPS points at itself by the name
/// the page was opened with.
async fn client_json(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let derived = match (&app.conn.public_url, app.https_port) {
        (None, Some(port)) => request_host(&headers).map(|h| match port {
            443 => format!("https://{h}/"),
            p => format!("https://{h}:{p}/"),
        }),
        _ => None,
    };
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        client_info(app.conn.public_url.as_deref().or(derived.as_deref())),
    )
}

/// One of the page's scripts (the page loads them as ES modules, which
/// browsers run only when served as JavaScript).
fn js(body: &'static str) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        body,
    )
}

fn png(bytes: &'static [u8]) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/png")], bytes)
}

/// The web app manifest, named after the station so a resident's phone
/// shows "Front door" under the icon. No secrets.
async fn manifest(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/manifest+json")],
        manifest_json(&app.conn.station_name),
    )
}

fn manifest_json(station_name: &str) -> String {
    let name = match station_name.trim() {
        "" => "Door intercom",
        n => n,
    };
    // Launchers cut labels beyond about 12 characters.
    let short_name = if name.chars().count() <= 12 {
        name
    } else {
        "Intercom"
    };
    serde_json::json!({
        "id": "/",
        "name": name,
        "short_name": short_name,
        "description": "Answer the door: rings when a visitor presses the call button.",
        "start_url": "/",
        "scope": "/",
        "display": "standalone",
        "orientation": "portrait",
        "theme_color": "#17803d",
        "background_color": "#f4f5f7",
        "icons": [
            {"src": "/icons/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
            {"src": "/icons/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
            {"src": "/icons/maskable-512.png", "sizes": "512x512", "type": "image/png", "purpose": "maskable"}
        ]
    })
    .to_string()
}

fn client_info(https_url: Option<&str>) -> String {
    serde_json::json!({ "https_url": https_url }).to_string()
}

/// The WebSocket layer's frame and message cap. A message a little over
/// `max_message_bytes` still reaches the protocol, which answers
/// `too_large` before closing (clients learn why); twice the limit is cut
/// by the WebSocket layer itself, before it is buffered whole.
fn ws_limit(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(2)
        .clamp(1024, HARD_FRAME_LIMIT)
}

async fn ws_handler(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(app): State<AppState>,
) -> impl IntoResponse {
    let limit = ws_limit(app.max_message_bytes);
    ws.read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(WS_WRITE_BUFFER + limit)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| connection(socket, peer, app))
}

async fn connection(socket: WebSocket, peer: SocketAddr, app: AppState) {
    let conn = app
        .next_conn
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let (tx, mut rx) = mpsc::channel::<Outbound>(CONN_QUEUE);
    if app
        .events
        .send(Event::Connected { conn, peer, tx })
        .await
        .is_err()
    {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(app.conn.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let dead_after = app.conn.ping_interval * 5 / 2;
    let mut last_seen = Instant::now();
    let why = loop {
        tokio::select! {
            frame = stream.next() => {
                last_seen = Instant::now();
                let ev = match frame {
                    Some(Ok(WsMessage::Text(t))) => Event::Text(conn, t.as_str().to_owned()),
                    Some(Ok(WsMessage::Binary(_))) => Event::Binary(conn),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) | None => break "closed by the client",
                    Some(Err(e)) => {
                        debug!(conn, %peer, error = %e, "websocket read failed");
                        break "read error";
                    }
                };
                if app.events.send(ev).await.is_err() {
                    break "hub stopping";
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Text(t)) => {
                    if sink.send(WsMessage::Text(t.into())).await.is_err() {
                        break "write error";
                    }
                }
                Some(Outbound::Close(code, reason)) => {
                    let _ = sink
                        .send(WsMessage::Close(Some(CloseFrame { code, reason: reason.into() })))
                        .await;
                    break reason;
                }
                None => break "hub stopping",
            },
            _ = ping.tick() => {
                if last_seen.elapsed() > dead_after {
                    break "silent";
                }
                if sink.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    break "write error";
                }
            }
            _ = app.cancel.cancelled() => {
                let _ = sink
                    .send(WsMessage::Close(Some(CloseFrame { code: 1001, reason: "hub stopping".into() })))
                    .await;
                break "hub stopping";
            }
        }
    };
    debug!(conn, %peer, why, "signaling connection closed");
    let _ = app.events.send(Event::Closed(conn)).await;
}

/// What the hub keeps and sends besides routing: the database and Web Push.
struct HubData {
    store: Option<StoreWorker>,
    push: Option<WebPush>,
    push_key: Option<String>,
    pushes: Arc<tokio::sync::Semaphore>,
}

/// Opens the database (on its own thread) and the VAPID key. A failure
/// turns the feature off with one log line; the hub runs regardless.
async fn start_data(
    conn: &ConnSettings,
    answerers: Vec<String>,
    events: mpsc::Sender<Event>,
) -> HubData {
    let mut data = HubData {
        store: None,
        push: None,
        push_key: None,
        pushes: Arc::new(tokio::sync::Semaphore::new(PUSHES_IN_FLIGHT)),
    };
    let Some(dir) = conn.state_dir.clone() else {
        return data;
    };
    data.store = start_store(&dir);
    if let Some(store) = &data.store {
        store.submit(Box::new(move |s| {
            let subs = s.subscriptions(&answerers)?;
            let _ = events.try_send(Event::Subscriptions(subs));
            Ok(())
        }));
    }
    if let Some(push) = &conn.push {
        let key_dir = dir.clone();
        match tokio::task::spawn_blocking(move || VapidKeys::load_or_create(&key_dir)).await {
            Ok(Ok(keys)) => {
                data.push_key = Some(keys.public_key_b64url());
                data.push = Some(WebPush::new(
                    keys,
                    push.subject.clone(),
                    push.ca_file.as_deref(),
                ));
                info!(subject = %push.subject, "hub sends Web Push");
            }
            Ok(Err(e)) => {
                warn!(error = %e, "hub cannot send Web Push: no VAPID key (phones ring only while their page is open)");
            }
            Err(e) => warn!(error = %e, "hub cannot send Web Push: loading the VAPID key failed"),
        }
    }
    data
}

const ROUTE_KEY_FILE: &str = "route.key";

/// The secret that signs route proofs, from `route.key` in the state
/// directory (created once), so that a door can resume its call after the
/// hub restarts. Without a usable directory: a key for this run only.
fn route_key(dir: Option<&std::path::Path>) -> Vec<u8> {
    use ring::rand::SecureRandom as _;
    let fresh = || {
        let mut key = vec![0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("the system's random source works");
        key
    };
    let Some(dir) = dir else {
        return fresh();
    };
    let path = dir.join(ROUTE_KEY_FILE);
    match std::fs::read(&path) {
        Ok(key) if key.len() == 32 => return key,
        Ok(_) => {
            warn!(file = %path.display(), "hub route key has the wrong length: making a new one (doors cannot resume calls routed before)")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(file = %path.display(), error = %e, "hub route key unreadable: using one for this run only");
            return fresh();
        }
    }
    let key = fresh();
    if let Err(e) =
        super::tls::ensure_private_dir(dir).and_then(|()| super::tls::write_private(&path, &key))
    {
        warn!(error = %e, "hub route key not kept: doors cannot resume calls after a hub restart");
    }
    key
}

/// The database thread. It opens the file itself, so that a slow or
/// locked file never holds up the hub; jobs queue meanwhile.
fn start_store(dir: &std::path::Path) -> Option<StoreWorker> {
    let path = dir.join(super::store::FILE_NAME);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Box<dyn HubStore>>(1);
    let open_dir = dir.to_owned();
    let opener = std::thread::Builder::new()
        .name("hub-db-open".into())
        .spawn(move || {
            let store: Box<dyn HubStore> = match SqliteStore::open(&open_dir) {
                Ok(s) => {
                    info!(file = %s.path().display(), "hub database open");
                    Box::new(s)
                }
                Err(e) => {
                    warn!(file = %e.path.display(), cause = %e.cause, "hub database unavailable: no call history, push subscriptions not kept (calls still ring)");
                    Box::new(Unavailable(e))
                }
            };
            let _ = tx.send(store);
        });
    if let Err(e) = opener {
        warn!(file = %path.display(), error = %e, "hub database thread could not start: no call history");
        return None;
    }
    match StoreWorker::spawn(Box::new(Deferred(Some(rx), None)), path.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "hub database thread could not start: no call history");
            None
        }
    }
}

/// The store once its opener has finished: the first job waits for it,
/// on the database thread, never on the hub.
struct Deferred(
    Option<std::sync::mpsc::Receiver<Box<dyn HubStore>>>,
    Option<Box<dyn HubStore>>,
);

impl Deferred {
    fn get(&mut self) -> &mut dyn HubStore {
        if let Some(rx) = self.0.take() {
            self.1 = Some(rx.recv().unwrap_or_else(|_| {
                Box::new(Unavailable(StoreError {
                    path: super::store::FILE_NAME.into(),
                    cause: "the opening thread stopped".into(),
                }))
            }));
        }
        self.1.as_deref_mut().expect("set just above")
    }
}

impl HubStore for Deferred {
    fn save_subscription(
        &mut self,
        a: &str,
        s: &super::push::Subscription,
        t: u64,
    ) -> Result<(), StoreError> {
        self.get().save_subscription(a, s, t)
    }
    fn delete_subscription(&mut self, a: Option<&str>, e: &str) -> Result<bool, StoreError> {
        self.get().delete_subscription(a, e)
    }
    fn subscriptions(
        &mut self,
        a: &[String],
    ) -> Result<Vec<(String, super::push::Subscription)>, StoreError> {
        self.get().subscriptions(a)
    }
    fn insert_call(&mut self, r: &super::store::CallRecord) -> Result<(), StoreError> {
        self.get().insert_call(r)
    }
    fn finish_call(&mut self, e: &super::store::CallEnd) -> Result<(), StoreError> {
        self.get().finish_call(e)
    }
    fn history(
        &mut self,
        g: &[String],
        a: &str,
        l: u32,
    ) -> Result<Vec<crate::signaling::protocol::HistoryCall>, StoreError> {
        self.get().history(g, a, l)
    }
}

/// A database that could not be opened: every call says why.
struct Unavailable(StoreError);

impl Unavailable {
    fn err<T>(&self) -> Result<T, StoreError> {
        Err(StoreError {
            path: self.0.path.clone(),
            cause: format!("unavailable since start: {}", self.0.cause),
        })
    }
}

impl HubStore for Unavailable {
    fn save_subscription(
        &mut self,
        _: &str,
        _: &super::push::Subscription,
        _: u64,
    ) -> Result<(), StoreError> {
        self.err()
    }
    fn delete_subscription(&mut self, _: Option<&str>, _: &str) -> Result<bool, StoreError> {
        self.err()
    }
    fn subscriptions(
        &mut self,
        _: &[String],
    ) -> Result<Vec<(String, super::push::Subscription)>, StoreError> {
        self.err()
    }
    fn insert_call(&mut self, _: &super::store::CallRecord) -> Result<(), StoreError> {
        self.err()
    }
    fn finish_call(&mut self, _: &super::store::CallEnd) -> Result<(), StoreError> {
        self.err()
    }
    fn history(
        &mut self,
        _: &[String],
        _: &str,
        _: u32,
    ) -> Result<Vec<crate::signaling::protocol::HistoryCall>, StoreError> {
        self.err()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The local time of week in the system's time zone, for quiet hours.
fn local_week_minute(unix_ms: u64) -> WeekMinute {
    let t = (unix_ms / 1000) as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack;
    // a null return (out of range) leaves it unused.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        WeekMinute::from_tm(tm.tm_wday, tm.tm_hour, tm.tm_min)
    } else {
        WeekMinute::default()
    }
}

/// Sends one push job, each device from its own task.
fn push(data: &HubData, job: PushJob, events: &mpsc::Sender<Event>) {
    let Some(sender) = &data.push else {
        return;
    };
    let msg = PushMessage {
        payload: job.payload.to_string().into_bytes(),
        ttl: job.ttl,
        urgency: job.urgency,
        topic: Some(job.topic),
    };
    for sub in job.subscriptions {
        let sender = sender.clone();
        let msg = msg.clone();
        let events = events.clone();
        let slots = data.pushes.clone();
        let answerer = job.answerer.clone();
        let call_id = job.call_id.clone();
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let host = endpoint_host(&sub.endpoint).to_owned();
            match sender.send(&sub, &msg).await {
                PushOutcome::Delivered => {
                    debug!(answerer = %answerer, call_id = %call_id, push_host = %host, "push delivered")
                }
                PushOutcome::Gone => {
                    info!(answerer = %answerer, push_host = %host, "push subscription gone (404/410): deleted");
                    let _ = events
                        .send(Event::PushGone {
                            answerer,
                            endpoint: sub.endpoint,
                        })
                        .await;
                }
                PushOutcome::Failed(why) => {
                    warn!(answerer = %answerer, call_id = %call_id, push_host = %host, reason = %crate::logging::escape_peer_text(&why), "push failed")
                }
            }
        });
    }
}

async fn actor(
    mut state: HubState,
    mut events: mpsc::Receiver<Event>,
    events_tx: mpsc::Sender<Event>,
    data: HubData,
    cancel: CancellationToken,
) {
    let mut links = Links::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut session_seq: u64 = 0;
    let boot: u32 = rand::random();
    let mut closed = None;
    loop {
        let actions = tokio::select! {
            ev = events.recv() => {
                // Wall-clock time for credentials minted in `welcome`, the
                // history, and quiet hours.
                let now = unix_ms();
                state.set_clock(now, local_week_minute(now));
                state.set_instant(Instant::now().into_std());
                match ev {
                Some(Event::Connected { conn, peer, tx }) => {
                    session_seq += 1;
                    debug!(conn, %peer, "signaling connection opened");
                    links.conns.insert(conn, (peer, tx));
                    state.connected_from(conn, peer.ip(), format!("s-{boot:08x}-{session_seq}"), Instant::now().into_std());
                    Vec::new()
                }
                Some(Event::Text(conn, text)) => state.handle_text(conn, &text),
                Some(Event::Binary(conn)) => state.handle_binary(conn),
                Some(Event::Closed(conn)) => {
                    // Removed after its last lines are written, which name it.
                    closed = Some(conn);
                    state.disconnected(conn)
                }
                Some(Event::Subscriptions(subs)) => {
                    debug!(count = subs.len(), "push subscriptions loaded");
                    state.load_subscriptions(subs);
                    Vec::new()
                }
                Some(Event::PushGone { answerer, endpoint }) => state.push_gone(&answerer, &endpoint),
                None => break,
            }},
            _ = tick.tick() => state.handle_tick(Instant::now().into_std()),
            _ = cancel.cancelled() => break,
        };
        links.flush_own_backlog();
        for a in actions {
            apply(&mut links, &state, &data, &events_tx, a);
        }
        if let Some(conn) = closed.take() {
            links.conns.remove(&conn);
        }
    }
}

/// The actor's connections: each one's peer and outbound queue.
#[derive(Default)]
struct Links {
    conns: HashMap<ConnId, (SocketAddr, mpsc::Sender<Outbound>)>,
    // Messages for the station's own link that did not fit its queue.
    own_backlog: HashMap<ConnId, std::collections::VecDeque<Outbound>>,
}

impl Links {
    /// What waits for the station's own link, as far as its queue takes it.
    fn flush_own_backlog(&mut self) {
        let conns = &self.conns;
        self.own_backlog.retain(|conn, q| {
            let Some((_, tx)) = conns.get(conn) else {
                return false;
            };
            while let Some(out) = q.pop_front() {
                if let Err(e) = tx.try_send(out) {
                    if let mpsc::error::TrySendError::Full(out) = e {
                        q.push_front(out);
                        return true;
                    }
                    return false;
                }
            }
            false
        });
    }

    fn send(&mut self, state: &HubState, conn: ConnId, msg: Message) {
        let Some((peer, tx)) = self.conns.get(&conn) else {
            return;
        };
        let out = Outbound::Text(msg.to_json());
        if let Some(q) = self.own_backlog.get_mut(&conn) {
            q.push_back(out);
            return;
        }
        match tx.try_send(out) {
            Ok(()) => {}
            // The station's own link carries its calls: never
            // cut it for a burst some peer caused; what does not
            // fit waits here, in order.
            Err(mpsc::error::TrySendError::Full(out)) if state.is_own(conn) => {
                warn!(conn, "own station link busy: holding messages for it");
                self.own_backlog.entry(conn).or_default().push_back(out);
            }
            Err(_) => {
                warn!(conn, %peer, "signaling client too slow, dropping it");
                let _ = tx.try_send(Outbound::Close(1008, "too slow"));
            }
        }
    }
}

/// One action of the state, carried out.
fn apply(
    links: &mut Links,
    state: &HubState,
    data: &HubData,
    events_tx: &mpsc::Sender<Event>,
    a: Action,
) {
    match a {
        Action::Send(conn, msg) => links.send(state, conn, msg),
        Action::Close(conn, code, reason) => {
            if let Some((_, tx)) = links.conns.get(&conn) {
                let _ = tx.try_send(Outbound::Close(code, reason));
            }
        }
        Action::Push(job) => push(data, job, events_tx),
        Action::Store(op) => {
            if let Some(store) = &data.store {
                store.apply(op);
            }
        }
        Action::History {
            conn,
            answerer,
            groups,
            limit,
        } => history(links, data, conn, answerer, groups, limit),
        Action::RefusedOpen {
            conn,
            call_id,
            nonce,
            refusals,
        } => refused_open(links, state, conn, call_id, nonce, refusals),
        Action::Log {
            level,
            conn,
            call_id,
            text,
        } => log_line(links, state, level, conn, call_id, text),
    }
}

/// An answerer's call history, read from the store off the actor.
fn history(
    links: &Links,
    data: &HubData,
    conn: ConnId,
    answerer: String,
    groups: Vec<String>,
    limit: u32,
) {
    let Some((_, tx)) = links.conns.get(&conn) else {
        return;
    };
    let tx = tx.clone();
    match &data.store {
        Some(store) => store.submit(Box::new(move |s| {
            let found = s.history(&groups, &answerer, limit);
            let calls = found.as_ref().cloned().unwrap_or_default();
            let _ = tx.try_send(Outbound::Text(Message::History { calls }.to_json()));
            found.map(|_| ())
        })),
        None => {
            let _ = tx.try_send(Outbound::Text(
                Message::History { calls: Vec::new() }.to_json(),
            ));
        }
    }
}

fn refused_open(
    links: &Links,
    state: &HubState,
    conn: ConnId,
    call_id: String,
    nonce: String,
    refusals: u64,
) {
    let peer = links
        .conns
        .get(&conn)
        .map(|(p, _)| p.to_string())
        .unwrap_or_default();
    let id = state
        .describe(conn)
        .map(|(_, i)| i.to_owned())
        .unwrap_or_default();
    warn!(
        AUDIT = "door_open",
        source = "signaling",
        call_id = %call_id,
        peer = %id,
        remote_addr = %peer,
        granted = false,
        reason = crate::door::Refusal::NotPermitted.as_str(),
        nonce = %nonce,
        refusals,
        "door open refused: requested over signaling"
    );
}

/// A log line of the state, with the connection's peer and identity.
fn log_line(
    links: &Links,
    state: &HubState,
    level: LogLevel,
    conn: ConnId,
    call_id: Option<crate::signaling::protocol::CallId>,
    text: String,
) {
    let peer = links
        .conns
        .get(&conn)
        .map(|(p, _)| p.to_string())
        .unwrap_or_default();
    let (role, id) = state
        .describe(conn)
        .map(|(r, i)| (r.to_string(), i.to_owned()))
        .unwrap_or_default();
    let call_id = call_id.map(|c| c.to_string()).unwrap_or_default();
    // The state escapes each peer field; this is the net
    // under it, so no line can ever be split.
    let text = crate::logging::PeerText::with_max(&text, 600);
    match level {
        LogLevel::Info => {
            info!(conn, peer = %peer, role = %role, client = %id, call_id = %call_id, "hub: {text}")
        }
        LogLevel::Warn => {
            warn!(conn, peer = %peer, role = %role, client = %id, call_id = %call_id, "hub: {text}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::policy::OverTls;

    fn policy(hsts: bool) -> HttpPolicy {
        HttpPolicy {
            names: vec!["door.local".into(), "localhost".into()],
            certs: None,
            origins: vec!["https://intercom.example.net".into()],
            hsts,
        }
    }

    /// The hub's router with its guard, as `run` serves it.
    fn app(policy: HttpPolicy) -> Router {
        let (events, _) = mpsc::channel(1);
        let state = AppState {
            events,
            next_conn: Default::default(),
            conn: ConnSettings {
                ping_interval: Duration::from_secs(15),
                public_url: None,
                state_dir: None,
                push: None,
                station_name: "Front door".into(),
                limits: ConnLimits::default(),
                policy: policy.clone(),
            },
            cancel: CancellationToken::new(),
            https_port: Some(8443),
            max_message_bytes: 65536,
        };
        router(state).layer(axum::middleware::from_fn_with_state(
            Arc::new(policy),
            super::super::policy::guard,
        ))
    }

    async fn call(
        app: &Router,
        path: &str,
        headers: &[(&str, &str)],
        tls: bool,
    ) -> axum::response::Response {
        let mut req = axum::http::Request::builder().uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(axum::body::Body::empty()).expect("valid request");
        req.extensions_mut().insert(OverTls(tls));
        let mut app = app.clone();
        tower_service::Service::call(&mut app, req)
            .await
            .expect("infallible")
    }

    fn assert_hardened(r: &axum::response::Response, what: &str, hsts: bool) {
        let h = r.headers();
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap_or_else(|| panic!("{what}: no CSP"))
            .to_str()
            .expect("ascii");
        for want in [
            "default-src 'none'",
            "script-src 'self';",
            "style-src 'self';",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(want), "{what}: CSP {csp:?} lacks {want:?}");
        }
        assert!(!csp.contains("unsafe"), "{what}: CSP {csp:?}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{what}");
        assert_eq!(
            h.contains_key(header::STRICT_TRANSPORT_SECURITY),
            hsts,
            "{what}: HSTS"
        );
    }

    #[tokio::test]
    async fn every_route_carries_the_security_headers() {
        let host = [("host", "door.local:8443")];
        let paths: Vec<&str> = routes()
            .iter()
            .map(|(p, _)| *p)
            .chain(["/no-such-page"])
            .collect();
        assert!(paths.len() > 10, "the route table is walked");
        for (hsts, tls, want_hsts) in [
            (false, true, false),
            (true, true, true),
            (true, false, false),
        ] {
            let app = app(policy(hsts));
            for path in &paths {
                let r = call(&app, path, &host, tls).await;
                assert_hardened(&r, path, want_hsts);
                if *path == "/" {
                    assert_eq!(r.status(), 200);
                    let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
                        .to_str()
                        .expect("ascii");
                    assert!(
                        csp.contains(
                            "connect-src 'self' ws://door.local:8443 wss://door.local:8443"
                        ),
                        "{csp}"
                    );
                }
            }
            // Refusals carry them too.
            let r = call(&app, "/", &[("host", "evil.example")], tls).await;
            assert_eq!(r.status(), 421);
            assert_hardened(&r, "wrong host", false);
        }
        let redirect = redirect_router(8443, Arc::new(policy(true)));
        let r = call(&redirect, "/x", &[("host", "door.local:8080")], false).await;
        assert_eq!(r.status(), 308);
        assert_hardened(&r, "redirect", false);
        let r = call(&redirect, "/x", &[("host", "evil.example:8080")], false).await;
        assert_eq!(r.status(), 421, "no redirect to a foreign name");
    }

    /// The page's modules import each other by `from './name.js'`: each one
    /// imported is a route, served as JavaScript (browsers refuse a module
    /// of any other type), and in the service worker's offline shell.
    #[tokio::test]
    async fn every_page_module_is_served_as_javascript_and_kept_offline() {
        assert!(
            INDEX_HTML.contains(r#"<script type="module" src="app.js">"#),
            "index.html loads app.js as a module"
        );
        let app = app(policy(false));
        let mut seen = vec!["app.js".to_string()];
        let mut i = 0;
        while i < seen.len() {
            let path = format!("/{}", seen[i]);
            let r = call(&app, &path, &[("host", "door.local:8443")], true).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "text/javascript; charset=utf-8",
                "{path}"
            );
            assert!(
                SW_JS.contains(&format!("'{path}'")),
                "{path} not in sw.js's shell"
            );
            let body = axum::body::to_bytes(r.into_body(), 1 << 20)
                .await
                .expect("body");
            let body = String::from_utf8(body.to_vec()).expect("utf-8");
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let name = line
                    .split("from './")
                    .nth(1)
                    .and_then(|rest| rest.split('\'').next())
                    .unwrap_or_else(|| panic!("{path}: import not from './…': {line}"));
                if !seen.iter().any(|s| s == name) {
                    seen.push(name.to_string());
                }
            }
            i += 1;
        }
        assert_eq!(seen, ["app.js", "call.js", "signal.js", "media.js"]);
    }

    #[test]
    fn the_page_has_no_inline_script_style_or_handler() {
        for (name, page) in [("index.html", INDEX_HTML)] {
            let lower = page.to_ascii_lowercase();
            for tag in lower.match_indices("<script").map(|(i, _)| &lower[i..]) {
                let open = &tag[..tag.find('>').expect("tag closes")];
                assert!(open.contains(" src="), "{name}: inline script {open}");
            }
            assert!(!lower.contains("<style"), "{name}: inline style");
            assert!(!lower.contains(" style="), "{name}: style attribute");
            assert!(
                !lower.contains(" onclick=") && !lower.contains(" onload="),
                "{name}: inline handler"
            );
        }
    }

    #[tokio::test]
    async fn host_and_origin_are_checked() {
        let app = app(policy(false));
        let upgrade = |origin: Option<&'static str>| {
            let mut h = vec![
                ("host", "door.local:8443"),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ];
            if let Some(o) = origin {
                h.push(("origin", o));
            }
            h
        };
        for (origin, refused) in [
            (Some("http://evil.example"), true),
            (Some("https://door.local:9999"), true),
            (Some("null"), true),
            (Some("https://door.local:8443"), false),
            (Some("https://intercom.example.net"), false),
            (None, false),
        ] {
            let r = call(&app, "/ws", &upgrade(origin), true).await;
            assert_eq!(
                r.status() == 403,
                refused,
                "origin {origin:?}: {}",
                r.status()
            );
        }
        let r = call(&app, "/", &[("host", "rebound.example:8443")], true).await;
        assert_eq!(r.status(), 421);
        let r = call(&app, "/", &[("host", "door.local:8443")], true).await;
        assert_eq!(r.status(), 200);
        let r = call(&app, "/", &[("host", "127.0.0.1:8443")], true).await;
        assert_eq!(r.status(), 200, "this machine's addresses are its names");
    }

    #[test]
    fn websocket_limit_follows_the_protocol_limit() {
        assert_eq!(ws_limit(65536), 131072);
        assert_eq!(ws_limit(1 << 20), HARD_FRAME_LIMIT);
    }

    #[test]
    fn redirect_keeps_host_and_path() {
        let req = axum::http::Request::builder()
            .uri("/?x=1")
            .header(header::HOST, "door.local:8080")
            .body(axum::body::Body::empty())
            .unwrap();
        let r = redirect_to_https(&req, 8443);
        assert_eq!(r.status(), 308);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://door.local:8443/?x=1"
        );
        let req = axum::http::Request::builder()
            .uri("/a")
            .header(header::HOST, "[fd00::1]:80")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            redirect_to_https(&req, 443).headers()[header::LOCATION],
            "https://[fd00::1]/a"
        );
        // A Host header that could smuggle text into the header: refused.
        let req = axum::http::Request::builder()
            .uri("/")
            .header(header::HOST, "evil.test/x")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(redirect_to_https(&req, 443).status(), 400);
    }

    #[test]
    fn manifest_is_named_after_the_station() {
        let m: serde_json::Value = serde_json::from_str(&manifest_json("Front door")).unwrap();
        assert_eq!(m["name"], "Front door");
        assert_eq!(m["short_name"], "Front door");
        assert_eq!(m["display"], "standalone");
        assert_eq!(m["start_url"], "/");
        assert_eq!(m["icons"].as_array().unwrap().len(), 3);
        let m: serde_json::Value =
            serde_json::from_str(&manifest_json("Garden gate \"North\" wing")).unwrap();
        assert_eq!(m["name"], "Garden gate \"North\" wing");
        assert_eq!(m["short_name"], "Intercom");
        let m: serde_json::Value = serde_json::from_str(&manifest_json(" ")).unwrap();
        assert_eq!(m["name"], "Door intercom");
    }

    #[test]
    fn icons_are_png_of_their_size() {
        for (bytes, size) in [
            (ICON_192, 192u32),
            (ICON_512, 512),
            (ICON_MASKABLE, 512),
            (APPLE_TOUCH_ICON, 180),
        ] {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
            let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
            let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
            assert_eq!((w, h), (size, size));
        }
    }

    #[test]
    fn client_info_names_the_https_address_or_null() {
        assert_eq!(client_info(None), r#"{"https_url":null}"#);
        assert_eq!(
            client_info(Some("https://door.example.net:8443/")),
            r#"{"https_url":"https://door.example.net:8443/"}"#
        );
    }
}
