//! The hub over TLS: a station in connected mode joining a `wss://` hub
//! whose certificate comes from a CA given in its configuration, a whole
//! call through it, and a renewed certificate taking effect without a
//! restart or a dropped client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use intercomd::daemon;
use intercomd::signaling::protocol::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::station::{InProcessStation, LOOPBACK_MEDIA, hang_up};
use crate::common::*;

const DOOR_TOKEN: &str = "door-token-0123456789abcdef";
const FLAT_TOKEN: &str = "flat-token-0123456789abcdef";

/// A test CA and a hub certificate it signed, written as PEM files.
struct Pki {
    dir: PathBuf,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "intercomd test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(
            params,
            rcgen::KeyPair::generate().expect("key generation works"),
        )
        .expect("CA certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("temp dir is writable");
        Pki {
            dir: dir.to_owned(),
            ca,
        }
    }

    /// Issue a certificate for the hub into hub.pem / hub.key; returns
    /// its DER.
    fn issue(&self) -> Vec<u8> {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("valid names");
        let key = rcgen::KeyPair::generate().expect("key generation works");
        let cert = params.signed_by(&key, &self.ca).expect("signed");
        // The key first, like certbot: the watcher must not take a
        // mismatched pair in between.
        std::fs::write(self.dir.join("hub.key.new"), key.serialize_pem()).expect("writable");
        std::fs::write(self.dir.join("hub.pem.new"), cert.pem()).expect("writable");
        std::fs::rename(self.dir.join("hub.key.new"), self.dir.join("hub.key")).expect("rename");
        std::fs::rename(self.dir.join("hub.pem.new"), self.dir.join("hub.pem")).expect("rename");
        cert.der().to_vec()
    }

    fn trust(&self) -> Arc<rustls::ClientConfig> {
        intercomd::signaling::client::tls_config(Some(&self.dir.join("ca.pem")))
            .expect("the test CA loads")
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("intercomd-hubtls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    crate::common::write_secret(&dir.join("door"), &format!("{DOOR_TOKEN}\n"));
    crate::common::write_secret(&dir.join("flat"), &format!("{FLAT_TOKEN}\n"));
    dir
}

/// A hub alone (as `intercomd hub` runs it): `extra` goes into `[hub]`,
/// `tls` is its `[hub.tls]` table.
async fn start_hub_with(
    dir: &Path,
    extra: &str,
    tls: &str,
) -> (daemon::StartedHub, CancellationToken) {
    let toml = format!(
        r#"
[hub]
listen = "127.0.0.1:0"
state_dir = "{d}/state"
{extra}
[hub.tls]
{tls}
{door}{flat}"#,
        d = dir.display(),
        door = front_door_entry(&dir.join("door")),
        flat = answerer_entry("flat-1a", None, &dir.join("flat"), "residents"),
    );
    let settings = intercomd::config::load_from_strs(&[("hub.toml", &toml)])
        .expect("hub configuration is valid");
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let hs = daemon::hub_settings(&settings).expect("tokens readable");
    let hub = daemon::start_hub(&settings, hs, false, &cancel, &tracker)
        .await
        .expect("hub starts");
    (hub, cancel)
}

/// HTTPS/WSS from the PEM files `Pki` writes.
async fn start_hub(dir: &Path, reload_ms: u64) -> (daemon::StartedHub, CancellationToken) {
    let tls = format!(
        "mode = \"files\"\ncert_file = \"{d}/hub.pem\"\nkey_file = \"{d}/hub.key\"\nreload_check_ms = {reload_ms}\n",
        d = dir.display()
    );
    start_hub_with(dir, "", &tls).await
}

async fn start_door(dir: &Path, url: &str, ca: Option<&Path>) -> InProcessStation {
    let ca = ca
        .map(|p| format!("ca_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    let toml = format!(
        r#"
[station]
control_socket = ""
[signaling]
mode = "hub"
url = "{url}"
token_file = "{d}/door"
reconnect_initial_ms = 200
reconnect_max_ms = 500
{ca}
{LOOPBACK_MEDIA}[hardware.sim]
control_listen = ""
stdin = false
"#,
        d = dir.display()
    );
    InProcessStation::start("door.toml", &toml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_joins_a_wss_hub_trusting_its_configured_ca_and_completes_a_call() {
    crate::common::run_alone!(
        "a_station_joins_a_wss_hub_trusting_its_configured_ca_and_completes_a_call"
    );
    log_to_test_output();
    let dir = temp_dir("call");
    let pki = Pki::new(&dir);
    pki.issue();
    let (hub, hub_cancel) = start_hub(&dir, 10_000).await;
    assert!(hub.tls.is_some(), "the hub serves TLS");
    let url = format!("wss://localhost:{}/ws", hub.addr.port());

    // Without the CA the station cannot trust the hub and never joins.
    let untrusting = start_door(&dir, &url, None).await;
    assert!(
        !untrusting
            .wait("untrusting station", |s| s["signaling"] == "up", 2)
            .await,
        "a hub certificate from an unknown CA must be refused"
    );
    untrusting.shutdown().await;

    let st = start_door(&dir, &url, Some(&dir.join("ca.pem"))).await;
    assert!(
        st.wait("station", |s| s["signaling"] == "up", 10).await,
        "the station joins the wss:// hub"
    );
    let ws = connect_with(&url, FLAT_TOKEN, Some(pki.trust())).await;
    st.running
        .sim
        .as_ref()
        .expect("sim board")
        .press(None)
        .expect("button exists");
    let mut a = Answerer::answer(ws).await;
    assert!(
        st.wait("in call", |s| s["call"]["state"] == "in_call", 10)
            .await
    );
    st.audio_both_ways(&a).await;
    let r = a.door(r#"{"type":"open","nonce":"tls-1"}"#).await;
    assert_eq!(r["granted"], true, "{r}");
    hang_up(&mut a).await;
    assert!(
        st.wait(
            "ended",
            |s| s["call"]["state"] == "ended" || s["call"]["state"] == "idle",
            10
        )
        .await
    );
    a.cancel.cancel();
    st.shutdown().await;
    hub_cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The certificate a fresh TLS connection to `port` is served.
async fn served_certificate(port: u16, trust: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("hub reachable");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("valid name");
    let tls = tokio_rustls::TlsConnector::from(trust)
        .connect(name, tcp)
        .await
        .expect("handshake with the hub");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the hub sends a certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_files_are_served_without_a_restart_or_a_dropped_client() {
    crate::common::run_alone!("renewed_files_are_served_without_a_restart_or_a_dropped_client");
    log_to_test_output();
    let dir = temp_dir("reload");
    let pki = Pki::new(&dir);
    let first = pki.issue();
    let (hub, hub_cancel) = start_hub(&dir, 100).await;
    let port = hub.addr.port();
    assert_eq!(served_certificate(port, pki.trust()).await, first);
    let url = format!("wss://localhost:{port}/ws");
    let mut ws = connect_with(&url, FLAT_TOKEN, Some(pki.trust())).await;

    // Broken files (a half-finished renewal): the current certificate stays.
    std::fs::write(
        dir.join("hub.pem"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .expect("writable");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(served_certificate(port, pki.trust()).await, first);

    let second = pki.issue();
    assert_ne!(first, second);
    poll_until(
        Duration::from_secs(5),
        async || served_certificate(port, pki.trust()).await,
        |served| *served == second,
    )
    .await
    .unwrap_or_else(|_| panic!("the renewed certificate is not served"));
    // The client connected before the renewal still talks to the hub: a
    // message the hub must answer (an unknown call) gets its error.
    send(
        &mut ws,
        &Message::Accept {
            call_id: intercomd::signaling::protocol::CallId::new("no-such-call").expect("valid id"),
        },
    )
    .await;
    match recv_until(&mut ws, |m| matches!(m, Message::Error { .. })).await {
        Message::Error { .. } => {}
        _ => unreachable!("filtered above"),
    }
    hub_cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hub with a self-signed certificate and a plain listener that only
/// redirects to HTTPS.
async fn start_self_signed_hub(
    dir: &Path,
) -> (daemon::StartedHub, std::net::SocketAddr, CancellationToken) {
    let redirect = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("loopback is available");
    let extra = format!("redirect_listen = \"{redirect}\"");
    let (hub, cancel) = start_hub_with(dir, &extra, "mode = \"self_signed\"").await;
    (hub, redirect, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_hub_is_pinned_through_ca_file_and_plain_http_is_redirected() {
    crate::common::run_alone!(
        "a_self_signed_hub_is_pinned_through_ca_file_and_plain_http_is_redirected"
    );
    log_to_test_output();
    let dir = temp_dir("selfsigned");
    let (hub, redirect, hub_cancel) = start_self_signed_hub(&dir).await;
    let port = hub.addr.port();
    let cert = dir.join("state/tls/self-signed.crt");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).expect("exists").permissions().mode() & 0o777
    };
    assert_eq!(mode(&dir.join("state")), 0o700);
    assert_eq!(mode(&dir.join("state/tls/self-signed.key")), 0o600);

    // The certificate itself, given as the CA, pins it (what the docs tell
    // an installer to do for a station joining a self-signed hub).
    let pinned = intercomd::signaling::client::tls_config(Some(&cert)).expect("loads");
    let served = served_certificate(port, pinned.clone()).await;
    let der = rustls::pki_types::CertificateDer::from(served.clone());
    let info = intercomd::hub::tls::CertInfo::of(&der).expect("parses");
    assert!(
        info.names.contains(&"localhost".to_owned()),
        "{:?}",
        info.names
    );
    assert!(
        info.names.contains(&"127.0.0.1".to_owned()),
        "{:?}",
        info.names
    );
    let url = format!("wss://localhost:{port}/ws");
    let st = start_door(&dir, &url, Some(&cert)).await;
    assert!(
        st.wait("station", |s| s["signaling"] == "up", 10).await,
        "the station joins the self-signed hub through ca_file"
    );
    st.shutdown().await;

    // Plain HTTP on the redirect listener: sent to the same path on HTTPS.
    let (status, _) = tokio::task::spawn_blocking(move || http(redirect, "GET", "/?x=1"))
        .await
        .expect("joined")
        .expect("the redirect listener answers");
    assert_eq!(status, 308);
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(redirect)?;
        write!(
            s,
            // A name of this host: the hub refuses others (421).
            "GET /a?b=1 HTTP/1.1\r\nHost: localhost:8080\r\nConnection: close\r\n\r\n"
        )?;
        let mut t = String::new();
        s.read_to_string(&mut t)?;
        Ok::<_, std::io::Error>(t)
    })
    .await
    .expect("joined")
    .expect("read");
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("location: https://localhost:{port}/a?b=1")),
        "{text}"
    );
    hub_cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
