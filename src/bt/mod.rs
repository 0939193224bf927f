//! Bluetooth headsets: the adapter behind a small trait ([`adapter`]) with
//! BlueZ ([`bluez`]) and simulated ([`sim`]) backends, the actor that
//! powers it, runs the pairing window and trusts paired headsets
//! ([`service`]), the Hands-Free Profile gateway's command exchange
//! ([`hfp`]) and the choice of audio route during a call ([`route`]); the
//! last two are pure state machines without a radio.

pub mod adapter;
pub mod bluez;
pub mod call_audio;
pub mod gateway;
pub mod hfp;
pub mod msbc;
pub mod route;
pub mod sbc;
pub mod sco;
pub mod service;
pub mod sim;
pub mod voice;

pub use adapter::{BtAdapter, BtError, DeviceAddr};
pub use adapter::{GatewayCommand, VoiceLink};
pub use hfp::{
    AudioSetupError, Codec, DoorCall, HfpEvent, HfpMachine, HfpOutput, HfpSettings, Indicator,
    RejectReason, SlcState,
};
pub use route::{CallPhase, Route, RouteInput, RouteMachine, RouteOutput, RouteSettings};
pub use service::{BtCommand, BtEvent, BtHandle, BtSettings, PairSource, PairingMode, PairingOpen};

#[cfg(test)]
#[path = "hfp_tests.rs"]
mod hfp_tests;

#[cfg(test)]
#[path = "route_tests.rs"]
mod route_tests;

#[cfg(test)]
#[path = "service_tests.rs"]
mod service_tests;
