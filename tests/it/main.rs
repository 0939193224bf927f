//! The integration tests, one module per subject, linked into one test
//! binary (linking the daemon's library once instead of once per file).
//! Helpers shared by them are in `common/`.
//!
//! Tests whose process-global state must not be shared (the tracing
//! subscriber that captures the daemon's log, the environment ALSA reads
//! its configuration from) start with `common::in_own_process`: run
//! normally, they re-run themselves alone in a child process of this
//! binary.
//!
//! `make test-fault` runs the `systemd_notify` module with the
//! `fault-injection` feature; `make soak` the ignored `soak` module.

mod common;

mod acme_pebble;
mod alsa_file_pcm;
mod bt_pair;
mod cli;
mod door_restart;
mod hostile_load;
mod hub_history;
mod hub_push;
mod hub_tls;
mod log_integrity;
mod media_loopback;
mod pure_logic;
mod shutdown;
mod soak;
mod station_call;
mod systemd_notify;
mod turn_stream;
mod web_push;
