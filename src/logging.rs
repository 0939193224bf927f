//! Logging setup: tracing to journald under systemd, to stderr otherwise.
//!
//! Technicians grep the journal for the milestone phrases (`Socket
//! connected`, `AUDIO CONNECTION ESTABLISHED`, …); those are emitted where
//! the events happen, with structured fields such as `call_id` beside them
//! (journald shows them upper-cased: `CALL_ID=`).

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
                let layer = layer.with_syslog_identifier("intercomd".into());
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
