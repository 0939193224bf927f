pub mod call;
pub mod hub;
pub mod signaling;
