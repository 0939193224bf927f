//! The Bluetooth adapter behind a small trait: what the Bluetooth actor
//! ([`super::service`]) needs from a stack, and nothing more. The real
//! backend is BlueZ through bluer ([`super::bluez`]); the simulated one
//! ([`super::sim`]) serves tests and the demo. Configuration picks one in
//! `crate::daemon`; a device never falls back to the simulation.
//!
//! Requests that need an answer (BlueZ's pairing agent asking whether a
//! headset may pair) come up as [`AdapterEvent`]s carrying a `oneshot`
//! reply, so the decision is made in the actor, not in a callback.

use std::fmt;

use tokio::sync::oneshot;

use super::hfp::{Codec, DoorCall};
use crate::audio::router::HeadsetPorts;

/// A Bluetooth device address as BlueZ prints it (`00:AA:01:00:00:23`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceAddr(String);

impl DeviceAddr {
    /// Parses `XX:XX:XX:XX:XX:XX` (hex digits, either case); the stored
    /// form is upper case, as BlueZ prints it.
    pub fn parse(s: &str) -> Option<DeviceAddr> {
        let parts: Vec<&str> = s.split(':').collect();
        let valid = parts.len() == 6
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        valid.then(|| DeviceAddr(s.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What BlueZ's agent asks about a device that wants to pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingRequestKind {
    /// Legacy pairing: the PIN is wanted.
    PinCode,
    /// Secure Simple Pairing, numeric comparison: confirm this passkey.
    Confirmation { passkey: u32 },
    /// Secure Simple Pairing, just works: may this device pair?
    Authorization,
}

impl PairingRequestKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PairingRequestKind::PinCode => "pin_code",
            PairingRequestKind::Confirmation { .. } => "confirmation",
            PairingRequestKind::Authorization => "just_works",
        }
    }
}

/// The actor's answer to a pairing request.
#[derive(Clone, PartialEq, Eq)]
pub enum PairingAnswer {
    /// Pair (confirmation and authorization requests).
    Accept,
    /// Pair with this PIN (legacy PIN requests).
    Pin(String),
    Reject,
}

impl fmt::Debug for PairingAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairingAnswer::Accept => f.write_str("Accept"),
            // The PIN never reaches a log.
            PairingAnswer::Pin(_) => f.write_str("Pin(<redacted>)"),
            PairingAnswer::Reject => f.write_str("Reject"),
        }
    }
}

/// An open SCO link to a headset, as frame channels at 48 kHz (the voice
/// bridge converts): what the call audio router switches to.
pub struct VoiceLink {
    pub device: DeviceAddr,
    pub codec: Codec,
    pub ports: HeadsetPorts,
}

impl fmt::Debug for VoiceLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VoiceLink({} {:?})", self.device, self.codec)
    }
}

/// Links are told apart by device and codec (their channels cannot be
/// compared).
impl PartialEq for VoiceLink {
    fn eq(&self, other: &Self) -> bool {
        self.device == other.device && self.codec == other.codec
    }
}

/// What the gateway of a connected headset is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayCommand {
    /// The door call changed: indicators and RING follow it.
    Call(DoorCall),
    /// Agree a codec and open the SCO link.
    OpenAudio,
    /// Close the SCO link.
    CloseAudio,
}

/// A remote device as the adapter knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub address: DeviceAddr,
    pub name: Option<String>,
    pub paired: bool,
    pub trusted: bool,
    pub connected: bool,
}

/// What the adapter reports to the actor.
#[derive(Debug)]
pub enum AdapterEvent {
    /// A device wants to pair; the answer goes back through `reply`
    /// (dropping it rejects).
    PairingRequest {
        device: DeviceAddr,
        kind: PairingRequestKind,
        reply: oneshot::Sender<PairingAnswer>,
    },
    /// A device that is not trusted wants to use a service (`uuid`).
    ServiceAuthorization {
        device: DeviceAddr,
        uuid: String,
        reply: oneshot::Sender<bool>,
    },
    /// A device is now paired (bonded).
    Paired {
        device: DeviceAddr,
        name: Option<String>,
    },
    /// A device connected or disconnected.
    Connection { device: DeviceAddr, connected: bool },
    /// A headset's Hands-Free service level connection is up (`true`) or
    /// ended.
    HandsFree { device: DeviceAddr, connected: bool },
    /// The headset's button ended the call (`AT+CHUP`).
    HangupRequested { device: DeviceAddr },
    /// A headset's SCO link opened (`Some`) or closed or failed to open.
    Sco {
        device: DeviceAddr,
        link: Option<VoiceLink>,
    },
    /// The adapter went away or the stack stopped answering; the actor
    /// reopens it.
    Lost { reason: String },
}

/// Errors of Bluetooth backends, with the adapter and operation concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtError {
    #[error("cannot reach bluetoothd on the system D-Bus: {0}")]
    Bus(String),
    #[error("no Bluetooth adapter {0} (BlueZ lists: {1})")]
    NoAdapter(String, String),
    #[error("Bluetooth adapter {adapter}: {operation}: {message}")]
    Adapter {
        adapter: String,
        operation: &'static str,
        message: String,
    },
    #[error("Bluetooth device {device} on {adapter}: {operation}: {message}")]
    Device {
        adapter: String,
        device: DeviceAddr,
        operation: &'static str,
        message: String,
    },
}

/// One Bluetooth adapter, opened.
#[async_trait::async_trait]
pub trait BtAdapter: Send {
    /// The adapter's name (`hci0`).
    fn name(&self) -> &str;
    /// The adapter's own address.
    fn address(&self) -> &DeviceAddr;
    async fn set_powered(&mut self, on: bool) -> Result<(), BtError>;
    /// Whether new devices may pair (BlueZ `Pairable`).
    async fn set_pairable(&mut self, on: bool) -> Result<(), BtError>;
    /// Whether the adapter answers inquiries (BlueZ `Discoverable`).
    async fn set_discoverable(&mut self, on: bool) -> Result<(), BtError>;
    /// Mark a device trusted: it connects later without asking.
    async fn set_trusted(&mut self, device: &DeviceAddr) -> Result<(), BtError>;
    /// The devices BlueZ remembers.
    async fn devices(&mut self) -> Result<Vec<DeviceInfo>, BtError>;
    /// Sends `cmd` to the gateway of `device`, or of every connected
    /// headset with `None`. A headset without a gateway connection is
    /// skipped.
    fn gateway(&mut self, device: Option<&DeviceAddr>, cmd: GatewayCommand);
    /// The next event; `None` once the adapter is closed for good.
    async fn next_event(&mut self) -> Option<AdapterEvent>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_strictly() {
        let a = DeviceAddr::parse("00:aa:01:00:00:23").expect("valid address");
        assert_eq!(a.as_str(), "00:AA:01:00:00:23");
        for bad in [
            "",
            "00:AA:01:00:00",
            "00:AA:01:00:00:23:45",
            "00-AA-01-00-00-23",
            "0:AA:01:00:00:233",
            "00:AG:01:00:00:23",
        ] {
            assert_eq!(DeviceAddr::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_pin_answer_never_prints_the_pin() {
        let shown = format!("{:?}", PairingAnswer::Pin("4711".into()));
        assert!(!shown.contains("4711"), "{shown}");
    }
}
