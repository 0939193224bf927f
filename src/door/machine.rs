//! The door's local logic as a sans-I/O state machine, beside the call
//! machine: the lock relay, the exit button, the door sensor, the tamper
//! switch, long presses on call buttons, remote opening over a call's data
//! channel, and what every LED shows.
//!
//! Like `CallMachine` it never reads a clock and never does I/O: every input
//! carries `now`, timers reduce to one deadline (`poll_timeout`) and effects
//! come out of `poll_output`. LED blinking is computed from time, so a test
//! asserts an LED's level at any synthetic instant.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::indication::{LedPattern, StationState};
use crate::signaling::protocol::CallId;

/// What the lock does without power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    /// Locked when the relay is de-energised (strikes, motor locks): a dead
    /// station keeps the door shut.
    FailSecure,
    /// Unlocked when the relay is de-energised (magnetic locks on escape
    /// routes): a dead station lets people out.
    FailSafe,
}

impl LockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::FailSecure => "fail_secure",
            LockKind::FailSafe => "fail_safe",
        }
    }

    /// The relay level that holds the door in `unlocked` state.
    pub fn energised(self, unlocked: bool) -> bool {
        match self {
            LockKind::FailSecure => unlocked,
            LockKind::FailSafe => !unlocked,
        }
    }
}

/// One LED's pattern for each station state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedPlan {
    pub name: String,
    pub idle: LedPattern,
    pub signaling_down: LedPattern,
    pub ringing: LedPattern,
    pub in_call: LedPattern,
    pub door_open: LedPattern,
    pub fault: LedPattern,
    pub pairing: LedPattern,
}

impl LedPlan {
    /// The shipped patterns, for an LED named `name`.
    pub fn default_for(name: &str) -> Self {
        LedPlan {
            name: name.to_owned(),
            idle: StationState::Idle.default_pattern(),
            signaling_down: StationState::SignalingDown.default_pattern(),
            ringing: StationState::Ringing.default_pattern(),
            in_call: StationState::InCall.default_pattern(),
            door_open: StationState::DoorOpen.default_pattern(),
            fault: StationState::Fault.default_pattern(),
            pairing: StationState::Pairing.default_pattern(),
        }
    }

    pub fn pattern(&self, state: StationState) -> LedPattern {
        match state {
            StationState::Idle => self.idle,
            StationState::SignalingDown => self.signaling_down,
            StationState::Ringing => self.ringing,
            StationState::InCall => self.in_call,
            StationState::DoorOpen => self.door_open,
            StationState::Fault => self.fault,
            StationState::Pairing => self.pairing,
        }
    }
}

/// Settings of the door logic, from `[door]`, `[[leds]]` and `[[buttons]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct DoorSettings {
    pub lock: LockKind,
    /// How long an open keeps the lock released.
    pub pulse: Duration,
    /// The door standing open longer than this raises an alarm.
    pub held_open_alarm: Duration,
    /// After the tamper switch trips, remote opening is refused this long
    /// (`None`: no lockout, only the event).
    pub tamper_lockout: Option<Duration>,
    /// Minimum time between two remote open attempts of one call.
    pub remote_open_interval: Duration,
    /// A call button held this long during a call hangs it up.
    pub long_press: Duration,
    pub leds: Vec<LedPlan>,
}

impl Default for DoorSettings {
    fn default() -> Self {
        DoorSettings {
            lock: LockKind::FailSecure,
            pulse: Duration::from_secs(5),
            held_open_alarm: Duration::from_secs(60),
            tamper_lockout: Some(Duration::from_secs(300)),
            remote_open_interval: Duration::from_secs(3),
            long_press: Duration::from_secs(2),
            leds: vec![LedPlan::default_for("status")],
        }
    }
}

/// Who asked for the door to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenSource {
    /// The exit button inside.
    ExitButton,
    /// A resident on a call's data channel.
    Remote {
        /// The call whose data channel carried the request.
        call_id: CallId,
        peer: String,
        nonce: String,
    },
}

/// Why a remote open was refused. `as_str` is the `reason` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No call is answered right now.
    NoCall,
    /// The channel belongs to another (older) call.
    OtherCall,
    /// The nonce was seen before within this call.
    Replay,
    /// The nonce is empty, too long or not printable ASCII.
    BadNonce,
    /// Too soon after the previous attempt.
    RateLimited,
    /// The tamper switch tripped recently.
    TamperLockout,
    /// The message on the channel is not an open request.
    BadRequest,
    /// Arrived over signaling, which may never open the door.
    NotPermitted,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCall => "no_call",
            Refusal::OtherCall => "other_call",
            Refusal::Replay => "replay",
            Refusal::BadNonce => "bad_nonce",
            Refusal::RateLimited => "rate_limited",
            Refusal::TamperLockout => "tamper_lockout",
            Refusal::BadRequest => "bad_request",
            Refusal::NotPermitted => "not_permitted",
        }
    }
}

/// Everything that can happen to the door logic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DoorInput {
    /// A call button went down (debounced).
    ButtonDown { button: String },
    /// A call button went up.
    ButtonUp { button: String },
    /// The exit button was pressed.
    ExitPressed,
    /// The door sensor changed.
    DoorSensor { open: bool },
    /// The tamper switch changed.
    Tamper { active: bool },
    /// A resident asks to open, on the data channel of `call_id`.
    RemoteOpen {
        call_id: CallId,
        peer: String,
        nonce: String,
    },
    /// The call state changed. `state` is what the LEDs would show for the
    /// call alone; `answered` is the answered call's id and peer, if any.
    Call {
        state: StationState,
        answered: Option<(CallId, String)>,
    },
    /// A hardware fault appeared or cleared (a line failed).
    Fault { active: bool },
    /// Bluetooth pairing opened or closed.
    Pairing { active: bool },
    /// The service button went down or up: held for `long_press`, it asks
    /// for Bluetooth pairing.
    Service { pressed: bool },
    /// The daemon is stopping: release the relay.
    Shutdown,
}

/// What the door logic wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DoorOutput {
    /// Drive the relay to this level.
    Relay { energised: bool },
    /// A call button was pressed: ring its group.
    Ring { button: String },
    /// A call button was held through a call: hang it up.
    Hangup { button: String },
    /// The service button was held for `long_press`: open Bluetooth
    /// pairing.
    ServiceLongPress,
    /// The result of an open attempt; remote ones are answered on the
    /// channel and every one is an audit record.
    OpenAttempt {
        source: OpenSource,
        granted: bool,
        reason: Option<Refusal>,
        pulse: Duration,
    },
    /// The door has stood open too long.
    HeldOpenAlarm { open_for: Duration },
    /// The door was closed again after an alarm.
    HeldOpenCleared,
    /// The tamper switch changed; `lockout` when remote opens are now
    /// refused for the configured time.
    TamperChanged { active: bool, lockout: bool },
    /// An LED changes level (and maybe pattern).
    Led {
        name: String,
        pattern: LedPattern,
        on: bool,
    },
}

/// The nonce a resident's page may send: 1 to 64 printable ASCII characters.
pub fn valid_nonce(nonce: &str) -> bool {
    (1..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_graphic())
}

/// Nonces remembered per call: requests are at least
/// `remote_open_interval` apart once past the rate limit, so this covers
/// minutes of a call; a replay that old is a resend, not an attack.
pub const NONCE_WINDOW: usize = 64;

#[derive(Debug)]
struct AnsweredCall {
    id: CallId,
    /// The last `NONCE_WINDOW` nonces that passed the rate limit, oldest
    /// first, with a set for the lookup.
    nonces: VecDeque<String>,
    seen: HashSet<String>,
    last_attempt: Option<Instant>,
}

impl AnsweredCall {
    fn new(id: CallId) -> Self {
        AnsweredCall {
            id,
            nonces: VecDeque::with_capacity(NONCE_WINDOW),
            seen: HashSet::with_capacity(NONCE_WINDOW),
            last_attempt: None,
        }
    }

    /// Keeps `nonce` (not in the window yet), forgetting the oldest.
    fn remember(&mut self, nonce: &str) {
        if self.nonces.len() == NONCE_WINDOW
            && let Some(old) = self.nonces.pop_front()
        {
            self.seen.remove(&old);
        }
        self.nonces.push_back(nonce.to_owned());
        self.seen.insert(nonce.to_owned());
    }

    /// Nonces held (for tests: the window stays bounded).
    fn held(&self) -> usize {
        self.seen.len()
    }
}

#[derive(Debug)]
struct LedState {
    pattern: LedPattern,
    /// Blink phases count from here.
    since: Instant,
    /// The last time the level was computed.
    checked: Instant,
    on: bool,
}

/// The door's state machine. See the module documentation.
#[derive(Debug)]
pub struct DoorMachine {
    settings: DoorSettings,
    outputs: VecDeque<DoorOutput>,
    unlocked_until: Option<Instant>,
    relay_energised: bool,
    door_open_since: Option<Instant>,
    alarm: bool,
    tamper: bool,
    lockout_until: Option<Instant>,
    fault: bool,
    /// Bluetooth pairing is open (the LEDs show it).
    pairing: bool,
    /// The service button is down; its long press fires at this deadline
    /// (cleared once fired or released).
    service_held_until: Option<Instant>,
    call_state: StationState,
    call: Option<AnsweredCall>,
    /// Buttons down and the deadline of their long press (only armed when
    /// the press started during a call).
    held: Vec<(String, Option<Instant>)>,
    leds: Vec<LedState>,
    stopped: bool,
}

impl DoorMachine {
    /// A machine whose first output drives the relay de-energised, before
    /// anything else: a station restarted in the middle of a pulse (power
    /// cut, `kill -9`) must not leave the relay as it was.
    pub fn new(settings: DoorSettings, now: Instant) -> Self {
        let leds = settings
            .leds
            .iter()
            .map(|_| LedState {
                pattern: LedPattern::Off,
                since: now,
                checked: now,
                on: false,
            })
            .collect();
        let mut m = DoorMachine {
            settings,
            outputs: VecDeque::new(),
            unlocked_until: None,
            relay_energised: false,
            door_open_since: None,
            alarm: false,
            tamper: false,
            lockout_until: None,
            fault: false,
            pairing: false,
            service_held_until: None,
            call_state: StationState::SignalingDown,
            call: None,
            held: Vec::new(),
            leds,
            stopped: false,
        };
        m.outputs.push_back(DoorOutput::Relay { energised: false });
        // A fail-safe lock is held shut by energising the relay.
        m.drive_relay();
        m.refresh_leds(now);
        m
    }

    // ---- getters ----

    pub fn settings(&self) -> &DoorSettings {
        &self.settings
    }

    /// Door-open nonces remembered for the current call (bounded by
    /// [`NONCE_WINDOW`]).
    pub fn nonces_held(&self) -> usize {
        self.call.as_ref().map_or(0, AnsweredCall::held)
    }

    pub fn relay_energised(&self) -> bool {
        self.relay_energised
    }

    /// The lock is released (a pulse is running).
    pub fn unlocked(&self) -> bool {
        self.unlocked_until.is_some()
    }

    pub fn door_open(&self) -> bool {
        self.door_open_since.is_some()
    }

    pub fn alarm(&self) -> bool {
        self.alarm
    }

    pub fn tamper(&self) -> bool {
        self.tamper
    }

    pub fn locked_out(&self, now: Instant) -> bool {
        self.lockout_until.is_some_and(|t| now < t)
    }

    /// The state the LEDs show.
    pub fn station_state(&self) -> StationState {
        if self.fault || self.tamper || self.alarm {
            StationState::Fault
        } else if self.unlocked_until.is_some() {
            StationState::DoorOpen
        } else if self.pairing
            && matches!(
                self.call_state,
                StationState::Idle | StationState::SignalingDown
            )
        {
            StationState::Pairing
        } else {
            self.call_state
        }
    }

    /// Each LED's name, pattern and current level.
    pub fn leds(&self) -> impl Iterator<Item = (&str, LedPattern, bool)> {
        self.settings
            .leds
            .iter()
            .zip(&self.leds)
            .map(|(plan, s)| (plan.name.as_str(), s.pattern, s.on))
    }

    // ---- outputs ----

    pub fn poll_output(&mut self) -> Option<DoorOutput> {
        self.outputs.pop_front()
    }

    /// The earliest deadline: end of a pulse, the held-open alarm, the end
    /// of a lockout, a long press, or the next LED edge.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let alarm = match (self.door_open_since, self.alarm) {
            (Some(since), false) => Some(since + self.settings.held_open_alarm),
            _ => None,
        };
        let leds = self
            .leds
            .iter()
            .filter_map(|l| next_edge(l.pattern, l.since, l.checked));
        [
            self.unlocked_until,
            alarm,
            self.lockout_until,
            self.service_held_until,
        ]
        .into_iter()
        .flatten()
        .chain(self.held.iter().filter_map(|(_, t)| *t))
        .chain(leds)
        .min()
    }

    // ---- inputs ----

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        if self.unlocked_until.is_some_and(|t| t <= now) {
            self.unlocked_until = None;
            self.drive_relay();
        }
        if let Some(since) = self.door_open_since
            && !self.alarm
            && since + self.settings.held_open_alarm <= now
        {
            self.alarm = true;
            self.outputs.push_back(DoorOutput::HeldOpenAlarm {
                open_for: now - since,
            });
        }
        if self.lockout_until.is_some_and(|t| t <= now) {
            self.lockout_until = None;
        }
        if self.service_held_until.is_some_and(|t| t <= now) {
            self.service_held_until = None;
            self.outputs.push_back(DoorOutput::ServiceLongPress);
        }
        let mut fired = Vec::new();
        for (button, deadline) in &mut self.held {
            if deadline.is_some_and(|t| t <= now) {
                *deadline = None;
                fired.push(button.clone());
            }
        }
        for button in fired {
            self.outputs.push_back(DoorOutput::Hangup { button });
        }
        self.refresh_leds(now);
    }

    pub fn handle_input(&mut self, input: DoorInput, now: Instant) {
        if self.stopped {
            return;
        }
        match input {
            DoorInput::ButtonDown { button } => {
                if self.held.iter().any(|(b, _)| *b == button) {
                    return;
                }
                // Only a press that starts during a call can end it; a
                // visitor holding the button to ring must not hang up the
                // call they just started.
                let in_call = matches!(
                    self.call_state,
                    StationState::Ringing | StationState::InCall
                );
                let deadline = in_call.then(|| now + self.settings.long_press);
                self.held.push((button.clone(), deadline));
                self.outputs.push_back(DoorOutput::Ring { button });
            }
            DoorInput::ButtonUp { button } => {
                self.held.retain(|(b, _)| *b != button);
            }
            DoorInput::ExitPressed => {
                self.open(now);
                self.outputs.push_back(DoorOutput::OpenAttempt {
                    source: OpenSource::ExitButton,
                    granted: true,
                    reason: None,
                    pulse: self.settings.pulse,
                });
            }
            DoorInput::DoorSensor { open } => match (open, self.door_open_since) {
                (true, None) => self.door_open_since = Some(now),
                (false, Some(_)) => {
                    self.door_open_since = None;
                    if self.alarm {
                        self.alarm = false;
                        self.outputs.push_back(DoorOutput::HeldOpenCleared);
                    }
                }
                _ => {}
            },
            DoorInput::Tamper { active } => {
                if active == self.tamper {
                    return;
                }
                self.tamper = active;
                let mut lockout = false;
                if active && let Some(d) = self.settings.tamper_lockout {
                    self.lockout_until = Some(now + d);
                    lockout = true;
                }
                self.outputs
                    .push_back(DoorOutput::TamperChanged { active, lockout });
            }
            DoorInput::RemoteOpen {
                call_id,
                peer,
                nonce,
            } => self.remote_open(call_id, peer, nonce, now),
            DoorInput::Call { state, answered } => {
                self.call_state = state;
                match (answered, &self.call) {
                    (Some((id, _)), Some(c)) if c.id == id => {}
                    (Some((id, _)), _) => self.call = Some(AnsweredCall::new(id)),
                    (None, _) => self.call = None,
                }
                if !matches!(state, StationState::Ringing | StationState::InCall) {
                    // No call to hang up any more.
                    for (_, t) in &mut self.held {
                        *t = None;
                    }
                }
            }
            DoorInput::Fault { active } => self.fault = active,
            DoorInput::Pairing { active } => self.pairing = active,
            DoorInput::Service { pressed } => {
                self.service_held_until = pressed.then(|| now + self.settings.long_press);
            }
            DoorInput::Shutdown => {
                self.unlocked_until = None;
                self.relay_energised = false;
                self.outputs
                    .push_back(DoorOutput::Relay { energised: false });
                for (plan, led) in self.settings.leds.iter().zip(&mut self.leds) {
                    led.pattern = LedPattern::Off;
                    led.on = false;
                    self.outputs.push_back(DoorOutput::Led {
                        name: plan.name.clone(),
                        pattern: LedPattern::Off,
                        on: false,
                    });
                }
                self.stopped = true;
                return;
            }
        }
        self.refresh_leds(now);
    }

    // ---- internals ----

    fn remote_open(&mut self, call_id: CallId, peer: String, nonce: String, now: Instant) {
        let verdict = self.judge(&call_id, &nonce, now);
        if verdict.is_none() {
            self.open(now);
        }
        self.outputs.push_back(DoorOutput::OpenAttempt {
            source: OpenSource::Remote {
                call_id,
                peer,
                nonce,
            },
            granted: verdict.is_none(),
            reason: verdict,
            pulse: if verdict.is_none() {
                self.settings.pulse
            } else {
                Duration::ZERO
            },
        });
    }

    /// `None`: granted.
    fn judge(&mut self, call_id: &CallId, nonce: &str, now: Instant) -> Option<Refusal> {
        if !valid_nonce(nonce) {
            return Some(Refusal::BadNonce);
        }
        let interval = self.settings.remote_open_interval;
        let locked_out = self.locked_out(now);
        let Some(call) = self.call.as_mut() else {
            return Some(Refusal::NoCall);
        };
        if call.id != *call_id {
            return Some(Refusal::OtherCall);
        }
        if call.seen.contains(nonce) {
            return Some(Refusal::Replay);
        }
        // A nonce is remembered only past the rate limit, so that a flood
        // of fresh nonces costs no memory; from there on whatever happens
        // next: a refused request replayed later is still a replay.
        if call
            .last_attempt
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return Some(Refusal::RateLimited);
        }
        call.remember(nonce);
        call.last_attempt = Some(now);
        if locked_out {
            return Some(Refusal::TamperLockout);
        }
        None
    }

    fn open(&mut self, now: Instant) {
        // A second open during a pulse extends it.
        self.unlocked_until = Some(now + self.settings.pulse);
        self.drive_relay();
    }

    fn drive_relay(&mut self) {
        let level = self.settings.lock.energised(self.unlocked_until.is_some());
        if level != self.relay_energised {
            self.relay_energised = level;
            self.outputs
                .push_back(DoorOutput::Relay { energised: level });
        }
    }

    fn refresh_leds(&mut self, now: Instant) {
        let state = self.station_state();
        for (plan, led) in self.settings.leds.iter().zip(&mut self.leds) {
            let pattern = plan.pattern(state);
            let changed_pattern = pattern != led.pattern;
            if changed_pattern {
                led.pattern = pattern;
                // A new pattern starts with its "on" phase.
                led.since = now;
            }
            led.checked = now;
            let on = level_at(pattern, led.since, now);
            if changed_pattern || on != led.on {
                led.on = on;
                self.outputs.push_back(DoorOutput::Led {
                    name: plan.name.clone(),
                    pattern,
                    on,
                });
            }
        }
    }
}

/// Half-period of a blinking pattern; `None` when it does not blink.
fn half_period(pattern: LedPattern) -> Option<Duration> {
    match pattern {
        LedPattern::Off | LedPattern::On => None,
        LedPattern::SlowBlink => Some(Duration::from_millis(500)),
        LedPattern::FastBlink => Some(Duration::from_millis(125)),
        LedPattern::MediumBlink => Some(Duration::from_millis(250)),
    }
}

/// The LED's level at `now` for a pattern started at `since`: on during
/// even half-periods, off during odd ones.
pub fn level_at(pattern: LedPattern, since: Instant, now: Instant) -> bool {
    match pattern {
        LedPattern::Off => false,
        LedPattern::On => true,
        _ => {
            let half = half_period(pattern)
                .expect("blinking patterns have a half period")
                .as_nanos();
            let elapsed = now.saturating_duration_since(since).as_nanos();
            (elapsed / half).is_multiple_of(2)
        }
    }
}

/// The first level change strictly after `after`, for a pattern started
/// at `since`; `None` for steady patterns.
fn next_edge(pattern: LedPattern, since: Instant, after: Instant) -> Option<Instant> {
    let half = half_period(pattern)?;
    let elapsed = after.saturating_duration_since(since).as_nanos();
    let n = elapsed / half.as_nanos() + 1;
    let n = u32::try_from(n).ok()?;
    since.checked_add(half.checked_mul(n)?)
}
