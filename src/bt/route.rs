//! Which device carries a call's audio: the station's speaker and
//! microphone, or a Bluetooth headset. A sans-I/O state machine like the
//! others: the headset's link events and the call's phase go in with `now`,
//! requests to open or close the SCO link and route switches come out of
//! [`RouteMachine::poll_output`], and its deadlines reduce to
//! [`RouteMachine::poll_timeout`].
//!
//! Rules:
//! - A headset takes the audio of an answered call once its service level
//!   connection is up and an SCO link is open; until then, and whenever it
//!   is gone, the speaker has it. Ringing stays on the speaker (the gateway
//!   does not ring in-band).
//! - The headset disappearing (disconnect or SLC down) moves the audio to
//!   the speaker at once. The SCO link alone dropping while the SLC stays
//!   up is given [`RouteSettings::sco_grace`] to come back (one reopen is
//!   asked for) before the speaker takes over. Either way the call goes on:
//!   this machine never ends a call.
//! - SCO opens are bounded per call ([`RouteSettings::max_sco_attempts`]),
//!   so a flapping headset cannot keep the call switching forever.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::hfp::Codec;

/// Where the call's audio goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The station's own speaker and microphone.
    Speaker,
    /// The headset, over SCO with this codec.
    Headset(Codec),
}

/// The call, as far as audio routing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallPhase {
    Idle,
    Ringing,
    /// Answered: audio flows.
    Active,
}

/// What happened to the headset or the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteInput {
    /// The headset's RFCOMM channel opened.
    Connected,
    /// The headset is gone (link loss, power off, out of range).
    Disconnected,
    /// The service level connection is up, or went down.
    Slc {
        up: bool,
    },
    /// The SCO link opened with this codec.
    ScoUp {
        codec: Codec,
    },
    /// The SCO link closed or failed to open.
    ScoDown,
    Call(CallPhase),
}

/// What the routing wants done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteOutput {
    /// Agree a codec with the headset and open the SCO link.
    OpenSco,
    /// Close the SCO link.
    CloseSco,
    /// Switch the call's audio to this route.
    Switch(Route),
}

/// Timing of the routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSettings {
    /// After the SCO link drops mid-call with the SLC still up, the audio
    /// stays with the headset this long, waiting for the link to reopen.
    pub sco_grace: Duration,
    /// An SCO open not done within this is given up.
    pub sco_open_timeout: Duration,
    /// SCO opens asked for per call.
    pub max_sco_attempts: u32,
}

impl Default for RouteSettings {
    fn default() -> Self {
        RouteSettings {
            sco_grace: Duration::from_millis(300),
            sco_open_timeout: Duration::from_secs(3),
            max_sco_attempts: 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// End of the SCO grace: fall back to the speaker.
    Grace,
    /// An SCO open took too long.
    Open,
}

const TIMERS: [Timer; 2] = [Timer::Grace, Timer::Open];

/// The audio route of the station's calls. See the module documentation.
#[derive(Debug)]
pub struct RouteMachine {
    settings: RouteSettings,
    outputs: VecDeque<RouteOutput>,
    connected: bool,
    slc: bool,
    sco: Option<Codec>,
    call: CallPhase,
    route: Route,
    /// An `OpenSco` is outstanding.
    opening: bool,
    attempts: u32,
    timers: [Option<Instant>; 2],
}

impl RouteMachine {
    pub fn new(settings: RouteSettings) -> Self {
        RouteMachine {
            settings,
            outputs: VecDeque::new(),
            connected: false,
            slc: false,
            sco: None,
            call: CallPhase::Idle,
            route: Route::Speaker,
            opening: false,
            attempts: 0,
            timers: [None; 2],
        }
    }

    // ---- getters ----

    pub fn route(&self) -> Route {
        self.route
    }

    pub fn call(&self) -> CallPhase {
        self.call
    }

    /// The headset is connected with its SLC up.
    pub fn headset_ready(&self) -> bool {
        self.connected && self.slc
    }

    // ---- outputs ----

    pub fn poll_output(&mut self) -> Option<RouteOutput> {
        self.outputs.pop_front()
    }

    /// The end of an SCO grace or of an SCO open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    // ---- inputs ----

    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in TIMERS {
            if self.timers[timer as usize].is_some_and(|t| t <= now) {
                self.timers[timer as usize] = None;
                match timer {
                    Timer::Grace => {
                        if self.sco.is_none() {
                            self.switch(Route::Speaker);
                        }
                    }
                    Timer::Open => self.opening = false,
                }
            }
        }
        self.reconcile(now);
    }

    pub fn handle_input(&mut self, input: RouteInput, now: Instant) {
        match input {
            RouteInput::Connected => self.connected = true,
            RouteInput::Disconnected => {
                self.connected = false;
                self.slc = false;
                self.sco = None;
                self.opening = false;
                self.timers = [None; 2];
                self.switch(Route::Speaker);
            }
            RouteInput::Slc { up } => {
                self.slc = up && self.connected;
                if !self.slc {
                    // SCO cannot outlive the SLC.
                    if self.sco.take().is_some() {
                        self.outputs.push_back(RouteOutput::CloseSco);
                    }
                    self.opening = false;
                    self.timers = [None; 2];
                    self.switch(Route::Speaker);
                } else if self.call == CallPhase::Active {
                    // A headset back mid-call gets fresh attempts.
                    self.attempts = 0;
                }
            }
            RouteInput::ScoUp { codec } => {
                self.opening = false;
                self.timers[Timer::Open as usize] = None;
                if !self.headset_ready() {
                    // A link without a connection to go with it: ignore.
                    return;
                }
                self.sco = Some(codec);
                if self.call == CallPhase::Active {
                    self.timers[Timer::Grace as usize] = None;
                    self.switch(Route::Headset(codec));
                } else {
                    // Opened by the headset outside an answered call.
                    self.sco = None;
                    self.outputs.push_back(RouteOutput::CloseSco);
                }
            }
            RouteInput::ScoDown => {
                let had = self.sco.take().is_some();
                self.opening = false;
                self.timers[Timer::Open as usize] = None;
                if had && matches!(self.route, Route::Headset(_)) {
                    // Keep the headset route a moment; `reconcile` asks for
                    // a reopen.
                    self.timers[Timer::Grace as usize] = Some(now + self.settings.sco_grace);
                }
            }
            RouteInput::Call(phase) => {
                let before = std::mem::replace(&mut self.call, phase);
                if phase != CallPhase::Active {
                    self.timers = [None; 2];
                    self.opening = false;
                    if self.sco.take().is_some() {
                        self.outputs.push_back(RouteOutput::CloseSco);
                    }
                    self.switch(Route::Speaker);
                } else if before != CallPhase::Active {
                    self.attempts = 0;
                }
            }
        }
        self.reconcile(now);
    }

    // ---- internals ----

    /// Asks for an SCO link when an answered call could use the headset.
    fn reconcile(&mut self, now: Instant) {
        let wanted = self.call == CallPhase::Active && self.headset_ready();
        if wanted
            && self.sco.is_none()
            && !self.opening
            && self.attempts < self.settings.max_sco_attempts
        {
            self.opening = true;
            self.attempts += 1;
            self.timers[Timer::Open as usize] = Some(now + self.settings.sco_open_timeout);
            self.outputs.push_back(RouteOutput::OpenSco);
        }
        // No reopen left, or none can come: do not keep the grace.
        if self.sco.is_none() && !self.opening && self.timers[Timer::Grace as usize].is_some() {
            self.timers[Timer::Grace as usize] = None;
            self.switch(Route::Speaker);
        }
    }

    fn switch(&mut self, route: Route) {
        if self.route != route {
            self.route = route;
            self.outputs.push_back(RouteOutput::Switch(route));
        }
    }
}
