//! The station's status: one typed snapshot shared by the simulated panel
//! (`GET /state`), the control socket and the tests. The core fills what
//! it knows; the shell adds the audio device's counters and the runtime's.

use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::Station;
use crate::audio::AudioStats;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    pub call: CallStatus,
    /// `"up"` or `"down"`.
    pub signaling: &'static str,
    pub audio: AudioStats,
    pub door: DoorStatus,
    pub bluetooth: BluetoothStatus,
    pub runtime: RuntimeStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CallStatus {
    /// The call's phase (`idle`, `ringing`, `connecting`, `in_call`, …).
    pub state: &'static str,
    pub call_id: Option<String>,
    /// The answering resident's id.
    pub answerer: Option<String>,
    /// A resident called the door (rather than a visitor the residents).
    pub resident_call: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DoorStatus {
    pub station_state: &'static str,
    pub unlocked: bool,
    pub relay_energised: bool,
    pub lock: &'static str,
    pub pulse_ms: u64,
    pub door_open: bool,
    pub held_open_alarm: bool,
    pub tamper: bool,
    pub remote_open_locked_out: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BluetoothStatus {
    pub enabled: bool,
    pub pairing: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RuntimeStatus {
    /// Live tokio tasks (a leak shows as growth).
    pub tasks: usize,
}

pub(super) fn build(s: &Station, now: Instant) -> Status {
    let door = &s.door;
    Status {
        call: CallStatus {
            state: s.call.phase().as_str(),
            call_id: s.call.call_id().map(|c| c.to_string()),
            answerer: s.call.answerer().map(|a| a.id.clone()),
            resident_call: s.call.resident_call(),
        },
        signaling: if s.call.signaling_up() { "up" } else { "down" },
        audio: AudioStats::default(),
        door: DoorStatus {
            station_state: door.station_state().as_str(),
            unlocked: door.unlocked(),
            relay_energised: door.relay_energised(),
            lock: door.settings().lock.as_str(),
            pulse_ms: door.settings().pulse.as_millis() as u64,
            door_open: door.door_open(),
            held_open_alarm: door.alarm(),
            tamper: door.tamper(),
            remote_open_locked_out: door.locked_out(now),
        },
        bluetooth: BluetoothStatus {
            enabled: s.bluetooth,
            pairing: s.bt_pairing,
        },
        runtime: RuntimeStatus::default(),
    }
}

/// Asks the controller for a fresh [`Status`]: built when asked, not on
/// every event. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusHandle {
    tx: mpsc::Sender<oneshot::Sender<Status>>,
}

/// The controller's end of [`StatusHandle`]s.
pub type StatusRequests = mpsc::Receiver<oneshot::Sender<Status>>;

impl StatusHandle {
    pub fn new() -> (StatusHandle, StatusRequests) {
        // A few panels and tests ask at once; more wait their turn.
        let (tx, rx) = mpsc::channel(16);
        (StatusHandle { tx }, rx)
    }

    /// The status now; `None` once the controller has stopped.
    pub async fn get(&self) -> Option<Status> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(reply).await.ok()?;
        answer.await.ok()
    }

    /// [`get`](Self::get) as JSON (`null` once the controller stopped).
    pub async fn json(&self) -> serde_json::Value {
        serde_json::to_value(self.get().await).expect("the status serialises")
    }
}
