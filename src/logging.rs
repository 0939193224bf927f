//! Logging setup: tracing to journald under systemd, to stderr otherwise.
//!
//! Technicians grep the journal for the milestone phrases (`Socket
//! connected`, `AUDIO CONNECTION ESTABLISHED`, …); those are emitted where
//! the events happen, with structured fields such as `call_id` beside them
//! (journald shows them upper-cased: `CALL_ID=`).
//!
//! Key events also carry a `MESSAGE_ID` (see [`message_id`]): the journal
//! catalog shipped in `dist/intercomd.catalog` explains each one, so
//! `journalctl -x` tells a technician what the line means and what to do.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// journald when started by systemd (or when stderr is not a terminal
    /// and a journal socket exists), stderr otherwise.
    Auto,
    Journald,
    Stderr,
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

fn journal_wanted(target: LogTarget) -> bool {
    match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => {
            std::env::var_os("JOURNAL_STREAM").is_some()
                || (Path::new(JOURNAL_SOCKET).exists() && !std::io::stderr().is_terminal())
        }
    }
}

/// Install the global subscriber. `level` is an EnvFilter directive;
/// `RUST_LOG` overrides it. Returns a note to log once logging is up (for
/// example why journald was not used).
pub fn init(target: LogTarget, level: &str) -> Option<String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let mut note = None;
    if journal_wanted(target) {
        match tracing_journald::layer() {
            Ok(layer) => {
                // No field prefix: fields keep their own names (`CALL_ID`,
                // `MESSAGE_ID`), which the catalog and technicians rely on.
                let layer = layer
                    .with_syslog_identifier("intercomd".into())
                    .with_field_prefix(None);
                if tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init()
                    .is_ok()
                {
                    return None;
                }
                return Some("a logger was already installed".into());
            }
            Err(e) => {
                // No journal socket: fall back rather than run blind.
                note = Some(format!(
                    "journald unavailable ({e}); logging to stderr instead"
                ));
            }
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init();
    note
}

/// 128-bit journal message ids (`MESSAGE_ID=`) of the key events, written as
/// a `message_id` field, e.g. `info!(message_id = message_id::CALL_STARTED,
/// …)`. Each one has an entry in `dist/intercomd.catalog`; never reuse an id
/// for a different meaning.
pub mod message_id {
    /// The signaling client reached the hub (`Socket connected`).
    pub const SIGNALING_CONNECTED: &str = "a344a29514af409684b9026b5e551cdf";
    /// The signaling connection dropped or could not be made; a reconnect
    /// follows after `DELAY_MS`.
    pub const SIGNALING_LOST: &str = "4657177be8dd4b9dac6f521494e9ef48";
    /// A visitor pressed a call button: a call starts ringing.
    pub const CALL_STARTED: &str = "1320218fc8e646bfa1128d11c9914f71";
    /// A resident answered the call.
    pub const CALL_ANSWERED: &str = "cb4b3a97d7f04b8bb5caca92507d8c68";
    /// A call ended; `REASON` says why.
    pub const CALL_ENDED: &str = "77be23262e0f42e79ed09c12c2339921";
    /// Audio flows both ways (`AUDIO CONNECTION ESTABLISHED`).
    pub const AUDIO_ESTABLISHED: &str = "50fcc005b5e74b8f813539c6d80b2fdb";
    /// The door relay was pulsed (audit record).
    pub const DOOR_OPENED: &str = "6cefe8cc823948c49ce916aa3ba588e7";
    /// The configuration is invalid; intercomd exits with status 78.
    pub const CONFIG_ERROR: &str = "a27eaf53f8f4483d9ea3eb2d0b5952b2";
    /// A call's media path was lost or stalled and is being brought back
    /// (an ICE restart or a new session), `ATTEMPT` of the allowed ones.
    pub const MEDIA_RECOVERY: &str = "622e3bd254544c30a0326dc71e491ec9";

    /// Every id with its name, for checks against the catalog.
    pub const ALL: [(&str, &str); 9] = [
        ("SIGNALING_CONNECTED", SIGNALING_CONNECTED),
        ("SIGNALING_LOST", SIGNALING_LOST),
        ("CALL_STARTED", CALL_STARTED),
        ("CALL_ANSWERED", CALL_ANSWERED),
        ("CALL_ENDED", CALL_ENDED),
        ("AUDIO_ESTABLISHED", AUDIO_ESTABLISHED),
        ("DOOR_OPENED", DOOR_OPENED),
        ("CONFIG_ERROR", CONFIG_ERROR),
        ("MEDIA_RECOVERY", MEDIA_RECOVERY),
    ];
}

#[cfg(test)]
mod tests {
    use super::message_id;

    const CATALOG: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/intercomd.catalog"
    ));

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let mut seen = std::collections::HashSet::new();
        for (name, id) in message_id::ALL {
            assert_eq!(id.len(), 32, "{name}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{name}"
            );
            assert!(seen.insert(id), "{name} reuses an id");
        }
    }

    #[test]
    fn every_message_id_has_a_catalog_entry() {
        let entries: Vec<&str> = CATALOG
            .lines()
            .filter_map(|l| l.strip_prefix("-- "))
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        for (name, id) in message_id::ALL {
            assert!(
                entries.contains(&id),
                "{name} ({id}) is missing from the catalog"
            );
        }
        assert_eq!(
            entries.len(),
            message_id::ALL.len(),
            "catalog has unknown ids"
        );
    }
}

/// Text that came from a peer, made safe for one log line: control
/// characters escaped (a `\n` cannot start a forged line) and cut at 200
/// characters.
pub fn escape_peer_text(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::with_capacity(s.len().min(MAX + 8));
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod peer_text_tests {
    #[test]
    fn newlines_are_escaped_and_long_text_cut() {
        assert_eq!(super::escape_peer_text("a\nb"), "a\\nb");
        let long = "x".repeat(500);
        assert_eq!(super::escape_peer_text(&long).chars().count(), 201);
    }
}
