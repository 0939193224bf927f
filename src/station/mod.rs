//! The station core: the call, door and route machines tied together, with
//! no I/O and no clock of its own (time is an input). Subsystem events go
//! in through [`Station::handle_input`]; what the station wants done comes
//! out of [`Station::poll_output`] as typed [`StationOutput`]s; the next
//! deadline is [`Station::poll_timeout`]. The controller (`controller.rs`)
//! is the shell that owns the channels, the devices and the clock.
//!
//! Hardware inputs go to the door machine first: it decides what rings,
//! what hangs up, what opens, and what the LEDs and the relay show. The
//! call machine owns the call; the route machine decides whether a headset
//! or the speaker carries its audio.

mod audit;
mod status;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

pub use audit::Audit;
pub use status::{BluetoothStatus, CallStatus, DoorStatus, Status, StatusHandle, StatusRequests};

use crate::audio::tones::ToneCue;
use crate::bt::{
    BtEvent, CallPhase, Codec, DeviceAddr, DoorCall, GatewayCommand, Route, RouteInput,
    RouteMachine, RouteOutput, RouteSettings, VoiceLink,
};
use crate::call::{
    CallMachine, CallSettings, EndReason, Input, MediaRequest, MediaState, Output, Phase,
};
use crate::door::indication::{LedPattern, StationState};
use crate::door::{DoorInput, DoorMachine, DoorOutput, DoorSettings, OpenSource, Refusal};
use crate::hw::HwEvent;
use crate::limits::LogThrottle;
use crate::logging::{PeerText, message_id};
use crate::media::{self, MediaEvent};
use crate::signaling::client::ClientEvent;
use crate::signaling::protocol::{
    CallId, DoorRequest, ErrorCode, IceServerInfo, Message, OpenResult,
};

/// What the station is built from.
#[derive(Clone, Debug)]
pub struct StationSettings {
    pub call: CallSettings,
    pub door: DoorSettings,
    /// Button name → ring group.
    pub buttons: HashMap<String, String>,
    /// `bluetooth.enabled`: headsets may carry calls, the service button
    /// opens pairing.
    pub bluetooth: bool,
}

/// Fresh call ids: the wall-clock time and a random salt are given once by
/// the shell, so ids of a restarted station never collide with its earlier
/// calls while the core stays free of clocks and randomness.
#[derive(Clone, Debug)]
pub struct CallIds {
    wall_ms: u64,
    started: Instant,
    salt: u32,
    issued: u32,
}

impl CallIds {
    /// `wall_ms`: milliseconds since the Unix epoch at `started`.
    pub fn new(wall_ms: u64, started: Instant, salt: u32) -> Self {
        CallIds {
            wall_ms,
            started,
            salt,
            issued: 0,
        }
    }

    fn next(&mut self, now: Instant) -> CallId {
        let ms = self.wall_ms + now.saturating_duration_since(self.started).as_millis() as u64;
        // Distinct for every id of this run (an odd multiplier is a
        // bijection on u32), unpredictable across runs through the salt.
        let r = self
            .salt
            .wrapping_add(self.issued.wrapping_mul(0x9e37_79b9));
        self.issued = self.issued.wrapping_add(1);
        CallId::new(format!("c-{ms:x}-{r:08x}"))
            .expect("hex digits and dashes form a valid call id")
    }
}

/// Everything that can happen to the station.
#[derive(Debug)]
pub enum StationInput {
    Signaling(ClientEvent),
    Media(MediaEvent),
    Hw(HwEvent),
    Bt(BtInput),
    /// The call's audio device could not be opened (the shell's answer to
    /// `StationOutput::Media(MediaRequest::StartOffer)`).
    AudioUnavailable {
        call_id: CallId,
        error: String,
    },
    /// The relay could not be driven: a hardware fault.
    RelayFailed,
    /// The daemon is stopping: end any call, release the relay.
    Shutdown,
}

/// The Bluetooth actor's events as the core sees them: the SCO link's
/// audio stays with the shell, only its codec comes here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BtInput {
    Pairing {
        active: bool,
    },
    Headset {
        device: DeviceAddr,
        connected: bool,
    },
    HandsFree {
        device: DeviceAddr,
        connected: bool,
    },
    HangupRequested {
        device: DeviceAddr,
    },
    Sco {
        device: DeviceAddr,
        codec: Option<Codec>,
    },
}

impl BtInput {
    /// The core's part of a Bluetooth event, and the SCO link it carried.
    pub fn split(ev: BtEvent) -> (BtInput, Option<VoiceLink>) {
        match ev {
            BtEvent::Pairing { active } => (BtInput::Pairing { active }, None),
            BtEvent::Headset { device, connected } => {
                (BtInput::Headset { device, connected }, None)
            }
            BtEvent::HandsFree { device, connected } => {
                (BtInput::HandsFree { device, connected }, None)
            }
            BtEvent::HangupRequested { device } => (BtInput::HangupRequested { device }, None),
            BtEvent::Sco { device, link } => {
                let codec = link.as_ref().map(|l| l.codec);
                (BtInput::Sco { device, codec }, link)
            }
        }
    }
}

/// What the station wants done, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum StationOutput {
    /// Send this to the hub.
    Signal(Message),
    /// A request to the media engine. For `StartOffer` the shell opens the
    /// call's audio and uses [`Station::hub_ice_servers`].
    Media(MediaRequest),
    /// Send this on the call's door data channel.
    DoorReply { call_id: CallId, reply: OpenResult },
    /// Drive the relay.
    Relay { energised: bool },
    Led {
        name: String,
        pattern: LedPattern,
        on: bool,
    },
    /// The speaker's local tone.
    Tone(ToneCue),
    /// The call's phase changed (systemd's STATUS= line).
    Phase(Phase),
    /// To the Bluetooth gateways: `device` one headset, `None` all.
    Gateway {
        device: Option<DeviceAddr>,
        cmd: GatewayCommand,
    },
    /// Open a Bluetooth pairing window (the service button was held).
    Pair,
    /// Carry the call's audio on this route.
    Route {
        call_id: Option<CallId>,
        route: Route,
    },
    /// The call is over: its audio router goes.
    CallAudioDone,
    /// An audit record to write.
    Audit(Audit),
}

/// Refused door openings from the resident's channel: five lines per 10 s,
/// then a count (grants are always written).
const REFUSAL_LINES: (Duration, u32) = (Duration::from_secs(10), 5);

pub struct Station {
    call: CallMachine,
    door: DoorMachine,
    route: RouteMachine,
    buttons: HashMap<String, String>,
    bluetooth: bool,
    hub_ice_servers: Vec<IceServerInfo>,
    bt_pairing: bool,
    /// The headset whose service level connection is up (the first one).
    headset: Option<DeviceAddr>,
    /// The button that rang, for the headset's caller display.
    ringing_button: String,
    open_refusals: LogThrottle,
    ids: CallIds,
    out: VecDeque<StationOutput>,
    /// The time of the input being handled.
    now: Instant,
}

impl Station {
    /// A station at rest. Its first outputs drive the relay to its
    /// de-energised level (see `DoorMachine::new`).
    pub fn new(settings: StationSettings, ids: CallIds, now: Instant) -> Self {
        let mut station = Station {
            call: CallMachine::new(settings.call),
            door: DoorMachine::new(settings.door, now),
            route: RouteMachine::new(RouteSettings::default()),
            buttons: settings.buttons,
            bluetooth: settings.bluetooth,
            hub_ice_servers: Vec::new(),
            bt_pairing: false,
            headset: None,
            ringing_button: String::new(),
            open_refusals: LogThrottle::with_burst(REFUSAL_LINES.0, REFUSAL_LINES.1),
            ids,
            out: VecDeque::new(),
            now,
        };
        station.drain_door();
        station
    }

    pub fn poll_output(&mut self) -> Option<StationOutput> {
        self.out.pop_front()
    }

    /// The earliest deadline of the machines and of the refusal count.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.call.poll_timeout(),
            self.door.poll_timeout(),
            self.route.poll_timeout(),
            self.open_refusals.due_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.call.handle_timeout(now);
        self.drain_call();
        self.door.handle_timeout(now);
        self.drain_door();
        self.route.handle_timeout(now);
        self.drain_route();
        self.report_open_refusals(false);
    }

    pub fn handle_input(&mut self, input: StationInput, now: Instant) {
        self.now = now;
        match input {
            StationInput::Signaling(ev) => self.on_signaling(ev),
            StationInput::Media(ev) => self.on_media(ev),
            StationInput::Hw(ev) => self.on_hw(ev),
            StationInput::Bt(ev) => self.on_bt(ev),
            StationInput::AudioUnavailable { call_id, error } => {
                self.call_input(Input::MediaError {
                    call_id,
                    code: ErrorCode::BadState,
                    message: format!("door station audio unavailable: {error}"),
                    fatal: true,
                });
            }
            StationInput::RelayFailed => self.door_input(DoorInput::Fault { active: true }),
            StationInput::Shutdown => {
                let _ = self.call.handle_input(Input::Shutdown, now);
                self.drain_call();
                self.door_input(DoorInput::Shutdown);
            }
        }
    }

    /// The headset in use, whose SCO link the shell keeps for the route.
    pub fn headset(&self) -> Option<&DeviceAddr> {
        self.headset.as_ref()
    }

    /// What becomes of the SCO link the shell holds, on this input:
    /// `Some(true)` keep the new one (the headset in use opened or closed
    /// its link), `Some(false)` drop it (that headset went), `None` as is.
    /// A link of another headset is dropped (closed) by the shell.
    pub fn keeps_link(&self, input: &BtInput) -> Option<bool> {
        let ours = |d: &DeviceAddr| self.headset.as_ref() == Some(d);
        match input {
            BtInput::Sco { device, .. } if ours(device) => Some(true),
            BtInput::Headset { device, connected } | BtInput::HandsFree { device, connected }
                if !connected && ours(device) =>
            {
                Some(false)
            }
            _ => None,
        }
    }

    /// The ICE servers the hub handed out; empty when the configured ones
    /// apply.
    pub fn hub_ice_servers(&self) -> &[IceServerInfo] {
        &self.hub_ice_servers
    }

    pub fn status(&self, now: Instant) -> Status {
        status::build(self, now)
    }

    fn call_input(&mut self, input: Input) {
        let call_id = self.call.call_id().cloned();
        if let Err(rejected) = self.call.handle_input(input, self.now) {
            match call_id {
                Some(id) => warn!(call_id = %id, "{}", PeerText::new(&rejected.to_string())),
                None => warn!("{}", PeerText::new(&rejected.to_string())),
            }
        }
        self.drain_call();
    }

    fn door_input(&mut self, input: DoorInput) {
        self.door.handle_input(input, self.now);
        self.drain_door();
    }

    fn route_input(&mut self, input: RouteInput) {
        self.route.handle_input(input, self.now);
        self.drain_route();
    }

    fn emit(&mut self, out: StationOutput) {
        self.out.push_back(out);
    }

    fn on_signaling(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Up { ice_servers, .. } => {
                self.hub_ice_servers = ice_servers;
                self.call_input(Input::SignalingUp);
            }
            ClientEvent::Down { reason } => {
                let reason = PeerText::new(&reason).to_string();
                match self.call.call_id() {
                    Some(id) => {
                        warn!(call_id = %id, reason = %reason, "signaling down during a call; the call goes on")
                    }
                    None => warn!(reason = %reason, "signaling down"),
                }
                self.call_input(Input::SignalingDown);
            }
            ClientEvent::Message(m) => {
                debug!(kind = m.type_name(), call_id = ?m.call_id().map(|c| c.to_string()), "from hub");
                if let Message::Error {
                    code,
                    message,
                    reference,
                    call_id,
                } = &m
                {
                    warn!(code = code.as_str(), reference = %PeerText::new(reference.as_deref().unwrap_or("")), call_id = ?call_id.as_ref().map(|c| c.to_string()), "hub reported an error: {}", PeerText::new(message));
                }
                return self.call_input(Input::Signal(m));
            }
        }
        self.show_phase(self.call.phase());
    }

    fn on_media(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::LocalDescription { call_id, kind, sdp } => {
                if kind == media::SdpKind::Offer {
                    self.call_input(Input::LocalDescription { call_id, sdp });
                }
            }
            MediaEvent::LocalCandidate { call_id, candidate } => {
                self.call_input(Input::LocalCandidate { call_id, candidate });
            }
            MediaEvent::State { call_id, state } => {
                let Some(state) = media_state(state) else {
                    return;
                };
                info!(call_id = %call_id, ice_state = ?state, "media connection state");
                self.call_input(Input::Media { call_id, state });
            }
            MediaEvent::AudioEstablished { call_id, .. } => {
                self.call_input(Input::AudioEstablished { call_id });
            }
            MediaEvent::AudioSetupCompleted { .. } | MediaEvent::DoorChannelOpen { .. } => {}
            MediaEvent::DoorMessage { call_id, text } => self.on_door_message(call_id, &text),
            MediaEvent::Error {
                call_id,
                kind,
                message,
            } => {
                let (code, fatal) = match kind {
                    media::MediaErrorKind::Description => (ErrorCode::BadSdp, true),
                    media::MediaErrorKind::Candidate => (ErrorCode::BadCandidate, false),
                    media::MediaErrorKind::Session => (ErrorCode::BadState, true),
                };
                warn!(call_id = %call_id, code = code.as_str(), fatal, "media refused peer input: {}", PeerText::new(&message));
                self.call_input(Input::MediaError {
                    call_id,
                    code,
                    message,
                    fatal,
                });
            }
        }
    }

    fn on_hw(&mut self, ev: HwEvent) {
        let input = match ev {
            HwEvent::ButtonPressed { button } => DoorInput::ButtonDown { button },
            HwEvent::ButtonReleased { button } => DoorInput::ButtonUp { button },
            HwEvent::HangupRequested => {
                info!("hang-up requested at the door");
                return self.call_input(Input::LocalHangup);
            }
            HwEvent::ExitPressed => DoorInput::ExitPressed,
            HwEvent::DoorSensor { open } => {
                info!(door_open = open, "door sensor");
                DoorInput::DoorSensor { open }
            }
            HwEvent::Tamper { active } => DoorInput::Tamper { active },
            HwEvent::Service { pressed } => DoorInput::Service { pressed },
            HwEvent::Fault { active } => {
                self.door_input(DoorInput::Fault { active });
                return;
            }
        };
        self.door_input(input);
    }

    fn on_bt(&mut self, ev: BtInput) {
        match ev {
            BtInput::Pairing { active } => {
                self.bt_pairing = active;
                self.door_input(DoorInput::Pairing { active });
            }
            BtInput::HandsFree {
                device,
                connected: true,
            } => {
                if self.headset.is_none() {
                    self.headset = Some(device);
                    self.route_input(RouteInput::Connected);
                    self.route_input(RouteInput::Slc { up: true });
                }
            }
            BtInput::HandsFree {
                device,
                connected: false,
            }
            | BtInput::Headset {
                device,
                connected: false,
            } => {
                if self.headset.as_ref() == Some(&device) {
                    self.headset = None;
                    self.route_input(RouteInput::Disconnected);
                }
            }
            BtInput::Headset {
                connected: true, ..
            } => {}
            BtInput::HangupRequested { device } => {
                if self.headset.as_ref() == Some(&device) && self.call.call_id().is_some() {
                    info!(device = %device, "hang-up requested on the headset");
                    self.call_input(Input::LocalHangup);
                }
            }
            // Not the headset in use: the shell drops (closes) its link.
            BtInput::Sco { device, .. } if self.headset.as_ref() != Some(&device) => {}
            BtInput::Sco {
                codec: Some(codec), ..
            } => self.route_input(RouteInput::ScoUp { codec }),
            BtInput::Sco { codec: None, .. } => self.route_input(RouteInput::ScoDown),
        }
    }

    fn drain_route(&mut self) {
        while let Some(out) = self.route.poll_output() {
            match out {
                RouteOutput::OpenSco | RouteOutput::CloseSco => {
                    let cmd = if out == RouteOutput::OpenSco {
                        GatewayCommand::OpenAudio
                    } else {
                        GatewayCommand::CloseAudio
                    };
                    if let (true, Some(device)) = (self.bluetooth, &self.headset) {
                        let device = Some(device.clone());
                        self.emit(StationOutput::Gateway { device, cmd });
                    }
                }
                RouteOutput::Switch(route) => {
                    let call_id = self.call.call_id().cloned();
                    self.emit(StationOutput::Route { call_id, route });
                }
            }
        }
    }

    /// The phase as the door shows it: a resident's call to the door is
    /// taken at once, so the people at the door see (and a headset gets)
    /// an active call from its first moment, never a ringing one.
    fn shown_phase(&self, phase: Phase) -> Phase {
        match phase {
            Phase::Connecting if self.call.resident_call() => Phase::InCall,
            p => p,
        }
    }

    /// The call's phase as the headset and the audio route see it.
    fn call_to_headset(&mut self, phase: Phase) {
        let phase = self.shown_phase(phase);
        let (route_phase, door_call) = match phase {
            Phase::Ringing | Phase::Connecting => (
                CallPhase::Ringing,
                DoorCall::Ringing {
                    caller: self.ringing_button.clone(),
                },
            ),
            Phase::InCall => (CallPhase::Active, DoorCall::Active),
            Phase::Idle | Phase::Ended => (CallPhase::Idle, DoorCall::Idle),
        };
        if self.bluetooth {
            self.emit(StationOutput::Gateway {
                device: None,
                cmd: GatewayCommand::Call(door_call),
            });
        }
        if matches!(phase, Phase::Idle | Phase::Ended) {
            self.emit(StationOutput::CallAudioDone);
        }
        self.route_input(RouteInput::Call(route_phase));
    }

    /// Tell the door machine what the call looks like (LEDs, remote
    /// opening, long press).
    fn show_phase(&mut self, phase: Phase) {
        let phase = self.shown_phase(phase);
        let state = if !self.call.signaling_up() && matches!(phase, Phase::Idle | Phase::Ended) {
            StationState::SignalingDown
        } else {
            match phase {
                Phase::Idle | Phase::Ended => StationState::Idle,
                Phase::Ringing | Phase::Connecting => StationState::Ringing,
                Phase::InCall => StationState::InCall,
            }
        };
        let answered = match (phase, self.call.call_id(), self.call.answerer()) {
            (Phase::Connecting | Phase::InCall, Some(id), Some(a)) => {
                Some((id.clone(), a.id.clone()))
            }
            _ => None,
        };
        self.door_input(DoorInput::Call { state, answered });
    }

    /// A message on a call's door data channel. Only `open` is known;
    /// anything else is refused and audited like a refused open.
    fn on_door_message(&mut self, channel_call: CallId, text: &str) {
        // The peer of the channel is the answerer of its call, if that call
        // is still the current one.
        let peer = match (self.call.call_id(), self.call.answerer()) {
            (Some(id), Some(a)) if *id == channel_call => a.id.clone(),
            _ => String::new(),
        };
        match DoorRequest::decode(text) {
            DoorRequest::Open { nonce } => self.door_input(DoorInput::RemoteOpen {
                call_id: channel_call,
                peer,
                nonce,
            }),
            DoorRequest::Invalid { nonce } => {
                let source = OpenSource::Remote {
                    call_id: channel_call,
                    peer,
                    nonce,
                };
                self.open_attempt(source, false, Some(Refusal::BadRequest), Duration::ZERO);
            }
        }
    }

    fn drain_door(&mut self) {
        while let Some(out) = self.door.poll_output() {
            match out {
                DoorOutput::Relay { energised } => {
                    info!(energised, "door relay");
                    // The visitor hears that the door is open.
                    if energised {
                        self.emit(StationOutput::Tone(ToneCue::DoorOpened));
                    }
                    self.emit(StationOutput::Relay { energised });
                }
                DoorOutput::Ring { button } => self.ring(button),
                DoorOutput::ServiceLongPress if self.bluetooth => {
                    info!("service button held: opening Bluetooth pairing");
                    self.emit(StationOutput::Pair);
                }
                DoorOutput::ServiceLongPress => {
                    warn!("service button held, but Bluetooth is off (bluetooth.enabled = false)")
                }
                DoorOutput::Hangup { button } => {
                    info!(button = %button, "long press during a call");
                    self.call_input(Input::ButtonHeld);
                }
                DoorOutput::OpenAttempt {
                    source,
                    granted,
                    reason,
                    pulse,
                } => self.open_attempt(source, granted, reason, pulse),
                DoorOutput::HeldOpenAlarm { open_for } => {
                    warn!(
                        ALARM = "door_held_open",
                        open_for_ms = open_for.as_millis() as u64,
                        "door held open"
                    );
                }
                DoorOutput::HeldOpenCleared => {
                    info!(ALARM = "door_held_open", "door closed again");
                }
                DoorOutput::TamperChanged { active, lockout } => {
                    if active {
                        warn!(ALARM = "tamper", lockout, "tamper switch tripped");
                    } else {
                        info!(ALARM = "tamper", "tamper switch restored");
                    }
                }
                DoorOutput::Led { name, pattern, on } => {
                    self.emit(StationOutput::Led { name, pattern, on })
                }
            }
        }
    }

    /// A call button was pressed: ring its group, or (during a resident's
    /// call to the door) let the call machine decide.
    fn ring(&mut self, button: String) {
        let Some(group) = self.buttons.get(&button).cloned() else {
            warn!(button = %button, "press on a button with no ring group");
            return;
        };
        if self.call.resident_call() {
            // The call machine decides: the visitor answers.
            let call_id = self.ids.next(self.now);
            return self.call_input(Input::ButtonPressed { group, call_id });
        }
        if self.call.call_id().is_some() {
            debug!(button = %button, "press during a call: nothing to ring");
            return;
        }
        let call_id = self.ids.next(self.now);
        info!(message_id = message_id::CALL_STARTED, button = %button, group = %group, call_id = %call_id, "call button pressed");
        self.ringing_button = button;
        self.call_input(Input::ButtonPressed { group, call_id });
    }

    /// The audit record of an open attempt, the reply on the data channel
    /// for remote ones, and `door_opened` to the hub for granted ones.
    fn open_attempt(
        &mut self,
        source: OpenSource,
        granted: bool,
        reason: Option<Refusal>,
        pulse: Duration,
    ) {
        let OpenSource::Remote { call_id, nonce, .. } = &source else {
            return self.emit(StationOutput::Audit(Audit::DoorOpen {
                source,
                granted,
                reason,
                pulse,
                refusals: None,
            }));
        };
        let (call_id, nonce) = (call_id.clone(), nonce.clone());
        if granted {
            self.emit(StationOutput::Audit(Audit::DoorOpen {
                source,
                granted,
                reason,
                pulse,
                refusals: None,
            }));
            // For the hub's call history; a hub without history ignores it.
            self.emit(StationOutput::Signal(Message::DoorOpened {
                call_id: call_id.clone(),
            }));
        } else if let Some(refusals) = self.open_refusals.hit(self.now) {
            // `refusals`: this one and those since the last line.
            self.emit(StationOutput::Audit(Audit::DoorOpen {
                source,
                granted,
                reason,
                pulse: Duration::ZERO,
                refusals: Some(refusals),
            }));
        }
        let reply = OpenResult {
            nonce,
            granted,
            reason: reason.map(Refusal::as_str),
            pulse_ms: pulse.as_millis() as u64,
        };
        self.emit(StationOutput::DoorReply { call_id, reply });
    }

    /// The line for refusals counted since the last one, when due (or at
    /// once with `now_anyway`, at the end of a call).
    fn report_open_refusals(&mut self, now_anyway: bool) {
        if !now_anyway && !self.open_refusals.due(self.now) {
            return;
        }
        if let Some(refusals) = self.open_refusals.take_unreported() {
            self.emit(StationOutput::Audit(Audit::DoorOpenRefusals { refusals }));
        }
    }

    fn drain_call(&mut self) {
        while let Some(out) = self.call.poll_output() {
            match out {
                Output::Send(msg) => self.emit(StationOutput::Signal(msg)),
                Output::Media(req) => self.emit(StationOutput::Media(req)),
                Output::PhaseChanged { phase, call_id } => self.phase_changed(phase, call_id),
                Output::ResidentCallStarted { call_id, by } => {
                    self.emit(StationOutput::Audit(Audit::door_call_start(call_id, by)))
                }
                Output::ResidentCallRefused {
                    call_id,
                    by,
                    reason,
                } => self.emit(StationOutput::Audit(Audit::door_call_refused(
                    call_id, by, reason,
                ))),
                Output::ResidentCallEnded {
                    call_id,
                    by,
                    duration,
                    reason,
                } => self.emit(StationOutput::Audit(Audit::door_call_end(
                    call_id, by, duration, &reason,
                ))),
                Output::Ended { call_id, reason } => self.call_ended(&call_id, &reason),
                other => log_call_output(other),
            }
        }
    }

    /// The call's phase changed: logged, told to systemd, shown, sounded,
    /// passed to a headset and published.
    fn phase_changed(&mut self, phase: Phase, call_id: Option<CallId>) {
        match &call_id {
            Some(id) => info!(call_id = %id, phase = phase.as_str(), "call state"),
            None => info!(phase = phase.as_str(), "call state"),
        }
        self.emit(StationOutput::Phase(phase));
        self.show_phase(phase);
        self.emit(StationOutput::Tone(tone_for(phase)));
        self.call_to_headset(phase);
    }

    fn call_ended(&mut self, call_id: &CallId, reason: &EndReason) {
        self.report_open_refusals(true);
        let reason_text = PeerText::new(&reason.to_string()).to_string();
        if matches!(
            reason,
            EndReason::MediaFailed(_) | EndReason::ConnectTimeout | EndReason::Refused(_)
        ) {
            warn!(message_id = message_id::CALL_ENDED, call_id = %call_id, reason = %reason_text, "call ended");
        } else {
            info!(message_id = message_id::CALL_ENDED, call_id = %call_id, reason = %reason_text, "call ended");
        }
    }
}

/// The call machine's outputs that only make a log line.
fn log_call_output(out: Output) {
    match out {
        Output::Answered { call_id, by } => {
            info!(message_id = message_id::CALL_ANSWERED, call_id = %call_id, peer = %PeerText::new(&by.id), peer_name = %PeerText::new(&by.name), "call answered");
        }
        Output::VisitorAnswered { call_id } => {
            info!(call_id = %call_id, "call button pressed during a resident's call: the visitor answers");
        }
        Output::Established { call_id } => info!(call_id = %call_id, "call in progress"),
        Output::ListenOnly { call_id, by } => {
            let (peer, peer_name) = by.map(|b| (b.id, b.name)).unwrap_or_default();
            info!(call_id = %call_id, peer = %PeerText::new(&peer), peer_name = %PeerText::new(&peer_name), "answered without a microphone; the call goes on listen-only");
        }
        Output::Recovering {
            call_id,
            attempt,
            reason,
            renew,
        } => {
            let remedy = if renew {
                "new media session"
            } else {
                "ICE restart"
            };
            warn!(message_id = message_id::MEDIA_RECOVERY, call_id = %call_id, attempt, reason = %PeerText::new(&reason), remedy, "call media lost; trying to bring it back");
        }
        Output::CandidatesCapped { call_id, cap } => {
            warn!(call_id = %call_id, cap, "remote ICE candidates beyond the cap ignored for this offer");
        }
        other => debug!(output = ?other, "call output without an effect"),
    }
}

/// The media engine's connection state as the call machine sees it
/// (`None`: not a change it acts on).
fn media_state(state: media::MediaState) -> Option<MediaState> {
    Some(match state {
        media::MediaState::New => return None,
        media::MediaState::Checking => MediaState::Checking,
        media::MediaState::Connected => MediaState::Connected,
        media::MediaState::Disconnected => MediaState::Disconnected,
        media::MediaState::Failed => MediaState::Failed,
        media::MediaState::Stalled => MediaState::Stalled,
        media::MediaState::Unheard => MediaState::Unheard,
        media::MediaState::Closed => MediaState::Closed,
    })
}

/// The local tone for a call phase: ringback while the residents are rung.
fn tone_for(phase: Phase) -> ToneCue {
    match phase {
        Phase::Ringing => ToneCue::Ringback,
        Phase::Idle | Phase::Connecting | Phase::InCall | Phase::Ended => ToneCue::Silence,
    }
}

#[cfg(test)]
mod tests;
