//! The real Bluetooth backend: BlueZ's `bluetoothd` on the system D-Bus,
//! through bluer. The only module that imports bluer's adapter and agent
//! API.
//!
//! Opening finds the adapter, registers the pairing agent (the default
//! agent, so BlueZ asks it about every incoming pairing) and starts a task
//! that turns BlueZ's property changes into [`AdapterEvent`]s. The agent's
//! callbacks decide nothing: each sends its request up with a `oneshot`
//! for the answer. Dropping the [`BluezAdapter`] unregisters the agent
//! and stops that task.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bluer::agent::{
    Agent, AgentHandle, AuthorizeService, ReqError, RequestAuthorization, RequestConfirmation,
    RequestPinCode,
};
use bluer::rfcomm::{Profile, ProfileHandle, Role};
use bluer::{AdapterEvent as BzAdapterEvent, Address, DeviceEvent, DeviceProperty};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::adapter::{
    AdapterEvent, BtAdapter, BtError, DeviceAddr, DeviceInfo, GatewayCommand, PairingAnswer,
    PairingRequestKind,
};
use super::gateway;
use super::hfp::HfpSettings;
use super::sco::ScoStream;
use super::voice;

/// How many adapter events may wait for the actor.
const EVENT_QUEUE: usize = 32;

/// An adapter opened through bluetoothd.
pub struct BluezAdapter {
    name: String,
    address: DeviceAddr,
    adapter: bluer::Adapter,
    /// The command channel of each headset's gateway connection.
    gateways: Gateways,
    events: mpsc::Receiver<AdapterEvent>,
    // Kept for their `Drop`: the agent is unregistered, the session closed.
    _agent: AgentHandle,
    _session: bluer::Session,
    watcher: JoinHandle<()>,
}

impl Drop for BluezAdapter {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Opens `name` (or BlueZ's default adapter) and registers the pairing
/// agent. `legacy_pin`: the agent also answers legacy PIN requests (the
/// actor supplies the PIN).
pub async fn open(
    name: Option<&str>,
    legacy_pin: bool,
    hfp: HfpSettings,
) -> Result<BluezAdapter, BtError> {
    let session = bluer::Session::new()
        .await
        .map_err(|e| BtError::Bus(e.to_string()))?;
    let adapter = match name {
        Some(n) => session.adapter(n),
        None => session.default_adapter().await,
    };
    let wanted = name.unwrap_or("(default)").to_owned();
    let listed = || async {
        session
            .adapter_names()
            .await
            .map(|n| {
                if n.is_empty() {
                    "none".to_owned()
                } else {
                    n.join(", ")
                }
            })
            .unwrap_or_else(|e| format!("cannot list: {e}"))
    };
    let adapter = match adapter {
        Ok(a) => a,
        Err(_) => return Err(BtError::NoAdapter(wanted, listed().await)),
    };
    // `Session::adapter` does not check that the adapter exists; its
    // address does.
    let address = match adapter.address().await {
        Ok(a) => a,
        Err(e) if bluez_absent(&e) => {
            return Err(BtError::Bus(
                "bluetoothd is not running (org.bluez is not on the system bus)".into(),
            ));
        }
        Err(_) => return Err(BtError::NoAdapter(wanted, listed().await)),
    };
    let adapter_name = adapter.name().to_owned();
    let address = addr(address).ok_or_else(|| BtError::Adapter {
        adapter: adapter_name.clone(),
        operation: "read Address",
        message: format!("BlueZ reported an unparsable address {address}"),
    })?;

    let (tx, events) = mpsc::channel(EVENT_QUEUE);
    let agent = agent(tx.clone(), legacy_pin);
    let _agent = session
        .register_agent(agent)
        .await
        .map_err(|e| BtError::Adapter {
            adapter: adapter_name.clone(),
            operation: "register the pairing agent",
            message: e.to_string(),
        })?;
    info!(
        adapter = %adapter_name,
        capability = if legacy_pin { "KeyboardDisplay" } else { "DisplayYesNo" },
        "bluetooth pairing agent registered"
    );
    let profile = register_gateway(&session, &adapter_name).await?;
    let gateways = Gateways::default();
    let watcher = tokio::spawn(watch(
        adapter.clone(),
        profile,
        hfp,
        address.clone(),
        gateways.clone(),
        tx,
    ));
    Ok(BluezAdapter {
        name: adapter_name,
        address,
        gateways,
        adapter,
        events,
        _agent,
        _session: session,
        watcher,
    })
}

/// Registers the Hands-Free Audio Gateway profile with BlueZ.
async fn register_gateway(
    session: &bluer::Session,
    adapter_name: &str,
) -> Result<ProfileHandle, BtError> {
    let profile = session
        .register_profile(Profile {
            uuid: gateway::HFP_AG_UUID
                .parse()
                .expect("the HFP AG UUID constant is well formed"),
            name: Some("intercomd Hands-Free Audio Gateway".into()),
            role: Some(Role::Server),
            channel: Some(gateway::HFP_AG_CHANNEL),
            require_authentication: Some(true),
            require_authorization: Some(false),
            version: Some(gateway::HFP_VERSION),
            // SDP features: EC/NR (bit 1); wide band speech is not offered
            // until mSBC is carried.
            features: Some(0b10),
            ..Default::default()
        })
        .await
        .map_err(|e| BtError::Adapter {
            adapter: adapter_name.to_owned(),
            operation: "register the Hands-Free Audio Gateway profile",
            message: e.to_string(),
        })?;
    info!(
        adapter = %adapter_name,
        channel = gateway::HFP_AG_CHANNEL,
        "bluetooth hands-free gateway registered"
    );
    Ok(profile)
}

/// The bus answered, but nobody owns BlueZ's name.
fn bluez_absent(e: &bluer::Error) -> bool {
    use bluer::{ErrorKind, InternalErrorKind};
    matches!(&e.kind, ErrorKind::Internal(InternalErrorKind::DBus(name))
        if name == "org.freedesktop.DBus.Error.ServiceUnknown")
}

fn addr(a: Address) -> Option<DeviceAddr> {
    DeviceAddr::parse(&a.to_string())
}

type ReqFuture<T> = Pin<Box<dyn Future<Output = Result<T, ReqError>> + Send>>;

/// Sends a pairing request up and waits for the actor's answer. A closed
/// actor, an unparsable address or a dropped reply all reject.
async fn ask(
    tx: mpsc::Sender<AdapterEvent>,
    device: Address,
    kind: PairingRequestKind,
) -> PairingAnswer {
    let Some(device) = addr(device) else {
        return PairingAnswer::Reject;
    };
    let (reply, answer) = oneshot::channel();
    let request = AdapterEvent::PairingRequest {
        device,
        kind,
        reply,
    };
    if tx.send(request).await.is_err() {
        return PairingAnswer::Reject;
    }
    answer.await.unwrap_or(PairingAnswer::Reject)
}

fn accepted(answer: PairingAnswer) -> Result<(), ReqError> {
    match answer {
        PairingAnswer::Accept => Ok(()),
        PairingAnswer::Pin(_) | PairingAnswer::Reject => Err(ReqError::Rejected),
    }
}

fn agent(tx: mpsc::Sender<AdapterEvent>, legacy_pin: bool) -> Agent {
    let confirm_tx = tx.clone();
    let authorize_tx = tx.clone();
    let service_tx = tx.clone();
    let request_pin_code = legacy_pin.then(|| {
        let tx = tx.clone();
        Box::new(move |req: RequestPinCode| -> ReqFuture<String> {
            let answer = ask(tx.clone(), req.device, PairingRequestKind::PinCode);
            Box::pin(async move {
                match answer.await {
                    PairingAnswer::Pin(pin) => Ok(pin),
                    PairingAnswer::Accept | PairingAnswer::Reject => Err(ReqError::Rejected),
                }
            })
        }) as bluer::agent::RequestPinCodeFn
    });
    Agent {
        request_default: true,
        request_pin_code,
        request_confirmation: Some(Box::new(move |req: RequestConfirmation| -> ReqFuture<()> {
            let kind = PairingRequestKind::Confirmation {
                passkey: req.passkey,
            };
            let answer = ask(confirm_tx.clone(), req.device, kind);
            Box::pin(async move { accepted(answer.await) })
        })),
        request_authorization: Some(Box::new(
            move |req: RequestAuthorization| -> ReqFuture<()> {
                let answer = ask(
                    authorize_tx.clone(),
                    req.device,
                    PairingRequestKind::Authorization,
                );
                Box::pin(async move { accepted(answer.await) })
            },
        )),
        authorize_service: Some(Box::new(move |req: AuthorizeService| -> ReqFuture<()> {
            let tx = service_tx.clone();
            Box::pin(async move {
                let Some(device) = addr(req.device) else {
                    return Err(ReqError::Rejected);
                };
                let (reply, answer) = oneshot::channel();
                let request = AdapterEvent::ServiceAuthorization {
                    device,
                    uuid: req.service.to_string(),
                    reply,
                };
                if tx.send(request).await.is_err() {
                    return Err(ReqError::Rejected);
                }
                match answer.await {
                    Ok(true) => Ok(()),
                    _ => Err(ReqError::Rejected),
                }
            })
        })),
        ..Default::default()
    }
}

/// Watches the adapter and serves the gateway profile's connections.
async fn watch(
    adapter: bluer::Adapter,
    profile: ProfileHandle,
    hfp: HfpSettings,
    local: DeviceAddr,
    gateways: Gateways,
    tx: mpsc::Sender<AdapterEvent>,
) {
    tokio::join!(
        watch_adapter(adapter, tx.clone()),
        serve_profile(profile, hfp, local, gateways, tx)
    );
}

/// Command channels of the gateway connections, by headset.
type Gateways = Arc<Mutex<HashMap<DeviceAddr, mpsc::Sender<GatewayCommand>>>>;

fn lock(
    g: &Gateways,
) -> std::sync::MutexGuard<'_, HashMap<DeviceAddr, mpsc::Sender<GatewayCommand>>> {
    // The map stays consistent whatever panicked while holding it: every
    // change is one insert or remove.
    g.lock().unwrap_or_else(|p| p.into_inner())
}

/// Accepts each headset's RFCOMM connection to the gateway and runs its
/// service level connection. The connections end with this task.
async fn serve_profile(
    mut profile: ProfileHandle,
    hfp: HfpSettings,
    local: DeviceAddr,
    gateways: Gateways,
    tx: mpsc::Sender<AdapterEvent>,
) {
    let mut connections: JoinSet<()> = JoinSet::new();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    loop {
        tokio::select! {
            req = profile.next() => {
                let Some(req) = req else { return };
                let Some(device) = addr(req.device()) else { continue };
                match req.accept() {
                    Ok(stream) => {
                        let (cmd_tx, cmd_rx) = mpsc::channel(8);
                        lock(&gateways).insert(device.clone(), cmd_tx);
                        let (hfp, tx, cancel, gateways) =
                            (hfp.clone(), tx.clone(), cancel.clone(), gateways.clone());
                        let (local, remote) = (local.clone(), device.clone());
                        let open_sco: gateway::ScoOpener = Box::new(move |codec| {
                            let (local, remote) = (local.clone(), remote.clone());
                            let voice = voice::LinkFormat::of(codec).voice;
                            Box::pin(async move { ScoStream::connect(&local, &remote, voice).await })
                        });
                        connections.spawn(async move {
                            gateway::run(stream, device.clone(), hfp, cmd_rx, open_sco, tx, cancel)
                                .await;
                            lock(&gateways).remove(&device);
                        });
                    }
                    Err(e) => warn!(device = %device, error = %e, "cannot accept the hands-free connection"),
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Watches the adapter's device list and each device's `Paired` and
/// `Connected` properties.
async fn watch_adapter(adapter: bluer::Adapter, tx: mpsc::Sender<AdapterEvent>) {
    let mut events = match adapter.events().await {
        Ok(e) => e,
        Err(e) => {
            let reason = format!("cannot watch the adapter: {e}");
            let _ = tx.send(AdapterEvent::Lost { reason }).await;
            return;
        }
    };
    let mut watchers: JoinSet<()> = JoinSet::new();
    let mut watching: HashMap<Address, AbortHandle> = HashMap::new();
    for a in adapter.device_addresses().await.unwrap_or_default() {
        // Known at start: the actor trusts paired ones itself.
        let h = watchers.spawn(watch_device(adapter.clone(), a, false, tx.clone()));
        watching.insert(a, h);
    }
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(BzAdapterEvent::DeviceAdded(a)) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = watching.entry(a) {
                        debug!(device = %a, "bluetooth device appeared");
                        slot.insert(watchers.spawn(watch_device(adapter.clone(), a, true, tx.clone())));
                    }
                }
                Some(BzAdapterEvent::DeviceRemoved(a)) => {
                    debug!(device = %a, "bluetooth device removed");
                    if let Some(h) = watching.remove(&a) {
                        h.abort();
                    }
                }
                Some(BzAdapterEvent::PropertyChanged(p)) => {
                    debug!(property = ?p, "bluetooth adapter property changed");
                }
                None => {
                    let reason = "the adapter disappeared or bluetoothd stopped".to_owned();
                    let _ = tx.send(AdapterEvent::Lost { reason }).await;
                    return;
                }
            },
            Some(_) = watchers.join_next() => {}
        }
    }
}

async fn watch_device(
    adapter: bluer::Adapter,
    address: Address,
    appeared: bool,
    tx: mpsc::Sender<AdapterEvent>,
) {
    let Some(device_addr) = addr(address) else {
        warn!(device = %address, "bluetooth device with an unparsable address ignored");
        return;
    };
    let Ok(device) = adapter.device(address) else {
        return;
    };
    let mut events = match device.events().await {
        Ok(e) => e,
        Err(e) => {
            warn!(device = %device_addr, error = %e, "cannot watch bluetooth device");
            return;
        }
    };
    // BlueZ may create the device object only once pairing completed: a
    // device that appears paired but not yet trusted is a new pairing.
    if appeared && let (Ok(true), Ok(false)) = (device.is_paired().await, device.is_trusted().await)
    {
        let ev = AdapterEvent::Paired {
            device: device_addr.clone(),
            name: device.name().await.ok().flatten(),
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
    while let Some(DeviceEvent::PropertyChanged(p)) = events.next().await {
        let ev = match p {
            // BlueZ repeats `Paired` (a new link key on a later
            // connection); only an untrusted device is a new pairing.
            DeviceProperty::Paired(true) if !device.is_trusted().await.unwrap_or(false) => {
                AdapterEvent::Paired {
                    device: device_addr.clone(),
                    name: device.name().await.ok().flatten(),
                }
            }
            DeviceProperty::Connected(connected) => AdapterEvent::Connection {
                device: device_addr.clone(),
                connected,
            },
            _ => continue,
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}

impl BluezAdapter {
    fn adapter_err(&self, operation: &'static str, e: bluer::Error) -> BtError {
        BtError::Adapter {
            adapter: self.name.clone(),
            operation,
            message: e.to_string(),
        }
    }

    fn device_err(&self, device: &DeviceAddr, operation: &'static str, e: bluer::Error) -> BtError {
        BtError::Device {
            adapter: self.name.clone(),
            device: device.clone(),
            operation,
            message: e.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl BtAdapter for BluezAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn address(&self) -> &DeviceAddr {
        &self.address
    }

    async fn set_powered(&mut self, on: bool) -> Result<(), BtError> {
        let r = self.adapter.set_powered(on).await;
        r.map_err(|e| self.adapter_err("set Powered", e))
    }

    async fn set_pairable(&mut self, on: bool) -> Result<(), BtError> {
        let r = self.adapter.set_pairable(on).await;
        r.map_err(|e| self.adapter_err("set Pairable", e))
    }

    async fn set_discoverable(&mut self, on: bool) -> Result<(), BtError> {
        if on {
            // 0: discoverable until switched off (the actor closes pairing
            // itself, at its own timeout).
            let r = self.adapter.set_discoverable_timeout(0).await;
            r.map_err(|e| self.adapter_err("set DiscoverableTimeout", e))?;
        }
        let r = self.adapter.set_discoverable(on).await;
        r.map_err(|e| self.adapter_err("set Discoverable", e))
    }

    async fn set_trusted(&mut self, device: &DeviceAddr) -> Result<(), BtError> {
        let address: Address = device.as_str().parse().map_err(|_| BtError::Device {
            adapter: self.name.clone(),
            device: device.clone(),
            operation: "parse address",
            message: "not an address".into(),
        })?;
        let d = self.adapter.device(address);
        let d = d.map_err(|e| self.device_err(device, "find", e))?;
        let r = d.set_trusted(true).await;
        r.map_err(|e| self.device_err(device, "set Trusted", e))
    }

    async fn devices(&mut self) -> Result<Vec<DeviceInfo>, BtError> {
        let addresses = self.adapter.device_addresses().await;
        let addresses = addresses.map_err(|e| self.adapter_err("list devices", e))?;
        let mut out = Vec::new();
        for a in addresses {
            let Some(address) = addr(a) else { continue };
            let d = self.adapter.device(a);
            let d = d.map_err(|e| self.device_err(&address, "find", e))?;
            // A device removed meanwhile is skipped, not an error.
            let (Ok(paired), Ok(trusted), Ok(connected)) = (
                d.is_paired().await,
                d.is_trusted().await,
                d.is_connected().await,
            ) else {
                continue;
            };
            out.push(DeviceInfo {
                address,
                name: d.name().await.ok().flatten(),
                paired,
                trusted,
                connected,
            });
        }
        Ok(out)
    }

    fn gateway(&mut self, device: Option<&DeviceAddr>, cmd: GatewayCommand) {
        for (d, tx) in lock(&self.gateways).iter() {
            if device.is_none_or(|want| want == d) && tx.try_send(cmd.clone()).is_err() {
                warn!(device = %d, command = ?cmd, "bluetooth gateway busy; command dropped");
            }
        }
    }

    async fn next_event(&mut self) -> Option<AdapterEvent> {
        self.events.recv().await
    }
}
