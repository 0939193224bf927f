//! ACME (RFC 8555) for a hub with a public DNS name: the certificate is
//! obtained and renewed with TLS-ALPN-01 (RFC 8737) answered on the hub's
//! own listener, so one port (443) is all the station exposes.
//!
//! The protocol client is `instant-acme` (maintained alongside rustls and
//! Quinn). It only speaks ACME: the challenge answer, storage and schedule
//! stay ours, so the challenge certificate goes through the same
//! [`CertStore`] that serves every handshake, and account and certificate
//! live in the state directory with the hub's other secrets. `rustls-acme`
//! was the alternative; it bundles its own certificate resolver, cache and
//! renewal loop, which would have meant a second resolver next to the
//! store (and so a second place deciding what a handshake gets) and a cache
//! layout of its own. Both run on rustls 0.23 with `ring`; `instant-acme`
//! is built here without its default `aws-lc-rs`.
//!
//! The layout in `<state_dir>/acme/`: `account.json` (the account's key and
//! URL, 0600, reused across restarts), `<first domain>.crt` (the chain) and
//! `<first domain>.key` (0600).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::tls::{self, CertInfo, CertStore, TlsError};

/// `[hub.tls.acme]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSettings {
    /// The CA's directory URL.
    pub directory_url: String,
    /// The names the certificate is for (public DNS names of this hub).
    pub domains: Vec<String>,
    /// `mailto:` contacts of the account.
    pub contact: Vec<String>,
    /// Extra trust anchor (PEM) for the ACME server's own HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Renew when the certificate has less than this left.
    pub renew_before: Duration,
    /// How often to look at the certificate's age (and retry after a
    /// failure).
    pub check_interval: Duration,
}

/// The first retry after a failure; doubled after each further failure up
/// to `check_interval`. Short enough that a CA that was briefly away is
/// tried again soon, long enough that a broken setup does not exhaust a
/// CA's failed-validation limit (Let's Encrypt: 5 an hour).
const FIRST_RETRY: Duration = Duration::from_secs(60);
/// One whole attempt (account, order, validation, issuance). A CA that
/// hangs must not stall renewal forever.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Opening a connection to the CA.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting for the CA to validate the challenges, then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));
/// The problem type of an account the CA no longer knows.
const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// Obtains and renews the certificate into `store` until `cancel`.
pub async fn run(
    settings: AcmeSettings,
    state_dir: PathBuf,
    store: Arc<CertStore>,
    cancel: CancellationToken,
) {
    let mut settings = settings;
    // Zero would spin; the config loader is expected to refuse it anyway.
    settings.check_interval = settings.check_interval.max(Duration::from_millis(100));
    let url = settings.directory_url.clone();
    let Some(first) = settings.domains.first() else {
        error!(directory_url = %url, "ACME: no domains configured; the hub refuses TLS handshakes (set [hub.tls.acme] domains)");
        cancel.cancelled().await;
        return;
    };
    let paths = Paths::new(&state_dir, first);
    let mut current = load_stored(&paths, &settings, &store);

    let mut client = Client {
        settings: &settings,
        paths: &paths,
        store: &store,
        account: None,
    };
    let mut failures: u32 = 0;
    let mut scheduled_for: Option<String> = None;
    loop {
        let now = SystemTime::now();
        let due = match &current {
            None => Some("there is no certificate yet".to_owned()),
            Some(info) => renewal_reason(info, &settings, now),
        };
        if let Some(why) = due {
            if failures == 0 {
                let meanwhile = if current.is_some() {
                    "; serving the current certificate meanwhile"
                } else {
                    ""
                };
                info!(directory_url = %url, domains = %settings.domains.join(","), "ACME: renewal needed: {why}{meanwhile}");
            }
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, client.obtain());
            let result = tokio::select! {
                r = attempt => r.unwrap_or_else(|_| Err(format!(
                    "no certificate within {} (the CA is slow or stopped answering)",
                    human(ATTEMPT_TIMEOUT)
                ))),
                _ = cancel.cancelled() => return,
            };
            match result {
                Ok((key, info)) => {
                    store.set(key);
                    tls::log_certificate("obtained by ACME", &info);
                    let lifetime = info.remaining(SystemTime::now());
                    if lifetime <= settings.renew_before {
                        // Every check would order again, and a public CA
                        // rate-limits that within days.
                        warn!(
                            directory_url = %url,
                            "ACME: the CA issues certificates for {}, not more than renew_before ({}): every check orders a new one; lower renew_before_days",
                            human(lifetime),
                            human(settings.renew_before)
                        );
                    }
                    current = Some(info);
                    failures = 0;
                    scheduled_for = None;
                }
                Err(reason) => {
                    failures = failures.saturating_add(1);
                    let retry = retry_delay(failures, settings.check_interval);
                    log_failure(&url, failures, retry, reason, current.as_ref(), &store);
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => continue,
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        }
        if let Some(info) = &current {
            // Said once per certificate, not at every check.
            if scheduled_for.as_deref() != Some(info.fingerprint_sha256.as_str()) {
                log_schedule(info, &settings);
                scheduled_for = Some(info.fingerprint_sha256.clone());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.check_interval) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// The certificate of the ACME state, if still usable: served at once.
fn load_stored(paths: &Paths, settings: &AcmeSettings, store: &CertStore) -> Option<CertInfo> {
    let url = &settings.directory_url;
    let mut current: Option<CertInfo> = None;
    match stored_certificate(paths, settings, SystemTime::now()) {
        Stored::Usable { key, info, renew } => {
            store.set(key);
            tls::log_certificate("loaded from the ACME state", &info);
            if renew.is_none() {
                info!(directory_url = %url, "ACME: the stored certificate is still fresh; no order now");
            }
            current = Some(info);
        }
        Stored::Missing(why) => {
            info!(directory_url = %url, "ACME: no usable stored certificate ({why})");
        }
    }
    if current.is_none() && store.current().is_none() {
        warn!(
            directory_url = %url,
            "ACME: no certificate yet: the hub refuses TLS handshakes until the CA issues one"
        );
    }
    current
}

/// A failed attempt, with what is served until the next.
fn log_failure(
    url: &str,
    failures: u32,
    retry: Duration,
    reason: String,
    current: Option<&CertInfo>,
    store: &CertStore,
) {
    let err = TlsError::Acme {
        url: url.to_owned(),
        reason,
    };
    let serving = match (current, store.current().is_some()) {
        (Some(info), _) => format!(
            "keeping the current certificate ({} left)",
            human(info.remaining(SystemTime::now()))
        ),
        (None, true) => "keeping the current certificate".to_owned(),
        (None, false) => {
            "no certificate yet: the hub refuses TLS handshakes until one arrives".to_owned()
        }
    };
    error!(
        directory_url = %url,
        failures,
        retry_in_s = retry.as_secs_f64(),
        "{err}; {serving}; next try in {}",
        human(retry)
    );
}

/// When the certificate `info` will be renewed.
fn log_schedule(info: &CertInfo, settings: &AcmeSettings) {
    let left = info.remaining(SystemTime::now());
    info!(
        directory_url = %settings.directory_url,
        not_after = info.not_after_unix(),
        "ACME: renewal scheduled in {} ({} left, renewing {} before the end; checked every {})",
        human(left.saturating_sub(settings.renew_before)),
        human(left),
        human(settings.renew_before),
        human(settings.check_interval)
    );
}

/// After `failures` failures in a row: `FIRST_RETRY` doubled each time,
/// never past `check_interval`.
fn retry_delay(failures: u32, check_interval: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    FIRST_RETRY.saturating_mul(1u32 << exp).min(check_interval)
}

/// Why `info` must be replaced now, if it must.
fn renewal_reason(info: &CertInfo, settings: &AcmeSettings, now: SystemTime) -> Option<String> {
    let missing: Vec<&str> = settings
        .domains
        .iter()
        .filter(|d| !info.names.iter().any(|n| n.eq_ignore_ascii_case(d)))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "the certificate does not name {}",
            missing.join(", ")
        ));
    }
    let left = info.remaining(now);
    (left < settings.renew_before).then(|| {
        format!(
            "the certificate has {} left, less than the {} before its end when it is renewed",
            human(left),
            human(settings.renew_before)
        )
    })
}

struct Paths {
    dir: PathBuf,
    account: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Paths {
    fn new(state_dir: &Path, first_domain: &str) -> Self {
        let dir = state_dir.join("acme");
        // A domain never holds '/', but the name comes from the config file.
        let base = first_domain.replace(['/', '\0'], "_");
        Self {
            account: dir.join("account.json"),
            cert: dir.join(format!("{base}.crt")),
            key: dir.join(format!("{base}.key")),
            dir,
        }
    }
}

/// The certificate kept in the state directory, as found at start.
enum Stored {
    /// Serve it now; `renew` says why it should be replaced, if it should.
    Usable {
        key: Arc<CertifiedKey>,
        info: CertInfo,
        renew: Option<String>,
    },
    /// Nothing to serve, and why.
    Missing(String),
}

fn stored_certificate(paths: &Paths, settings: &AcmeSettings, now: SystemTime) -> Stored {
    if !paths.cert.exists() || !paths.key.exists() {
        return Stored::Missing("there is none yet".into());
    }
    match tls::load_pem(&paths.cert, &paths.key) {
        Ok((_, info)) if info.remaining(now).is_zero() => {
            Stored::Missing("the stored one has expired".into())
        }
        Ok((key, info)) => {
            let renew = renewal_reason(&info, settings, now);
            Stored::Usable { key, info, renew }
        }
        Err(e) => Stored::Missing(format!("the stored one is unusable: {e}")),
    }
}

/// `account.json`: which CA the account belongs to, and its credentials
/// (the key among them: this file is a secret).
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory_url: String,
    account_url: String,
    credentials: AccountCredentials,
}

struct Client<'a> {
    settings: &'a AcmeSettings,
    paths: &'a Paths,
    store: &'a Arc<CertStore>,
    account: Option<Account>,
}

impl Client<'_> {
    /// One attempt: account, order, challenges, certificate. The error is
    /// the reason, for the log.
    async fn obtain(&mut self) -> Result<(Arc<CertifiedKey>, CertInfo), String> {
        tls::ensure_private_dir(&self.paths.dir).map_err(|e| e.to_string())?;
        let account = match &self.account {
            Some(a) => a.clone(),
            None => {
                let a = self.account().await?;
                self.account = Some(a.clone());
                a
            }
        };
        let result = order(&account, self.settings, self.store).await;
        if let Err(Failure::AccountGone(_)) = &result {
            // The CA forgot the account (a test CA restarted, or it was
            // deactivated): make a new one next time.
            self.account = None;
            let _ = std::fs::remove_file(&self.paths.account);
        }
        let (chain_pem, key_pem) = result.map_err(|f| f.to_string())?;
        let (key, info) = tls::certified_key(
            chain_pem.as_bytes(),
            &self.paths.cert,
            key_pem.as_bytes(),
            &self.paths.key,
        )
        .map_err(|e| format!("the CA's certificate is unusable: {e}"))?;
        // Key first: a crash between the two leaves a mismatched pair,
        // which the next start rejects and orders anew.
        tls::write_private(&self.paths.key, key_pem.as_bytes()).map_err(|e| e.to_string())?;
        tls::write_private(&self.paths.cert, chain_pem.as_bytes()).map_err(|e| e.to_string())?;
        Ok((key, info))
    }

    /// The stored account for this CA, or a new one (stored at once).
    async fn account(&self) -> Result<Account, String> {
        let url = &self.settings.directory_url;
        let path = &self.paths.account;
        let mut why_new = "there is none yet".to_owned();
        if path.exists() {
            let stored = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<StoredAccount>(&b).map_err(|e| e.to_string())
                });
            match stored {
                Ok(s) if s.directory_url == *url => {
                    let account = Account::builder_with_http(http_client(self.settings)?)
                        .from_credentials(s.credentials)
                        .await
                        .map_err(|e| format!("loading the stored account: {}", with_causes(&e)))?;
                    info!(
                        directory_url = %url,
                        account_url = %account.id(),
                        "ACME: account loaded from {}",
                        path.display()
                    );
                    return Ok(account);
                }
                Ok(s) => {
                    why_new = format!("the stored one is with another CA ({})", s.directory_url);
                }
                Err(e) => why_new = format!("{} is unusable ({e})", path.display()),
            }
        }
        let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
        let (account, credentials) = Account::builder_with_http(http_client(self.settings)?)
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                url.clone(),
                None,
            )
            .await
            .map_err(|e| format!("creating an account: {}", with_causes(&e)))?;
        let stored = StoredAccount {
            directory_url: url.clone(),
            account_url: account.id().to_owned(),
            credentials,
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(|e| e.to_string())?;
        tls::write_private(path, &json).map_err(|e| e.to_string())?;
        info!(
            directory_url = %url,
            account_url = %account.id(),
            contact = %self.settings.contact.join(","),
            "ACME: account created ({why_new}), kept in {}",
            path.display()
        );
        Ok(account)
    }
}

#[derive(Debug)]
enum Failure {
    AccountGone(String),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AccountGone(s) => write!(
                f,
                "{s} (the CA no longer knows the account; a new one is made next time)"
            ),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl Failure {
    fn acme(step: &str, e: instant_acme::Error) -> Self {
        let gone =
            matches!(&e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some(ACCOUNT_GONE));
        let text = format!("{step}: {}", with_causes(&e));
        if gone {
            Self::AccountGone(text)
        } else {
            Self::Other(text)
        }
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Self::Other(s)
    }
}

/// Clears the challenge answers it holds when dropped: after the order,
/// whether it succeeded, failed, timed out or was cancelled.
struct Challenges<'a> {
    store: &'a CertStore,
    names: Vec<String>,
}

impl Drop for Challenges<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            self.store.clear_challenge(n);
        }
    }
}

/// Places an order, answers its challenges, returns (chain PEM, key PEM).
async fn order(
    account: &Account,
    settings: &AcmeSettings,
    store: &CertStore,
) -> Result<(String, String), Failure> {
    let domains = settings.domains.join(",");
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| Failure::acme("placing the order", e))?;
    info!(directory_url = %settings.directory_url, %domains, order_url = %order.url(), "ACME: order placed for {domains}");

    let mut challenges = Challenges {
        store,
        names: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| Failure::acme("fetching an authorization", e))?;
        let name = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            // The CA remembers a recent validation of this name.
            AuthorizationStatus::Valid => {
                info!(domain = %name, "ACME: {name} is already authorized");
                continue;
            }
            other => {
                return Err(format!("the authorization for {name} is {other:?}").into());
            }
        }
        let Some(mut challenge) = authz.challenge(ChallengeType::TlsAlpn01) else {
            return Err(format!(
                "the CA offers no tls-alpn-01 challenge for {name} (only that one is answered here)"
            )
            .into());
        };
        let key = challenge_key(&name, challenge.key_authorization().digest().as_ref())
            .map_err(|e| format!("making the tls-alpn-01 certificate for {name}: {e}"))?;
        store.set_challenge(&name, key);
        challenges.names.push(name.clone());
        challenge.set_ready().await.map_err(|e| {
            Failure::acme(
                &format!("telling the CA the challenge for {name} is ready"),
                e,
            )
        })?;
        info!(domain = %name, "ACME: tls-alpn-01 challenge ready for {name}; the CA validates it on this listener");
    }

    let status = order
        .poll_ready(&POLL)
        .await
        .map_err(|e| Failure::acme("waiting for validation", e))?;
    if status != OrderStatus::Ready {
        return Err(Failure::Other(format!(
            "the order is {status:?}: {}",
            validation_errors(&mut order).await
        )));
    }
    info!(%domains, "ACME: challenges validated, order ready; finalizing");

    let key_pair =
        rcgen::KeyPair::generate().map_err(|e| format!("making the certificate key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(settings.domains.clone())
        .map_err(|e| format!("the domains do not make a CSR: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key_pair)
        .map_err(|e| format!("making the CSR: {e}"))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| Failure::acme("finalizing the order", e))?;
    let chain = order
        .poll_certificate(&POLL)
        .await
        .map_err(|e| Failure::acme("waiting for the certificate", e))?;
    info!(%domains, "ACME: order valid, certificate downloaded");
    drop(challenges);
    Ok((chain, key_pair.serialize_pem()))
}

/// What the CA said about each failed challenge of an invalid order.
async fn validation_errors(order: &mut instant_acme::Order) -> String {
    let mut out = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let Ok(mut authz) = authz else { continue };
        let name = authz.identifier().to_string();
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for c in &state.challenges {
            if let Some(e) = &c.error {
                out.push(format!("{name} ({:?}): {e}", c.r#type));
            }
        }
    }
    if out.is_empty() {
        "the CA gave no reason".into()
    } else {
        out.join("; ")
    }
}

/// The RFC 8737 answer for `domain`: a self-signed certificate naming only
/// that domain, with the critical acmeIdentifier extension holding the
/// SHA-256 of the key authorization.
pub fn challenge_key(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    if digest.len() != 32 {
        return Err(format!(
            "key authorization digest of {} bytes, not 32",
            digest.len()
        ));
    }
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key_pair = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key_pair).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    )))
}

/// The HTTPS client towards the CA: the system's trust store plus
/// `ca_file` (a private or test CA).
fn http_client(settings: &AcmeSettings) -> Result<Box<dyn HttpClient>, String> {
    let roots = super::tls::trust_roots(settings.ca_file.as_deref())
        .map_err(|e| format!("ca_file: {e}"))?;
    if roots.is_empty() {
        return Err(
            "the system has no trusted CA certificates (install ca-certificates, or set ca_file)"
                .into(),
        );
    }
    let config = Arc::unwrap_or_clone(super::tls::client_config(roots));
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client: hyper_util::client::legacy::Client<_, BodyWrapper<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    Ok(Box::new(client))
}

/// `e` and its causes: the HTTP client's own message ("client error
/// (Connect)") only says which step failed, its causes say why ("Connection
/// refused", "invalid peer certificate").
pub(super) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// "2 d 3 h", "5 min 2 s", "40 s": for log lines read by people.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {sec} s")
    } else if s > 0 {
        format!("{sec} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(domains: &[&str], renew_before: Duration) -> AcmeSettings {
        AcmeSettings {
            directory_url: "https://ca.invalid/dir".into(),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            contact: vec![],
            ca_file: None,
            renew_before,
            check_interval: Duration::from_secs(3600),
        }
    }

    #[test]
    fn challenge_certificate_names_the_domain_and_carries_the_digest() {
        use x509_parser::prelude::*;
        let digest: Vec<u8> = (0u8..32).collect();
        let key = challenge_key("door.example.net", &digest).expect("a 32-byte digest is accepted");
        let der = key.cert.first().expect("one certificate");
        let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("rcgen makes valid DER");
        let san = cert
            .subject_alternative_name()
            .expect("one SAN extension")
            .expect("a SAN is present");
        let names: Vec<_> = san.value.general_names.iter().collect();
        assert_eq!(names, vec![&GeneralName::DNSName("door.example.net")]);
        let oid = x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 1, 31])
            .expect("a valid OID");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid == oid)
            .expect("the acmeIdentifier extension is present");
        assert!(ext.critical, "RFC 8737 requires it critical");
        // DER OCTET STRING of the 32-byte digest.
        let mut expect = vec![0x04, 0x20];
        expect.extend_from_slice(&digest);
        assert_eq!(ext.value, expect.as_slice());
        assert!(challenge_key("x.test", &digest[..31]).is_err());
    }

    fn write_cert(paths: &Paths, names: &[&str], lifetime: Duration) {
        let now = SystemTime::now();
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("valid names");
        params.not_before = time::OffsetDateTime::from(now - Duration::from_secs(60));
        params.not_after = time::OffsetDateTime::from(now + lifetime);
        let key = rcgen::KeyPair::generate().expect("key generation works");
        let cert = params.self_signed(&key).expect("self-signing works");
        tls::ensure_private_dir(&paths.dir).expect("temp dir is writable");
        tls::write_private(&paths.key, key.serialize_pem().as_bytes()).expect("writable");
        tls::write_private(&paths.cert, cert.pem().as_bytes()).expect("writable");
    }

    #[test]
    fn stored_certificate_is_reused_only_while_fresh() {
        let dir =
            std::env::temp_dir().join(format!("intercomd-acme-stored-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let paths = Paths::new(&dir, "door.example.net");
        let day = Duration::from_secs(86400);
        let s = settings(&["door.example.net"], 30 * day);
        let now = SystemTime::now();
        assert!(
            matches!(stored_certificate(&paths, &s, now), Stored::Missing(w) if w.contains("none yet"))
        );

        // 60 days left, renew at 30: served, no order.
        write_cert(&paths, &["door.example.net"], 60 * day);
        match stored_certificate(&paths, &s, now) {
            Stored::Usable {
                renew: None, info, ..
            } => {
                assert!(info.names.contains(&"door.example.net".to_owned()))
            }
            _ => panic!("a fresh stored certificate is reused"),
        }
        // 10 days left: served meanwhile, renewal due.
        write_cert(&paths, &["door.example.net"], 10 * day);
        assert!(matches!(
            stored_certificate(&paths, &s, now),
            Stored::Usable { renew: Some(w), .. } if w.contains("left")
        ));
        // A name was added to the config: renewal due.
        write_cert(&paths, &["door.example.net"], 60 * day);
        let more = settings(&["door.example.net", "door2.example.net"], 30 * day);
        assert!(matches!(
            stored_certificate(&paths, &more, now),
            Stored::Usable { renew: Some(w), .. } if w.contains("door2.example.net")
        ));
        // Past its end: not served.
        assert!(matches!(
            stored_certificate(&paths, &s, now + 61 * day),
            Stored::Missing(w) if w.contains("expired")
        ));
        // Garbage on disk: ordered anew.
        std::fs::write(&paths.cert, "junk").expect("writable");
        assert!(
            matches!(stored_certificate(&paths, &s, now), Stored::Missing(w) if w.contains("unusable"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retries_back_off_up_to_the_check_interval() {
        let hour = Duration::from_secs(3600);
        assert_eq!(retry_delay(1, hour), FIRST_RETRY);
        assert_eq!(retry_delay(2, hour), FIRST_RETRY * 2);
        assert_eq!(retry_delay(3, hour), FIRST_RETRY * 4);
        assert_eq!(retry_delay(30, hour), hour);
        assert_eq!(
            retry_delay(1, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(90 * 86400 + 7200)), "90 d 2 h");
        assert_eq!(human(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(human(Duration::from_millis(300)), "300 ms");
    }
}
