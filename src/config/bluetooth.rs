//! `[bluetooth]`: a headset taking the call audio over the Hands-Free
//! Profile. Only the settings live here; the PIN itself is read from its
//! file when pairing starts, never kept in the TOML.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::{Check, ser};
use crate::config::fragments as frag;
use crate::config::secret::SecretSource;

/// How a headset pairs with the station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BluetoothPairing {
    /// No PIN: any headset in pairing mode pairs while pairing is open.
    JustWorks,
    /// A legacy PIN, read from this file.
    Pin(SecretSource),
}

/// `pairing`, and `pin_file` for a PIN (flattened into `[bluetooth]`).
impl Serialize for BluetoothPairing {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("pairing", self.as_str())?;
        match self {
            BluetoothPairing::Pin(SecretSource::File(path)) => {
                map.serialize_entry("pin_file", path)?;
            }
            // Credentials are not offered for the PIN.
            BluetoothPairing::Pin(SecretSource::Credential(_)) | BluetoothPairing::JustWorks => {}
        }
        map.end()
    }
}

impl BluetoothPairing {
    pub fn as_str(&self) -> &'static str {
        match self {
            BluetoothPairing::JustWorks => "just_works",
            BluetoothPairing::Pin(_) => "pin",
        }
    }
}

/// Which Bluetooth stack the daemon drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BluetoothBackend {
    /// BlueZ over the system D-Bus (bluer).
    Bluez,
    /// A simulated adapter: tests and the demo only.
    Sim,
}

impl BluetoothBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            BluetoothBackend::Bluez => "bluez",
            BluetoothBackend::Sim => "sim",
        }
    }
}

/// `[bluetooth]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BluetoothConfig {
    pub enabled: bool,
    pub backend: BluetoothBackend,
    /// The adapter's name (`hci0`); `None`: BlueZ's default adapter.
    #[serde(serialize_with = "ser::or_empty")]
    pub adapter: Option<String>,
    /// Discoverable while pairing is open.
    pub discoverable: bool,
    #[serde(flatten)]
    pub pairing: BluetoothPairing,
    /// Pairing closes again after this long.
    #[serde(rename = "pairing_timeout_ms", serialize_with = "ser::ms")]
    pub pairing_timeout: Duration,
    /// Choose mSBC (16 kHz) over CVSD (8 kHz) when the headset offers it.
    pub prefer_msbc: bool,
}

/// Longest pairing window: ten minutes.
const MAX_PAIRING_TIMEOUT_MS: u64 = 600_000;

pub(super) fn bluetooth(c: &mut Check, root: &frag::Root) -> BluetoothConfig {
    let b = root.bluetooth.clone().unwrap_or_default();
    let enabled = c.bool("bluetooth.enabled", &b.enabled);
    let prefer_msbc = c.bool("bluetooth.prefer_msbc", &b.prefer_msbc);
    let discoverable = c.bool("bluetooth.discoverable", &b.discoverable);
    let backend = match c.get("bluetooth.backend", &b.backend) {
        Some(v) => match v.value.as_str() {
            "bluez" => BluetoothBackend::Bluez,
            "sim" => BluetoothBackend::Sim,
            other => {
                c.invalid(
                    &v.at,
                    "bluetooth.backend",
                    format!("{other:?} is not bluez or sim"),
                );
                BluetoothBackend::Bluez
            }
        },
        None => BluetoothBackend::Bluez,
    };
    let adapter = match c.get("bluetooth.adapter", &b.adapter) {
        Some(v) if v.value.is_empty() => None,
        Some(v) => {
            // BlueZ names adapters hciN; anything else would never match.
            let valid = v.value.strip_prefix("hci").is_some_and(|n| {
                !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit())
            });
            if !valid {
                c.invalid(
                    &v.at,
                    "bluetooth.adapter",
                    format!("{:?} is not an adapter name like \"hci0\" (or \"\" for the default adapter)", v.value),
                );
            }
            Some(v.value.clone())
        }
        None => None,
    };
    let timeout = c.int(
        "bluetooth.pairing_timeout_ms",
        &b.pairing_timeout_ms,
        1_000..=MAX_PAIRING_TIMEOUT_MS,
    );
    let pin_file = b.pin_file.as_ref().filter(|v| !v.value.trim().is_empty());
    let pairing = match c.get("bluetooth.pairing", &b.pairing) {
        Some(v) => match v.value.as_str() {
            "just_works" => {
                if let Some(file) = pin_file {
                    c.invalid(
                        &file.at,
                        "bluetooth.pin_file",
                        format!(
                            "is only used with pairing = \"pin\", but pairing is \"just_works\" ({})",
                            v.at
                        ),
                    );
                }
                BluetoothPairing::JustWorks
            }
            "pin" => match pin_file {
                Some(file) => BluetoothPairing::Pin(SecretSource::File(PathBuf::from(&file.value))),
                None => {
                    c.missing(
                        "bluetooth.pin_file",
                        format!(
                            "pairing = \"pin\" ({}) needs the file holding the PIN",
                            v.at
                        ),
                        Some(&v.at),
                    );
                    BluetoothPairing::JustWorks
                }
            },
            other => {
                c.invalid(
                    &v.at,
                    "bluetooth.pairing",
                    format!("{other:?} is not just_works or pin"),
                );
                BluetoothPairing::JustWorks
            }
        },
        None => BluetoothPairing::JustWorks,
    };
    BluetoothConfig {
        enabled,
        backend,
        adapter,
        discoverable,
        pairing,
        pairing_timeout: Duration::from_millis(timeout),
        prefer_msbc,
    }
}
