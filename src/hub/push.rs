//! Web Push from the hub: a resident's phone rings while its answering page
//! is closed. RFC 8030 delivery, RFC 8291 payload encryption (aes128gcm),
//! RFC 8292 VAPID.
//!
//! This module is the sender only: what to push and to whom is decided by
//! the hub (`state.rs`), where subscriptions live is `store.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A browser's push subscription as `PushSubscription.toJSON()` gives it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    /// The push service URL; a capability: never logged (its host at most).
    pub endpoint: String,
    pub keys: SubscriptionKeys,
}

#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key, base64url, uncompressed (65 bytes).
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url.
    pub auth: String,
}

impl std::fmt::Debug for Subscription {
    // The endpoint and keys let anyone push to the phone: only the host.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("endpoint_host", &endpoint_host(&self.endpoint))
            .finish_non_exhaustive()
    }
}

/// The host of a push endpoint: all a log may show of it.
pub fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or("");
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

/// One push to one subscription.
#[derive(Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// Plain text before encryption (JSON); never logged.
    pub payload: Vec<u8>,
    pub ttl: Duration,
    pub urgency: Urgency,
    /// A later push with the same topic replaces this one at the push
    /// service (RFC 8030 §5.4): ≤ 32 characters of base64url.
    pub topic: Option<String>,
}

impl std::fmt::Debug for PushMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushMessage")
            .field("bytes", &self.payload.len())
            .field("ttl", &self.ttl)
            .field("urgency", &self.urgency)
            .field("topic", &self.topic)
            .finish()
    }
}

/// What became of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// 201 (or another 2xx).
    Delivered,
    /// 404 or 410: the subscription is gone; delete it.
    Gone,
    /// Anything else (4xx, 5xx, timeout, unreachable), with why.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
}

/// The hub's VAPID key pair (P-256), made once and kept in the state
/// directory.
pub struct VapidKeys {
    _private: (),
}

impl VapidKeys {
    /// Loads `<state_dir>/push/vapid.key`, or makes and stores it (0600).
    pub fn load_or_create(state_dir: &Path) -> Result<Self, PushError> {
        Err(PushError::Key {
            path: state_dir.join("push/vapid.key"),
            reason: "Web Push is not built yet".into(),
        })
    }

    /// The public key as browsers want it for `applicationServerKey`:
    /// base64url of the uncompressed point.
    pub fn public_key_b64url(&self) -> String {
        String::new()
    }
}

/// Sends pushes. Cheap to clone; every send is independent.
#[derive(Clone)]
pub struct WebPush {
    _private: (),
}

impl WebPush {
    /// `subject`: the VAPID `sub` claim (`mailto:` or `https:`);
    /// `extra_ca`: trust for a push service with a private CA (tests).
    pub fn new(_keys: VapidKeys, _subject: String, _extra_ca: Option<&Path>) -> Self {
        Self { _private: () }
    }

    /// Encrypts and delivers one message; never panics, never blocks longer
    /// than its own timeout.
    pub async fn send(&self, _sub: &Subscription, _msg: &PushMessage) -> PushOutcome {
        PushOutcome::Failed("Web Push is not built yet".into())
    }
}
