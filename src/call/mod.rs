//! Call logic: the pure [`machine::CallMachine`] and nothing else. The
//! controller in `crate::controller` feeds it and carries out its outputs.

pub mod machine;

pub use machine::{
    CallMachine, CallSettings, EndReason, Input, MediaRequest, MediaState, Output, Phase, Rejected,
};
