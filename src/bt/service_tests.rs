//! The Bluetooth actor against the simulated adapter. Real time, with
//! short windows: margins of a few hundred milliseconds either side of
//! each deadline.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::adapter::{BtError, DeviceAddr, DeviceInfo, PairingAnswer, PairingRequestKind};
use super::service::{self, BtEvent, BtHandle, BtSettings, Opener, PairSource, PairingMode};
use super::sim::SimBt;
use crate::config::SecretSource;

const TIMEOUT: Duration = Duration::from_millis(1_000);
const REOPEN: Duration = Duration::from_millis(300);

fn addr(s: &str) -> DeviceAddr {
    DeviceAddr::parse(s).expect("test addresses are well formed")
}

struct Rig {
    sim: SimBt,
    bt: BtHandle,
    events: mpsc::Receiver<BtEvent>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

fn start_with(sim: SimBt, pairing: PairingMode) -> Rig {
    let opener_sim = sim.clone();
    let opener: Opener = Box::new(move || {
        let r = opener_sim.open();
        Box::pin(async move { r })
    });
    let (tx, events) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let bt = service::spawn(
        BtSettings {
            pairing,
            pairing_timeout: TIMEOUT,
            discoverable: true,
            reopen_interval: REOPEN,
        },
        opener,
        tx,
        cancel.clone(),
        &tracker,
    );
    Rig {
        sim,
        bt,
        events,
        cancel,
        tracker,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn new_sim() -> SimBt {
    SimBt::new("hci0", addr("00:00:5E:00:53:01"))
}

/// Lets the actor handle what was sent to it (well before any deadline).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

impl Rig {
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[tokio::test]
async fn adapter_is_powered_closed_and_known_headsets_trusted() {
    let sim = new_sim();
    let known = addr("00:AA:01:00:00:23");
    sim.add_device(DeviceInfo {
        address: known.clone(),
        name: Some("Headset".into()),
        paired: true,
        trusted: false,
        connected: false,
    });
    // A device seen but never paired is not trusted.
    sim.add_device(DeviceInfo {
        address: addr("00:AA:01:00:00:99"),
        name: None,
        paired: false,
        trusted: false,
        connected: false,
    });
    let rig = start_with(sim, PairingMode::JustWorks);
    settle().await;
    let s = rig.sim.state();
    assert!(s.powered);
    assert!(!s.pairable);
    assert!(!s.discoverable);
    assert!(s.devices[0].trusted);
    assert!(!s.devices[1].trusted);
    rig.stop().await;
}

#[tokio::test]
async fn pairing_is_refused_while_closed() {
    let rig = start_with(new_sim(), PairingMode::JustWorks);
    settle().await;
    let headset = addr("00:AA:01:00:00:23");
    for kind in [
        PairingRequestKind::Authorization,
        PairingRequestKind::Confirmation { passkey: 123456 },
        PairingRequestKind::PinCode,
    ] {
        assert_eq!(
            rig.sim.request_pairing(&headset, kind).await,
            PairingAnswer::Reject
        );
    }
    assert!(
        !rig.sim
            .authorize_service(&headset, "0000111e-0000-1000-8000-00805f9b34fb")
            .await
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_window_accepts_one_headset_trusts_it_and_closes() {
    let mut rig = start_with(new_sim(), PairingMode::JustWorks);
    settle().await;
    let open = rig
        .bt
        .pair(PairSource::ControlSocket)
        .await
        .expect("the simulated adapter opens");
    assert_eq!(open.adapter, "hci0");
    assert_eq!(open.address, "00:00:5E:00:53:01");
    assert_eq!(open.timeout_ms, 1_000);
    assert_eq!(
        rig.events.recv().await,
        Some(BtEvent::Pairing { active: true })
    );
    let s = rig.sim.state();
    assert!(s.pairable && s.discoverable);

    let headset = addr("00:AA:01:00:00:23");
    assert_eq!(
        rig.sim
            .request_pairing(&headset, PairingRequestKind::Authorization)
            .await,
        PairingAnswer::Accept
    );
    // A legacy PIN request without a configured PIN is refused.
    assert_eq!(
        rig.sim
            .request_pairing(&headset, PairingRequestKind::PinCode)
            .await,
        PairingAnswer::Reject
    );
    rig.sim.paired(&headset, "Headset").await;
    assert_eq!(
        rig.events.recv().await,
        Some(BtEvent::Pairing { active: false })
    );
    let s = rig.sim.state();
    assert!(!s.pairable && !s.discoverable);
    assert!(s.devices.iter().any(|d| d.address == headset && d.trusted));
    // Closed again: the next headset is refused.
    assert_eq!(
        rig.sim
            .request_pairing(
                &addr("00:AA:01:00:00:24"),
                PairingRequestKind::Authorization
            )
            .await,
        PairingAnswer::Reject
    );
    rig.stop().await;
}

#[tokio::test]
async fn the_window_closes_at_its_timeout_and_a_second_request_extends_it() {
    let mut rig = start_with(new_sim(), PairingMode::JustWorks);
    settle().await;
    rig.bt.pair(PairSource::ServiceButton).await.expect("opens");
    assert_eq!(
        rig.events.recv().await,
        Some(BtEvent::Pairing { active: true })
    );
    tokio::time::sleep(ms(700)).await;
    // Extends to a full timeout from now, without a second open event.
    rig.bt
        .pair(PairSource::ControlSocket)
        .await
        .expect("extends");
    tokio::time::sleep(ms(700)).await;
    assert!(
        rig.sim.state().pairable,
        "still open 1.4 s after opening, 0.3 s before the extended end"
    );
    assert!(rig.events.try_recv().is_err(), "no event while extended");
    tokio::time::sleep(ms(600)).await;
    assert_eq!(
        rig.events.recv().await,
        Some(BtEvent::Pairing { active: false })
    );
    assert!(!rig.sim.state().pairable);
    rig.stop().await;
}

#[tokio::test]
async fn legacy_pin_requests_get_the_pin_from_its_file() {
    let n: u64 = rand::random();
    let path = std::env::temp_dir().join(format!("intercomd-bt-pin-{n:016x}"));
    std::fs::write(&path, "4711\n").expect("temp file");
    let rig = start_with(
        new_sim(),
        PairingMode::Pin(SecretSource::File(path.clone())),
    );
    settle().await;
    let headset = addr("00:AA:01:00:00:23");
    assert_eq!(
        rig.sim
            .request_pairing(&headset, PairingRequestKind::PinCode)
            .await,
        PairingAnswer::Reject,
        "closed: no PIN given out"
    );
    rig.bt.pair(PairSource::ControlSocket).await.expect("opens");
    assert_eq!(
        rig.sim
            .request_pairing(&headset, PairingRequestKind::PinCode)
            .await,
        PairingAnswer::Pin("4711".into())
    );
    // An unreadable PIN file keeps pairing closed and says why.
    std::fs::remove_file(&path).expect("remove temp file");
    rig.sim.paired(&headset, "Headset").await;
    settle().await;
    let err = rig
        .bt
        .pair(PairSource::ControlSocket)
        .await
        .expect_err("no PIN file");
    assert!(err.contains("PIN"), "{err}");
    assert!(!rig.sim.state().pairable);
    rig.stop().await;
}

#[tokio::test]
async fn a_missing_adapter_is_reported_and_retried() {
    let sim = new_sim();
    sim.fail_open(Some(BtError::NoAdapter("hci0".into(), "none".into())));
    let mut rig = start_with(sim, PairingMode::JustWorks);
    settle().await;
    let err = rig
        .bt
        .pair(PairSource::ControlSocket)
        .await
        .expect_err("no adapter");
    assert!(err.contains("no Bluetooth adapter hci0"), "{err}");
    rig.sim.fail_open(None);
    tokio::time::sleep(REOPEN + ms(200)).await;
    assert_eq!(rig.sim.state().opens, 1);
    assert!(rig.sim.state().powered);
    // Lost with a window open: the window ends, the adapter is reopened
    // closed.
    rig.bt.pair(PairSource::ControlSocket).await.expect("opens");
    assert_eq!(
        rig.events.recv().await,
        Some(BtEvent::Pairing { active: true })
    );
    rig.sim.lose("bluetoothd restarted").await;
    assert_eq!(
        rig.events.recv().await,
        Some(BtEvent::Pairing { active: false })
    );
    settle().await;
    let s = rig.sim.state();
    assert_eq!(s.opens, 2);
    assert!(!s.pairable);
    rig.stop().await;
}
