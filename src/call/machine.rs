//! The door station's call logic as a sans-I/O state machine.
//!
//! `CallMachine` never reads a clock and never does I/O: every input carries
//! the current `Instant`, timers are reduced to one deadline
//! (`poll_timeout`), and everything the machine wants done comes out of
//! `poll_output`. The controller drains `poll_output` after every
//! `handle_input`/`handle_timeout`. Peer input that does not fit the current
//! state is answered with a [`Rejected`] value, never a panic.
//!
//! States: `Idle` → `Ringing` → `Connecting` → `InCall` → `Ended` (which
//! behaves like `Idle` for the next press). A resident's call to the door
//! (`call_door` from the hub) starts at `Connecting`: the station takes it
//! on its own when it has no call, and refuses it with `hangup` reason
//! `busy` otherwise.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::signaling::protocol::{CallId, Candidate, ErrorCode, Message, PeerInfo};
use crate::signaling::sdp;

/// Timing settings of a call, from the `[call]` and `[ice]` configuration.
/// Remote ICE candidates taken per offer: a browser on a phone with Wi-Fi,
/// IPv6 and TURN sends a few dozen at most.
pub const MAX_REMOTE_CANDIDATES: u32 = 50;

#[derive(Clone, Debug, PartialEq)]
pub struct CallSettings {
    /// Ringing with nobody accepting ends in "no answer" after this.
    pub ring_timeout: Duration,
    /// From "accepted" to media flowing both ways.
    pub connect_timeout: Duration,
    /// Hard cap on a call's length (a forgotten open line ends).
    pub max_duration: Duration,
    /// How long one attempt to bring a lost media path back (an ICE
    /// restart or a new session) may take before the next attempt, or the
    /// end of the call when none are left.
    pub media_lost_timeout: Duration,
    /// Attempts per call to bring a lost or stalled media path back.
    pub max_media_restarts: u32,
    /// Outbound call-scoped messages kept while signaling is down.
    pub max_queued_messages: usize,
    /// How long `Ended` is shown before the station is `Idle` again.
    pub ended_linger: Duration,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            ring_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(20),
            max_duration: Duration::from_secs(600),
            media_lost_timeout: Duration::from_secs(30),
            max_media_restarts: 2,
            max_queued_messages: 128,
            ended_linger: Duration::from_secs(3),
        }
    }
}

/// Coarse state, for LEDs, systemd STATUS= and the control API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Ringing,
    Connecting,
    InCall,
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Ringing => "ringing",
            Phase::Connecting => "connecting",
            Phase::InCall => "in_call",
            Phase::Ended => "ended",
        }
    }
}

/// Why a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Nobody accepted before the ring timeout.
    NoAnswer,
    /// The hub had nobody online in the group.
    NoAnswerer,
    /// Every rung answerer declined.
    Declined,
    /// The door station hung up (button, control API).
    LocalHangup,
    /// The resident hung up.
    RemoteHangup(String),
    /// Media never connected within the connect timeout.
    ConnectTimeout,
    /// Media failed, or stayed lost past the media-lost timeout.
    MediaFailed(String),
    /// The call reached its maximum duration.
    MaxDuration,
    /// The daemon is stopping.
    Shutdown,
    /// The hub refused the call.
    Refused(String),
}

impl EndReason {
    /// The `reason` sent in `hangup`/`cancel`.
    pub fn wire(&self) -> &'static str {
        match self {
            EndReason::NoAnswer | EndReason::ConnectTimeout | EndReason::MaxDuration => "timeout",
            EndReason::MediaFailed(_) => "failed",
            EndReason::Shutdown => "shutdown",
            EndReason::Refused(_) => "error",
            _ => "normal",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::NoAnswer => write!(f, "no answer"),
            EndReason::NoAnswerer => write!(f, "no answerer online"),
            EndReason::Declined => write!(f, "declined"),
            EndReason::LocalHangup => write!(f, "hung up at the door"),
            EndReason::RemoteHangup(r) => write!(f, "hung up by the resident ({r})"),
            EndReason::ConnectTimeout => write!(f, "media did not connect in time"),
            EndReason::MediaFailed(r) => write!(f, "media failed: {r}"),
            EndReason::MaxDuration => write!(f, "maximum call duration reached"),
            EndReason::Shutdown => write!(f, "shutdown"),
            EndReason::Refused(r) => write!(f, "refused by the hub: {r}"),
        }
    }
}

/// Media connection states the machine cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaState {
    Checking,
    Connected,
    /// Nothing received for the receiving timeout: the path is dead.
    Disconnected,
    Failed,
    /// ICE connected but the DTLS handshake did not finish in time.
    Stalled,
    /// The path works one way only: the resident's audio arrives, the
    /// resident's reports show the station's does not.
    Unheard,
    Closed,
}

/// Everything that can happen to the door station's call logic.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A call button was pressed. `call_id` is a fresh id chosen by the
    /// shell (the machine has no randomness of its own). During a
    /// resident's call to the door it is the visitor answering.
    ButtonPressed { group: String, call_id: CallId },
    /// A call button was held for the long-press time during a call: it
    /// hangs up a visitor's call, never a resident's call to the door.
    ButtonHeld,
    /// Hang up from the door side (long press, control API).
    LocalHangup,
    /// The signaling connection is up (after `welcome`).
    SignalingUp,
    /// The signaling connection dropped.
    SignalingDown,
    /// A message from the hub.
    Signal(Message),
    /// The media engine produced a local description.
    LocalDescription { call_id: CallId, sdp: String },
    /// The media engine gathered a local candidate (`None`: done).
    LocalCandidate {
        call_id: CallId,
        candidate: Option<Candidate>,
    },
    /// The media connection changed state.
    Media { call_id: CallId, state: MediaState },
    /// Audio flows both ways.
    AudioEstablished { call_id: CallId },
    /// The media engine refused something the peer sent.
    MediaError {
        call_id: CallId,
        code: ErrorCode,
        message: String,
        /// The call cannot continue (for example the answer SDP is invalid).
        fatal: bool,
    },
    /// The daemon is stopping: end any call.
    Shutdown,
}

/// Requests to the media engine.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaRequest {
    /// Create the peer connection and an offer.
    StartOffer { call_id: CallId },
    /// Apply the remote answer.
    RemoteAnswer { call_id: CallId, sdp: String },
    /// Apply (or queue) a remote candidate.
    RemoteCandidate {
        call_id: CallId,
        candidate: Option<Candidate>,
    },
    /// Restart ICE on the call's session and create a new offer (fresh
    /// ICE credentials, same DTLS session).
    RestartIce { call_id: CallId },
    /// Replace the call's session with a new one (new ICE and DTLS) and
    /// create its offer; the call's audio stays attached.
    Renew { call_id: CallId },
    /// Tear the call's media down.
    Stop { call_id: CallId },
}

/// What the machine wants done.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send this to the hub.
    Send(Message),
    /// Ask the media engine for something.
    Media(MediaRequest),
    /// The phase changed (LEDs, STATUS=, logs).
    PhaseChanged {
        phase: Phase,
        call_id: Option<CallId>,
    },
    /// The call was answered by this resident.
    Answered { call_id: CallId, by: PeerInfo },
    /// A resident called the door and the station took the call (audit).
    ResidentCallStarted { call_id: CallId, by: PeerInfo },
    /// A resident's call to the door was refused (audit).
    ResidentCallRefused {
        call_id: CallId,
        by: PeerInfo,
        reason: &'static str,
    },
    /// A resident's call to the door ended, after `duration` (audit).
    ResidentCallEnded {
        call_id: CallId,
        by: PeerInfo,
        duration: Duration,
        reason: EndReason,
    },
    /// The call button was pressed during a resident's call to the door:
    /// the visitor answers it (no new ring, no hang-up).
    VisitorAnswered { call_id: CallId },
    /// Media is up: flowing both ways, or the connection is up on a
    /// listen-only call.
    Established { call_id: CallId },
    /// The resident answered without a microphone (its answer sends no
    /// audio): the call goes on listen-only. Not a fault.
    ListenOnly {
        call_id: CallId,
        by: Option<PeerInfo>,
    },
    /// A lost or stalled media path is being brought back (for the log).
    Recovering {
        call_id: CallId,
        attempt: u32,
        reason: String,
        /// A new session rather than an ICE restart.
        renew: bool,
    },
    /// Remote candidates beyond `cap` for the current offer are ignored
    /// (said once per offer).
    CandidatesCapped { call_id: CallId, cap: u32 },
    /// A call ended.
    Ended { call_id: CallId, reason: EndReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    IceRestart,
    Renew,
}

/// Why an input was not acted upon. The shell logs it; nothing else happens.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("`{input}` ignored: no call in progress")]
    NoCall { input: &'static str },
    #[error("`{input}` ignored: it is for call {got}, the current call is {current}")]
    OtherCall {
        input: &'static str,
        got: CallId,
        current: CallId,
    },
    #[error("`{input}` ignored in state {phase}")]
    OutOfState {
        input: &'static str,
        phase: &'static str,
    },
    #[error("`{input}` ignored: a call is already in progress")]
    Busy { input: &'static str },
    #[error("`{0}` is not a message a door station acts on")]
    NotForDoor(&'static str),
    #[error("`{input}` ignored: a resident called the door, the button cannot hang up")]
    ResidentCall { input: &'static str },
    #[error("`{input}` refused: {why}")]
    Malformed {
        input: &'static str,
        why: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Ring = 0,
    Connect = 1,
    MaxDuration = 2,
    MediaLost = 3,
    EndedLinger = 4,
}

const TIMER_COUNT: usize = 5;
const TIMERS: [Timer; TIMER_COUNT] = [
    Timer::Ring,
    Timer::Connect,
    Timer::MaxDuration,
    Timer::MediaLost,
    Timer::EndedLinger,
];

/// Who started a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A visitor pressed a call button.
    Button,
    /// A resident called the door (`call_door`).
    Resident,
}

#[derive(Clone, Debug, PartialEq)]
struct Call {
    id: CallId,
    origin: Origin,
    /// When the call started (the press, or the resident's call taken).
    started: Instant,
    /// The ring group; empty for a resident's call to the door.
    group: String,
    answerer: Option<PeerInfo>,
    /// An offer went out and its answer has not come back yet.
    awaiting_answer: bool,
    media_up: bool,
    /// Media restarts used so far (ICE restarts and renewals).
    restarts: u32,
    /// The answer sends no audio (the resident has no microphone): media
    /// is up once the connection is, without waiting for incoming audio.
    listen_only: bool,
    /// The hub's route proof for this call, presented again in `resume`.
    route: Option<String>,
    /// Remote candidates passed to media since the last offer, and those
    /// ignored beyond the cap.
    candidates: u32,
    candidates_ignored: u32,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Idle,
    Ringing(Call),
    Connecting(Call),
    InCall(Call),
    Ended,
}

impl State {
    fn phase(&self) -> Phase {
        match self {
            State::Idle => Phase::Idle,
            State::Ringing(_) => Phase::Ringing,
            State::Connecting(_) => Phase::Connecting,
            State::InCall(_) => Phase::InCall,
            State::Ended => Phase::Ended,
        }
    }

    fn call(&self) -> Option<&Call> {
        match self {
            State::Ringing(c) | State::Connecting(c) | State::InCall(c) => Some(c),
            _ => None,
        }
    }
}

/// The door station's call state machine. See the module documentation.
#[derive(Debug)]
pub struct CallMachine {
    settings: CallSettings,
    state: State,
    timers: [Option<Instant>; TIMER_COUNT],
    outputs: VecDeque<Output>,
    signaling_up: bool,
    /// Call-scoped messages waiting for the signaling connection.
    outbox: VecDeque<Message>,
    dropped_messages: u64,
    /// The time of the input being handled, for timers armed deep inside.
    last_now: Option<Instant>,
}

impl CallMachine {
    pub fn new(settings: CallSettings) -> Self {
        CallMachine {
            settings,
            state: State::Idle,
            timers: [None; TIMER_COUNT],
            outputs: VecDeque::new(),
            signaling_up: false,
            outbox: VecDeque::new(),
            dropped_messages: 0,
            last_now: None,
        }
    }

    // ---- getters ----

    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    pub fn call_id(&self) -> Option<&CallId> {
        self.state.call().map(|c| &c.id)
    }

    pub fn signaling_up(&self) -> bool {
        self.signaling_up
    }

    /// Messages dropped because the outbox was full while signaling was down.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped_messages
    }

    // ---- outputs ----

    /// The next thing to do. Drain after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest armed deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    // ---- inputs ----

    /// Fire every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        for t in TIMERS {
            if let Some(at) = self.timers[t as usize]
                && at <= now
            {
                self.timers[t as usize] = None;
                self.on_timer(t);
            }
        }
    }

    pub fn handle_input(&mut self, input: Input, now: Instant) -> Result<(), Rejected> {
        self.last_now = Some(now);
        match input {
            Input::ButtonPressed { group, call_id } => self.on_press(group, call_id, now),
            Input::ButtonHeld => match self.state.call() {
                Some(c) if c.origin == Origin::Resident => Err(Rejected::ResidentCall {
                    input: "long press",
                }),
                Some(_) => {
                    self.end(EndReason::LocalHangup);
                    Ok(())
                }
                None => Err(Rejected::NoCall {
                    input: "long press",
                }),
            },
            Input::LocalHangup => match self.state.call() {
                Some(_) => {
                    self.end(EndReason::LocalHangup);
                    Ok(())
                }
                None => Err(Rejected::NoCall {
                    input: "local hangup",
                }),
            },
            Input::SignalingUp => {
                self.signaling_up = true;
                self.on_signaling_up();
                Ok(())
            }
            Input::SignalingDown => {
                // A drop never ends a call: media has its own path.
                self.signaling_up = false;
                Ok(())
            }
            Input::Signal(msg) => self.on_signal(msg, now),
            Input::LocalDescription { call_id, sdp } => {
                self.current("local description", &call_id)?;
                // The first offer (connecting) or one after a media restart.
                let (State::Connecting(call) | State::InCall(call)) = &mut self.state else {
                    return Err(self.out_of_state("local description"));
                };
                call.awaiting_answer = true;
                self.send(Message::Offer { call_id, sdp });
                Ok(())
            }
            Input::LocalCandidate { call_id, candidate } => {
                self.current("local candidate", &call_id)?;
                if matches!(self.state, State::Ringing(_)) {
                    return Err(self.out_of_state("local candidate"));
                }
                self.send(Message::Candidate { call_id, candidate });
                Ok(())
            }
            Input::Media { call_id, state } => self.on_media_state(call_id, state, now),
            Input::AudioEstablished { call_id } => {
                self.current("audio established", &call_id)?;
                match &self.state {
                    State::Connecting(_) => {
                        self.establish(now);
                        Ok(())
                    }
                    // A listen-only call is up as soon as its connection is.
                    State::InCall(c) if c.listen_only => Ok(()),
                    _ => Err(self.out_of_state("audio established")),
                }
            }
            Input::MediaError {
                call_id,
                code,
                message,
                fatal,
            } => {
                self.current("media error", &call_id)?;
                self.send(Message::Error {
                    code,
                    message: message.clone(),
                    reference: None,
                    call_id: Some(call_id),
                });
                if fatal {
                    self.end(EndReason::MediaFailed(message));
                }
                Ok(())
            }
            Input::Shutdown => {
                if self.state.call().is_some() {
                    self.end(EndReason::Shutdown);
                }
                Ok(())
            }
        }
    }

    // ---- internals ----

    fn on_press(&mut self, group: String, call_id: CallId, now: Instant) -> Result<(), Rejected> {
        if let Some(c) = self.state.call()
            && c.origin == Origin::Resident
        {
            // Somebody at the door hears the resident and presses to talk:
            // that answers the resident's call, it neither rings nor ends it.
            self.outputs.push_back(Output::VisitorAnswered {
                call_id: c.id.clone(),
            });
            return Ok(());
        }
        if self.state.call().is_some() {
            // A second press while ringing or talking does nothing harmful.
            return Err(Rejected::Busy {
                input: "button press",
            });
        }
        self.state = State::Ringing(Call {
            id: call_id.clone(),
            origin: Origin::Button,
            started: now,
            group: group.clone(),
            answerer: None,
            awaiting_answer: false,
            media_up: false,
            restarts: 0,
            listen_only: false,
            route: None,
            candidates: 0,
            candidates_ignored: 0,
        });
        self.timers = [None; TIMER_COUNT];
        self.timers[Timer::Ring as usize] = Some(now + self.settings.ring_timeout);
        self.send(Message::Ring {
            call_id,
            group,
            door: None,
        });
        self.phase_changed();
        Ok(())
    }

    fn on_signaling_up(&mut self) {
        // Re-announce the call (the hub may have restarted), then flush what
        // piled up while we were away, in order.
        if let Some(call) = self.state.call() {
            let resume = Message::Resume {
                call_id: call.id.clone(),
                answerer: call.answerer.as_ref().map(|a| a.id.clone()),
                // A resident's call to the door has no group.
                group: (call.origin == Origin::Button).then(|| call.group.clone()),
                route: call.route.clone(),
            };
            self.outputs.push_back(Output::Send(resume));
        }
        while let Some(m) = self.outbox.pop_front() {
            self.outputs.push_back(Output::Send(m));
        }
    }

    fn on_signal(&mut self, msg: Message, now: Instant) -> Result<(), Rejected> {
        let name = msg.type_name();
        match msg {
            Message::Ringing { call_id, answerers } => self.on_ringing(name, call_id, answerers),
            Message::Accepted {
                call_id,
                answerer,
                route,
            } => self.on_accepted(name, call_id, answerer, route, now),
            Message::Declined { call_id } => {
                self.current(name, &call_id)?;
                if !matches!(self.state, State::Ringing(_)) {
                    return Err(self.out_of_state(name));
                }
                // The hub has already forgotten the call.
                self.end_without_notice(EndReason::Declined);
                Ok(())
            }
            Message::Answer { call_id, sdp } => self.on_answer(name, call_id, sdp),
            Message::Candidate { call_id, candidate } => {
                self.on_candidate(name, call_id, candidate)
            }
            Message::Hangup { call_id, reason } => {
                self.current(name, &call_id)?;
                self.end_without_notice(EndReason::RemoteHangup(if reason.is_empty() {
                    "normal".into()
                } else {
                    reason
                }));
                Ok(())
            }
            Message::Cancel { call_id, reason } => {
                // The hub cancels a ring it cannot route any more.
                self.current(name, &call_id)?;
                if !matches!(self.state, State::Ringing(_)) {
                    return Err(self.out_of_state(name));
                }
                self.end_without_notice(EndReason::Refused(reason));
                Ok(())
            }
            Message::Error {
                call_id: Some(call_id),
                code,
                message,
                ..
            } if matches!(
                code,
                ErrorCode::UnknownCall | ErrorCode::NotPermitted | ErrorCode::UnknownPeer
            ) && self.state.call().map(|c| &c.id) == Some(&call_id)
                && matches!(self.state, State::Ringing(_)) =>
            {
                // The hub refuses the ring itself: nothing will ever answer.
                self.end_without_notice(EndReason::Refused(format!(
                    "{}: {message}",
                    code.as_str()
                )));
                Ok(())
            }
            Message::CallDoor {
                call_id,
                answerer,
                route,
                ..
            } => self.on_resident_call(call_id, answerer, route, now),
            Message::Resumed { call_id } => {
                self.current(name, &call_id)?;
                Ok(())
            }
            Message::Welcome { .. }
            | Message::Error { .. }
            | Message::Pong
            | Message::Ping
            | Message::Registered { .. } => Ok(()),
            Message::Hello { .. }
            | Message::Register { .. }
            | Message::Resume { .. }
            | Message::Ring { .. }
            | Message::Accept { .. }
            | Message::Decline { .. }
            | Message::Taken { .. }
            | Message::Calling { .. }
            | Message::Offer { .. }
            | Message::PushSubscribe { .. }
            | Message::PushSubscribed
            | Message::PushUnsubscribe { .. }
            | Message::PushUnsubscribed
            | Message::GetHistory { .. }
            | Message::History { .. }
            | Message::DoorOpened { .. } => Err(Rejected::NotForDoor(name)),
        }
    }

    fn on_ringing(
        &mut self,
        name: &'static str,
        call_id: CallId,
        answerers: u32,
    ) -> Result<(), Rejected> {
        self.current(name, &call_id)?;
        if !matches!(self.state, State::Ringing(_)) {
            return Err(self.out_of_state(name));
        }
        if answerers == 0 {
            // The hub keeps no call without answerers: nothing to cancel.
            self.end_without_notice(EndReason::NoAnswerer);
        }
        Ok(())
    }

    /// The call was answered: the station makes its offer.
    fn on_accepted(
        &mut self,
        name: &'static str,
        call_id: CallId,
        answerer: PeerInfo,
        route: Option<String>,
        now: Instant,
    ) -> Result<(), Rejected> {
        self.current(name, &call_id)?;
        let State::Ringing(call) = &self.state else {
            return Err(self.out_of_state(name));
        };
        let mut call = call.clone();
        call.answerer = Some(answerer.clone());
        call.route = route;
        self.timers[Timer::Ring as usize] = None;
        self.timers[Timer::Connect as usize] = Some(now + self.settings.connect_timeout);
        self.state = State::Connecting(call);
        self.outputs.push_back(Output::Answered {
            call_id: call_id.clone(),
            by: answerer,
        });
        self.outputs
            .push_back(Output::Media(MediaRequest::StartOffer { call_id }));
        self.phase_changed();
        Ok(())
    }

    fn on_answer(
        &mut self,
        name: &'static str,
        call_id: CallId,
        sdp: String,
    ) -> Result<(), Rejected> {
        self.current(name, &call_id)?;
        let phase = self.state.phase().as_str();
        let (State::Connecting(call) | State::InCall(call)) = &mut self.state else {
            return Err(self.out_of_state(name));
        };
        if !call.awaiting_answer {
            return Err(Rejected::OutOfState {
                input: "answer (no offer outstanding)",
                phase,
            });
        }
        call.awaiting_answer = false;
        let listen_only = sdp::listen_only(&sdp);
        if listen_only && !call.listen_only {
            self.outputs.push_back(Output::ListenOnly {
                call_id: call_id.clone(),
                by: call.answerer.clone(),
            });
        }
        call.listen_only = listen_only;
        self.outputs
            .push_back(Output::Media(MediaRequest::RemoteAnswer { call_id, sdp }));
        Ok(())
    }

    fn on_candidate(
        &mut self,
        name: &'static str,
        call_id: CallId,
        candidate: Option<Candidate>,
    ) -> Result<(), Rejected> {
        self.current(name, &call_id)?;
        let (State::Connecting(call) | State::InCall(call)) = &mut self.state else {
            return Err(self.out_of_state(name));
        };
        // A flood of candidates would each cost the media engine a
        // parse and a connectivity check: a browser sends a few
        // dozen at most.
        if call.candidates >= MAX_REMOTE_CANDIDATES {
            call.candidates_ignored += 1;
            if call.candidates_ignored == 1 {
                self.outputs.push_back(Output::CandidatesCapped {
                    call_id,
                    cap: MAX_REMOTE_CANDIDATES,
                });
            }
            return Ok(());
        }
        call.candidates += 1;
        // Candidates may overtake the answer: media queues them.
        self.outputs
            .push_back(Output::Media(MediaRequest::RemoteCandidate {
                call_id,
                candidate,
            }));
        Ok(())
    }

    /// A resident calls the door: take the call when there is none (the
    /// station offers, as for an answered call), refuse it otherwise.
    fn on_resident_call(
        &mut self,
        call_id: CallId,
        answerer: Option<PeerInfo>,
        route: Option<String>,
        now: Instant,
    ) -> Result<(), Rejected> {
        let Some(by) = answerer else {
            self.send(Message::Error {
                code: ErrorCode::BadMessage,
                message: "call_door to a door must name the answerer".into(),
                reference: Some("call_door".into()),
                call_id: Some(call_id),
            });
            return Err(Rejected::Malformed {
                input: "call_door",
                why: "no answerer",
            });
        };
        if let Some(current) = self.state.call() {
            if current.id == call_id {
                // A resend of the call already taken changes nothing.
                return Ok(());
            }
            self.send(Message::Hangup {
                call_id: call_id.clone(),
                reason: "busy".into(),
            });
            self.outputs.push_back(Output::ResidentCallRefused {
                call_id,
                by,
                reason: "busy",
            });
            return Err(Rejected::Busy { input: "call_door" });
        }
        self.state = State::Connecting(Call {
            id: call_id.clone(),
            origin: Origin::Resident,
            started: now,
            group: String::new(),
            answerer: Some(by.clone()),
            awaiting_answer: false,
            media_up: false,
            listen_only: false,
            restarts: 0,
            route,
            candidates: 0,
            candidates_ignored: 0,
        });
        self.timers = [None; TIMER_COUNT];
        self.timers[Timer::Connect as usize] = Some(now + self.settings.connect_timeout);
        self.outputs.push_back(Output::ResidentCallStarted {
            call_id: call_id.clone(),
            by,
        });
        self.outputs
            .push_back(Output::Media(MediaRequest::StartOffer { call_id }));
        self.phase_changed();
        Ok(())
    }

    fn on_media_state(
        &mut self,
        call_id: CallId,
        state: MediaState,
        now: Instant,
    ) -> Result<(), Rejected> {
        self.current("media state", &call_id)?;
        match state {
            MediaState::Checking | MediaState::Closed => Ok(()),
            MediaState::Connected => {
                self.timers[Timer::MediaLost as usize] = None;
                // ICE and DTLS are up: for a listen-only answer that is all
                // the media there will be.
                if matches!(&self.state, State::Connecting(c) if c.listen_only) {
                    self.establish(now);
                }
                Ok(())
            }
            // The stack reports these only after the receiving timeout
            // without a packet (a brief gap never gets here) or when every
            // pair failed. An attempt already under way has its own timer.
            MediaState::Disconnected | MediaState::Failed => {
                if self.timers[Timer::MediaLost as usize].is_none() {
                    let why = if state == MediaState::Failed {
                        "ICE failed"
                    } else {
                        "nothing received for the receiving timeout"
                    };
                    self.recover(Recovery::IceRestart, why, now);
                }
                Ok(())
            }
            MediaState::Stalled => {
                self.recover(Recovery::Renew, "DTLS handshake stalled", now);
                Ok(())
            }
            MediaState::Unheard => {
                if self.timers[Timer::MediaLost as usize].is_none() {
                    let why = "the resident no longer receives the station's audio";
                    self.recover(Recovery::IceRestart, why, now);
                }
                Ok(())
            }
        }
    }

    /// Connecting → InCall: media is up.
    fn establish(&mut self, now: Instant) {
        let State::Connecting(c) = &mut self.state else {
            return;
        };
        c.media_up = true;
        let call = c.clone();
        self.timers[Timer::Connect as usize] = None;
        self.timers[Timer::MediaLost as usize] = None;
        self.timers[Timer::MaxDuration as usize] = Some(now + self.settings.max_duration);
        self.outputs.push_back(Output::Established {
            call_id: call.id.clone(),
        });
        self.state = State::InCall(call);
        self.phase_changed();
    }

    /// Try to bring the call's media path back, or end the call when the
    /// attempts are used up.
    fn recover(&mut self, how: Recovery, why: &str, now: Instant) {
        let max = self.settings.max_media_restarts;
        let (State::Connecting(call) | State::InCall(call)) = &mut self.state else {
            return;
        };
        if call.restarts >= max {
            self.end(EndReason::MediaFailed(format!(
                "{why}; {max} restart(s) did not help"
            )));
            return;
        }
        call.restarts += 1;
        // The new offer gathers anew on both sides.
        call.candidates = 0;
        call.candidates_ignored = 0;
        let call_id = call.id.clone();
        let attempt = call.restarts;
        self.timers[Timer::MediaLost as usize] = Some(now + self.settings.media_lost_timeout);
        let req = match how {
            Recovery::IceRestart => MediaRequest::RestartIce {
                call_id: call_id.clone(),
            },
            Recovery::Renew => MediaRequest::Renew {
                call_id: call_id.clone(),
            },
        };
        self.outputs.push_back(Output::Recovering {
            call_id,
            attempt,
            reason: why.to_owned(),
            renew: how == Recovery::Renew,
        });
        self.outputs.push_back(Output::Media(req));
    }

    fn on_timer(&mut self, t: Timer) {
        match (t, &self.state) {
            (Timer::Ring, State::Ringing(_)) => self.end(EndReason::NoAnswer),
            (Timer::Connect, State::Connecting(_)) => self.end(EndReason::ConnectTimeout),
            (Timer::MaxDuration, State::InCall(_)) => self.end(EndReason::MaxDuration),
            (Timer::MediaLost, State::Connecting(_) | State::InCall(_)) => {
                let now = self
                    .last_now
                    .expect("handle_timeout sets last_now before firing timers");
                self.recover(Recovery::IceRestart, "media not back after a restart", now)
            }
            (Timer::EndedLinger, State::Ended) => {
                self.state = State::Idle;
                self.phase_changed();
            }
            // A timer that outlived its state is harmless.
            _ => {}
        }
    }

    /// End the current call, telling the hub.
    fn end(&mut self, reason: EndReason) {
        let Some(call) = self.state.call().cloned() else {
            return;
        };
        let msg = if matches!(self.state, State::Ringing(_)) {
            Message::Cancel {
                call_id: call.id.clone(),
                reason: reason.wire().into(),
            }
        } else {
            Message::Hangup {
                call_id: call.id.clone(),
                reason: reason.wire().into(),
            }
        };
        self.send(msg);
        self.finish(call, reason);
    }

    /// End the current call because the other side said so.
    fn end_without_notice(&mut self, reason: EndReason) {
        if let Some(call) = self.state.call().cloned() {
            self.finish(call, reason);
        }
    }

    fn finish(&mut self, call: Call, reason: EndReason) {
        let had_media = !matches!(self.state, State::Ringing(_));
        self.timers = [None; TIMER_COUNT];
        self.state = State::Ended;
        self.timers[Timer::EndedLinger as usize] =
            self.last_now.map(|now| now + self.settings.ended_linger);
        if had_media {
            self.outputs.push_back(Output::Media(MediaRequest::Stop {
                call_id: call.id.clone(),
            }));
        }
        // Nothing queued for a finished call is worth sending later, except
        // the message that tells the peer it ended.
        let id = call.id.clone();
        self.outbox.retain(|m| {
            m.call_id() != Some(&id) || matches!(m, Message::Hangup { .. } | Message::Cancel { .. })
        });
        if call.origin == Origin::Resident
            && let Some(by) = call.answerer.clone()
        {
            let duration = self
                .last_now
                .map(|now| now.saturating_duration_since(call.started))
                .unwrap_or_default();
            self.outputs.push_back(Output::ResidentCallEnded {
                call_id: call.id.clone(),
                by,
                duration,
                reason: reason.clone(),
            });
        }
        self.outputs.push_back(Output::Ended {
            call_id: call.id,
            reason,
        });
        self.phase_changed();
    }

    fn send(&mut self, msg: Message) {
        if self.signaling_up {
            self.outputs.push_back(Output::Send(msg));
        } else if self.outbox.len() < self.settings.max_queued_messages {
            self.outbox.push_back(msg);
        } else {
            self.dropped_messages += 1;
        }
    }

    fn phase_changed(&mut self) {
        self.outputs.push_back(Output::PhaseChanged {
            phase: self.state.phase(),
            call_id: self.state.call().map(|c| c.id.clone()),
        });
    }

    fn current(&self, input: &'static str, call_id: &CallId) -> Result<&Call, Rejected> {
        match self.state.call() {
            None => Err(Rejected::NoCall { input }),
            Some(c) if &c.id != call_id => Err(Rejected::OtherCall {
                input,
                got: call_id.clone(),
                current: c.id.clone(),
            }),
            Some(c) => Ok(c),
        }
    }

    fn out_of_state(&self, input: &'static str) -> Rejected {
        Rejected::OutOfState {
            input,
            phase: self.state.phase().as_str(),
        }
    }

    /// The group of the current call, if any.
    pub fn group(&self) -> Option<&str> {
        self.state.call().map(|c| c.group.as_str())
    }

    /// The current call is a resident's call to the door.
    pub fn resident_call(&self) -> bool {
        self.state
            .call()
            .is_some_and(|c| c.origin == Origin::Resident)
    }

    /// The answerer of the current call, once accepted.
    pub fn answerer(&self) -> Option<&PeerInfo> {
        self.state.call().and_then(|c| c.answerer.as_ref())
    }

    #[cfg(test)]
    fn media_up(&self) -> bool {
        self.state.call().is_some_and(|c| c.media_up)
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
