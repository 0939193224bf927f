//! The station core in synthetic time: whole scenarios across the call,
//! door and route machines, with every effect checked as a typed output.

use std::time::Duration;

use super::*;
use crate::bt::Route;
use crate::hw::HwEvent;
use crate::sansio::Clocked;
use crate::signaling::protocol::PeerInfo;

const S: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn settings(bluetooth: bool) -> StationSettings {
    StationSettings {
        call: CallSettings::default(),
        door: DoorSettings::default(),
        buttons: [("call".to_string(), "residents".to_string())].into(),
        bluetooth,
    }
}

type Rig = Clocked<Station>;

fn rig(bluetooth: bool) -> Rig {
    let mut r = Clocked::new(|t0| Station::new(settings(bluetooth), CallIds::new(0, t0, 7), t0));
    r.drain();
    r.input(StationInput::Signaling(ClientEvent::Up {
        session: "s".into(),
        ice_servers: Vec::new(),
    }));
    r
}

fn flat() -> PeerInfo {
    PeerInfo {
        id: "flat-1a".into(),
        name: "Flat 1A".into(),
    }
}

fn hub(r: &mut Rig, m: Message) -> Vec<StationOutput> {
    r.input(StationInput::Signaling(ClientEvent::Message(m)))
}

fn media(r: &mut Rig, ev: MediaEvent) -> Vec<StationOutput> {
    r.input(StationInput::Media(ev))
}

fn door_text(r: &mut Rig, call_id: &CallId, text: &str) -> Vec<StationOutput> {
    media(
        r,
        MediaEvent::DoorMessage {
            call_id: call_id.clone(),
            text: text.into(),
        },
    )
}

fn relay_levels(out: &[StationOutput]) -> Vec<bool> {
    out.iter()
        .filter_map(|o| match o {
            StationOutput::Relay { energised } => Some(*energised),
            _ => None,
        })
        .collect()
}

fn sent(out: &[StationOutput]) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            StationOutput::Signal(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn replies(out: &[StationOutput]) -> Vec<&OpenResult> {
    out.iter()
        .filter_map(|o| match o {
            StationOutput::DoorReply { reply, .. } => Some(reply),
            _ => None,
        })
        .collect()
}

fn audits(out: &[StationOutput]) -> Vec<&Audit> {
    out.iter()
        .filter_map(|o| match o {
            StationOutput::Audit(a) => Some(a),
            _ => None,
        })
        .collect()
}

/// A visitor presses the call button: the station rings the button's
/// group and returns the call's id.
fn ring(r: &mut Rig) -> CallId {
    let out = r.input(StationInput::Hw(HwEvent::ButtonPressed {
        button: "call".into(),
    }));
    r.input(StationInput::Hw(HwEvent::ButtonReleased {
        button: "call".into(),
    }));
    let Some(Message::Ring { call_id, group, .. }) = sent(&out).first().copied().cloned() else {
        panic!("a press rings: {out:?}");
    };
    assert_eq!(group, "residents");
    assert!(out.contains(&StationOutput::Tone(ToneCue::Ringback)));
    assert_eq!(r.m.status(r.now).call.state, "ringing");
    call_id
}

/// Ring, accept, offer, answer, audio up: a call in progress.
fn in_call(r: &mut Rig) -> CallId {
    let id = ring(r);
    let out = hub(
        r,
        Message::Accepted {
            call_id: id.clone(),
            answerer: flat(),
            route: None,
        },
    );
    assert!(
        out.contains(&StationOutput::Media(MediaRequest::StartOffer {
            call_id: id.clone()
        })),
        "{out:?}"
    );
    let sdp = "v=0 offer".to_string();
    let kind = media::SdpKind::Offer;
    let call_id = id.clone();
    let out = media(r, MediaEvent::LocalDescription { call_id, kind, sdp });
    assert!(matches!(sent(&out)[..], [Message::Offer { .. }]), "{out:?}");
    let sdp = "v=0 answer".to_string();
    let out = hub(
        r,
        Message::Answer {
            call_id: id.clone(),
            sdp,
        },
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, StationOutput::Media(MediaRequest::RemoteAnswer { .. })))
    );
    let call_id = id.clone();
    let out = media(
        r,
        MediaEvent::AudioEstablished {
            call_id,
            selected_pair: "host/udp".into(),
        },
    );
    assert!(
        out.contains(&StationOutput::Phase(Phase::InCall)),
        "{out:?}"
    );
    assert_eq!(r.m.status(r.now).call.state, "in_call");
    id
}

#[test]
fn ring_accept_media_door_hangup() {
    let mut r = rig(false);
    let id = in_call(&mut r);
    assert_eq!(r.m.status(r.now).call.answerer.as_deref(), Some("flat-1a"));

    // The resident opens the door from the page.
    let out = door_text(&mut r, &id, r#"{"type":"open","nonce":"n-1"}"#);
    assert_eq!(relay_levels(&out), [true]);
    assert!(out.contains(&StationOutput::Tone(ToneCue::DoorOpened)));
    assert_eq!(
        replies(&out),
        [&OpenResult {
            nonce: "n-1".into(),
            granted: true,
            reason: None,
            pulse_ms: 5000,
        }]
    );
    assert!(sent(&out).contains(&&Message::DoorOpened {
        call_id: id.clone()
    }));
    assert!(matches!(
        audits(&out)[..],
        [Audit::DoorOpen { granted: true, .. }]
    ));
    assert!(r.m.status(r.now).door.relay_energised);

    // The pulse ends on time.
    let out = r.advance(5 * S - ms(1));
    assert!(relay_levels(&out).is_empty());
    assert_eq!(relay_levels(&r.advance(ms(1))), [false]);

    // The resident hangs up: the media stops, the station is idle again.
    let out = hub(
        &mut r,
        Message::Hangup {
            call_id: id.clone(),
            reason: "done".into(),
        },
    );
    assert!(out.contains(&StationOutput::Media(MediaRequest::Stop {
        call_id: id.clone()
    })));
    assert!(out.contains(&StationOutput::Tone(ToneCue::Silence)));
    assert!(out.contains(&StationOutput::CallAudioDone));
    assert_eq!(r.m.status(r.now).call.state, "ended");
    // The end is shown for `ended_linger` (3 s), then the station rests.
    r.advance(3 * S);
    let status = r.m.status(r.now);
    assert_eq!(status.call.state, "idle");
    assert_eq!(status.call.call_id, None);
    assert_eq!(status.door.station_state, "idle");
}

#[test]
fn signaling_drop_mid_call_keeps_the_call_and_resumes() {
    let mut r = rig(false);
    let id = in_call(&mut r);
    let out = r.input(StationInput::Signaling(ClientEvent::Down {
        reason: "connection reset".into(),
    }));
    assert!(
        !out.iter()
            .any(|o| matches!(o, StationOutput::Media(MediaRequest::Stop { .. }))),
        "the call goes on without signaling: {out:?}"
    );
    assert_eq!(r.m.status(r.now).signaling, "down");
    assert_eq!(r.m.status(r.now).call.state, "in_call");

    // Half a minute later the hub is back; the call is still up and the
    // door still opens.
    r.advance(30 * S);
    r.input(StationInput::Signaling(ClientEvent::Up {
        session: "s2".into(),
        ice_servers: Vec::new(),
    }));
    let status = r.m.status(r.now);
    assert_eq!((status.signaling, status.call.state), ("up", "in_call"));
    let out = door_text(&mut r, &id, r#"{"type":"open","nonce":"n-2"}"#);
    assert_eq!(relay_levels(&out), [true]);

    // The hang-up reaches the hub over the new session.
    let out = r.input(StationInput::Hw(HwEvent::HangupRequested));
    assert!(
        sent(&out)
            .iter()
            .any(|m| matches!(m, Message::Hangup { call_id, .. } if *call_id == id)),
        "{out:?}"
    );
}

#[test]
fn headset_lost_mid_call_falls_back_to_the_speaker() {
    let mut r = rig(true);
    let headset = DeviceAddr::parse("00:11:22:33:44:55").expect("a valid address");
    let bt = |ev| StationInput::Bt(ev);
    r.input(bt(BtInput::HandsFree {
        device: headset.clone(),
        connected: true,
    }));
    assert_eq!(r.m.headset(), Some(&headset));
    let id = in_call(&mut r);
    // The call asks the headset for audio; its SCO link comes up.
    let asked = r.log.iter().any(|(_, o)| {
        matches!(o, StationOutput::Gateway { device: Some(d), cmd: GatewayCommand::OpenAudio } if *d == headset)
    });
    assert!(asked, "the station opens SCO to the headset: {:?}", r.log);
    let out = r.input(bt(BtInput::Sco {
        device: headset.clone(),
        codec: Some(Codec::Msbc),
    }));
    assert!(
        out.contains(&StationOutput::Route {
            call_id: Some(id.clone()),
            route: Route::Headset(Codec::Msbc)
        }),
        "{out:?}"
    );

    // The headset goes out of range: the audio comes back to the speaker
    // and the call goes on.
    let mut out = r.input(bt(BtInput::HandsFree {
        device: headset.clone(),
        connected: false,
    }));
    out.extend(r.advance(S));
    assert!(
        out.contains(&StationOutput::Route {
            call_id: Some(id.clone()),
            route: Route::Speaker
        }),
        "{out:?}"
    );
    assert_eq!(r.m.headset(), None);
    assert_eq!(r.m.status(r.now).call.state, "in_call");
    // A hang-up from the lost headset no longer counts.
    let out = r.input(bt(BtInput::HangupRequested { device: headset }));
    assert!(sent(&out).is_empty(), "{out:?}");
}

#[test]
fn shutdown_during_a_door_pulse_releases_the_relay_and_hangs_up() {
    let mut r = rig(false);
    let id = in_call(&mut r);
    let out = door_text(&mut r, &id, r#"{"type":"open","nonce":"n-1"}"#);
    assert_eq!(relay_levels(&out), [true]);
    r.advance(S);

    let out = r.input(StationInput::Shutdown);
    assert_eq!(relay_levels(&out), [false], "{out:?}");
    assert!(
        sent(&out)
            .iter()
            .any(|m| matches!(m, Message::Hangup { call_id, .. } if *call_id == id)),
        "{out:?}"
    );
    assert!(out.contains(&StationOutput::Media(MediaRequest::Stop {
        call_id: id.clone()
    })));
    // Nothing energises it again afterwards.
    assert!(!relay_levels(&r.advance(10 * S)).contains(&true));
}

#[test]
fn a_flood_of_malformed_door_messages_is_bounded_and_harmless() {
    let mut r = rig(false);
    let id = in_call(&mut r);
    let junk = [
        "",
        "{",
        "null",
        r#"{"type":"open"}"#,
        r#"{"type":"unlock","nonce":"n"}"#,
        r#"{"type":"open","nonce":17}"#,
        "\u{0}\u{1b}[31m",
        r#"{"type":"open","nonce":""}"#,
    ];
    let mut out = Vec::new();
    // 1,000 messages within 2 s.
    for i in 0..1000 {
        out.extend(door_text(&mut r, &id, junk[i % junk.len()]));
        if i % 500 == 499 {
            out.extend(r.advance(S));
        }
    }
    assert!(!relay_levels(&out).contains(&true), "never pulsed");
    // Each is answered and refused: a bad request, or (an `open` with an
    // empty nonce) a bad nonce...
    let answered = replies(&out);
    assert_eq!(answered.len(), 1000);
    for a in &answered {
        assert!(!a.granted, "{a:?}");
        assert!(
            matches!(a.reason, Some("bad_request" | "bad_nonce")),
            "{a:?}"
        );
    }
    // ...but written as at most five lines per 10 s, each counting.
    let lines = audits(&out);
    assert!(lines.len() <= 5, "{} audit lines", lines.len());
    let mut out = r.advance(10 * S);
    let summary: u64 = audits(&out)
        .iter()
        .map(|a| match a {
            Audit::DoorOpenRefusals { refusals } => *refusals,
            other => panic!("only a count is due: {other:?}"),
        })
        .sum();
    let written: u64 = lines
        .iter()
        .map(|a| match a {
            Audit::DoorOpen { refusals, .. } => refusals.unwrap_or(0),
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(written + summary, 1000, "every refusal counted");

    // A valid open is still granted.
    out = door_text(&mut r, &id, r#"{"type":"open","nonce":"good-1"}"#);
    assert_eq!(relay_levels(&out), [true]);
    assert!(replies(&out)[0].granted);
}

#[test]
fn call_ids_differ_and_carry_the_start_time() {
    let t0 = std::time::Instant::now();
    let mut ids = CallIds::new(0x1000, t0, 5);
    let a = ids.next(t0);
    let b = ids.next(t0 + ms(16));
    assert_ne!(a, b);
    assert!(a.as_str().starts_with("c-1000-"), "{a}");
    assert!(b.as_str().starts_with("c-1010-"), "{b}");
}

#[test]
fn ringback_plays_only_while_ringing() {
    assert_eq!(tone_for(Phase::Ringing), ToneCue::Ringback);
    for p in [Phase::Idle, Phase::Connecting, Phase::InCall, Phase::Ended] {
        assert_eq!(tone_for(p), ToneCue::Silence);
    }
}
