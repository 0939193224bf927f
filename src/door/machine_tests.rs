//! Deterministic tests of the door logic: synthetic time only.

use std::time::Duration;

use super::indication::{LedPattern, StationState};
use super::*;
use crate::signaling::protocol::CallId;

const S: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

crate::sansio::clocked_rig!(Rig, DoorMachine);

impl Rig {
    fn new(settings: DoorSettings) -> Self {
        Rig(crate::sansio::Clocked::new(|t0| {
            DoorMachine::new(settings, t0)
        }))
    }

    fn default() -> Self {
        Self::new(DoorSettings::default())
    }

    fn drain(&mut self) -> Vec<DoorOutput> {
        self.0.drain()
    }

    /// Outputs other than LED changes.
    fn events(&mut self) -> Vec<DoorOutput> {
        self.drain()
            .into_iter()
            .filter(|o| !matches!(o, DoorOutput::Led { .. }))
            .collect()
    }

    fn input(&mut self, i: DoorInput) -> Vec<DoorOutput> {
        self.0.m.handle_input(i, self.0.now);
        self.events()
    }

    /// Advance time to `t0 + at`, firing every deadline on the way in
    /// order, then once more at `at` itself; LED changes left out.
    fn advance_to(&mut self, at: Duration) -> Vec<DoorOutput> {
        let mut out = self.0.advance_to(at);
        let now = self.0.now;
        self.0.m.handle_timeout(now);
        out.extend(self.drain());
        out.retain(|o| !matches!(o, DoorOutput::Led { .. }));
        out
    }

    fn answer(&mut self, call: &str) {
        self.input(DoorInput::Call {
            state: StationState::InCall,
            answered: Some((cid(call), "flat-1".into())),
        });
    }

    fn open(&mut self, call: &str, nonce: &str) -> (bool, Option<Refusal>) {
        let out = self.input(DoorInput::RemoteOpen {
            call_id: cid(call),
            peer: "flat-1".into(),
            nonce: nonce.into(),
        });
        out.iter()
            .find_map(|o| match o {
                DoorOutput::OpenAttempt {
                    granted, reason, ..
                } => Some((*granted, *reason)),
                _ => None,
            })
            .expect("every remote open attempt is answered")
    }

    fn led(&self, name: &str) -> (LedPattern, bool) {
        self.m
            .leds()
            .find(|(n, _, _)| *n == name)
            .map(|(_, p, on)| (p, on))
            .expect("LED exists")
    }
}

fn relay(energised: bool) -> DoorOutput {
    DoorOutput::Relay { energised }
}

#[test]
fn the_first_output_de_energises_the_relay() {
    let mut r = Rig::default();
    assert_eq!(r.events(), vec![relay(false)]);
    assert!(!r.0.m.relay_energised());
}

#[test]
fn a_fail_safe_lock_is_de_energised_first_then_held_shut() {
    let mut r = Rig::new(DoorSettings {
        lock: LockKind::FailSafe,
        ..DoorSettings::default()
    });
    assert_eq!(r.events(), vec![relay(false), relay(true)]);
    r.input(DoorInput::ExitPressed);
    assert!(!r.0.m.relay_energised(), "fail-safe opens by de-energising");
    r.advance_to(5 * S);
    assert!(r.0.m.relay_energised());
    assert_eq!(r.input(DoorInput::Shutdown), vec![relay(false)]);
}

#[test]
fn exit_button_pulses_the_relay_for_the_configured_time() {
    let mut r = Rig::default();
    r.drain();
    let out = r.input(DoorInput::ExitPressed);
    assert_eq!(
        out,
        vec![
            relay(true),
            DoorOutput::OpenAttempt {
                source: OpenSource::ExitButton,
                granted: true,
                reason: None,
                pulse: 5 * S,
            }
        ]
    );
    assert_eq!(r.0.m.station_state(), StationState::DoorOpen);
    assert!(r.advance_to(ms(4999)).is_empty());
    assert!(r.0.m.relay_energised());
    assert_eq!(r.advance_to(5 * S), vec![relay(false)]);
    assert!(!r.0.m.unlocked());
}

#[test]
fn a_second_open_during_a_pulse_extends_it() {
    let mut r = Rig::default();
    r.drain();
    r.input(DoorInput::ExitPressed);
    r.advance_to(3 * S);
    let out = r.input(DoorInput::ExitPressed);
    assert!(!out.contains(&relay(true)), "already energised: no rewrite");
    assert!(r.advance_to(ms(7999)).is_empty());
    assert_eq!(r.advance_to(8 * S), vec![relay(false)]);
}

#[test]
fn shutdown_during_a_pulse_de_energises_and_stops() {
    let mut r = Rig::default();
    r.drain();
    r.input(DoorInput::ExitPressed);
    let out = r.input(DoorInput::Shutdown);
    assert_eq!(out, vec![relay(false)]);
    assert_eq!(r.0.m.poll_timeout(), None);
    // Nothing reopens a stopped door.
    assert!(r.input(DoorInput::ExitPressed).is_empty());
}

#[test]
fn door_held_open_raises_an_alarm_and_closing_clears_it() {
    let mut r = Rig::new(DoorSettings {
        held_open_alarm: 30 * S,
        ..DoorSettings::default()
    });
    r.drain();
    r.input(DoorInput::DoorSensor { open: true });
    assert!(r.advance_to(ms(29_999)).is_empty());
    assert_eq!(
        r.advance_to(30 * S),
        vec![DoorOutput::HeldOpenAlarm { open_for: 30 * S }]
    );
    assert!(r.0.m.alarm());
    assert_eq!(r.0.m.station_state(), StationState::Fault);
    // Raised once only.
    assert!(r.advance_to(120 * S).is_empty());
    assert_eq!(
        r.input(DoorInput::DoorSensor { open: false }),
        vec![DoorOutput::HeldOpenCleared]
    );
    assert!(!r.0.m.alarm());
}

#[test]
fn a_door_closed_in_time_raises_nothing() {
    let mut r = Rig::default();
    r.drain();
    r.input(DoorInput::DoorSensor { open: true });
    r.advance_to(10 * S);
    assert!(r.input(DoorInput::DoorSensor { open: false }).is_empty());
    assert!(r.advance_to(600 * S).is_empty());
}

#[test]
fn remote_open_is_granted_once_per_nonce_within_the_answered_call() {
    let mut r = Rig::default();
    r.drain();
    r.answer("c-1");
    let out = r.input(DoorInput::RemoteOpen {
        call_id: cid("c-1"),
        peer: "flat-1".into(),
        nonce: "n1".into(),
    });
    assert_eq!(
        out,
        vec![
            relay(true),
            DoorOutput::OpenAttempt {
                source: OpenSource::Remote {
                    call_id: cid("c-1"),
                    peer: "flat-1".into(),
                    nonce: "n1".into()
                },
                granted: true,
                reason: None,
                pulse: 5 * S,
            }
        ]
    );
    r.advance_to(10 * S);
    assert_eq!(r.open("c-1", "n1"), (false, Some(Refusal::Replay)));
    assert_eq!(r.open("c-1", "n2"), (true, None));
}

#[test]
fn remote_open_is_rate_limited() {
    let mut r = Rig::default();
    r.drain();
    r.answer("c-1");
    assert_eq!(r.open("c-1", "a"), (true, None));
    r.advance_to(ms(2999));
    assert_eq!(r.open("c-1", "b"), (false, Some(Refusal::RateLimited)));
    r.advance_to(3 * S);
    assert_eq!(r.open("c-1", "c"), (true, None));
}

#[test]
fn remote_open_needs_an_answered_call_and_its_own_channel() {
    let mut r = Rig::default();
    r.drain();
    assert_eq!(r.open("c-1", "a"), (false, Some(Refusal::NoCall)));
    // Ringing: nobody answered yet.
    r.input(DoorInput::Call {
        state: StationState::Ringing,
        answered: None,
    });
    assert_eq!(r.open("c-1", "b"), (false, Some(Refusal::NoCall)));
    r.answer("c-2");
    assert_eq!(r.open("c-1", "c"), (false, Some(Refusal::OtherCall)));
    // After hang-up nothing opens, not even the call's own channel.
    r.input(DoorInput::Call {
        state: StationState::Idle,
        answered: None,
    });
    assert_eq!(r.open("c-2", "d"), (false, Some(Refusal::NoCall)));
    assert!(!r.0.m.relay_energised());
}

#[test]
fn nonces_are_forgotten_only_with_a_new_call() {
    let mut r = Rig::default();
    r.drain();
    r.answer("c-1");
    assert_eq!(r.open("c-1", "same"), (true, None));
    // The same call announced again (phase change) keeps its nonces.
    r.answer("c-1");
    r.advance_to(10 * S);
    assert_eq!(r.open("c-1", "same"), (false, Some(Refusal::Replay)));
    r.answer("c-2");
    assert_eq!(r.open("c-2", "same"), (true, None));
}

#[test]
fn a_flood_of_fresh_nonces_keeps_the_nonce_window_bounded() {
    let mut r = Rig::default();
    r.drain();
    r.answer("c-1");
    let mut granted = 0;
    // 30,000 requests with fresh nonces over 60 s.
    for i in 0..30_000u64 {
        r.advance_to(ms(i * 2));
        if r.open("c-1", &format!("n{i}")).0 {
            granted += 1;
        }
    }
    // One per remote_open_interval (3 s) of the 60 s.
    assert_eq!(granted, 20);
    // Only nonces past the rate limit are kept, and at most the window.
    assert_eq!(r.0.m.nonces_held(), 20);
    for i in 0..200u64 {
        r.advance_to(ms(60_000 + i * 3000));
        assert_eq!(r.open("c-1", &format!("late{i}")), (true, None));
    }
    assert_eq!(r.0.m.nonces_held(), NONCE_WINDOW);
    // A recent one is still a replay.
    r.advance_to(ms(60_000 + 200 * 3000));
    assert_eq!(r.open("c-1", "late199"), (false, Some(Refusal::Replay)));
}

#[test]
fn bad_nonces_are_refused() {
    let mut r = Rig::default();
    r.drain();
    r.answer("c-1");
    assert_eq!(r.open("c-1", ""), (false, Some(Refusal::BadNonce)));
    assert_eq!(
        r.open("c-1", &"x".repeat(65)),
        (false, Some(Refusal::BadNonce))
    );
    assert_eq!(r.open("c-1", "a b"), (false, Some(Refusal::BadNonce)));
    assert_eq!(r.open("c-1", "é"), (false, Some(Refusal::BadNonce)));
    assert!(!r.0.m.relay_energised());
}

#[test]
fn tamper_locks_remote_opening_out_for_the_configured_time() {
    let mut r = Rig::new(DoorSettings {
        tamper_lockout: Some(60 * S),
        ..DoorSettings::default()
    });
    r.drain();
    r.answer("c-1");
    assert_eq!(
        r.input(DoorInput::Tamper { active: true }),
        vec![DoorOutput::TamperChanged {
            active: true,
            lockout: true
        }]
    );
    assert_eq!(r.open("c-1", "a"), (false, Some(Refusal::TamperLockout)));
    // The exit button still works: people must get out.
    r.advance_to(10 * S);
    assert!(r.input(DoorInput::ExitPressed).contains(&relay(true)));
    r.advance_to(57 * S);
    assert_eq!(r.open("c-1", "b"), (false, Some(Refusal::TamperLockout)));
    r.advance_to(60 * S);
    assert_eq!(r.open("c-1", "c"), (true, None));
}

#[test]
fn tamper_without_lockout_is_only_an_event() {
    let mut r = Rig::new(DoorSettings {
        tamper_lockout: None,
        ..DoorSettings::default()
    });
    r.drain();
    r.answer("c-1");
    assert_eq!(
        r.input(DoorInput::Tamper { active: true }),
        vec![DoorOutput::TamperChanged {
            active: true,
            lockout: false
        }]
    );
    assert!(r.input(DoorInput::Tamper { active: true }).is_empty());
    assert_eq!(r.open("c-1", "a"), (true, None));
}

#[test]
fn a_press_rings_and_a_long_press_during_a_call_hangs_up() {
    let mut r = Rig::new(DoorSettings {
        long_press: 2 * S,
        ..DoorSettings::default()
    });
    r.drain();
    r.input(DoorInput::Call {
        state: StationState::Idle,
        answered: None,
    });
    // Idle: a held press only rings, never hangs up the call it starts.
    let out = r.input(DoorInput::ButtonDown {
        button: "call".into(),
    });
    assert_eq!(
        out,
        vec![DoorOutput::Ring {
            button: "call".into()
        }]
    );
    r.input(DoorInput::Call {
        state: StationState::Ringing,
        answered: None,
    });
    assert!(r.advance_to(10 * S).is_empty());
    r.input(DoorInput::ButtonUp {
        button: "call".into(),
    });
    r.answer("c-1");
    // In a call: a short press is harmless...
    r.input(DoorInput::ButtonDown {
        button: "call".into(),
    });
    r.advance_to(ms(11_999));
    assert!(
        r.input(DoorInput::ButtonUp {
            button: "call".into()
        })
        .is_empty()
    );
    assert!(r.advance_to(20 * S).is_empty());
    // ...a long one hangs up, once.
    r.input(DoorInput::ButtonDown {
        button: "call".into(),
    });
    assert!(r.advance_to(ms(21_999)).is_empty());
    assert_eq!(
        r.advance_to(22 * S),
        vec![DoorOutput::Hangup {
            button: "call".into()
        }]
    );
    assert!(r.advance_to(30 * S).is_empty());
}

#[test]
fn a_call_ending_disarms_a_pending_long_press() {
    let mut r = Rig::default();
    r.drain();
    r.answer("c-1");
    r.input(DoorInput::ButtonDown {
        button: "call".into(),
    });
    r.input(DoorInput::Call {
        state: StationState::Idle,
        answered: None,
    });
    assert!(r.advance_to(10 * S).is_empty());
}

#[test]
fn two_buttons_ring_independently() {
    let mut r = Rig::default();
    r.drain();
    r.input(DoorInput::Call {
        state: StationState::Idle,
        answered: None,
    });
    assert_eq!(
        r.input(DoorInput::ButtonDown { button: "a".into() }),
        vec![DoorOutput::Ring { button: "a".into() }]
    );
    assert_eq!(
        r.input(DoorInput::ButtonDown { button: "b".into() }),
        vec![DoorOutput::Ring { button: "b".into() }]
    );
    // A bounce that repeats a down edge without an up is not a new press.
    assert!(
        r.input(DoorInput::ButtonDown { button: "a".into() })
            .is_empty()
    );
}

fn two_leds() -> DoorSettings {
    DoorSettings {
        leds: vec![
            LedPlan::default_for("status"),
            LedPlan {
                name: "door".into(),
                idle: LedPattern::Off,
                signaling_down: LedPattern::Off,
                ringing: LedPattern::Off,
                in_call: LedPattern::Off,
                door_open: LedPattern::On,
                fault: LedPattern::SlowBlink,
                pairing: LedPattern::On,
            },
        ],
        ..DoorSettings::default()
    }
}

#[test]
fn leds_follow_the_station_state_per_led() {
    let mut r = Rig::new(two_leds());
    assert_eq!(r.led("status"), (LedPattern::FastBlink, true));
    assert_eq!(r.led("door"), (LedPattern::Off, false));
    r.input(DoorInput::Call {
        state: StationState::Idle,
        answered: None,
    });
    assert_eq!(r.led("status"), (LedPattern::On, true));
    r.input(DoorInput::Call {
        state: StationState::Ringing,
        answered: None,
    });
    assert_eq!(r.led("status").0, LedPattern::SlowBlink);
    r.answer("c-1");
    assert_eq!(r.led("status"), (LedPattern::On, true));
    r.input(DoorInput::ExitPressed);
    assert_eq!(r.led("status").0, LedPattern::SlowBlink);
    assert_eq!(r.led("door"), (LedPattern::On, true));
    r.advance_to(5 * S);
    assert_eq!(r.led("door"), (LedPattern::Off, false));
    r.input(DoorInput::Tamper { active: true });
    assert_eq!(r.led("status").0, LedPattern::FastBlink);
    assert_eq!(r.led("door").0, LedPattern::SlowBlink);
    r.input(DoorInput::Fault { active: true });
    r.input(DoorInput::Tamper { active: false });
    assert_eq!(r.0.m.station_state(), StationState::Fault);
    r.input(DoorInput::Fault { active: false });
    assert_eq!(r.0.m.station_state(), StationState::InCall);
}

#[test]
fn blink_phases_are_computed_from_time() {
    let mut r = Rig::new(two_leds());
    r.drain();
    r.input(DoorInput::Call {
        state: StationState::Ringing,
        answered: None,
    });
    // Slow blink started now: on 0..500 ms, off 500..1000 ms, ...
    let start = r.0.now - r.t0;
    let mut edges = Vec::new();
    for _ in 0..4 {
        let next =
            r.0.m
                .poll_timeout()
                .expect("a blinking LED has a next edge");
        edges.push(next - r.t0 - start);
        r.0.now = next;
        r.0.m.handle_timeout(next);
        r.drain();
    }
    assert_eq!(edges, vec![ms(500), ms(1000), ms(1500), ms(2000)]);
    assert_eq!(r.led("status"), (LedPattern::SlowBlink, true));
    r.advance_to(start + ms(2600));
    assert_eq!(r.led("status"), (LedPattern::SlowBlink, false));
    r.advance_to(start + ms(3000));
    assert_eq!(r.led("status"), (LedPattern::SlowBlink, true));
    let t = r.t0 + start;
    assert!(level_at(LedPattern::FastBlink, t, t + ms(124)));
    assert!(!level_at(LedPattern::FastBlink, t, t + ms(125)));
    assert!(level_at(LedPattern::FastBlink, t, t + ms(250)));
    assert!(!level_at(LedPattern::Off, t, t));
    assert!(level_at(LedPattern::On, t, t + 1000 * S));
}

#[test]
fn led_outputs_report_each_level_change_once() {
    let mut r = Rig::new(two_leds());
    r.drain();
    r.0.m.handle_input(
        DoorInput::Call {
            state: StationState::Idle,
            answered: None,
        },
        r.0.now,
    );
    let out = r.drain();
    assert_eq!(
        out,
        vec![DoorOutput::Led {
            name: "status".into(),
            pattern: LedPattern::On,
            on: true
        }]
    );
    // Steady: no deadline.
    assert_eq!(r.0.m.poll_timeout(), None);
}

#[test]
fn shutdown_turns_every_led_off() {
    let mut r = Rig::new(two_leds());
    r.drain();
    r.0.m.handle_input(DoorInput::Shutdown, r.0.now);
    let out = r.drain();
    assert!(out.contains(&DoorOutput::Led {
        name: "status".into(),
        pattern: LedPattern::Off,
        on: false
    }));
    assert_eq!(r.led("door"), (LedPattern::Off, false));
}

#[test]
fn pairing_shows_on_the_leds_only_while_no_call_is_shown() {
    let mut r = Rig::new(two_leds());
    r.input(DoorInput::Call {
        state: StationState::Idle,
        answered: None,
    });
    r.input(DoorInput::Pairing { active: true });
    assert_eq!(r.0.m.station_state(), StationState::Pairing);
    assert_eq!(r.led("status").0, LedPattern::MediumBlink);
    assert_eq!(r.led("door"), (LedPattern::On, true));
    // 2 Hz: off after 250 ms, on again after 500 ms.
    r.advance_to(ms(260));
    assert_eq!(r.led("status"), (LedPattern::MediumBlink, false));
    r.advance_to(ms(510));
    assert_eq!(r.led("status"), (LedPattern::MediumBlink, true));
    // A ringing call takes the LEDs; pairing shows again after it.
    r.input(DoorInput::Call {
        state: StationState::Ringing,
        answered: None,
    });
    assert_eq!(r.0.m.station_state(), StationState::Ringing);
    r.input(DoorInput::Call {
        state: StationState::Idle,
        answered: None,
    });
    assert_eq!(r.0.m.station_state(), StationState::Pairing);
    r.input(DoorInput::Pairing { active: false });
    assert_eq!(r.0.m.station_state(), StationState::Idle);
    assert_eq!(r.led("status"), (LedPattern::On, true));
}

#[test]
fn a_long_press_of_the_service_button_asks_for_pairing_once() {
    let mut r = Rig::default();
    r.drain();
    assert!(r.input(DoorInput::Service { pressed: true }).is_empty());
    // Released early: nothing.
    assert!(r.advance_to(ms(1_000)).is_empty());
    assert!(r.input(DoorInput::Service { pressed: false }).is_empty());
    assert!(r.advance_to(ms(5_000)).is_empty());
    // Held for the long press: one request, however long it stays down.
    r.input(DoorInput::Service { pressed: true });
    assert!(r.advance_to(ms(6_999)).is_empty());
    assert_eq!(r.advance_to(ms(7_000)), vec![DoorOutput::ServiceLongPress]);
    assert!(r.advance_to(ms(20_000)).is_empty());
    assert!(r.input(DoorInput::Service { pressed: false }).is_empty());
}

fn cid(s: &str) -> CallId {
    CallId::new(s).expect("test ids are valid")
}
