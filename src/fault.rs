//! Faults injected on purpose, to prove that supervision notices them.
//!
//! This module exists only when intercomd is built with the
//! `fault-injection` cargo feature (off by default, never in a shipped
//! build): a release binary ignores these environment variables entirely.

use std::time::Duration;

/// Milliseconds after start-up at which the controller loop stops turning
/// (it awaits forever, as if stuck), so it stops sending `WATCHDOG=1`.
pub const WEDGE_CONTROLLER_ENV: &str = "INTERCOMD_FAULT_WEDGE_CONTROLLER_AFTER_MS";

/// When the controller loop should wedge, if asked to.
pub fn controller_wedge_after() -> Option<Duration> {
    std::env::var(WEDGE_CONTROLLER_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}
