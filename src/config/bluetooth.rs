//! `[bluetooth]`: a headset taking the call audio over the Hands-Free
//! Profile. Only the settings live here; the PIN itself is read from its
//! file when pairing starts, never kept in the TOML.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::{Check, kv, ms, q};
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

impl BluetoothPairing {
    pub fn as_str(&self) -> &'static str {
        match self {
            BluetoothPairing::JustWorks => "just_works",
            BluetoothPairing::Pin(_) => "pin",
        }
    }
}

/// `[bluetooth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BluetoothConfig {
    pub enabled: bool,
    pub pairing: BluetoothPairing,
    /// Pairing closes again after this long.
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
        pairing,
        pairing_timeout: Duration::from_millis(timeout),
        prefer_msbc,
    }
}

pub(super) fn dump(w: &mut String, s: &super::Settings) {
    let b = &s.bluetooth;
    let _ = writeln!(w, "\n[bluetooth]");
    kv(w, "enabled", &b.enabled.to_string());
    kv(w, "pairing", &q(b.pairing.as_str()));
    match &b.pairing {
        BluetoothPairing::Pin(SecretSource::File(path)) => {
            kv(w, "pin_file", &q(&path.display().to_string()));
        }
        // Credentials are not offered for the PIN.
        BluetoothPairing::Pin(SecretSource::Credential(_)) | BluetoothPairing::JustWorks => {}
    }
    kv(w, "pairing_timeout_ms", &ms(b.pairing_timeout));
    kv(w, "prefer_msbc", &b.prefer_msbc.to_string());
}
