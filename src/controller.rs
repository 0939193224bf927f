//! The controller: the shell around the station core (`station/`). It owns
//! the channels, the devices and the clock: each event from a subsystem
//! becomes a [`StationInput`] with the time it arrived, and each
//! [`StationOutput`] becomes a command sent down with `try_send`, so no
//! cycle of bounded channels can deadlock. Audio frames never pass through
//! here. Every decision is the core's; this file only carries them out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::audio::AudioProvider;
use crate::bt::call_audio::CallAudio;
use crate::bt::{BtEvent, BtHandle, PairSource};
use crate::call::MediaRequest;
use crate::hw::{HwEvent, Led, Relay};
use crate::ice_servers::IceServerSpec;
use crate::media::{MediaCommand, MediaEvent, MediaHandle};
use crate::signaling::client::{ClientEvent, SignalingHandle};
use crate::signaling::protocol::CallId;
use crate::station::{
    BtInput, CallIds, Station, StationInput, StationOutput, Status, StatusRequests,
};
use crate::watchdog::Watchdog;

/// The event sources the controller listens to.
pub struct Inputs {
    pub signaling: mpsc::Receiver<ClientEvent>,
    pub media: mpsc::Receiver<MediaEvent>,
    pub hw: mpsc::Receiver<HwEvent>,
    /// The Bluetooth actor's events (a channel nobody sends on when
    /// Bluetooth is off).
    pub bt: mpsc::Receiver<BtEvent>,
    /// Requests for the status (the panel, the control socket, tests).
    pub status: StatusRequests,
}

/// What the controller drives.
pub struct Devices {
    pub signaling: SignalingHandle,
    pub media: MediaHandle,
    pub audio: Box<dyn AudioProvider>,
    pub leds: Vec<Box<dyn Led>>,
    pub relay: Box<dyn Relay>,
    /// The Bluetooth actor, when `bluetooth.enabled`.
    pub bt: Option<BtHandle>,
    /// ICE servers from configuration; the hub's list replaces them when
    /// it sends one.
    pub ice_servers: Vec<IceServerSpec>,
    /// This station's id: the client name in shared-secret TURN
    /// credentials minted from `ice_servers`.
    pub station_id: String,
}

pub struct Controller {
    station: Station,
    dev: Devices,
    /// The call's audio router and the headset's SCO link.
    call_audio: CallAudio,
}

/// How long the hang-up of a call cut by shutdown has to reach the hub.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

impl Controller {
    pub fn new(make: impl FnOnce(CallIds, std::time::Instant) -> Station, dev: Devices) -> Self {
        let now = Instant::now().into_std();
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let station = make(CallIds::new(wall_ms, now, rand::random()), now);
        Controller {
            station,
            dev,
            call_audio: CallAudio::default(),
        }
    }

    /// Run until `stop` is cancelled; then end any call and tell the hub.
    pub async fn run(mut self, mut inputs: Inputs, stop: CancellationToken) {
        // First of all: the relay to its de-energised level.
        self.carry_out();
        // Pinged from this loop: if it wedges, systemd restarts the daemon.
        let mut watchdog = Watchdog::from_env();
        #[cfg(feature = "fault-injection")]
        let wedge_at = crate::fault::controller_wedge_after().map(|d| Instant::now() + d);
        loop {
            #[cfg(feature = "fault-injection")]
            if wedge_at.is_some_and(|t| Instant::now() >= t) {
                error!("fault injection: the controller loop is wedged on purpose");
                std::future::pending::<()>().await;
            }
            let deadline = self.station.poll_timeout().map(Instant::from_std);
            let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let input = tokio::select! {
                ev = inputs.signaling.recv() => ev.map(StationInput::Signaling),
                ev = inputs.media.recv() => ev.map(StationInput::Media),
                ev = inputs.hw.recv() => ev.map(StationInput::Hw),
                // Closed when Bluetooth is off: the arm is then disabled.
                Some(ev) = inputs.bt.recv() => Some(self.bt_input(ev)),
                _ = tokio::time::sleep_until(deadline) => {
                    self.station.handle_timeout(Instant::now().into_std());
                    self.carry_out();
                    continue;
                }
                Some(reply) = inputs.status.recv() => {
                    let _ = reply.send(self.status());
                    continue;
                }
                _ = watchdog.ping() => continue,
                _ = stop.cancelled() => None,
            };
            let Some(input) = input else { break };
            self.input(input);
        }
        self.input(StationInput::Shutdown);
        // Give the signaling client, and a hub in this process, a moment
        // to deliver the hang-up.
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    }

    fn input(&mut self, input: StationInput) {
        self.station.handle_input(input, Instant::now().into_std());
        self.carry_out();
    }

    /// A SCO link is the shell's to hold (it carries audio); the core only
    /// sees its codec, and says whether the link is the call's.
    fn bt_input(&mut self, ev: BtEvent) -> StationInput {
        let (input, link) = BtInput::split(ev);
        match self.station.keeps_link(&input) {
            Some(true) => self.call_audio.set_link(link),
            Some(false) => self.call_audio.set_link(None),
            None => {}
        }
        StationInput::Bt(input)
    }

    /// Carries out what the station asked, in order.
    fn carry_out(&mut self) {
        while let Some(out) = self.station.poll_output() {
            self.effect(out);
        }
    }

    pub fn status(&self) -> Status {
        let mut status = self.station.status(Instant::now().into_std());
        status.audio = self.dev.audio.stats();
        status.runtime.tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        status
    }

    fn effect(&mut self, out: StationOutput) {
        match out {
            StationOutput::Signal(msg) => {
                let kind = msg.type_name();
                if !self.dev.signaling.try_send(msg) {
                    warn!(kind, "signaling queue full; message dropped");
                }
            }
            StationOutput::Media(MediaRequest::StartOffer { call_id }) => self.start_media(call_id),
            StationOutput::Media(req) => {
                if let Some(cmd) = MediaCommand::from_request(req) {
                    self.media(cmd)
                }
            }
            StationOutput::DoorReply { call_id, reply } => self.media(MediaCommand::DoorSend {
                call_id,
                text: reply.to_json(),
            }),
            StationOutput::Relay { energised } => {
                if let Err(e) = self.dev.relay.set(energised) {
                    error!(error = %e, energised, "cannot drive the door relay");
                    self.station
                        .handle_input(StationInput::RelayFailed, Instant::now().into_std());
                }
            }
            StationOutput::Led { name, pattern, on } => {
                crate::hw::set_led(&mut self.dev.leds, &name, pattern, on)
            }
            StationOutput::Tone(cue) => self.dev.audio.cue(cue),
            StationOutput::Phase(phase) => {
                let line = format!("call: {}", phase.as_str());
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
            }
            StationOutput::Gateway { device, cmd } => {
                let bt = self.dev.bt.as_ref();
                if !bt.is_some_and(|bt| bt.try_gateway(device.clone(), cmd)) && device.is_some() {
                    warn!(device = ?device.map(|d| d.to_string()), "Bluetooth service busy; SCO request dropped");
                }
            }
            StationOutput::Pair => {
                let bt = self.dev.bt.as_ref();
                if !bt.is_some_and(|bt| bt.try_pair(PairSource::ServiceButton, None)) {
                    warn!("Bluetooth service busy or stopped; pairing not opened");
                }
            }
            StationOutput::Route { call_id, route } => {
                let call_id = call_id.map(|c| c.to_string()).unwrap_or_default();
                self.call_audio.switch(route, &call_id)
            }
            StationOutput::CallAudioDone => self.call_audio.call_done(),
            StationOutput::Audit(record) => record.write(),
        }
    }

    fn media(&self, cmd: MediaCommand) {
        let id = cmd.call_id().to_owned();
        if let Err(e) = self.dev.media.try_send(cmd) {
            error!(call_id = %id, "media engine not accepting commands: {e}");
        }
    }

    /// Opens the call's audio (through a router that can hand it to a
    /// headset and back, with Bluetooth on) and starts its media.
    fn start_media(&mut self, call_id: CallId) {
        let audio = match self.dev.audio.open_call() {
            Ok(a) => a,
            Err(e) => {
                error!(call_id = %call_id, error = %e, "cannot open audio for the call");
                let error = e.to_string();
                let input = StationInput::AudioUnavailable { call_id, error };
                return self.station.handle_input(input, Instant::now().into_std());
            }
        };
        let audio = match self.dev.bt {
            Some(_) => self.call_audio.route(audio),
            None => audio,
        };
        let (configured, hub) = (&self.dev.ice_servers, self.station.hub_ice_servers());
        let ice_servers = crate::ice_servers::for_call(configured, &self.dev.station_id, hub);
        let offerer = true;
        self.media(MediaCommand::Start {
            call_id,
            offerer,
            ice_servers,
            audio,
        });
    }
}
