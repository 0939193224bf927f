pub mod call;
pub mod config;
pub mod hub;
pub mod hw;
pub mod logging;
pub mod signaling;
