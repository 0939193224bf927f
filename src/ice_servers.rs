//! STUN and TURN servers as configured, and the credentials handed out for
//! them.
//!
//! A TURN server either has a fixed user name and password (long-term
//! credentials) or shares a secret with intercomd (the TURN REST scheme,
//! coturn's `use-auth-secret`): then every client gets its own user name
//! `<expiry unix time>:<client id>` and the password
//! `base64(HMAC-SHA1(secret, user name))`, valid until the expiry. A leaked
//! password then opens the relay for one client and a bounded time, and no
//! password is ever stored on an answering device.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::signaling::protocol::IceServerInfo;

/// How a server's clients authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum IceAuth {
    /// STUN, or a TURN server without authentication.
    None,
    /// Long-term credentials, the same for every client.
    Static {
        username: String,
        credential: String,
    },
    /// Per-client credentials derived from a shared secret.
    SharedSecret { secret: String, ttl: Duration },
}

/// One configured server with its secret read.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServerSpec {
    pub urls: Vec<String>,
    pub auth: IceAuth,
}

impl fmt::Debug for IceServerSpec {
    // Passwords and secrets never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            IceAuth::None => "none".to_owned(),
            IceAuth::Static { username, .. } => format!("user {username:?}, password <redacted>"),
            IceAuth::SharedSecret { ttl, .. } => {
                format!("shared secret <redacted>, ttl {} s", ttl.as_secs())
            }
        };
        f.debug_struct("IceServerSpec")
            .field("urls", &self.urls)
            .field("auth", &auth)
            .finish()
    }
}

impl IceServerSpec {
    /// The server as handed to `client` at `unix_now` (seconds).
    pub fn resolve(&self, client: &str, unix_now: u64) -> IceServerInfo {
        let (username, credential) = match &self.auth {
            IceAuth::None => (None, None),
            IceAuth::Static {
                username,
                credential,
            } => (Some(username.clone()), Some(credential.clone())),
            IceAuth::SharedSecret { secret, ttl } => {
                let (u, c) = rest_credential(secret, client, unix_now + ttl.as_secs());
                (Some(u), Some(c))
            }
        };
        IceServerInfo {
            urls: self.urls.clone(),
            username,
            credential,
        }
    }
}

/// Every server as handed to `client` now.
/// The ICE servers of a call: the hub's list when it sent one, else the
/// configured servers with their credentials minted now.
pub fn for_call(
    configured: &[IceServerSpec],
    client: &str,
    from_hub: &[IceServerInfo],
) -> Vec<IceServerInfo> {
    match from_hub.is_empty() {
        true => resolve_all(configured, client),
        false => from_hub.to_vec(),
    }
}

pub fn resolve_all(specs: &[IceServerSpec], client: &str) -> Vec<IceServerInfo> {
    let now = unix_now();
    specs.iter().map(|s| s.resolve(client, now)).collect()
}

/// Seconds since the Unix epoch; 0 if the clock is before it.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// TURN REST credentials: user name `<expires>:<client>`, password the
/// base64 HMAC-SHA1 of the user name keyed with the shared secret.
pub fn rest_credential(secret: &str, client: &str, expires: u64) -> (String, String) {
    let username = format!("{expires}:{client}");
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_match_an_independent_hmac() {
        // Reference value from Python's hmac module:
        // base64(hmac.new(b"north-wind", b"1700086400:door-1", sha1).digest())
        let (u, c) = rest_credential("north-wind", "door-1", 1_700_086_400);
        assert_eq!(u, "1700086400:door-1");
        assert_eq!(c, "BNW7fIqjt22TVbFQruWUJYe77fQ=");
    }

    #[test]
    fn each_client_gets_its_own_credential_with_the_expiry_ahead() {
        let spec = IceServerSpec {
            urls: vec!["turn:turn.example.org:3478".into()],
            auth: IceAuth::SharedSecret {
                secret: "s3cret".into(),
                ttl: Duration::from_secs(3600),
            },
        };
        let a = spec.resolve("flat-1a", 1_000);
        let b = spec.resolve("flat-2b", 1_000);
        assert_eq!(a.username.as_deref(), Some("4600:flat-1a"));
        assert_eq!(b.username.as_deref(), Some("4600:flat-2b"));
        assert_ne!(a.credential, b.credential);
        let shown = format!("{spec:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn static_and_stun_servers_pass_through() {
        let turn = IceServerSpec {
            urls: vec!["turn:t:3478".into()],
            auth: IceAuth::Static {
                username: "u".into(),
                credential: "p4ss".into(),
            },
        };
        let r = turn.resolve("x", 5);
        assert_eq!(
            (r.username.as_deref(), r.credential.as_deref()),
            (Some("u"), Some("p4ss"))
        );
        assert!(!format!("{turn:?}").contains("p4ss"));
        let stun = IceServerSpec {
            urls: vec!["stun:s:3478".into()],
            auth: IceAuth::None,
        };
        let r = stun.resolve("x", 5);
        assert_eq!((r.username, r.credential), (None, None));
    }
}
