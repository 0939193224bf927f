//! ACME against Debian's `pebble` (a test-only ACME server) on loopback:
//! a certificate obtained with TLS-ALPN-01 answered by the hub's own TLS
//! listener, served, renewed under an open connection, and the account
//! reused after a restart. Also: an unreachable CA is logged and retried.
//!
//! Pebble validates for real: it resolves the test domain through
//! `pebble-challtestsrv` (shipped in the same package) used only as a DNS
//! server that answers every A query with 127.0.0.1 and no AAAA (pebble
//! dials the first address it gets, IPv6 first), then opens a TLS
//! connection with ALPN `acme-tls/1` to the hub's port. Skipped with a
//! message when pebble is not installed (`apt-get install pebble`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intercomd::hub::acme::{self, AcmeSettings};
use intercomd::hub::tls::{self, CertInfo, CertStore};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

const DOMAIN: &str = "door.intercom.test";

// --- logs -----------------------------------------------------------------

/// Lines holding every one of `parts`.
fn lines_with(parts: &[&str]) -> Vec<String> {
    crate::common::captured_log()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_owned)
        .collect()
}

async fn wait_for<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    match crate::common::poll_until(limit, async || f().await, Option::is_some).await {
        Ok(Some(v)) => v,
        _ => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

// --- pebble ---------------------------------------------------------------

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("loopback is available")
        .port()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("intercomd-acme-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("the temp dir is writable");
    d
}

/// A child process killed when dropped (also when an assertion fails).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Pebble {
    directory_url: String,
    management: SocketAddr,
    /// Trust anchor of pebble's own HTTPS (the ACME API and management).
    https_ca: PathBuf,
    log: PathBuf,
    _procs: Vec<Proc>,
}

/// Pebble's HTTPS needs a certificate: the package ships none, so a
/// throwaway CA and a leaf for 127.0.0.1 are made here.
fn pebble_https_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).expect("no names is valid");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "intercomd test ACME server CA");
    let ca_key = rcgen::KeyPair::generate().expect("key generation works");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-signing works");
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("valid names");
    let leaf_key = rcgen::KeyPair::generate().expect("key generation works");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("the CA signs");
    let (ca_path, cert, key) = (
        dir.join("https-ca.pem"),
        dir.join("https.pem"),
        dir.join("https.key"),
    );
    std::fs::write(&ca_path, ca.pem()).expect("writable");
    std::fs::write(&cert, leaf.pem()).expect("writable");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("writable");
    (ca_path, cert, key)
}

async fn start_pebble(dir: &Path, hub_port: u16, validity_s: u64) -> Pebble {
    let (https_ca, cert, key) = pebble_https_cert(dir);
    let (api, mgmt, dns, dns_mgmt, http01) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert,
            "privateKey": key,
            // Only the TLS-ALPN-01 port matters: it is the hub's.
            "httpPort": http01,
            "tlsPort": hub_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_s,
        }
    });
    let config_path = dir.join("pebble-config.json");
    std::fs::write(&config_path, config.to_string()).expect("writable");
    let log = dir.join("pebble.log");
    let open_log = |p: &Path| std::fs::File::create(p).expect("writable");
    let dns_server = Command::new("pebble-challtestsrv")
        .args(["-dns01", &format!("127.0.0.1:{dns}")])
        .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .stdout(open_log(&dir.join("challtestsrv.log")))
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble-challtestsrv starts");
    let dns_server = Proc(dns_server);
    let pebble = Command::new("pebble")
        .args(["-config"])
        .arg(&config_path)
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        // Every order is validated anew (pebble otherwise reuses half the
        // authorizations), so a renewal also answers a challenge.
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(open_log(&log))
        .stderr(Stdio::null())
        .current_dir(dir)
        .spawn()
        .expect("pebble starts");
    let pebble = Proc(pebble);
    for port in [api, mgmt, dns_mgmt] {
        wait_for("pebble to listen", Duration::from_secs(10), async || {
            TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }
    Pebble {
        directory_url: format!("https://127.0.0.1:{api}/dir"),
        management: SocketAddr::from(([127, 0, 0, 1], mgmt)),
        https_ca,
        log,
        _procs: vec![pebble, dns_server],
    }
}

fn client_config(roots_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem) {
        roots
            .add(c.expect("PEM from pebble or rcgen"))
            .expect("a usable root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    let name = ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
    tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// One request on a kept-alive connection; returns the body.
async fn get(conn: &mut TlsStream<TcpStream>, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n");
    conn.write_all(req.as_bytes())
        .await
        .expect("the connection is open");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                    return text[end + 4..end + 4 + len].to_owned();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = conn
                .read(&mut chunk)
                .await
                .expect("the connection stays usable");
            assert!(n > 0, "the connection was closed; got so far: {text}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("a response within 5 s")
}

/// pebble's issuing root (made anew at each start).
async fn pebble_root(pebble: &Pebble) -> Vec<u8> {
    let ca = std::fs::read(&pebble.https_ca).expect("written above");
    let mut conn = tls_connect(client_config(&ca), pebble.management, "127.0.0.1")
        .await
        .expect("pebble's management endpoint answers");
    conn.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("the connection is open");
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut text))
        .await
        .expect("pebble answers within 5 s")
        .expect("pebble's answer is readable");
    let text = String::from_utf8_lossy(&text).into_owned();
    let pem = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(pem.contains("BEGIN CERTIFICATE"), "{text}");
    pem.as_bytes().to_vec()
}

/// The leaf the hub serves to a client that checks it against `roots`.
async fn served_leaf(config: &Arc<rustls::ClientConfig>, hub: SocketAddr) -> Option<CertInfo> {
    let conn = tls_connect(config.clone(), hub, DOMAIN).await.ok()?;
    let leaf = conn.get_ref().1.peer_certificates()?.first()?.clone();
    CertInfo::of(&leaf).ok()
}

/// The hub's listener: TLS from the store, a page to request.
/// Binds `port` (tokio sets SO_REUSEADDR, so a previous listener's
/// TIME_WAIT connections do not block it; a listener still closing may, for
/// a moment).
async fn start_hub(store: Arc<CertStore>, port: u16, cancel: CancellationToken) -> SocketAddr {
    let tcp = wait_for("the hub's port", Duration::from_secs(5), async || {
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    let tls = tls::TlsAccept::new(tls::server_config(store), Duration::from_secs(10));
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "door" }));
    let admission = intercomd::hub::conn::Admission::new(64, 64);
    let stop = cancel.clone();
    tokio::spawn(intercomd::hub::conn::accept_loop(
        tcp,
        "hub",
        admission,
        cancel,
        move |stream, peer, slot| {
            let (tls, app, stop) = (tls.clone(), app.clone(), stop.clone());
            tokio::spawn(async move {
                let _slot = slot;
                if let Some(s) = tls.handshake(stream, peer).await {
                    intercomd::hub::conn::serve_http(
                        s,
                        peer,
                        app,
                        Duration::from_secs(10),
                        true,
                        stop,
                    )
                    .await;
                }
            });
        },
    ));
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn settings(pebble: &Pebble, renew_before: Duration, check_interval: Duration) -> AcmeSettings {
    AcmeSettings {
        directory_url: pebble.directory_url.clone(),
        domains: vec![DOMAIN.to_owned()],
        contact: vec!["mailto:admin@intercom.test".to_owned()],
        ca_file: Some(pebble.https_ca.clone()),
        renew_before,
        check_interval,
    }
}

struct Running {
    store: Arc<CertStore>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start_acme(settings: AcmeSettings, state: &Path, store: Arc<CertStore>) -> Running {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(acme::run(
        settings,
        state.to_owned(),
        store.clone(),
        cancel.clone(),
    ));
    Running {
        store,
        cancel,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("acme::run stops within 5 s of cancel")
            .expect("acme::run does not panic");
    }
}

fn account_url_in(line: &str) -> String {
    line.split("account_url=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the account line names the account URL")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obtains_serves_renews_and_reuses_the_account() {
    crate::common::run_alone!("obtains_serves_renews_and_reuses_the_account");
    crate::common::capture_log("info");
    if !have("pebble") || !have("pebble-challtestsrv") {
        eprintln!("SKIPPED: pebble is not installed (apt-get install pebble)");
        return;
    }
    let dir = temp_dir("pebble");
    let state = dir.join("state");
    let hub_port = free_port();
    // An hour of validity; renewing 2 h before the end means every check
    // renews.
    let pebble = start_pebble(&dir, hub_port, 3600).await;
    let url = pebble.directory_url.clone();
    let hub_cancel = CancellationToken::new();

    // 1. First certificate, then renewals every 2 s.
    let t0 = Instant::now();
    let store1 = CertStore::new();
    let hub = start_hub(store1.clone(), hub_port, hub_cancel.clone()).await;
    let run1 = start_acme(
        settings(&pebble, Duration::from_secs(7200), Duration::from_secs(2)),
        &state,
        store1,
    );
    let roots = pebble_root(&pebble).await;
    let client = client_config(&roots);
    let first = wait_for(
        "the first certificate",
        Duration::from_secs(20),
        async || served_leaf(&client, hub).await,
    )
    .await;
    let obtained_in = t0.elapsed();
    assert!(first.names.iter().any(|n| n == DOMAIN), "{:?}", first.names);
    let created = lines_with(&["ACME: account created", &url]);
    assert_eq!(created.len(), 1, "{created:?}");
    let account_url = account_url_in(&created[0]);
    assert!(!lines_with(&["tls-alpn-01 challenge ready", DOMAIN]).is_empty());
    assert!(!lines_with(&["ACME TLS-ALPN-01 validation connection answered"]).is_empty());
    assert!(
        !lines_with(&[
            "hub certificate obtained by ACME",
            &first.fingerprint_sha256
        ])
        .is_empty()
    );
    // Kept private in the state directory.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: PathBuf| std::fs::metadata(p).expect("written").permissions().mode() & 0o777;
    assert_eq!(mode(state.join("acme")), 0o700);
    assert_eq!(mode(state.join("acme/account.json")), 0o600);
    assert_eq!(mode(state.join(format!("acme/{DOMAIN}.key"))), 0o600);

    // A connection opened on the first certificate...
    let mut open = tls_connect(client.clone(), hub, DOMAIN)
        .await
        .expect("the hub accepts a handshake");
    assert_eq!(get(&mut open, "/").await, "door");

    // ...the renewal swaps the certificate for new handshakes...
    let t1 = Instant::now();
    let renewed = wait_for("a renewal", Duration::from_secs(20), async || {
        served_leaf(&client, hub)
            .await
            .filter(|i| i.fingerprint_sha256 != first.fingerprint_sha256)
    })
    .await;
    let renewed_in = t1.elapsed();
    assert!(renewed.names.iter().any(|n| n == DOMAIN));

    // ...and the open connection goes on.
    assert_eq!(get(&mut open, "/").await, "door");
    let seen = open
        .get_ref()
        .1
        .peer_certificates()
        .expect("a handshaken connection")[0]
        .clone();
    assert_eq!(
        CertInfo::of(&seen).expect("parses").fingerprint_sha256,
        first.fingerprint_sha256,
        "the open connection keeps its certificate"
    );
    drop(open);
    run1.stop().await;

    // 2. Restart with a stored certificate that is still fresh: served at
    //    once, no order, no account needed.
    let orders_before = lines_with(&["ACME: order placed", &url]).len();
    let on_disk = tls::load_pem(
        &state.join(format!("acme/{DOMAIN}.crt")),
        &state.join(format!("acme/{DOMAIN}.key")),
    )
    .expect("the last certificate is stored")
    .1;
    let run2 = start_acme(
        settings(&pebble, Duration::from_secs(60), Duration::from_secs(60)),
        &state,
        CertStore::new(),
    );
    let served = wait_for(
        "the stored certificate",
        Duration::from_secs(2),
        async || run2.store.current(),
    )
    .await;
    assert_eq!(
        CertInfo::of(&served.cert[0])
            .expect("parses")
            .fingerprint_sha256,
        on_disk.fingerprint_sha256
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        lines_with(&["ACME: order placed", &url]).len(),
        orders_before
    );
    run2.stop().await;

    // 3. Restart with a renewal due: the stored account is loaded, not
    //    created.
    let hub_cancel3 = CancellationToken::new();
    hub_cancel.cancel();
    let store3 = CertStore::new();
    let hub3 = start_hub(store3.clone(), hub_port, hub_cancel3.clone()).await;
    let run3 = start_acme(
        settings(&pebble, Duration::from_secs(7200), Duration::from_secs(60)),
        &state,
        store3,
    );
    let loaded = wait_for("the account loaded", Duration::from_secs(20), async || {
        lines_with(&["ACME: account loaded", &url])
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(account_url_in(&loaded), account_url);
    let third = wait_for(
        "a certificate after the restart",
        Duration::from_secs(20),
        async || {
            served_leaf(&client, hub3)
                .await
                .filter(|i| i.fingerprint_sha256 != on_disk.fingerprint_sha256)
        },
    )
    .await;
    assert!(third.names.iter().any(|n| n == DOMAIN));
    assert_eq!(lines_with(&["ACME: account created", &url]).len(), 1);
    run3.stop().await;
    hub_cancel3.cancel();

    // Pebble saw one account only.
    let pebble_log = std::fs::read_to_string(&pebble.log).unwrap_or_default();
    assert!(
        pebble_log.contains("There are now 1 accounts in memory")
            && !pebble_log.contains("There are now 2 accounts"),
        "{pebble_log}"
    );
    assert!(
        !crate::common::captured_log().contains("-----BEGIN"),
        "no PEM (keys) in the logs"
    );
    eprintln!(
        "acme_pebble: first certificate in {obtained_in:.2?}, renewal in {renewed_in:.2?}; pebble log {} lines",
        pebble_log.lines().count()
    );
    let _ = std::io::stderr().flush();
    drop(pebble);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_ca_is_logged_and_retried() {
    crate::common::run_alone!("unreachable_ca_is_logged_and_retried");
    crate::common::capture_log("info");
    let dir = temp_dir("unreachable");
    let url = "https://127.0.0.1:1/dir";
    let run = start_acme(
        AcmeSettings {
            directory_url: url.to_owned(),
            domains: vec![DOMAIN.to_owned()],
            contact: vec![],
            ca_file: None,
            renew_before: Duration::from_secs(86400),
            check_interval: Duration::from_millis(300),
        },
        &dir,
        CertStore::new(),
    );
    let failures = wait_for("three failed tries", Duration::from_secs(10), async || {
        let l = lines_with(&["ACME with https://127.0.0.1:1/dir:", "next try in"]);
        (l.len() >= 3).then_some(l)
    })
    .await;
    assert!(
        failures[0].contains("refused") && failures[0].contains("refuses TLS handshakes"),
        "{}",
        failures[0]
    );
    assert!(!lines_with(&["no certificate yet", url]).is_empty());
    assert!(!run.task.is_finished(), "the task keeps running");
    assert!(run.store.current().is_none());
    run.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
