//! The controller: the one task that owns the call machine and the handles
//! of every subsystem (signaling, media, audio, hardware). Subsystems send
//! events up through their own channels; the controller turns each into an
//! [`Input`], drains the machine's outputs and sends commands down with
//! `try_send`, so no cycle of bounded channels can deadlock. Audio frames
//! never pass through here. The door machine sits beside the call machine:
//! hardware inputs go to it first, and it decides what rings, what hangs
//! up, what opens, and what the LEDs and the relay show.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::audio::AudioProvider;
use crate::audio::router::{self, RouterCommand};
use crate::audio::tones::ToneCue;
use crate::bt::adapter::{GatewayCommand, VoiceLink};
use crate::bt::{
    BtEvent, BtHandle, CallPhase, DeviceAddr, DoorCall, PairSource, Route, RouteInput,
    RouteMachine, RouteOutput, RouteSettings,
};
use crate::call::{
    CallMachine, CallSettings, EndReason, Input, MediaRequest, MediaState, Output, Phase,
};
use crate::door::{DoorInput, DoorMachine, DoorOutput, DoorSettings, OpenSource, Refusal};
use crate::hw::{HwEvent, Led, Relay, StationState};
use crate::ice_servers::IceServerSpec;
use crate::logging::message_id;
use crate::media::{self, MediaCommand, MediaEvent, MediaHandle, SdpKind};
use crate::signaling::client::{ClientEvent, SignalingHandle};
use crate::signaling::protocol::{CallId, ErrorCode, IceServerInfo};

/// The local tone for a call phase: ringback while the residents are rung.
fn tone_for(phase: Phase) -> ToneCue {
    match phase {
        Phase::Ringing => ToneCue::Ringback,
        Phase::Idle | Phase::Connecting | Phase::InCall | Phase::Ended => ToneCue::Silence,
    }
}

/// The event sources the controller listens to.
pub struct Inputs {
    pub signaling: mpsc::Receiver<ClientEvent>,
    pub media: mpsc::Receiver<MediaEvent>,
    pub hw: mpsc::Receiver<HwEvent>,
    /// The Bluetooth actor's events (a channel nobody sends on when
    /// Bluetooth is off).
    pub bt: mpsc::Receiver<BtEvent>,
}

pub struct Controller {
    pub machine: CallMachine,
    /// Button name → ring group.
    pub buttons: HashMap<String, String>,
    pub signaling: SignalingHandle,
    pub media: MediaHandle,
    pub audio: Box<dyn AudioProvider>,
    pub leds: Vec<Box<dyn Led>>,
    pub door: DoorMachine,
    pub relay: Box<dyn Relay>,
    /// ICE servers from configuration; the hub's list replaces them when it
    /// sends one.
    pub ice_servers: Vec<IceServerSpec>,
    /// This station's id: the client name in shared-secret TURN
    /// credentials minted from `ice_servers`.
    pub station_id: String,
    pub status: watch::Sender<serde_json::Value>,
    pub signaling_up: bool,
    /// The Bluetooth actor, when `bluetooth.enabled`.
    pub bt: Option<BtHandle>,
    bt_pairing: bool,
    /// Which device carries the call audio (speaker or headset).
    route: RouteMachine,
    /// The headset whose service level connection is up (the first one).
    headset: Option<DeviceAddr>,
    /// The headset's open SCO link, until the router takes it.
    voice: Option<VoiceLink>,
    /// The current call's audio router (only with Bluetooth on).
    router: Option<mpsc::Sender<RouterCommand>>,
    /// The button that rang, for the headset's caller display.
    ringing_button: String,
    /// Refused door openings from the resident's channel: five lines per
    /// 10 s, then a count (grants are always written).
    open_refusals: crate::limits::LogThrottle,
    hub_ice_servers: Vec<IceServerInfo>,
    last_established: Option<CallId>,
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: CallSettings,
        buttons: HashMap<String, String>,
        signaling: SignalingHandle,
        media: MediaHandle,
        audio: Box<dyn AudioProvider>,
        leds: Vec<Box<dyn Led>>,
        door: DoorSettings,
        relay: Box<dyn Relay>,
        ice_servers: Vec<IceServerSpec>,
        status: watch::Sender<serde_json::Value>,
    ) -> Self {
        Controller {
            machine: CallMachine::new(settings),
            buttons,
            signaling,
            media,
            audio,
            leds,
            door: DoorMachine::new(door, Instant::now().into_std()),
            relay,
            ice_servers,
            station_id: String::new(),
            status,
            signaling_up: false,
            bt: None,
            bt_pairing: false,
            route: RouteMachine::new(RouteSettings::default()),
            headset: None,
            voice: None,
            router: None,
            ringing_button: String::new(),
            open_refusals: crate::limits::LogThrottle::with_burst(Duration::from_secs(10), 5),
            hub_ice_servers: Vec::new(),
            last_established: None,
        }
    }

    /// Run until `stop` is cancelled; then end any call and tell the hub.
    pub async fn run(mut self, mut inputs: Inputs, stop: CancellationToken) {
        // First of all: the relay to its de-energised level (see DoorMachine::new).
        self.drain_door();
        self.publish();
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut status_tick = tokio::time::interval(Duration::from_millis(500));
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // WATCHDOG=1 every half period, sent from this loop: if the loop
        // wedges, the pings stop and systemd restarts the daemon.
        let mut watchdog_tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(feature = "fault-injection")]
        let wedge_at = crate::fault::controller_wedge_after().map(|d| Instant::now() + d);
        loop {
            let deadline = [
                self.machine.poll_timeout(),
                self.door.poll_timeout(),
                self.route.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ev = inputs.signaling.recv() => match ev {
                    Some(ev) => self.on_signaling(ev),
                    None => break,
                },
                ev = inputs.media.recv() => match ev {
                    Some(ev) => self.on_media(ev),
                    None => break,
                },
                ev = inputs.hw.recv() => match ev {
                    Some(ev) => self.on_hw(ev),
                    None => break,
                },
                // Closed when Bluetooth is off: the arm is then disabled.
                Some(ev) = inputs.bt.recv() => self.on_bt(ev),
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now().into_std();
                    self.machine.handle_timeout(now);
                    self.drain();
                    self.door.handle_timeout(now);
                    self.drain_door();
                    self.route.handle_timeout(now);
                    self.drain_route();
                }
                _ = status_tick.tick() => {
                    self.report_open_refusals(false);
                    self.publish();
                }
                _ = watchdog_tick.tick(), if watchdog.is_some() => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                _ = stop.cancelled() => break,
            }
            #[cfg(feature = "fault-injection")]
            if wedge_at.is_some_and(|t| Instant::now() >= t) {
                error!("fault injection: the controller loop is wedged on purpose");
                std::future::pending::<()>().await;
            }
        }
        let _ = self
            .machine
            .handle_input(Input::Shutdown, Instant::now().into_std());
        self.drain();
        self.door
            .handle_input(DoorInput::Shutdown, Instant::now().into_std());
        self.drain_door();
        // Give the signaling client a moment to deliver the hang-up.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    fn input(&mut self, input: Input) {
        let call_id = self.machine.call_id().cloned();
        if let Err(rejected) = self.machine.handle_input(input, Instant::now().into_std()) {
            match call_id {
                Some(id) => {
                    warn!(call_id = %id, "{}", crate::logging::PeerText::new(&rejected.to_string()))
                }
                None => warn!("{}", crate::logging::PeerText::new(&rejected.to_string())),
            }
        }
        self.drain();
    }

    fn on_signaling(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Up { ice_servers, .. } => {
                self.signaling_up = true;
                self.hub_ice_servers = ice_servers;
                self.input(Input::SignalingUp);
                self.show_phase(self.machine.phase());
                self.publish();
            }
            ClientEvent::Down { reason } => {
                self.signaling_up = false;
                match self.machine.call_id() {
                    Some(id) => {
                        warn!(call_id = %id, reason = %crate::logging::PeerText::new(&reason.to_string()), "signaling down during a call; the call goes on")
                    }
                    None => {
                        warn!(reason = %crate::logging::PeerText::new(&reason.to_string()), "signaling down")
                    }
                }
                self.input(Input::SignalingDown);
                self.show_phase(self.machine.phase());
                self.publish();
            }
            ClientEvent::Message(m) => {
                debug!(kind = m.type_name(), call_id = ?m.call_id().map(|c| c.to_string()), "from hub");
                if let crate::signaling::protocol::Message::Error {
                    code,
                    message,
                    reference,
                    call_id,
                } = &m
                {
                    warn!(code = code.as_str(), reference = %crate::logging::PeerText::new(reference.as_deref().unwrap_or("")), call_id = ?call_id.as_ref().map(|c| c.to_string()), "hub reported an error: {}", crate::logging::PeerText::new(message));
                }
                self.input(Input::Signal(m));
            }
        }
    }

    fn on_media(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::LocalDescription { call_id, kind, sdp } => {
                if kind == SdpKind::Offer {
                    self.input(Input::LocalDescription { call_id, sdp });
                }
            }
            MediaEvent::LocalCandidate { call_id, candidate } => {
                self.input(Input::LocalCandidate { call_id, candidate });
            }
            MediaEvent::State { call_id, state } => {
                let state = match state {
                    media::MediaState::New => return,
                    media::MediaState::Checking => MediaState::Checking,
                    media::MediaState::Connected => MediaState::Connected,
                    media::MediaState::Disconnected => MediaState::Disconnected,
                    media::MediaState::Failed => MediaState::Failed,
                    media::MediaState::Stalled => MediaState::Stalled,
                    media::MediaState::Closed => MediaState::Closed,
                };
                info!(call_id = %call_id, ice_state = ?state, "media connection state");
                self.input(Input::Media { call_id, state });
            }
            MediaEvent::AudioEstablished { call_id, .. } => {
                self.input(Input::AudioEstablished { call_id });
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
                warn!(call_id = %call_id, code = code.as_str(), fatal, "media refused peer input: {}", crate::logging::PeerText::new(&message.to_string()));
                self.input(Input::MediaError {
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
                self.input(Input::LocalHangup);
                return;
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
                self.publish();
                return;
            }
        };
        self.door_input(input);
    }

    fn on_bt(&mut self, ev: BtEvent) {
        match ev {
            BtEvent::Pairing { active } => {
                self.bt_pairing = active;
                self.door_input(DoorInput::Pairing { active });
                self.publish();
            }
            BtEvent::HandsFree {
                device,
                connected: true,
            } => {
                if self.headset.is_none() {
                    self.headset = Some(device);
                    self.route_input(RouteInput::Connected);
                    self.route_input(RouteInput::Slc { up: true });
                }
            }
            BtEvent::HandsFree {
                device,
                connected: false,
            }
            | BtEvent::Headset {
                device,
                connected: false,
            } => {
                if self.headset.as_ref() == Some(&device) {
                    self.headset = None;
                    self.voice = None;
                    self.route_input(RouteInput::Disconnected);
                }
            }
            BtEvent::Headset {
                connected: true, ..
            } => {}
            BtEvent::HangupRequested { device } => {
                if self.headset.as_ref() == Some(&device) && self.machine.call_id().is_some() {
                    info!(device = %device, "hang-up requested on the headset");
                    self.input(Input::LocalHangup);
                }
            }
            BtEvent::Sco { device, link } => {
                if self.headset.as_ref() != Some(&device) {
                    // Not the headset in use: dropping the link closes it.
                    return;
                }
                match link {
                    Some(link) => {
                        let codec = link.codec;
                        self.voice = Some(link);
                        self.route_input(RouteInput::ScoUp { codec });
                    }
                    None => {
                        self.voice = None;
                        self.route_input(RouteInput::ScoDown);
                    }
                }
            }
        }
    }

    fn route_input(&mut self, input: RouteInput) {
        self.route.handle_input(input, Instant::now().into_std());
        self.drain_route();
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
                    if let (Some(bt), Some(device)) = (&self.bt, &self.headset)
                        && !bt.try_gateway(Some(device.clone()), cmd)
                    {
                        warn!(device = %device, "Bluetooth service busy; SCO request dropped");
                    }
                }
                RouteOutput::Switch(Route::Headset(codec)) => {
                    let call_id = self
                        .machine
                        .call_id()
                        .map(|c| c.to_string())
                        .unwrap_or_default();
                    match (&self.router, self.voice.take()) {
                        (Some(router), Some(link)) => {
                            info!(call_id = %call_id, device = %link.device, codec = %codec, "call audio route: headset");
                            let cmd = RouterCommand::Headset {
                                name: link.device.to_string(),
                                ports: link.ports,
                            };
                            if router.try_send(cmd).is_err() {
                                warn!(call_id = %call_id, "call audio router not accepting; audio stays on the speaker");
                            }
                        }
                        _ => {
                            warn!(call_id = %call_id, "headset route without a router or link; audio stays on the speaker")
                        }
                    }
                }
                RouteOutput::Switch(Route::Speaker) => {
                    if let Some(router) = &self.router {
                        let call_id = self
                            .machine
                            .call_id()
                            .map(|c| c.to_string())
                            .unwrap_or_default();
                        info!(call_id = %call_id, "call audio route: speaker");
                        let _ = router.try_send(RouterCommand::Speaker);
                    }
                }
            }
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
        if let Some(bt) = &self.bt {
            let _ = bt.try_gateway(None, GatewayCommand::Call(door_call));
        }
        if matches!(phase, Phase::Idle | Phase::Ended) {
            self.router = None;
        }
        self.route_input(RouteInput::Call(route_phase));
    }

    fn door_input(&mut self, input: DoorInput) {
        self.door.handle_input(input, Instant::now().into_std());
        self.drain_door();
    }

    /// A message on a call's door data channel. Only `open` is known;
    /// anything else is refused and audited like a refused open.
    fn on_door_message(&mut self, channel_call: CallId, text: &str) {
        // The peer of the channel is the answerer of its call, if that call
        // is still the current one.
        let peer = match (self.machine.call_id(), self.machine.answerer()) {
            (Some(id), Some(a)) if *id == channel_call => a.id.clone(),
            _ => String::new(),
        };
        match decode_door_message(text) {
            DoorRequest::Open { nonce } => self.door_input(DoorInput::RemoteOpen {
                call_id: channel_call,
                peer,
                nonce,
            }),
            DoorRequest::Invalid { nonce } => {
                self.open_attempt(
                    OpenSource::Remote {
                        call_id: channel_call,
                        peer,
                        nonce,
                    },
                    false,
                    Some(Refusal::BadRequest),
                    Duration::ZERO,
                );
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
                        self.audio.cue(ToneCue::DoorOpened);
                    }
                    if let Err(e) = self.relay.set(energised) {
                        error!(error = %e, energised, "cannot drive the door relay");
                        self.door.handle_input(
                            DoorInput::Fault { active: true },
                            Instant::now().into_std(),
                        );
                    }
                }
                DoorOutput::Ring { button } => {
                    let Some(group) = self.buttons.get(&button).cloned() else {
                        warn!(button = %button, "press on a button with no ring group");
                        continue;
                    };
                    if self.machine.resident_call() {
                        // The call machine decides: the visitor answers.
                        self.input(Input::ButtonPressed {
                            group,
                            call_id: new_call_id(),
                        });
                        continue;
                    }
                    if self.machine.call_id().is_some() {
                        debug!(button = %button, "press during a call: nothing to ring");
                        continue;
                    }
                    let call_id = new_call_id();
                    self.ringing_button = button.clone();
                    info!(message_id = message_id::CALL_STARTED, button = %button, group = %group, call_id = %call_id, "call button pressed");
                    self.input(Input::ButtonPressed { group, call_id });
                }
                DoorOutput::ServiceLongPress => match &self.bt {
                    Some(bt) => {
                        info!("service button held: opening Bluetooth pairing");
                        if !bt.try_pair(PairSource::ServiceButton, None) {
                            warn!("Bluetooth service busy or stopped; pairing not opened");
                        }
                    }
                    None => warn!(
                        "service button held, but Bluetooth is off (bluetooth.enabled = false)"
                    ),
                },
                DoorOutput::Hangup { button } => {
                    info!(button = %button, "long press during a call");
                    self.input(Input::ButtonHeld);
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
                    self.publish();
                }
                DoorOutput::HeldOpenCleared => {
                    info!(ALARM = "door_held_open", "door closed again");
                    self.publish();
                }
                DoorOutput::TamperChanged { active, lockout } => {
                    if active {
                        warn!(ALARM = "tamper", lockout, "tamper switch tripped");
                    } else {
                        info!(ALARM = "tamper", "tamper switch restored");
                    }
                    self.publish();
                }
                DoorOutput::Led { name, pattern, on } => {
                    if let Some(led) = self.leds.iter_mut().find(|l| l.name() == name)
                        && let Err(e) = led.set(pattern, on)
                    {
                        warn!(led = %name, error = %e, "cannot set LED");
                    }
                }
            }
        }
    }

    /// The audit record of an open attempt, and the reply on the data
    /// channel for remote ones.
    /// The line for refusals counted since the last one, when due (or at
    /// once with `now_anyway`, at the end of a call).
    fn report_open_refusals(&mut self, now_anyway: bool) {
        let now = std::time::Instant::now();
        if !now_anyway && !self.open_refusals.due(now) {
            return;
        }
        if let Some(refusals) = self.open_refusals.take_unreported() {
            warn!(
                AUDIT = "door_open",
                source = "data_channel",
                granted = false,
                refusals,
                "door open refusals since the last line"
            );
        }
    }

    fn open_attempt(
        &mut self,
        source: OpenSource,
        granted: bool,
        reason: Option<Refusal>,
        pulse: Duration,
    ) {
        let reason_str = reason.map_or("", Refusal::as_str);
        match &source {
            OpenSource::ExitButton => {
                info!(
                    AUDIT = "door_open",
                    source = "exit_button",
                    call_id = "",
                    peer = "",
                    granted,
                    reason = reason_str,
                    nonce = "",
                    pulse_ms = pulse.as_millis() as u64,
                    "door opened from the exit button"
                );
            }
            OpenSource::Remote {
                call_id,
                peer,
                nonce,
            } => {
                if granted {
                    info!(
                        AUDIT = "door_open",
                        source = "data_channel",
                        call_id = %call_id,
                        peer = %crate::logging::PeerText::new(peer),
                        granted,
                        reason = reason_str,
                        nonce = %crate::logging::PeerText::new(nonce),
                        pulse_ms = pulse.as_millis() as u64,
                        "door opened by the resident"
                    );
                    // For the hub's call history; a hub without history
                    // ignores it.
                    if !self
                        .signaling
                        .try_send(crate::signaling::protocol::Message::DoorOpened {
                            call_id: call_id.clone(),
                        })
                    {
                        warn!(call_id = %call_id, "signaling queue full; door_opened dropped");
                    }
                } else if let Some(refusals) = self.open_refusals.hit(std::time::Instant::now()) {
                    // `refusals`: this one and those since the last line.
                    warn!(
                        AUDIT = "door_open",
                        source = "data_channel",
                        call_id = %call_id,
                        peer = %crate::logging::PeerText::new(peer),
                        granted,
                        reason = reason_str,
                        nonce = %crate::logging::PeerText::new(nonce),
                        pulse_ms = 0u64,
                        refusals,
                        "door open refused"
                    );
                }
                let reply = serde_json::json!({
                    "type": "open_result",
                    "nonce": nonce,
                    "granted": granted,
                    "reason": reason.map(Refusal::as_str),
                    "pulse_ms": pulse.as_millis() as u64,
                });
                let cmd = MediaCommand::DoorSend {
                    call_id: call_id.clone(),
                    text: reply.to_string(),
                };
                if let Err(e) = self.media.try_send(cmd) {
                    warn!(call_id = %call_id, "cannot reply on the door channel: {e}");
                }
            }
        }
        self.publish();
    }

    fn drain(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::Send(msg) => {
                    let kind = msg.type_name();
                    if !self.signaling.try_send(msg) {
                        warn!(kind, "signaling queue full; message dropped");
                    }
                }
                Output::Media(req) => self.media_request(req),
                Output::PhaseChanged { phase, call_id } => self.phase_changed(phase, call_id),
                Output::Answered { call_id, by } => {
                    info!(message_id = message_id::CALL_ANSWERED, call_id = %call_id, peer = %crate::logging::PeerText::new(&by.id), peer_name = %crate::logging::PeerText::new(&by.name), "call answered");
                }
                Output::ResidentCallStarted { call_id, by } => audit_door_call(
                    "start",
                    &call_id,
                    &by,
                    "",
                    Duration::ZERO,
                    "a resident called the door; call taken",
                ),
                Output::ResidentCallRefused {
                    call_id,
                    by,
                    reason,
                } => audit_door_call(
                    "refused",
                    &call_id,
                    &by,
                    reason,
                    Duration::ZERO,
                    "a resident called the door; call refused",
                ),
                Output::ResidentCallEnded {
                    call_id,
                    by,
                    duration,
                    reason,
                } => audit_door_call(
                    "end",
                    &call_id,
                    &by,
                    reason.wire(),
                    duration,
                    &format!(
                        "a resident's call to the door ended: {}",
                        crate::logging::PeerText::new(&reason.to_string())
                    ),
                ),
                Output::VisitorAnswered { call_id } => {
                    info!(call_id = %call_id, "call button pressed during a resident's call: the visitor answers");
                }
                Output::Established { call_id } => {
                    self.last_established = Some(call_id.clone());
                    info!(call_id = %call_id, "call in progress");
                }
                Output::ListenOnly { call_id, by } => {
                    let (peer, peer_name) = by.map(|b| (b.id, b.name)).unwrap_or_default();
                    info!(call_id = %call_id, peer = %crate::logging::PeerText::new(&peer), peer_name = %crate::logging::PeerText::new(&peer_name), "answered without a microphone; the call goes on listen-only");
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
                    warn!(message_id = message_id::MEDIA_RECOVERY, call_id = %call_id, attempt, reason = %crate::logging::PeerText::new(&reason.to_string()), remedy, "call media lost; trying to bring it back");
                }
                Output::CandidatesCapped { call_id, cap } => {
                    warn!(call_id = %call_id, cap, "remote ICE candidates beyond the cap ignored for this offer");
                }
                Output::Ended { call_id, reason } => self.call_ended(&call_id, &reason),
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
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
            "call: {}",
            phase.as_str()
        ))]);
        self.show_phase(phase);
        self.audio.cue(tone_for(phase));
        self.call_to_headset(phase);
        self.publish();
    }

    fn call_ended(&mut self, call_id: &CallId, reason: &EndReason) {
        self.report_open_refusals(true);
        let level_warn = matches!(
            reason,
            EndReason::MediaFailed(_) | EndReason::ConnectTimeout | EndReason::Refused(_)
        );
        if level_warn {
            warn!(message_id = message_id::CALL_ENDED, call_id = %call_id, reason = %crate::logging::PeerText::new(&reason.to_string()), "call ended");
        } else {
            info!(message_id = message_id::CALL_ENDED, call_id = %call_id, reason = %crate::logging::PeerText::new(&reason.to_string()), "call ended");
        }
    }

    fn media_request(&mut self, req: MediaRequest) {
        let cmd = match req {
            MediaRequest::StartOffer { call_id } => {
                let audio = match self.audio.open_call() {
                    Ok(a) => a,
                    Err(e) => {
                        error!(call_id = %call_id, error = %e, "cannot open audio for the call");
                        self.input(Input::MediaError {
                            call_id,
                            code: ErrorCode::BadState,
                            message: format!("door station audio unavailable: {e}"),
                            fatal: true,
                        });
                        return;
                    }
                };
                // With Bluetooth on, the call's audio goes through a router
                // that can hand it to a headset and back.
                let audio = if self.bt.is_some() {
                    let (ports, router) = router::start(audio, crate::audio::DEFAULT_PORT_CAPACITY);
                    self.router = Some(router);
                    ports
                } else {
                    audio
                };
                let servers = if self.hub_ice_servers.is_empty() {
                    crate::ice_servers::resolve_all(&self.ice_servers, &self.station_id)
                } else {
                    self.hub_ice_servers.clone()
                };
                MediaCommand::Start {
                    call_id: call_id.clone(),
                    offerer: true,
                    ice_servers: servers,
                    audio,
                }
            }
            MediaRequest::RemoteAnswer { call_id, sdp } => MediaCommand::RemoteDescription {
                call_id: call_id.clone(),
                kind: SdpKind::Answer,
                sdp,
            },
            MediaRequest::RemoteCandidate { call_id, candidate } => MediaCommand::RemoteCandidate {
                call_id: call_id.clone(),
                candidate,
            },
            MediaRequest::RestartIce { call_id } => MediaCommand::RestartIce {
                call_id: call_id.clone(),
            },
            MediaRequest::Renew { call_id } => MediaCommand::Renew {
                call_id: call_id.clone(),
            },
            MediaRequest::Stop { call_id } => MediaCommand::Stop {
                call_id: call_id.clone(),
            },
        };
        let id = cmd.call_id().to_owned();
        if let Err(e) = self.media.try_send(cmd) {
            error!(call_id = %id, "media engine not accepting commands: {e}");
        }
    }

    /// The phase as the door shows it: a resident's call to the door is
    /// taken at once, so the people at the door see (and a headset gets)
    /// an active call from its first moment, never a ringing one.
    fn shown_phase(&self, phase: Phase) -> Phase {
        match phase {
            Phase::Connecting if self.machine.resident_call() => Phase::InCall,
            p => p,
        }
    }

    /// Tell the door machine what the call looks like (LEDs, remote
    /// opening, long press).
    fn show_phase(&mut self, phase: Phase) {
        let phase = self.shown_phase(phase);
        let state = if !self.signaling_up && matches!(phase, Phase::Idle | Phase::Ended) {
            StationState::SignalingDown
        } else {
            match phase {
                Phase::Idle | Phase::Ended => StationState::Idle,
                Phase::Ringing | Phase::Connecting => StationState::Ringing,
                Phase::InCall => StationState::InCall,
            }
        };
        let answered = match (phase, self.machine.call_id(), self.machine.answerer()) {
            (Phase::Connecting | Phase::InCall, Some(id), Some(a)) => {
                Some((id.clone(), a.id.clone()))
            }
            _ => None,
        };
        self.door_input(DoorInput::Call { state, answered });
    }

    fn publish(&self) {
        let v = serde_json::json!({
            "call": {
                "state": self.machine.phase().as_str(),
                "call_id": self.machine.call_id().map(|c| c.to_string()),
                "answerer": self.machine.answerer().map(|a| a.id.clone()),
                "resident_call": self.machine.resident_call(),
            },
            "signaling": if self.signaling_up { "up" } else { "down" },
            "audio": self.audio.stats(),
            "door": {
                "station_state": self.door.station_state().as_str(),
                "unlocked": self.door.unlocked(),
                "relay_energised": self.door.relay_energised(),
                "lock": self.door.settings().lock.as_str(),
                "pulse_ms": self.door.settings().pulse.as_millis() as u64,
                "door_open": self.door.door_open(),
                "held_open_alarm": self.door.alarm(),
                "tamper": self.door.tamper(),
                "remote_open_locked_out": self.door.locked_out(Instant::now().into_std()),
            },
            "bluetooth": {
                "enabled": self.bt.is_some(),
                "pairing": self.bt_pairing,
            },
            "runtime": {
                "tasks": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
            },
        });
        self.status.send_replace(v);
    }
}

/// A fresh call id: time plus randomness, so ids from a restarted station
/// never collide with its previous calls.
pub fn new_call_id() -> CallId {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let r: u32 = rand::random();
    CallId::new(format!("c-{ms:x}-{r:08x}")).expect("hex digits and dashes form a valid call id")
}

/// What a resident's page asked on a door data channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DoorRequest {
    /// `{"type":"open","nonce":…}`; the door logic judges the nonce.
    Open { nonce: String },
    /// Anything else: refused as a bad request. `nonce` is the message's
    /// nonce when it is a valid one (for the audit record), else empty.
    Invalid { nonce: String },
}

/// Reads one text message of a door data channel (peer text: never
/// panics).
pub fn decode_door_message(text: &str) -> DoorRequest {
    #[derive(serde::Deserialize)]
    struct Request {
        #[serde(rename = "type")]
        kind: String,
        nonce: Option<String>,
    }
    match serde_json::from_str::<Request>(text) {
        Ok(Request {
            kind,
            nonce: Some(nonce),
        }) if kind == "open" => DoorRequest::Open { nonce },
        parsed => DoorRequest::Invalid {
            nonce: parsed
                .ok()
                .and_then(|r| r.nonce)
                .filter(|n| crate::door::valid_nonce(n))
                .unwrap_or_default(),
        },
    }
}

/// The audit record of a resident's call to the door (`AUDIT=door_call`):
/// one shape for its start, refusal and end. Peer text escaped; the
/// values stay strings (quoted in text logs, as the guide greps them).
fn audit_door_call(
    event: &'static str,
    call_id: &CallId,
    by: &crate::signaling::protocol::PeerInfo,
    reason: &str,
    duration: Duration,
    what: &str,
) {
    let peer = crate::logging::escape_peer_text(&by.id);
    let peer_name = crate::logging::escape_peer_text(&by.name);
    macro_rules! record {
        ($level:ident) => {
            $level!(
                AUDIT = "door_call",
                event,
                call_id = %call_id,
                peer = peer.as_str(),
                peer_name = peer_name.as_str(),
                reason,
                duration_ms = duration.as_millis() as u64,
                "{what}"
            )
        };
    }
    if event == "refused" {
        record!(warn);
    } else {
        record!(info);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn call_ids_are_valid_and_distinct() {
        let a = super::new_call_id();
        let b = super::new_call_id();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("c-"));
    }

    #[test]
    fn ringback_plays_only_while_ringing() {
        use super::{Phase, ToneCue, tone_for};
        assert_eq!(tone_for(Phase::Ringing), ToneCue::Ringback);
        for p in [Phase::Idle, Phase::Connecting, Phase::InCall, Phase::Ended] {
            assert_eq!(tone_for(p), ToneCue::Silence);
        }
    }
}
