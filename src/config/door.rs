//! `[door]`, `[[leds]]`, `[[inputs]]` and `[gpio]`: the door logic and how
//! the board is wired. Wiring mistakes a file can show (a line used twice,
//! an input and an output on one line, a button input for no button) are
//! found here; whether a named line exists is only known on the device.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::{Button, Check, HardwareBackend, NEVER, ser};
use crate::config::error::Location;
use crate::config::fragments::{self as frag, Val};
use crate::door::LockKind;
use crate::door::indication::{LedPattern, StationState};

/// `[door]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoorConfig {
    pub lock: LockKind,
    #[serde(rename = "pulse_ms", serialize_with = "ser::ms")]
    pub pulse: Duration,
    #[serde(rename = "held_open_alarm_ms", serialize_with = "ser::ms")]
    pub held_open_alarm: Duration,
    /// `None`: tamper raises an event but does not lock remote opening out.
    #[serde(rename = "tamper_lockout_ms", serialize_with = "ser::ms_or_zero")]
    pub tamper_lockout: Option<Duration>,
    #[serde(rename = "remote_open_interval_ms", serialize_with = "ser::ms")]
    pub remote_open_interval: Duration,
    #[serde(rename = "long_press_ms", serialize_with = "ser::ms")]
    pub long_press: Duration,
}

/// How a configured line is found on the device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LineRef {
    /// By the name the board's device tree gives it.
    Name(String),
    /// By chip (`gpiochip0` or `/dev/gpiochip0`) and offset.
    Offset { chip: String, offset: u32 },
}

/// `line = "<name>"`, or `chip` and `offset` (flattened into the table).
impl Serialize for LineRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self {
            LineRef::Name(n) => map.serialize_entry("line", n)?,
            LineRef::Offset { chip, offset } => {
                map.serialize_entry("chip", chip)?;
                map.serialize_entry("offset", offset)?;
            }
        }
        map.end()
    }
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineRef::Name(n) => write!(f, "`{n}`"),
            LineRef::Offset { chip, offset } => write!(f, "{chip} offset {offset}"),
        }
    }
}

/// Pull resistor of an input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bias {
    /// Leave the line as the board set it up.
    AsIs,
    Disabled,
    PullUp,
    PullDown,
}

impl Bias {
    pub fn as_str(self) -> &'static str {
        match self {
            Bias::AsIs => "as_is",
            Bias::Disabled => "disabled",
            Bias::PullUp => "pull_up",
            Bias::PullDown => "pull_down",
        }
    }

    fn parse(text: &str) -> Option<Bias> {
        Some(match text {
            "as_is" => Bias::AsIs,
            "disabled" => Bias::Disabled,
            "pull_up" => Bias::PullUp,
            "pull_down" => Bias::PullDown,
            _ => return None,
        })
    }
}

/// One GPIO line as configured.
#[derive(Debug, Clone, Serialize)]
pub struct LineSpec {
    #[serde(flatten)]
    pub line: LineRef,
    /// The line is asserted at low voltage.
    pub active_low: bool,
    /// Where the line was configured, for errors found on the device.
    #[serde(skip)]
    pub at: Location,
}

// Where a line was written is not part of its value: a dumped and
// reloaded configuration is the same configuration.
impl PartialEq for LineSpec {
    fn eq(&self, other: &Self) -> bool {
        self.line == other.line && self.active_low == other.active_low
    }
}
impl Eq for LineSpec {}

/// `[[leds]]`: one LED, its pattern per state, and its line on a GPIO board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedConfig {
    pub name: String,
    pub idle: LedPattern,
    pub signaling_down: LedPattern,
    pub ringing: LedPattern,
    pub in_call: LedPattern,
    pub door_open: LedPattern,
    pub fault: LedPattern,
    pub pairing: LedPattern,
    #[serde(flatten)]
    pub line: Option<LineSpec>,
}

/// What an input line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    /// A call button, by its `[[buttons]]` name.
    Button(String),
    Exit,
    DoorSensor,
    Tamper,
    /// The technician's service button (held: Bluetooth pairing).
    Service,
}

/// `kind`, and `button` for a call button (flattened into the table).
impl Serialize for InputKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("kind", self.kind_str())?;
        if let InputKind::Button(b) = self {
            map.serialize_entry("button", b)?;
        }
        map.end()
    }
}

impl InputKind {
    pub fn kind_str(&self) -> &'static str {
        match self {
            InputKind::Button(_) => "button",
            InputKind::Exit => "exit",
            InputKind::DoorSensor => "door_sensor",
            InputKind::Tamper => "tamper",
            InputKind::Service => "service",
        }
    }
}

/// `[[inputs]]`: one input line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputConfig {
    #[serde(flatten)]
    pub kind: InputKind,
    #[serde(flatten)]
    pub line: LineSpec,
    pub bias: Bias,
    /// Kernel debounce period.
    #[serde(rename = "debounce_ms", serialize_with = "ser::ms")]
    pub debounce: Duration,
}

/// `[gpio]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpioConfig {
    /// Default debounce of `[[inputs]]`.
    #[serde(rename = "debounce_ms", serialize_with = "ser::ms")]
    pub debounce: Duration,
    /// The lock relay's line; required with `hardware.backend = "gpio"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<LineSpec>,
}

/// The door-related part of the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DoorParts {
    pub door: DoorConfig,
    pub leds: Vec<LedConfig>,
    pub inputs: Vec<InputConfig>,
    pub gpio: GpioConfig,
}

/// A line reference from `line` or `chip` + `offset`; `None` when none is
/// given (an error is recorded when only part of it is).
fn line_ref(
    c: &mut Check,
    key: &str,
    line: &Option<Val<String>>,
    chip: &Option<Val<String>>,
    offset: &Option<Val<u64>>,
) -> Option<(LineRef, Location)> {
    let line = line.as_ref().filter(|v| !v.value.is_empty());
    let chip = chip.as_ref().filter(|v| !v.value.is_empty());
    match (line, chip, offset) {
        (Some(l), None, None) => Some((LineRef::Name(l.value.clone()), l.at.clone())),
        (None, Some(ch), Some(off)) => match u32::try_from(off.value) {
            Ok(offset) if offset < 512 => {
                if ch.value.contains('/') && !ch.value.starts_with("/dev/") {
                    c.invalid(
                        &ch.at,
                        &format!("{key}.chip"),
                        format!("{:?} must be a chip name or a /dev path", ch.value),
                    );
                }
                Some((
                    LineRef::Offset {
                        chip: ch.value.clone(),
                        offset,
                    },
                    ch.at.clone(),
                ))
            }
            _ => {
                c.invalid(
                    &off.at,
                    &format!("{key}.offset"),
                    format!("{} is not a line offset (0..=511)", off.value),
                );
                None
            }
        },
        (None, None, None) => None,
        (Some(l), _, _) => {
            c.invalid(
                &l.at,
                &format!("{key}.line"),
                "set either `line` (a line name) or `chip` and `offset`, not both",
            );
            None
        }
        (None, Some(ch), None) => {
            c.invalid(
                &ch.at,
                &format!("{key}.chip"),
                "`chip` needs `offset` (or use `line` with the line's name)",
            );
            None
        }
        (None, None, Some(off)) => {
            c.invalid(
                &off.at,
                &format!("{key}.offset"),
                "`offset` needs `chip` (or use `line` with the line's name)",
            );
            None
        }
    }
}

struct Used {
    line: LineRef,
    key: String,
    at: Location,
    output: bool,
}

pub(super) fn door_parts(
    c: &mut Check,
    root: &frag::Root,
    buttons: &[Button],
    backend: HardwareBackend,
) -> DoorParts {
    let door = door_section(c, root);
    let (debounce, relay) = gpio_section(c, root);
    let mut used: Vec<Used> = Vec::new();
    if let Some(spec) = &relay {
        used.push(Used {
            line: spec.line.clone(),
            key: "gpio.relay".into(),
            at: spec.at.clone(),
            output: true,
        });
    }
    let leds = leds_section(c, root, backend, &mut used);
    let inputs = inputs_section(c, root, buttons, debounce, &mut used);
    lines_used_once(c, &used);

    if backend == HardwareBackend::Gpio && relay.is_none() {
        c.missing(
            "gpio.relay.line",
            "the lock relay needs a line with hardware.backend = \"gpio\"",
            None,
        );
    }

    DoorParts {
        door,
        leds,
        inputs,
        gpio: GpioConfig { debounce, relay },
    }
}

/// `[door]`.
fn door_section(c: &mut Check, root: &frag::Root) -> DoorConfig {
    let d = root.door.clone().unwrap_or_default();
    let tamper_lockout = match c.get("door.tamper_lockout_ms", &d.tamper_lockout_ms) {
        Some(v) if v.value == 0 => None,
        Some(v) => Some(Duration::from_millis(v.value)),
        None => None,
    };
    DoorConfig {
        lock: c.copy("door.lock", &d.lock, LockKind::FailSecure),
        pulse: c.millis("door.pulse_ms", &d.pulse_ms),
        held_open_alarm: c.millis("door.held_open_alarm_ms", &d.held_open_alarm_ms),
        tamper_lockout,
        remote_open_interval: c.millis("door.remote_open_interval_ms", &d.remote_open_interval_ms),
        long_press: c.millis("door.long_press_ms", &d.long_press_ms),
    }
}

/// `[gpio]`: the default debounce and the relay's line.
fn gpio_section(c: &mut Check, root: &frag::Root) -> (Duration, Option<LineSpec>) {
    let g = root.gpio.clone().unwrap_or_default();
    let debounce = match c.get("gpio.debounce_ms", &g.debounce_ms) {
        // Zero is allowed: no kernel debounce (a sensor with clean edges).
        Some(v) if v.value <= 1000 => Duration::from_millis(v.value),
        Some(v) => {
            c.invalid(
                &v.at,
                "gpio.debounce_ms",
                format!("{} is outside 0..=1000", v.value),
            );
            NEVER
        }
        None => NEVER,
    };
    let r = g.relay.unwrap_or_default();
    let relay = line_ref(c, "gpio.relay", &r.line, &r.chip, &r.offset).map(|(line, at)| LineSpec {
        line,
        active_low: r.active_low.as_ref().is_some_and(|v| v.value),
        at,
    });
    (debounce, relay)
}

/// `[[leds]]`, their lines added to `used`.
fn leds_section(
    c: &mut Check,
    root: &frag::Root,
    backend: HardwareBackend,
    used: &mut Vec<Used>,
) -> Vec<LedConfig> {
    let mut leds: Vec<LedConfig> = Vec::new();
    match root.leds.as_ref() {
        None => c.missing("leds", "at least one [[leds]] entry is needed", None),
        Some(list) => {
            for (i, l) in list.value.iter().enumerate() {
                let key = format!("leds[{i}]");
                let l = &l.value;
                let name = c.id(&format!("{key}.name"), &l.name);
                if let Some(n) = &l.name
                    && leds.iter().any(|o| o.name == n.value)
                {
                    c.invalid(
                        &n.at,
                        &format!("{key}.name"),
                        format!("LED name `{}` is used twice", n.value),
                    );
                }
                let pat = |v: &Option<Val<LedPattern>>, state: StationState| {
                    v.as_ref().map_or(state.default_pattern(), |v| v.value)
                };
                let line =
                    line_ref(c, &key, &l.line, &l.chip, &l.offset).map(|(line, at)| LineSpec {
                        line,
                        active_low: l.active_low.as_ref().is_some_and(|v| v.value),
                        at,
                    });
                if backend == HardwareBackend::Gpio && line.is_none() {
                    let at = l.name.as_ref().map(|n| n.at.clone());
                    c.missing(
                        &format!("{key}.line"),
                        format!("LED `{name}` needs a line with hardware.backend = \"gpio\""),
                        at.as_ref(),
                    );
                }
                if let Some(spec) = &line {
                    used.push(Used {
                        line: spec.line.clone(),
                        key: key.clone(),
                        at: spec.at.clone(),
                        output: true,
                    });
                }
                leds.push(LedConfig {
                    name,
                    idle: pat(&l.idle, StationState::Idle),
                    signaling_down: pat(&l.signaling_down, StationState::SignalingDown),
                    ringing: pat(&l.ringing, StationState::Ringing),
                    in_call: pat(&l.in_call, StationState::InCall),
                    door_open: pat(&l.door_open, StationState::DoorOpen),
                    fault: pat(&l.fault, StationState::Fault),
                    pairing: pat(&l.pairing, StationState::Pairing),
                    line,
                });
            }
        }
    }
    leds
}

/// `[[inputs]]`, their lines added to `used`.
fn inputs_section(
    c: &mut Check,
    root: &frag::Root,
    buttons: &[Button],
    debounce: Duration,
    used: &mut Vec<Used>,
) -> Vec<InputConfig> {
    let mut inputs = Vec::new();
    if let Some(list) = root.inputs.as_ref() {
        for (i, entry) in list.value.iter().enumerate() {
            let key = format!("inputs[{i}]");
            let inp = &entry.value;
            let kind = input_kind(c, &key, entry, buttons);
            let bias = match inp.bias.as_ref() {
                None => Bias::AsIs,
                Some(v) => Bias::parse(&v.value).unwrap_or_else(|| {
                    c.invalid(
                        &v.at,
                        &format!("{key}.bias"),
                        format!(
                            "{:?} is not \"as_is\", \"disabled\", \"pull_up\" or \"pull_down\"",
                            v.value
                        ),
                    );
                    Bias::AsIs
                }),
            };
            let input_debounce = match inp.debounce_ms.as_ref() {
                None => debounce,
                Some(v) if v.value <= 1000 => Duration::from_millis(v.value),
                Some(v) => {
                    c.invalid(
                        &v.at,
                        &format!("{key}.debounce_ms"),
                        format!("{} is outside 0..=1000", v.value),
                    );
                    NEVER
                }
            };
            let reported = c.errors.len();
            let line = line_ref(c, &key, &inp.line, &inp.chip, &inp.offset);
            let Some((line, at)) = line else {
                if c.errors.len() > reported {
                    // A half-given reference is already reported.
                    continue;
                }
                c.missing(
                    &format!("{key}.line"),
                    format!(
                        "the input at {} has no `line` (or `chip` and `offset`)",
                        entry.at
                    ),
                    Some(&entry.at),
                );
                continue;
            };
            used.push(Used {
                line: line.clone(),
                key: key.clone(),
                at: at.clone(),
                output: false,
            });
            if let Some(kind) = kind {
                inputs.push(InputConfig {
                    kind,
                    line: LineSpec {
                        line,
                        active_low: inp.active_low.as_ref().is_some_and(|v| v.value),
                        at,
                    },
                    bias,
                    debounce: input_debounce,
                });
            }
        }
    }
    inputs
}

/// What the input `entry` at `key` is, from its `kind` and `button`.
fn input_kind(
    c: &mut Check,
    key: &str,
    entry: &Val<frag::Input>,
    buttons: &[Button],
) -> Option<InputKind> {
    let inp = &entry.value;
    match (inp.kind.as_ref(), inp.button.as_ref()) {
        (None, _) => {
            c.missing(
                &format!("{key}.kind"),
                format!("the input at {} has no kind", entry.at),
                Some(&entry.at),
            );
            None
        }
        (Some(k), b) => match (k.value.as_str(), b) {
            ("button", Some(b)) => {
                if !buttons.iter().any(|x| x.name == b.value) {
                    c.invalid(
                        &b.at,
                        &format!("{key}.button"),
                        format!("no [[buttons]] entry is named `{}`", b.value),
                    );
                }
                Some(InputKind::Button(b.value.clone()))
            }
            ("button", None) => {
                c.missing(
                    &format!("{key}.button"),
                    format!("the button input at {} names no [[buttons]] entry", k.at),
                    Some(&k.at),
                );
                None
            }
            (_, Some(b)) => {
                c.invalid(
                    &b.at,
                    &format!("{key}.button"),
                    "only inputs of kind \"button\" name a button",
                );
                None
            }
            ("exit", None) => Some(InputKind::Exit),
            ("door_sensor", None) => Some(InputKind::DoorSensor),
            ("tamper", None) => Some(InputKind::Tamper),
            ("service", None) => Some(InputKind::Service),
            (other, None) => {
                c.invalid(
                    &k.at,
                    &format!("{key}.kind"),
                    format!(
                        "{other:?} is not \"button\", \"exit\", \"door_sensor\", \"tamper\" or \"service\""
                    ),
                );
                None
            }
        },
    }
}

/// One physical line, one use.
fn lines_used_once(c: &mut Check, used: &[Used]) {
    for (j, later) in used.iter().enumerate() {
        if let Some(first) = used[..j].iter().find(|u| u.line == later.line) {
            let reason = if first.output != later.output {
                format!(
                    "line {} is an {} of `{}` ({}) and cannot also be an {} here",
                    later.line,
                    if first.output { "output" } else { "input" },
                    first.key,
                    first.at,
                    if later.output { "output" } else { "input" },
                )
            } else {
                format!(
                    "line {} is already used by `{}` ({})",
                    later.line, first.key, first.at
                )
            };
            c.invalid(&later.at, &later.key, reason);
        }
    }
}
