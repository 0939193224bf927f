//! Web Push from the hub: a resident's phone rings while its answering page
//! is closed. RFC 8030 delivery, RFC 8291 payload encryption (aes128gcm),
//! RFC 8292 VAPID.
//!
//! This module is the sender only: what to push and to whom is decided by
//! the hub (`state.rs`), where subscriptions live is `store.rs`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use ring::{aead, agreement, hkdf};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject as _;
use tracing::{debug, error, info, warn};

use super::acme::with_causes;
use super::tls::{ensure_private_dir, write_private};
use crate::logging::escape_peer_text;

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

/// The VAPID key below the state directory.
const KEY_FILE: &str = "push/vapid.key";
/// The whole request: connect, TLS, upload, status and the start of the
/// body. A ring is worthless once the call has timed out anyway.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// VAPID tokens must expire within 24 h (RFC 8292 §2); 12 h leaves room
/// for a clock that is a few hours off.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The record size of the single aes128gcm record.
const RECORD_SIZE: u32 = 4096;
/// salt (16) + rs (4) + idlen (1) + the sender's public key (65).
const HEADER_LEN: usize = 86;
/// Push services must take 4096 bytes of body (RFC 8291 §4): less the
/// header, the GCM tag and the padding delimiter.
pub const MAX_PAYLOAD: usize = 4096 - HEADER_LEN - 16 - 1;
/// How much of a refusal's body is read for the log.
const MAX_ERROR_BODY: usize = 1024;

/// The hub's VAPID key pair (P-256), made once and kept in the state
/// directory.
pub struct VapidKeys {
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for VapidKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKeys")
            .field("public", &self.public_key_b64url())
            .finish_non_exhaustive()
    }
}

impl VapidKeys {
    /// Loads `<state_dir>/push/vapid.key`, or makes and stores it (0600).
    pub fn load_or_create(state_dir: &Path) -> Result<Self, PushError> {
        let path = state_dir.join(KEY_FILE);
        let fail = |reason: String| PushError::Key {
            path: path.clone(),
            reason,
        };
        let rng = SystemRandom::new();
        match std::fs::read(&path) {
            Ok(pem) => {
                let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
                    .map_err(|e| fail(format!("not a PKCS#8 PEM private key: {e}")))?;
                let pair = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    der.secret_pkcs8_der(),
                    &rng,
                )
                .map_err(|e| fail(format!("not a P-256 private key: {e}")))?;
                Ok(Self { pair })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = path
                    .parent()
                    .expect("KEY_FILE names a file inside a directory");
                ensure_private_dir(dir).map_err(|e| fail(e.to_string()))?;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| fail("the system's random source failed".into()))?;
                let pair = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8.as_ref(),
                    &rng,
                )
                .map_err(|e| fail(format!("the new key does not load: {e}")))?;
                write_private(&path, pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
                    .map_err(|e| fail(e.to_string()))?;
                info!(path = %path.display(), "made the Web Push (VAPID) key");
                Ok(Self { pair })
            }
            Err(e) => Err(fail(format!("cannot read: {e}"))),
        }
    }

    /// The public key as browsers want it for `applicationServerKey`:
    /// base64url of the uncompressed point.
    pub fn public_key_b64url(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    /// An RFC 8292 token for one push service (`aud` is its origin).
    fn token(
        &self,
        rng: &SystemRandom,
        aud: &str,
        sub: &str,
        now: SystemTime,
    ) -> Result<String, String> {
        let exp = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_owned())?
            + TOKEN_LIFETIME;
        let claims = serde_json::json!({ "aud": aud, "exp": exp.as_secs(), "sub": sub });
        let input = format!(
            "{}.{}",
            B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#),
            B64.encode(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(rng, input.as_bytes())
            .map_err(|_| "cannot sign the VAPID token".to_owned())?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }
}

/// PEM armour, 64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends pushes. Cheap to clone; every send is independent.
#[derive(Clone)]
pub struct WebPush {
    inner: Arc<Inner>,
}

struct Inner {
    keys: VapidKeys,
    public_b64: String,
    subject: String,
    rng: SystemRandom,
    /// Why there is no client: every send fails with it.
    client: Result<HttpsClient, String>,
}

impl std::fmt::Debug for WebPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPush")
            .field("keys", &self.inner.keys)
            .field("subject", &self.inner.subject)
            .finish_non_exhaustive()
    }
}

impl WebPush {
    /// `subject`: the VAPID `sub` claim (`mailto:` or `https:`);
    /// `extra_ca`: trust for a push service with a private CA (tests).
    pub fn new(keys: VapidKeys, subject: String, extra_ca: Option<&Path>) -> Self {
        let client = http_client(extra_ca);
        if let Err(e) = &client {
            error!(reason = %e, "Web Push cannot send: no HTTPS client");
        }
        Self {
            inner: Arc::new(Inner {
                public_b64: keys.public_key_b64url(),
                keys,
                subject,
                rng: SystemRandom::new(),
                client,
            }),
        }
    }

    /// Encrypts and delivers one message; never panics, never blocks longer
    /// than its own timeout.
    pub async fn send(&self, sub: &Subscription, msg: &PushMessage) -> PushOutcome {
        let host = endpoint_host(&sub.endpoint);
        let started = Instant::now();
        let outcome = match tokio::time::timeout(SEND_TIMEOUT, self.try_send(sub, msg)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(reason)) => PushOutcome::Failed(reason),
            Err(_) => PushOutcome::Failed(format!(
                "no answer from {host} within {} s",
                SEND_TIMEOUT.as_secs()
            )),
        };
        debug!(
            host,
            ?outcome,
            ms = started.elapsed().as_millis() as u64,
            "push sent"
        );
        outcome
    }

    async fn try_send(&self, sub: &Subscription, msg: &PushMessage) -> Result<PushOutcome, String> {
        let inner = &*self.inner;
        let client = inner.client.as_ref().map_err(Clone::clone)?;
        let target = Target::parse(&sub.endpoint)?;
        let request = self.request(&target, sub, msg, SystemTime::now())?;
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach {}: {}", target.host, with_causes(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(PushOutcome::Delivered);
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Ok(PushOutcome::Gone);
        }
        // Push services explain refusals in the body (a JSON error, a
        // sentence): its start is what a technician needs.
        let mut body = response.into_body();
        let mut text = Vec::new();
        while text.len() < MAX_ERROR_BODY {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        text.extend_from_slice(data);
                    }
                }
                _ => break,
            }
        }
        text.truncate(MAX_ERROR_BODY);
        let text = escape_peer_text(String::from_utf8_lossy(&text).trim());
        Ok(PushOutcome::Failed(if text.is_empty() {
            format!("{} answered {status}", target.host)
        } else {
            format!("{} answered {status}: {text}", target.host)
        }))
    }

    /// The encrypted, signed POST for one push.
    fn request(
        &self,
        target: &Target,
        sub: &Subscription,
        msg: &PushMessage,
        now: SystemTime,
    ) -> Result<Request<Full<Bytes>>, String> {
        let inner = &*self.inner;
        let ua_public = decode_key(&sub.keys.p256dh, "p256dh")?;
        let auth = decode_key(&sub.keys.auth, "auth")?;
        if let Some(topic) = &msg.topic
            && !valid_topic(topic)
        {
            return Err("the topic is not 1 to 32 base64url characters".into());
        }
        let mut salt = [0u8; 16];
        inner
            .rng
            .fill(&mut salt)
            .map_err(|_| "the system's random source failed".to_owned())?;
        let body = encrypt(&msg.payload, &ua_public, &auth, &salt, &inner.rng)?;
        let token = inner
            .keys
            .token(&inner.rng, &target.origin, &inner.subject, now)?;
        let mut builder = Request::post(target.uri.clone())
            .header("TTL", msg.ttl.as_secs())
            .header("Urgency", msg.urgency.as_str())
            .header(header::CONTENT_ENCODING, "aes128gcm")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(
                header::AUTHORIZATION,
                format!("vapid t={token}, k={}", inner.public_b64),
            );
        if let Some(topic) = &msg.topic {
            builder = builder.header("Topic", topic.as_str());
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))
    }
}

impl Urgency {
    /// The RFC 8030 §5.3 header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// RFC 8030 §5.4: at most 32 characters of the URL-safe base64 alphabet.
fn valid_topic(topic: &str) -> bool {
    (1..=32).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A subscription key: base64url as browsers give it; padding and the
/// standard alphabet are tolerated since some libraries produce them.
fn decode_key(text: &str, name: &str) -> Result<Vec<u8>, String> {
    let normal: String = text
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    B64.decode(normal.as_bytes())
        .map_err(|_| format!("the subscription's {name} key is not base64url"))
}

/// Where a push goes and who it is for.
#[derive(Debug)]
struct Target {
    uri: Uri,
    /// The VAPID audience: scheme, host and a non-default port.
    origin: String,
    host: String,
}

impl Target {
    fn parse(endpoint: &str) -> Result<Self, String> {
        let host_shown = endpoint_host(endpoint);
        let bad = || format!("the endpoint at {host_shown} is not an http(s) URL");
        let uri: Uri = endpoint.parse().map_err(|_| bad())?;
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') {
            return Err(format!("the endpoint at {host_shown} carries credentials"));
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad());
        }
        let (scheme, default_port) = match uri.scheme_str() {
            Some("https") => ("https", 443),
            Some("http") if is_loopback(&host) => ("http", 80),
            Some("http") => {
                return Err(format!(
                    "refusing plain http to {host}: push services are reached over https"
                ));
            }
            _ => return Err(bad()),
        };
        let origin = match authority.port_u16() {
            Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
            _ => format!("{scheme}://{host}"),
        };
        Ok(Self { uri, origin, host })
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An hkdf output length that is no cipher's key.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// RFC 8291 with one RFC 8188 aes128gcm record: `ua_public` and `auth`
/// from the subscription, a fresh `salt`, and the sender's ephemeral key
/// drawn from `ephemeral` (a fixed source reproduces RFC 8291's example).
fn encrypt(
    payload: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    salt: &[u8; 16],
    ephemeral: &dyn SecureRandom,
) -> Result<Vec<u8>, String> {
    if ua_public.len() != 65 || ua_public[0] != 0x04 {
        return Err(format!(
            "the subscription's p256dh key is {} bytes, not an uncompressed P-256 point",
            ua_public.len()
        ));
    }
    if auth.len() != 16 {
        return Err(format!(
            "the subscription's auth secret is {} bytes, not 16",
            auth.len()
        ));
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(format!(
            "the payload is {} bytes, more than the {MAX_PAYLOAD} a push carries",
            payload.len()
        ));
    }
    let as_private = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, ephemeral)
        .map_err(|_| "the system's random source failed".to_owned())?;
    let as_public = as_private
        .compute_public_key()
        .map_err(|_| "cannot compute the ephemeral public key".to_owned())?;
    let as_public = as_public.as_ref();
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_public);
    let (cek, nonce) = agreement::agree_ephemeral(as_private, &peer, |ecdh_secret| {
        derive(ecdh_secret, auth, ua_public, as_public, salt)
    })
    .map_err(|_| "the subscription's p256dh key is not a point on P-256".to_owned())?
    .map_err(|_| "key derivation failed".to_owned())?;

    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &cek)
            .map_err(|_| "key derivation failed".to_owned())?,
    );
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 1 + 16);
    out.extend_from_slice(salt);
    out.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    out.push(as_public.len() as u8);
    out.extend_from_slice(as_public);
    let mut record = Vec::with_capacity(payload.len() + 1 + 16);
    record.extend_from_slice(payload);
    // The last (and only) record's padding delimiter, no padding after it.
    record.push(0x02);
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut record,
    )
    .map_err(|_| "encryption failed".to_owned())?;
    out.extend_from_slice(&record);
    Ok(out)
}

/// RFC 8291 §3.3-3.4: the content encryption key and nonce.
fn derive(
    ecdh_secret: &[u8],
    auth: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8; 16],
) -> Result<([u8; 16], [u8; 12]), ring::error::Unspecified> {
    let mut ikm = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, auth)
        .extract(ecdh_secret)
        .expand(&[b"WebPush: info\0", ua_public, as_public], Len(32))?
        .fill(&mut ikm)?;
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm);
    let mut cek = [0u8; 16];
    prk.expand(&[b"Content-Encoding: aes128gcm\0"], Len(16))?
        .fill(&mut cek)?;
    let mut nonce = [0u8; 12];
    prk.expand(&[b"Content-Encoding: nonce\0"], Len(12))?
        .fill(&mut nonce)?;
    Ok((cek, nonce))
}

/// HTTPS (and plain HTTP, for loopback only: checked per request) with
/// the system's CAs plus `extra_ca`.
fn http_client(extra_ca: Option<&Path>) -> Result<HttpsClient, String> {
    let roots = super::tls::trust_roots(extra_ca).map_err(|e| format!("ca_file: {e}"))?;
    if roots.is_empty() {
        // Not fatal: loopback tests need none, and the failure of each
        // push will say why.
        warn!("no trusted CA certificates for Web Push (install ca-certificates)");
    }
    let config = Arc::unwrap_or_clone(super::tls::client_config(roots));
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(SEND_TIMEOUT));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn d(s: &str) -> Vec<u8> {
        B64.decode(s).expect("test vectors are base64url")
    }

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("intercomd-push-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    /// RFC 8291 Appendix A, byte for byte.
    #[test]
    #[allow(deprecated)] // ring's fixed random source: the only way to inject a key
    fn encryption_matches_rfc8291_appendix_a() {
        let as_private = d("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw");
        let fixed = ring::test::rand::FixedSliceRandom { bytes: &as_private };
        let salt: [u8; 16] = d("DGv6ra1nlYgDCS1FRnbzlw")
            .try_into()
            .expect("the RFC's salt is 16 bytes");
        let out = encrypt(
            b"When I grow up, I want to be a watermelon",
            &d("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
            &d("BTBZMqHH6r4Tts7J_aSIgg"),
            &salt,
            &fixed,
        )
        .expect("the RFC's keys are valid");
        assert_eq!(
            B64.encode(&out),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn bad_subscription_keys_are_refused() {
        let rng = SystemRandom::new();
        let salt = [7u8; 16];
        let good_ua = d(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        let auth = [1u8; 16];
        assert!(encrypt(b"x", &good_ua, &auth, &salt, &rng).is_ok());
        // Too short, compressed form, off the curve, bad auth length.
        assert!(encrypt(b"x", &good_ua[..64], &auth, &salt, &rng).is_err());
        let mut compressed = good_ua[..33].to_vec();
        compressed[0] = 0x02;
        assert!(encrypt(b"x", &compressed, &auth, &salt, &rng).is_err());
        let mut off_curve = good_ua.clone();
        off_curve[64] ^= 1;
        let e = encrypt(b"x", &off_curve, &auth, &salt, &rng).unwrap_err();
        assert!(e.contains("not a point"), "{e}");
        assert!(encrypt(b"x", &good_ua, &auth[..15], &salt, &rng).is_err());
        assert!(encrypt(&[0; MAX_PAYLOAD + 1], &good_ua, &auth, &salt, &rng).is_err());
        assert_eq!(
            encrypt(&[0; MAX_PAYLOAD], &good_ua, &auth, &salt, &rng)
                .expect("the largest payload fits")
                .len(),
            4096
        );
        assert!(decode_key("not*base64", "p256dh").is_err());
        assert_eq!(
            decode_key("BTBZMqHH6r4Tts7J_aSIgg==", "auth")
                .unwrap()
                .len(),
            16
        );
    }

    #[test]
    fn vapid_key_is_made_once_kept_private_and_reloaded() {
        let dir = tmp("keys");
        let a = VapidKeys::load_or_create(&dir).expect("a fresh state dir takes a key");
        let file = dir.join("push/vapid.key");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir.join("push")), 0o700);
        let b = VapidKeys::load_or_create(&dir).expect("the stored key loads");
        assert_eq!(a.public_key_b64url(), b.public_key_b64url());
        let public = d(&a.public_key_b64url());
        assert_eq!((public.len(), public[0]), (65, 0x04));

        std::fs::write(
            &file,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = VapidKeys::load_or_create(&dir).unwrap_err().to_string();
        assert!(e.contains("push/vapid.key"), "{e}");
        std::fs::write(&file, "garbage").unwrap();
        assert!(VapidKeys::load_or_create(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn vapid_token_is_es256_for_the_origin_and_expires_within_a_day() {
        let dir = tmp("token");
        let keys = VapidKeys::load_or_create(&dir).expect("a fresh state dir takes a key");
        let now = SystemTime::now();
        let token = keys
            .token(
                &SystemRandom::new(),
                "https://push.example",
                "mailto:a@b.example",
                now,
            )
            .expect("signing works");
        let (input, sig) = token.rsplit_once('.').expect("three parts");
        let (header, claims) = input.split_once('.').expect("three parts");
        let header: serde_json::Value = serde_json::from_slice(&d(header)).unwrap();
        assert_eq!(header["alg"], "ES256");
        let claims: serde_json::Value = serde_json::from_slice(&d(claims)).unwrap();
        assert_eq!(claims["aud"], "https://push.example");
        assert_eq!(claims["sub"], "mailto:a@b.example");
        let exp = claims["exp"].as_u64().expect("exp is a number");
        let now_s = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(exp > now_s && exp <= now_s + 24 * 3600);
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            d(&keys.public_key_b64url()),
        )
        .verify(input.as_bytes(), &d(sig))
        .expect("the signature verifies with the public key");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn endpoints_give_their_origin_and_plain_http_only_on_loopback() {
        let t = Target::parse("https://FCM.googleapis.com:443/fcm/send/abc").unwrap();
        assert_eq!(t.origin, "https://fcm.googleapis.com");
        let t = Target::parse("https://push.example:8443/x?y").unwrap();
        assert_eq!(t.origin, "https://push.example:8443");
        let t = Target::parse("http://127.0.0.1:4000/push/1").unwrap();
        assert_eq!(t.origin, "http://127.0.0.1:4000");
        assert!(Target::parse("http://localhost/p").is_ok());
        assert!(Target::parse("http://[::1]:9/p").is_ok());
        let e = Target::parse("http://push.example/secret-path").unwrap_err();
        assert!(e.contains("https") && !e.contains("secret-path"), "{e}");
        assert!(Target::parse("http://10.0.0.1/p").is_err());
        assert!(Target::parse("ftp://push.example/p").is_err());
        assert!(Target::parse("https://user:pw@push.example/p").is_err());
        assert!(Target::parse("not a url").is_err());
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn topics_are_short_base64url() {
        assert!(valid_topic("call-1_AZ"));
        assert!(valid_topic(&"a".repeat(32)));
        assert!(!valid_topic(&"a".repeat(33)));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a b"));
    }

    #[test]
    fn send_can_run_in_spawned_tasks() {
        fn is_send<T: Send>(_: &T) {}
        fn check(p: &WebPush, s: &Subscription, m: &PushMessage) {
            is_send(&p.send(s, m));
        }
        let _ = check;
    }
}
