//! Bluetooth headsets: the Hands-Free Profile gateway's command exchange
//! ([`hfp`]) and the choice of audio route during a call ([`route`]), both
//! pure state machines without a radio. The BlueZ side (adapter, pairing,
//! profile registration, SCO sockets) is not part of this module yet.

pub mod hfp;
pub mod route;

pub use hfp::{
    AudioSetupError, Codec, DoorCall, HfpEvent, HfpMachine, HfpOutput, HfpSettings, Indicator,
    RejectReason, SlcState,
};
pub use route::{CallPhase, Route, RouteInput, RouteMachine, RouteOutput, RouteSettings};

#[cfg(test)]
#[path = "hfp_tests.rs"]
mod hfp_tests;

#[cfg(test)]
#[path = "route_tests.rs"]
mod route_tests;
