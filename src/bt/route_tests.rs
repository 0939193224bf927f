//! Audio routing with synthetic time.

use std::time::{Duration, Instant};

use super::route::*;
use super::{Codec, DoorCall, HfpEvent, HfpMachine, HfpOutput, HfpSettings};

/// The longest a dropped headset may keep the audio.
const FALLBACK_LIMIT: Duration = Duration::from_millis(500);

crate::sansio::clocked_rig!(Rig, RouteMachine);

impl Rig {
    fn new() -> Self {
        Rig(crate::sansio::Clocked::new(|_| {
            RouteMachine::new(RouteSettings::default())
        }))
    }

    fn input(&mut self, input: RouteInput) -> Vec<RouteOutput> {
        self.0.input(input)
    }

    fn advance(&mut self, by: Duration) -> Vec<RouteOutput> {
        self.0.advance(by)
    }

    /// A headset with its SLC up, and an answered call on it over mSBC.
    fn call_on_headset() -> Self {
        let mut r = Rig::new();
        r.input(RouteInput::Connected);
        r.input(RouteInput::Slc { up: true });
        r.input(RouteInput::Call(CallPhase::Ringing));
        assert_eq!(
            r.input(RouteInput::Call(CallPhase::Active)),
            vec![RouteOutput::OpenSco]
        );
        r.advance(Duration::from_millis(80));
        assert_eq!(
            r.input(RouteInput::ScoUp { codec: Codec::Msbc }),
            vec![RouteOutput::Switch(Route::Headset(Codec::Msbc))]
        );
        r
    }

    /// When the audio went back to the speaker, relative to `since`.
    fn fallback_after(&self, since: Duration) -> Option<Duration> {
        self.log
            .iter()
            .find(|(at, o)| *at >= since && *o == RouteOutput::Switch(Route::Speaker))
            .map(|(at, _)| *at - since)
    }
}

#[test]
fn without_a_headset_the_speaker_has_the_call() {
    let mut r = Rig::new();
    assert!(r.input(RouteInput::Call(CallPhase::Ringing)).is_empty());
    assert!(r.input(RouteInput::Call(CallPhase::Active)).is_empty());
    assert_eq!(r.m.route(), Route::Speaker);
    // Connected but no SLC yet: still nothing.
    assert!(r.input(RouteInput::Connected).is_empty());
    assert_eq!(r.m.poll_timeout(), None);
}

#[test]
fn ringing_stays_on_the_speaker_and_an_answered_call_moves_to_the_headset() {
    let mut r = Rig::new();
    r.input(RouteInput::Connected);
    r.input(RouteInput::Slc { up: true });
    assert!(r.input(RouteInput::Call(CallPhase::Ringing)).is_empty());
    assert_eq!(
        r.input(RouteInput::Call(CallPhase::Active)),
        vec![RouteOutput::OpenSco]
    );
    assert_eq!(r.m.route(), Route::Speaker, "speaker until SCO is up");
    assert_eq!(
        r.input(RouteInput::ScoUp { codec: Codec::Cvsd }),
        vec![RouteOutput::Switch(Route::Headset(Codec::Cvsd))]
    );
    assert_eq!(r.m.poll_timeout(), None);

    // The call ends: SCO closed, speaker again.
    assert_eq!(
        r.input(RouteInput::Call(CallPhase::Idle)),
        vec![RouteOutput::CloseSco, RouteOutput::Switch(Route::Speaker)]
    );
}

#[test]
fn headset_lost_mid_call_falls_back_to_the_speaker_at_once() {
    let mut r = Rig::call_on_headset();
    r.advance(Duration::from_secs(20));
    let drop_at = r.now - r.t0;
    assert_eq!(
        r.input(RouteInput::Disconnected),
        vec![RouteOutput::Switch(Route::Speaker)]
    );
    let after = r.fallback_after(drop_at).expect("fell back");
    assert!(after <= FALLBACK_LIMIT, "{after:?}");
    // The call is still answered; nothing else is pending.
    assert_eq!(r.m.call(), CallPhase::Active);
    assert_eq!(r.m.poll_timeout(), None);
    assert!(r.advance(Duration::from_secs(10)).is_empty());
}

#[test]
fn slc_down_mid_call_falls_back_at_once() {
    let mut r = Rig::call_on_headset();
    let drop_at = r.now - r.t0;
    assert_eq!(
        r.input(RouteInput::Slc { up: false }),
        vec![RouteOutput::CloseSco, RouteOutput::Switch(Route::Speaker)]
    );
    assert_eq!(r.fallback_after(drop_at), Some(Duration::ZERO));
    assert_eq!(r.m.call(), CallPhase::Active);
}

#[test]
fn sco_dropped_and_not_back_falls_back_within_the_deadline() {
    let mut r = Rig::call_on_headset();
    r.advance(Duration::from_secs(5));
    let drop_at = r.now - r.t0;
    // A reopen is asked for at once; the headset keeps the route meanwhile.
    assert_eq!(r.input(RouteInput::ScoDown), vec![RouteOutput::OpenSco]);
    assert_eq!(r.m.route(), Route::Headset(Codec::Msbc));
    assert_eq!(
        r.advance(Duration::from_secs(1)),
        vec![RouteOutput::Switch(Route::Speaker)]
    );
    let after = r.fallback_after(drop_at).expect("fell back");
    assert_eq!(after, RouteSettings::default().sco_grace);
    assert!(after <= FALLBACK_LIMIT, "{after:?}");
    assert_eq!(r.m.call(), CallPhase::Active);

    // The reopen succeeds later: back on the headset.
    assert_eq!(
        r.input(RouteInput::ScoUp { codec: Codec::Msbc }),
        vec![RouteOutput::Switch(Route::Headset(Codec::Msbc))]
    );
}

#[test]
fn sco_glitch_within_the_grace_keeps_the_headset() {
    let mut r = Rig::call_on_headset();
    assert_eq!(r.input(RouteInput::ScoDown), vec![RouteOutput::OpenSco]);
    r.advance(Duration::from_millis(120));
    assert!(r.input(RouteInput::ScoUp { codec: Codec::Msbc }).is_empty());
    assert!(r.advance(Duration::from_secs(5)).is_empty());
    assert_eq!(r.m.route(), Route::Headset(Codec::Msbc));
}

#[test]
fn failed_reopens_end_the_grace_early_once_attempts_are_used() {
    let mut r = Rig::call_on_headset();
    let drop_at = r.now - r.t0;
    // First open was attempt 1; the reopen is attempt 2.
    assert_eq!(r.input(RouteInput::ScoDown), vec![RouteOutput::OpenSco]);
    r.advance(Duration::from_millis(50));
    // That open fails: attempt 3.
    assert_eq!(r.input(RouteInput::ScoDown), vec![RouteOutput::OpenSco]);
    r.advance(Duration::from_millis(50));
    // And fails: no attempt left, speaker now.
    assert_eq!(
        r.input(RouteInput::ScoDown),
        vec![RouteOutput::Switch(Route::Speaker)]
    );
    assert_eq!(r.fallback_after(drop_at), Some(Duration::from_millis(100)));
    assert!(r.advance(Duration::from_secs(10)).is_empty());
    assert_eq!(r.m.call(), CallPhase::Active);
}

#[test]
fn sco_that_never_opens_leaves_the_call_on_the_speaker() {
    let mut r = Rig::new();
    r.input(RouteInput::Connected);
    r.input(RouteInput::Slc { up: true });
    assert_eq!(
        r.input(RouteInput::Call(CallPhase::Active)),
        vec![RouteOutput::OpenSco]
    );
    // Each open times out and is retried, up to the bound.
    let out = r.advance(Duration::from_secs(60));
    assert_eq!(out, vec![RouteOutput::OpenSco, RouteOutput::OpenSco]);
    assert_eq!(r.m.route(), Route::Speaker);
    assert_eq!(r.m.poll_timeout(), None);
}

#[test]
fn headset_back_mid_call_takes_the_audio_again() {
    let mut r = Rig::call_on_headset();
    r.input(RouteInput::Disconnected);
    assert_eq!(r.m.route(), Route::Speaker);
    r.advance(Duration::from_secs(4));
    assert!(r.input(RouteInput::Connected).is_empty());
    assert_eq!(
        r.input(RouteInput::Slc { up: true }),
        vec![RouteOutput::OpenSco]
    );
    assert_eq!(
        r.input(RouteInput::ScoUp { codec: Codec::Cvsd }),
        vec![RouteOutput::Switch(Route::Headset(Codec::Cvsd))]
    );
}

#[test]
fn sco_opened_by_the_headset_outside_a_call_is_closed() {
    let mut r = Rig::new();
    r.input(RouteInput::Connected);
    r.input(RouteInput::Slc { up: true });
    assert_eq!(
        r.input(RouteInput::ScoUp { codec: Codec::Cvsd }),
        vec![RouteOutput::CloseSco]
    );
    assert_eq!(r.m.route(), Route::Speaker);
    // SCO without a connection is ignored.
    let mut r = Rig::new();
    assert!(r.input(RouteInput::ScoUp { codec: Codec::Cvsd }).is_empty());
    assert!(r.input(RouteInput::ScoDown).is_empty());
}

#[test]
fn a_new_call_gets_fresh_attempts() {
    let mut r = Rig::new();
    r.input(RouteInput::Connected);
    r.input(RouteInput::Slc { up: true });
    r.input(RouteInput::Call(CallPhase::Active));
    r.advance(Duration::from_secs(60));
    r.input(RouteInput::Call(CallPhase::Idle));
    r.input(RouteInput::Call(CallPhase::Ringing));
    assert_eq!(
        r.input(RouteInput::Call(CallPhase::Active)),
        vec![RouteOutput::OpenSco]
    );
}

/// The HFP gateway and the routing driven together as the controller would:
/// a door call rung, answered from the headset, carried over mSBC, and kept
/// on the speaker when the headset goes away.
#[test]
fn a_door_call_answered_on_the_headset_and_the_headset_lost() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut hfp = HfpMachine::new(HfpSettings::default(), now);
    let mut route = RouteMachine::new(RouteSettings::default());
    let drain = |hfp: &mut HfpMachine| {
        let mut wire = Vec::new();
        let mut events = Vec::new();
        while let Some(o) = hfp.poll_output() {
            match o {
                HfpOutput::Transmit(bytes) => wire.extend(bytes),
                HfpOutput::Event(e) => events.push(e),
            }
        }
        (String::from_utf8(wire).expect("ASCII"), events)
    };
    let outs =
        |route: &mut RouteMachine| std::iter::from_fn(|| route.poll_output()).collect::<Vec<_>>();

    route.handle_input(RouteInput::Connected, now);
    use super::hfp::hf_feature;
    let features = hf_feature::CODEC_NEGOTIATION | hf_feature::CLI | hf_feature::REMOTE_VOLUME;
    hfp.handle_bytes(
        format!("AT+BRSF={features}\rAT+BAC=1,2\rAT+CIND=?\rAT+CIND?\rAT+CMER=3,0,0,1\r")
            .as_bytes(),
        now,
    );
    let (_, events) = drain(&mut hfp);
    assert!(matches!(
        events[..],
        [HfpEvent::SlcEstablished {
            codec_negotiation: true,
            ..
        }]
    ));
    route.handle_input(RouteInput::Slc { up: true }, now);

    // A visitor rings.
    hfp.handle_call(
        DoorCall::Ringing {
            caller: "Front door".into(),
        },
        now,
    );
    route.handle_input(RouteInput::Call(CallPhase::Ringing), now);
    assert!(drain(&mut hfp).0.contains("RING"));
    assert!(outs(&mut route).is_empty());

    // Answered from the headset; the controller confirms.
    now += Duration::from_secs(2);
    hfp.handle_bytes(b"ATA\r", now);
    assert_eq!(drain(&mut hfp).1, vec![HfpEvent::AnswerRequested]);
    hfp.handle_call(DoorCall::Active, now);
    route.handle_input(RouteInput::Call(CallPhase::Active), now);
    assert_eq!(outs(&mut route), vec![RouteOutput::OpenSco]);

    // Opening SCO starts with the codec.
    hfp.connect_audio(now).expect("SLC is up");
    assert_eq!(
        drain(&mut hfp).0,
        "\r\n+CIEV: 2,1\r\n\r\n+CIEV: 3,0\r\n\r\n+BCS: 2\r\n"
    );
    hfp.handle_bytes(b"AT+BCS=2\r", now);
    let (_, events) = drain(&mut hfp);
    let codec = match events[..] {
        [HfpEvent::AudioReady { codec }] => codec,
        ref other => panic!("{other:?}"),
    };
    now += Duration::from_millis(60);
    route.handle_input(RouteInput::ScoUp { codec }, now);
    assert_eq!(
        outs(&mut route),
        vec![RouteOutput::Switch(Route::Headset(Codec::Msbc))]
    );

    // The headset is switched off mid-call.
    now += Duration::from_secs(30);
    route.handle_input(RouteInput::Disconnected, now);
    assert_eq!(outs(&mut route), vec![RouteOutput::Switch(Route::Speaker)]);
    assert_eq!(route.call(), CallPhase::Active);
    assert_eq!(route.poll_timeout(), None);
}
