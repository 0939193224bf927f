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
use tracing_subscriber::filter::{LevelFilter, Targets};
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
                    .with(payload_caps())
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
        .with(payload_caps())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init();
    note
}

/// Crates that write whole frames, packets, message bodies or credentials
/// at some level, and the most they may log: a signaling frame carries a
/// token in `hello` and TURN passwords in `welcome`, so these stay capped
/// whatever `RUST_LOG` says. tungstenite prints every frame's payload at
/// trace; hyper and h2 dump headers and bodies; rustls' trace lines include
/// handshake messages; the WebRTC stack's ICE agent prints the remote ICE
/// password at debug, and its STUN/TURN, SRTP and data channel parts print
/// packets. Its DTLS and SCTP parts name handshake messages and chunks at
/// debug (what a stalled handshake is diagnosed with) and dump more at
/// trace.
pub const PAYLOAD_LOGGERS: [(&str, LevelFilter); 14] = [
    ("tungstenite", LevelFilter::INFO),
    ("tokio_tungstenite", LevelFilter::INFO),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("reqwest", LevelFilter::INFO),
    ("rtc_ice", LevelFilter::INFO),
    ("rtc_stun", LevelFilter::INFO),
    ("rtc_turn", LevelFilter::INFO),
    ("rtc_srtp", LevelFilter::INFO),
    ("rtc_datachannel", LevelFilter::INFO),
    ("rtc_dtls", LevelFilter::DEBUG),
    ("rtc_sctp", LevelFilter::DEBUG),
];

/// A filter that passes everything except [`PAYLOAD_LOGGERS`] above their
/// cap. It sits beside the user's filter, and an event must pass both: a
/// cap never raises what the user set lower (the default
/// `rtc_dtls=error` stays).
pub fn payload_caps() -> Targets {
    let mut t = Targets::new().with_default(LevelFilter::TRACE);
    for (target, level) in PAYLOAD_LOGGERS {
        t = t.with_target(target, level);
    }
    t
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

/// Longest peer text kept in one log field, in characters.
pub const PEER_TEXT_MAX: usize = 200;

/// Text that came from a peer, made safe for one log line: control
/// characters (and the Unicode line and paragraph separators) escaped, so a
/// `\n` cannot start a forged line, and cut at [`PEER_TEXT_MAX`] characters
/// with a `…`.
pub fn escape_peer_text(s: &str) -> String {
    PeerText::new(s).to_string()
}

/// [`escape_peer_text`] as a `Display` value, for log fields without an
/// allocation: `warn!(nonce = %PeerText::new(&nonce), …)`.
#[derive(Clone, Copy)]
pub struct PeerText<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> PeerText<'a> {
    pub fn new(text: &'a str) -> Self {
        PeerText {
            text,
            max: PEER_TEXT_MAX,
        }
    }

    /// Cut at `max` characters instead (a whole line assembled from several
    /// fields).
    pub fn with_max(text: &'a str, max: usize) -> Self {
        PeerText { text, max }
    }
}

impl std::fmt::Display for PeerText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for (i, c) in self.text.chars().enumerate() {
            if i == self.max {
                return f.write_char('…');
            }
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for PeerText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod peer_text_tests {
    use super::{PeerText, escape_peer_text};

    #[test]
    fn newlines_are_escaped_and_long_text_cut() {
        assert_eq!(escape_peer_text("a\nb"), "a\\nb");
        let long = "x".repeat(500);
        assert_eq!(escape_peer_text(&long).chars().count(), 201);
    }

    #[test]
    fn no_character_can_end_the_line() {
        let nasty = "a\r\nb\u{1b}[31mc\u{2028}d\u{85}e\u{0}f\tg";
        let out = escape_peer_text(nasty);
        assert!(
            !out.chars()
                .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}')),
            "{out:?}"
        );
        assert!(out.starts_with("a\\r\\nb\\u{1b}[31mc\\u{2028}d"), "{out}");
        assert_eq!(PeerText::with_max("abcdef", 3).to_string(), "abc…");
        assert_eq!(PeerText::new("ab").to_string(), "ab");
    }

    #[test]
    fn payload_loggers_are_capped_and_nothing_else() {
        use tracing::Level;
        let caps = super::payload_caps();
        for (t, level) in super::PAYLOAD_LOGGERS {
            let sub = format!("{t}::inner");
            assert!(caps.would_enable(&sub, &Level::INFO), "{t}");
            assert!(!caps.would_enable(&sub, &Level::TRACE), "{t}");
            assert_eq!(
                caps.would_enable(&sub, &Level::DEBUG),
                level == tracing_subscriber::filter::LevelFilter::DEBUG,
                "{t}"
            );
        }
        assert!(caps.would_enable("intercomd::hub::server", &Level::TRACE));
        assert!(caps.would_enable("rtc::peer_connection", &Level::TRACE));
    }
}
