//! Signaling: the protocol types and the door station's client actor.

pub mod client;
pub mod protocol;
pub mod sdp;
pub mod socketio;
