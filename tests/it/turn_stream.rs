//! TURN over TCP and TLS against a real coturn on loopback with UDP TURN
//! switched off: one media engine may only use relay candidates, so audio
//! can only flow through the stream bridge. Skipped (with a message) when
//! coturn or openssl is not installed; `make test` installs both.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use intercomd::audio::sim::{SimAudioSpec, SimSource, start_sim_audio};
use intercomd::media::{
    self, IceServer, MediaCommand, MediaEvent, MediaHandle, MediaSettings, SdpKind,
};
use intercomd::signaling::protocol::CallId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::common::{eventually, log_to_test_output};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Coturn {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// coturn with TCP and TLS listeners only (no UDP TURN, no DTLS).
fn coturn(tcp_port: u16, tls_port: u16) -> Coturn {
    let dir = std::env::temp_dir().join(format!(
        "intercomd-coturn-{}-{tcp_port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    // A private CA and a server certificate it signs: what a site with its
    // own TURN server would hand the station as `ice.turn_ca_file`.
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let script = format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
           -subj /CN=intercomd-test-ca -keyout ca.key -out ca.pem; \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -subj /CN=localhost -keyout key.pem -out req.csr; \
         printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf; \
         openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext.cnf -out cert.pem",
        d = dir.display()
    );
    let ok = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sh runs");
    assert!(ok.success(), "openssl made a CA and a server certificate");
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={tcp_port}"),
            &format!("--tls-listening-port={tls_port}"),
            "--no-udp",
            "--no-dtls",
            "--allow-loopback-peers",
            "--lt-cred-mech",
            "--user=door:s3cret-pass",
            "--realm=intercomd.test",
            "--fingerprint",
            "--no-cli",
            "--min-port=49200",
            "--max-port=49400",
            "--log-file=stdout",
            "--simple-log",
        ])
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--pkey={}", key.display()))
        .arg(format!("--pidfile={}", dir.join("pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver starts");
    Coturn { child, dir }
}

async fn wait_port(port: u16) {
    let _ = eventually(
        &format!("coturn listening on {port}"),
        Duration::from_secs(10),
        async || tokio::net::TcpStream::connect(("127.0.0.1", port)).await,
        Result::is_ok,
    )
    .await;
}

struct Side {
    handle: MediaHandle,
    events: mpsc::Receiver<MediaEvent>,
    audio: intercomd::audio::sim::SimAudioHandle,
}

fn side(
    settings: MediaSettings,
    tone: f32,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> (Side, intercomd::audio::AudioPorts) {
    let (tx, events) = mpsc::channel(256);
    let handle = media::spawn_media(settings, tx, cancel.clone(), tracker);
    let (ports, audio) = start_sim_audio(&SimAudioSpec::new(SimSource::Tone(tone)), cancel.clone())
        .expect("sim audio");
    (
        Side {
            handle,
            events,
            audio,
        },
        ports,
    )
}

/// One call through the given TURN URL; returns the relay candidates the
/// door side gathered.
async fn call_through(url: String, ca: Option<std::path::PathBuf>) -> Vec<String> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let door_settings = MediaSettings {
        // Both ends are webrtc-rs, which does not honour setup:active offers.
        offer_dtls_active: false,
        relay_only: true,
        turn_ca_file: ca,
        udp_bind_ips: vec!["127.0.0.1".parse().expect("literal")],
        ..MediaSettings::default()
    };
    let peer_settings = MediaSettings {
        udp_bind_ips: vec!["127.0.0.1".parse().expect("literal")],
        ..MediaSettings::default()
    };
    let (mut door, door_ports) = side(door_settings, 600.0, &cancel, &tracker);
    let (mut peer, peer_ports) = side(peer_settings, 1000.0, &cancel, &tracker);
    let id = CallId::new("turn-call").expect("valid call id");
    door.handle
        .try_send(MediaCommand::Start {
            call_id: id.clone(),
            offerer: true,
            ice_servers: vec![IceServer {
                urls: vec![url.clone()],
                username: Some("door".into()),
                credential: Some("s3cret-pass".into()),
            }],
            audio: door_ports,
        })
        .expect("door media accepts");
    peer.handle
        .try_send(MediaCommand::Start {
            call_id: id.clone(),
            offerer: false,
            ice_servers: vec![],
            audio: peer_ports,
        })
        .expect("peer media accepts");

    let mut door_candidates = Vec::new();
    let (mut door_up, mut peer_up) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(door_up && peer_up) {
        tokio::select! {
            ev = door.events.recv() => match ev.expect("door media alive") {
                MediaEvent::LocalDescription { sdp, .. } => {
                    peer.handle.try_send(MediaCommand::RemoteDescription { call_id: id.clone(), kind: SdpKind::Offer, sdp }).expect("accepts");
                }
                MediaEvent::LocalCandidate { candidate, .. } => {
                    if let Some(c) = &candidate { door_candidates.push(c.candidate.clone()); }
                    peer.handle.try_send(MediaCommand::RemoteCandidate { call_id: id.clone(), candidate }).expect("accepts");
                }
                MediaEvent::AudioEstablished { .. } => door_up = true,
                MediaEvent::Error { message, .. } => panic!("door media error: {message}"),
                _ => {}
            },
            ev = peer.events.recv() => match ev.expect("peer media alive") {
                MediaEvent::LocalDescription { sdp, .. } => {
                    door.handle.try_send(MediaCommand::RemoteDescription { call_id: id.clone(), kind: SdpKind::Answer, sdp }).expect("accepts");
                }
                MediaEvent::LocalCandidate { candidate, .. } => {
                    door.handle.try_send(MediaCommand::RemoteCandidate { call_id: id.clone(), candidate }).expect("accepts");
                }
                MediaEvent::AudioEstablished { .. } => peer_up = true,
                _ => {}
            },
            _ = tokio::time::sleep_until(deadline) => panic!("no audio through {url} in 20 s; door candidates: {door_candidates:?}"),
        }
    }
    // Audio by content, both ways, through the relay.
    let ok = |f: Option<f32>, want: f32| f.is_some_and(|f| (f - want).abs() <= 30.0);
    eventually(
        &format!("tones through {url} (peer heard, door heard)"),
        Duration::from_secs(10),
        async || {
            (
                peer.audio.played_dominant_frequency(),
                door.audio.played_dominant_frequency(),
            )
        },
        |&(a, b)| ok(a, 600.0) && ok(b, 1000.0),
    )
    .await;
    cancel.cancel();
    door_candidates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_flows_through_turn_over_tcp_and_tls_only() {
    crate::common::run_alone!("audio_flows_through_turn_over_tcp_and_tls_only");
    log_to_test_output();
    if !have("turnserver") || !have("openssl") {
        eprintln!("SKIPPED: coturn (turnserver) and openssl are needed");
        return;
    }
    let tcp_port = 34700 + (std::process::id() % 50) as u16;
    let tls_port = tcp_port + 100;
    let coturn = coturn(tcp_port, tls_port);
    wait_port(tcp_port).await;
    wait_port(tls_port).await;

    let cands = call_through(format!("turn:127.0.0.1:{tcp_port}?transport=tcp"), None).await;
    assert!(!cands.is_empty());
    assert!(
        cands.iter().all(|c| c.contains(" typ relay")),
        "relay only: {cands:?}"
    );

    let ca = coturn.dir.join("ca.pem");
    let cands = call_through(
        format!("turns:localhost:{tls_port}?transport=tcp"),
        Some(ca),
    )
    .await;
    assert!(
        cands.iter().all(|c| c.contains(" typ relay")),
        "relay only: {cands:?}"
    );
    drop(coturn);
}
