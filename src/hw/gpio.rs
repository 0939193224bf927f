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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use gpiocdev::line::{self, EdgeDetection, EdgeKind, Value};
use gpiocdev::request::Request;
use gpiocdev::tokio::AsyncRequest;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::{HwError, HwEvent, Led, Relay};
use crate::config::{Bias, InputConfig, InputKind, LedConfig, LineRef, LineSpec, Location};
use crate::door::indication::LedPattern;

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

/// First and longest wait between attempts to request the lines again
/// after their chip went away (the same bounds as the sound card's reopen).
pub const REQUEST_AGAIN_INITIAL: Duration = Duration::from_millis(200);
pub const REQUEST_AGAIN_MAX: Duration = Duration::from_secs(5);

/// How often requested lines are checked while nothing happens on them: a
/// vanished chip does not always wake a task waiting for edges.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// Waits between attempts to request the lines again: doubling from
/// `initial` up to `max`. Reset once the lines have stayed up for `max`
/// again, so a chip that fails at once after each request is not hammered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; the one after it doubles.
    pub fn next_wait(&mut self) -> Duration {
        let w = self.next;
        self.next = (self.next * 2).min(self.max);
        w
    }

    /// The lines were up for `up_for`: start from `initial` again if that
    /// was long enough to call the chip healthy.
    pub fn lines_were_up(&mut self, up_for: Duration) {
        if up_for >= self.max {
            self.next = self.initial;
        }
    }
}

/// One output line (relay or LED): its configuration, its request while the
/// chip is there, and the level last asked for, applied again when the
/// line is requested anew.
#[derive(Debug)]
struct OutputSlot {
    key: String,
    spec: LineSpec,
    what: String,
    /// The chip the line was last found on (named in errors while it is gone).
    chip: PathBuf,
    req: Option<Request>,
    active: bool,
}

/// The output lines, shared between the relay and LED handles the
/// controller drives and the task that watches and re-requests the lines.
#[derive(Debug)]
struct Outputs {
    slots: Mutex<Vec<OutputSlot>>,
    /// Signalled when driving an output failed: the watcher re-requests.
    lost: Notify,
}

impl Outputs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<OutputSlot>> {
        // A panic while holding the lock leaves plain data: keep going.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drive output `idx`. While the chip is gone the level is remembered;
    /// `report_gone` says whether that is an error for the caller (the
    /// relay: the door cannot open) or not (an LED).
    fn set(&self, idx: usize, active: bool, report_gone: bool) -> Result<(), HwError> {
        let mut slots = self.lock();
        let slot = &mut slots[idx];
        slot.active = active;
        let v = if active {
            Value::Active
        } else {
            Value::Inactive
        };
        match &slot.req {
            Some(req) => match req.set_lone_value(v) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let err = HwError::Line {
                        device: slot.chip.display().to_string(),
                        line: slot.what.clone(),
                        message: e.to_string(),
                    };
                    drop(slots);
                    self.lost.notify_one();
                    Err(err)
                }
            },
            None if report_gone => Err(HwError::Line {
                device: slot.chip.display().to_string(),
                line: slot.what.clone(),
                message: "the GPIO chip is gone; the line is requested again when it returns"
                    .into(),
            }),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
pub struct GpioRelay(Arc<Outputs>);

impl Relay for GpioRelay {
    fn set(&mut self, energised: bool) -> Result<(), HwError> {
        self.0.set(0, energised, true)
    }
}

#[derive(Debug)]
pub struct GpioLed {
    name: String,
    outputs: Arc<Outputs>,
    idx: usize,
}

impl Led for GpioLed {
    fn name(&self) -> &str {
        &self.name
    }

    fn set(&mut self, _pattern: LedPattern, on: bool) -> Result<(), HwError> {
        self.outputs.set(self.idx, on, false)
    }
}

/// The requested lines of a GPIO board. [`GpioBoard::start`] starts the
/// task that reads the inputs and requests every line again when their
/// chip goes away and comes back.
#[derive(Debug)]
pub struct GpioBoard {
    pub relay: GpioRelay,
    pub leds: Vec<GpioLed>,
    outputs: Arc<Outputs>,
    inputs: Vec<(InputConfig, Request)>,
}

fn request_output(slot: &OutputSlot, active: bool) -> Result<Request, GpioError> {
    let mut cfg = output_config(&slot.spec);
    cfg.value = Some(if active {
        Value::Active
    } else {
        Value::Inactive
    });
    request(&slot.key, &slot.spec, &cfg)
}

fn request_inputs(inputs: &[InputConfig]) -> Result<Vec<(InputConfig, Request)>, GpioError> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            let key = format!("inputs[{i}]");
            request(&key, &inp.line, &input_config(inp)).map(|r| (inp.clone(), r))
        })
        .collect()
}

/// Request every configured line (the relay, the LEDs, the inputs),
/// outputs first (inactive) so the relay is de-energised before anything
/// else happens.
pub fn open(
    relay_spec: &LineSpec,
    led_configs: &[LedConfig],
    input_configs: &[InputConfig],
) -> Result<GpioBoard, GpioError> {
    let mut slots = vec![OutputSlot {
        key: "gpio.relay".into(),
        spec: relay_spec.clone(),
        what: format!("relay {}", relay_spec.line),
        chip: PathBuf::new(),
        req: None,
        active: false,
    }];
    for (i, l) in led_configs.iter().enumerate() {
        let LedConfig { name, line, .. } = l;
        let spec = line
            .as_ref()
            .expect("validation requires a line for every LED with hardware.backend = \"gpio\"");
        slots.push(OutputSlot {
            key: format!("leds[{i}]"),
            spec: spec.clone(),
            what: format!("LED {name} {}", spec.line),
            chip: PathBuf::new(),
            req: None,
            active: false,
        });
    }
    for (i, slot) in slots.iter_mut().enumerate() {
        let req = request_output(slot, false)?;
        slot.chip = req.chip_path();
        slot.req = Some(req);
        if i == 0 {
            info!(line = %relay_spec.line, chip = %slot.chip.display(), "door relay line requested, de-energised");
        }
    }
    let inputs = request_inputs(input_configs)?;
    let outputs = Arc::new(Outputs {
        slots: Mutex::new(slots),
        lost: Notify::new(),
    });
    let leds = led_configs
        .iter()
        .enumerate()
        .map(|(i, l)| GpioLed {
            name: l.name.clone(),
            outputs: outputs.clone(),
            idx: i + 1,
        })
        .collect();
    Ok(GpioBoard {
        relay: GpioRelay(outputs.clone()),
        leds,
        outputs,
        inputs,
    })
}

/// The chips a set of lines lives on, for log lines: `/dev/gpiochip0`, or
/// several separated by commas.
fn chip_list<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> String {
    let mut v: Vec<String> = paths
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v.dedup();
    v.join(",")
}

/// Level inputs (door sensor, tamper) report their current level.
fn report_levels(inputs: &[(InputConfig, AsyncRequest)], events: &mpsc::Sender<HwEvent>) {
    for (inp, req) in inputs {
        if matches!(inp.kind, InputKind::DoorSensor | InputKind::Tamper) {
            match req.as_ref().lone_value() {
                Ok(v) => {
                    if let Some(ev) = edge_event(&inp.kind, v == Value::Active) {
                        let _ = events.try_send(ev);
                    }
                }
                Err(e) => {
                    warn!(line = %inp.line.line, chip = %req.as_ref().chip_path().display(), error = %e, "cannot read the input's level")
                }
            }
        }
    }
}

/// The next edge on any input; never resolves without inputs.
async fn next_edge(
    inputs: &[(InputConfig, AsyncRequest)],
) -> (usize, gpiocdev::Result<gpiocdev::line::EdgeEvent>) {
    if inputs.is_empty() {
        return std::future::pending().await;
    }
    let reads = inputs
        .iter()
        .map(|(_, r)| Box::pin(r.read_edge_event()))
        .collect::<Vec<_>>();
    let (res, i, _) = futures_util::future::select_all(reads).await;
    (i, res)
}

/// Why the lines were given up.
enum Lost {
    Cancelled,
    Line(String),
}

impl GpioBoard {
    /// Start the task that reads the input lines and watches every line.
    /// When a line fails (its chip was removed: a driver unbound, a
    /// hot-plugged expander unplugged), every line is released, the fault
    /// is reported to the door logic, and the lines are requested again
    /// with backoff until the chip returns; outputs then get the level last
    /// asked for, and level inputs report theirs.
    pub fn start(
        &mut self,
        events: mpsc::Sender<HwEvent>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let inputs: Vec<(InputConfig, AsyncRequest)> = self
            .inputs
            .drain(..)
            .map(|(c, r)| (c, AsyncRequest::new(r)))
            .collect();
        let configs: Vec<InputConfig> = inputs.iter().map(|(c, _)| c.clone()).collect();
        report_levels(&inputs, &events);
        let outputs = self.outputs.clone();
        tracker.spawn(watch(inputs, configs, outputs, events, cancel));
    }
}

/// Reads edges and checks the lines until one fails or `cancel`.
async fn watch_lines(
    inputs: &[(InputConfig, AsyncRequest)],
    outputs: &Outputs,
    events: &mpsc::Sender<HwEvent>,
    cancel: &CancellationToken,
) -> Lost {
    let mut health = tokio::time::interval(HEALTH_CHECK);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Lost::Cancelled,
            _ = outputs.lost.notified() => {
                return Lost::Line("driving an output line failed".into());
            }
            _ = health.tick() => {
                for slot in outputs.lock().iter() {
                    if let Some(Err(e)) = slot.req.as_ref().map(Request::lone_value) {
                        return Lost::Line(format!("{} on {}: {e}", slot.what, slot.chip.display()));
                    }
                }
                for (inp, req) in inputs {
                    if let Err(e) = req.as_ref().lone_value() {
                        return Lost::Line(format!("input {} on {}: {e}", inp.line.line, req.as_ref().chip_path().display()));
                    }
                }
            }
            (i, ev) = next_edge(inputs) => {
                let (inp, req) = &inputs[i];
                match ev {
                    Ok(ev) => {
                        let active = ev.kind == EdgeKind::Rising;
                        debug!(line = %inp.line.line, active, "input edge");
                        if let Some(hw) = edge_event(&inp.kind, active)
                            && events.send(hw).await.is_err()
                        {
                            return Lost::Cancelled;
                        }
                    }
                    Err(e) => {
                        return Lost::Line(format!("input {} on {}: {e}", inp.line.line, req.as_ref().chip_path().display()));
                    }
                }
            }
        }
    }
}

/// Requests the outputs (at their last level) and the inputs again.
fn request_again(
    configs: &[InputConfig],
    outputs: &Outputs,
) -> Result<Vec<(InputConfig, AsyncRequest)>, GpioError> {
    let mut slots = outputs.lock();
    let mut fresh = Vec::with_capacity(slots.len());
    for slot in slots.iter() {
        fresh.push(request_output(slot, slot.active)?);
    }
    let inputs = request_inputs(configs)?;
    for (slot, req) in slots.iter_mut().zip(fresh) {
        slot.chip = req.chip_path();
        slot.req = Some(req);
    }
    Ok(inputs
        .into_iter()
        .map(|(c, r)| (c, AsyncRequest::new(r)))
        .collect())
}

async fn watch(
    mut inputs: Vec<(InputConfig, AsyncRequest)>,
    configs: Vec<InputConfig>,
    outputs: Arc<Outputs>,
    events: mpsc::Sender<HwEvent>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(REQUEST_AGAIN_INITIAL, REQUEST_AGAIN_MAX);
    loop {
        let up_since = Instant::now();
        let reason = match watch_lines(&inputs, &outputs, &events, &cancel).await {
            Lost::Cancelled => return,
            Lost::Line(reason) => reason,
        };
        backoff.lines_were_up(up_since.elapsed());
        let chips = {
            let mut slots = outputs.lock();
            let mut paths: Vec<PathBuf> = slots.iter().map(|s| s.chip.clone()).collect();
            paths.extend(inputs.iter().map(|(_, r)| r.as_ref().chip_path()));
            // Release everything: a removed chip's device is freed only
            // once nobody holds its lines.
            for s in slots.iter_mut() {
                s.req = None;
            }
            inputs.clear();
            chip_list(&paths)
        };
        error!(chip = %chips, reason = %reason, "GPIO lines lost: chip gone; door lines released, requesting them again until it returns");
        let _ = events.send(HwEvent::Fault { active: true }).await;
        let down_since = Instant::now();
        let mut attempt = 0u32;
        loop {
            let wait = backoff.next_wait();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            attempt += 1;
            match request_again(&configs, &outputs) {
                Ok(fresh) => {
                    inputs = fresh;
                    break;
                }
                Err(e) => {
                    // Retries of a chip that stays away: log the first few,
                    // then once a minute at the longest wait.
                    if attempt <= 5 || attempt.is_multiple_of(12) {
                        warn!(chip = %chips, attempt, error = %e, "GPIO lines still missing");
                    }
                }
            }
        }
        // A failure noticed on the old lines while they were being given up
        // is not news about the new ones.
        let _ = outputs.lost.notified().now_or_never();
        let now_on = {
            let mut paths: Vec<PathBuf> = outputs.lock().iter().map(|s| s.chip.clone()).collect();
            paths.extend(inputs.iter().map(|(_, r)| r.as_ref().chip_path()));
            chip_list(&paths)
        };
        info!(
            chip = %now_on,
            was = %chips,
            attempt,
            down_ms = down_since.elapsed().as_millis() as u64,
            "GPIO lines back: door lines requested again"
        );
        report_levels(&inputs, &events);
        let _ = events.send(HwEvent::Fault { active: false }).await;
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
    fn request_again_waits_double_up_to_the_longest_and_restart_after_a_healthy_spell() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        // Lines that failed again at once: keep the long wait.
        b.lines_were_up(Duration::from_millis(300));
        assert_eq!(b.next_wait(), Duration::from_secs(5));
        // Up for the longest wait or more: the chip was healthy; start over.
        b.lines_were_up(Duration::from_secs(5));
        assert_eq!(b.next_wait(), Duration::from_millis(200));
        assert_eq!(b.next_wait(), Duration::from_millis(400));
    }

    fn gone_outputs() -> Outputs {
        let s = load_from_strs(&[("board.toml", BOARD)]).unwrap_or_else(|e| panic!("{e}"));
        let relay = s.gpio.relay.clone().expect("relay");
        let led = s.leds[0].line.clone().expect("LED line");
        Outputs {
            slots: Mutex::new(vec![
                OutputSlot {
                    key: "gpio.relay".into(),
                    what: format!("relay {}", relay.line),
                    spec: relay,
                    chip: PathBuf::from("/dev/gpiochip4"),
                    req: None,
                    active: false,
                },
                OutputSlot {
                    key: "leds[0]".into(),
                    what: format!("LED status {}", led.line),
                    spec: led,
                    chip: PathBuf::from("/dev/gpiochip4"),
                    req: None,
                    active: false,
                },
            ]),
            lost: Notify::new(),
        }
    }

    #[test]
    fn while_the_chip_is_gone_the_relay_fails_naming_chip_and_line_and_leds_remember() {
        let outputs = Arc::new(gone_outputs());
        let mut relay = GpioRelay(outputs.clone());
        let e = relay.set(true).expect_err("no line to drive");
        assert_eq!(
            e.to_string(),
            "/dev/gpiochip4: line `relay `DOOR_RELAY``: the GPIO chip is gone; the line is requested again when it returns"
        );
        let mut led = GpioLed {
            name: "status".into(),
            outputs: outputs.clone(),
            idx: 1,
        };
        led.set(LedPattern::SlowBlink, true)
            .expect("an LED that cannot blink is no error");
        // The levels asked for are what the lines get when requested again.
        let levels: Vec<bool> = outputs.lock().iter().map(|s| s.active).collect();
        assert_eq!(levels, [true, true]);
        relay.set(false).expect_err("still gone");
        led.set(LedPattern::SlowBlink, false).expect("LED");
        let levels: Vec<bool> = outputs.lock().iter().map(|s| s.active).collect();
        assert_eq!(levels, [false, false]);
    }

    #[test]
    fn requesting_again_while_the_lines_are_missing_fails_and_keeps_them_released() {
        let outputs = gone_outputs();
        let e = request_again(&[], &outputs).expect_err("no chip has DOOR_RELAY here");
        assert!(
            e.to_string()
                .contains("`gpio.relay`: no GPIO line is named `DOOR_RELAY`"),
            "{e}"
        );
        assert!(outputs.lock().iter().all(|s| s.req.is_none()));
    }

    #[test]
    fn chip_lists_for_log_lines_are_sorted_and_unique() {
        let paths = [
            PathBuf::from("/dev/gpiochip2"),
            PathBuf::new(),
            PathBuf::from("/dev/gpiochip0"),
            PathBuf::from("/dev/gpiochip2"),
        ];
        assert_eq!(chip_list(&paths), "/dev/gpiochip0,/dev/gpiochip2");
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
