//! The real door hardware: GPIO lines through the kernel's character device
//! (gpiocdev). Lines are found by name (board files name them) or by chip
//! and offset; debounce, active-low and bias are set in the kernel from
//! configuration. Input edges are read through `AsyncFd`, never by a
//! blocking read on a runtime worker. Requests are released by `Drop`.
//!
//! The translation from configuration to line settings ([`input_config`],
//! [`output_config`]) is pure and unit-tested; requesting lines needs a
//! kernel and is exercised by the hardware tests.

use std::path::PathBuf;
use std::time::Duration;

use gpiocdev::line::{self, EdgeDetection, EdgeKind, Value};
use gpiocdev::request::Request;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{HwError, HwEvent, Led, LedPattern, Relay};
use crate::config::{
    Bias, InputConfig, InputKind, LedConfig, LineRef, LineSpec, Location, Settings,
};

/// Consumer label shown by `gpioinfo` for our lines.
const CONSUMER: &str = "intercomd";

/// Errors of the GPIO backend. Each names the line, the key and the file
/// that configured it.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error(
        "{at}: `{key}`: no GPIO line is named `{name}` on this device (check the board file; `gpioinfo` lists the names)"
    )]
    UnknownLine {
        key: String,
        name: String,
        at: Location,
    },
    #[error("{at}: `{key}`: line name `{name}` exists more than once; use `chip` and `offset`")]
    AmbiguousLine {
        key: String,
        name: String,
        at: Location,
    },
    #[error("{at}: `{key}`: cannot search the GPIO chips for line `{name}`: {source}")]
    Search {
        key: String,
        name: String,
        at: Location,
        // Boxed: gpiocdev's error is large and this one travels up by value.
        #[source]
        source: Box<gpiocdev::Error>,
    },
    #[error("{at}: `{key}`: cannot request {chip} line {offset} ({line}): {source}")]
    Request {
        key: String,
        line: String,
        chip: PathBuf,
        offset: u32,
        at: Location,
        // Boxed: gpiocdev's error is large and this one travels up by value.
        #[source]
        source: Box<gpiocdev::Error>,
    },
}

impl GpioError {
    /// Wiring that does not match the device is a configuration problem.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            GpioError::UnknownLine { .. } | GpioError::AmbiguousLine { .. }
        )
    }
}

/// The kernel line settings of an input.
pub fn input_config(input: &InputConfig) -> line::Config {
    let mut c = line::Config {
        direction: Some(line::Direction::Input),
        active_low: input.line.active_low,
        bias: match input.bias {
            Bias::AsIs => None,
            Bias::Disabled => Some(line::Bias::Disabled),
            Bias::PullUp => Some(line::Bias::PullUp),
            Bias::PullDown => Some(line::Bias::PullDown),
        },
        edge_detection: Some(EdgeDetection::BothEdges),
        ..line::Config::default()
    };
    if !input.debounce.is_zero() {
        c.debounce_period = Some(input.debounce);
    }
    c
}

/// The kernel line settings of an output, driven inactive when requested:
/// the first level a relay or LED sees from us is the de-energised one.
pub fn output_config(spec: &LineSpec) -> line::Config {
    line::Config {
        direction: Some(line::Direction::Output),
        active_low: spec.active_low,
        value: Some(Value::Inactive),
        ..line::Config::default()
    }
}

/// The event an input edge means. `active` is the logical level after the
/// edge (active-low already applied by the kernel).
pub fn edge_event(kind: &InputKind, active: bool) -> Option<HwEvent> {
    Some(match (kind, active) {
        (InputKind::Button(b), true) => HwEvent::ButtonPressed { button: b.clone() },
        (InputKind::Button(b), false) => HwEvent::ButtonReleased { button: b.clone() },
        (InputKind::Exit, true) => HwEvent::ExitPressed,
        (InputKind::Exit, false) => return None,
        // The sensor is active while the door stands open.
        (InputKind::DoorSensor, open) => HwEvent::DoorSensor { open },
        (InputKind::Tamper, active) => HwEvent::Tamper { active },
        (InputKind::Service, pressed) => HwEvent::Service { pressed },
    })
}

/// `gpiochip0` → `/dev/gpiochip0`; a `/dev` path stays as it is.
pub fn chip_path(chip: &str) -> PathBuf {
    if chip.starts_with('/') {
        PathBuf::from(chip)
    } else {
        PathBuf::from("/dev").join(chip)
    }
}

/// Where a configured line is on this device.
fn locate(key: &str, spec: &LineSpec) -> Result<(PathBuf, u32), GpioError> {
    match &spec.line {
        LineRef::Offset { chip, offset } => Ok((chip_path(chip), *offset)),
        LineRef::Name(name) => {
            let names = [name.as_str()];
            match gpiocdev::find_named_lines(&names, true) {
                Ok(found) => match found.get(name.as_str()) {
                    Some(f) => Ok((f.chip.clone(), f.info.offset)),
                    None => Err(GpioError::UnknownLine {
                        key: key.into(),
                        name: name.clone(),
                        at: spec.at.clone(),
                    }),
                },
                Err(gpiocdev::Error::NonuniqueLineName(_)) => Err(GpioError::AmbiguousLine {
                    key: key.into(),
                    name: name.clone(),
                    at: spec.at.clone(),
                }),
                // No chips at all: every name is unknown here.
                Err(gpiocdev::Error::NoGpioChips()) => Err(GpioError::UnknownLine {
                    key: key.into(),
                    name: name.clone(),
                    at: spec.at.clone(),
                }),
                Err(source) => Err(GpioError::Search {
                    key: key.into(),
                    name: name.clone(),
                    at: spec.at.clone(),
                    source: Box::new(source),
                }),
            }
        }
    }
}

fn request(key: &str, spec: &LineSpec, cfg: &line::Config) -> Result<Request, GpioError> {
    let (chip, offset) = locate(key, spec)?;
    let mut b = Request::builder();
    b.on_chip(&chip)
        .with_consumer(CONSUMER)
        .with_line(offset)
        .from_line_config(cfg);
    b.request().map_err(|source| GpioError::Request {
        key: key.into(),
        line: spec.line.to_string(),
        chip,
        offset,
        at: spec.at.clone(),
        source: Box::new(source),
    })
}

/// An output line (relay or LED).
#[derive(Debug)]
struct OutputLine {
    what: String,
    req: Request,
}

impl OutputLine {
    fn set(&self, active: bool) -> Result<(), HwError> {
        let v = if active {
            Value::Active
        } else {
            Value::Inactive
        };
        self.req.set_lone_value(v).map_err(|e| HwError::Line {
            device: self.req.chip_path().display().to_string(),
            line: self.what.clone(),
            message: e.to_string(),
        })
    }
}

#[derive(Debug)]
pub struct GpioRelay(OutputLine);

impl Relay for GpioRelay {
    fn set(&mut self, energised: bool) -> Result<(), HwError> {
        self.0.set(energised)
    }
}

#[derive(Debug)]
pub struct GpioLed {
    name: String,
    line: OutputLine,
}

impl Led for GpioLed {
    fn name(&self) -> &str {
        &self.name
    }

    fn set(&mut self, _pattern: LedPattern, on: bool) -> Result<(), HwError> {
        self.line.set(on)
    }
}

/// The requested lines of a GPIO board. Inputs are read by tasks started
/// with [`GpioBoard::start_inputs`].
#[derive(Debug)]
pub struct GpioBoard {
    pub relay: GpioRelay,
    pub leds: Vec<GpioLed>,
    inputs: Vec<(InputConfig, Request)>,
}

/// Request every configured line, outputs first (inactive) so the relay
/// is de-energised before anything else happens.
pub fn open(settings: &Settings) -> Result<GpioBoard, GpioError> {
    let relay_spec = settings
        .gpio
        .relay
        .as_ref()
        .expect("validation requires gpio.relay with hardware.backend = \"gpio\"");
    let relay = GpioRelay(OutputLine {
        what: format!("relay {}", relay_spec.line),
        req: request("gpio.relay", relay_spec, &output_config(relay_spec))?,
    });
    info!(line = %relay_spec.line, "door relay line requested, de-energised");
    let mut leds = Vec::new();
    for (i, l) in settings.leds.iter().enumerate() {
        let LedConfig { name, line, .. } = l;
        let spec = line
            .as_ref()
            .expect("validation requires a line for every LED with hardware.backend = \"gpio\"");
        let key = format!("leds[{i}]");
        leds.push(GpioLed {
            name: name.clone(),
            line: OutputLine {
                what: format!("LED {name} {}", spec.line),
                req: request(&key, spec, &output_config(spec))?,
            },
        });
    }
    let mut inputs = Vec::new();
    for (i, inp) in settings.inputs.iter().enumerate() {
        let key = format!("inputs[{i}]");
        let req = request(&key, &inp.line, &input_config(inp))?;
        inputs.push((inp.clone(), req));
    }
    Ok(GpioBoard {
        relay,
        leds,
        inputs,
    })
}

impl GpioBoard {
    /// Start one task per input line. Level inputs (door sensor, tamper)
    /// report their current level first.
    pub fn start_inputs(
        &mut self,
        events: mpsc::Sender<HwEvent>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) {
        for (inp, req) in self.inputs.drain(..) {
            if matches!(inp.kind, InputKind::DoorSensor | InputKind::Tamper) {
                match req.lone_value() {
                    Ok(v) => {
                        if let Some(ev) = edge_event(&inp.kind, v == Value::Active) {
                            let _ = events.try_send(ev);
                        }
                    }
                    Err(e) => {
                        warn!(line = %inp.line.line, error = %e, "cannot read the input's level")
                    }
                }
            }
            let areq = gpiocdev::tokio::AsyncRequest::new(req);
            let events = events.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                loop {
                    let ev = tokio::select! {
                        _ = cancel.cancelled() => break,
                        ev = areq.read_edge_event() => ev,
                    };
                    match ev {
                        Ok(ev) => {
                            let active = ev.kind == EdgeKind::Rising;
                            debug!(line = %inp.line.line, active, "input edge");
                            if let Some(hw) = edge_event(&inp.kind, active)
                                && events.send(hw).await.is_err()
                            {
                                break;
                            }
                        }
                        Err(e) => {
                            warn!(line = %inp.line.line, error = %e, "reading input edges failed");
                            // A failing line must not spin: wait, then retry.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from_strs;

    const BOARD: &str = r#"
[hardware]
backend = "gpio"

[gpio]
debounce_ms = 15

[gpio.relay]
line = "DOOR_RELAY"
active_low = true

[[buttons]]
name = "flat-a"
group = "residents"

[[buttons]]
name = "caretaker"
group = "caretaker"

[[leds]]
name = "status"
line = "LED_STATUS"

[[leds]]
name = "door"
chip = "gpiochip1"
offset = 7
idle = "off"
door_open = "on"

[[inputs]]
kind = "button"
button = "flat-a"
line = "BTN_A"
active_low = true
bias = "pull_up"

[[inputs]]
kind = "button"
button = "caretaker"
chip = "/dev/gpiochip2"
offset = 3
debounce_ms = 0

[[inputs]]
kind = "door_sensor"
line = "DOOR_CONTACT"
bias = "pull_down"
debounce_ms = 50

[[inputs]]
kind = "tamper"
line = "TAMPER"
bias = "disabled"

[[inputs]]
kind = "exit"
line = "EXIT"
"#;

    #[test]
    fn configuration_translates_into_kernel_line_settings() {
        let s = load_from_strs(&[("board.toml", BOARD)]).unwrap_or_else(|e| panic!("{e}"));
        let relay = s.gpio.relay.as_ref().expect("relay configured");
        assert_eq!(relay.line, LineRef::Name("DOOR_RELAY".into()));
        assert_eq!(relay.at.to_string(), "board.toml:9");
        let out = output_config(relay);
        assert_eq!(out.direction, Some(line::Direction::Output));
        assert!(out.active_low);
        assert_eq!(out.value, Some(Value::Inactive));
        assert_eq!(out.edge_detection, None);

        let cfgs: Vec<line::Config> = s.inputs.iter().map(input_config).collect();
        assert_eq!(cfgs.len(), 5);
        // Button on a pulled-up, active-low line, default debounce.
        assert!(cfgs[0].active_low);
        assert_eq!(cfgs[0].bias, Some(line::Bias::PullUp));
        assert_eq!(cfgs[0].debounce_period, Some(Duration::from_millis(15)));
        assert_eq!(cfgs[0].edge_detection, Some(EdgeDetection::BothEdges));
        assert_eq!(cfgs[0].direction, Some(line::Direction::Input));
        // Debounce 0: none requested; bias as the board left it.
        assert_eq!(cfgs[1].debounce_period, None);
        assert_eq!(cfgs[1].bias, None);
        assert!(!cfgs[1].active_low);
        assert_eq!(
            s.inputs[1].line.line,
            LineRef::Offset {
                chip: "/dev/gpiochip2".into(),
                offset: 3
            }
        );
        assert_eq!(cfgs[2].bias, Some(line::Bias::PullDown));
        assert_eq!(cfgs[2].debounce_period, Some(Duration::from_millis(50)));
        assert_eq!(cfgs[3].bias, Some(line::Bias::Disabled));
        assert_eq!(s.inputs[4].kind, InputKind::Exit);

        let door_led = s.leds[1].line.as_ref().expect("LED line");
        assert_eq!(
            door_led.line,
            LineRef::Offset {
                chip: "gpiochip1".into(),
                offset: 7
            }
        );
        assert_eq!(s.leds[1].idle, LedPattern::Off);
        assert_eq!(s.leds[1].door_open, LedPattern::On);
        // Patterns not given keep the shipped ones.
        assert_eq!(s.leds[1].fault, LedPattern::FastBlink);
    }

    #[test]
    fn edges_map_to_events() {
        let b = InputKind::Button("flat-a".into());
        assert_eq!(
            edge_event(&b, true),
            Some(HwEvent::ButtonPressed {
                button: "flat-a".into()
            })
        );
        assert_eq!(
            edge_event(&b, false),
            Some(HwEvent::ButtonReleased {
                button: "flat-a".into()
            })
        );
        assert_eq!(
            edge_event(&InputKind::Exit, true),
            Some(HwEvent::ExitPressed)
        );
        assert_eq!(edge_event(&InputKind::Exit, false), None);
        assert_eq!(
            edge_event(&InputKind::DoorSensor, true),
            Some(HwEvent::DoorSensor { open: true })
        );
        assert_eq!(
            edge_event(&InputKind::Tamper, false),
            Some(HwEvent::Tamper { active: false })
        );
    }

    #[test]
    fn chip_names_become_device_paths() {
        assert_eq!(chip_path("gpiochip0"), PathBuf::from("/dev/gpiochip0"));
        assert_eq!(chip_path("/dev/gpiochip3"), PathBuf::from("/dev/gpiochip3"));
    }

    #[test]
    fn a_line_missing_on_the_device_names_the_line_key_and_file() {
        let s = load_from_strs(&[("board.toml", BOARD)]).unwrap_or_else(|e| panic!("{e}"));
        let spec = LineSpec {
            line: LineRef::Name("NO_SUCH_LINE_ANYWHERE".into()),
            ..s.gpio.relay.clone().expect("relay")
        };
        let e = locate("gpio.relay", &spec).expect_err("no device has this line");
        assert!(e.is_config(), "{e}");
        assert_eq!(
            e.to_string(),
            "board.toml:9: `gpio.relay`: no GPIO line is named `NO_SUCH_LINE_ANYWHERE` on this device (check the board file; `gpioinfo` lists the names)"
        );
    }
}
