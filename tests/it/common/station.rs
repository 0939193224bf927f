//! A door station started inside the test process, through the daemon's
//! own `start_station`, from a configuration written by the test; and
//! what the tests ask of it (its status, the button, a clean stop). Also
//! the standalone station's configuration, for the tests that run the
//! daemon as a process too.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use intercomd::daemon::{Running, start_station};
use intercomd::signaling::protocol::Message;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Answerer, answerer_entry, connect, poll_until, send, wait_freq, write_secret};

/// A station's `[ice]` and `[audio.sim]`: ICE on loopback, for the
/// answering client of these tests, and the door's microphone a 600 Hz tone.
pub const LOOPBACK_MEDIA: &str = r#"[ice]
bind_ips = ["127.0.0.1"]
# The answering client here is built on webrtc-rs, which does not honour
# an offer's setup:active.
offer_dtls_client = false
[audio.sim]
source = "tone:600"
"#;

/// A standalone station's configuration: `door-1`, "Front door", no
/// control socket, its hub on loopback without TLS (state in
/// `{dir}/hub-state`), ICE on loopback, the simulated board and the
/// simulated audio, the door's microphone a 600 Hz tone; and the few things
/// the tests vary. Each answerer's token goes to `{dir}/{id}`.
pub struct StationConfig {
    dir: PathBuf,
    hub: String,
    hub_keys: String,
    /// Id, token, group.
    answerers: Vec<(String, String, String)>,
    panel: String,
    sim_keys: String,
    stdin: bool,
    extra: String,
}

impl StationConfig {
    /// The station of `dir`: hub on a free loopback port chosen at start,
    /// no answerer, no panel, the board not reading stdin.
    pub fn new(dir: &Path) -> StationConfig {
        StationConfig {
            dir: dir.to_owned(),
            hub: "127.0.0.1:0".into(),
            hub_keys: String::new(),
            answerers: Vec::new(),
            panel: String::new(),
            sim_keys: String::new(),
            stdin: false,
            extra: String::new(),
        }
    }

    /// The hub listens on `addr`.
    pub fn hub(mut self, addr: impl Display) -> StationConfig {
        self.hub = addr.to_string();
        self
    }

    /// More `[hub]` keys (timeouts, limits), one per line.
    pub fn hub_keys(mut self, toml: &str) -> StationConfig {
        self.hub_keys.push_str(toml);
        self
    }

    /// An answerer `id` in the group `residents`, signing in with `token`.
    pub fn answerer(self, id: &str, token: &str) -> StationConfig {
        self.answerer_in(id, token, "residents")
    }

    /// An answerer `id` in `group`, signing in with `token`.
    pub fn answerer_in(mut self, id: &str, token: &str, group: &str) -> StationConfig {
        self.answerers.push((id.into(), token.into(), group.into()));
        self
    }

    /// The simulated board's control panel listens on `addr`.
    pub fn panel(mut self, addr: impl Display) -> StationConfig {
        self.panel = addr.to_string();
        self
    }

    /// More `[hardware.sim]` keys, one per line.
    pub fn sim_keys(mut self, toml: &str) -> StationConfig {
        self.sim_keys.push_str(toml);
        self
    }

    /// The simulated board takes a line on stdin as a button press.
    pub fn stdin(mut self) -> StationConfig {
        self.stdin = true;
        self
    }

    /// Whole tables appended at the end (`[door]`, `[[buttons]]`, …).
    pub fn extra(mut self, toml: &str) -> StationConfig {
        self.extra.push_str(toml);
        self
    }

    /// Writes the answerers' tokens and returns the configuration.
    pub fn toml(&self) -> String {
        let StationConfig {
            dir,
            hub,
            hub_keys,
            panel,
            sim_keys,
            stdin,
            extra,
            ..
        } = self;
        let d = dir.display();
        let mut answerers = String::new();
        for (id, token, group) in &self.answerers {
            write_secret(&self.dir.join(id), &format!("{token}\n"));
            answerers.push_str(&answerer_entry(id, None, &self.dir.join(id), group));
        }
        format!(
            r#"
[station]
id = "door-1"
name = "Front door"
control_socket = ""
[signaling]
mode = "standalone"
[hub]
listen = "{hub}"
state_dir = "{d}/hub-state"
{hub_keys}
[hub.tls]
mode = "off"
{answerers}
{LOOPBACK_MEDIA}[hardware.sim]
control_listen = "{panel}"
stdin = {stdin}
{sim_keys}
{extra}
"#
        )
    }

    /// [`StationConfig::toml`] written to `{dir}/{name}`; returns the
    /// file's path.
    pub fn write(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, self.toml()).expect("temp dir is writable");
        path
    }
}

pub struct InProcessStation {
    pub running: Running,
    stop: CancellationToken,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Removed at shutdown.
    dir: Option<PathBuf>,
}

impl InProcessStation {
    /// Starts the station `toml` describes (`file` names it in errors).
    pub async fn start(file: &str, toml: &str) -> InProcessStation {
        let settings = intercomd::config::load_from_strs(&[(file, toml)])
            .expect("test configuration is valid");
        let stop = CancellationToken::new();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let running = start_station(&settings, stop.clone(), cancel.clone(), &tracker)
            .await
            .expect("station starts");
        InProcessStation {
            running,
            stop,
            cancel,
            tracker,
            dir: None,
        }
    }

    /// The station's directory goes with it at shutdown.
    pub fn owning(mut self, dir: PathBuf) -> InProcessStation {
        self.dir = Some(dir);
        self
    }

    /// Returns once the station's own signaling link is up (10 s at most).
    pub async fn signaling_up(self) -> InProcessStation {
        if !self
            .wait("signaling up", |s| s["signaling"] == "up", 10)
            .await
        {
            panic!("station never connected to its hub");
        }
        self
    }

    /// The WebSocket URL of the station's own hub.
    pub fn url(&self) -> String {
        format!(
            "ws://{}/ws",
            self.running.hub_addr.expect("standalone has a hub")
        )
    }

    /// The station's status now (asked of its controller).
    pub async fn state(&self) -> serde_json::Value {
        self.running.status.json().await
    }

    /// True once `f` holds for the status (within `secs`); false, with
    /// the status printed, when it never did.
    pub async fn wait(
        &self,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
        secs: u64,
    ) -> bool {
        let within = Duration::from_secs(secs);
        match poll_until(within, async || self.state().await, f).await {
            Ok(_) => true,
            Err(last) => {
                eprintln!("{what}: not reached; state {last}");
                false
            }
        }
    }

    /// Waits (10 s at most) for the call state `want`; panics otherwise.
    pub async fn wait_state(&self, want: &str) {
        if !self.wait(want, |s| s["call"]["state"] == want, 10).await {
            panic!("station never reached {want}: {}", self.state().await);
        }
    }

    /// The simulated call button, pressed once.
    pub fn press(&self) {
        self.running
            .sim
            .as_ref()
            .expect("sim board")
            .press(None)
            .expect("button exists");
    }

    /// A resident signs in with `token`, the button is pressed, the
    /// resident answers and the station is in the call (10 s at most).
    pub async fn answered_call(&self, token: &str) -> Answerer {
        let ws = connect(&self.url(), token).await;
        self.press();
        let a = Answerer::answer(ws).await;
        self.wait_state("in_call").await;
        a
    }

    /// Audio both ways in the call `a` answered: the resident hears the
    /// door's 600 Hz, the door's speaker plays the resident's 1000 Hz.
    pub async fn audio_both_ways(&self, a: &Answerer) {
        a.wait_hears("resident hears the door", 600.0).await;
        self.wait_door_hears("door hears the resident", 1000.0)
            .await;
    }

    /// Waits (10 s at most) until the door's speaker plays `hz`; `what`
    /// names the wait in the failure.
    pub async fn wait_door_hears(&self, what: &str, hz: f32) {
        let door_audio = self.running.audio.clone().expect("simulated audio");
        wait_freq(what, move || door_audio.played_dominant_frequency(), hz).await;
    }

    /// Stops the station as SIGTERM does and waits (5 s at most) for its
    /// tasks.
    pub async fn shutdown(self) {
        self.stop(false).await;
    }

    /// [`InProcessStation::shutdown`], failing unless the controller and
    /// then every task of the station (threads' tasks included) stopped
    /// within their 5 s.
    pub async fn shutdown_checked(self) {
        self.stop(true).await;
    }

    async fn stop(self, checked: bool) {
        self.stop.cancel();
        self.tracker.close();
        let controller = timeout(Duration::from_secs(5), self.cancel.cancelled()).await;
        self.cancel.cancel();
        let tasks = timeout(Duration::from_secs(5), self.tracker.wait()).await;
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if checked {
            controller.expect("controller stops");
            tasks.expect("every task stops");
        }
    }
}

/// The resident hangs up the call it answered (reason `normal`).
pub async fn hang_up(a: &mut Answerer) {
    let m = Message::Hangup {
        call_id: a.call_id.clone(),
        reason: "normal".into(),
    };
    send(&mut a.resident.ws, &m).await;
}
