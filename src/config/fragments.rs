//! One configuration file as written: every key optional, unknown keys
//! refused, each leaf value remembering the file and line it came from so
//! that errors found after merging still point at the right place.

use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Location};
use super::settings::{
    AudioBackend, AudioTonesFragment, CallFragment, HardwareBackend, IceTransportPolicy, LogTarget,
    MdnsMode, SignalingMode, TlsMode,
};
use crate::door::LockKind;
use crate::door::indication::LedPattern;

/// The text of one fragment and where it came from.
pub(crate) struct Source<'a> {
    pub path: PathBuf,
    pub text: &'a str,
}

impl Source<'_> {
    /// Converts a byte offset into a `path:line` location.
    pub fn location(&self, offset: usize) -> Location {
        let end = offset.min(self.text.len());
        let line = self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        Location::new(self.path.clone(), line)
    }
}

/// A value plus the place it was written.
#[derive(Debug, Clone)]
pub(crate) struct Val<T> {
    pub value: T,
    pub at: Location,
    span: Range<usize>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Val<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<T>::deserialize(deserializer)?;
        let span = spanned.span();
        Ok(Val {
            value: spanned.into_inner(),
            // Filled in by `Node::stamp` once the file is known.
            at: Location::new(PathBuf::new(), 0),
            span,
        })
    }
}

/// The value of a key this version no longer has: any value is read, then
/// refused in validation with the reason it was removed (see
/// `settings::REMOVED`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Removed;

impl<'de> Deserialize<'de> for Removed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(Removed)
    }
}

/// Merging (later fragment wins) and origin stamping, implemented for every
/// piece of a fragment.
pub(crate) trait Node {
    /// Folds a later fragment into this one. Leaves and arrays are replaced
    /// wholesale; tables merge key by key.
    fn merge(&mut self, later: Self);
    /// Records the file and line of every value.
    fn stamp(&mut self, source: &Source<'_>);
}

impl<T: Node> Node for Option<T> {
    fn merge(&mut self, later: Self) {
        match (self.as_mut(), later) {
            (Some(current), Some(later)) => current.merge(later),
            (None, Some(later)) => *self = Some(later),
            (_, None) => {}
        }
    }
    fn stamp(&mut self, source: &Source<'_>) {
        if let Some(inner) = self {
            inner.stamp(source);
        }
    }
}

impl<T: Node> Node for Val<T> {
    fn merge(&mut self, later: Self) {
        *self = later;
    }
    fn stamp(&mut self, source: &Source<'_>) {
        self.at = source.location(self.span.start);
        self.value.stamp(source);
    }
}

impl<T: Node> Node for Vec<T> {
    fn merge(&mut self, later: Self) {
        *self = later;
    }
    fn stamp(&mut self, source: &Source<'_>) {
        for item in self {
            item.stamp(source);
        }
    }
}

macro_rules! leaf {
    ($($ty:ty),* $(,)?) => {$(
        impl Node for $ty {
            fn merge(&mut self, later: Self) {
                *self = later;
            }
            fn stamp(&mut self, _: &Source<'_>) {}
        }
    )*};
}

leaf!(
    String,
    u64,
    f64,
    bool,
    SignalingMode,
    TlsMode,
    MdnsMode,
    IceTransportPolicy,
    AudioBackend,
    HardwareBackend,
    LogTarget,
    LockKind,
    LedPattern,
    Removed,
);

/// Declares a table of the fragment: all keys optional, unknown keys refused.
macro_rules! fragment {
    ($($name:ident { $($field:ident : $ty:ty),* $(,)? })*) => {$(
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            $(pub $field: Option<$ty>,)*
        }

        impl Node for $name {
            fn merge(&mut self, later: Self) {
                $(self.$field.merge(later.$field);)*
            }
            fn stamp(&mut self, source: &Source<'_>) {
                $(self.$field.stamp(source);)*
            }
        }
    )*};
}

fragment! {
    Root {
        station: Station,
        signaling: Signaling,
        hub: Hub,
        call: CallFragment,
        buttons: Val<Vec<Val<Button>>>,
        ice: Ice,
        audio: Audio,
        hardware: Hardware,
        log: Log,
        door: DoorSection,
        leds: Val<Vec<Val<Led>>>,
        inputs: Val<Vec<Val<Input>>>,
        gpio: Gpio,
        bluetooth: Bluetooth,
    }

    Station {
        id: Val<String>,
        name: Val<String>,
        control_socket: Val<String>,
    }

    Signaling {
        mode: Val<SignalingMode>,
        url: Val<String>,
        token_file: Val<String>,
        token_credential: Val<String>,
        reconnect_initial_ms: Val<u64>,
        reconnect_max_ms: Val<u64>,
        reconnect_jitter: Val<f64>,
        connect_timeout_ms: Val<u64>,
        keepalive_interval_ms: Val<u64>,
        dead_peer_timeout_ms: Val<u64>,
        max_message_bytes: Val<u64>,
        ca_file: Val<String>,
        allow_insecure_ws: Val<bool>,
        socketio: SocketIo,
    }

    SocketIo {
        namespace: Val<String>,
        auth_field: Val<String>,
        events: SocketIoEvents,
    }

    SocketIoEvents {
        welcome: Val<String>,
        register: Val<String>,
        registered: Val<String>,
        resume: Val<String>,
        resumed: Val<String>,
        ring: Val<String>,
        ringing: Val<String>,
        accept: Val<String>,
        decline: Val<String>,
        accepted: Val<String>,
        taken: Val<String>,
        declined: Val<String>,
        cancel: Val<String>,
        offer: Val<String>,
        answer: Val<String>,
        candidate: Val<String>,
        hangup: Val<String>,
        error: Val<String>,
    }

    Hub {
        listen: Val<String>,
        loopback_listen: Val<String>,
        redirect_listen: Val<String>,
        state_dir: Val<String>,
        ping_interval_ms: Val<u64>,
        hello_timeout_ms: Val<u64>,
        header_read_timeout_ms: Val<u64>,
        idle_timeout_ms: Val<u64>,
        max_connections: Val<u64>,
        max_connections_per_address: Val<u64>,
        allowed_origins: Val<Vec<Val<String>>>,
        tls: HubTls,
        push: HubPush,
        public_url: Val<String>,
        doors: Val<Vec<Val<Door>>>,
        answerers: Val<Vec<Val<Answerer>>>,
    }

    HubTls {
        mode: Val<TlsMode>,
        cert_file: Val<String>,
        key_file: Val<String>,
        reload_check_ms: Val<u64>,
        names: Val<Vec<Val<String>>>,
        acme: HubTlsAcme,
    }

    HubPush {
        enabled: Val<bool>,
        subject: Val<String>,
        ca_file: Val<String>,
    }

    HubTlsAcme {
        directory_url: Val<String>,
        domains: Val<Vec<Val<String>>>,
        contact: Val<Vec<Val<String>>>,
        ca_file: Val<String>,
        renew_before_days: Val<u64>,
        check_interval_ms: Val<u64>,
    }

    Door {
        id: Val<String>,
        name: Val<String>,
        token_file: Val<String>,
        token_credential: Val<String>,
        groups: Val<Vec<Val<String>>>,
    }

    Answerer {
        id: Val<String>,
        name: Val<String>,
        token_file: Val<String>,
        token_credential: Val<String>,
        groups: Val<Vec<Val<String>>>,
        call_door: Val<bool>,
        quiet_hours: Val<Vec<Val<String>>>,
    }

    Button {
        name: Val<String>,
        group: Val<String>,
    }

    Ice {
        candidate_pool_size: Val<Removed>,
        receiving_timeout_ms: Val<u64>,
        backup_ping_interval_ms: Val<Removed>,
        dscp: Val<bool>,
        resurface_candidates_on_transport_change: Val<Removed>,
        check_interval_ms: Val<u64>,
        mdns: Val<MdnsMode>,
        transport_policy: Val<IceTransportPolicy>,
        bind_ips: Val<Vec<Val<String>>>,
        turn_ca_file: Val<String>,
        offer_dtls_client: Val<bool>,
        dtls_timeout_ms: Val<u64>,
        max_restarts: Val<u64>,
        servers: Val<Vec<Val<IceServer>>>,
    }

    IceServer {
        urls: Val<Vec<Val<String>>>,
        username: Val<String>,
        credential_file: Val<String>,
        credential_credential: Val<String>,
        secret_file: Val<String>,
        secret_credential: Val<String>,
        credential_ttl_s: Val<u64>,
    }

    Audio {
        backend: Val<AudioBackend>,
        echo_cancellation: Val<bool>,
        auto_gain_control: Val<bool>,
        high_pass_filter: Val<bool>,
        noise_suppression: Val<bool>,
        transient_suppression: Val<Removed>,
        mirroring: Val<Removed>,
        force_enable_track: Val<Removed>,
        opus: Opus,
        sim: AudioSim,
        alsa: AudioAlsa,
        processing: AudioProcessing,
        tones: AudioTonesFragment,
    }

    AudioAlsa {
        capture_device: Val<String>,
        playback_device: Val<String>,
        period_ms: Val<u64>,
        buffer_ms: Val<u64>,
        pacing: Val<String>,
        mixer_device: Val<String>,
        capture_control: Val<String>,
        capture_volume_pct: Val<u64>,
        playback_control: Val<String>,
        playback_volume_pct: Val<u64>,
        reopen_initial_ms: Val<u64>,
        reopen_max_ms: Val<u64>,
        realtime_priority: Val<u64>,
    }

    AudioProcessing {
        echo_delay_ms: Val<u64>,
        noise_suppression_level: Val<String>,
    }

    Opus {
        bitrate: Val<u64>,
        complexity: Val<u64>,
        fec: Val<bool>,
        frame_ms: Val<u64>,
    }

    AudioSim {
        source: Val<String>,
        record_file: Val<String>,
        echo_path: Val<String>,
    }

    Hardware {
        backend: Val<HardwareBackend>,
        sim: HardwareSim,
    }

    HardwareSim {
        control_listen: Val<String>,
        stdin: Val<bool>,
        state_file: Val<String>,
    }

    DoorSection {
        lock: Val<LockKind>,
        pulse_ms: Val<u64>,
        held_open_alarm_ms: Val<u64>,
        tamper_lockout_ms: Val<u64>,
        remote_open_interval_ms: Val<u64>,
        long_press_ms: Val<u64>,
    }

    Led {
        name: Val<String>,
        idle: Val<LedPattern>,
        signaling_down: Val<LedPattern>,
        ringing: Val<LedPattern>,
        in_call: Val<LedPattern>,
        door_open: Val<LedPattern>,
        fault: Val<LedPattern>,
        pairing: Val<LedPattern>,
        line: Val<String>,
        chip: Val<String>,
        offset: Val<u64>,
        active_low: Val<bool>,
    }

    Input {
        kind: Val<String>,
        button: Val<String>,
        line: Val<String>,
        chip: Val<String>,
        offset: Val<u64>,
        active_low: Val<bool>,
        bias: Val<String>,
        debounce_ms: Val<u64>,
    }

    Gpio {
        debounce_ms: Val<u64>,
        relay: GpioRelay,
    }

    GpioRelay {
        line: Val<String>,
        chip: Val<String>,
        offset: Val<u64>,
        active_low: Val<bool>,
    }

    Bluetooth {
        enabled: Val<bool>,
        backend: Val<String>,
        adapter: Val<String>,
        discoverable: Val<bool>,
        pairing: Val<String>,
        pin_file: Val<String>,
        pairing_timeout_ms: Val<u64>,
        prefer_msbc: Val<bool>,
    }

    Log {
        target: Val<LogTarget>,
        level: Val<String>,
    }
}

/// Parses one fragment, turning TOML/serde errors into errors that name the
/// file, line and dotted key.
///
/// serde stops at the first bad value, so every error found is reported
/// after the entry it concerns is blanked out (spaces, newlines kept, so
/// later lines keep their numbers) and the file is read again: a technician
/// sees every wrong key of a file in one run.
pub(crate) fn parse(source: &Source<'_>) -> Result<Root, ConfigError> {
    /// Enough for any real file; bounds the re-reading.
    const MAX_ERRORS: usize = 32;
    let mut text = source.text.to_owned();
    let mut errors = Vec::new();
    for _ in 0..MAX_ERRORS {
        let current = Source {
            path: source.path.clone(),
            text: &text,
        };
        let err = match toml::from_str::<Root>(&text) {
            Ok(mut root) if errors.is_empty() => {
                root.stamp(source);
                return Ok(root);
            }
            Ok(_) => break,
            Err(err) => err,
        };
        let error = translate(&current, &err);
        // A syntax error after blanking is of our making: stop there.
        let artefact = !errors.is_empty() && matches!(error, ConfigError::Syntax { .. });
        if artefact {
            break;
        }
        let blank = match (&error, DeTable::parse(&text)) {
            (ConfigError::Syntax { .. }, _) | (_, Err(_)) => None,
            (_, Ok(document)) => entry_span(document.get_ref(), err.span().map_or(0, |s| s.start)),
        };
        errors.push(error);
        let Some(range) = blank else {
            break;
        };
        // Spaces for everything but line breaks (byte for byte, so the
        // spans of the rest stay valid).
        let blanked: String = text[range.clone()]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        text.replace_range(range, &blanked);
    }
    Err(ConfigError::from_list(errors).expect("the loop ends with an error recorded"))
}

/// The span of the innermost `key = value` entry at `offset`, from the key
/// to the end of the value.
fn entry_span(table: &DeTable<'_>, offset: usize) -> Option<Range<usize>> {
    for (key, value) in table {
        let whole = key.span().start..value.span().end;
        let inner = match value.get_ref() {
            DeValue::Table(inner) => entry_span(inner, offset),
            DeValue::Array(items) => items.iter().find_map(|item| match item.get_ref() {
                DeValue::Table(inner) => entry_span(inner, offset),
                _ => None,
            }),
            _ => None,
        };
        if inner.is_some() {
            return inner;
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            return Some(whole);
        }
    }
    None
}

fn translate(source: &Source<'_>, err: &toml::de::Error) -> ConfigError {
    // A syntax error makes the document unparseable, so there is no key
    // tree to locate the problem in: report the parser's own position.
    let document = match DeTable::parse(source.text) {
        Ok(document) => document,
        Err(syntax) => {
            return ConfigError::Syntax {
                at: source.location(syntax.span().map_or(0, |s| s.start)),
                message: syntax.message().to_owned(),
            };
        }
    };
    let offset = err.span().map_or(0, |s| s.start);
    let at = source.location(offset);
    let key = key_at(document.get_ref(), offset)
        .map(|path| path.join("."))
        .unwrap_or_else(|| "(top level)".to_owned());
    let message = err.message();

    if let Some(rest) = message.strip_prefix("unknown field `") {
        ConfigError::UnknownKey {
            at,
            key,
            expected: backticked(rest.split_once('`').map_or("", |(_, tail)| tail)),
        }
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        ConfigError::WrongType {
            at,
            key,
            message: format!("found {}", plain_types(rest)),
        }
    } else {
        ConfigError::InvalidValue {
            at,
            key,
            reason: plain_types(message.strip_prefix("invalid value: ").unwrap_or(message)),
        }
    }
}

/// Finds the dotted key at `offset`: a key whose name is there, or the
/// innermost key whose value covers it.
fn key_at(table: &DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    for (key, value) in table {
        let name = key.get_ref().to_string();
        if key.span().contains(&offset) {
            return Some(vec![name]);
        }
        let inner = match value.get_ref() {
            DeValue::Table(inner) => key_at(inner, offset),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                match item.get_ref() {
                    DeValue::Table(inner) => key_at(inner, offset),
                    _ if item.span().contains(&offset) => Some(Vec::new()),
                    _ => None,
                }
                .map(|mut path| {
                    path.insert(0, format!("[{i}]"));
                    path
                })
            }),
            _ => None,
        };
        if let Some(mut path) = inner {
            path.insert(0, name);
            return Some(join_indices(path));
        }
        if value.span().contains(&offset) {
            return Some(vec![name]);
        }
    }
    None
}

/// `["hub", "doors", "[1]", "id"]` → `["hub", "doors[1]", "id"]`.
fn join_indices(path: Vec<String>) -> Vec<String> {
    let mut joined: Vec<String> = Vec::with_capacity(path.len());
    for part in path {
        match joined.last_mut() {
            Some(last) if part.starts_with('[') => last.push_str(&part),
            _ => joined.push(part),
        }
    }
    joined
}

/// Names between backticks, e.g. from "expected one of `a`, `b`".
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Replaces Rust type names in serde messages with words a technician knows.
fn plain_types(message: &str) -> String {
    let (found, expected) = message.rsplit_once(", expected ").unwrap_or((message, ""));
    let expected = match expected {
        "" => return found.to_owned(),
        "u64" | "u32" | "u16" | "u8" => "a whole number ≥ 0",
        "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        e => e,
    };
    format!("{found}, expected {expected}")
}
