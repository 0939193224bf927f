//! Wiring: turns validated [`Settings`] into running actors. This is the
//! one place where configuration picks hardware and audio backends, so a
//! device can never fall back to a simulation silently.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::audio::AudioProvider;
use crate::audio::alsa::{AlsaSpec, MixerControl, Pacing, start_alsa_audio};
use crate::audio::processing::{NsLevel, ProcessingSettings};
use crate::audio::sim::{
    SimAudioHandle, SimAudioSpec, SimEcho, SimSource as AudioSimSource, start_sim_audio_tracked,
};
use crate::audio::tones::ToneSettings;
use crate::bt;
use crate::call::CallSettings;
use crate::config::{
    self, AudioBackend, ConfigError, HardwareBackend, MdnsMode, Settings, SignalingMode, SimSource,
};
use crate::config::{AlsaPacing, BluetoothBackend, BluetoothPairing, NoiseSuppressionLevel};
use crate::config::{IceServerAuth, RemoteSignaling};
use crate::control;
use crate::controller::{Controller, Devices, Inputs};
use crate::door::{DoorSettings, LedPlan};
use crate::hub::{self, ConnSettings, HubSettings, Principal};
use crate::hw::{self, sim::SimControl};
use crate::ice_servers::{IceAuth, IceServerSpec};
use crate::media::{self, MediaSettings};
use crate::signaling::client::{self, ClientSettings, Wire};
use crate::signaling::socketio::SocketIoWire;
use crate::station::{Station, StationSettings, StatusHandle};

/// How long shutdown may take before we give up waiting for tasks.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Hub(#[from] hub::HubError),
    #[error(
        "{what} is not available in this build of intercomd (set in {files}); use \"sim\" only on a test bench"
    )]
    Unsupported { what: String, files: String },
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    #[error("cannot listen for the door panel on {addr}: {source}")]
    Panel {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Gpio(#[from] hw::gpio::GpioError),
    #[error("hub TLS: {0}")]
    Tls(#[from] hub::tls::TlsError),
}

impl DaemonError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(e) => e.exit_code(),
            DaemonError::Unsupported { .. } => config::EX_CONFIG,
            DaemonError::Gpio(e) if e.is_config() => config::EX_CONFIG,
            // A certificate, key or state directory a technician must fix.
            DaemonError::Tls(
                hub::tls::TlsError::Read { .. }
                | hub::tls::TlsError::Parse { .. }
                | hub::tls::TlsError::KeyMismatch { .. }
                | hub::tls::TlsError::StateDir { .. }
                | hub::tls::TlsError::Write { .. },
            ) => config::EX_CONFIG,
            _ => 1,
        }
    }
}

/// What a running station exposes to its embedder (tests, the demo).
pub struct Running {
    /// The hub's main listener (HTTPS unless `hub.tls.mode = "off"`).
    pub hub_addr: Option<SocketAddr>,
    /// `Some` when the hub serves HTTPS on `hub_addr`.
    pub hub_tls: Option<Arc<hub::tls::CertStore>>,
    pub panel_addr: Option<SocketAddr>,
    pub sim: Option<SimControl>,
    /// The simulated audio device, for tests that check what it played.
    pub audio: Option<crate::audio::sim::SimAudioHandle>,
    /// The simulated Bluetooth adapter (`bluetooth.backend = "sim"`), for
    /// tests that play a headset.
    pub bluetooth: Option<bt::sim::SimBt>,
    /// The station's status, built when asked.
    pub status: StatusHandle,
}

fn random_token() -> String {
    let a: u128 = rand::random();
    let b: u128 = rand::random();
    format!("{a:032x}{b:032x}")
}

/// The ICE servers of the configuration, with their credentials or shared
/// secrets read.
pub fn ice_servers(settings: &Settings) -> Result<Vec<IceServerSpec>, ConfigError> {
    settings
        .ice
        .servers
        .iter()
        .map(|s| {
            let auth = match &s.auth {
                IceServerAuth::SharedSecret { secret, ttl } => IceAuth::SharedSecret {
                    secret: config::read_secret(secret)?.expose().to_owned(),
                    ttl: *ttl,
                },
                IceServerAuth::LongTerm {
                    username,
                    credential,
                } => IceAuth::Static {
                    username: username.clone(),
                    credential: config::read_secret(credential)?.expose().to_owned(),
                },
                IceServerAuth::None => IceAuth::None,
            };
            Ok(IceServerSpec {
                urls: s.urls.clone(),
                auth,
            })
        })
        .collect()
}

/// Hub settings from configuration, reading every token file.
pub fn hub_settings(settings: &Settings) -> Result<HubSettings, ConfigError> {
    let mut doors = Vec::new();
    for d in &settings.hub.doors {
        doors.push(Principal {
            id: d.id.clone(),
            name: d.name.clone(),
            token: config::read_secret(&d.token)?.expose().to_owned(),
            groups: d.groups.clone(),
            call_door: false,
            quiet_hours: Default::default(),
        });
    }
    let mut answerers = Vec::new();
    for a in &settings.hub.answerers {
        answerers.push(Principal {
            id: a.id.clone(),
            name: a.name.clone(),
            token: config::read_secret(&a.token)?.expose().to_owned(),
            groups: a.groups.clone(),
            call_door: a.call_door,
            quiet_hours: a.quiet_hours.clone(),
        });
    }
    Ok(HubSettings {
        doors,
        answerers,
        ice_servers: ice_servers(settings)?,
        max_message_bytes: settings.signaling.max_message_bytes,
        hello_timeout: settings.hub.hello_timeout,
        ring_timeout: settings.call.ring_timeout,
        own_door: None,
    })
}

fn conn_settings(settings: &Settings) -> ConnSettings {
    ConnSettings {
        ping_interval: settings.hub.ping_interval,
        public_url: settings.hub.public_url.clone(),
        state_dir: Some(settings.hub.state_dir.clone()),
        push: settings
            .hub
            .push
            .enabled
            .then(|| hub::server::PushSettings {
                subject: push_subject(settings),
                ca_file: settings.hub.push.ca_file.clone(),
            }),
        station_name: settings.station.name.clone(),
        limits: hub::conn::ConnLimits {
            header_read_timeout: settings.hub.conn.header_read_timeout,
            idle_timeout: settings.hub.conn.idle_timeout,
            max_connections: settings.hub.conn.max_connections,
            max_connections_per_address: settings.hub.conn.max_connections_per_address,
        },
        policy: Default::default(),
    }
}

/// The names and origins the hub answers to: this host's names and
/// addresses, the certificate's names, `hub.tls.names`, ACME's domains,
/// `public_url` and `hub.allowed_origins`.
fn http_policy(
    settings: &Settings,
    listen: SocketAddr,
    certs: Option<Arc<hub::tls::CertStore>>,
) -> hub::policy::HttpPolicy {
    use hub::tls::TlsSource;
    let h = &settings.hub;
    let mut extra = Vec::new();
    if !listen.ip().is_unspecified() {
        extra.push(listen.ip().to_string());
    }
    match &h.tls {
        Some(TlsSource::SelfSigned { extra_names }) => extra.extend(extra_names.iter().cloned()),
        Some(TlsSource::Acme(a)) => extra.extend(a.domains.iter().cloned()),
        Some(TlsSource::Files { .. }) | None => {}
    }
    let names = hub::tls::self_signed_names(&extra)
        .into_iter()
        .map(|n| n.trim_matches(['[', ']']).to_ascii_lowercase())
        .collect();
    let mut origins = h.conn.allowed_origins.clone();
    if let Some(o) = h.public_url.as_deref().and_then(|u| {
        let rest = u.split_once("://")?.1;
        let authority = rest.split(['/', '?', '#']).next()?;
        hub::conn::parse_origin(&format!("https://{authority}"))
    }) {
        origins.push(o);
    }
    hub::policy::HttpPolicy {
        names,
        certs,
        origins,
        // Only a certificate browsers trust: a self-signed one changes
        // when the addresses do, and HSTS would then lock phones out.
        hsts: matches!(h.tls, Some(TlsSource::Files { .. } | TlsSource::Acme(_))),
    }
}

/// The VAPID `sub` claim: configured, else the public URL, else a mailto
/// naming this host (push services want a way to reach the operator).
fn push_subject(settings: &Settings) -> String {
    if let Some(s) = &settings.hub.push.subject {
        return s.clone();
    }
    if let Some(u) = &settings.hub.public_url {
        return u.clone();
    }
    let host = hub::tls::host_name().unwrap_or_else(|| "localhost".into());
    format!("mailto:intercomd@{host}")
}

pub fn media_settings(settings: &Settings) -> MediaSettings {
    MediaSettings {
        receiving_timeout: settings.ice.receiving_timeout,
        dscp_ef: settings.ice.dscp,
        ice_check_interval: settings.ice.check_interval,
        mdns: match settings.ice.mdns {
            MdnsMode::Disabled => media::MdnsMode::Disabled,
            MdnsMode::QueryOnly => media::MdnsMode::QueryOnly,
            MdnsMode::QueryAndGather => media::MdnsMode::QueryAndGather,
        },
        udp_bind_ips: settings.ice.bind_ips.clone(),
        opus_bitrate: settings.audio.opus.bitrate,
        opus_complexity: settings.audio.opus.complexity,
        opus_fec: settings.audio.opus.fec,
        relay_only: settings.ice.transport_policy == config::IceTransportPolicy::Relay,
        turn_ca_file: settings.ice.turn_ca_file.clone(),
        offer_dtls_active: settings.ice.offer_dtls_client,
        dtls_timeout: settings.ice.dtls_timeout,
        ..MediaSettings::default()
    }
}

/// The door logic's settings from `[door]` and `[[leds]]`.
pub fn door_settings(settings: &Settings) -> DoorSettings {
    let d = &settings.door;
    DoorSettings {
        lock: d.lock,
        pulse: d.pulse,
        held_open_alarm: d.held_open_alarm,
        tamper_lockout: d.tamper_lockout,
        remote_open_interval: d.remote_open_interval,
        long_press: d.long_press,
        leds: settings
            .leds
            .iter()
            .map(|l| LedPlan {
                name: l.name.clone(),
                idle: l.idle,
                signaling_down: l.signaling_down,
                ringing: l.ringing,
                in_call: l.in_call,
                door_open: l.door_open,
                fault: l.fault,
                pairing: l.pairing,
            })
            .collect(),
    }
}

/// Capture processing from the `[audio]` switches and `[audio.processing]`.
pub fn processing_settings(settings: &Settings) -> ProcessingSettings {
    let a = &settings.audio;
    ProcessingSettings {
        high_pass_filter: a.high_pass_filter,
        echo_cancellation: a.echo_cancellation,
        noise_suppression: a.noise_suppression,
        auto_gain_control: a.auto_gain_control,
        echo_delay_ms: a.processing.echo_delay.map(|d| d.as_millis() as u32),
        noise_suppression_level: match a.processing.noise_suppression_level {
            NoiseSuppressionLevel::Low => NsLevel::Low,
            NoiseSuppressionLevel::Moderate => NsLevel::Moderate,
            NoiseSuppressionLevel::High => NsLevel::High,
            NoiseSuppressionLevel::VeryHigh => NsLevel::VeryHigh,
        },
    }
}

/// The ALSA backend's settings from `[audio.alsa]` and `[audio.tones]`.
pub fn alsa_spec(settings: &Settings) -> AlsaSpec {
    let al = &settings.audio.alsa;
    let t = &settings.audio.tones;
    let control = |c: &Option<config::MixerControl>| {
        c.as_ref().map(|c| MixerControl {
            name: c.name.clone(),
            volume_pct: c.volume_pct,
        })
    };
    AlsaSpec {
        capture_device: al.capture_device.clone(),
        playback_device: al.playback_device.clone(),
        period_ms: al.period.as_millis() as u32,
        buffer_ms: al.buffer.as_millis() as u32,
        pacing: match al.pacing {
            AlsaPacing::Device => Pacing::Device,
            AlsaPacing::Timer => Pacing::Timer,
        },
        mixer_device: al.mixer_device.clone(),
        capture_control: control(&al.capture_control),
        playback_control: control(&al.playback_control),
        processing: processing_settings(settings),
        tones: ToneSettings {
            volume_db: if t.volume_pct == 0 {
                -120.0
            } else {
                20.0 * (f32::from(t.volume_pct) / 100.0).log10()
            },
            ringback: t.ringback,
            ringback_hz: t.ringback_hz as f32,
            ringback_on_ms: t.ringback_on.as_millis() as u32,
            ringback_off_ms: t.ringback_off.as_millis() as u32,
            door_chime: t.door_chime,
        },
        port_capacity: crate::audio::DEFAULT_PORT_CAPACITY,
        reopen_initial: al.reopen_initial,
        reopen_max: al.reopen_max,
        realtime_priority: al.realtime_priority,
    }
}

/// Starts the configured audio backend. A sound card that cannot be opened
/// is an error naming the device: never a switch to the simulation.
/// The simulated device's handle comes back too: the panel and tests read
/// what it played.
fn start_audio(
    settings: &Settings,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(Box<dyn AudioProvider>, Option<SimAudioHandle>), DaemonError> {
    match settings.audio.backend {
        AudioBackend::Alsa => {
            let (_first_ports, audio) = start_alsa_audio(&alsa_spec(settings), cancel, tracker)?;
            Ok((Box::new(audio), None))
        }
        AudioBackend::Sim => {
            let source = match &settings.audio.sim.source {
                SimSource::Tone { hz } => AudioSimSource::Tone(*hz as f32),
                SimSource::Wav(p) => AudioSimSource::Wav(p.clone()),
                SimSource::Silence => AudioSimSource::Silence,
            };
            let mut spec = SimAudioSpec::new(source);
            spec.record = settings.audio.sim.record_file.clone();
            spec.echo = settings.audio.sim.echo_path.map(|p| SimEcho {
                delay_ms: p.delay_ms,
                gain_db: p.gain_db as f32,
            });
            spec.processing = processing_settings(settings);
            let (_first_ports, audio) = start_sim_audio_tracked(&spec, cancel, tracker)?;
            warn!(
                "audio backend is SIMULATED (audio.backend = \"sim\"): no microphone or speaker is used"
            );
            Ok((Box::new(audio.clone()), Some(audio)))
        }
    }
}

/// How long a missing Bluetooth adapter waits before the next attempt.
const BT_REOPEN_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the Bluetooth actor when `[bluetooth]` is enabled, with the
/// configured backend. The simulated one is only ever used when asked for.
fn start_bluetooth(
    settings: &Settings,
    events: mpsc::Sender<bt::BtEvent>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(Option<bt::BtHandle>, Option<bt::sim::SimBt>), DaemonError> {
    let b = &settings.bluetooth;
    if !b.enabled {
        return Ok((None, None));
    }
    let mut sim_bt = None;
    let (pairing, legacy_pin) = match &b.pairing {
        BluetoothPairing::JustWorks => (bt::PairingMode::JustWorks, false),
        BluetoothPairing::Pin(src) => (bt::PairingMode::Pin(src.clone()), true),
    };
    let opener: bt::service::Opener = match b.backend {
        BluetoothBackend::Bluez => {
            let name = b.adapter.clone();
            // mSBC (transparent SCO, coded with libsbc) when the headset
            // offers it and bluetooth.prefer_msbc allows; CVSD otherwise.
            let hfp = bt::HfpSettings {
                prefer_msbc: b.prefer_msbc,
                ..bt::HfpSettings::default()
            };
            Box::new(move || {
                let (name, hfp) = (name.clone(), hfp.clone());
                Box::pin(async move {
                    let a = bt::bluez::open(name.as_deref(), legacy_pin, hfp).await?;
                    Ok(Box::new(a) as Box<dyn bt::BtAdapter>)
                })
            })
        }
        BluetoothBackend::Sim => {
            warn!("Bluetooth is SIMULATED (bluetooth.backend = \"sim\"): no adapter is used");
            let addr = bt::DeviceAddr::parse("00:00:5E:00:53:01")
                .expect("a fixed, well-formed address (documentation range)");
            let sim = bt::sim::SimBt::new(b.adapter.as_deref().unwrap_or("hci0"), addr);
            sim_bt = Some(sim.clone());
            Box::new(move || {
                let r = sim.open();
                Box::pin(async move { r })
            })
        }
    };
    let handle = bt::service::spawn(
        bt::BtSettings {
            pairing,
            pairing_timeout: b.pairing_timeout,
            discoverable: b.discoverable,
            reopen_interval: BT_REOPEN_INTERVAL,
        },
        opener,
        events,
        cancel,
        tracker,
    );
    Ok((Some(handle), sim_bt))
}

/// Run the hub alone until SIGTERM/SIGINT.
pub async fn run_hub(settings: Settings) -> Result<(), DaemonError> {
    let hs = hub_settings(&settings)?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    start_hub(&settings, hs, false, &cancel, &tracker).await?;
    tracker.close();
    let signals = StopSignals::catch()?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    signals.wait().await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    cancel.cancel();
    let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, tracker.wait()).await;
    Ok(())
}

/// A hub started by [`start_hub`].
pub struct StartedHub {
    pub addr: SocketAddr,
    pub tls: Option<Arc<hub::tls::CertStore>>,
    /// Plain HTTP on loopback for this station's own client alone (only
    /// with `own_client`).
    pub loopback: Option<SocketAddr>,
}

/// Binds the hub's listeners, puts its certificate in place and spawns it.
/// `own_client`: a standalone station joins over loopback, so a plain
/// loopback listener is kept for it when the main one is HTTPS.
pub async fn start_hub(
    settings: &Settings,
    hs: HubSettings,
    own_client: bool,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<StartedHub, DaemonError> {
    let h = &settings.hub;
    let bind = |addr: SocketAddr| async move {
        let l = hub::bind(&addr.to_string()).await?;
        let a = l.local_addr().map_err(|source| hub::HubError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        Ok::<_, hub::HubError>((l, a))
    };
    let (main, addr) = bind(h.listen).await?;
    let store = match &h.tls {
        Some(source) => Some(hub_certificate(settings, source, addr, cancel, tracker)?),
        None => {
            if !addr.ip().is_loopback() {
                warn!(listen = %addr, "hub serves plain HTTP (hub.tls.mode = \"off\"): phones opening the page by this address get no microphone, and tokens cross the network in clear");
            }
            None
        }
    };
    let mut loopback = Vec::new();
    if let Some(a) = h.loopback_listen {
        let (l, a) = bind(a).await?;
        info!(listen = %a, "hub also serves plain HTTP on loopback (a browser on this machine)");
        loopback.push(l);
    }
    // The station's own client gets a loopback listener of its own, apart
    // from the connection caps the public listeners share.
    let (own_listener, own) = match own_client {
        true => {
            let (l, a) = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
            (Some(l), Some(a))
        }
        false => (None, None),
    };
    let redirect = match h.redirect_listen {
        Some(a) => Some(bind(a).await?.0),
        None => None,
    };
    let listeners = hub::Listeners {
        main,
        tls: store.clone().map(hub::tls::server_config),
        loopback,
        redirect,
        own: own_listener,
    };
    let mut conn = conn_settings(settings);
    conn.policy = http_policy(settings, addr, store.clone());
    let hub_cancel = cancel.clone();
    tracker.spawn(async move {
        if let Err(e) = hub::run(listeners, hs, conn, hub_cancel).await {
            error!(error = %e, "hub stopped with an error");
        }
    });
    Ok(StartedHub {
        addr,
        tls: store,
        loopback: own,
    })
}

/// The hub's certificate from its source, in a store the listener reads on
/// every handshake; files are watched and ACME renews in the background.
fn hub_certificate(
    settings: &Settings,
    source: &hub::tls::TlsSource,
    addr: SocketAddr,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Arc<hub::tls::CertStore>, DaemonError> {
    use hub::tls::{self, TlsSource};
    let store = tls::CertStore::new();
    let state_dir = &settings.hub.state_dir;
    match source {
        TlsSource::SelfSigned { extra_names } => {
            let mut extra = extra_names.clone();
            if !addr.ip().is_unspecified() {
                extra.push(addr.ip().to_string());
            }
            let names = tls::self_signed_names(&extra);
            let (key, info, made) =
                tls::self_signed(state_dir, &names, std::time::SystemTime::now())?;
            store.set(key);
            let what = match made {
                Some(why) => format!("self-signed, made now because {why}"),
                None => "self-signed".to_owned(),
            };
            tls::log_certificate(&what, &info);
        }
        TlsSource::Files {
            cert,
            key,
            reload_check,
        } => {
            let (k, info) = tls::load_pem(cert, key)?;
            store.set(k);
            tls::log_certificate(&format!("from {}", cert.display()), &info);
            let left = info.remaining(std::time::SystemTime::now());
            if left < Duration::from_secs(14 * 86400) {
                warn!(cert = %cert.display(), days_left = left.as_secs() / 86400, "hub certificate expires within 14 days (or has expired): renew it; the hub picks up the new file without a restart");
            }
            tracker.spawn(tls::watch_files(
                store.clone(),
                cert.clone(),
                key.clone(),
                *reload_check,
                cancel.clone(),
            ));
        }
        TlsSource::Acme(a) => {
            tls::ensure_private_dir(state_dir)?;
            tracker.spawn(hub::acme::run(
                a.clone(),
                state_dir.clone(),
                store.clone(),
                cancel.clone(),
            ));
        }
    }
    Ok(store)
}

/// Start the door station's actors. Returns once everything is up; the
/// station runs until `stop` is cancelled, after which `tracker` drains.
pub async fn start_station(
    settings: &Settings,
    stop: CancellationToken,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Running, DaemonError> {
    // Refuse backends this build does not have before starting anything.
    // Door hardware first: a real board's lines are requested (the relay
    // driven de-energised) before anything else starts, and a wiring error
    // stops the daemon here.
    let gpio = match settings.hardware.backend {
        HardwareBackend::Gpio => {
            let relay = settings
                .gpio
                .relay
                .as_ref()
                .expect("validation requires gpio.relay with hardware.backend = \"gpio\"");
            Some(hw::gpio::open(relay, &settings.leds, &settings.inputs)?)
        }
        HardwareBackend::Sim => None,
    };

    // Audio first: a missing sound card stops start-up before anything
    // else runs.
    let (audio, sim_audio) = start_audio(settings, cancel.clone(), tracker)?;

    let ice = ice_servers(settings)?;

    // Signaling: our own hub (standalone) or an external one.
    let (url, token, hub_addr, hub_tls) = match settings.signaling.target.remote() {
        None => join_own_hub(settings, &cancel, tracker).await?,
        Some(remote) => external_hub(remote)?,
    };
    let (sig_tx, sig_rx) = mpsc::channel(256);
    let signaling = spawn_signaling(settings, url, token, sig_tx, &cancel, tracker)?;

    let (media_tx, media_rx) = mpsc::channel(256);
    let media = media::spawn_media(media_settings(settings), media_tx, cancel.clone(), tracker);

    let (hw_tx, hw_rx) = mpsc::channel(32);
    let (status, status_requests) = StatusHandle::new();
    let (leds, relay, sim) = door_board(settings, gpio, hw_tx, &cancel, tracker);
    let panel_addr = start_panel(settings, &sim, &sim_audio, &status, &cancel, tracker).await?;

    let (bt_tx, bt_rx) = mpsc::channel(16);
    let (bt, sim_bt) = start_bluetooth(settings, bt_tx, cancel.clone(), tracker)?;
    let targets = control::Targets {
        bt: bt.clone(),
        status: status.clone(),
    };
    start_control_socket(settings, targets, &cancel, tracker);

    let parts = Devices {
        signaling,
        media,
        audio,
        leds,
        relay,
        bt,
        ice_servers: ice,
        station_id: settings.station.id.clone(),
    };
    let inputs = Inputs {
        signaling: sig_rx,
        media: media_rx,
        hw: hw_rx,
        bt: bt_rx,
        status: status_requests,
    };
    spawn_controller(settings, parts, inputs, stop, &cancel, tracker);
    Ok(Running {
        hub_addr,
        hub_tls,
        panel_addr,
        sim,
        audio: sim_audio,
        bluetooth: sim_bt,
        status,
    })
}

/// Where and how the station joins signaling, and the hub it started.
type SignalingTarget = (
    String,
    String,
    Option<SocketAddr>,
    Option<Arc<hub::tls::CertStore>>,
);

/// Standalone: start this station's own hub and join it with a per-boot
/// token.
async fn join_own_hub(
    settings: &Settings,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<SignalingTarget, DaemonError> {
    let mut hs = hub_settings(settings)?;
    // This station joins its own hub with a per-boot token; an entry
    // for it in hub.doors (written for a separate hub) is not used.
    if hs.doors.iter().any(|d| d.id == settings.station.id) {
        warn!(station = %settings.station.id, "hub.doors lists this station; in standalone mode its entry is ignored");
        hs.doors.retain(|d| d.id != settings.station.id);
    }
    let token = random_token();
    // The station may ring the groups of its own buttons.
    let mut groups: Vec<String> = settings.buttons.iter().map(|b| b.group.clone()).collect();
    groups.sort();
    groups.dedup();
    hs.own_door = Some(settings.station.id.clone());
    hs.doors.push(Principal {
        id: settings.station.id.clone(),
        name: settings.station.name.clone(),
        token: token.clone(),
        groups,
        call_door: false,
        quiet_hours: Default::default(),
    });
    let started = start_hub(settings, hs, true, cancel, tracker).await?;
    let addr = started.addr;
    // Join over the hub's listener for this station alone.
    let own = started.loopback.unwrap_or(addr);
    let ip = if own.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        own.ip()
    };
    let url = format!("ws://{}/ws", SocketAddr::new(ip, own.port()));
    Ok((url, token, Some(addr), started.tls))
}

/// A separate hub (or Socket.IO server): its URL and the token read.
fn external_hub(remote: &RemoteSignaling) -> Result<SignalingTarget, DaemonError> {
    Ok((
        remote.url.expose().to_owned(),
        config::read_secret(&remote.token)?.expose().to_owned(),
        None,
        None,
    ))
}

fn spawn_signaling(
    settings: &Settings,
    url: String,
    token: String,
    sig_tx: mpsc::Sender<client::ClientEvent>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<client::SignalingHandle, DaemonError> {
    let wire = match settings.signaling.target.mode() {
        SignalingMode::SocketIo => {
            let sio = &settings.signaling.socketio;
            Wire::SocketIo(SocketIoWire::new(
                &sio.namespace,
                &sio.auth_field,
                &sio.events,
            ))
        }
        _ => Wire::Native,
    };

    Ok(client::spawn(
        ClientSettings {
            url: url.clone(),
            token,
            name: settings.station.name.clone(),
            reconnect_initial: settings.signaling.reconnect_initial,
            reconnect_max: settings.signaling.reconnect_max,
            jitter: settings.signaling.reconnect_jitter,
            connect_timeout: settings.signaling.connect_timeout,
            keepalive_interval: settings.signaling.keepalive_interval,
            dead_peer_timeout: settings.signaling.dead_peer_timeout,
            max_message_bytes: settings.signaling.max_message_bytes,
            wire,
            tls: match url.starts_with("wss://") {
                true => Some(client::tls_config(settings.signaling.ca_file.as_deref())?),
                false => None,
            },
        },
        sig_tx,
        cancel.clone(),
        tracker,
    ))
}

/// The door's LEDs and relay: on GPIO lines, or on the simulated board.
type DoorBoard = (
    Vec<Box<dyn hw::Led>>,
    Box<dyn hw::Relay>,
    Option<SimControl>,
);

fn door_board(
    settings: &Settings,
    gpio: Option<hw::gpio::GpioBoard>,
    hw_tx: mpsc::Sender<hw::HwEvent>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> DoorBoard {
    match gpio {
        Some(mut board) => {
            board.start(hw_tx, cancel.clone(), tracker);
            let leds = board
                .leds
                .into_iter()
                .map(|l| Box::new(l) as Box<dyn hw::Led>)
                .collect();
            info!(
                inputs = settings.inputs.len(),
                leds = settings.leds.len(),
                "door hardware on GPIO"
            );
            (leds, Box::new(board.relay), None)
        }
        None => {
            let buttons: Vec<String> = settings.buttons.iter().map(|b| b.name.clone()).collect();
            let led_names: Vec<&str> = settings.leds.iter().map(|l| l.name.as_str()).collect();
            let (outputs, sim) = hw::sim::board(
                buttons,
                &led_names,
                settings.hardware.sim.state_file.clone(),
                hw_tx,
            );
            warn!("door hardware is SIMULATED (hardware.backend = \"sim\"): no GPIO line is used");
            (outputs.leds, outputs.relay, Some(sim))
        }
    }
}

/// The simulated board's panel and stdin, when configured: returns the
/// panel's address.
async fn start_panel(
    settings: &Settings,
    sim: &Option<SimControl>,
    sim_audio: &Option<SimAudioHandle>,
    status: &StatusHandle,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Option<SocketAddr>, DaemonError> {
    let mut panel_addr = None;
    if let (Some(addr), Some(sim)) = (settings.hardware.sim.control_listen, sim) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Panel { addr, source })?;
        panel_addr = listener.local_addr().ok();
        let probe: Option<hw::sim::AudioProbe> = sim_audio.clone().map(|probe_audio| {
            std::sync::Arc::new(move || {
                serde_json::json!({ "played_dominant_hz": probe_audio.played_dominant_frequency() })
            }) as hw::sim::AudioProbe
        });
        tracker.spawn(hw::sim::serve_panel(
            listener,
            sim.clone(),
            status.clone(),
            probe,
            cancel.clone(),
        ));
    }
    if let (true, Some(sim)) = (settings.hardware.sim.stdin, sim) {
        tracker.spawn(hw::sim::stdin_loop(sim.clone(), cancel.clone()));
    }
    Ok(panel_addr)
}

fn start_control_socket(
    settings: &Settings,
    targets: control::Targets,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) {
    if let Some(path) = &settings.station.control_socket {
        // The station works without it: a failure is logged, not fatal.
        match control::bind(path) {
            Ok(listener) => {
                tracker.spawn(control::serve(
                    listener,
                    path.clone(),
                    targets,
                    cancel.clone(),
                    tracker.clone(),
                ));
            }
            Err(e) => {
                error!(error = %e, "no control socket; `intercomd bt pair` and `intercomd status` cannot reach this daemon")
            }
        }
    }
}

fn spawn_controller(
    settings: &Settings,
    devices: Devices,
    inputs: Inputs,
    stop: CancellationToken,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) {
    let station = StationSettings {
        call: CallSettings {
            ring_timeout: settings.call.ring_timeout,
            connect_timeout: settings.call.connect_timeout,
            max_duration: settings.call.max_duration,
            media_lost_timeout: settings.ice.receiving_timeout,
            max_media_restarts: settings.ice.max_restarts,
            ..CallSettings::default()
        },
        door: door_settings(settings),
        buttons: settings
            .buttons
            .iter()
            .map(|b| (b.name.clone(), b.group.clone()))
            .collect(),
        bluetooth: devices.bt.is_some(),
    };
    let controller = Controller::new(|ids, now| Station::new(station, ids, now), devices);
    let done = cancel.clone();
    tracker.spawn(async move {
        controller.run(inputs, stop).await;
        // The controller is the last to know about calls: once it has
        // hung up, everything else may stop.
        done.cancel();
    });
}

/// Run the station until SIGTERM/SIGINT, then shut down in order.
pub async fn run_station(settings: Settings) -> Result<Running, DaemonError> {
    run_station_then(settings, |_| {}).await
}

/// [`run_station`], calling `on_ready` once everything listens (the
/// demo's banner: shown only when its addresses work).
pub async fn run_station_then(
    settings: Settings,
    on_ready: impl FnOnce(&Running),
) -> Result<Running, DaemonError> {
    let stop = CancellationToken::new();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let running = start_station(&settings, stop.clone(), cancel.clone(), &tracker).await?;
    tracker.close();
    let signals = StopSignals::catch()?;
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("idle"),
    ]);
    info!(
        station = %settings.station.id,
        hub = ?running.hub_addr,
        panel = ?running.panel_addr,
        "intercomd ready"
    );
    on_ready(&running);
    tokio::select! {
        () = signals.wait() => {}
        // Everything stopped by itself (should not happen): leave.
        _ = cancel.cancelled() => {}
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    info!("stopping: ending calls");
    stop.cancel();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, cancel.cancelled())
        .await
        .is_err()
    {
        cancel.cancel();
    }
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            "some tasks did not stop within {} s",
            SHUTDOWN_DEADLINE.as_secs()
        );
    }
    info!("stopped");
    Ok(running)
}

/// SIGTERM and SIGINT, caught from now on: made before the daemon says
/// it is ready, so that a signal right after that is never the default
/// (an abrupt exit with no shutdown).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn catch() -> Result<Self, DaemonError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).map_err(DaemonError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received"),
            _ = self.int.recv() => info!("SIGINT received"),
        }
    }
}
