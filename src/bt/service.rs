//! The Bluetooth actor: owns the adapter (behind [`BtAdapter`]), powers
//! it, keeps pairing closed except during a pairing window, answers the
//! pairing agent's questions, and marks paired headsets trusted so they
//! reconnect without asking (BlueZ stores the bond and the flag).
//!
//! Commands come down through a [`BtHandle`] (the control socket's
//! `bt pair`, the controller on a long press of the service button);
//! [`BtEvent`]s go up to the controller (the LEDs show the window). Every
//! step is logged with the adapter and device addresses.
//!
//! The adapter is opened at start and reopened after it is lost (BlueZ
//! restarted, controller unplugged), every `reopen_interval`. A station
//! whose adapter is missing keeps working without Bluetooth; the error is
//! logged at each attempt and `bt pair` reports it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::adapter::{
    AdapterEvent, BtAdapter, BtError, DeviceAddr, GatewayCommand, PairingAnswer,
    PairingRequestKind, VoiceLink,
};
use crate::config::{self, SecretSource};

/// How a headset pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingMode {
    JustWorks,
    /// Legacy PIN requests get the PIN read from this source when the
    /// window opens.
    Pin(SecretSource),
}

#[derive(Clone, Debug)]
pub struct BtSettings {
    pub pairing: PairingMode,
    pub pairing_timeout: Duration,
    /// Discoverable while the window is open.
    pub discoverable: bool,
    /// Wait between attempts to open a missing adapter.
    pub reopen_interval: Duration,
}

/// Who opened the pairing window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairSource {
    /// `intercomd bt pair`, over the control socket.
    ControlSocket,
    /// A long press of the service button.
    ServiceButton,
}

impl PairSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PairSource::ControlSocket => "control_socket",
            PairSource::ServiceButton => "service_button",
        }
    }
}

/// The window is open.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PairingOpen {
    pub adapter: String,
    pub address: String,
    /// Time left.
    pub timeout_ms: u64,
}

pub type PairReply = oneshot::Sender<Result<PairingOpen, String>>;

#[derive(Debug)]
pub enum BtCommand {
    /// Open (or extend) the pairing window.
    Pair {
        source: PairSource,
        reply: Option<PairReply>,
    },
    /// For the gateway of `device` (every connected headset with `None`).
    Gateway {
        device: Option<DeviceAddr>,
        cmd: GatewayCommand,
    },
}

/// What the actor reports to the controller.
#[derive(Debug, PartialEq)]
pub enum BtEvent {
    /// The pairing window opened (`true`) or closed.
    Pairing { active: bool },
    /// A headset connected or disconnected.
    Headset { device: DeviceAddr, connected: bool },
    /// A headset's Hands-Free service level connection came up or ended.
    HandsFree { device: DeviceAddr, connected: bool },
    /// The headset's button ended the call.
    HangupRequested { device: DeviceAddr },
    /// A headset's SCO link opened, with its audio, or closed.
    Sco {
        device: DeviceAddr,
        link: Option<VoiceLink>,
    },
}

/// Cloneable handle to the Bluetooth actor.
#[derive(Clone, Debug)]
pub struct BtHandle {
    tx: mpsc::Sender<BtCommand>,
}

impl BtHandle {
    /// Asks for a pairing window without waiting. `false`: the actor's
    /// queue is full or it stopped (the reply, if any, is dropped).
    pub fn try_pair(&self, source: PairSource, reply: Option<PairReply>) -> bool {
        self.tx.try_send(BtCommand::Pair { source, reply }).is_ok()
    }

    /// Sends a command to headsets' gateways without waiting. `false`: the
    /// actor's queue is full or it stopped.
    pub fn try_gateway(&self, device: Option<DeviceAddr>, cmd: GatewayCommand) -> bool {
        self.tx.try_send(BtCommand::Gateway { device, cmd }).is_ok()
    }

    /// Opens a pairing window and waits for the outcome.
    pub async fn pair(&self, source: PairSource) -> Result<PairingOpen, String> {
        let (reply, answer) = oneshot::channel();
        if !self.try_pair(source, Some(reply)) {
            return Err("the Bluetooth service is busy or stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the Bluetooth service stopped".into()))
    }
}

/// Opens the adapter; called again after it is lost.
pub type Opener = Box<
    dyn FnMut() -> Pin<Box<dyn Future<Output = Result<Box<dyn BtAdapter>, BtError>> + Send>> + Send,
>;

/// Starts the actor.
pub fn spawn(
    settings: BtSettings,
    opener: Opener,
    events: mpsc::Sender<BtEvent>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> BtHandle {
    let (tx, rx) = mpsc::channel(8);
    let actor = Actor {
        settings,
        opener,
        events,
        commands: rx,
        window: None,
    };
    tracker.spawn(actor.run(cancel));
    BtHandle { tx }
}

/// An open pairing window.
struct Window {
    until: Instant,
    /// The PIN for legacy requests, read when the window opened.
    pin: Option<String>,
}

enum Ended {
    Cancelled,
    Lost(String),
}

struct Actor {
    settings: BtSettings,
    opener: Opener,
    events: mpsc::Sender<BtEvent>,
    commands: mpsc::Receiver<BtCommand>,
    window: Option<Window>,
}

impl Actor {
    async fn run(mut self, cancel: CancellationToken) {
        loop {
            let opened = tokio::select! {
                r = (self.opener)() => r,
                _ = cancel.cancelled() => return,
            };
            let err = match opened {
                Ok(adapter) => match self.serve(adapter, &cancel).await {
                    Ended::Cancelled => return,
                    Ended::Lost(reason) => {
                        warn!(reason = %reason, "bluetooth adapter lost; reopening");
                        continue;
                    }
                },
                Err(e) => e,
            };
            error!(
                error = %err,
                retry_s = self.settings.reopen_interval.as_secs_f32(),
                "bluetooth adapter unavailable"
            );
            // Wait for the next attempt, answering `bt pair` with the error.
            let retry = tokio::time::sleep(self.settings.reopen_interval);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    _ = &mut retry => break,
                    _ = cancel.cancelled() => return,
                    cmd = self.commands.recv() => match cmd {
                        Some(BtCommand::Pair { reply, .. }) => {
                            if let Some(reply) = reply {
                                let _ = reply.send(Err(format!("Bluetooth is not ready: {err}")));
                            }
                        }
                        // No headset can be connected without an adapter.
                        Some(BtCommand::Gateway { .. }) => {}
                        None => return,
                    },
                }
            }
        }
    }

    /// Runs with an open adapter until cancelled or the adapter is lost.
    async fn serve(
        &mut self,
        mut adapter: Box<dyn BtAdapter>,
        cancel: &CancellationToken,
    ) -> Ended {
        let name = adapter.name().to_owned();
        info!(adapter = %name, address = %adapter.address(), "bluetooth adapter found");
        if let Err(e) = adapter.set_powered(true).await {
            return Ended::Lost(e.to_string());
        }
        info!(adapter = %name, "bluetooth adapter powered");
        // Closed until asked: a door station is in a public place.
        if let Err(e) = self.close_adapter(adapter.as_mut()).await {
            return Ended::Lost(e.to_string());
        }
        self.remember_trusted(adapter.as_mut()).await;
        info!(
            adapter = %name,
            pairing = match self.settings.pairing {
                PairingMode::JustWorks => "just_works",
                PairingMode::Pin(_) => "pin",
            },
            "bluetooth ready; pairing closed"
        );
        // A window open before the adapter was lost is not reopened.
        if self.window.take().is_some() {
            self.report(BtEvent::Pairing { active: false });
        }
        loop {
            let deadline = self.window.as_ref().map(|w| w.until);
            tokio::select! {
                _ = cancel.cancelled() => {
                    if self.window.is_some() {
                        self.close_window(adapter.as_mut(), "shutdown").await;
                    }
                    return Ended::Cancelled;
                }
                _ = sleep_until(deadline) => {
                    self.close_window(adapter.as_mut(), "timeout").await;
                }
                cmd = self.commands.recv() => match cmd {
                    Some(BtCommand::Pair { source, reply }) => {
                        let r = self.open_window(adapter.as_mut(), source).await;
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                    }
                    Some(BtCommand::Gateway { device, cmd }) => {
                        adapter.gateway(device.as_ref(), cmd);
                    }
                    None => return Ended::Cancelled,
                },
                ev = adapter.next_event() => match ev {
                    Some(AdapterEvent::Lost { reason }) => return Ended::Lost(reason),
                    None => return Ended::Lost("the adapter's event stream ended".into()),
                    Some(ev) => self.on_event(adapter.as_mut(), ev).await,
                },
            }
        }
    }

    /// Paired devices BlueZ remembers become trusted, so they reconnect
    /// without the agent; each is logged.
    async fn remember_trusted(&mut self, adapter: &mut dyn BtAdapter) {
        let devices = match adapter.devices().await {
            Ok(d) => d,
            Err(e) => {
                warn!(adapter = %adapter.name(), error = %e, "cannot list bluetooth devices");
                return;
            }
        };
        for d in devices.into_iter().filter(|d| d.paired) {
            if !d.trusted {
                self.trust(adapter, &d.address).await;
            }
            info!(
                adapter = %adapter.name(),
                device = %d.address,
                name = d.name.as_deref().unwrap_or(""),
                connected = d.connected,
                "bluetooth headset known"
            );
        }
    }

    async fn trust(&mut self, adapter: &mut dyn BtAdapter, device: &DeviceAddr) {
        match adapter.set_trusted(device).await {
            Ok(()) => {
                info!(adapter = %adapter.name(), device = %device, "bluetooth device trusted")
            }
            Err(e) => {
                warn!(adapter = %adapter.name(), device = %device, error = %e, "cannot trust bluetooth device")
            }
        }
    }

    async fn close_adapter(&mut self, adapter: &mut dyn BtAdapter) -> Result<(), BtError> {
        adapter.set_discoverable(false).await?;
        adapter.set_pairable(false).await
    }

    async fn open_window(
        &mut self,
        adapter: &mut dyn BtAdapter,
        source: PairSource,
    ) -> Result<PairingOpen, String> {
        let pin = match &self.settings.pairing {
            PairingMode::JustWorks => None,
            PairingMode::Pin(src) => match config::read_secret(src) {
                Ok(p) => Some(p.expose().trim().to_owned()),
                Err(e) => {
                    error!(adapter = %adapter.name(), error = %e, "bluetooth pairing not opened: cannot read the PIN");
                    return Err(format!("cannot read the PIN: {e}"));
                }
            },
        };
        let until = Instant::now() + self.settings.pairing_timeout;
        let timeout_ms = self.settings.pairing_timeout.as_millis() as u64;
        let reply = PairingOpen {
            adapter: adapter.name().to_owned(),
            address: adapter.address().to_string(),
            timeout_ms,
        };
        if let Some(w) = &mut self.window {
            w.until = until;
            w.pin = pin;
            info!(adapter = %adapter.name(), source = source.as_str(), timeout_ms, "bluetooth pairing extended");
            return Ok(reply);
        }
        let r = async {
            adapter.set_pairable(true).await?;
            if self.settings.discoverable {
                adapter.set_discoverable(true).await?;
            }
            Ok::<_, BtError>(())
        }
        .await;
        if let Err(e) = r {
            error!(adapter = %adapter.name(), error = %e, "bluetooth pairing not opened");
            // Leave the adapter closed, whatever half of it was opened.
            let _ = self.close_adapter(adapter).await;
            return Err(e.to_string());
        }
        self.window = Some(Window { until, pin });
        info!(
            adapter = %adapter.name(),
            address = %adapter.address(),
            source = source.as_str(),
            timeout_ms,
            discoverable = self.settings.discoverable,
            "bluetooth pairing open"
        );
        self.report(BtEvent::Pairing { active: true });
        Ok(reply)
    }

    async fn close_window(&mut self, adapter: &mut dyn BtAdapter, reason: &'static str) {
        self.window = None;
        if let Err(e) = self.close_adapter(adapter).await {
            error!(adapter = %adapter.name(), error = %e, "cannot close bluetooth pairing on the adapter");
        }
        info!(adapter = %adapter.name(), reason, "bluetooth pairing closed");
        self.report(BtEvent::Pairing { active: false });
    }

    async fn on_event(&mut self, adapter: &mut dyn BtAdapter, ev: AdapterEvent) {
        let name = adapter.name().to_owned();
        match ev {
            AdapterEvent::PairingRequest {
                device,
                kind,
                reply,
            } => {
                let answer = self.answer(&kind);
                let k = kind.as_str();
                match &answer {
                    PairingAnswer::Reject if self.window.is_none() => {
                        warn!(adapter = %name, device = %device, kind = k, "bluetooth pairing refused: pairing is closed")
                    }
                    PairingAnswer::Reject => {
                        warn!(adapter = %name, device = %device, kind = k, "bluetooth pairing refused: legacy PIN pairing needs pairing = \"pin\"")
                    }
                    PairingAnswer::Accept | PairingAnswer::Pin(_) => {
                        info!(adapter = %name, device = %device, kind = k, "bluetooth pairing accepted")
                    }
                }
                let _ = reply.send(answer);
            }
            AdapterEvent::ServiceAuthorization {
                device,
                uuid,
                reply,
            } => {
                let ok = self.window.is_some();
                if ok {
                    info!(adapter = %name, device = %device, uuid = %uuid, "bluetooth service authorized");
                } else {
                    warn!(adapter = %name, device = %device, uuid = %uuid, "bluetooth service refused: device not trusted and pairing closed");
                }
                let _ = reply.send(ok);
            }
            AdapterEvent::Paired { device, name: dev } => {
                info!(adapter = %name, device = %device, name = dev.as_deref().unwrap_or(""), "bluetooth device paired");
                self.trust(adapter, &device).await;
                // One headset per window: the station is in a public place.
                if self.window.is_some() {
                    self.close_window(adapter, "paired").await;
                }
            }
            AdapterEvent::Connection { device, connected } => {
                if connected {
                    info!(adapter = %name, device = %device, "bluetooth device connected");
                } else {
                    info!(adapter = %name, device = %device, "bluetooth device disconnected");
                }
                self.report(BtEvent::Headset { device, connected });
            }
            // Logged by the gateway task with the details.
            AdapterEvent::HandsFree { device, connected } => {
                self.report(BtEvent::HandsFree { device, connected });
            }
            AdapterEvent::Sco { device, link } => {
                self.report(BtEvent::Sco { device, link });
            }
            AdapterEvent::HangupRequested { device } => {
                self.report(BtEvent::HangupRequested { device });
            }
            // serve() ends on Lost before it gets here.
            AdapterEvent::Lost { .. } => {}
        }
    }

    fn answer(&self, kind: &PairingRequestKind) -> PairingAnswer {
        let Some(w) = &self.window else {
            return PairingAnswer::Reject;
        };
        match (kind, &w.pin) {
            (PairingRequestKind::PinCode, Some(pin)) => PairingAnswer::Pin(pin.clone()),
            (PairingRequestKind::PinCode, None) => PairingAnswer::Reject,
            // The station has no display or keys: numeric comparison and
            // just works are both accepted while the window is open.
            (PairingRequestKind::Confirmation { .. } | PairingRequestKind::Authorization, _) => {
                PairingAnswer::Accept
            }
        }
    }

    fn report(&self, ev: BtEvent) {
        if self.events.try_send(ev).is_err() {
            warn!("controller not accepting bluetooth events; one dropped");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
