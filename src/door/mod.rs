//! Door logic: the lock relay, local inputs, remote opening and LEDs. The
//! pure state machine lives in [`machine`]; the controller feeds it and
//! carries out its outputs.

pub mod indication;
mod machine;

pub use machine::{
    DoorInput, DoorMachine, DoorOutput, DoorSettings, LedPlan, LockKind, NONCE_WINDOW, OpenSource,
    Refusal, level_at, valid_nonce,
};

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
