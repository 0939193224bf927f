//! Helpers shared by the integration tests: an answering client built on
//! the product's own signaling types and media engine.
#![allow(dead_code)]

pub mod push_service;
pub mod station;

use std::fmt::Debug;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use intercomd::audio::sim::{SimAudioSpec, SimSource, start_sim_audio};
use intercomd::media::{MediaEvent, MediaSettings};
use intercomd::resident::{Heard, Resident};
use intercomd::signaling::protocol::{self, CallId, Message, Role};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How often [`eventually`] probes.
const POLL: Duration = Duration::from_millis(20);

/// Probes (`probe`, then every 20 ms) until `done` holds for what it
/// returned, for `within` at most: `Ok` with the value that satisfied
/// `done`, or `Err` with the last one observed when time ran out. The
/// probe runs at least once, and once more at the end of the time.
pub async fn poll_until<T>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> Result<T, T> {
    let deadline = Instant::now() + within;
    loop {
        let expired = Instant::now() >= deadline;
        let v = probe().await;
        if done(&v) {
            return Ok(v);
        }
        if expired {
            return Err(v);
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Waits until `done` holds for what `probe` returns (see [`poll_until`])
/// and returns that value; after `within`, panics naming `what` was
/// awaited and the last value observed.
pub async fn eventually<T: Debug>(
    what: &str,
    within: Duration,
    probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    match poll_until(within, probe, done).await {
        Ok(v) => v,
        Err(last) => panic!("{what}: not reached within {within:?}; last observed: {last:?}"),
    }
}

/// [`poll_until`] with a blocking `probe`, sleeping the thread between
/// probes: for the tests that do not run on tokio and the blocking helpers
/// (which may be called on a runtime's thread, so they cannot start one).
pub fn poll_until_blocking<T>(
    within: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> Result<T, T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let expired = std::time::Instant::now() >= deadline;
        let v = probe();
        if done(&v) {
            return Ok(v);
        }
        if expired {
            return Err(v);
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(std::time::Instant::now())));
    }
}

/// [`eventually`] for the tests that do not run on tokio (see
/// [`poll_until_blocking`]).
pub fn eventually_blocking<T: Debug>(
    what: &str,
    within: Duration,
    probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    match poll_until_blocking(within, probe, done) {
        Ok(v) => v,
        Err(last) => panic!("{what}: not reached within {within:?}; last observed: {last:?}"),
    }
}

/// The variable that tells a child process of this binary which test it
/// runs alone (see [`in_own_process`]).
const ALONE: &str = "INTERCOMD_IT_ALONE";

/// For a test whose process-global state must not be shared with the
/// other tests of this binary (the tracing subscriber capturing the log,
/// the environment): run by the harness, it runs the test `test` of
/// `module` (`module_path!()`) alone in a child process of this binary,
/// fails if it failed, and returns `false`; in that child it returns
/// `true` and the test goes on.
pub fn in_own_process(module: &str, test: &str) -> bool {
    let module = module.split_once("::").map_or("", |(_, m)| m);
    let name = format!("{module}::{test}");
    if std::env::var_os(ALONE).is_some_and(|v| v == name.as_str()) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("own executable"))
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .arg("--include-ignored")
        .env(ALONE, &name)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run this test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Through the harness's capture: shown when the test fails.
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in its own process: {}",
        out.status
    );
    false
}

/// The first line of a test that must run alone (see [`in_own_process`]):
/// `run_alone!("test_name")` returns from the test in the harness's
/// process once its run in the child process passed, and goes on in the
/// child.
macro_rules! run_alone {
    ($test:literal) => {
        if !$crate::common::in_own_process(module_path!(), $test) {
            return;
        }
    };
}
pub(crate) use run_alone;

/// Writes a secret (token, TURN secret) the way intercomd requires: a file
/// only its owner can read.
pub fn write_secret(path: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("loopback is available")
        .port()
}

/// One blocking HTTP/1.1 request; returns status and body.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    // The panel takes POSTs as JSON only (a cross-site form cannot send it).
    let (kind, body) = match method {
        "POST" => ("Content-Type: application/json\r\n", "{}"),
        _ => ("", ""),
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

pub async fn connect(url: &str, token: &str) -> Socket {
    connect_with(url, token, None).await
}

/// [`connect`] over `wss://` with the given TLS trust.
pub async fn connect_with(
    url: &str,
    token: &str,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Socket {
    let mut ws = open(url, tls).await;
    match hello(&mut ws, Role::Answerer, token).await {
        Message::Welcome { .. } => ws,
        m => panic!("expected welcome, got {m:?}"),
    }
}

/// A WebSocket to the hub at `url`, not signed in (`wss://` with the
/// given TLS trust).
pub async fn open(url: &str, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Socket {
    let connector = tls.map(tokio_tungstenite::Connector::Rustls);
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
        .await
        .expect("hub reachable");
    ws
}

/// Signs in on `ws` as `role` with `token`; returns the hub's reply.
pub async fn hello(ws: &mut Socket, role: Role, token: &str) -> Message {
    send(
        ws,
        &Message::Hello {
            v: 1,
            role,
            token: token.into(),
            name: None,
        },
    )
    .await;
    recv(ws).await
}

/// A call id from a literal.
pub fn cid(s: &str) -> CallId {
    CallId::new(s).expect("valid id")
}

/// The door on `door` rings the group `residents` with the call `id`;
/// returns how many answerers the hub rings.
pub async fn ring_residents(door: &mut Socket, id: &str) -> u32 {
    send(
        door,
        &Message::Ring {
            call_id: cid(id),
            group: "residents".into(),
            door: None,
        },
    )
    .await;
    match recv_until(door, |m| matches!(m, Message::Ringing { .. })).await {
        Message::Ringing { answerers, .. } => answerers,
        _ => unreachable!("matched above"),
    }
}

pub async fn send(ws: &mut Socket, m: &Message) {
    ws.send(Ws::Text(m.to_json().into())).await.expect("send");
}

pub async fn recv(ws: &mut Socket) -> Message {
    loop {
        let f = timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("frame");
        if let Ws::Text(t) = f {
            return protocol::decode(t.as_str(), 1 << 20).expect("hub sends valid messages");
        }
    }
}

/// Receive until a message matches.
pub async fn recv_until(ws: &mut Socket, pred: impl Fn(&Message) -> bool) -> Message {
    for _ in 0..100 {
        let m = recv(ws).await;
        if pred(&m) {
            return m;
        }
    }
    panic!("no matching message in 100");
}

/// Answer a ringing call with the product's media engine playing 1000 Hz
/// (through [`intercomd::resident::Resident`], the one Rust resident).
/// Returns when audio is established; the caller keeps the pieces alive.
/// Derefs to the resident (`a.ws`, `a.door_send`, `a.next_media`).
pub struct Answerer {
    pub resident: Resident,
    pub call_id: CallId,
    pub audio: intercomd::audio::sim::SimAudioHandle,
    /// Stops the media engine and the simulated audio.
    pub cancel: CancellationToken,
}

impl std::ops::Deref for Answerer {
    type Target = Resident;
    fn deref(&self) -> &Resident {
        &self.resident
    }
}

impl std::ops::DerefMut for Answerer {
    fn deref_mut(&mut self) -> &mut Resident {
        &mut self.resident
    }
}

impl Answerer {
    pub async fn answer(ws: Socket) -> Answerer {
        let mut resident = Resident::over(ws, String::new());
        let call_id =
            match recv_until(&mut resident.ws, |m| matches!(m, Message::Ring { .. })).await {
                Message::Ring { call_id, door, .. } => {
                    assert_eq!(door.expect("ring names the door").name, "Front door");
                    call_id
                }
                _ => unreachable!("filtered above"),
            };
        let cancel = CancellationToken::new();
        let settings = MediaSettings {
            udp_bind_ips: vec!["127.0.0.1".parse().expect("literal")],
            ..MediaSettings::default()
        };
        let (ports, audio) =
            start_sim_audio(&SimAudioSpec::new(SimSource::Tone(1000.0)), cancel.clone())
                .expect("sim audio");
        resident
            .accept(call_id.clone(), settings, ports, cancel.clone())
            .await
            .expect("accept sent, media started");
        let mut a = Answerer {
            resident,
            call_id,
            audio,
            cancel,
        };
        a.pump_until_established().await;
        a
    }

    /// Waits (10 s at most) until the resident's speaker plays `hz`;
    /// `what` names the wait in the failure.
    pub async fn wait_hears(&self, what: &str, hz: f32) {
        let audio = self.audio.clone();
        wait_freq(what, move || audio.played_dominant_frequency(), hz).await;
    }

    /// Relay signaling and media events until audio is established.
    pub async fn pump_until_established(&mut self) {
        timeout(Duration::from_secs(15), async {
            loop {
                if let Heard::Media(MediaEvent::AudioEstablished { .. }) = self
                    .resident
                    .next()
                    .await
                    .expect("hub and media engine alive")
                {
                    return;
                }
            }
        })
        .await
        .expect("audio established in 15 s");
    }

    /// Send `text` on the door data channel and wait for the reply.
    pub async fn door(&mut self, text: &str) -> serde_json::Value {
        timeout(Duration::from_secs(10), async {
            while !self.resident.call.as_ref().is_some_and(|c| c.door_open) {
                self.resident
                    .next_media()
                    .await
                    .expect("media relayed")
                    .expect("media engine alive");
            }
        })
        .await
        .expect("door channel open within 10 s");
        self.resident.door_send(text.into()).expect("media accepts");
        timeout(Duration::from_secs(10), async {
            loop {
                let ev = self.resident.next_media().await.expect("media relayed");
                if let Some(MediaEvent::DoorMessage { text, .. }) = ev {
                    return serde_json::from_str(&text).expect("the door replies JSON");
                }
                assert!(ev.is_some(), "media engine gone");
            }
        })
        .await
        .expect("a reply on the door channel within 10 s")
    }
}

/// Wait until `f` reports a dominant frequency within 30 Hz of `want`.
pub async fn wait_freq(what: &str, f: impl Fn() -> Option<f32>, want: f32) {
    eventually(
        &format!("{what}: expected {want} Hz"),
        Duration::from_secs(10),
        async || f(),
        |hz| hz.is_some_and(|hz| (hz - want).abs() <= 30.0),
    )
    .await;
}

/// A hub's `[[hub.answerers]]` entry: `id` (shown as `name` when given)
/// in `group`, its token in `token_file`.
pub fn answerer_entry(
    id: &str,
    name: Option<&str>,
    token_file: &std::path::Path,
    group: &str,
) -> String {
    let name = name
        .map(|n| format!("name = \"{n}\"\n"))
        .unwrap_or_default();
    format!(
        "[[hub.answerers]]\nid = \"{id}\"\n{name}token_file = \"{}\"\ngroups = [\"{group}\"]\n",
        token_file.display()
    )
}

/// A hub's `[[hub.doors]]` entry for the front door (`door-1`, "Front
/// door", ringing `residents`), its token in `token_file`.
pub fn front_door_entry(token_file: &std::path::Path) -> String {
    format!(
        "[[hub.doors]]\nid = \"door-1\"\nname = \"Front door\"\ntoken_file = \"{}\"\ngroups = [\"residents\"]\n",
        token_file.display()
    )
}

/// A hub alone (as `intercomd hub` runs it) started from a whole
/// configuration, for tests that play the door and the residents.
pub struct TestHub {
    pub started: intercomd::daemon::StartedHub,
    /// `ws://…/ws` on the main listener (tests run it with TLS off).
    pub url: String,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl TestHub {
    pub async fn start(toml: &str) -> TestHub {
        let settings = intercomd::config::load_from_strs(&[("hub.toml", toml)])
            .expect("hub configuration is valid");
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let hs = intercomd::daemon::hub_settings(&settings).expect("tokens readable");
        let started = intercomd::daemon::start_hub(&settings, hs, false, &cancel, &tracker)
            .await
            .expect("hub starts");
        TestHub {
            url: format!("ws://{}/ws", started.addr),
            started,
            cancel,
            tracker,
        }
    }

    /// Stops the hub and waits for its tasks.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .expect("the hub stops");
    }
}

/// Joins the hub at `url` as a door station with `token`.
pub async fn connect_door(url: &str, token: &str) -> Socket {
    let mut ws = open(url, None).await;
    assert!(matches!(
        hello(&mut ws, Role::Door, token).await,
        Message::Welcome { .. }
    ));
    ws
}

/// Captures what the daemon's code logs in this test process (at `filter`,
/// set by the first call), also shown on stderr when a test fails.
pub fn capture_log(filter: &str) -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let for_writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || LogWriter(for_writer.clone()))
            .try_init();
        buf
    })
}

/// Shows what the daemon's code logs through the test harness (`RUST_LOG`,
/// or `info` without the WebRTC stack's chatter), once per process.
pub fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Everything captured by [`capture_log`] so far.
pub fn captured_log() -> String {
    capture_log("info")
        .lock()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|p| String::from_utf8_lossy(&p.into_inner()).into_owned())
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        // Shown by the test harness when a test fails.
        eprint!("{}", String::from_utf8_lossy(b));
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The simulated panel's `/state` (the station's status), `Null` while the
/// panel does not answer.
pub async fn panel_state(panel: std::net::SocketAddr) -> serde_json::Value {
    let body = tokio::task::spawn_blocking(move || http(panel, "GET", "/state"))
        .await
        .expect("blocking task runs");
    match body {
        Ok((200, b)) => serde_json::from_str(&b).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

/// Polls the panel's `/state` until `pred` holds (20 s at most; panics
/// with the last state otherwise).
pub async fn wait_panel(
    panel: std::net::SocketAddr,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) {
    eventually(
        what,
        Duration::from_secs(20),
        async || panel_state(panel).await,
        pred,
    )
    .await;
}

/// The panel's call button, pressed once.
pub async fn panel_press(panel: std::net::SocketAddr) {
    let (status, body) = tokio::task::spawn_blocking(move || http(panel, "POST", "/press"))
        .await
        .expect("blocking task runs")
        .expect("panel answers");
    assert_eq!(status, 200, "press: {body}");
}
