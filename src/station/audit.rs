//! The audit records the station writes: what a technician or a building
//! manager greps for (`AUDIT=door_open`, `AUDIT=door_call`). The core
//! decides which records there are (and throttles floods); [`Audit::write`]
//! is the one place that turns them into journal lines.

use std::time::Duration;

use tracing::{info, warn};

use crate::call::EndReason;
use crate::door::{OpenSource, Refusal};
use crate::logging::{PeerText, escape_peer_text};
use crate::signaling::protocol::{CallId, PeerInfo};

#[derive(Clone, Debug, PartialEq)]
pub enum Audit {
    /// An open attempt. `refusals`, on a throttled refusal from the data
    /// channel: this one and those not written since the last line.
    DoorOpen {
        source: OpenSource,
        granted: bool,
        reason: Option<Refusal>,
        pulse: Duration,
        refusals: Option<u64>,
    },
    /// Refusals counted, not yet written, when their interval ended or the
    /// call did.
    DoorOpenRefusals { refusals: u64 },
    /// A resident's call to the door: its start, refusal or end.
    DoorCall {
        event: &'static str,
        call_id: CallId,
        by: PeerInfo,
        reason: String,
        duration: Duration,
        what: String,
    },
}

impl Audit {
    pub(super) fn door_call_start(call_id: CallId, by: PeerInfo) -> Audit {
        Audit::DoorCall {
            event: "start",
            call_id,
            by,
            reason: String::new(),
            duration: Duration::ZERO,
            what: "a resident called the door; call taken".into(),
        }
    }

    pub(super) fn door_call_refused(call_id: CallId, by: PeerInfo, reason: &str) -> Audit {
        Audit::DoorCall {
            event: "refused",
            call_id,
            by,
            reason: reason.into(),
            duration: Duration::ZERO,
            what: "a resident called the door; call refused".into(),
        }
    }

    pub(super) fn door_call_end(
        call_id: CallId,
        by: PeerInfo,
        duration: Duration,
        reason: &EndReason,
    ) -> Audit {
        Audit::DoorCall {
            event: "end",
            call_id,
            by,
            reason: reason.wire().into(),
            duration,
            what: format!(
                "a resident's call to the door ended: {}",
                PeerText::new(&reason.to_string())
            ),
        }
    }

    /// The journal line. Peer text is escaped; values stay strings (quoted
    /// in text logs, as the technician's guide greps them).
    pub fn write(&self) {
        match self {
            Audit::DoorOpen {
                source,
                granted,
                reason,
                pulse,
                refusals,
            } => write_door_open(source, *granted, *reason, *pulse, *refusals),
            Audit::DoorOpenRefusals { refusals } => warn!(
                AUDIT = "door_open",
                source = "data_channel",
                granted = false,
                refusals,
                "door open refusals since the last line"
            ),
            Audit::DoorCall {
                event,
                call_id,
                by,
                reason,
                duration,
                what,
            } => write_door_call(event, call_id, by, reason, *duration, what),
        }
    }
}

fn write_door_open(
    source: &OpenSource,
    granted: bool,
    reason: Option<Refusal>,
    pulse: Duration,
    refusals: Option<u64>,
) {
    let reason = reason.map_or("", Refusal::as_str);
    let pulse_ms = pulse.as_millis() as u64;
    let (call_id, peer, nonce) = match source {
        OpenSource::ExitButton => {
            return info!(
                AUDIT = "door_open",
                source = "exit_button",
                call_id = "",
                peer = "",
                granted,
                reason,
                nonce = "",
                pulse_ms,
                "door opened from the exit button"
            );
        }
        OpenSource::Remote {
            call_id,
            peer,
            nonce,
        } => (call_id, PeerText::new(peer), PeerText::new(nonce)),
    };
    match refusals {
        None => info!(
            AUDIT = "door_open",
            source = "data_channel",
            call_id = %call_id,
            peer = %peer,
            granted,
            reason,
            nonce = %nonce,
            pulse_ms,
            "door opened by the resident"
        ),
        Some(refusals) => warn!(
            AUDIT = "door_open",
            source = "data_channel",
            call_id = %call_id,
            peer = %peer,
            granted,
            reason,
            nonce = %nonce,
            pulse_ms,
            refusals,
            "door open refused"
        ),
    }
}

fn write_door_call(
    event: &str,
    call_id: &CallId,
    by: &PeerInfo,
    reason: &str,
    duration: Duration,
    what: &str,
) {
    let peer = escape_peer_text(&by.id);
    let peer_name = escape_peer_text(&by.name);
    macro_rules! record {
        ($level:ident) => {
            $level!(
                AUDIT = "door_call",
                event,
                call_id = %call_id,
                peer = peer.as_str(),
                peer_name = peer_name.as_str(),
                reason,
                duration_ms = duration.as_millis() as u64,
                "{what}"
            )
        };
    }
    if event == "refused" {
        record!(warn);
    } else {
        record!(info);
    }
}
