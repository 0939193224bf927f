pub mod call;
pub mod signaling;
