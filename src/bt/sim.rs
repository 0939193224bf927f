//! The simulated Bluetooth adapter: for tests and the demo only. A device
//! never gets it unless its configuration says `bluetooth.backend = "sim"`.
//!
//! [`SimBt`] is both the opener (each [`SimBt::open`] gives a fresh
//! adapter sharing the same state, as reopening BlueZ's would) and the
//! control handle: tests play the headset (`request_pairing`, `paired`)
//! and read what the actor did to the adapter (`state`).

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::adapter::{
    AdapterEvent, BtAdapter, BtError, DeviceAddr, DeviceInfo, GatewayCommand, PairingAnswer,
    PairingRequestKind, VoiceLink,
};

/// What the simulated adapter shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimBtState {
    pub powered: bool,
    pub pairable: bool,
    pub discoverable: bool,
    pub devices: Vec<DeviceInfo>,
    /// How many times the adapter was opened.
    pub opens: u32,
    /// Commands sent to headsets' gateways, in order.
    pub gateway_commands: Vec<(Option<DeviceAddr>, GatewayCommand)>,
}

#[derive(Debug, Default)]
struct Shared {
    state: SimBtState,
    events: Option<mpsc::Sender<AdapterEvent>>,
    /// Opening fails with this error while set.
    fail_open: Option<BtError>,
}

/// Opener and control handle of the simulated adapter. Cloneable.
#[derive(Clone, Debug)]
pub struct SimBt {
    name: String,
    address: DeviceAddr,
    shared: Arc<Mutex<Shared>>,
}

impl SimBt {
    pub fn new(name: &str, address: DeviceAddr) -> SimBt {
        SimBt {
            name: name.to_owned(),
            address,
            shared: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding this lock is a test failure already; the
        // state stays readable for the report.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the adapter (the actor's opener calls this).
    pub fn open(&self) -> Result<Box<dyn BtAdapter>, BtError> {
        let mut s = self.lock();
        if let Some(e) = s.fail_open.clone() {
            return Err(e);
        }
        let (tx, rx) = mpsc::channel(16);
        s.events = Some(tx);
        s.state.opens += 1;
        Ok(Box::new(SimAdapter {
            name: self.name.clone(),
            address: self.address.clone(),
            shared: self.shared.clone(),
            events: rx,
        }))
    }

    /// Makes `open` fail (`Some`) or succeed again (`None`).
    pub fn fail_open(&self, error: Option<BtError>) {
        self.lock().fail_open = error;
    }

    /// A device BlueZ already remembers.
    pub fn add_device(&self, info: DeviceInfo) {
        self.lock().state.devices.push(info);
    }

    pub fn state(&self) -> SimBtState {
        self.lock().state.clone()
    }

    fn sender(&self) -> Option<mpsc::Sender<AdapterEvent>> {
        self.lock().events.clone()
    }

    /// A headset asks to pair; returns the actor's answer (`Reject` when
    /// no adapter is open).
    pub async fn request_pairing(
        &self,
        device: &DeviceAddr,
        kind: PairingRequestKind,
    ) -> PairingAnswer {
        let Some(tx) = self.sender() else {
            return PairingAnswer::Reject;
        };
        let (reply, answer) = oneshot::channel();
        let ev = AdapterEvent::PairingRequest {
            device: device.clone(),
            kind,
            reply,
        };
        if tx.send(ev).await.is_err() {
            return PairingAnswer::Reject;
        }
        answer.await.unwrap_or(PairingAnswer::Reject)
    }

    /// An untrusted device asks for a service; returns the actor's answer.
    pub async fn authorize_service(&self, device: &DeviceAddr, uuid: &str) -> bool {
        let Some(tx) = self.sender() else {
            return false;
        };
        let (reply, answer) = oneshot::channel();
        let ev = AdapterEvent::ServiceAuthorization {
            device: device.clone(),
            uuid: uuid.to_owned(),
            reply,
        };
        if tx.send(ev).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Pairing with `device` completed (BlueZ set `Paired`).
    pub async fn paired(&self, device: &DeviceAddr, name: &str) {
        {
            let mut s = self.lock();
            match s.state.devices.iter_mut().find(|d| d.address == *device) {
                Some(d) => d.paired = true,
                None => s.state.devices.push(DeviceInfo {
                    address: device.clone(),
                    name: Some(name.to_owned()),
                    paired: true,
                    trusted: false,
                    connected: true,
                }),
            }
        }
        if let Some(tx) = self.sender() {
            let ev = AdapterEvent::Paired {
                device: device.clone(),
                name: Some(name.to_owned()),
            };
            let _ = tx.send(ev).await;
        }
    }

    /// A headset's gateway reports its SCO link (`Some`) or its end.
    pub async fn sco(&self, device: &DeviceAddr, link: Option<VoiceLink>) {
        if let Some(tx) = self.sender() {
            let ev = AdapterEvent::Sco {
                device: device.clone(),
                link,
            };
            let _ = tx.send(ev).await;
        }
    }

    /// The headset's button ends the call (`AT+CHUP`).
    pub async fn hangup(&self, device: &DeviceAddr) {
        if let Some(tx) = self.sender() {
            let ev = AdapterEvent::HangupRequested {
                device: device.clone(),
            };
            let _ = tx.send(ev).await;
        }
    }

    /// A headset's service level connection came up or ended.
    pub async fn hands_free(&self, device: &DeviceAddr, connected: bool) {
        if let Some(tx) = self.sender() {
            let ev = AdapterEvent::HandsFree {
                device: device.clone(),
                connected,
            };
            let _ = tx.send(ev).await;
        }
    }

    /// The adapter goes away (bluetoothd restarted, controller unplugged).
    pub async fn lose(&self, reason: &str) {
        let tx = self.lock().events.take();
        if let Some(tx) = tx {
            let _ = tx
                .send(AdapterEvent::Lost {
                    reason: reason.to_owned(),
                })
                .await;
        }
    }
}

struct SimAdapter {
    name: String,
    address: DeviceAddr,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::Receiver<AdapterEvent>,
}

impl SimAdapter {
    fn with<T>(&self, f: impl FnOnce(&mut SimBtState) -> T) -> T {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s.state)
    }
}

#[async_trait::async_trait]
impl BtAdapter for SimAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn address(&self) -> &DeviceAddr {
        &self.address
    }

    async fn set_powered(&mut self, on: bool) -> Result<(), BtError> {
        self.with(|s| s.powered = on);
        Ok(())
    }

    async fn set_pairable(&mut self, on: bool) -> Result<(), BtError> {
        self.with(|s| s.pairable = on);
        Ok(())
    }

    async fn set_discoverable(&mut self, on: bool) -> Result<(), BtError> {
        self.with(|s| s.discoverable = on);
        Ok(())
    }

    async fn set_trusted(&mut self, device: &DeviceAddr) -> Result<(), BtError> {
        let name = self.name.clone();
        self.with(
            |s| match s.devices.iter_mut().find(|d| d.address == *device) {
                Some(d) => {
                    d.trusted = true;
                    Ok(())
                }
                None => Err(BtError::Device {
                    adapter: name,
                    device: device.clone(),
                    operation: "set Trusted",
                    message: "no such device".into(),
                }),
            },
        )
    }

    async fn devices(&mut self) -> Result<Vec<DeviceInfo>, BtError> {
        Ok(self.with(|s| s.devices.clone()))
    }

    fn gateway(&mut self, device: Option<&DeviceAddr>, cmd: GatewayCommand) {
        self.with(|s| s.gateway_commands.push((device.cloned(), cmd)));
    }

    async fn next_event(&mut self) -> Option<AdapterEvent> {
        self.events.recv().await
    }
}
