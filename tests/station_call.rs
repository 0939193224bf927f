//! Integration: a whole door station (standalone hub, simulated hardware
//! and audio) on loopback, answered by a client written here with the
//! product's own media engine. Real sockets, real WebRTC, real Opus; the
//! audio is checked by content both ways.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use intercomd::audio::sim::{SimAudioSpec, SimSource, start_sim_audio};
use intercomd::daemon::{Running, start_station};
use intercomd::media::{self, MediaCommand, MediaEvent, MediaSettings, SdpKind};
use intercomd::signaling::protocol::{self, CallId, Candidate, ErrorCode, Message, Role};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Station {
    running: Running,
    stop: CancellationToken,
    cancel: CancellationToken,
    tracker: TaskTracker,
    dir: PathBuf,
}

impl Station {
    async fn start(name: &str) -> Station {
        // Show the station's log when a test fails (RUST_LOG to tune).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = std::env::temp_dir().join(format!("intercomd-it-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        for who in ["flat-1a", "flat-1b"] {
            std::fs::write(dir.join(who), format!("token-of-{who}-0123456789\n"))
                .expect("temp dir is writable");
        }
        let toml = format!(
            r#"
[hub]
listen = "127.0.0.1:0"
[[hub.answerers]]
id = "flat-1a"
token_file = "{d}/flat-1a"
groups = ["residents"]
[[hub.answerers]]
id = "flat-1b"
token_file = "{d}/flat-1b"
groups = ["residents"]
[ice]
bind_ips = ["127.0.0.1"]
[audio.sim]
source = "tone:600"
[hardware.sim]
control_listen = ""
stdin = false
"#,
            d = dir.display()
        );
        let settings = intercomd::config::load_from_strs(&[("test.toml", &toml)])
            .expect("test configuration is valid");
        let stop = CancellationToken::new();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let running = start_station(&settings, stop.clone(), cancel.clone(), &tracker)
            .await
            .expect("station starts");
        // Wait until the station's own signaling link is up.
        let mut status = running.status.clone();
        timeout(Duration::from_secs(10), async {
            loop {
                if status.borrow()["signaling"] == "up" {
                    break;
                }
                status.changed().await.expect("station alive");
            }
        })
        .await
        .expect("station connects to its hub");
        Station {
            running,
            stop,
            cancel,
            tracker,
            dir,
        }
    }

    fn url(&self) -> String {
        format!(
            "ws://{}/ws",
            self.running.hub_addr.expect("standalone has a hub")
        )
    }

    fn press(&self) {
        self.running
            .sim
            .as_ref()
            .expect("sim board")
            .press(None)
            .expect("button exists");
    }

    fn state(&self) -> serde_json::Value {
        self.running.status.borrow().clone()
    }

    async fn wait_state(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.state()["call"]["state"] == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("station never reached {want}: {}", self.state());
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        let _ = timeout(Duration::from_secs(5), self.cancel.cancelled()).await;
        self.cancel.cancel();
        let _ = timeout(Duration::from_secs(5), self.tracker.wait()).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn connect(url: &str, token: &str) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("hub reachable");
    send(
        &mut ws,
        &Message::Hello {
            v: 1,
            role: Role::Answerer,
            token: token.into(),
            name: None,
        },
    )
    .await;
    match recv(&mut ws).await {
        Message::Welcome { .. } => ws,
        m => panic!("expected welcome, got {m:?}"),
    }
}

async fn send(ws: &mut Socket, m: &Message) {
    ws.send(Ws::Text(m.to_json().into())).await.expect("send");
}

async fn recv(ws: &mut Socket) -> Message {
    loop {
        let f = timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("frame");
        if let Ws::Text(t) = f {
            return protocol::decode(t.as_str(), 1 << 20).expect("hub sends valid messages");
        }
    }
}

/// Receive until a message matches.
async fn recv_until(ws: &mut Socket, pred: impl Fn(&Message) -> bool) -> Message {
    for _ in 0..100 {
        let m = recv(ws).await;
        if pred(&m) {
            return m;
        }
    }
    panic!("no matching message in 100");
}

fn to_media(c: Candidate) -> media::IceCandidate {
    media::IceCandidate {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
    }
}

fn from_media(c: media::IceCandidate) -> Candidate {
    Candidate {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
    }
}

/// Answer a ringing call with the product's media engine playing 1000 Hz.
/// Returns when audio is established; the caller keeps the pieces alive.
struct Answerer {
    ws: Socket,
    call_id: CallId,
    media: media::MediaHandle,
    events: mpsc::Receiver<MediaEvent>,
    audio: intercomd::audio::sim::SimAudioHandle,
    cancel: CancellationToken,
}

impl Answerer {
    async fn answer(mut ws: Socket) -> Answerer {
        let call_id = match recv_until(&mut ws, |m| matches!(m, Message::Ring { .. })).await {
            Message::Ring { call_id, door, .. } => {
                assert_eq!(door.expect("ring names the door").name, "Front door");
                call_id
            }
            _ => unreachable!("filtered above"),
        };
        send(
            &mut ws,
            &Message::Accept {
                call_id: call_id.clone(),
            },
        )
        .await;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (ev_tx, events) = mpsc::channel(256);
        let settings = MediaSettings {
            udp_bind_ips: vec!["127.0.0.1".parse().expect("literal")],
            ..MediaSettings::default()
        };
        let media = media::spawn_media(settings, ev_tx, cancel.clone(), &tracker);
        let (ports, audio) =
            start_sim_audio(&SimAudioSpec::new(SimSource::Tone(1000.0)), cancel.clone())
                .expect("sim audio");
        media
            .try_send(MediaCommand::Start {
                call_id: call_id.to_string(),
                offerer: false,
                ice_servers: vec![],
                audio: ports,
            })
            .expect("media accepts");
        let mut a = Answerer {
            ws,
            call_id,
            media,
            events,
            audio,
            cancel,
        };
        a.pump_until_established().await;
        a
    }

    /// Relay signaling and media events until audio is established.
    async fn pump_until_established(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            tokio::select! {
                f = self.ws.next() => {
                    let Some(Ok(Ws::Text(t))) = f else { panic!("hub closed") };
                    match protocol::decode(t.as_str(), 1 << 20).expect("valid") {
                        Message::Offer { sdp, .. } => {
                            self.media.try_send(MediaCommand::RemoteDescription {
                                call_id: self.call_id.to_string(), kind: SdpKind::Offer, sdp,
                            }).expect("media accepts");
                        }
                        Message::Candidate { candidate, .. } => {
                            self.media.try_send(MediaCommand::RemoteCandidate {
                                call_id: self.call_id.to_string(), candidate: candidate.map(to_media),
                            }).expect("media accepts");
                        }
                        _ => {}
                    }
                }
                ev = self.events.recv() => match ev.expect("media alive") {
                    MediaEvent::LocalDescription { sdp, kind: SdpKind::Answer, .. } => {
                        send(&mut self.ws, &Message::Answer { call_id: self.call_id.clone(), sdp }).await;
                    }
                    MediaEvent::LocalCandidate { candidate, .. } => {
                        send(&mut self.ws, &Message::Candidate {
                            call_id: self.call_id.clone(), candidate: candidate.map(from_media),
                        }).await;
                    }
                    MediaEvent::AudioEstablished { .. } => return,
                    _ => {}
                },
                _ = tokio::time::sleep_until(deadline) => panic!("audio not established in 15 s"),
            }
        }
    }
}

async fn wait_freq(what: &str, f: impl Fn() -> Option<f32>, want: f32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        last = f();
        if let Some(hz) = last
            && (hz - want).abs() <= 30.0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: expected {want} Hz, last seen {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carries_audio_both_ways_and_hangs_up_from_either_side() {
    let st = Station::start("call").await;
    let ws = connect(&st.url(), "token-of-flat-1a-0123456789").await;
    st.press();
    let mut a = Answerer::answer(ws).await;
    st.wait_state("in_call").await;

    // Door → resident: the resident hears the door's 600 Hz.
    let audio = a.audio.clone();
    wait_freq(
        "resident hears",
        move || audio.played_dominant_frequency(),
        600.0,
    )
    .await;
    // Resident → door: the door's speaker plays 1000 Hz.
    wait_freq(
        "door hears",
        || {
            st.state()["audio"]["played_dominant_hz"]
                .as_f64()
                .map(|v| v as f32)
        },
        1000.0,
    )
    .await;

    // Hang-up from the resident.
    send(
        &mut a.ws,
        &Message::Hangup {
            call_id: a.call_id.clone(),
            reason: "normal".into(),
        },
    )
    .await;
    st.wait_state("ended").await;
    a.cancel.cancel();

    // Second call: hang-up from the door.
    let ws = connect(&st.url(), "token-of-flat-1a-0123456789").await;
    st.press();
    let mut a = Answerer::answer(ws).await;
    st.wait_state("in_call").await;
    st.running
        .sim
        .as_ref()
        .expect("sim")
        .hangup()
        .expect("accepted");
    match recv_until(&mut a.ws, |m| matches!(m, Message::Hangup { .. })).await {
        Message::Hangup { call_id, .. } => assert_eq!(call_id, a.call_id),
        _ => unreachable!("filtered above"),
    }
    st.wait_state("ended").await;
    a.cancel.cancel();
    st.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_the_resident_is_refused_and_the_station_carries_on() {
    let st = Station::start("bad").await;

    // Invalid candidates during a call: error replies, the call goes on.
    let ws = connect(&st.url(), "token-of-flat-1a-0123456789").await;
    st.press();
    let mut a = Answerer::answer(ws).await;
    st.wait_state("in_call").await;
    for bad in [
        "candidate:garbage",
        "candidate:1 1 udp x 1.2.3.4 5 typ host",
        "candidate:1 1 udp 100 not-an-address 5 typ host",
    ] {
        send(
            &mut a.ws,
            &Message::Candidate {
                call_id: a.call_id.clone(),
                candidate: Some(Candidate {
                    candidate: bad.into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                }),
            },
        )
        .await;
        match recv_until(&mut a.ws, |m| matches!(m, Message::Error { .. })).await {
            Message::Error { code, .. } => assert_eq!(code, ErrorCode::BadCandidate, "{bad:?}"),
            _ => unreachable!("filtered above"),
        }
    }
    // Out-of-state messages to the door: a second answer, a stray offer.
    send(
        &mut a.ws,
        &Message::Answer {
            call_id: a.call_id.clone(),
            sdp: "v=0".into(),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(st.state()["call"]["state"], "in_call");
    let audio = a.audio.clone();
    wait_freq(
        "resident still hears",
        move || audio.played_dominant_frequency(),
        600.0,
    )
    .await;
    send(
        &mut a.ws,
        &Message::Hangup {
            call_id: a.call_id.clone(),
            reason: "normal".into(),
        },
    )
    .await;
    st.wait_state("ended").await;
    a.cancel.cancel();

    // Invalid SDP as the answer: the door refuses it and ends the call.
    let mut ws = connect(&st.url(), "token-of-flat-1b-0123456789").await;
    st.press();
    let call_id = match recv_until(&mut ws, |m| matches!(m, Message::Ring { .. })).await {
        Message::Ring { call_id, .. } => call_id,
        _ => unreachable!("filtered above"),
    };
    send(
        &mut ws,
        &Message::Accept {
            call_id: call_id.clone(),
        },
    )
    .await;
    recv_until(&mut ws, |m| matches!(m, Message::Offer { .. })).await;
    send(
        &mut ws,
        &Message::Answer {
            call_id: call_id.clone(),
            sdp: "this is not SDP".into(),
        },
    )
    .await;
    match recv_until(&mut ws, |m| matches!(m, Message::Error { .. })).await {
        Message::Error { code, .. } => assert_eq!(code, ErrorCode::BadSdp),
        _ => unreachable!("filtered above"),
    }
    recv_until(&mut ws, |m| matches!(m, Message::Hangup { .. })).await;
    st.wait_state("ended").await;

    // And a good call still works afterwards.
    let ws = connect(&st.url(), "token-of-flat-1a-0123456789").await;
    st.press();
    let a = Answerer::answer(ws).await;
    st.wait_state("in_call").await;
    a.cancel.cancel();
    st.shutdown().await;
}
