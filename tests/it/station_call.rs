//! Integration: a whole door station (standalone hub, simulated hardware
//! and audio) on loopback, answered by a client written here with the
//! product's own media engine. Real sockets, real WebRTC, real Opus; the
//! audio is checked by content both ways.

use std::time::Duration;

use futures_util::SinkExt;
use intercomd::signaling::protocol::{Candidate, ErrorCode, Message};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_util::sync::CancellationToken;

use crate::common::station::{InProcessStation, StationConfig, hang_up};
use crate::common::*;

const FLAT_1A: &str = "token-of-flat-1a-0123456789";
const FLAT_1B: &str = "token-of-flat-1b-0123456789";

/// The station of these tests: standalone, its hub on loopback with two
/// residents, simulated board and audio (600 Hz at the door).
struct Station(InProcessStation);

impl std::ops::Deref for Station {
    type Target = InProcessStation;
    fn deref(&self) -> &InProcessStation {
        &self.0
    }
}

impl Station {
    async fn start(name: &str) -> Station {
        Station::start_with(name, "").await
    }

    /// Start with `extra` TOML appended to the test configuration.
    async fn start_with(name: &str, extra: &str) -> Station {
        // Kept for the tests that read the log, shown when a test fails
        // (RUST_LOG to tune).
        capture_log(
            &std::env::var("RUST_LOG").unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        );
        let dir = std::env::temp_dir().join(format!("intercomd-it-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        crate::common::write_secret(&dir.join("care"), "token-of-care-0123456789\n");
        let toml = StationConfig::new(&dir)
            .answerer("flat-1a", FLAT_1A)
            .answerer("flat-1b", FLAT_1B)
            .extra(&extra.replace("{DIR}", &dir.display().to_string()))
            .toml();
        let st = InProcessStation::start("test.toml", &toml)
            .await
            .owning(dir);
        Station(st.signaling_up().await)
    }

    /// The resident hangs up normally; the station ends the call and the
    /// resident's media stops.
    async fn resident_hangs_up(&self, a: &mut Answerer) {
        hang_up(a).await;
        self.wait_state("ended").await;
        a.cancel.cancel();
    }

    /// The station ended the call: the resident is told (a hang-up for its
    /// call), the station reaches `state` and the resident's media stops.
    async fn resident_told_it_ended(&self, a: &mut Answerer, state: &str) {
        match recv_until(&mut a.resident.ws, |m| matches!(m, Message::Hangup { .. })).await {
            Message::Hangup { call_id, .. } => assert_eq!(call_id, a.call_id),
            _ => unreachable!("filtered above"),
        }
        self.wait_state(state).await;
        a.cancel.cancel();
    }

    async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carries_audio_both_ways_and_hangs_up_from_either_side() {
    crate::common::run_alone!("a_call_carries_audio_both_ways_and_hangs_up_from_either_side");
    let st = Station::start("call").await;
    let mut a = st.answered_call(FLAT_1A).await;

    // The resident hears the door's 600 Hz, the door's speaker plays the
    // resident's 1000 Hz.
    st.audio_both_ways(&a).await;

    // Hang-up from the resident.
    st.resident_hangs_up(&mut a).await;

    // Second call: hang-up from the door.
    let mut a = st.answered_call(FLAT_1A).await;
    st.running
        .sim
        .as_ref()
        .expect("sim")
        .hangup()
        .expect("accepted");
    st.resident_told_it_ended(&mut a, "ended").await;
    st.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_the_resident_is_refused_and_the_station_carries_on() {
    crate::common::run_alone!("bad_input_from_the_resident_is_refused_and_the_station_carries_on");
    let st = Station::start("bad").await;

    // Invalid candidates during a call: error replies, the call goes on.
    let mut a = st.answered_call(FLAT_1A).await;
    for bad in [
        "candidate:garbage",
        "candidate:1 1 udp x 1.2.3.4 5 typ host",
        "candidate:1 1 udp 100 not-an-address 5 typ host",
    ] {
        send(
            &mut a.resident.ws,
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
        match recv_until(&mut a.resident.ws, |m| matches!(m, Message::Error { .. })).await {
            Message::Error { code, .. } => assert_eq!(code, ErrorCode::BadCandidate, "{bad:?}"),
            _ => unreachable!("filtered above"),
        }
    }
    // Out-of-state messages to the door: a second answer, a stray offer.
    send(
        &mut a.resident.ws,
        &Message::Answer {
            call_id: a.call_id.clone(),
            sdp: "v=0".into(),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(st.state().await["call"]["state"], "in_call");
    a.wait_hears("resident still hears", 600.0).await;
    st.resident_hangs_up(&mut a).await;

    // Invalid SDP as the answer: the door refuses it and ends the call.
    let mut ws = connect(&st.url(), FLAT_1B).await;
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
    let a = st.answered_call(FLAT_1A).await;
    a.cancel.cancel();
    st.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resident_opens_the_door_over_the_data_channel_and_nothing_else_does() {
    crate::common::run_alone!(
        "the_resident_opens_the_door_over_the_data_channel_and_nothing_else_does"
    );
    let st = Station::start_with(
        "door",
        "[door]\npulse_ms = 700\nremote_open_interval_ms = 1000\n",
    )
    .await;
    let sim = st.running.sim.clone().expect("sim board");
    assert_eq!(
        sim.relay_writes().first(),
        Some(&false),
        "the relay is de-energised first"
    );
    let mut a = st.answered_call(FLAT_1A).await;

    let r = a.door(r#"{"type":"open","nonce":"n-1"}"#).await;
    assert_eq!(
        r,
        serde_json::json!({"type":"open_result","nonce":"n-1","granted":true,"reason":null,"pulse_ms":700})
    );
    assert_eq!(sim.relay_energised(), Some(true));
    // The status snapshot and LEDs follow right after the reply.
    eventually(
        "the door unlocked and the status LED slow-blinking (state, LED)",
        Duration::from_secs(2),
        async || (st.state().await, sim.led("status").map(|l| l.pattern)),
        |(state, led)| {
            state["door"]["unlocked"] == true
                && *led == Some(intercomd::door::indication::LedPattern::SlowBlink)
        },
    )
    .await;
    // A second click within the rate limit.
    let r = a.door(r#"{"type":"open","nonce":"n-2"}"#).await;
    assert_eq!(r["granted"], false);
    assert_eq!(r["reason"], "rate_limited");
    // The pulse ends by itself.
    eventually(
        "the relay de-energised",
        Duration::from_secs(3),
        async || sim.relay_energised(),
        |r| *r == Some(false),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A replayed nonce, then junk: refused with reasons.
    let r = a.door(r#"{"type":"open","nonce":"n-1"}"#).await;
    assert_eq!(
        (r["granted"].clone(), r["reason"].clone()),
        (false.into(), "replay".into())
    );
    let r = a.door(r#"{"type":"launch"}"#).await;
    assert_eq!(r["reason"], "bad_request");
    assert_eq!(sim.relay_energised(), Some(false));

    // Forged over signaling: refused by the hub, the relay untouched.
    let forged = format!(
        r#"{{"type":"open","call_id":"{}","nonce":"n-9"}}"#,
        a.call_id
    );
    a.ws.send(Ws::Text(forged.into())).await.expect("send");
    match recv_until(&mut a.resident.ws, |m| matches!(m, Message::Error { .. })).await {
        Message::Error { code, .. } => assert_eq!(code, ErrorCode::NotPermitted),
        _ => unreachable!("filtered above"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.relay_energised(), Some(false));
    assert_eq!(st.state().await["call"]["state"], "in_call");

    st.resident_hangs_up(&mut a).await;
    st.shutdown().await;
    assert_eq!(sim.relay_writes().last(), Some(&false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_buttons_ring_two_groups_and_a_long_press_hangs_up() {
    crate::common::run_alone!("two_buttons_ring_two_groups_and_a_long_press_hangs_up");
    let st = Station::start_with(
        "buttons",
        r#"
[door]
long_press_ms = 600

[[buttons]]
name = "flats"
group = "residents"

[[buttons]]
name = "caretaker"
group = "caretaker"

[[hub.answerers]]
id = "care"
token_file = "{DIR}/care"
groups = ["caretaker"]
"#,
    )
    .await;
    let sim = st.running.sim.clone().expect("sim board");
    let mut flat = connect(&st.url(), FLAT_1A).await;
    let care = connect(&st.url(), "token-of-care-0123456789").await;

    // The caretaker button rings the caretaker only.
    sim.press(Some("caretaker")).expect("button exists");
    let mut a = Answerer::answer(care).await;
    st.wait_state("in_call").await;
    assert_eq!(st.state().await["call"]["answerer"], "care");

    // A short press during the call does nothing; a long one hangs up.
    sim.press_for(Some("caretaker"), Duration::from_millis(100))
        .await
        .expect("press");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(st.state().await["call"]["state"], "in_call");
    sim.press_for(Some("caretaker"), Duration::from_millis(900))
        .await
        .expect("press");
    st.resident_told_it_ended(&mut a, "idle").await;

    // The other button rings the residents, and the flat was never rung
    // for the caretaker's call.
    sim.press(Some("flats")).expect("button exists");
    match recv_until(&mut flat, |m| matches!(m, Message::Ring { .. })).await {
        Message::Ring { group, call_id, .. } => {
            assert_eq!(group, "residents");
            assert_ne!(call_id, a.call_id);
        }
        _ => unreachable!("filtered above"),
    }
    st.wait_state("ringing").await;
    assert_eq!(
        sim.led("status").map(|l| l.pattern),
        Some(intercomd::door::indication::LedPattern::SlowBlink)
    );
    st.shutdown().await;
}

/// Plays a headset on the simulated Bluetooth adapter: its service level
/// connection comes up, the station asks for the SCO link once the call is
/// answered, and the test hands it one. With CVSD the link is made of frame
/// channels; with mSBC it is the product's voice bridge over a socket pair,
/// the headset's end coding and decoding H2-framed mSBC at 16 kHz as a
/// real wide band headset does. Records what the headset's speaker
/// receives; its microphone plays `hz`.
struct Headset {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    heard: std::sync::Arc<std::sync::Mutex<Vec<i16>>>,
    /// The sample rate of `heard`.
    rate: u32,
}

impl Headset {
    async fn connect_audio(bt: &intercomd::bt::sim::SimBt, hz: f32) -> Headset {
        Headset::connect_audio_with(bt, hz, intercomd::bt::Codec::Cvsd).await
    }

    async fn connect_audio_with(
        bt: &intercomd::bt::sim::SimBt,
        hz: f32,
        codec: intercomd::bt::Codec,
    ) -> Headset {
        use intercomd::audio::router::HeadsetPorts;
        use intercomd::audio::{FRAME_SAMPLES, Frame, SAMPLE_RATE, fill_sine};
        use intercomd::bt::{Codec, DeviceAddr, GatewayCommand, VoiceLink};
        let device = DeviceAddr::parse("00:AA:01:01:00:01").expect("valid address");
        // The station asks the headset's gateway for audio.
        eventually(
            "OpenAudio asked of the headset's gateway",
            Duration::from_secs(10),
            async || bt.state(),
            |s| {
                s.gateway_commands
                    .contains(&(Some(device.clone()), GatewayCommand::OpenAudio))
            },
        )
        .await;
        let (mic_tx, from_headset) = tokio::sync::mpsc::channel::<Frame>(20);
        let (to_headset, mut speaker) = tokio::sync::mpsc::channel::<Frame>(20);
        bt.sco(
            &device,
            Some(VoiceLink {
                device: device.clone(),
                codec,
                ports: HeadsetPorts {
                    from_headset,
                    to_headset,
                },
            }),
        )
        .await;
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if codec == Codec::Msbc {
            return Headset::msbc(mic_tx, speaker, heard, hz).await;
        }
        let sink = heard.clone();
        let speaker_task = tokio::spawn(async move {
            while let Some(f) = speaker.recv().await {
                let mut h = sink.lock().expect("test lock");
                h.extend_from_slice(&f[..]);
                let excess = h.len().saturating_sub(SAMPLE_RATE as usize);
                h.drain(..excess);
            }
        });
        let mic = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut phase = 0.0;
            loop {
                tick.tick().await;
                let mut frame: Frame = Box::new([0; FRAME_SAMPLES]);
                phase = fill_sine(&mut frame[..], hz, 0.3, SAMPLE_RATE, phase);
                if mic_tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
        Headset {
            tasks: vec![mic, speaker_task],
            heard,
            rate: SAMPLE_RATE,
        }
    }

    /// The mSBC headset: the station's voice bridge on one end of a socket
    /// pair (as the gateway runs it on a SCO socket), the headset's codec
    /// on the other.
    async fn msbc(
        to_engine: tokio::sync::mpsc::Sender<intercomd::audio::Frame>,
        from_engine: tokio::sync::mpsc::Receiver<intercomd::audio::Frame>,
        heard: std::sync::Arc<std::sync::Mutex<Vec<i16>>>,
        hz: f32,
    ) -> Headset {
        use intercomd::audio::fill_sine;
        use intercomd::bt::Codec;
        use intercomd::bt::msbc::{MsbcReceiver, MsbcSender, PACKET_BYTES};
        use intercomd::bt::sco::ScoStream;
        let (gateway_end, headset_end) =
            ScoStream::test_pair(PACKET_BYTES as u16).expect("socketpair");
        let headset_end = std::sync::Arc::new(headset_end);
        let bridge = tokio::spawn(async move {
            intercomd::bt::voice::run(
                &gateway_end,
                Codec::Msbc,
                to_engine,
                from_engine,
                CancellationToken::new(),
            )
            .await;
        });
        let link = headset_end.clone();
        let mic = tokio::spawn(async move {
            let mut tx = MsbcSender::new().expect("libsbc mSBC");
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut phase = 0.0;
            let mut pcm = [0i16; 160];
            let mut bytes = Vec::new();
            loop {
                tick.tick().await;
                phase = fill_sine(&mut pcm, hz, 0.3, 16_000, phase);
                tx.push(&pcm, &mut bytes).expect("encode");
                for p in bytes.chunks(PACKET_BYTES) {
                    if link.send(p).await.is_err() {
                        return;
                    }
                }
                bytes.clear();
            }
        });
        let link = headset_end.clone();
        let sink = heard.clone();
        let speaker = tokio::spawn(async move {
            let mut rx = MsbcReceiver::new().expect("libsbc mSBC");
            let mut buf = [0u8; 256];
            let mut pcm = Vec::new();
            while let Ok(n) = link.recv(&mut buf).await {
                if n == 0 {
                    return;
                }
                pcm.clear();
                rx.push(&buf[..n], &mut pcm);
                let mut h = sink.lock().expect("test lock");
                h.extend_from_slice(&pcm);
                let excess = h.len().saturating_sub(16_000);
                h.drain(..excess);
            }
        });
        Headset {
            tasks: vec![mic, speaker, bridge],
            heard,
            rate: 16_000,
        }
    }

    fn heard_hz(&self) -> Option<f32> {
        let h = self.heard.lock().expect("test lock");
        intercomd::audio::scan_dominant_frequency(&h, self.rate)
    }

    /// Waits (10 s at most) until the headset's speaker plays `hz`.
    async fn wait_hears(&self, hz: f32, who: &str) {
        eventually(
            &format!("{who} hearing {hz} Hz"),
            Duration::from_secs(10),
            async || self.heard_hz(),
            |h| h.is_some_and(|h| (h - hz).abs() <= 30.0),
        )
        .await;
    }

    /// The link drops: both channels close.
    fn drop_link(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// A station with simulated Bluetooth, a headset's service level
/// connection up, and a call answered by flat 1A.
async fn headset_call(
    label: &str,
) -> (
    Station,
    intercomd::bt::sim::SimBt,
    intercomd::bt::DeviceAddr,
    Answerer,
) {
    let st = Station::start_with(label, "[bluetooth]\nenabled = true\nbackend = \"sim\"\n").await;
    let bt = st.running.bluetooth.clone().expect("simulated Bluetooth");
    let hs = intercomd::bt::DeviceAddr::parse("00:AA:01:01:00:01").expect("valid address");
    // Wait for the actor to open the simulated adapter, then the headset's
    // service level connection comes up.
    eventually(
        "the adapter powered",
        Duration::from_secs(10),
        async || bt.state().powered,
        |&powered| powered,
    )
    .await;
    bt.hands_free(&hs, true).await;

    let a = st.answered_call(FLAT_1A).await;
    (st, bt, hs, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headset_takes_the_call_audio_and_the_speaker_takes_it_back_when_it_drops() {
    crate::common::run_alone!(
        "a_headset_takes_the_call_audio_and_the_speaker_takes_it_back_when_it_drops"
    );
    let (st, bt, hs, a) = headset_call("headset").await;

    let mut headset = Headset::connect_audio(&bt, 1500.0).await;
    // The resident hears the headset's 1500 Hz, not the door's 600 Hz.
    a.wait_hears("resident hears the headset", 1500.0).await;
    // The headset's speaker plays the resident's 1000 Hz.
    headset.wait_hears(1000.0, "headset").await;

    // The link drops: the door's microphone (600 Hz) is back, the call
    // goes on.
    let dropped = Instant::now();
    headset.drop_link();
    // As the gateway does when its bridge ends.
    bt.sco(&hs, None).await;
    a.wait_hears("resident hears the door again", 600.0).await;
    assert_eq!(st.state().await["call"]["state"], "in_call");
    // The station asks for the link again (the route machine's reopen).
    let reopen = intercomd::bt::GatewayCommand::OpenAudio;
    eventually(
        "the audio link asked for again",
        (dropped + Duration::from_secs(5)).saturating_duration_since(Instant::now()),
        async || bt.state(),
        |s| {
            s.gateway_commands
                .iter()
                .filter(|(_, c)| *c == reopen)
                .count()
                >= 2
        },
    )
    .await;

    // The headset's button ends the call; the resident is told.
    let mut a = a;
    bt.hangup(&hs).await;
    st.resident_told_it_ended(&mut a, "ended").await;
    st.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_band_headset_carries_the_call_in_msbc() {
    crate::common::run_alone!("a_wide_band_headset_carries_the_call_in_msbc");
    let (st, bt, hs, a) = headset_call("headset-msbc").await;

    let mut headset = Headset::connect_audio_with(&bt, 1500.0, intercomd::bt::Codec::Msbc).await;
    // The headset's 1500 Hz, coded in mSBC, reaches the resident.
    a.wait_hears("resident hears the mSBC headset", 1500.0)
        .await;
    // The resident's 1000 Hz reaches the headset as mSBC at 16 kHz.
    headset.wait_hears(1000.0, "mSBC headset").await;
    headset.drop_link();
    bt.sco(&hs, None).await;
    a.wait_hears("resident hears the door again", 600.0).await;
    a.cancel.cancel();
    st.shutdown().await;
}

/// Lines of the captured log that mention `call_id` and contain `what`.
fn call_lines(call_id: &str, what: &str) -> usize {
    captured_log()
        .lines()
        .filter(|l| l.contains(call_id) && l.contains(what))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_flood_costs_the_station_a_capped_amount_of_work() {
    crate::common::run_alone!("a_candidate_flood_costs_the_station_a_capped_amount_of_work");
    let st = Station::start("candidates").await;
    let mut a = st.answered_call(FLAT_1A).await;
    let call = a.call_id.to_string();
    let applied_before = call_lines(&call, "Added remote ICE candidate");

    // 10,000 well-formed candidates for the call, as fast as the socket
    // takes them.
    for i in 0..10_000u32 {
        let m = Message::Candidate {
            call_id: a.call_id.clone(),
            candidate: Some(Candidate {
                candidate: format!(
                    "candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host",
                    20_000 + i % 40_000
                ),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            }),
        };
        let text = serde_json::to_string(&m).expect("serialisable");
        a.ws.feed(Ws::Text(text.into()))
            .await
            .expect("hub takes it");
    }
    a.ws.flush().await.expect("hub takes it");
    // The call goes on: audio both ways, the station's hub link up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    st.wait_door_hears("door hears after the flood", 1000.0)
        .await;
    assert_eq!(st.state().await["signaling"], "up");
    assert_eq!(st.state().await["call"]["state"], "in_call");
    let applied = call_lines(&call, "Added remote ICE candidate") - applied_before;
    assert!(
        applied <= intercomd::call::machine::MAX_REMOTE_CANDIDATES as usize,
        "{applied} candidates applied"
    );
    assert!(applied > 0, "the first candidates of the flood are taken");
    let log = captured_log();
    assert!(
        !log.contains("too slow"),
        "no client was dropped as too slow"
    );
    assert!(
        !log.contains("signaling connection lost"),
        "the station's link stayed up"
    );
    // One line for the flood from the hub, at most one from the station.
    assert_eq!(call_lines(&call, "dropped"), 1, "the hub's line");
    assert!(call_lines(&call, "ignored for this offer") <= 1);
    eprintln!("candidate flood: 10000 sent, {applied} applied by the station");

    st.resident_hangs_up(&mut a).await;
    st.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_open_flood_reaches_the_door_logic_only_at_the_rate_limit() {
    crate::common::run_alone!("a_door_open_flood_reaches_the_door_logic_only_at_the_rate_limit");
    let st = Station::start_with(
        "open-flood",
        "[door]\npulse_ms = 200\nremote_open_interval_ms = 1000\n",
    )
    .await;
    let sim = st.running.sim.clone().expect("sim board");
    let mut a = st.answered_call(FLAT_1A).await;
    let call = a.call_id.to_string();
    let r = a.door(r#"{"type":"open","nonce":"first"}"#).await;
    assert_eq!(r["granted"], true);
    let pulses_before = sim.relay_writes().iter().filter(|w| **w).count();

    // 30,000 requests with fresh nonces, a newline in every other one.
    let started = Instant::now();
    let mut sent = 0u32;
    while sent < 30_000 && started.elapsed() < Duration::from_secs(20) {
        let forged = if sent % 2 == 1 {
            "\\nAUDIT=door_open granted=true"
        } else {
            ""
        };
        let text = format!("{{\"type\":\"open\",\"nonce\":\"n{sent}{forged}\"}}");
        match a.door_send(text) {
            Ok(()) => sent += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    let flood = started.elapsed();
    // Replies come back for what reached the door logic.
    let mut replies = 0u32;
    let quiet_until = |from: Instant| from + Duration::from_millis(1500);
    let mut until = quiet_until(Instant::now());
    while let Ok(Ok(Some(ev))) = timeout(until - Instant::now(), a.next_media()).await {
        if let intercomd::media::MediaEvent::DoorMessage { .. } = ev {
            replies += 1;
            until = quiet_until(Instant::now());
        }
    }
    let elapsed = started.elapsed().as_secs() + 1;
    // Burst 4, then 2 per second, over the flood and the drain.
    let admitted_max = 4 + 2 * elapsed as u32;
    assert_eq!(sent, 30_000, "the resident sent the whole flood");
    assert!(
        replies <= admitted_max,
        "{replies} decisions in {elapsed} s (at most {admitted_max})"
    );
    let pulses = sim.relay_writes().iter().filter(|w| **w).count() - pulses_before;
    assert!(
        pulses as u64 <= flood.as_secs() + 3,
        "{pulses} pulses: one per remote_open_interval at most"
    );
    // The log: every grant, refusals summarised (five lines per 10 s at
    // most, then a count), nothing forged.
    let refused_lines = call_lines(&call, "door open refused");
    assert!(
        refused_lines <= 5 * (1 + elapsed as usize / 10),
        "{refused_lines} refusal lines"
    );
    let log = captured_log();
    assert!(
        !log.lines().any(|l| l.starts_with("AUDIT")),
        "no line starts with peer text"
    );
    assert!(log.contains("door channel messages dropped before the door logic"));
    eprintln!(
        "door-open flood: {sent} sent in {} ms, {replies} reached the door logic, {pulses} relay pulses, {refused_lines} refusal lines",
        flood.as_millis()
    );

    st.resident_hangs_up(&mut a).await;
    st.shutdown().await;
}
