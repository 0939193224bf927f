//! The simulated door hardware: buttons pressed from a control handle (the
//! terminal, the demo's door panel page, tests) and LEDs whose patterns are
//! recorded. For tests and the demo only; a real board never gets it unless
//! its configuration says `hardware.backend = "sim"`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::hub::conn::{
    Admission, IdleIo, accept_loop, normal_authority, parse_origin, serve_http,
};

use super::{HwError, HwEvent, Led, Relay};
use crate::door::indication::LedPattern;

const PANEL_HTML: &str = include_str!("../../web/panel.html");

/// The longest press the panel accepts (a stuck test must not hold a
/// request open forever).
pub const MAX_PRESS: Duration = Duration::from_secs(60);

/// How many relay writes `/state` keeps.
const RELAY_HISTORY: usize = 32;

/// One simulated LED as last driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LedView {
    pub pattern: LedPattern,
    pub on: bool,
}

/// What the simulated board's outputs and inputs show.
#[derive(Debug, Default, serde::Serialize)]
pub struct BoardView {
    pub leds: BTreeMap<String, LedView>,
    /// Relay coil level; `None` until first written.
    pub relay_energised: Option<bool>,
    /// The latest relay writes, oldest first (`true`: energised).
    pub relay_writes: Vec<bool>,
    /// Writes since start.
    pub relay_write_count: u64,
    pub door_open: bool,
    pub tamper: bool,
}

type Board = Arc<Mutex<BoardView>>;

/// Control and observation handle of the simulated board. Cloneable.
#[derive(Clone, Debug)]
pub struct SimControl {
    events: mpsc::Sender<HwEvent>,
    board: Board,
    buttons: Arc<Vec<String>>,
}

fn lock(board: &Board) -> std::sync::MutexGuard<'_, BoardView> {
    board
        .lock()
        .expect("board lock is never held across a panic")
}

impl SimControl {
    fn send(&self, ev: HwEvent) -> Result<(), String> {
        self.events
            .try_send(ev)
            .map_err(|e| format!("station busy: {e}"))
    }

    fn button(&self, button: Option<&str>) -> Result<String, String> {
        match button {
            None => self
                .buttons
                .first()
                .cloned()
                .ok_or_else(|| "this board has no call button".to_string()),
            Some(b) if self.buttons.iter().any(|x| x == b) => Ok(b.to_owned()),
            Some(b) => Err(format!("no button named `{b}`")),
        }
    }

    /// Press and release a call button (`None`: the first one).
    pub fn press(&self, button: Option<&str>) -> Result<String, String> {
        let name = self.button(button)?;
        self.send(HwEvent::ButtonPressed {
            button: name.clone(),
        })?;
        self.send(HwEvent::ButtonReleased {
            button: name.clone(),
        })?;
        Ok(name)
    }

    /// Hold a call button down for `hold`, then release it. Returns when
    /// the button is up again.
    pub async fn press_for(&self, button: Option<&str>, hold: Duration) -> Result<String, String> {
        if hold > MAX_PRESS {
            return Err(format!(
                "a press lasts at most {} ms",
                MAX_PRESS.as_millis()
            ));
        }
        let name = self.button(button)?;
        self.send(HwEvent::ButtonPressed {
            button: name.clone(),
        })?;
        tokio::time::sleep(hold).await;
        // The release must arrive even when the queue is momentarily full,
        // or the station would think the button is still held.
        self.events
            .send(HwEvent::ButtonReleased {
                button: name.clone(),
            })
            .await
            .map_err(|e| format!("station stopped: {e}"))?;
        Ok(name)
    }

    /// Ask the station to hang up.
    pub fn hangup(&self) -> Result<(), String> {
        self.send(HwEvent::HangupRequested)
    }

    /// Press the exit button inside.
    pub fn exit(&self) -> Result<(), String> {
        self.send(HwEvent::ExitPressed)
    }

    /// Open or close the door (its sensor reports it).
    pub fn set_door(&self, open: bool) -> Result<(), String> {
        self.send(HwEvent::DoorSensor { open })?;
        lock(&self.board).door_open = open;
        Ok(())
    }

    /// Trip or restore the tamper switch.
    pub fn set_tamper(&self, active: bool) -> Result<(), String> {
        self.send(HwEvent::Tamper { active })?;
        lock(&self.board).tamper = active;
        Ok(())
    }

    pub fn led(&self, name: &str) -> Option<LedView> {
        lock(&self.board).leds.get(name).copied()
    }

    pub fn leds(&self) -> BTreeMap<String, LedView> {
        lock(&self.board).leds.clone()
    }

    pub fn relay_energised(&self) -> Option<bool> {
        lock(&self.board).relay_energised
    }

    pub fn relay_writes(&self) -> Vec<bool> {
        lock(&self.board).relay_writes.clone()
    }

    /// Everything the board shows, as JSON.
    pub fn view(&self) -> serde_json::Value {
        serde_json::to_value(&*lock(&self.board)).unwrap_or_default()
    }

    pub fn buttons(&self) -> &[String] {
        &self.buttons
    }
}

#[derive(Debug)]
pub struct SimLed {
    name: String,
    board: Board,
}

impl Led for SimLed {
    fn name(&self) -> &str {
        &self.name
    }

    fn set(&mut self, pattern: LedPattern, on: bool) -> Result<(), HwError> {
        lock(&self.board)
            .leds
            .insert(self.name.clone(), LedView { pattern, on });
        Ok(())
    }
}

/// The simulated relay. With a state file, every write is also stored
/// there (`energised` or `de-energised`), as a latching output would keep
/// its level when the process dies: tests kill the daemon and read it.
#[derive(Debug)]
pub struct SimRelay {
    board: Board,
    state_file: Option<PathBuf>,
}

impl Relay for SimRelay {
    fn set(&mut self, energised: bool) -> Result<(), HwError> {
        if let Some(path) = &self.state_file {
            let text = if energised {
                "energised\n"
            } else {
                "de-energised\n"
            };
            std::fs::write(path, text).map_err(|e| HwError::Line {
                device: "simulated board".into(),
                line: format!("relay (state file {})", path.display()),
                message: e.to_string(),
            })?;
        }
        let mut b = lock(&self.board);
        b.relay_energised = Some(energised);
        b.relay_write_count += 1;
        b.relay_writes.push(energised);
        if b.relay_writes.len() > RELAY_HISTORY {
            b.relay_writes.remove(0);
        }
        Ok(())
    }
}

/// The outputs of a simulated board.
#[derive(Debug)]
pub struct SimOutputs {
    pub leds: Vec<Box<dyn Led>>,
    pub relay: Box<dyn Relay>,
}

/// Build a simulated board with these buttons and LEDs. Inputs arrive on
/// `events`; `state_file` keeps the relay level across a crash.
pub fn board(
    buttons: Vec<String>,
    leds: &[&str],
    state_file: Option<PathBuf>,
    events: mpsc::Sender<HwEvent>,
) -> (SimOutputs, SimControl) {
    let board: Board = Arc::new(Mutex::new(BoardView {
        leds: leds
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    LedView {
                        pattern: LedPattern::Off,
                        on: false,
                    },
                )
            })
            .collect(),
        ..BoardView::default()
    }));
    let outs = leds
        .iter()
        .map(|n| {
            Box::new(SimLed {
                name: n.to_string(),
                board: board.clone(),
            }) as Box<dyn Led>
        })
        .collect();
    let relay = Box::new(SimRelay {
        board: board.clone(),
        state_file,
    });
    (
        SimOutputs { leds: outs, relay },
        SimControl {
            events,
            board,
            buttons: Arc::new(buttons),
        },
    )
}

/// Read the terminal: Enter presses the first call button, `h` + Enter
/// hangs up. Ends at end of input.
pub async fn stdin_loop(control: SimControl, cancel: CancellationToken) {
    // A thread of its own, not tokio's stdin: a read blocked on the
    // terminal would hold up the runtime's shutdown (Ctrl+C waiting for
    // Enter). The process ends without waiting for this thread.
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(8);
    let reader = std::thread::Builder::new()
        .name("terminal".into())
        .spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = reader {
        warn!(error = %e, "cannot read the terminal: no key presses");
        return;
    }
    loop {
        let line = tokio::select! {
            l = lines.recv() => l,
            _ = cancel.cancelled() => return,
        };
        match line {
            Some(l) if l.trim().eq_ignore_ascii_case("h") => {
                if let Err(e) = control.hangup() {
                    warn!("terminal hang-up: {e}");
                }
            }
            Some(_) => match control.press(None) {
                Ok(b) => info!(button = %b, "simulated button pressed from the terminal"),
                Err(e) => warn!("terminal press: {e}"),
            },
            None => return,
        }
    }
}

/// Figures computed only when asked for (they cost CPU), merged into the
/// `audio` object of `GET /state`.
pub type AudioProbe = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
struct PanelState {
    control: SimControl,
    status: crate::station::StatusHandle,
    probe: Option<AudioProbe>,
}

#[derive(serde::Deserialize)]
struct PressQuery {
    button: Option<String>,
    /// Hold time; absent: a short press.
    ms: Option<u64>,
}

#[derive(serde::Deserialize)]
struct DoorQuery {
    state: String,
}

#[derive(serde::Deserialize)]
struct TamperQuery {
    /// `true` (default) trips the switch, `false` restores it.
    active: Option<bool>,
}

/// Serve the simulated board's control API and the demo's door panel page:
/// `POST /press[?button=][&ms=]`, `POST /hangup`, `POST /exit`,
/// `POST /door?state=open|closed`, `POST /tamper[?active=false]`,
/// `GET /state`, `GET /`.
pub async fn serve_panel(
    listener: tokio::net::TcpListener,
    control: SimControl,
    status: crate::station::StatusHandle,
    probe: Option<AudioProbe>,
    cancel: CancellationToken,
) {
    let app = panel_router(PanelState {
        control,
        status,
        probe,
    });
    // The panel is reachable by whoever can reach its port: the same
    // connection hygiene as the hub, with room for a demo's few tabs.
    let limits = crate::hub::conn::ConnLimits::default();
    let admission = Admission::new(PANEL_CONNECTIONS, PANEL_CONNECTIONS);
    let conns = tokio_util::task::TaskTracker::new();
    let spawner = conns.clone();
    let stop = cancel.clone();
    accept_loop(
        listener,
        "door panel",
        admission,
        cancel.clone(),
        move |stream, peer, slot| {
            let io = IdleIo::new(stream, limits.idle_timeout, Some(slot));
            spawner.spawn(serve_http(
                io,
                peer,
                app.clone(),
                limits.header_read_timeout,
                false,
                stop.clone(),
            ));
        },
    )
    .await;
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), conns.wait()).await;
}

/// Connections the panel serves at once.
const PANEL_CONNECTIONS: usize = 64;

fn panel_router(state: PanelState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PANEL_HTML) }))
        .route("/panel", get(|| async { Html(PANEL_HTML) }))
        .route("/state", get(state_view))
        .route("/press", post(press))
        .route("/hangup", post(hangup))
        .route("/exit", post(exit))
        .route("/door", post(door))
        .route("/tamper", post(tamper))
        .layer(axum::middleware::from_fn(same_origin_json))
        .with_state(state)
}

/// A POST moves the (simulated) relay and buttons: it must say
/// `Content-Type: application/json`, which a cross-site form or a
/// "simple" fetch cannot send without the browser asking first, and
/// come from the panel's own page or from no page at all (tools).
async fn same_origin_json(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{Method, header};
    if req.method() == Method::POST {
        let headers = req.headers();
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST needs Content-Type: application/json\n",
            )
                .into_response();
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let own = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| normal_authority(h, "80"))
                .map(|a| format!("http://{a}"));
            let theirs = origin.to_str().ok().and_then(parse_origin);
            if own.is_none() || own != theirs {
                return (
                    StatusCode::FORBIDDEN,
                    "POST from another site's page refused\n",
                )
                    .into_response();
            }
        }
    }
    next.run(req).await
}

async fn state_view(State(p): State<PanelState>) -> Json<serde_json::Value> {
    let mut v = p.status.json().await;
    if let Some(obj) = v.as_object_mut() {
        if let (Some(probe), Some(audio)) = (
            &p.probe,
            obj.get_mut("audio").and_then(|a| a.as_object_mut()),
        ) && let serde_json::Value::Object(extra) = probe()
        {
            audio.extend(extra);
        }
        if let serde_json::Value::Object(board) = p.control.view() {
            obj.extend(board);
        }
        obj.insert(
            "buttons".into(),
            serde_json::to_value(p.control.buttons()).unwrap_or_default(),
        );
    }
    Json(v)
}

fn reply(r: Result<String, String>) -> (StatusCode, String) {
    match r {
        Ok(text) => (StatusCode::OK, format!("{text}\n")),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn press(State(p): State<PanelState>, Query(q): Query<PressQuery>) -> impl IntoResponse {
    let r = match q.ms {
        None | Some(0) => p.control.press(q.button.as_deref()),
        Some(ms) => {
            p.control
                .press_for(q.button.as_deref(), Duration::from_millis(ms))
                .await
        }
    };
    reply(r.map(|b| {
        info!(button = %b, hold_ms = q.ms.unwrap_or(0), "simulated button pressed from the panel");
        format!("pressed {b}")
    }))
}

async fn hangup(State(p): State<PanelState>) -> impl IntoResponse {
    match p.control.hangup() {
        Ok(()) => (StatusCode::OK, "hang-up requested\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn exit(State(p): State<PanelState>) -> impl IntoResponse {
    reply(p.control.exit().map(|()| {
        info!("simulated exit button pressed from the panel");
        "exit button pressed".to_string()
    }))
}

async fn door(State(p): State<PanelState>, Query(q): Query<DoorQuery>) -> impl IntoResponse {
    let open = match q.state.as_str() {
        "open" => true,
        "closed" => false,
        other => {
            return reply(Err(format!(
                "state must be \"open\" or \"closed\", not {other:?}"
            )));
        }
    };
    reply(
        p.control
            .set_door(open)
            .map(|()| format!("door {}", q.state)),
    )
}

async fn tamper(State(p): State<PanelState>, Query(q): Query<TamperQuery>) -> impl IntoResponse {
    let active = q.active.unwrap_or(true);
    reply(
        p.control
            .set_tamper(active)
            .map(|()| format!("tamper {}", if active { "tripped" } else { "restored" })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inputs_reach_the_station_and_outputs_are_recorded() {
        let (tx, mut rx) = mpsc::channel(16);
        let (mut outs, ctl) = board(
            vec!["call".into(), "caretaker".into()],
            &["status"],
            None,
            tx,
        );
        assert_eq!(ctl.press(None), Ok("call".into()));
        assert_eq!(
            rx.recv().await,
            Some(HwEvent::ButtonPressed {
                button: "call".into()
            })
        );
        assert_eq!(
            rx.recv().await,
            Some(HwEvent::ButtonReleased {
                button: "call".into()
            })
        );
        assert_eq!(ctl.press(Some("caretaker")), Ok("caretaker".into()));
        assert!(ctl.press(Some("nope")).is_err());
        ctl.exit().unwrap();
        ctl.set_door(true).unwrap();
        ctl.set_tamper(true).unwrap();
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            rest[2..],
            [
                HwEvent::ExitPressed,
                HwEvent::DoorSensor { open: true },
                HwEvent::Tamper { active: true }
            ]
        );
        assert_eq!(
            ctl.led("status"),
            Some(LedView {
                pattern: LedPattern::Off,
                on: false
            })
        );
        outs.leds[0].set(LedPattern::SlowBlink, true).unwrap();
        assert_eq!(
            ctl.led("status"),
            Some(LedView {
                pattern: LedPattern::SlowBlink,
                on: true
            })
        );
        assert_eq!(ctl.relay_energised(), None);
        outs.relay.set(false).unwrap();
        outs.relay.set(true).unwrap();
        assert_eq!(ctl.relay_writes(), vec![false, true]);
        let v = ctl.view();
        assert_eq!(v["relay_energised"], true);
        assert_eq!(v["door_open"], true);
        assert_eq!(v["leds"]["status"]["pattern"], "slow_blink");
    }

    #[tokio::test]
    async fn a_long_press_releases_after_the_hold_time() {
        let (tx, mut rx) = mpsc::channel(16);
        let (_outs, ctl) = board(vec!["call".into()], &[], None, tx);
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            ctl.press_for(None, Duration::from_millis(50)).await,
            Ok("call".into())
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert!(matches!(
            rx.recv().await,
            Some(HwEvent::ButtonPressed { .. })
        ));
        assert!(matches!(
            rx.recv().await,
            Some(HwEvent::ButtonReleased { .. })
        ));
        assert!(ctl.press_for(None, MAX_PRESS * 2).await.is_err());
    }

    #[test]
    fn the_state_file_keeps_the_last_relay_level() {
        let path = std::env::temp_dir().join(format!("intercomd-relay-{}", std::process::id()));
        let (tx, _rx) = mpsc::channel(1);
        let (mut outs, _ctl) = board(vec![], &[], Some(path.clone()), tx);
        outs.relay.set(true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "energised\n");
        outs.relay.set(false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "de-energised\n");
        let _ = std::fs::remove_file(path);
    }
}
