//! The signaling hub: WebSocket signaling, token authentication, ring-group
//! fan-out and the answering page. `state` is the pure routing logic,
//! `server` the axum shell around it.

pub mod acme;
pub mod conn;
pub mod guard;
pub mod policy;
pub mod push;
pub mod quiet;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;

pub use server::{ConnSettings, HubError, Listeners, PushSettings, bind, run};
pub use state::{HubSettings, Principal};
