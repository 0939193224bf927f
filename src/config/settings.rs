//! Typed, validated settings: what the rest of the daemon reads. Built from
//! the merged fragment; every rule that can fail names the file and line of
//! the value to edit.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ser;

use super::error::{ConfigError, Location};
use super::fragments::{self as frag, Val};
use super::secret::SecretSource;

#[macro_use]
#[path = "table.rs"]
mod table;
use table::int;

#[path = "bluetooth.rs"]
mod bluetooth;
#[path = "door.rs"]
mod door;
pub use bluetooth::{BluetoothBackend, BluetoothConfig, BluetoothPairing};
pub use door::{
    Bias, DoorConfig, GpioConfig, InputConfig, InputKind, LedConfig, LineRef, LineSpec,
};

/// The whole configuration after merging and validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub station: Station,
    pub signaling: Signaling,
    pub hub: Hub,
    pub call: Call,
    /// At least one.
    pub buttons: Vec<Button>,
    pub ice: Ice,
    pub audio: Audio,
    pub hardware: Hardware,
    pub log: Log,
    /// `[door]`: lock relay timing, alarms, remote opening.
    pub door: DoorConfig,
    /// `[[leds]]`: at least one.
    pub leds: Vec<LedConfig>,
    /// `[[inputs]]`: input lines of a GPIO board.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputConfig>,
    pub gpio: GpioConfig,
    /// `[bluetooth]`: a headset for the call audio.
    pub bluetooth: BluetoothConfig,
    /// The fragments merged, in order (the built-in defaults first).
    #[serde(skip)]
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Station {
    /// `[A-Za-z0-9_-]{1,64}`
    pub id: String,
    pub name: String,
    /// The local control socket (`intercomd bt pair` talks to the running
    /// daemon through it); `None` when switched off with an empty value.
    #[serde(serialize_with = "ser::or_empty")]
    pub control_socket: Option<PathBuf>,
}

/// How this station reaches the signaling service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalingMode {
    /// Run the hub in this process and connect to it over loopback.
    Standalone,
    /// Connect to an external intercomd hub.
    Hub,
    /// Connect to an external Socket.IO v4 server.
    SocketIo,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signaling {
    /// `mode`, and for a separate service its `url` and token.
    #[serde(flatten)]
    pub target: SignalingTarget,
    #[serde(rename = "reconnect_initial_ms", serialize_with = "ser::ms")]
    pub reconnect_initial: Duration,
    #[serde(rename = "reconnect_max_ms", serialize_with = "ser::ms")]
    pub reconnect_max: Duration,
    /// Fraction of each backoff delay randomised, 0..=1.
    pub reconnect_jitter: f64,
    #[serde(rename = "connect_timeout_ms", serialize_with = "ser::ms")]
    pub connect_timeout: Duration,
    #[serde(rename = "keepalive_interval_ms", serialize_with = "ser::ms")]
    pub keepalive_interval: Duration,
    /// Greater than `keepalive_interval`.
    #[serde(rename = "dead_peer_timeout_ms", serialize_with = "ser::ms")]
    pub dead_peer_timeout: Duration,
    pub max_message_bytes: usize,
    /// Extra trust anchor (PEM) for a `wss://` hub, besides the system's.
    #[serde(serialize_with = "ser::or_empty")]
    pub ca_file: Option<PathBuf>,
    /// `ws://` to a host other than loopback, allowed explicitly.
    pub allow_insecure_ws: bool,
    pub socketio: SocketIo,
}

/// Where this station finds the signaling service: validated together, so
/// a separate service always comes with its URL and token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalingTarget {
    /// Run the hub in this process and connect to it over loopback.
    Standalone,
    /// An external intercomd hub.
    Hub(RemoteSignaling),
    /// An external Socket.IO v4 server (`[signaling.socketio]`).
    SocketIo(RemoteSignaling),
}

/// A signaling service on another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSignaling {
    /// `ws://` or `wss://`.
    pub url: super::SecretUrl,
    pub token: SecretSource,
}

impl SignalingTarget {
    pub fn mode(&self) -> SignalingMode {
        match self {
            SignalingTarget::Standalone => SignalingMode::Standalone,
            SignalingTarget::Hub(_) => SignalingMode::Hub,
            SignalingTarget::SocketIo(_) => SignalingMode::SocketIo,
        }
    }

    /// The separate service, unless standalone.
    pub fn remote(&self) -> Option<&RemoteSignaling> {
        match self {
            SignalingTarget::Standalone => None,
            SignalingTarget::Hub(r) | SignalingTarget::SocketIo(r) => Some(r),
        }
    }
}

/// `mode`, `url` (`""` when standalone) and `token_file` /
/// `token_credential`, flattened into `[signaling]`.
impl Serialize for SignalingTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("mode", &self.mode())?;
        match self.remote() {
            Some(r) => {
                map.serialize_entry("url", &r.url)?;
                ser::secret_entry(&mut map, "token", Some(&r.token))?;
            }
            None => map.serialize_entry("url", "")?,
        }
        map.end()
    }
}

/// How protocol messages map onto a Socket.IO v4 server's namespace and
/// event names (`signaling.mode = "socketio"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketIo {
    /// `/` or `/name`.
    pub namespace: String,
    /// The key of the token in the CONNECT packet's auth object.
    pub auth_field: String,
    /// Message `type` → event name, for every message type carried.
    pub events: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hub {
    /// HTTPS and WSS unless `tls` is `None`.
    pub listen: SocketAddr,
    /// Plain HTTP on a loopback address (a browser on this machine).
    #[serde(serialize_with = "ser::or_empty")]
    pub loopback_listen: Option<SocketAddr>,
    /// Plain HTTP that only redirects to HTTPS.
    #[serde(serialize_with = "ser::or_empty")]
    pub redirect_listen: Option<SocketAddr>,
    /// Certificates, keys and the hub's records; created 0700.
    pub state_dir: PathBuf,
    /// Where the certificate comes from; `None`: `tls.mode = "off"`.
    #[serde(serialize_with = "ser::hub_tls")]
    pub tls: Option<crate::hub::tls::TlsSource>,
    #[serde(rename = "ping_interval_ms", serialize_with = "ser::ms")]
    pub ping_interval: Duration,
    #[serde(rename = "hello_timeout_ms", serialize_with = "ser::ms")]
    pub hello_timeout: Duration,
    /// Timeouts and caps of the hub's connections.
    #[serde(flatten)]
    pub conn: HubConn,
    /// The https:// address residents should open (`hub.public_url`); the
    /// answering page points at it when it was opened without a microphone.
    #[serde(serialize_with = "ser::or_empty")]
    pub public_url: Option<String>,
    /// Door stations allowed to connect (in standalone mode the local
    /// station is added by the daemon, not listed here).
    pub doors: Vec<Door>,
    pub answerers: Vec<Answerer>,
    pub push: HubPush,
}

/// Connection hygiene of the hub's listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HubConn {
    #[serde(rename = "header_read_timeout_ms", serialize_with = "ser::ms")]
    pub header_read_timeout: Duration,
    #[serde(rename = "idle_timeout_ms", serialize_with = "ser::ms")]
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// `scheme://host[:port]`, lower case.
    pub allowed_origins: Vec<String>,
}

/// `[hub.push]`: Web Push to residents' phones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HubPush {
    pub enabled: bool,
    /// The VAPID `sub` claim; `None`: derived (public_url, else mailto).
    #[serde(serialize_with = "ser::or_empty")]
    pub subject: Option<String>,
    /// Extra trust (PEM) for push services besides the system's CAs.
    #[serde(serialize_with = "ser::or_empty")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Door {
    pub id: String,
    pub name: String,
    #[serde(flatten, serialize_with = "ser::token")]
    pub token: SecretSource,
    /// The ring groups this door may ring.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answerer {
    pub id: String,
    pub name: String,
    #[serde(flatten, serialize_with = "ser::token")]
    pub token: SecretSource,
    pub groups: Vec<String>,
    /// May call the hub's doors (monitor / talk to the door).
    pub call_door: bool,
    /// When this answerer is neither rung nor pushed.
    #[serde(serialize_with = "ser::quiet_hours")]
    pub quiet_hours: crate::hub::quiet::QuietHours,
}

table! {
    /// `[call]`: how long a call may ring, connect and last.
    pub struct Call in CallFragment at "call" {
        ring_timeout_ms => ring_timeout: Duration = Check::millis,
        /// From "accepted" to media flowing.
        connect_timeout_ms => connect_timeout: Duration = Check::millis,
        max_duration_ms => max_duration: Duration = Check::millis,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Button {
    pub name: String,
    /// The answerer group this button rings.
    pub group: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MdnsMode {
    Disabled,
    QueryOnly,
    QueryAndGather,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    All,
    Relay,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ice {
    #[serde(rename = "receiving_timeout_ms", serialize_with = "ser::ms")]
    pub receiving_timeout: Duration,
    pub dscp: bool,
    #[serde(rename = "check_interval_ms", serialize_with = "ser::ms")]
    pub check_interval: Duration,
    pub mdns: MdnsMode,
    pub transport_policy: IceTransportPolicy,
    /// Empty: all interfaces.
    pub bind_ips: Vec<IpAddr>,
    /// Extra trust anchor (PEM) for `turns:` servers.
    #[serde(serialize_with = "ser::or_empty")]
    pub turn_ca_file: Option<PathBuf>,
    /// Offer `a=setup:active`: this station is the DTLS client.
    pub offer_dtls_client: bool,
    /// ICE connected → DTLS connected longer than this: a new session.
    #[serde(rename = "dtls_timeout_ms", serialize_with = "ser::ms")]
    pub dtls_timeout: Duration,
    /// Attempts per call to bring a lost or stalled media path back.
    pub max_restarts: u32,
    pub servers: Vec<IceServer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    #[serde(flatten)]
    pub auth: IceServerAuth,
}

/// How a station authenticates to an ICE server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceServerAuth {
    /// A STUN server without credentials.
    None,
    /// Long-term credentials (`username` and `credential_file`).
    LongTerm {
        username: String,
        credential: SecretSource,
    },
    /// TURN REST scheme: per-client credentials derived from this secret,
    /// valid for `ttl` (`secret_file` and `credential_ttl_s`).
    SharedSecret { secret: SecretSource, ttl: Duration },
}

/// The keys of [`IceServerAuth`], flattened into `[[ice.servers]]`.
impl Serialize for IceServerAuth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        match self {
            IceServerAuth::None => {}
            IceServerAuth::LongTerm {
                username,
                credential,
            } => {
                map.serialize_entry("username", username)?;
                ser::secret_entry(&mut map, "credential", Some(credential))?;
            }
            IceServerAuth::SharedSecret { secret, ttl } => {
                ser::secret_entry(&mut map, "secret", Some(secret))?;
                map.serialize_entry("credential_ttl_s", &ttl.as_secs())?;
            }
        }
        map.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioBackend {
    Sim,
    Alsa,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Audio {
    pub backend: AudioBackend,
    pub echo_cancellation: bool,
    pub auto_gain_control: bool,
    pub high_pass_filter: bool,
    pub noise_suppression: bool,
    pub opus: Opus,
    pub sim: AudioSim,
    pub alsa: AudioAlsa,
    pub processing: AudioProcessing,
    pub tones: AudioTones,
}

/// `[audio.alsa]`: the sound card, used with `backend = "alsa"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudioAlsa {
    pub capture_device: String,
    pub playback_device: String,
    #[serde(rename = "period_ms", serialize_with = "ser::ms")]
    pub period: Duration,
    #[serde(rename = "buffer_ms", serialize_with = "ser::ms")]
    pub buffer: Duration,
    pub pacing: AlsaPacing,
    pub mixer_device: String,
    #[serde(flatten, serialize_with = "ser::capture_control")]
    pub capture_control: Option<MixerControl>,
    #[serde(flatten, serialize_with = "ser::playback_control")]
    pub playback_control: Option<MixerControl>,
    #[serde(rename = "reopen_initial_ms", serialize_with = "ser::ms")]
    pub reopen_initial: Duration,
    #[serde(rename = "reopen_max_ms", serialize_with = "ser::ms")]
    pub reopen_max: Duration,
    /// SCHED_FIFO priority of the audio thread; 0: normal scheduling.
    pub realtime_priority: u8,
}

/// What paces the audio thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlsaPacing {
    /// The sound card's clock (blocking reads): for real devices.
    Device,
    /// A 10 ms timer: only for PCMs without a clock (`file`, `null`).
    Timer,
}

/// A mixer control set when the device opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MixerControl {
    pub name: String,
    pub volume_pct: u8,
}

/// `[audio.processing]`: details of the capture processing switched on by
/// the `[audio]` keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudioProcessing {
    /// Speaker-to-microphone delay of the board; `None`: estimated.
    #[serde(rename = "echo_delay_ms", serialize_with = "ser::ms_or_zero")]
    pub echo_delay: Option<Duration>,
    pub noise_suppression_level: NoiseSuppressionLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSuppressionLevel {
    Low,
    Moderate,
    High,
    VeryHigh,
}

impl NoiseSuppressionLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            NoiseSuppressionLevel::Low => "low",
            NoiseSuppressionLevel::Moderate => "moderate",
            NoiseSuppressionLevel::High => "high",
            NoiseSuppressionLevel::VeryHigh => "very_high",
        }
    }
}

table! {
    /// `[audio.tones]`: local tones in the door station's speaker.
    pub struct AudioTones in AudioTonesFragment at "audio.tones" {
        /// Peak level, percent of full scale.
        volume_pct => volume_pct: u8 = int(0..=100),
        ringback => ringback: bool = Check::bool,
        ringback_hz => ringback_hz: u32 = int(100..=4000),
        ringback_on_ms => ringback_on: Duration = Check::millis,
        ringback_off_ms => ringback_off: Duration = Check::millis,
        door_chime => door_chime: bool = Check::bool,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opus {
    /// Bits per second, 6000..=510000.
    pub bitrate: u32,
    /// 0..=10.
    pub complexity: u8,
    pub fec: bool,
    /// 5, 10, 20, 40 or 60 ms.
    #[serde(rename = "frame_ms", serialize_with = "ser::ms")]
    pub frame: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudioSim {
    #[serde(serialize_with = "ser::display")]
    pub source: SimSource,
    /// WAV file recording what the simulated speaker plays.
    #[serde(serialize_with = "ser::or_empty")]
    pub record_file: Option<PathBuf>,
    /// A simulated room between the speaker and the microphone.
    #[serde(serialize_with = "ser::display_or_empty")]
    pub echo_path: Option<SimEchoPath>,
}

/// `[audio.sim] echo_path = "<delay_ms>:<gain_db>"`: what the simulated
/// speaker plays reaches the simulated microphone after `delay_ms`, at
/// `gain_db`, with a decaying tail of reflections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimEchoPath {
    pub delay_ms: u32,
    pub gain_db: i32,
}

/// What the simulated microphone hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimSource {
    /// A sine tone, 20..=20000 Hz.
    Tone {
        hz: u32,
    },
    Wav(PathBuf),
    Silence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HardwareBackend {
    Sim,
    Gpio,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hardware {
    pub backend: HardwareBackend,
    pub sim: HardwareSim,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HardwareSim {
    /// HTTP control panel of the simulated hardware; `None` = off.
    #[serde(serialize_with = "ser::or_empty")]
    pub control_listen: Option<SocketAddr>,
    /// Enter on the terminal presses the first call button.
    pub stdin: bool,
    /// File keeping the simulated relay's level across a crash.
    #[serde(serialize_with = "ser::or_empty")]
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when stderr is connected to the journal, else stderr.
    Auto,
    Journald,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Log {
    pub target: LogTarget,
    /// A `tracing` EnvFilter directive, e.g. `info,intercomd=debug`.
    pub level: String,
}

/// `hub.tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    Off,
    SelfSigned,
    Files,
    Acme,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::SelfSigned => "self_signed",
            TlsMode::Files => "files",
            TlsMode::Acme => "acme",
        }
    }
}

impl SignalingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalingMode::Standalone => "standalone",
            SignalingMode::Hub => "hub",
            SignalingMode::SocketIo => "socketio",
        }
    }
}

impl MdnsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MdnsMode::Disabled => "disabled",
            MdnsMode::QueryOnly => "query_only",
            MdnsMode::QueryAndGather => "query_and_gather",
        }
    }
}

impl IceTransportPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            IceTransportPolicy::All => "all",
            IceTransportPolicy::Relay => "relay",
        }
    }
}

impl AudioBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            AudioBackend::Sim => "sim",
            AudioBackend::Alsa => "alsa",
        }
    }
}

impl HardwareBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            HardwareBackend::Sim => "sim",
            HardwareBackend::Gpio => "gpio",
        }
    }
}

impl LogTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            LogTarget::Auto => "auto",
            LogTarget::Journald => "journald",
            LogTarget::Stderr => "stderr",
        }
    }
}

/// As written in `audio.sim.source`.
impl std::fmt::Display for SimSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimSource::Tone { hz } => write!(f, "tone:{hz}"),
            SimSource::Wav(path) => write!(f, "wav:{}", path.display()),
            SimSource::Silence => f.write_str("silence"),
        }
    }
}

/// As written in `audio.sim.echo_path`.
impl std::fmt::Display for SimEchoPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.delay_ms, self.gain_db)
    }
}

// ---------------------------------------------------------------------------
// Validation

/// Collects every problem so a technician sees them all in one run.
struct Check {
    errors: Vec<ConfigError>,
    files_read: Vec<PathBuf>,
    /// Where to put a key nobody set.
    add_to: PathBuf,
}

/// A placeholder used after an error has been recorded; never returned,
/// since any recorded error makes validation fail.
const NEVER: Duration = Duration::ZERO;

impl Check {
    fn invalid(&mut self, at: &Location, key: &str, reason: impl Into<String>) {
        self.errors.push(ConfigError::InvalidValue {
            at: at.clone(),
            key: key.to_owned(),
            reason: reason.into(),
        });
    }

    fn missing(&mut self, key: &str, why: impl Into<String>, add_to: Option<&Location>) {
        self.errors.push(ConfigError::Missing {
            key: key.to_owned(),
            why: why.into(),
            files_read: self.files_read.clone(),
            add_to: add_to
                .filter(|at| !at.is_builtin())
                .map_or_else(|| self.add_to.clone(), |at| at.file.clone()),
        });
    }

    /// A key every configuration has (the shipped defaults set it).
    fn get<'a, T>(&mut self, key: &str, v: &'a Option<Val<T>>) -> Option<&'a Val<T>> {
        if v.is_none() {
            self.missing(key, "it has no default", None);
        }
        v.as_ref()
    }

    /// The later-set of two values: from the file merged last, or the later
    /// line of the same file. That is most likely the one just edited.
    fn later<'a, T>(&self, a: &'a Val<T>, b: &'a Val<T>) -> &'a Val<T> {
        let rank = |v: &Val<T>| {
            let file = self.files_read.iter().rposition(|f| *f == v.at.file);
            (file, v.at.line)
        };
        if rank(b) > rank(a) { b } else { a }
    }

    fn bool(&mut self, key: &str, v: &Option<Val<bool>>) -> bool {
        self.get(key, v).is_some_and(|v| v.value)
    }

    fn copy<T: Copy>(&mut self, key: &str, v: &Option<Val<T>>, fallback: T) -> T {
        self.get(key, v).map_or(fallback, |v| v.value)
    }

    fn int(&mut self, key: &str, v: &Option<Val<u64>>, range: RangeInclusive<u64>) -> u64 {
        match self.get(key, v) {
            Some(v) if range.contains(&v.value) => v.value,
            Some(v) => {
                let (lo, hi) = (range.start(), range.end());
                self.invalid(&v.at, key, format!("{} is outside {lo}..={hi}", v.value));
                *lo
            }
            None => *range.start(),
        }
    }

    /// `*_ms` keys: whole milliseconds, at least 1.
    fn millis(&mut self, key: &str, v: &Option<Val<u64>>) -> Duration {
        match self.get(key, v) {
            Some(v) if v.value == 0 => {
                self.invalid(&v.at, key, "must be at least 1 (milliseconds)");
                NEVER
            }
            Some(v) => Duration::from_millis(v.value),
            None => NEVER,
        }
    }

    fn id(&mut self, key: &str, v: &Option<Val<String>>) -> String {
        match self.get(key, v) {
            Some(v) => {
                self.check_id(&v.at, key, &v.value);
                v.value.clone()
            }
            None => String::new(),
        }
    }

    fn check_id(&mut self, at: &Location, key: &str, id: &str) {
        if !is_id(id) {
            self.invalid(
                at,
                key,
                format!("{id:?} must be 1 to 64 characters from A-Z, a-z, 0-9, `_` and `-`"),
            );
        }
    }

    fn text(&mut self, key: &str, v: &Option<Val<String>>) -> String {
        match self.get(key, v) {
            Some(v) if v.value.trim().is_empty() => {
                self.invalid(&v.at, key, "must not be empty");
                String::new()
            }
            Some(v) => v.value.clone(),
            None => String::new(),
        }
    }

    fn socket_addr(&mut self, key: &str, v: &Val<String>) -> Option<SocketAddr> {
        match v.value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.invalid(
                    &v.at,
                    key,
                    format!(
                        "{:?} is not a socket address (IP:port, e.g. \"0.0.0.0:8080\" or \"[::]:8080\")",
                        v.value
                    ),
                );
                None
            }
        }
    }

    /// `<prefix>_file` / `<prefix>_credential` pair; empty strings mean unset.
    fn secret(
        &mut self,
        key_prefix: &str,
        file: &Option<Val<String>>,
        credential: &Option<Val<String>>,
    ) -> Option<SecretSource> {
        let file = file.as_ref().filter(|v| !v.value.is_empty());
        let credential = credential.as_ref().filter(|v| !v.value.is_empty());
        match (file, credential) {
            (Some(file), Some(credential)) => {
                let later = if credential.at.line >= file.at.line {
                    credential
                } else {
                    file
                };
                self.invalid(
                    &later.at,
                    &format!("{key_prefix}_file"),
                    format!(
                        "set either `{key_prefix}_file` ({}) or `{key_prefix}_credential` ({}), not both",
                        file.at, credential.at
                    ),
                );
                None
            }
            (Some(file), None) => {
                let path = PathBuf::from(&file.value);
                if let Some(why) = super::secret::exposed_file(&path) {
                    self.invalid(&file.at, &format!("{key_prefix}_file"), why);
                }
                Some(SecretSource::File(path))
            }
            (None, Some(name)) => {
                let v = &name.value;
                if v.contains('/') || v == "." || v == ".." {
                    self.invalid(
                        &name.at,
                        &format!("{key_prefix}_credential"),
                        format!("{v:?} must be a credential name, not a path"),
                    );
                    None
                } else {
                    Some(SecretSource::Credential(v.clone()))
                }
            }
            (None, None) => None,
        }
    }
}

fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Turns the merged fragment into settings, or every problem found.
pub(crate) fn validate(
    root: &frag::Root,
    files_read: Vec<PathBuf>,
    add_to: PathBuf,
) -> Result<Settings, ConfigError> {
    let mut c = Check {
        errors: Vec::new(),
        files_read,
        add_to,
    };
    let st = root.station.clone().unwrap_or_default();
    let station = Station {
        id: c.id("station.id", &st.id),
        name: c.text("station.name", &st.name),
        control_socket: c
            .get("station.control_socket", &st.control_socket)
            .map(|v| v.value.trim())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };

    let signaling = signaling(&mut c, &root.signaling.clone().unwrap_or_default());
    let hub = hub(&mut c, &root.hub.clone().unwrap_or_default());
    let call = Call::check(&mut c, &root.call.clone().unwrap_or_default());

    let buttons = buttons(&mut c, root.buttons.as_ref(), &hub.answerers);
    let ice = ice(&mut c, &root.ice.clone().unwrap_or_default());
    let audio = audio(&mut c, &root.audio.clone().unwrap_or_default());

    let hw = root.hardware.clone().unwrap_or_default();
    let hw_sim = hw.sim.unwrap_or_default();
    let hardware = Hardware {
        backend: c.copy("hardware.backend", &hw.backend, HardwareBackend::Sim),
        sim: HardwareSim {
            control_listen: match c.get("hardware.sim.control_listen", &hw_sim.control_listen) {
                Some(v) if !v.value.is_empty() => c.socket_addr("hardware.sim.control_listen", v),
                _ => None,
            },
            stdin: c.bool("hardware.sim.stdin", &hw_sim.stdin),
            state_file: hw_sim
                .state_file
                .as_ref()
                .filter(|v| !v.value.is_empty())
                .map(|v| PathBuf::from(&v.value)),
        },
    };
    let door_parts = door::door_parts(&mut c, root, &buttons, hardware.backend);
    let bluetooth = bluetooth::bluetooth(&mut c, root);

    removed_keys(&mut c, root);
    let lg = root.log.clone().unwrap_or_default();
    let log = Log {
        target: c.copy("log.target", &lg.target, LogTarget::Auto),
        level: c.text("log.level", &lg.level),
    };

    if let Some(error) = ConfigError::from_list(c.errors) {
        return Err(error);
    }
    Ok(Settings {
        station,
        signaling,
        hub,
        call,
        buttons,
        ice,
        audio,
        hardware,
        log,
        door: door_parts.door,
        leds: door_parts.leds,
        inputs: door_parts.inputs,
        gpio: door_parts.gpio,
        bluetooth,
        sources: c.files_read,
    })
}

/// Keys that had no effect and were removed, each with the reason a
/// technician is shown when a file still sets it.
const REMOVED: [(&str, &str); 6] = [
    (
        "ice.candidate_pool_size",
        "the WebRTC stack does not gather candidates ahead of a call; gathering starts when the call does",
    ),
    (
        "ice.backup_ping_interval_ms",
        "the ICE agent keeps only the selected candidate pair alive and pings no backup pairs",
    ),
    (
        "ice.resurface_candidates_on_transport_change",
        "the WebRTC stack has no transport change to react to; an ICE restart (see ice.receiving_timeout_ms) gathers candidates again",
    ),
    (
        "audio.transient_suppression",
        "the audio processing has no transient suppressor",
    ),
    (
        "audio.mirroring",
        "the station never plays its captured audio back locally",
    ),
    (
        "audio.force_enable_track",
        "the outgoing audio track is always enabled when it is created",
    ),
];

/// A file that still sets a removed key gets an error naming it and why.
fn removed_keys(c: &mut Check, root: &frag::Root) {
    let ice = root.ice.clone().unwrap_or_default();
    let audio = root.audio.clone().unwrap_or_default();
    let set = [
        &ice.candidate_pool_size,
        &ice.backup_ping_interval_ms,
        &ice.resurface_candidates_on_transport_change,
        &audio.transient_suppression,
        &audio.mirroring,
        &audio.force_enable_track,
    ];
    for ((key, why), value) in REMOVED.iter().zip(set) {
        if let Some(v) = value {
            c.errors.push(ConfigError::Removed {
                at: v.at.clone(),
                key: (*key).to_owned(),
                why: (*why).to_owned(),
            });
        }
    }
}

fn signaling(c: &mut Check, s: &frag::Signaling) -> Signaling {
    let mode = c.copy("signaling.mode", &s.mode, SignalingMode::Standalone);
    let remote = mode != SignalingMode::Standalone;
    let mode_at = s.mode.as_ref().map(|m| m.at.clone());
    let why = |what: &str| match &mode_at {
        Some(at) => format!(
            "signaling.mode = \"{}\" at {at} needs {what}",
            mode.as_str()
        ),
        None => format!("signaling.mode = \"{}\" needs {what}", mode.as_str()),
    };

    let url = signaling_url(c, s, remote, mode_at.as_ref(), &why);
    let allow_insecure_ws = c.bool("signaling.allow_insecure_ws", &s.allow_insecure_ws);
    check_clear_ws(c, s, remote, allow_insecure_ws);
    let errors_before = c.errors.len();
    let token = c.secret("signaling.token", &s.token_file, &s.token_credential);
    // A token that is set but unusable has been reported already.
    if remote && token.is_none() && c.errors.len() == errors_before {
        c.missing(
            "signaling.token_file",
            why("a token (`signaling.token_file`, or `signaling.token_credential` for a systemd credential)"),
            mode_at.as_ref(),
        );
    }

    let reconnect_initial = c.millis("signaling.reconnect_initial_ms", &s.reconnect_initial_ms);
    let reconnect_max = c.millis("signaling.reconnect_max_ms", &s.reconnect_max_ms);
    if let (Some(i), Some(m)) = (&s.reconnect_initial_ms, &s.reconnect_max_ms)
        && i.value > m.value
    {
        let at = c.later(i, m);
        c.invalid(
            &at.at,
            if std::ptr::eq(at, i) {
                "signaling.reconnect_initial_ms"
            } else {
                "signaling.reconnect_max_ms"
            },
            format!(
                "reconnect_initial_ms ({} at {}) must not exceed reconnect_max_ms ({} at {})",
                i.value, i.at, m.value, m.at
            ),
        );
    }

    let reconnect_jitter = reconnect_jitter(c, s);

    let keepalive_interval = c.millis("signaling.keepalive_interval_ms", &s.keepalive_interval_ms);
    let dead_peer_timeout = c.millis("signaling.dead_peer_timeout_ms", &s.dead_peer_timeout_ms);
    if let (Some(k), Some(d)) = (&s.keepalive_interval_ms, &s.dead_peer_timeout_ms)
        && d.value <= k.value
    {
        let at = c.later(d, k);
        c.invalid(
                &at.at,
                if std::ptr::eq(at, d) { "signaling.dead_peer_timeout_ms" } else { "signaling.keepalive_interval_ms" },
                format!(
                    "dead_peer_timeout_ms ({} at {}) must be greater than keepalive_interval_ms ({} at {})",
                    d.value, d.at, k.value, k.at
                ),
            );
    }

    let target = match (mode, url, token) {
        (SignalingMode::Standalone, ..) => SignalingTarget::Standalone,
        (mode, Some(url), Some(token)) => {
            let remote = RemoteSignaling {
                url: super::SecretUrl::new(url),
                token,
            };
            match mode {
                SignalingMode::SocketIo => SignalingTarget::SocketIo(remote),
                _ => SignalingTarget::Hub(remote),
            }
        }
        // What is missing has been reported: this value is never returned.
        _ => SignalingTarget::Standalone,
    };
    Signaling {
        target,
        reconnect_initial,
        reconnect_max,
        reconnect_jitter,
        connect_timeout: c.millis("signaling.connect_timeout_ms", &s.connect_timeout_ms),
        keepalive_interval,
        dead_peer_timeout,
        // The range keeps the value within usize on every target.
        max_message_bytes: c.int(
            "signaling.max_message_bytes",
            &s.max_message_bytes,
            1024..=16 << 20,
        ) as usize,
        ca_file: optional_path(&s.ca_file),
        allow_insecure_ws,
        socketio: socketio(c, s.socketio.as_ref()),
    }
}

/// `signaling.url`: a ws:// or wss:// URL, needed unless standalone.
fn signaling_url(
    c: &mut Check,
    s: &frag::Signaling,
    remote: bool,
    mode_at: Option<&Location>,
    why: &impl Fn(&str) -> String,
) -> Option<String> {
    match s.url.as_ref().filter(|u| !u.value.is_empty()) {
        Some(u) => {
            let rest = u
                .value
                .strip_prefix("ws://")
                .or_else(|| u.value.strip_prefix("wss://"));
            let host = rest.map(|r| r.split(['/', '?']).next().unwrap_or(""));
            if host.is_none_or(str::is_empty) || u.value.chars().any(char::is_whitespace) {
                c.invalid(
                    &u.at,
                    "signaling.url",
                    format!(
                        "{:?} is not a ws:// or wss:// URL (e.g. \"wss://hub.example.org/ws\")",
                        u.value
                    ),
                );
            }
            Some(u.value.clone())
        }
        None => {
            if remote {
                c.missing(
                    "signaling.url",
                    why("the server's ws:// or wss:// URL"),
                    mode_at,
                );
            }
            None
        }
    }
}

/// A token in clear to another machine is refused unless allowed.
fn check_clear_ws(c: &mut Check, s: &frag::Signaling, remote: bool, allow_insecure_ws: bool) {
    if let Some(u) = s.url.as_ref().filter(|_| remote && !allow_insecure_ws)
        && let Some(rest) = u.value.strip_prefix("ws://")
    {
        let host = url_host(rest);
        if !host.is_empty() && !is_loopback_host(host) {
            c.invalid(
                &u.at,
                "signaling.url",
                format!(
                    "ws:// to {host} would send this station's token and TURN credentials in clear: use wss:// (or set signaling.allow_insecure_ws = true for a trusted network)"
                ),
            );
        }
    }
}

fn reconnect_jitter(c: &mut Check, s: &frag::Signaling) -> f64 {
    match c.get("signaling.reconnect_jitter", &s.reconnect_jitter) {
        Some(j) if (0.0..=1.0).contains(&j.value) => j.value,
        Some(j) => {
            c.invalid(
                &j.at,
                "signaling.reconnect_jitter",
                format!("{} is outside 0.0..=1.0", j.value),
            );
            0.0
        }
        None => 0.0,
    }
}

fn socketio(c: &mut Check, s: Option<&frag::SocketIo>) -> SocketIo {
    let default = frag::SocketIo::default();
    let s = s.unwrap_or(&default);
    let namespace = match &s.namespace {
        Some(ns)
            if ns.value == "/"
                || (ns.value.starts_with('/') && !ns.value.contains([',', '?', ' '])) =>
        {
            ns.value.clone()
        }
        Some(ns) => {
            c.invalid(
                &ns.at,
                "signaling.socketio.namespace",
                format!(
                    "{:?} is not a namespace (\"/\" or \"/name\", no commas or spaces)",
                    ns.value
                ),
            );
            "/".into()
        }
        None => "/".into(),
    };
    let auth_field = match &s.auth_field {
        Some(f) if !f.value.trim().is_empty() => f.value.clone(),
        Some(f) => {
            c.invalid(&f.at, "signaling.socketio.auth_field", "must not be empty");
            "token".into()
        }
        None => "token".into(),
    };
    let e = s.events.clone().unwrap_or_default();
    let pairs: [(&str, &Option<Val<String>>); 18] = [
        ("welcome", &e.welcome),
        ("register", &e.register),
        ("registered", &e.registered),
        ("resume", &e.resume),
        ("resumed", &e.resumed),
        ("ring", &e.ring),
        ("ringing", &e.ringing),
        ("accept", &e.accept),
        ("decline", &e.decline),
        ("accepted", &e.accepted),
        ("taken", &e.taken),
        ("declined", &e.declined),
        ("cancel", &e.cancel),
        ("offer", &e.offer),
        ("answer", &e.answer),
        ("candidate", &e.candidate),
        ("hangup", &e.hangup),
        ("error", &e.error),
    ];
    let mut events = std::collections::BTreeMap::new();
    let mut seen: Vec<(String, Location)> = Vec::new();
    for (kind, v) in pairs {
        let name = match v {
            Some(v) if v.value.trim().is_empty() => {
                c.invalid(
                    &v.at,
                    &format!("signaling.socketio.events.{kind}"),
                    "must not be empty",
                );
                kind.to_string()
            }
            Some(v) => {
                if let Some((_, first)) = seen.iter().find(|(n, _)| *n == v.value) {
                    c.invalid(
                        &v.at,
                        &format!("signaling.socketio.events.{kind}"),
                        format!("event name `{}` is already used at {first}", v.value),
                    );
                }
                seen.push((v.value.clone(), v.at.clone()));
                v.value.clone()
            }
            None => kind.to_string(),
        };
        events.insert(kind.to_string(), name);
    }
    SocketIo {
        namespace,
        auth_field,
        events,
    }
}

fn hub(c: &mut Check, h: &frag::Hub) -> Hub {
    let listen = c
        .get("hub.listen", &h.listen)
        .and_then(|v| c.socket_addr("hub.listen", v))
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut ids = SeenIds::default();
    let mut seen_tokens = SeenTokens::new();
    let (doors, door_groups) = hub_doors(c, h, &mut ids, &mut seen_tokens);
    let answerers = hub_answerers(c, h, &mut ids, &mut seen_tokens);
    groups_answered(c, door_groups, &answerers);

    let loopback_listen = optional_addr(c, "hub.loopback_listen", &h.loopback_listen);
    if let (Some(a), Some(v)) = (loopback_listen, &h.loopback_listen)
        && !a.ip().is_loopback()
    {
        c.invalid(
            &v.at,
            "hub.loopback_listen",
            format!("{a} is not a loopback address: plain HTTP beyond this machine gives phones no microphone and carries tokens in clear (use 127.0.0.1:<port>)"),
        );
    }
    let tls_mode = c.copy(
        "hub.tls.mode",
        &h.tls.as_ref().and_then(|t| t.mode.clone()),
        TlsMode::Off,
    );
    let redirect_listen = optional_addr(c, "hub.redirect_listen", &h.redirect_listen);
    if let (Some(_), Some(v), TlsMode::Off) = (redirect_listen, &h.redirect_listen, tls_mode) {
        c.invalid(
            &v.at,
            "hub.redirect_listen",
            "redirects to HTTPS, but hub.tls.mode is \"off\"",
        );
    }
    let state_dir = PathBuf::from(c.text("hub.state_dir", &h.state_dir));
    let tls = hub_tls(c, tls_mode, h.tls.as_ref());
    let push = hub_push(c, h);
    Hub {
        listen,
        loopback_listen,
        redirect_listen,
        state_dir,
        tls,
        ping_interval: c.millis("hub.ping_interval_ms", &h.ping_interval_ms),
        hello_timeout: c.millis("hub.hello_timeout_ms", &h.hello_timeout_ms),
        conn: hub_conn(c, h),
        public_url: public_url(c, &h.public_url),
        doors,
        answerers,
        push,
    }
}

/// The ids of hub members seen so far: each may be used once.
#[derive(Default)]
struct SeenIds(Vec<(String, Location)>);

impl SeenIds {
    fn unique(&mut self, c: &mut Check, key: &str, id: &Val<String>) {
        if let Some((_, first)) = self.0.iter().find(|(s, _)| *s == id.value) {
            c.invalid(
                &id.at,
                key,
                format!("id `{}` is already used at {first}", id.value),
            );
        } else {
            self.0.push((id.value.clone(), id.at.clone()));
        }
    }
}

/// `[[hub.doors]]`, and each group they ring with its key.
fn hub_doors(
    c: &mut Check,
    h: &frag::Hub,
    ids: &mut SeenIds,
    seen_tokens: &mut SeenTokens,
) -> (Vec<Door>, Vec<(String, Val<String>)>) {
    let mut doors = Vec::new();
    let mut door_groups = Vec::new();
    for (i, d) in h.doors.iter().flat_map(|d| d.value.iter()).enumerate() {
        let key = format!("hub.doors[{i}]");
        let (id, name) = member(c, &key, d, &d.value.id, &d.value.name);
        if let Some(v) = &d.value.id {
            ids.unique(c, &format!("{key}.id"), v);
        }
        let token = member_token(c, &key, d, &d.value.token_file, &d.value.token_credential);
        check_member_token(
            c,
            &key,
            &token,
            &d.value.token_file,
            &d.value.token_credential,
            seen_tokens,
        );
        let why = format!(
            "the door at {} must name the ring groups it may ring, e.g. groups = [\"residents\"]",
            d.at
        );
        let groups = member_groups(c, &key, &d.value.groups, why, &d.at);
        door_groups.extend(
            d.value
                .groups
                .iter()
                .flat_map(|l| l.value.iter())
                .enumerate()
                .map(|(j, g)| (format!("{key}.groups[{j}]"), g.clone())),
        );
        doors.push(Door {
            id,
            name,
            token,
            groups,
        });
    }
    (doors, door_groups)
}

/// `[[hub.answerers]]`.
fn hub_answerers(
    c: &mut Check,
    h: &frag::Hub,
    ids: &mut SeenIds,
    seen_tokens: &mut SeenTokens,
) -> Vec<Answerer> {
    let mut answerers = Vec::new();
    for (i, a) in h.answerers.iter().flat_map(|a| a.value.iter()).enumerate() {
        let key = format!("hub.answerers[{i}]");
        let (id, name) = member(c, &key, a, &a.value.id, &a.value.name);
        if let Some(v) = &a.value.id {
            ids.unique(c, &format!("{key}.id"), v);
        }
        let token = member_token(c, &key, a, &a.value.token_file, &a.value.token_credential);
        check_member_token(
            c,
            &key,
            &token,
            &a.value.token_file,
            &a.value.token_credential,
            seen_tokens,
        );
        let why = format!("the answerer at {} must belong to at least one group", a.at);
        let groups = member_groups(c, &key, &a.value.groups, why, &a.at);
        let quiet_hours = quiet_hours(c, &key, a);
        answerers.push(Answerer {
            id,
            name,
            token,
            groups,
            call_door: a.value.call_door.as_ref().is_some_and(|v| v.value),
            quiet_hours,
        });
    }
    answerers
}

/// An answerer's `quiet_hours`, each window checked on its own.
fn quiet_hours(c: &mut Check, key: &str, a: &Val<frag::Answerer>) -> crate::hub::quiet::QuietHours {
    let mut specs = Vec::new();
    for (j, w) in a
        .value
        .quiet_hours
        .iter()
        .flat_map(|l| l.value.iter())
        .enumerate()
    {
        match crate::hub::quiet::QuietHours::parse(std::slice::from_ref(&w.value)) {
            Ok(_) => specs.push(w.value.clone()),
            Err((_, e)) => c.invalid(&w.at, &format!("{key}.quiet_hours[{j}]"), e.to_string()),
        }
    }
    crate::hub::quiet::QuietHours::parse(&specs).unwrap_or_default()
}

/// A door's group nobody answers would ring nobody.
fn groups_answered(c: &mut Check, door_groups: Vec<(String, Val<String>)>, answerers: &[Answerer]) {
    for (key, g) in door_groups {
        if !answerers.is_empty() && !answerers.iter().any(|a| a.groups.contains(&g.value)) {
            c.invalid(
                &g.at,
                &key,
                format!(
                    "no [[hub.answerers]] entry has group `{}` in its `groups`",
                    g.value
                ),
            );
        }
    }
}

/// `[hub.push]`.
fn hub_push(c: &mut Check, h: &frag::Hub) -> HubPush {
    let p = h.push.clone().unwrap_or_default();
    let subject = p
        .subject
        .as_ref()
        .map(|v| v.value.trim().to_owned())
        .filter(|v| !v.is_empty());
    if let (Some(s), Some(v)) = (&subject, &p.subject)
        && !(s.starts_with("mailto:") || s.starts_with("https://"))
    {
        c.invalid(
            &v.at,
            "hub.push.subject",
            format!("{s:?} must be a mailto: or https: URL (e.g. \"mailto:admin@example.net\"), or \"\" for the default"),
        );
    }
    HubPush {
        enabled: c.copy("hub.push.enabled", &p.enabled, true),
        subject,
        ca_file: optional_path(&p.ca_file),
    }
}

/// `[hub.tls]` into where the certificate comes from.
fn hub_tls(
    c: &mut Check,
    mode: TlsMode,
    t: Option<&frag::HubTls>,
) -> Option<crate::hub::tls::TlsSource> {
    use crate::hub::tls::TlsSource;
    let empty = frag::HubTls::default();
    let t = t.unwrap_or(&empty);
    let mode_at = t.mode.as_ref().map(|m| m.at.clone());
    let why = |what: &str| match &mode_at {
        Some(at) => format!("hub.tls.mode = \"{}\" at {at} needs {what}", mode.as_str()),
        None => format!("hub.tls.mode = \"{}\" needs {what}", mode.as_str()),
    };
    match mode {
        TlsMode::Off => None,
        TlsMode::SelfSigned => {
            let mut extra_names = Vec::new();
            for (i, n) in t.names.iter().flat_map(|l| l.value.iter()).enumerate() {
                if n.value.is_empty() || n.value.chars().any(|ch| ch.is_whitespace() || ch == '/') {
                    c.invalid(
                        &n.at,
                        &format!("hub.tls.names[{i}]"),
                        format!("{:?} is not a host name or address", n.value),
                    );
                }
                extra_names.push(n.value.clone());
            }
            Some(TlsSource::SelfSigned { extra_names })
        }
        TlsMode::Files => {
            let cert = optional_path(&t.cert_file);
            let key = optional_path(&t.key_file);
            if cert.is_none() {
                c.missing(
                    "hub.tls.cert_file",
                    why("the certificate chain (PEM)"),
                    mode_at.as_ref(),
                );
            }
            if key.is_none() {
                c.missing(
                    "hub.tls.key_file",
                    why("the private key (PEM)"),
                    mode_at.as_ref(),
                );
            }
            let reload_check = c.millis("hub.tls.reload_check_ms", &t.reload_check_ms);
            Some(TlsSource::Files {
                cert: cert.unwrap_or_default(),
                key: key.unwrap_or_default(),
                reload_check,
            })
        }
        TlsMode::Acme => Some(TlsSource::Acme(hub_tls_acme(c, t, mode_at.as_ref(), &why))),
    }
}

/// `[hub.tls.acme]`.
fn hub_tls_acme(
    c: &mut Check,
    t: &frag::HubTls,
    mode_at: Option<&Location>,
    why: &impl Fn(&str) -> String,
) -> crate::hub::acme::AcmeSettings {
    use crate::hub::acme::AcmeSettings;
    let a_empty = frag::HubTlsAcme::default();
    let a = t.acme.as_ref().unwrap_or(&a_empty);
    let directory_url = c.text("hub.tls.acme.directory_url", &a.directory_url);
    if let Some(v) = &a.directory_url
        && !v.value.starts_with("https://")
    {
        c.invalid(
            &v.at,
            "hub.tls.acme.directory_url",
            format!("{:?} is not an https:// URL", v.value),
        );
    }
    let mut domains = Vec::new();
    for (i, d) in a.domains.iter().flat_map(|l| l.value.iter()).enumerate() {
        let ok = !d.value.is_empty()
            && d.value.parse::<IpAddr>().is_err()
            && d.value.split('.').count() >= 2
            && d.value
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.');
        if !ok {
            c.invalid(
                &d.at,
                &format!("hub.tls.acme.domains[{i}]"),
                format!(
                    "{:?} is not a DNS name (ACME certifies names, e.g. \"door.example.net\")",
                    d.value
                ),
            );
        }
        domains.push(d.value.to_ascii_lowercase());
    }
    if domains.is_empty() {
        c.missing(
            "hub.tls.acme.domains",
            why("the hub's public DNS name(s)"),
            mode_at,
        );
    }
    let mut contact = Vec::new();
    for (i, m) in a.contact.iter().flat_map(|l| l.value.iter()).enumerate() {
        if !m.value.starts_with("mailto:") {
            c.invalid(
                &m.at,
                &format!("hub.tls.acme.contact[{i}]"),
                format!("{:?} must be a mailto: address", m.value),
            );
        }
        contact.push(m.value.clone());
    }
    let days = c.int(
        "hub.tls.acme.renew_before_days",
        &a.renew_before_days,
        1..=365,
    );
    AcmeSettings {
        directory_url,
        domains,
        contact,
        ca_file: optional_path(&a.ca_file),
        renew_before: Duration::from_secs(days * 86400),
        check_interval: c.millis("hub.tls.acme.check_interval_ms", &a.check_interval_ms),
    }
}

/// A path key where `""` means unset.
fn optional_path(v: &Option<Val<String>>) -> Option<PathBuf> {
    v.as_ref()
        .filter(|v| !v.value.is_empty())
        .map(|v| PathBuf::from(&v.value))
}

/// A socket address key where `""` means unset.
fn optional_addr(c: &mut Check, key: &str, v: &Option<Val<String>>) -> Option<SocketAddr> {
    v.as_ref()
        .filter(|v| !v.value.is_empty())
        .and_then(|v| c.socket_addr(key, v))
}

/// The host of `host[:port]/path` (user information and brackets removed).
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The hub's connection timeouts, caps and extra origins.
fn hub_conn(c: &mut Check, h: &frag::Hub) -> HubConn {
    let idle_timeout = c.millis("hub.idle_timeout_ms", &h.idle_timeout_ms);
    // Read directly: hub.ping_interval_ms is checked where it is kept.
    let ping = Duration::from_millis(h.ping_interval_ms.as_ref().map_or(0, |v| v.value));
    if let Some(v) = &h.idle_timeout_ms
        && idle_timeout <= ping
    {
        c.invalid(
            &v.at,
            "hub.idle_timeout_ms",
            format!(
                "{} must exceed hub.ping_interval_ms ({}): a quiet resident's WebSocket would be closed between two pings",
                v.value,
                ping.as_millis()
            ),
        );
    }
    let max_connections = c.int("hub.max_connections", &h.max_connections, 8..=65536) as usize;
    let per_address = c.int(
        "hub.max_connections_per_address",
        &h.max_connections_per_address,
        1..=65536,
    ) as usize;
    if let Some(v) = &h.max_connections_per_address
        && per_address > max_connections
    {
        c.invalid(
            &v.at,
            "hub.max_connections_per_address",
            format!("{per_address} exceeds hub.max_connections ({max_connections})"),
        );
    }
    let mut allowed_origins = Vec::new();
    for (i, o) in h
        .allowed_origins
        .iter()
        .flat_map(|l| l.value.iter())
        .enumerate()
    {
        match crate::hub::conn::parse_origin(&o.value) {
            Some(origin) => allowed_origins.push(origin),
            None => c.invalid(
                &o.at,
                &format!("hub.allowed_origins[{i}]"),
                format!(
                    "{:?} is not an origin: scheme://host[:port] without a path (e.g. \"https://intercom.example.net\")",
                    o.value
                ),
            ),
        }
    }
    HubConn {
        header_read_timeout: c.millis("hub.header_read_timeout_ms", &h.header_read_timeout_ms),
        idle_timeout,
        max_connections,
        max_connections_per_address: per_address,
        allowed_origins,
    }
}

/// `hub.public_url`: optional (empty is unset), an https:// URL with a host.
fn public_url(c: &mut Check, v: &Option<Val<String>>) -> Option<String> {
    let u = v.as_ref().filter(|u| !u.value.is_empty())?;
    let host = u
        .value
        .strip_prefix("https://")
        .map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    let bad_char = u
        .value
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control() || matches!(ch, '"' | '<' | '>' | '\\'));
    if host.is_none_or(|h| h.is_empty() || h.starts_with(':')) || bad_char {
        c.invalid(
            &u.at,
            "hub.public_url",
            format!(
                "{:?} is not an https:// URL (e.g. \"https://door.example.net:8443/\")",
                u.value
            ),
        );
        return None;
    }
    Some(u.value.clone())
}

/// `id` (required) and `name` (defaults to the id) of a door or answerer.
fn member<T>(
    c: &mut Check,
    key: &str,
    entry: &Val<T>,
    id: &Option<Val<String>>,
    name: &Option<Val<String>>,
) -> (String, String) {
    let id = match id {
        Some(v) => {
            c.check_id(&v.at, &format!("{key}.id"), &v.value);
            v.value.clone()
        }
        None => {
            c.missing(
                &format!("{key}.id"),
                format!("the entry at {} has no id", entry.at),
                Some(&entry.at),
            );
            String::new()
        }
    };
    let name = name
        .as_ref()
        .map(|n| n.value.clone())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| id.clone());
    (id, name)
}

/// Hub tokens read so far in validation: digest, dotted key and place, to
/// find two members sharing one.
type SeenTokens = Vec<([u8; 32], String, Location)>;

/// Reads a hub member's token when it can be read now (a missing file or
/// credential is reported when the hub starts) and checks its strength and
/// that no other member has it.
fn check_member_token(
    c: &mut Check,
    key: &str,
    source: &SecretSource,
    file: &Option<Val<String>>,
    credential: &Option<Val<String>>,
    seen: &mut SeenTokens,
) {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let Ok(path) = source.path(dir.as_deref()) else {
        return;
    };
    if !path.is_file() {
        return;
    }
    let (which, at) = match (file, credential) {
        (Some(f), _) if !f.value.is_empty() => (format!("{key}.token_file"), f.at.clone()),
        (_, Some(cr)) => (format!("{key}.token_credential"), cr.at.clone()),
        _ => return,
    };
    // A token is one short line; a large file is a wrong path, not read.
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    if size > 4096 {
        c.invalid(
            &at,
            &which,
            format!(
                "{} is {size} bytes: a token file holds one line",
                path.display()
            ),
        );
        return;
    }
    let token = match super::secret::read_secret_in(source, dir.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            c.invalid(&at, &which, e.to_string());
            return;
        }
    };
    if let Err(why) = super::secret::check_token_strength(token.expose()) {
        c.invalid(&at, &which, format!("{}: {why}", path.display()));
    }
    let digest = crate::hub::guard::token_digest(token.expose());
    if let Some((_, other, other_at)) = seen.iter().find(|(d, ..)| *d == digest) {
        c.invalid(
            &at,
            &which,
            format!(
                "{} holds the same token as `{other}` ({other_at}): each door and answerer needs its own",
                path.display()
            ),
        );
    } else {
        seen.push((digest, which, at));
    }
}

/// A member's `groups`: required, each a valid id.
fn member_groups(
    c: &mut Check,
    key: &str,
    list: &Option<Val<Vec<Val<String>>>>,
    why_missing: String,
    at: &Location,
) -> Vec<String> {
    let Some(list) = list else {
        c.missing(&format!("{key}.groups"), why_missing, Some(at));
        return Vec::new();
    };
    for (j, g) in list.value.iter().enumerate() {
        c.check_id(&g.at, &format!("{key}.groups[{j}]"), &g.value);
    }
    list.value.iter().map(|g| g.value.clone()).collect()
}

fn member_token<T>(
    c: &mut Check,
    key: &str,
    entry: &Val<T>,
    file: &Option<Val<String>>,
    credential: &Option<Val<String>>,
) -> SecretSource {
    let errors_before = c.errors.len();
    match c.secret(&format!("{key}.token"), file, credential) {
        Some(token) => token,
        None => {
            if c.errors.len() == errors_before {
                c.missing(
                    &format!("{key}.token_file"),
                    format!(
                        "the entry at {} needs a token (`token_file`, or `token_credential` for a systemd credential)",
                        entry.at
                    ),
                    Some(&entry.at),
                );
            }
            SecretSource::File(PathBuf::new())
        }
    }
}

fn buttons(
    c: &mut Check,
    list: Option<&Val<Vec<Val<frag::Button>>>>,
    answerers: &[Answerer],
) -> Vec<Button> {
    let Some(list) = list else {
        c.missing("buttons", "at least one [[buttons]] entry is needed", None);
        return Vec::new();
    };
    if list.value.is_empty() {
        c.invalid(
            &list.at,
            "buttons",
            "at least one [[buttons]] entry is needed",
        );
    }
    let mut out: Vec<Button> = Vec::new();
    for (i, b) in list.value.iter().enumerate() {
        let key = format!("buttons[{i}]");
        let name = match &b.value.name {
            Some(n) => {
                c.check_id(&n.at, &format!("{key}.name"), &n.value);
                if out.iter().any(|o| o.name == n.value) {
                    c.invalid(
                        &n.at,
                        &format!("{key}.name"),
                        format!("button name `{}` is used twice", n.value),
                    );
                }
                n.value.clone()
            }
            None => {
                c.missing(
                    &format!("{key}.name"),
                    format!("the button at {} has no name", b.at),
                    Some(&b.at),
                );
                String::new()
            }
        };
        let group = match &b.value.group {
            Some(g) => {
                c.check_id(&g.at, &format!("{key}.group"), &g.value);
                // Only checkable when answerers are listed here; with an
                // external hub the answerers live in the hub's configuration.
                if !answerers.is_empty() && !answerers.iter().any(|a| a.groups.contains(&g.value)) {
                    c.invalid(
                        &g.at,
                        &format!("{key}.group"),
                        format!(
                            "no [[hub.answerers]] entry has group `{}` in its `groups`",
                            g.value
                        ),
                    );
                }
                g.value.clone()
            }
            None => {
                c.missing(
                    &format!("{key}.group"),
                    format!("the button at {} rings no group", b.at),
                    Some(&b.at),
                );
                String::new()
            }
        };
        out.push(Button { name, group });
    }
    out
}

fn ice(c: &mut Check, i: &frag::Ice) -> Ice {
    let mut bind_ips = Vec::new();
    if let Some(list) = c.get("ice.bind_ips", &i.bind_ips) {
        for (j, ip) in list.value.iter().enumerate() {
            match ip.value.parse::<IpAddr>() {
                Ok(addr) => bind_ips.push(addr),
                Err(_) => c.invalid(
                    &ip.at,
                    &format!("ice.bind_ips[{j}]"),
                    format!("{:?} is not an IP address", ip.value),
                ),
            }
        }
    }

    let mut servers = Vec::new();
    let mut any_turn = false;
    for (j, s) in c
        .get("ice.servers", &i.servers)
        .iter()
        .flat_map(|l| l.value.iter())
        .enumerate()
    {
        let key = format!("ice.servers[{j}]");
        let (server, turn) = ice_server(c, &key, s);
        any_turn |= turn;
        servers.push(server);
    }

    let transport_policy = c.copy(
        "ice.transport_policy",
        &i.transport_policy,
        IceTransportPolicy::All,
    );
    if let (IceTransportPolicy::Relay, false, Some(p)) =
        (transport_policy, any_turn, &i.transport_policy)
    {
        c.invalid(
            &p.at,
            "ice.transport_policy",
            "\"relay\" needs at least one turn: or turns: server in [[ice.servers]]",
        );
    }

    Ice {
        receiving_timeout: c.millis("ice.receiving_timeout_ms", &i.receiving_timeout_ms),
        dscp: c.bool("ice.dscp", &i.dscp),
        check_interval: c.millis("ice.check_interval_ms", &i.check_interval_ms),
        mdns: c.copy("ice.mdns", &i.mdns, MdnsMode::Disabled),
        transport_policy,
        bind_ips,
        turn_ca_file: i
            .turn_ca_file
            .as_ref()
            .filter(|v| !v.value.is_empty())
            .map(|v| PathBuf::from(&v.value)),
        offer_dtls_client: c.bool("ice.offer_dtls_client", &i.offer_dtls_client),
        dtls_timeout: c.millis("ice.dtls_timeout_ms", &i.dtls_timeout_ms),
        max_restarts: c.int("ice.max_restarts", &i.max_restarts, 0..=10) as u32,
        servers,
    }
}

/// One `[[ice.servers]]` entry, and whether it is a TURN server.
fn ice_server(c: &mut Check, key: &str, s: &Val<frag::IceServer>) -> (IceServer, bool) {
    let (urls, turn) = ice_urls(c, key, s);
    let username = s
        .value
        .username
        .as_ref()
        .filter(|u| !u.value.is_empty())
        .map(|u| u.value.clone());
    let credential = c.secret(
        &format!("{key}.credential"),
        &s.value.credential_file,
        &s.value.credential_credential,
    );
    let shared_secret = c.secret(
        &format!("{key}.secret"),
        &s.value.secret_file,
        &s.value.secret_credential,
    );
    let has_secret = shared_secret.is_some()
        || s.value.secret_file.is_some()
        || s.value.secret_credential.is_some();
    let credential_ttl = credential_ttl(c, key, s);
    if has_secret && (username.is_some() || credential.is_some()) {
        let at = s
            .value
            .username
            .as_ref()
            .map(|v| v.at.clone())
            .unwrap_or_else(|| s.at.clone());
        c.invalid(
            &at,
            &format!("{key}.username"),
            "set either `username` with `credential_file` (long-term credentials) or `secret_file` (shared-secret credentials), not both",
        );
    }
    if turn && !has_secret {
        if username.is_none() {
            c.missing(
                &format!("{key}.username"),
                format!("the TURN server at {} needs a username", s.at),
                Some(&s.at),
            );
        }
        if credential.is_none()
            && s.value.credential_file.is_none()
            && s.value.credential_credential.is_none()
        {
            c.missing(
                &format!("{key}.credential_file"),
                format!(
                    "the TURN server at {} needs a credential (`credential_file`, or `credential_credential` for a systemd credential)",
                    s.at
                ),
                Some(&s.at),
            );
        }
    }
    let auth = match (shared_secret, username, credential) {
        (Some(secret), _, _) => IceServerAuth::SharedSecret {
            secret,
            ttl: credential_ttl,
        },
        (None, Some(username), Some(credential)) => IceServerAuth::LongTerm {
            username,
            credential,
        },
        // A TURN server without them has been reported; STUN needs none.
        _ => IceServerAuth::None,
    };
    let server = IceServer { urls, auth };
    (server, turn)
}

/// An ICE server's `urls`, and whether one of them is TURN.
fn ice_urls(c: &mut Check, key: &str, s: &Val<frag::IceServer>) -> (Vec<String>, bool) {
    let mut urls = Vec::new();
    let mut turn = false;
    match &s.value.urls {
        Some(list) if !list.value.is_empty() => {
            for (k, u) in list.value.iter().enumerate() {
                let scheme = u.value.split_once(':');
                match scheme {
                    Some(("stun" | "stuns", rest)) if !rest.is_empty() => {}
                    Some(("turn" | "turns", rest)) if !rest.is_empty() => turn = true,
                    _ => c.invalid(
                        &u.at,
                        &format!("{key}.urls[{k}]"),
                        format!(
                            "{:?} must start with stun:, stuns:, turn: or turns: (e.g. \"turn:turn.example.org:443?transport=tcp\")",
                            u.value
                        ),
                    ),
                }
                urls.push(u.value.clone());
            }
        }
        Some(list) => c.invalid(
            &list.at,
            &format!("{key}.urls"),
            "must list at least one URL",
        ),
        None => c.missing(
            &format!("{key}.urls"),
            format!("the ICE server at {} has no URL", s.at),
            Some(&s.at),
        ),
    }
    (urls, turn)
}

fn credential_ttl(c: &mut Check, key: &str, s: &Val<frag::IceServer>) -> Duration {
    match &s.value.credential_ttl_s {
        Some(v) if v.value == 0 || v.value > 30 * 86_400 => {
            c.invalid(
                &v.at,
                &format!("{key}.credential_ttl_s"),
                format!("{} must be between 1 and 2592000 (30 days)", v.value),
            );
            Duration::from_secs(86_400)
        }
        Some(v) => Duration::from_secs(v.value),
        None => Duration::from_secs(86_400),
    }
}

fn audio(c: &mut Check, a: &frag::Audio) -> Audio {
    let o = a.opus.clone().unwrap_or_default();
    let frame = match c.get("audio.opus.frame_ms", &o.frame_ms) {
        Some(f) if [5, 10, 20, 40, 60].contains(&f.value) => Duration::from_millis(f.value),
        Some(f) => {
            c.invalid(
                &f.at,
                "audio.opus.frame_ms",
                format!(
                    "{} is not an Opus frame size (5, 10, 20, 40 or 60)",
                    f.value
                ),
            );
            NEVER
        }
        None => NEVER,
    };
    let opus = Opus {
        // The ranges keep the values within u32 and u8.
        bitrate: c.int("audio.opus.bitrate", &o.bitrate, 6_000..=510_000) as u32,
        complexity: c.int("audio.opus.complexity", &o.complexity, 0..=10) as u8,
        fec: c.bool("audio.opus.fec", &o.fec),
        frame,
    };

    let s = a.sim.clone().unwrap_or_default();
    let source = match c.get("audio.sim.source", &s.source) {
        Some(v) => match parse_sim_source(&v.value) {
            Ok(source) => source,
            Err(reason) => {
                c.invalid(&v.at, "audio.sim.source", reason);
                SimSource::Silence
            }
        },
        None => SimSource::Silence,
    };
    let record_file = s
        .record_file
        .as_ref()
        .filter(|v| !v.value.is_empty())
        .map(|v| PathBuf::from(&v.value));

    let echo_path = match c.get("audio.sim.echo_path", &s.echo_path) {
        Some(v) if v.value.is_empty() => None,
        Some(v) => match parse_echo_path(&v.value) {
            Ok(p) => Some(p),
            Err(reason) => {
                c.invalid(&v.at, "audio.sim.echo_path", reason);
                None
            }
        },
        None => None,
    };

    let (alsa, processing, tones) = audio_devices(c, a);
    Audio {
        alsa,
        processing,
        tones,
        backend: c.copy("audio.backend", &a.backend, AudioBackend::Sim),
        echo_cancellation: c.bool("audio.echo_cancellation", &a.echo_cancellation),
        auto_gain_control: c.bool("audio.auto_gain_control", &a.auto_gain_control),
        high_pass_filter: c.bool("audio.high_pass_filter", &a.high_pass_filter),
        noise_suppression: c.bool("audio.noise_suppression", &a.noise_suppression),
        opus,
        sim: AudioSim {
            source,
            record_file,
            echo_path,
        },
    }
}

/// `[audio.alsa]`, `[audio.processing]` and `[audio.tones]`.
fn audio_devices(c: &mut Check, a: &frag::Audio) -> (AudioAlsa, AudioProcessing, AudioTones) {
    let alsa = audio_alsa(c, a);

    let processing = audio_processing(c, a);

    let tones = AudioTones::check(c, &a.tones.clone().unwrap_or_default());
    (alsa, processing, tones)
}

/// `[audio.alsa]`.
fn audio_alsa(c: &mut Check, a: &frag::Audio) -> AudioAlsa {
    let al = a.alsa.clone().unwrap_or_default();
    let period = c.int("audio.alsa.period_ms", &al.period_ms, 1..=100);
    let buffer = c.int("audio.alsa.buffer_ms", &al.buffer_ms, 2..=1000);
    if let Some(v) = &al.buffer_ms
        && buffer < 2 * period
    {
        c.invalid(
            &v.at,
            "audio.alsa.buffer_ms",
            format!("{buffer} must be at least two periods ({} ms)", 2 * period),
        );
    }
    let pacing = match c.get("audio.alsa.pacing", &al.pacing) {
        Some(v) => match v.value.as_str() {
            "device" => AlsaPacing::Device,
            "timer" => AlsaPacing::Timer,
            other => {
                c.invalid(
                    &v.at,
                    "audio.alsa.pacing",
                    format!("{other:?} is neither \"device\" nor \"timer\""),
                );
                AlsaPacing::Device
            }
        },
        None => AlsaPacing::Device,
    };
    let control = |c: &mut Check, name: &Option<Val<String>>, pct: &Option<Val<u64>>, key: &str| {
        let pct = c.int(&format!("{key}_volume_pct"), pct, 0..=100) as u8;
        match c.get(&format!("{key}_control"), name) {
            Some(v) if !v.value.is_empty() => Some(MixerControl {
                name: v.value.clone(),
                volume_pct: pct,
            }),
            _ => None,
        }
    };
    AudioAlsa {
        capture_device: c.text("audio.alsa.capture_device", &al.capture_device),
        playback_device: c.text("audio.alsa.playback_device", &al.playback_device),
        period: Duration::from_millis(period),
        buffer: Duration::from_millis(buffer),
        pacing,
        mixer_device: c.text("audio.alsa.mixer_device", &al.mixer_device),
        capture_control: control(
            c,
            &al.capture_control,
            &al.capture_volume_pct,
            "audio.alsa.capture",
        ),
        playback_control: control(
            c,
            &al.playback_control,
            &al.playback_volume_pct,
            "audio.alsa.playback",
        ),
        reopen_initial: c.millis("audio.alsa.reopen_initial_ms", &al.reopen_initial_ms),
        reopen_max: c.millis("audio.alsa.reopen_max_ms", &al.reopen_max_ms),
        realtime_priority: c.int(
            "audio.alsa.realtime_priority",
            &al.realtime_priority,
            0..=99,
        ) as u8,
    }
}

/// `[audio.processing]`.
fn audio_processing(c: &mut Check, a: &frag::Audio) -> AudioProcessing {
    let pr = a.processing.clone().unwrap_or_default();
    let delay = c.int("audio.processing.echo_delay_ms", &pr.echo_delay_ms, 0..=500);
    let level = match c.get(
        "audio.processing.noise_suppression_level",
        &pr.noise_suppression_level,
    ) {
        Some(v) => match v.value.as_str() {
            "low" => NoiseSuppressionLevel::Low,
            "moderate" => NoiseSuppressionLevel::Moderate,
            "high" => NoiseSuppressionLevel::High,
            "very_high" => NoiseSuppressionLevel::VeryHigh,
            other => {
                c.invalid(
                    &v.at,
                    "audio.processing.noise_suppression_level",
                    format!("{other:?} is not low, moderate, high or very_high"),
                );
                NoiseSuppressionLevel::Moderate
            }
        },
        None => NoiseSuppressionLevel::Moderate,
    };
    AudioProcessing {
        echo_delay: (delay > 0).then(|| Duration::from_millis(delay)),
        noise_suppression_level: level,
    }
}

fn parse_echo_path(text: &str) -> Result<SimEchoPath, String> {
    let bad = || {
        format!(
            "{text:?} must be \"<delay_ms>:<gain_db>\" with a delay of 0..=500 ms and a gain of -60..=0 dB, or empty"
        )
    };
    let (d, g) = text.split_once(':').ok_or_else(bad)?;
    let delay_ms: u32 = d.trim().parse().map_err(|_| bad())?;
    let gain_db: i32 = g.trim().parse().map_err(|_| bad())?;
    if delay_ms > 500 || !(-60..=0).contains(&gain_db) {
        return Err(bad());
    }
    Ok(SimEchoPath { delay_ms, gain_db })
}

fn parse_sim_source(text: &str) -> Result<SimSource, String> {
    if text == "silence" {
        return Ok(SimSource::Silence);
    }
    if let Some(hz) = text.strip_prefix("tone:") {
        return match hz.parse::<u32>() {
            Ok(hz) if (20..=20_000).contains(&hz) => Ok(SimSource::Tone { hz }),
            _ => Err(format!(
                "{text:?}: the tone frequency must be a whole number of Hz in 20..=20000"
            )),
        };
    }
    if let Some(path) = text.strip_prefix("wav:").filter(|p| !p.is_empty()) {
        return Ok(SimSource::Wav(PathBuf::from(path)));
    }
    Err(format!(
        "{text:?} must be \"tone:<Hz>\", \"wav:<path>\" or \"silence\""
    ))
}

// ---------------------------------------------------------------------------
// Dump

impl Settings {
    /// The effective configuration as TOML, for `intercomd config dump`.
    /// Secrets are never part of the settings (only where to read them);
    /// the types that may carry one redact themselves when serialised
    /// ([`super::secret::SecretUrl`], [`super::Secret`]). Loading the output
    /// as a fragment gives back the same settings, except for redacted URL
    /// parts.
    pub fn redacted_toml(&self) -> String {
        let mut out = String::from("# Effective intercomd configuration, merged from:\n");
        for source in &self.sources {
            // A line break in a path would end the comment.
            let _ = writeln!(
                out,
                "#   {}",
                source.display().to_string().replace('\n', " ")
            );
        }
        out.push('\n');
        match toml::to_string(self) {
            Ok(text) => out.push_str(&text),
            // Only a path that is not UTF-8 can fail here.
            Err(e) => {
                let _ = writeln!(out, "# cannot be written as TOML: {e}");
            }
        }
        out
    }
}
