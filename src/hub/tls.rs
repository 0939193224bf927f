//! TLS on the hub's listener: HTTPS for the answering page and WSS for
//! signaling on one port. Browsers give the microphone, service workers and
//! push only to a secure context, so a phone on the building's LAN needs
//! this to answer at all.
//!
//! Where the certificate comes from is [`TlsSource`]: a self-signed one made
//! on first start and kept in the state directory, PEM files re-read when
//! they change on disk, or ACME (`acme.rs`). Whatever the source, it lands in
//! one [`CertStore`], which rustls asks on every handshake, so a renewal
//! takes effect for the next connection without touching open ones.
//!
//! Handshakes run in their own tasks off the accept loop: a client that
//! connects and sends nothing costs one task and one connection slot
//! (`conn.rs`) until the handshake timeout, never the accept path.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error(
        "the key in {} does not belong to the certificate in {} (was one of them replaced without the other?)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("ACME with {url}: {reason}")]
    Acme { url: String, reason: String },
}

/// Where the hub's certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsSource {
    /// Made on first start, kept in `<state_dir>/tls/`; remade when it no
    /// longer names this host's addresses or nears its end.
    SelfSigned { extra_names: Vec<String> },
    /// PEM files kept by an installer or certbot; checked for changes every
    /// `reload_check`.
    Files {
        cert: PathBuf,
        key: PathBuf,
        reload_check: Duration,
    },
    /// RFC 8555 with TLS-ALPN-01 on this listener.
    Acme(super::acme::AcmeSettings),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub source: TlsSource,
    /// Created 0700 when missing; secrets in it are written 0600.
    pub state_dir: PathBuf,
}

/// The certificate every handshake gets, plus the answers to ACME
/// TLS-ALPN-01 challenges in progress (by server name).
#[derive(Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// The names the current certificate carries (the hub answers to them).
    names: RwLock<Vec<String>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("has_certificate", &self.current().is_some())
            .finish_non_exhaustive()
    }
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every handshake from now on gets `key`.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        let names = key
            .cert
            .first()
            .and_then(|c| CertInfo::of(c).ok())
            .map(|i| i.names)
            .unwrap_or_default();
        // A poisoned lock only means a writer panicked between two plain
        // assignments; the value inside is still whole.
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = names;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }

    /// The names of the current certificate.
    pub fn names(&self) -> Vec<String> {
        self.names.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase(), key);
    }

    pub fn clear_challenge(&self, name: &str) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut p| p.any(|proto| proto == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
        }
        self.current()
    }
}

/// The rustls configuration of the hub's listener: HTTP/1.1 only (the
/// WebSocket upgrade needs it), plus ACME's ALPN for challenges.
pub fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // ring's provider supports every default protocol version.
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Arc::new(config)
}

/// What a technician compares and what logs show of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the certificate, `AB:CD:…` as browsers show it.
    pub fingerprint_sha256: String,
    /// base64 SHA-256 of the public key (Chromium's
    /// `--ignore-certificate-errors-spki-list`, HPKP's pin format).
    pub spki_sha256: String,
    pub not_after: SystemTime,
    pub names: Vec<String>,
}

impl CertInfo {
    pub fn of(der: &CertificateDer<'_>) -> Result<Self, String> {
        use base64::Engine as _;
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let fingerprint_sha256 = fingerprint
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let spki = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
        let spki_sha256 = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
        let secs = cert.validity().not_after.timestamp().max(0) as u64;
        let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => names.push(
                            IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or([0; 4])).to_string(),
                        ),
                        16 => names.push(
                            IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or([0; 16])).to_string(),
                        ),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(Self {
            fingerprint_sha256,
            spki_sha256,
            not_after,
            names,
        })
    }

    /// `not_after` as seconds since the Unix epoch, for log fields.
    pub fn not_after_unix(&self) -> u64 {
        self.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Time left before `not_after` at `now` (zero when past).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or(Duration::ZERO)
    }
}

/// The certificates a TLS client of ours trusts: the system's CA store
/// plus the PEM certificates in `extra_ca` (a private CA, or a server's own
/// certificate as a pin). One unusable system certificate does not cost
/// the others; an unusable `extra_ca` is an error naming the file.
pub fn trust_roots(extra_ca: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let Some(path) = extra_ca else {
        return Ok(roots);
    };
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parse = |reason: String| TlsError::Parse {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(parse(
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| parse(format!("not usable as a trust anchor: {e}")))?;
    }
    Ok(roots)
}

/// A TLS client configuration (ring, TLS 1.2 and 1.3) trusting `roots`.
pub fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Reads a PEM chain and key, checks they belong together. Errors name the
/// file to fix.
pub fn load_pem(cert: &Path, key: &Path) -> Result<(Arc<CertifiedKey>, CertInfo), TlsError> {
    let cert_text = std::fs::read(cert).map_err(|source| TlsError::Read {
        path: cert.to_owned(),
        source,
    })?;
    let key_text = std::fs::read(key).map_err(|source| TlsError::Read {
        path: key.to_owned(),
        source,
    })?;
    certified_key(&cert_text, cert, &key_text, key)
}

/// A certified key from PEM text; `cert_path`/`key_path` only name the
/// origin in errors.
pub fn certified_key(
    cert_pem: &[u8],
    cert_path: &Path,
    key_pem: &[u8],
    key_path: &Path,
) -> Result<(Arc<CertifiedKey>, CertInfo), TlsError> {
    let parse = |path: &Path, reason: String| TlsError::Parse {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(cert_path, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(parse(
            cert_path,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    };
    let info = CertInfo::of(leaf).map_err(|e| {
        parse(
            cert_path,
            format!("the first certificate does not parse: {e}"),
        )
    })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| parse(key_path, format!("no usable private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| parse(key_path, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
    }
    Ok((Arc::new(ck), info))
}

/// Creates `dir` (and its parents) 0700 when missing and checks it can be
/// written.
pub fn ensure_private_dir(dir: &Path) -> Result<(), TlsError> {
    let err = |source| TlsError::StateDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        // The umask may have narrowed the mode only; make it exact.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").map_err(err)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes a file readable by its owner only (0600), replacing it
/// atomically so a crash never leaves half a key.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The names a self-signed certificate carries: this host's name, its
/// `.local` mDNS name, `localhost`, every address of its interfaces, and the
/// configured extras.
pub fn self_signed_names(extra: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(h) = host_name() {
        names.push(h.clone());
        if !h.contains('.') {
            names.push(format!("{h}.local"));
        }
    }
    names.push("localhost".into());
    for ip in interface_addresses() {
        names.push(ip.to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
}

/// A self-signed certificate older than this is made anew (browsers cap
/// accepted server certificates at 825 days on some platforms).
const SELF_SIGNED_DAYS: i64 = 825;
/// …and one that has less than this left is replaced at start.
const SELF_SIGNED_RENEW: Duration = Duration::from_secs(30 * 86400);

/// Loads the self-signed certificate from `<state_dir>/tls/`, or makes one
/// when there is none, it misses one of `names`, or it nears its end.
/// Returns the key, what to log of it, and whether it was made now.
pub fn self_signed(
    state_dir: &Path,
    names: &[String],
    now: SystemTime,
) -> Result<(Arc<CertifiedKey>, CertInfo, Option<String>), TlsError> {
    let dir = state_dir.join("tls");
    ensure_private_dir(state_dir)?;
    ensure_private_dir(&dir)?;
    let cert_path = dir.join("self-signed.crt");
    let key_path = dir.join("self-signed.key");
    let why_new = if cert_path.exists() && key_path.exists() {
        match load_pem(&cert_path, &key_path) {
            Ok((key, info)) => {
                let missing: Vec<&String> = names
                    .iter()
                    .filter(|n| !info.names.iter().any(|have| have.eq_ignore_ascii_case(n)))
                    .collect();
                if info.remaining(now) < SELF_SIGNED_RENEW {
                    Some("it expires within 30 days".to_owned())
                } else if !missing.is_empty() {
                    Some(format!(
                        "it does not name {}",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else {
                    return Ok((key, info, None));
                }
            }
            Err(e) => Some(format!("the stored one is unusable ({e})")),
        }
    } else {
        Some("there is none yet".to_owned())
    };
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "intercomd".into()),
    );
    dn.push(rcgen::DnType::OrganizationName, "intercomd door station");
    params.distinguished_name = dn;
    let start = time::OffsetDateTime::from(now) - time::Duration::days(1);
    params.not_before = start;
    params.not_after = start + time::Duration::days(SELF_SIGNED_DAYS);
    let key_pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(&key_path, key_pair.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    let (key, info) = load_pem(&cert_path, &key_path)?;
    Ok((key, info, why_new))
}

/// Logs the certificate in use, so a technician can compare its
/// fingerprint with what a phone shows.
pub fn log_certificate(what: &str, info: &CertInfo) {
    info!(
        fingerprint_sha256 = %info.fingerprint_sha256,
        spki_sha256 = %info.spki_sha256,
        not_after = info.not_after_unix(),
        names = %info.names.join(","),
        "hub certificate {what}: SHA-256 fingerprint {}",
        info.fingerprint_sha256
    );
}

/// Watches `cert` and `key` and puts a changed, valid pair into `store`.
/// A pair that does not load (half-written, mismatched) is logged and the
/// current certificate stays.
pub async fn watch_files(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
    cancel: CancellationToken,
) {
    let stamp = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.mtime(), m.mtime_nsec(), m.ino(), m.len())
        })
    };
    let mut seen = (stamp(&cert), stamp(&key));
    let mut failed_for: Option<(Option<_>, Option<_>)> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let now = (stamp(&cert), stamp(&key));
        if now == seen || failed_for.as_ref() == Some(&now) {
            continue;
        }
        match load_pem(&cert, &key) {
            Ok((k, info)) => {
                store.set(k);
                seen = now;
                failed_for = None;
                log_certificate("reloaded from disk", &info);
            }
            Err(e) => {
                // Certbot writes the chain and the key one after the other:
                // a mismatch may heal on the next check, so only say it once
                // per change.
                failed_for = Some(now);
                error!(error = %e, "hub certificate changed on disk but cannot be used; keeping the current one");
            }
        }
    }
}

/// The TLS side of the hub's main listener: each admitted connection is
/// handshaken in its own task (never on the accept path), within the
/// header-read timeout. ACME challenge handshakes end here.
#[derive(Clone)]
pub struct TlsAccept {
    acceptor: TlsAcceptor,
    timeout: Duration,
    failures: Arc<FailureLog>,
}

impl TlsAccept {
    pub fn new(config: Arc<ServerConfig>, timeout: Duration) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            timeout,
            failures: Arc::new(FailureLog::default()),
        }
    }

    /// The handshaken stream, or `None` when the handshake failed or timed
    /// out (logged, throttled per address) or was an ACME validation.
    pub async fn handshake<IO>(&self, io: IO, peer: SocketAddr) -> Option<TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.timeout, self.acceptor.accept(io)).await {
            Ok(Ok(tls)) => {
                if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
                    info!(%peer, "hub: ACME TLS-ALPN-01 validation connection answered");
                    return None;
                }
                Some(tls)
            }
            Ok(Err(e)) => {
                self.failures.note(peer, &e.to_string());
                None
            }
            Err(_) => {
                let why = format!(
                    "no handshake within {} ms (hub.header_read_timeout_ms)",
                    self.timeout.as_millis()
                );
                self.failures.note(peer, &why);
                None
            }
        }
    }
}

/// Handshake failures are normal (a phone that has not accepted the
/// self-signed certificate yet, scanners): one line per peer address per
/// minute at most, with the number left out.
#[derive(Default)]
struct FailureLog {
    last: std::sync::Mutex<HashMap<IpAddr, (tokio::time::Instant, u64)>>,
}

impl FailureLog {
    fn note(&self, peer: SocketAddr, reason: &str) {
        let now = tokio::time::Instant::now();
        let mut map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 4096 {
            map.retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let entry = map
            .entry(peer.ip())
            .or_insert((now - Duration::from_secs(3600), 0));
        if now.duration_since(entry.0) < Duration::from_secs(60) {
            entry.1 += 1;
            debug!(%peer, reason = %crate::logging::escape_peer_text(reason), "hub: TLS handshake failed");
            return;
        }
        let suppressed = entry.1;
        *entry = (now, 0);
        drop(map);
        info!(
            %peer,
            reason = %crate::logging::escape_peer_text(reason),
            suppressed,
            "hub: TLS handshake failed (a browser that has not accepted the hub's certificate says so here)"
        );
    }
}

/// This machine's host name.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim().to_owned();
    (!name.is_empty() && name != "(none)").then_some(name)
}

/// The addresses of this machine's interfaces (loopback included, IPv6
/// link-local left out: no certificate can name its zone).
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: the family tells which sockaddr type it points to.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 addresses are sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if (ip.segments()[0] & 0xffc0) != 0xfe80 {
                    out.push(IpAddr::V6(ip));
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("intercomd-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn self_signed_is_made_once_and_kept() {
        let dir = tmp("selfsigned");
        let names = vec!["door.test".to_owned(), "10.9.8.7".to_owned()];
        let now = SystemTime::now();
        let (_, a, why) = self_signed(&dir, &names, now).expect("made");
        assert_eq!(why.as_deref(), Some("there is none yet"));
        assert!(a.names.contains(&"door.test".to_owned()));
        assert!(a.names.contains(&"10.9.8.7".to_owned()));
        let (_, b, why) = self_signed(&dir, &names, now).expect("loaded");
        assert_eq!(why, None);
        assert_eq!(a.fingerprint_sha256, b.fingerprint_sha256);
        // Private: the directory 0700, the key 0600.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tls")), 0o700);
        assert_eq!(mode(&dir.join("tls/self-signed.key")), 0o600);
        // A new address makes a new certificate.
        let more = vec!["door.test".to_owned(), "10.9.8.8".to_owned()];
        let (_, c, why) = self_signed(&dir, &more, now).expect("remade");
        assert!(why.unwrap().contains("10.9.8.8"));
        assert_ne!(a.fingerprint_sha256, c.fingerprint_sha256);
        // Near its end: remade.
        let later = now + Duration::from_secs((SELF_SIGNED_DAYS as u64 - 20) * 86400);
        let (_, _, why) = self_signed(&dir, &more, later).expect("renewed");
        assert!(why.unwrap().contains("expires"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mismatched_and_broken_files_name_the_file() {
        let dir = tmp("files");
        let a = self_signed(&dir.join("a"), &["a.test".into()], SystemTime::now()).unwrap();
        let b = self_signed(&dir.join("b"), &["b.test".into()], SystemTime::now()).unwrap();
        drop((a, b));
        let cert = dir.join("a/tls/self-signed.crt");
        let key = dir.join("b/tls/self-signed.key");
        match load_pem(&cert, &key) {
            Err(TlsError::KeyMismatch { cert: c, key: k }) => {
                assert_eq!((c, k), (cert.clone(), key.clone()))
            }
            other => panic!("expected a key mismatch, got {other:?}"),
        }
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = load_pem(&junk, &key).unwrap_err().to_string();
        assert!(
            e.contains("junk.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = load_pem(&cert, &junk).unwrap_err().to_string();
        assert!(e.contains("junk.pem") && e.contains("private key"), "{e}");
        let e = load_pem(&dir.join("missing.pem"), &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unwritable_state_dir_is_named() {
        // A file where the directory should be.
        let dir = tmp("notadir");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("state");
        std::fs::write(&file, "").unwrap();
        let e = self_signed(&file, &["x.test".into()], SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("state directory") && e.contains("state"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_cover_loopback_and_extras() {
        let n = self_signed_names(&["door.example.net".into()]);
        assert!(n.contains(&"localhost".to_owned()));
        assert!(n.contains(&"127.0.0.1".to_owned()));
        assert!(n.contains(&"door.example.net".to_owned()));
    }
}
