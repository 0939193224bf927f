//! A door station started inside the test process, through the daemon's
//! own `start_station`, from a configuration written by the test; and
//! what the tests ask of it (its status, the button, a clean stop).

use std::path::PathBuf;
use std::time::Duration;

use intercomd::daemon::{Running, start_station};
use intercomd::signaling::protocol::Message;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Answerer, poll_until, send};

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

    /// Stops the station as SIGTERM does and waits (5 s at most) for its
    /// tasks.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        let _ = timeout(Duration::from_secs(5), self.cancel.cancelled()).await;
        self.cancel.cancel();
        let _ = timeout(Duration::from_secs(5), self.tracker.wait()).await;
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
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
