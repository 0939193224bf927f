//! Deterministic tests of the call machine: time is synthetic, so a 30 s
//! ring timeout takes microseconds.

use super::*;
use crate::signaling::protocol::{ErrorCode, Message, PeerInfo};

// Drives a machine with synthetic time and records every output.
crate::sansio::clocked_rig!(Harness, CallMachine);

impl Harness {
    fn new() -> Self {
        let mut h = Harness(crate::sansio::Clocked::new(|_| {
            CallMachine::new(CallSettings::default())
        }));
        h.input(Input::SignalingUp)
            .expect("signaling up is always accepted");
        h.log.clear();
        h
    }

    /// The input, with the machine's verdict on it.
    fn input(&mut self, i: Input) -> Result<(), Rejected> {
        let r = self.0.m.handle_input(i, self.0.now);
        self.0.drain();
        r
    }

    fn signal(&mut self, m: Message) -> Result<(), Rejected> {
        self.input(Input::Signal(m))
    }

    fn drain(&mut self) {
        self.0.drain();
    }

    /// Advance time by `d`, firing timers at their exact deadlines.
    fn advance(&mut self, d: Duration) {
        self.0.advance(d);
    }

    fn take(&mut self) -> Vec<Output> {
        self.log.drain(..).map(|(_, o)| o).collect()
    }

    fn sent(&mut self) -> Vec<Message> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send(m) => Some(m),
                _ => None,
            })
            .collect()
    }
}

fn cid(s: &str) -> CallId {
    CallId::new(s).expect("test ids are valid")
}

fn flat() -> PeerInfo {
    PeerInfo {
        id: "flat-1a".into(),
        name: "Flat 1A".into(),
    }
}

fn press(h: &mut Harness, id: &str) -> Result<(), Rejected> {
    h.input(Input::ButtonPressed {
        group: "residents".into(),
        call_id: cid(id),
    })
}

/// Press, accept, answer, audio up: returns a harness in `InCall`.
/// Call c1 accepted, offered and answered; media not up yet.
fn negotiated() -> Harness {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.signal(Message::Accepted {
        call_id: cid("c1"),
        answerer: flat(),
        route: Some("proof-c1".into()),
    })
    .unwrap();
    h.input(Input::LocalDescription {
        call_id: cid("c1"),
        sdp: "offer".into(),
    })
    .unwrap();
    h.signal(Message::Answer {
        call_id: cid("c1"),
        sdp: "answer".into(),
    })
    .unwrap();
    h
}

fn in_call() -> Harness {
    let mut h = negotiated();
    h.input(Input::AudioEstablished { call_id: cid("c1") })
        .unwrap();
    assert_eq!(h.0.m.phase(), Phase::InCall);
    h.take();
    h
}

/// The happy path up to the answer: `c1` rings and is accepted.
fn ring_then_accept(h: &mut Harness) {
    press(h, "c1").unwrap();
    assert_eq!(h.0.m.phase(), Phase::Ringing);
    assert_eq!(
        h.take(),
        vec![
            Output::Send(Message::Ring {
                call_id: cid("c1"),
                group: "residents".into(),
                door: None
            }),
            Output::PhaseChanged {
                phase: Phase::Ringing,
                call_id: Some(cid("c1"))
            },
        ]
    );
    h.signal(Message::Ringing {
        call_id: cid("c1"),
        answerers: 2,
    })
    .unwrap();
    assert!(h.take().is_empty());

    h.signal(Message::Accepted {
        call_id: cid("c1"),
        answerer: flat(),
        route: None,
    })
    .unwrap();
    assert_eq!(h.0.m.phase(), Phase::Connecting);
    assert_eq!(
        h.take(),
        vec![
            Output::Answered {
                call_id: cid("c1"),
                by: flat()
            },
            Output::Media(MediaRequest::StartOffer { call_id: cid("c1") }),
            Output::PhaseChanged {
                phase: Phase::Connecting,
                call_id: Some(cid("c1"))
            },
        ]
    );
}

#[test]
fn happy_path_press_accept_offer_answer_talk_hangup() {
    let mut h = Harness::new();
    ring_then_accept(&mut h);

    h.input(Input::LocalDescription {
        call_id: cid("c1"),
        sdp: "v=0".into(),
    })
    .unwrap();
    assert_eq!(
        h.sent(),
        vec![Message::Offer {
            call_id: cid("c1"),
            sdp: "v=0".into()
        }]
    );

    h.signal(Message::Answer {
        call_id: cid("c1"),
        sdp: "v=0 a".into(),
    })
    .unwrap();
    assert_eq!(
        h.take(),
        vec![Output::Media(MediaRequest::RemoteAnswer {
            call_id: cid("c1"),
            sdp: "v=0 a".into()
        })]
    );

    h.input(Input::AudioEstablished { call_id: cid("c1") })
        .unwrap();
    assert!(h.0.m.media_up());
    assert_eq!(
        h.take(),
        vec![
            Output::Established { call_id: cid("c1") },
            Output::PhaseChanged {
                phase: Phase::InCall,
                call_id: Some(cid("c1"))
            },
        ]
    );

    h.signal(Message::Hangup {
        call_id: cid("c1"),
        reason: "normal".into(),
    })
    .unwrap();
    assert_eq!(h.0.m.phase(), Phase::Ended);
    assert_eq!(
        h.take(),
        vec![
            Output::Media(MediaRequest::Stop { call_id: cid("c1") }),
            Output::Ended {
                call_id: cid("c1"),
                reason: EndReason::RemoteHangup("normal".into())
            },
            Output::PhaseChanged {
                phase: Phase::Ended,
                call_id: None
            },
        ]
    );
    // Only the "ended" display timer remains; then the station is idle.
    assert_eq!(h.0.m.poll_timeout(), Some(h.0.now + Duration::from_secs(3)));
    h.advance(Duration::from_secs(3));
    assert_eq!(h.0.m.phase(), Phase::Idle);
    assert_eq!(
        h.take(),
        vec![Output::PhaseChanged {
            phase: Phase::Idle,
            call_id: None
        }]
    );
    assert_eq!(h.0.m.poll_timeout(), None, "no timer outlives the call");
}

#[test]
fn ring_timeout_ends_in_no_answer_at_exactly_30s() {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.take();
    h.advance(Duration::from_millis(29_999));
    assert_eq!(h.0.m.phase(), Phase::Ringing);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.0.m.phase(), Phase::Ended);
    let out: Vec<_> = h.log.iter().map(|(t, o)| (*t, o.clone())).collect();
    assert_eq!(
        out[0],
        (
            Duration::from_secs(30),
            Output::Send(Message::Cancel {
                call_id: cid("c1"),
                reason: "timeout".into()
            })
        )
    );
    assert!(out.iter().any(|(_, o)| matches!(
        o,
        Output::Ended {
            reason: EndReason::NoAnswer,
            ..
        }
    )));
    // No media was started, so none is stopped.
    assert!(!out.iter().any(|(_, o)| matches!(o, Output::Media(_))));
}

#[test]
fn connect_timeout_hangs_up() {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.signal(Message::Accepted {
        call_id: cid("c1"),
        answerer: flat(),
        route: None,
    })
    .unwrap();
    h.take();
    h.advance(Duration::from_secs(20));
    assert_eq!(h.0.m.phase(), Phase::Ended);
    let out = h.take();
    assert!(out.contains(&Output::Send(Message::Hangup {
        call_id: cid("c1"),
        reason: "timeout".into()
    })));
    assert!(out.contains(&Output::Media(MediaRequest::Stop { call_id: cid("c1") })));
    assert!(out.contains(&Output::Ended {
        call_id: cid("c1"),
        reason: EndReason::ConnectTimeout
    }));
}

#[test]
fn ring_timer_does_not_fire_after_accept() {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.advance(Duration::from_secs(10));
    h.signal(Message::Accepted {
        call_id: cid("c1"),
        answerer: flat(),
        route: None,
    })
    .unwrap();
    h.input(Input::AudioEstablished { call_id: cid("c1") })
        .unwrap();
    h.advance(Duration::from_secs(60));
    assert_eq!(h.0.m.phase(), Phase::InCall);
}

#[test]
fn max_duration_ends_a_call() {
    let mut h = in_call();
    h.advance(Duration::from_secs(599));
    assert_eq!(h.0.m.phase(), Phase::InCall);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.0.m.phase(), Phase::Ended);
    assert!(h.take().contains(&Output::Ended {
        call_id: cid("c1"),
        reason: EndReason::MaxDuration
    }));
}

#[test]
fn local_hangup_in_each_phase() {
    // Ringing: cancel.
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.take();
    h.input(Input::LocalHangup).unwrap();
    assert_eq!(
        h.sent(),
        vec![Message::Cancel {
            call_id: cid("c1"),
            reason: "normal".into()
        }]
    );
    // In call: hangup + media stop.
    let mut h = in_call();
    h.input(Input::LocalHangup).unwrap();
    let out = h.take();
    assert_eq!(
        out[0],
        Output::Send(Message::Hangup {
            call_id: cid("c1"),
            reason: "normal".into()
        })
    );
    assert!(out.contains(&Output::Media(MediaRequest::Stop { call_id: cid("c1") })));
    // Idle: rejected, nothing happens.
    assert_eq!(
        h.input(Input::LocalHangup),
        Err(Rejected::NoCall {
            input: "local hangup"
        })
    );
    assert!(h.take().is_empty());
}

#[test]
fn decline_and_no_answerer_end_the_ring() {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.signal(Message::Declined { call_id: cid("c1") }).unwrap();
    assert!(h.take().contains(&Output::Ended {
        call_id: cid("c1"),
        reason: EndReason::Declined
    }));

    press(&mut h, "c2").unwrap();
    h.take();
    h.signal(Message::Ringing {
        call_id: cid("c2"),
        answerers: 0,
    })
    .unwrap();
    let out = h.take();
    assert!(out.contains(&Output::Ended {
        call_id: cid("c2"),
        reason: EndReason::NoAnswerer
    }));
    // The hub holds no call in either case: nothing is sent back.
    assert!(!out.iter().any(|o| matches!(o, Output::Send(_))), "{out:?}");
}

#[test]
fn second_press_while_ringing_or_talking_is_harmless() {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.take();
    assert!(matches!(press(&mut h, "c2"), Err(Rejected::Busy { .. })));
    assert!(h.take().is_empty());
    assert_eq!(h.0.m.call_id(), Some(&cid("c1")));

    let mut h = in_call();
    assert!(matches!(press(&mut h, "c9"), Err(Rejected::Busy { .. })));
    assert_eq!(h.0.m.phase(), Phase::InCall);
}

#[test]
fn a_new_call_after_the_end() {
    let mut h = in_call();
    h.input(Input::LocalHangup).unwrap();
    press(&mut h, "c2").unwrap();
    assert_eq!(h.0.m.phase(), Phase::Ringing);
    assert_eq!(h.0.m.call_id(), Some(&cid("c2")));
}

#[test]
fn messages_for_other_calls_are_rejected_without_effect() {
    let mut h = in_call();
    let r = h.signal(Message::Hangup {
        call_id: cid("old"),
        reason: "normal".into(),
    });
    assert_eq!(
        r,
        Err(Rejected::OtherCall {
            input: "hangup",
            got: cid("old"),
            current: cid("c1")
        })
    );
    assert_eq!(h.0.m.phase(), Phase::InCall);
    assert!(h.take().is_empty());
}

/// Inputs about call `c1`, which does not exist.
fn stray_inputs() -> Vec<Input> {
    vec![
        Input::Signal(Message::Accepted {
            call_id: cid("c1"),
            answerer: flat(),
            route: None,
        }),
        Input::Signal(Message::Answer {
            call_id: cid("c1"),
            sdp: "x".into(),
        }),
        Input::Signal(Message::Candidate {
            call_id: cid("c1"),
            candidate: None,
        }),
        Input::Signal(Message::Hangup {
            call_id: cid("c1"),
            reason: String::new(),
        }),
        Input::Signal(Message::Declined { call_id: cid("c1") }),
        Input::AudioEstablished { call_id: cid("c1") },
        Input::Media {
            call_id: cid("c1"),
            state: MediaState::Failed,
        },
        Input::LocalDescription {
            call_id: cid("c1"),
            sdp: "x".into(),
        },
    ]
}

#[test]
fn out_of_order_and_duplicate_events() {
    let mut h = Harness::new();
    // Everything before a call exists.
    let stray = stray_inputs();
    for i in stray.clone() {
        assert!(
            matches!(h.input(i.clone()), Err(Rejected::NoCall { .. })),
            "{i:?}"
        );
    }
    assert!(h.take().is_empty());

    // While ringing: answer, candidate, audio before accept.
    press(&mut h, "c1").unwrap();
    h.take();
    for i in [
        Input::Signal(Message::Answer {
            call_id: cid("c1"),
            sdp: "x".into(),
        }),
        Input::Signal(Message::Candidate {
            call_id: cid("c1"),
            candidate: None,
        }),
        Input::AudioEstablished { call_id: cid("c1") },
        Input::LocalDescription {
            call_id: cid("c1"),
            sdp: "x".into(),
        },
    ] {
        assert!(
            matches!(h.input(i.clone()), Err(Rejected::OutOfState { .. })),
            "{i:?}"
        );
    }
    assert_eq!(h.0.m.phase(), Phase::Ringing);
    assert!(h.take().is_empty());

    // Duplicate accept.
    h.signal(Message::Accepted {
        call_id: cid("c1"),
        answerer: flat(),
        route: None,
    })
    .unwrap();
    h.take();
    assert!(
        h.signal(Message::Accepted {
            call_id: cid("c1"),
            answerer: flat(),
            route: None
        })
        .is_err()
    );
    // Duplicate answer.
    h.input(Input::LocalDescription {
        call_id: cid("c1"),
        sdp: "offer".into(),
    })
    .unwrap();
    h.signal(Message::Answer {
        call_id: cid("c1"),
        sdp: "a".into(),
    })
    .unwrap();
    assert!(
        h.signal(Message::Answer {
            call_id: cid("c1"),
            sdp: "a".into()
        })
        .is_err()
    );
    // Messages meant for answerers.
    for m in [
        Message::Ring {
            call_id: cid("c1"),
            group: "g".into(),
            door: None,
        },
        Message::Offer {
            call_id: cid("c1"),
            sdp: "x".into(),
        },
        Message::Taken {
            call_id: cid("c1"),
            by: "x".into(),
        },
    ] {
        assert!(matches!(h.signal(m), Err(Rejected::NotForDoor(_))));
    }
    assert_eq!(h.0.m.phase(), Phase::Connecting);
}

#[test]
fn candidates_flow_both_ways_once_connecting() {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.signal(Message::Accepted {
        call_id: cid("c1"),
        answerer: flat(),
        route: None,
    })
    .unwrap();
    h.take();
    let c = Candidate {
        candidate: "candidate:1 1 udp 1 10.0.0.1 5000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    // A remote candidate before the answer goes to media (which queues it).
    h.signal(Message::Candidate {
        call_id: cid("c1"),
        candidate: Some(c.clone()),
    })
    .unwrap();
    h.input(Input::LocalCandidate {
        call_id: cid("c1"),
        candidate: Some(c.clone()),
    })
    .unwrap();
    h.input(Input::LocalCandidate {
        call_id: cid("c1"),
        candidate: None,
    })
    .unwrap();
    assert_eq!(
        h.take(),
        vec![
            Output::Media(MediaRequest::RemoteCandidate {
                call_id: cid("c1"),
                candidate: Some(c.clone())
            }),
            Output::Send(Message::Candidate {
                call_id: cid("c1"),
                candidate: Some(c)
            }),
            Output::Send(Message::Candidate {
                call_id: cid("c1"),
                candidate: None
            }),
        ]
    );
}

#[test]
fn signaling_drop_keeps_a_flowing_call_and_resumes_after() {
    let mut h = in_call();
    h.input(Input::SignalingDown).unwrap();
    assert!(!h.0.m.signaling_up());
    h.advance(Duration::from_secs(120));
    assert_eq!(h.0.m.phase(), Phase::InCall, "a drop never ends a call");
    // A candidate produced meanwhile is kept for later.
    h.input(Input::LocalCandidate {
        call_id: cid("c1"),
        candidate: None,
    })
    .unwrap();
    assert!(h.take().is_empty());
    h.input(Input::SignalingUp).unwrap();
    assert_eq!(
        h.sent(),
        vec![
            Message::Resume {
                call_id: cid("c1"),
                answerer: Some("flat-1a".into()),
                group: Some("residents".into()),
                // The hub's proof from `accepted`, handed back.
                route: Some("proof-c1".into()),
            },
            Message::Candidate {
                call_id: cid("c1"),
                candidate: None
            },
        ]
    );
    // Hang-up still works after the reconnection.
    h.input(Input::LocalHangup).unwrap();
    assert_eq!(
        h.sent(),
        vec![Message::Hangup {
            call_id: cid("c1"),
            reason: "normal".into()
        }]
    );
}

#[test]
fn ringing_survives_a_drop_and_is_reannounced() {
    let mut h = Harness::new();
    h.input(Input::SignalingDown).unwrap();
    press(&mut h, "c1").unwrap();
    assert_eq!(h.0.m.phase(), Phase::Ringing);
    assert!(h.sent().is_empty(), "nothing can be sent while down");
    h.input(Input::SignalingUp).unwrap();
    assert_eq!(
        h.sent(),
        vec![
            Message::Resume {
                call_id: cid("c1"),
                answerer: None,
                group: Some("residents".into()),
                route: None
            },
            Message::Ring {
                call_id: cid("c1"),
                group: "residents".into(),
                door: None
            },
        ]
    );
    // The ring timeout still applies from the press.
    h.advance(Duration::from_secs(30));
    assert_eq!(h.0.m.phase(), Phase::Ended);
}

#[test]
fn hangup_while_down_is_delivered_and_stale_messages_are_dropped() {
    let mut h = in_call();
    h.input(Input::SignalingDown).unwrap();
    h.input(Input::LocalCandidate {
        call_id: cid("c1"),
        candidate: None,
    })
    .unwrap();
    h.input(Input::LocalHangup).unwrap();
    h.take();
    h.input(Input::SignalingUp).unwrap();
    // No call any more, so no resume; the stale candidate is gone.
    assert_eq!(
        h.sent(),
        vec![Message::Hangup {
            call_id: cid("c1"),
            reason: "normal".into()
        }]
    );
}

#[test]
fn outbox_is_bounded() {
    let mut h = in_call();
    h.input(Input::SignalingDown).unwrap();
    for _ in 0..1000 {
        h.input(Input::LocalCandidate {
            call_id: cid("c1"),
            candidate: None,
        })
        .unwrap();
    }
    assert_eq!(h.0.m.dropped_messages(), 1000 - 128);
}

fn media(h: &mut Harness, state: MediaState) {
    h.input(Input::Media {
        call_id: cid("c1"),
        state,
    })
    .unwrap();
}

/// The media request and the offer that follows it, answered by the page.
fn reoffer_and_answer(h: &mut Harness) {
    h.input(Input::LocalDescription {
        call_id: cid("c1"),
        sdp: "offer 2".into(),
    })
    .unwrap();
    assert_eq!(
        h.sent(),
        vec![Message::Offer {
            call_id: cid("c1"),
            sdp: "offer 2".into()
        }]
    );
    h.signal(Message::Answer {
        call_id: cid("c1"),
        sdp: "answer 2".into(),
    })
    .unwrap();
    assert_eq!(
        h.take(),
        vec![Output::Media(MediaRequest::RemoteAnswer {
            call_id: cid("c1"),
            sdp: "answer 2".into()
        })]
    );
}

#[test]
fn a_dead_path_is_restarted_and_the_call_goes_on() {
    let mut h = in_call();
    // The stack says disconnected only after the receiving timeout of
    // silence: the path is dead, so ICE restarts at once.
    media(&mut h, MediaState::Disconnected);
    let out = h.take();
    assert!(
        out.contains(&Output::Media(MediaRequest::RestartIce {
            call_id: cid("c1")
        })),
        "{out:?}"
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Recovering {
            attempt: 1,
            renew: false,
            ..
        }
    )));
    // A failed report of the same dead path starts nothing more.
    media(&mut h, MediaState::Failed);
    assert!(h.take().is_empty());
    reoffer_and_answer(&mut h);
    // A second answer to the same offer is refused.
    assert!(matches!(
        h.signal(Message::Answer {
            call_id: cid("c1"),
            sdp: "again".into(),
        }),
        Err(Rejected::OutOfState { .. })
    ));
    media(&mut h, MediaState::Checking);
    h.advance(Duration::from_secs(2));
    media(&mut h, MediaState::Connected);
    h.advance(Duration::from_secs(120));
    assert_eq!(h.0.m.phase(), Phase::InCall, "restarted path holds");
    assert!(h.take().is_empty());
}

#[test]
fn restarts_that_do_not_help_end_the_call() {
    let mut h = in_call();
    media(&mut h, MediaState::Disconnected);
    assert!(h.take().contains(&Output::Media(MediaRequest::RestartIce {
        call_id: cid("c1")
    })));
    reoffer_and_answer(&mut h);
    // Each attempt gets the lost timeout (30 s), then the next one.
    h.advance(Duration::from_secs(29));
    assert!(h.take().is_empty());
    h.advance(Duration::from_secs(1));
    let out = h.take();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Recovering { attempt: 2, .. }))
    );
    assert!(out.contains(&Output::Media(MediaRequest::RestartIce {
        call_id: cid("c1")
    })));
    assert_eq!(h.0.m.phase(), Phase::InCall);
    h.advance(Duration::from_secs(30));
    assert_eq!(h.0.m.phase(), Phase::Ended);
    let out = h.take();
    assert!(out.contains(&Output::Send(Message::Hangup {
        call_id: cid("c1"),
        reason: "failed".into()
    })));
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Ended { reason: EndReason::MediaFailed(r), .. } if r.contains("2 restart(s)")
        )),
        "{out:?}"
    );
}

#[test]
fn no_restarts_allowed_ends_on_failure() {
    let mut h = Harness::new();
    h.m = CallMachine::new(CallSettings {
        max_media_restarts: 0,
        ..CallSettings::default()
    });
    h.input(Input::SignalingUp).unwrap();
    press(&mut h, "c1").unwrap();
    h.signal(Message::Accepted {
        call_id: cid("c1"),
        answerer: flat(),
        route: None,
    })
    .unwrap();
    h.take();
    media(&mut h, MediaState::Failed);
    assert_eq!(h.0.m.phase(), Phase::Ended);
    assert!(h.take().contains(&Output::Send(Message::Hangup {
        call_id: cid("c1"),
        reason: "failed".into()
    })));
}

#[test]
fn a_stalled_handshake_gets_a_new_session_before_audio() {
    let mut h = negotiated();
    h.take();
    h.advance(Duration::from_secs(4));
    media(&mut h, MediaState::Stalled);
    let out = h.take();
    assert!(
        out.contains(&Output::Media(MediaRequest::Renew { call_id: cid("c1") })),
        "{out:?}"
    );
    assert_eq!(h.0.m.phase(), Phase::Connecting);
    reoffer_and_answer(&mut h);
    media(&mut h, MediaState::Connected);
    h.input(Input::AudioEstablished { call_id: cid("c1") })
        .unwrap();
    assert_eq!(h.0.m.phase(), Phase::InCall);
    // The connect timeout (20 s from accept) no longer applies.
    h.advance(Duration::from_secs(60));
    assert_eq!(h.0.m.phase(), Phase::InCall);
}

#[test]
fn an_answer_without_an_offer_is_refused() {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.signal(Message::Accepted {
        call_id: cid("c1"),
        answerer: flat(),
        route: None,
    })
    .unwrap();
    h.take();
    assert!(matches!(
        h.signal(Message::Answer {
            call_id: cid("c1"),
            sdp: "early".into(),
        }),
        Err(Rejected::OutOfState { .. })
    ));
    assert!(h.take().is_empty());
}

#[test]
fn media_errors_reply_and_end_only_when_fatal() {
    let mut h = in_call();
    h.input(Input::MediaError {
        call_id: cid("c1"),
        code: ErrorCode::BadCandidate,
        message: "bad candidate".into(),
        fatal: false,
    })
    .unwrap();
    assert_eq!(h.0.m.phase(), Phase::InCall);
    assert!(matches!(
        h.sent().as_slice(),
        [Message::Error {
            code: ErrorCode::BadCandidate,
            ..
        }]
    ));
    h.input(Input::MediaError {
        call_id: cid("c1"),
        code: ErrorCode::BadSdp,
        message: "bad sdp".into(),
        fatal: true,
    })
    .unwrap();
    assert_eq!(h.0.m.phase(), Phase::Ended);
}

#[test]
fn hub_refusal_while_ringing_ends_the_call() {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.signal(Message::Error {
        code: ErrorCode::NotPermitted,
        message: "group".into(),
        reference: Some("ring".into()),
        call_id: Some(cid("c1")),
    })
    .unwrap();
    assert_eq!(h.0.m.phase(), Phase::Ended);
    // An unrelated error changes nothing.
    press(&mut h, "c2").unwrap();
    h.signal(Message::error(ErrorCode::BadJson, "x")).unwrap();
    assert_eq!(h.0.m.phase(), Phase::Ringing);
}

#[test]
fn shutdown_ends_any_call_and_is_fine_when_idle() {
    let mut h = Harness::new();
    h.input(Input::Shutdown).unwrap();
    assert!(h.take().is_empty());
    let mut h = in_call();
    h.input(Input::Shutdown).unwrap();
    assert!(h.take().contains(&Output::Send(Message::Hangup {
        call_id: cid("c1"),
        reason: "shutdown".into()
    })));
}

#[test]
fn stale_timer_is_harmless() {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.input(Input::LocalHangup).unwrap();
    // Fire "timeouts" far in the future: only the return to idle happens.
    h.take();
    h.0.m.handle_timeout(h.0.now + Duration::from_secs(3600));
    h.drain();
    assert_eq!(
        h.take(),
        vec![Output::PhaseChanged {
            phase: Phase::Idle,
            call_id: None
        }]
    );
    h.0.m.handle_timeout(h.0.now + Duration::from_secs(7200));
    h.drain();
    assert!(h.take().is_empty());
}

/// A seeded pseudo-random walk through every input kind: whatever order
/// they come in, the machine never panics, never loses track of its
/// timers, and every call that starts also ends exactly once.
#[test]
fn random_input_sequences_never_break_invariants() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for run in 0..200 {
        let mut h = Harness::new();
        let mut started = 0;
        for step in 0..200 {
            let id = cid(if next() % 4 == 0 { "zz" } else { "c" });
            let i = match next() % 16 {
                0 => Input::ButtonPressed {
                    group: "g".into(),
                    call_id: cid(&format!("c{run}-{step}")),
                },
                1 => Input::LocalHangup,
                2 => Input::SignalingUp,
                3 => Input::SignalingDown,
                4 => Input::Signal(Message::Accepted {
                    call_id: h.0.m.call_id().cloned().unwrap_or(id.clone()),
                    answerer: flat(),
                    route: None,
                }),
                5 => Input::Signal(Message::Answer {
                    call_id: h.0.m.call_id().cloned().unwrap_or(id.clone()),
                    sdp: "a".into(),
                }),
                6 => Input::AudioEstablished {
                    call_id: h.0.m.call_id().cloned().unwrap_or(id.clone()),
                },
                7 => Input::Signal(Message::Hangup {
                    call_id: h.0.m.call_id().cloned().unwrap_or(id.clone()),
                    reason: "x".into(),
                }),
                8 => Input::Media {
                    call_id: h.0.m.call_id().cloned().unwrap_or(id.clone()),
                    state: MediaState::Disconnected,
                },
                9 => Input::LocalCandidate {
                    call_id: h.0.m.call_id().cloned().unwrap_or(id.clone()),
                    candidate: None,
                },
                10 => Input::Signal(Message::Declined {
                    call_id: h.0.m.call_id().cloned().unwrap_or(id.clone()),
                }),
                11 => Input::Signal(Message::Ringing {
                    call_id: h.0.m.call_id().cloned().unwrap_or(id.clone()),
                    answerers: (next() % 2) as u32,
                }),
                12 => Input::LocalDescription {
                    call_id: h.0.m.call_id().cloned().unwrap_or(id),
                    sdp: "o".into(),
                },
                13 => Input::Signal(Message::CallDoor {
                    call_id: cid(&format!("r{run}-{step}")),
                    door: None,
                    answerer: (next() % 8 != 0).then(flat),
                    route: None,
                }),
                14 => Input::ButtonHeld,
                _ => {
                    h.advance(Duration::from_millis(next() % 40_000));
                    continue;
                }
            };
            let before = h.0.m.call_id().cloned();
            let _ = h.input(i);
            if h.0.m.call_id().is_some() && h.0.m.call_id() != before.as_ref() {
                started += 1;
            }
            // A call in progress always has a deadline armed; after it,
            // only the return to idle may be.
            match h.0.m.phase() {
                Phase::Idle => assert!(h.0.m.poll_timeout().is_none(), "run {run} step {step}"),
                _ => assert!(h.0.m.poll_timeout().is_some(), "run {run} step {step}"),
            }
        }
        h.input(Input::Shutdown).unwrap();
        let ended = h
            .log
            .iter()
            .filter(|(_, o)| matches!(o, Output::Ended { .. }))
            .count();
        assert_eq!(started, ended, "run {run}: every call ends exactly once");
        let count = |f: fn(&Output) -> bool| h.log.iter().filter(|(_, o)| f(o)).count();
        assert_eq!(
            count(|o| matches!(o, Output::ResidentCallStarted { .. })),
            count(|o| matches!(o, Output::ResidentCallEnded { .. })),
            "run {run}: every resident's call is audited at its start and its end"
        );
    }
}

// ---- a resident calls the door

fn call_door(h: &mut Harness, id: &str) -> Result<(), Rejected> {
    h.signal(Message::CallDoor {
        call_id: cid(id),
        door: None,
        answerer: Some(flat()),
        route: Some(format!("proof-{id}")),
    })
}

#[test]
fn a_resident_call_is_taken_when_idle_and_runs_like_an_answered_call() {
    let mut h = Harness::new();
    call_door(&mut h, "r1").unwrap();
    assert_eq!(h.0.m.phase(), Phase::Connecting);
    assert!(h.0.m.resident_call());
    assert_eq!(h.0.m.answerer(), Some(&flat()));
    assert_eq!(
        h.take(),
        vec![
            Output::ResidentCallStarted {
                call_id: cid("r1"),
                by: flat()
            },
            // Same negotiation direction as an answered call: the door offers.
            Output::Media(MediaRequest::StartOffer { call_id: cid("r1") }),
            Output::PhaseChanged {
                phase: Phase::Connecting,
                call_id: Some(cid("r1"))
            },
        ]
    );
    // Nothing rings: no `ring` to the hub, no ring timer.
    h.input(Input::LocalDescription {
        call_id: cid("r1"),
        sdp: "offer".into(),
    })
    .unwrap();
    h.signal(Message::Answer {
        call_id: cid("r1"),
        sdp: "answer".into(),
    })
    .unwrap();
    h.input(Input::AudioEstablished { call_id: cid("r1") })
        .unwrap();
    assert_eq!(h.0.m.phase(), Phase::InCall);
    let out = h.take();
    assert!(out.contains(&Output::Send(Message::Offer {
        call_id: cid("r1"),
        sdp: "offer".into()
    })));
    assert!(out.contains(&Output::Media(MediaRequest::RemoteAnswer {
        call_id: cid("r1"),
        sdp: "answer".into()
    })));
    // The resident hangs up after 42.5 s: audited with the duration.
    h.advance(Duration::from_millis(42_500));
    h.signal(Message::Hangup {
        call_id: cid("r1"),
        reason: "normal".into(),
    })
    .unwrap();
    let out = h.take();
    assert!(
        out.contains(&Output::ResidentCallEnded {
            call_id: cid("r1"),
            by: flat(),
            duration: Duration::from_millis(42_500),
            reason: EndReason::RemoteHangup("normal".into()),
        }),
        "{out:?}"
    );
    assert_eq!(h.0.m.phase(), Phase::Ended);
    assert!(!h.0.m.resident_call());
}

#[test]
fn a_resident_call_is_refused_busy_during_another_call() {
    for phase in ["ringing", "talking", "resident"] {
        let mut h = match phase {
            "ringing" => {
                let mut h = Harness::new();
                press(&mut h, "c1").unwrap();
                h
            }
            "talking" => in_call(),
            _ => {
                let mut h = Harness::new();
                call_door(&mut h, "c1").unwrap();
                h
            }
        };
        h.take();
        let before = h.0.m.phase();
        assert_eq!(
            call_door(&mut h, "r2"),
            Err(Rejected::Busy { input: "call_door" })
        );
        assert_eq!(h.0.m.phase(), before, "{phase}: the current call goes on");
        assert_eq!(h.0.m.call_id(), Some(&cid("c1")));
        assert_eq!(
            h.take(),
            vec![
                Output::Send(Message::Hangup {
                    call_id: cid("r2"),
                    reason: "busy".into()
                }),
                Output::ResidentCallRefused {
                    call_id: cid("r2"),
                    by: flat(),
                    reason: "busy"
                },
            ],
            "{phase}"
        );
    }
}

#[test]
fn a_resident_call_is_taken_right_after_the_previous_call_ended() {
    let mut h = in_call();
    h.input(Input::LocalHangup).unwrap();
    assert_eq!(h.0.m.phase(), Phase::Ended);
    call_door(&mut h, "r1").unwrap();
    assert_eq!(h.0.m.phase(), Phase::Connecting);
    // A resend of the same call changes nothing.
    h.take();
    call_door(&mut h, "r1").unwrap();
    assert_eq!(h.take(), vec![]);
}

#[test]
fn a_malformed_resident_call_gets_an_error_reply_and_changes_nothing() {
    let mut h = Harness::new();
    let r = h.signal(Message::CallDoor {
        call_id: cid("r1"),
        door: Some("door-1".into()),
        answerer: None,
        route: None,
    });
    assert!(matches!(r, Err(Rejected::Malformed { .. })), "{r:?}");
    assert_eq!(h.0.m.phase(), Phase::Idle);
    assert!(matches!(
        h.sent().as_slice(),
        [Message::Error {
            code: ErrorCode::BadMessage,
            ..
        }]
    ));
    // `calling` is for answerers only.
    let r = h.signal(Message::Calling {
        call_id: cid("r1"),
        door: flat(),
    });
    assert_eq!(r, Err(Rejected::NotForDoor("calling")));
}

#[test]
fn a_press_during_a_resident_call_is_the_visitor_answering() {
    let mut h = Harness::new();
    call_door(&mut h, "r1").unwrap();
    h.input(Input::AudioEstablished { call_id: cid("r1") })
        .unwrap();
    h.take();
    press(&mut h, "c-new").unwrap();
    // Logged, no new ring, the call goes on.
    assert_eq!(
        h.take(),
        vec![Output::VisitorAnswered { call_id: cid("r1") }]
    );
    assert_eq!(h.0.m.call_id(), Some(&cid("r1")));
    // Holding the button does not hang up a resident's call either...
    assert_eq!(
        h.input(Input::ButtonHeld),
        Err(Rejected::ResidentCall {
            input: "long press"
        })
    );
    assert_eq!(h.0.m.phase(), Phase::InCall);
    assert_eq!(h.take(), vec![]);
    // ...while it does hang up a visitor's call.
    let mut h = in_call();
    h.input(Input::ButtonHeld).unwrap();
    assert_eq!(h.0.m.phase(), Phase::Ended);
    assert!(h.sent().contains(&Message::Hangup {
        call_id: cid("c1"),
        reason: "normal".into()
    }));
}

#[test]
fn a_resident_call_that_never_connects_ends_and_is_audited() {
    let mut h = Harness::new();
    call_door(&mut h, "r1").unwrap();
    h.take();
    h.advance(Duration::from_secs(20));
    let out = h.take();
    assert!(out.contains(&Output::Send(Message::Hangup {
        call_id: cid("r1"),
        reason: "timeout".into()
    })));
    assert!(out.contains(&Output::ResidentCallEnded {
        call_id: cid("r1"),
        by: flat(),
        duration: Duration::from_secs(20),
        reason: EndReason::ConnectTimeout,
    }));
}

#[test]
fn a_resident_call_is_resumed_without_a_group() {
    let mut h = Harness::new();
    call_door(&mut h, "r1").unwrap();
    h.input(Input::SignalingDown).unwrap();
    h.input(Input::SignalingUp).unwrap();
    assert!(h.sent().contains(&Message::Resume {
        call_id: cid("r1"),
        answerer: Some("flat-1a".into()),
        group: None,
        route: Some("proof-r1".into()),
    }));
}

#[test]
fn remote_candidates_beyond_the_cap_are_ignored_and_said_once_per_offer() {
    let mut h = negotiated();
    h.take();
    let candidate = Message::Candidate {
        call_id: cid("c1"),
        candidate: None,
    };
    for _ in 0..10_000 {
        h.signal(candidate.clone()).unwrap();
    }
    let out = h.take();
    let to_media = out
        .iter()
        .filter(|o| matches!(o, Output::Media(MediaRequest::RemoteCandidate { .. })))
        .count();
    assert_eq!(to_media, MAX_REMOTE_CANDIDATES as usize);
    let capped: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::CandidatesCapped { .. }))
        .collect();
    assert_eq!(
        capped,
        vec![&Output::CandidatesCapped {
            call_id: cid("c1"),
            cap: MAX_REMOTE_CANDIDATES
        }]
    );
    // A new offer (an ICE restart) takes candidates again.
    h.input(Input::AudioEstablished { call_id: cid("c1") })
        .unwrap();
    media(&mut h, MediaState::Disconnected);
    assert!(
        h.take()
            .iter()
            .any(|o| matches!(o, Output::Media(MediaRequest::RestartIce { .. }))),
        "the lost path is restarted"
    );
    h.signal(candidate).unwrap();
    assert!(
        h.take()
            .iter()
            .any(|o| matches!(o, Output::Media(MediaRequest::RemoteCandidate { .. })))
    );
}

const LISTEN_ONLY_ANSWER: &str = "v=0\r\ns=-\r\nt=0 0\r\n\
    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
    m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n";

/// Call c1 accepted and offered; the answer sends no audio.
fn negotiated_listen_only() -> Harness {
    let mut h = Harness::new();
    press(&mut h, "c1").unwrap();
    h.signal(Message::Accepted {
        call_id: cid("c1"),
        answerer: flat(),
        route: None,
    })
    .unwrap();
    h.input(Input::LocalDescription {
        call_id: cid("c1"),
        sdp: "offer".into(),
    })
    .unwrap();
    h.take();
    h.signal(Message::Answer {
        call_id: cid("c1"),
        sdp: LISTEN_ONLY_ANSWER.into(),
    })
    .unwrap();
    h
}

#[test]
fn a_listen_only_answer_is_reported_with_its_answerer() {
    let mut h = negotiated_listen_only();
    assert_eq!(
        h.take(),
        vec![
            Output::ListenOnly {
                call_id: cid("c1"),
                by: Some(flat()),
            },
            Output::Media(MediaRequest::RemoteAnswer {
                call_id: cid("c1"),
                sdp: LISTEN_ONLY_ANSWER.into(),
            }),
        ]
    );
    assert_eq!(h.0.m.phase(), Phase::Connecting);
}

#[test]
fn a_listen_only_call_is_up_once_its_connection_is() {
    let mut h = negotiated_listen_only();
    h.take();
    h.advance(Duration::from_millis(300));
    h.input(Input::Media {
        call_id: cid("c1"),
        state: MediaState::Checking,
    })
    .unwrap();
    assert_eq!(h.0.m.phase(), Phase::Connecting);
    // ICE and DTLS up: no incoming audio is waited for.
    h.input(Input::Media {
        call_id: cid("c1"),
        state: MediaState::Connected,
    })
    .unwrap();
    assert_eq!(h.0.m.phase(), Phase::InCall);
    assert!(h.0.m.media_up());
    assert_eq!(
        h.take(),
        vec![
            Output::Established { call_id: cid("c1") },
            Output::PhaseChanged {
                phase: Phase::InCall,
                call_id: Some(cid("c1"))
            },
        ]
    );
    // The media engine's own "audio established" (sent audio) changes nothing.
    h.input(Input::AudioEstablished { call_id: cid("c1") })
        .unwrap();
    assert_eq!(h.take(), vec![]);
    // Far past the connect timeout: still in the call, nothing sent.
    h.advance(CallSettings::default().connect_timeout * 3);
    assert_eq!(h.0.m.phase(), Phase::InCall);
    assert_eq!(h.take(), vec![]);
}

#[test]
fn a_listen_only_call_is_not_a_connect_timeout_when_audio_is_sent() {
    // The media engine reports audio established (first packet sent) before
    // the connection state: the call is up all the same.
    let mut h = negotiated_listen_only();
    h.take();
    h.input(Input::AudioEstablished { call_id: cid("c1") })
        .unwrap();
    assert_eq!(h.0.m.phase(), Phase::InCall);
    assert!(
        h.take()
            .contains(&Output::Established { call_id: cid("c1") })
    );
    h.input(Input::Media {
        call_id: cid("c1"),
        state: MediaState::Connected,
    })
    .unwrap();
    h.advance(CallSettings::default().connect_timeout * 2);
    assert_eq!(h.0.m.phase(), Phase::InCall);
    assert!(
        !h.take()
            .iter()
            .any(|o| matches!(o, Output::Ended { .. } | Output::Established { .. })),
        "established once, never ended"
    );
}

#[test]
fn a_two_way_call_still_waits_for_audio_after_connecting() {
    let mut h = negotiated();
    h.take();
    h.input(Input::Media {
        call_id: cid("c1"),
        state: MediaState::Connected,
    })
    .unwrap();
    assert_eq!(h.0.m.phase(), Phase::Connecting);
    assert!(
        !h.take()
            .iter()
            .any(|o| matches!(o, Output::ListenOnly { .. }))
    );
    h.advance(CallSettings::default().connect_timeout);
    assert!(h.take().contains(&Output::Ended {
        call_id: cid("c1"),
        reason: EndReason::ConnectTimeout
    }));
}
