//! Two media actors calling each other over 127.0.0.1 with simulated audio.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use intercomd::audio::sim::{SimAudioHandle, SimAudioSpec, SimSource, start_sim_audio};
use intercomd::audio::{AudioPorts, port_pair};
use intercomd::media::{
    IceCandidate, MdnsMode, MediaCommand, MediaEvent, MediaHandle, MediaSettings, MediaState,
    SdpKind, spawn_media,
};
use intercomd::signaling::protocol::CallId;
use tokio::sync::mpsc;

use crate::common::poll_until;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Log lines of the whole test binary, for checking the field phrases.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first and only subscriber");
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer lock").extend_from_slice(b);
        std::io::stderr().write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn loopback_settings(mdns: MdnsMode) -> MediaSettings {
    MediaSettings {
        // Both ends are webrtc-rs, which does not honour setup:active offers.
        offer_dtls_active: false,
        udp_bind_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        mdns,
        ..MediaSettings::default()
    }
}

struct Peer {
    media: MediaHandle,
    events: mpsc::Receiver<MediaEvent>,
}

fn peer(mdns: MdnsMode, cancel: &CancellationToken, tracker: &TaskTracker) -> Peer {
    let (tx, events) = mpsc::channel(256);
    let media = spawn_media(loopback_settings(mdns), tx, cancel.clone(), tracker);
    Peer { media, events }
}

fn sim(tone: f32, cancel: &CancellationToken) -> (AudioPorts, SimAudioHandle) {
    start_sim_audio(&SimAudioSpec::new(SimSource::Tone(tone)), cancel.clone())
        .expect("simulated audio starts")
}

#[derive(Default, Debug)]
struct Seen {
    established: Option<Duration>,
    setup_completed: bool,
    closed: bool,
    errors: Vec<String>,
    states: Vec<MediaState>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_actors_exchange_tones() {
    crate::common::run_alone!("two_actors_exchange_tones");
    let logs = logs();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut a = peer(MdnsMode::Disabled, &cancel, &tracker);
    let mut b = peer(MdnsMode::Disabled, &cancel, &tracker);
    let (a_ports, a_sim) = sim(600.0, &cancel);
    let (b_ports, b_sim) = sim(1000.0, &cancel);
    let call = CallId::new("call-1").expect("valid call id");

    let t0 = Instant::now();
    a.media
        .try_send(MediaCommand::Start {
            call_id: call.clone(),
            offerer: true,
            ice_servers: vec![],
            audio: a_ports,
        })
        .expect("queue start");
    b.media
        .try_send(MediaCommand::Start {
            call_id: call.clone(),
            offerer: false,
            ice_servers: vec![],
            audio: b_ports,
        })
        .expect("queue start");
    // A browser's hidden host candidate reaches B before anything else: it
    // must be queued, then skipped (mDNS off) without harming the call.
    b.media
        .try_send(MediaCommand::RemoteCandidate {
            call_id: call.clone(),
            candidate: Some(IceCandidate {
                candidate: "candidate:9 1 udp 2122260223 0b1a2c3d-0000-4000-8000-000000000000.local 54321 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            }),
        })
        .expect("queue candidate");

    // Router: descriptions are held back until at least one candidate has
    // been forwarded, so the pending queue is exercised on both sides.
    let mut held_offer: Option<String> = None;
    let mut held_answer: Option<String> = None;
    let (mut a_cands, mut b_cands) = (0, 0);
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    // Routed for 10 s at most: the checks below say what did not happen.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while sa.established.is_none() || sb.established.is_none() {
            tokio::select! {
                Some(ev) = a.events.recv() => match ev {
                    MediaEvent::LocalDescription { kind: SdpKind::Offer, sdp, .. } => held_offer = Some(sdp),
                    MediaEvent::LocalCandidate { candidate, .. } => {
                        if let Some(c) = &candidate {
                            assert_eq!(c.sdp_mid.as_deref(), Some("0"), "real mid, not empty");
                        }
                        b.media.try_send(MediaCommand::RemoteCandidate { call_id: call.clone(), candidate }).expect("route");
                        a_cands += 1;
                    }
                    MediaEvent::AudioEstablished { .. } => sa.established = Some(t0.elapsed()),
                    MediaEvent::AudioSetupCompleted { .. } => sa.setup_completed = true,
                    MediaEvent::State { state, .. } => sa.states.push(state),
                    MediaEvent::Error { message, .. } => sa.errors.push(message),
                    // The door-control data channel opens once SCTP is up.
                    MediaEvent::DoorChannelOpen { .. } => {}
                    other => panic!("unexpected event from A: {other:?}"),
                },
                Some(ev) = b.events.recv() => match ev {
                    MediaEvent::LocalDescription { kind: SdpKind::Answer, sdp, .. } => held_answer = Some(sdp),
                    MediaEvent::LocalCandidate { candidate, .. } => {
                        a.media.try_send(MediaCommand::RemoteCandidate { call_id: call.clone(), candidate }).expect("route");
                        b_cands += 1;
                    }
                    MediaEvent::AudioEstablished { .. } => sb.established = Some(t0.elapsed()),
                    MediaEvent::AudioSetupCompleted { .. } => sb.setup_completed = true,
                    MediaEvent::State { state, .. } => sb.states.push(state),
                    MediaEvent::Error { message, .. } => sb.errors.push(message),
                    MediaEvent::DoorChannelOpen { .. } => {}
                    other => panic!("unexpected event from B: {other:?}"),
                },
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            if a_cands > 0
                && let Some(sdp) = held_offer.take()
            {
                b.media
                    .try_send(MediaCommand::RemoteDescription {
                        call_id: call.clone(),
                        kind: SdpKind::Offer,
                        sdp,
                    })
                    .expect("route offer");
            }
            if b_cands > 0
                && let Some(sdp) = held_answer.take()
            {
                a.media
                    .try_send(MediaCommand::RemoteDescription {
                        call_id: call.clone(),
                        kind: SdpKind::Answer,
                        sdp,
                    })
                    .expect("route answer");
            }
        }
    })
    .await;
    let (ea, eb) = (
        sa.established.expect("A established audio"),
        sb.established.expect("B established audio"),
    );
    eprintln!("Start -> AudioEstablished: offerer {ea:?}, answerer {eb:?}");
    assert!(ea < Duration::from_secs(5) && eb < Duration::from_secs(5));
    assert!(
        sa.errors.is_empty() && sb.errors.is_empty(),
        "{:?} {:?}",
        sa.errors,
        sb.errors
    );

    // Mute in the middle must keep packets flowing: unmute again and play on.
    a.media
        .try_send(MediaCommand::SetMuted {
            call_id: call.clone(),
            muted: true,
        })
        .expect("mute");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.media
        .try_send(MediaCommand::SetMuted {
            call_id: call.clone(),
            muted: false,
        })
        .expect("unmute");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        a_sim.played_dominant_frequency(),
        Some(1000.0),
        "A hears B's tone"
    );
    assert_eq!(
        b_sim.played_dominant_frequency(),
        Some(600.0),
        "B hears A's tone"
    );
    assert!(a_sim.frames_played() > 100 && b_sim.frames_played() > 100);

    // Drain what is left so setup completion is seen.
    while let Ok(ev) = a.events.try_recv() {
        if matches!(ev, MediaEvent::AudioSetupCompleted { .. }) {
            sa.setup_completed = true;
        }
    }
    while let Ok(ev) = b.events.try_recv() {
        if matches!(ev, MediaEvent::AudioSetupCompleted { .. }) {
            sb.setup_completed = true;
        }
    }
    assert!(sa.setup_completed && sb.setup_completed);

    for (p, seen) in [(&mut a, &mut sa), (&mut b, &mut sb)] {
        p.media.try_stop(&call).expect("stop");
        if !seen.closed {
            let closed = poll_until(
                Duration::from_secs(3),
                async || {
                    matches!(
                        tokio::time::timeout(Duration::from_millis(100), p.events.recv()).await,
                        Ok(Some(MediaEvent::State {
                            state: MediaState::Closed,
                            ..
                        }))
                    )
                },
                |&closed| closed,
            )
            .await;
            seen.closed = closed.is_ok();
        }
        assert!(seen.closed, "Closed after Stop");
    }
    // Frames stop once the sessions are gone.
    let played = a_sim.frames_played();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a_sim.frames_played() - played < 5);

    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("media actors shut down");

    let text = String::from_utf8_lossy(&logs.lock().expect("log buffer lock")).into_owned();
    for phrase in [
        "pending ICE candidates",
        "Added remote ICE candidate",
        "AUDIO CONNECTION ESTABLISHED",
        "Audio setup for call completed",
        "mDNS candidate skipped",
    ] {
        assert!(text.contains(phrase), "log lacks {phrase:?}");
    }
    assert!(text.contains("call_id=call-1"));
}

async fn next_event(p: &mut Peer) -> Option<MediaEvent> {
    tokio::time::timeout(Duration::from_secs(3), p.events.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_errors_not_panics() {
    crate::common::run_alone!("bad_input_gives_errors_not_panics");
    logs();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut p = peer(MdnsMode::Disabled, &cancel, &tracker);
    let (ports, _device) = port_pair(8);
    let call = CallId::new("call-bad").expect("valid call id");
    p.media
        .try_send(MediaCommand::Start {
            call_id: call.clone(),
            offerer: false,
            ice_servers: vec![],
            audio: ports,
        })
        .expect("queue");

    p.media
        .try_send(MediaCommand::RemoteCandidate {
            call_id: call.clone(),
            candidate: Some(IceCandidate {
                candidate: "candidate:garbage".into(),
                sdp_mid: None,
                sdp_mline_index: None,
                username_fragment: None,
            }),
        })
        .expect("queue");
    match next_event(&mut p).await {
        Some(MediaEvent::Error { message, .. }) => {
            assert!(message.contains("candidate"), "{message}")
        }
        other => panic!("expected an error for a bad candidate, got {other:?}"),
    }

    p.media
        .try_send(MediaCommand::RemoteDescription {
            call_id: call.clone(),
            kind: SdpKind::Offer,
            sdp: "this is not SDP".into(),
        })
        .expect("queue");
    match next_event(&mut p).await {
        Some(MediaEvent::Error { message, .. }) => assert!(message.contains("Offer"), "{message}"),
        other => panic!("expected an error for bad SDP, got {other:?}"),
    }

    // Unknown calls: logged and ignored, no event, actor still alive.
    for cmd in [
        MediaCommand::Stop {
            call_id: CallId::new("nope").expect("valid call id"),
        },
        MediaCommand::SetMuted {
            call_id: CallId::new("nope").expect("valid call id"),
            muted: true,
        },
        MediaCommand::RemoteCandidate {
            call_id: CallId::new("nope").expect("valid call id"),
            candidate: None,
        },
    ] {
        p.media.try_send(cmd).expect("queue");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), p.events.recv())
            .await
            .is_err()
    );
    p.media.try_stop(&call).expect("queue");
    assert!(matches!(
        next_event(&mut p).await,
        Some(MediaEvent::State {
            state: MediaState::Closed,
            ..
        })
    ));
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("actor shuts down");
}

/// mDNS query mode needs a multicast route: it either builds, or the error
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_query_mode_builds_or_explains() {
    crate::common::run_alone!("mdns_query_mode_builds_or_explains");
    logs();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut p = peer(MdnsMode::QueryOnly, &cancel, &tracker);
    let (ports, _device) = port_pair(8);
    p.media
        .try_send(MediaCommand::Start {
            call_id: CallId::new("call-mdns").expect("valid call id"),
            offerer: true,
            ice_servers: vec![],
            audio: ports,
        })
        .expect("queue");
    match next_event(&mut p).await {
        Some(MediaEvent::LocalDescription {
            kind: SdpKind::Offer,
            ..
        }) => {}
        Some(MediaEvent::Error { message, .. }) => {
            assert!(message.contains("mDNS"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("actor shuts down");
}
