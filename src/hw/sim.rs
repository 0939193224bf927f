//! The simulated door hardware: buttons pressed from a control handle (the
//! terminal, the demo's door panel page, tests) and LEDs whose patterns are
//! recorded. For tests and the demo only; a real board never gets it unless
//! its configuration says `hardware.backend = "sim"`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{HwError, HwEvent, Led, LedPattern};

const PANEL_HTML: &str = include_str!("../../web/panel.html");

type LedTable = Arc<Mutex<BTreeMap<String, LedPattern>>>;

/// Control and observation handle of the simulated board. Cloneable.
#[derive(Clone, Debug)]
pub struct SimControl {
    events: mpsc::Sender<HwEvent>,
    leds: LedTable,
    buttons: Arc<Vec<String>>,
}

impl SimControl {
    /// Press and release a call button (`None`: the first one).
    pub fn press(&self, button: Option<&str>) -> Result<String, String> {
        let name = match button {
            None => self
                .buttons
                .first()
                .cloned()
                .ok_or_else(|| "this board has no call button".to_string())?,
            Some(b) if self.buttons.iter().any(|x| x == b) => b.to_owned(),
            Some(b) => return Err(format!("no button named `{b}`")),
        };
        self.events
            .try_send(HwEvent::ButtonPressed {
                button: name.clone(),
            })
            .map_err(|e| format!("station busy: {e}"))?;
        Ok(name)
    }

    /// Ask the station to hang up, as a long press would.
    pub fn hangup(&self) -> Result<(), String> {
        self.events
            .try_send(HwEvent::HangupRequested)
            .map_err(|e| format!("station busy: {e}"))
    }

    pub fn led(&self, name: &str) -> Option<LedPattern> {
        self.leds
            .lock()
            .expect("LED table lock is never held across a panic")
            .get(name)
            .copied()
    }

    pub fn leds(&self) -> BTreeMap<String, LedPattern> {
        self.leds
            .lock()
            .expect("LED table lock is never held across a panic")
            .clone()
    }

    pub fn buttons(&self) -> &[String] {
        &self.buttons
    }
}

#[derive(Debug)]
pub struct SimLed {
    name: String,
    leds: LedTable,
}

impl Led for SimLed {
    fn name(&self) -> &str {
        &self.name
    }

    fn set(&mut self, pattern: LedPattern) -> Result<(), HwError> {
        self.leds
            .lock()
            .expect("LED table lock is never held across a panic")
            .insert(self.name.clone(), pattern);
        Ok(())
    }
}

/// Build a simulated board with these buttons and LEDs. Button presses
/// arrive on `events`.
pub fn board(
    buttons: Vec<String>,
    leds: &[&str],
    events: mpsc::Sender<HwEvent>,
) -> (Vec<Box<dyn Led>>, SimControl) {
    let table: LedTable = Arc::new(Mutex::new(
        leds.iter()
            .map(|n| (n.to_string(), LedPattern::Off))
            .collect(),
    ));
    let outs = leds
        .iter()
        .map(|n| {
            Box::new(SimLed {
                name: n.to_string(),
                leds: table.clone(),
            }) as Box<dyn Led>
        })
        .collect();
    (
        outs,
        SimControl {
            events,
            leds: table,
            buttons: Arc::new(buttons),
        },
    )
}

/// Read the terminal: Enter presses the first call button, `h` + Enter
/// hangs up. Ends at end of input.
pub async fn stdin_loop(control: SimControl, cancel: CancellationToken) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l,
            _ = cancel.cancelled() => return,
        };
        match line {
            Ok(Some(l)) if l.trim().eq_ignore_ascii_case("h") => {
                if let Err(e) = control.hangup() {
                    warn!("terminal hang-up: {e}");
                }
            }
            Ok(Some(_)) => match control.press(None) {
                Ok(b) => info!(button = %b, "simulated button pressed from the terminal"),
                Err(e) => warn!("terminal press: {e}"),
            },
            Ok(None) | Err(_) => return,
        }
    }
}

/// Figures computed only when asked for (they cost CPU), merged into the
/// `audio` object of `GET /state`.
pub type AudioProbe = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
struct PanelState {
    control: SimControl,
    status: watch::Receiver<serde_json::Value>,
    probe: Option<AudioProbe>,
}

#[derive(serde::Deserialize)]
struct PressQuery {
    button: Option<String>,
}

/// Serve the simulated board's control API and the demo's door panel page:
/// `POST /press[?button=]`, `POST /hangup`, `GET /state`, `GET /`.
pub async fn serve_panel(
    listener: tokio::net::TcpListener,
    control: SimControl,
    status: watch::Receiver<serde_json::Value>,
    probe: Option<AudioProbe>,
    cancel: CancellationToken,
) {
    let app = Router::new()
        .route("/", get(|| async { Html(PANEL_HTML) }))
        .route("/panel", get(|| async { Html(PANEL_HTML) }))
        .route("/state", get(state))
        .route("/press", post(press))
        .route("/hangup", post(hangup))
        .with_state(PanelState {
            control,
            status,
            probe,
        });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        warn!(error = %e, "door panel server stopped");
    }
}

async fn state(State(p): State<PanelState>) -> Json<serde_json::Value> {
    let mut v = p.status.borrow().clone();
    if let Some(obj) = v.as_object_mut() {
        if let (Some(probe), Some(audio)) = (
            &p.probe,
            obj.get_mut("audio").and_then(|a| a.as_object_mut()),
        ) {
            if let serde_json::Value::Object(extra) = probe() {
                audio.extend(extra);
            }
        }
        obj.insert(
            "leds".into(),
            serde_json::to_value(p.control.leds()).unwrap_or_default(),
        );
        obj.insert(
            "buttons".into(),
            serde_json::to_value(p.control.buttons()).unwrap_or_default(),
        );
    }
    Json(v)
}

async fn press(State(p): State<PanelState>, Query(q): Query<PressQuery>) -> impl IntoResponse {
    match p.control.press(q.button.as_deref()) {
        Ok(b) => {
            info!(button = %b, "simulated button pressed from the panel");
            (StatusCode::OK, format!("pressed {b}\n"))
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn hangup(State(p): State<PanelState>) -> impl IntoResponse {
    match p.control.hangup() {
        Ok(()) => (StatusCode::OK, "hang-up requested\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn press_reaches_the_station_and_leds_are_recorded() {
        let (tx, mut rx) = mpsc::channel(4);
        let (mut leds, ctl) = board(vec!["call".into(), "caretaker".into()], &["status"], tx);
        assert_eq!(ctl.press(None), Ok("call".into()));
        assert_eq!(
            rx.recv().await,
            Some(HwEvent::ButtonPressed {
                button: "call".into()
            })
        );
        assert_eq!(ctl.press(Some("caretaker")), Ok("caretaker".into()));
        assert!(ctl.press(Some("nope")).is_err());
        assert_eq!(ctl.led("status"), Some(LedPattern::Off));
        leds[0].set(LedPattern::SlowBlink).unwrap();
        assert_eq!(ctl.led("status"), Some(LedPattern::SlowBlink));
    }
}
