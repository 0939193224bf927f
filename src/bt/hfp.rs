//! The Audio Gateway side of a Hands-Free Profile (1.8) service level
//! connection, as a sans-I/O state machine.
//!
//! Bytes read from the RFCOMM channel go in through [`HfpMachine::handle_bytes`],
//! the door call's progress through [`HfpMachine::handle_call`], and bytes to
//! write, plus events for the controller, come out of
//! [`HfpMachine::poll_output`]. Like the call machine it never reads a clock:
//! every input carries `now`, and its timers (SLC setup, codec negotiation,
//! repeated RING) reduce to one deadline, [`HfpMachine::poll_timeout`].
//!
//! The headset's input is never trusted: an unknown, malformed, misplaced or
//! oversized command gets `ERROR` and an [`HfpEvent::Rejected`] to log, never
//! a panic, and the line buffer never holds more than
//! [`HfpSettings::max_line`] bytes.
//!
//! Order of the service level connection (HFP 1.8), as the headset
//! drives it:
//!
//! 1. `AT+BRSF=<hf features>` → `+BRSF: <ag features>`, `OK`
//! 2. `AT+BAC=<codecs>` → `OK` (only when both sides negotiate codecs)
//! 3. `AT+CIND=?` → the indicator list; `AT+CIND?` → their values
//! 4. `AT+CMER=3,0,0,1` → `OK`: indicator reporting on
//! 5. `AT+CHLD=?` → `+CHLD: (0,1,2)` (only when both sides do three-way
//!    calling)
//!
//! after which the connection is established ([`HfpEvent::SlcEstablished`]).
//! Before an audio (SCO) connection the gateway picks a codec with `+BCS`,
//! answered by `AT+BCS` ([`HfpMachine::connect_audio`]).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Features a hands-free unit announces in `AT+BRSF` (HFP 1.8).
pub mod hf_feature {
    pub const EC_NR: u32 = 1 << 0;
    pub const THREE_WAY: u32 = 1 << 1;
    pub const CLI: u32 = 1 << 2;
    pub const VOICE_RECOGNITION: u32 = 1 << 3;
    pub const REMOTE_VOLUME: u32 = 1 << 4;
    pub const ENHANCED_CALL_STATUS: u32 = 1 << 5;
    pub const ENHANCED_CALL_CONTROL: u32 = 1 << 6;
    pub const CODEC_NEGOTIATION: u32 = 1 << 7;
    pub const HF_INDICATORS: u32 = 1 << 8;
    pub const ESCO_S4: u32 = 1 << 9;
}

/// Features the gateway announces in `+BRSF` (HFP 1.8).
pub mod ag_feature {
    pub const THREE_WAY: u32 = 1 << 0;
    pub const EC_NR: u32 = 1 << 1;
    pub const VOICE_RECOGNITION: u32 = 1 << 2;
    pub const IN_BAND_RING: u32 = 1 << 3;
    pub const VOICE_TAG: u32 = 1 << 4;
    pub const REJECT_CALL: u32 = 1 << 5;
    pub const ENHANCED_CALL_STATUS: u32 = 1 << 6;
    pub const ENHANCED_CALL_CONTROL: u32 = 1 << 7;
    pub const EXTENDED_ERRORS: u32 = 1 << 8;
    pub const CODEC_NEGOTIATION: u32 = 1 << 9;
    pub const HF_INDICATORS: u32 = 1 << 10;
    pub const ESCO_S4: u32 = 1 << 11;
}

/// An audio codec of the SCO link, with its HFP codec id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Narrow band, 8 kHz; mandatory, id 1.
    Cvsd,
    /// Wide band, 16 kHz; id 2.
    Msbc,
}

impl Codec {
    pub fn id(self) -> u8 {
        match self {
            Codec::Cvsd => 1,
            Codec::Msbc => 2,
        }
    }

    pub fn from_id(id: u32) -> Option<Codec> {
        match id {
            1 => Some(Codec::Cvsd),
            2 => Some(Codec::Msbc),
            _ => None,
        }
    }

    /// Sample rate of the codec's PCM side.
    pub fn sample_rate(self) -> u32 {
        match self {
            Codec::Cvsd => 8_000,
            Codec::Msbc => 16_000,
        }
    }
}

/// Settings of one service level connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfpSettings {
    /// Choose mSBC when the headset offers it; otherwise CVSD.
    pub prefer_msbc: bool,
    /// Announce three-way calling (then the headset asks `AT+CHLD=?`).
    pub three_way: bool,
    /// Longest command line kept; longer lines are dropped with `ERROR`.
    pub max_line: usize,
    /// The connection must be established this long after it opened.
    pub slc_timeout: Duration,
    /// How long the headset has to confirm a proposed codec.
    pub codec_timeout: Duration,
    /// RING is repeated this often while the door call rings.
    pub ring_interval: Duration,
    /// The operator name given to `AT+COPS?` (at most 16 characters used).
    pub operator: String,
}

impl Default for HfpSettings {
    fn default() -> Self {
        HfpSettings {
            prefer_msbc: true,
            three_way: false,
            max_line: 256,
            slc_timeout: Duration::from_secs(10),
            codec_timeout: Duration::from_secs(3),
            ring_interval: Duration::from_secs(3),
            operator: "intercomd".to_owned(),
        }
    }
}

impl HfpSettings {
    /// The feature bits sent in `+BRSF`.
    pub fn ag_features(&self) -> u32 {
        // No EC_NR: the station's echo canceller and noise suppressor work
        // on its own microphone and speaker (the speaker route). On the
        // headset route the headset's own echo cancellation, next to its
        // speaker and microphone, is the right one, and announcing ours
        // would invite headsets to switch theirs off (`AT+NREC=0`).
        let mut f = ag_feature::REJECT_CALL
            | ag_feature::ENHANCED_CALL_STATUS
            | ag_feature::CODEC_NEGOTIATION;
        if self.three_way {
            f |= ag_feature::THREE_WAY;
        }
        f
    }
}

/// The door call as the headset sees it: an incoming call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DoorCall {
    /// No call.
    Idle,
    /// A visitor rings; `caller` is shown by headsets that asked for it
    /// (`+CLIP`), e.g. the button's name.
    Ringing { caller: String },
    /// The call is answered (here or by a resident).
    Active,
}

/// Indicators in `AT+CIND=?` order; `+CIEV` numbers them from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indicator {
    Service,
    Call,
    CallSetup,
    CallHeld,
    Signal,
    Roam,
    BattChg,
}

const INDICATORS: [(Indicator, &str, &str); 7] = [
    (Indicator::Service, "service", "(0,1)"),
    (Indicator::Call, "call", "(0,1)"),
    (Indicator::CallSetup, "callsetup", "(0-3)"),
    (Indicator::CallHeld, "callheld", "(0-2)"),
    (Indicator::Signal, "signal", "(0-5)"),
    (Indicator::Roam, "roam", "(0,1)"),
    (Indicator::BattChg, "battchg", "(0-5)"),
];

impl Indicator {
    /// 1-based position in the `+CIND` list.
    pub fn number(self) -> usize {
        self as usize + 1
    }

    /// The largest value the indicator takes.
    pub fn max(self) -> u8 {
        match self {
            Indicator::Service | Indicator::Call | Indicator::Roam => 1,
            Indicator::CallSetup => 3,
            Indicator::CallHeld => 2,
            Indicator::Signal | Indicator::BattChg => 5,
        }
    }

    /// Call-related indicators can never be deactivated with `AT+BIA`.
    fn always_on(self) -> bool {
        matches!(
            self,
            Indicator::Call | Indicator::CallSetup | Indicator::CallHeld
        )
    }
}

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a command this gateway knows.
    Unknown,
    /// A known command with arguments that do not parse or are out of range.
    Malformed,
    /// Not valid in the current state (e.g. `ATA` without a ringing call).
    NotAllowed,
    /// A feature this gateway does not offer (voice recognition, dialling).
    NotSupported,
    /// The line was longer than the buffer and was dropped.
    TooLong,
    /// The line was not printable ASCII.
    NotText,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unknown => "unknown",
            RejectReason::Malformed => "malformed",
            RejectReason::NotAllowed => "not_allowed",
            RejectReason::NotSupported => "not_supported",
            RejectReason::TooLong => "too_long",
            RejectReason::NotText => "not_text",
        }
    }
}

/// What the controller learns from the headset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HfpEvent {
    /// The service level connection is up.
    SlcEstablished {
        hf_features: u32,
        /// Both sides negotiate codecs (`+BCS` before audio).
        codec_negotiation: bool,
    },
    /// The connection was not established in time: close the channel.
    SlcTimeout,
    /// The headset's button answered the ringing call (`ATA`).
    AnswerRequested,
    /// The headset rejected the ringing call or hung up (`AT+CHUP`).
    HangupRequested,
    /// Speaker gain, 0..=15 (`AT+VGS`).
    SpeakerGain(u8),
    /// Microphone gain, 0..=15 (`AT+VGM`).
    MicGain(u8),
    /// The headset does its own echo cancelling and noise reduction and
    /// asks the gateway to stop its own on the headset path (`AT+NREC=0`).
    EchoCancelOff,
    /// A codec is agreed: the SCO link may be opened with it.
    AudioReady { codec: Codec },
    /// Codec negotiation failed (no answer, or refused twice).
    CodecFailed,
    /// A command was refused with `ERROR`. `line` is the command (truncated
    /// to 64 bytes, non-printable bytes escaped) for the log.
    Rejected { line: String, reason: RejectReason },
}

/// What the machine wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HfpOutput {
    /// Write these bytes to the RFCOMM channel.
    Transmit(Vec<u8>),
    Event(HfpEvent),
}

/// [`HfpMachine::connect_audio`] could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AudioSetupError {
    #[error("the service level connection is not established")]
    NoSlc,
}

/// Where the service level connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlcState {
    /// Commands of the setup sequence are arriving.
    Connecting,
    /// Indicator reporting is on; waiting for `AT+CHLD=?`.
    AwaitingChld,
    Established,
    /// Not established in time; the machine answers nothing more.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Slc,
    Codec,
    Ring,
}

const TIMERS: [Timer; 3] = [Timer::Slc, Timer::Codec, Timer::Ring];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Negotiation {
    proposed: Codec,
    /// Proposals made so far; the second one is the last.
    attempts: u8,
}

/// The gateway's side of one service level connection. See the module
/// documentation.
#[derive(Debug)]
pub struct HfpMachine {
    settings: HfpSettings,
    state: SlcState,
    outputs: VecDeque<HfpOutput>,
    /// Bytes of the line being received.
    line: Vec<u8>,
    /// The current line overflowed: drop bytes until its end.
    discarding: bool,
    hf_features: u32,
    hf_codecs: Vec<Codec>,
    reporting: bool,
    clip: bool,
    /// `AT+BIA` activation, by indicator position.
    active: [bool; 7],
    values: [u8; 7],
    call: DoorCall,
    negotiation: Option<Negotiation>,
    codec: Option<Codec>,
    timers: [Option<Instant>; 3],
}

impl HfpMachine {
    /// A machine for a channel that has just opened at `now`.
    pub fn new(settings: HfpSettings, now: Instant) -> Self {
        let slc_timeout = settings.slc_timeout;
        let mut m = HfpMachine {
            settings,
            state: SlcState::Connecting,
            outputs: VecDeque::new(),
            line: Vec::new(),
            discarding: false,
            hf_features: 0,
            hf_codecs: Vec::new(),
            reporting: false,
            clip: false,
            active: [true; 7],
            // Service present, full signal and battery: the station is
            // mains powered and "the network" is the door system itself.
            values: [1, 0, 0, 0, 5, 0, 5],
            call: DoorCall::Idle,
            negotiation: None,
            codec: None,
            timers: [None; 3],
        };
        m.set_timer(Timer::Slc, Some(now + slc_timeout));
        m
    }

    // ---- getters ----

    pub fn settings(&self) -> &HfpSettings {
        &self.settings
    }

    /// Changes [`HfpSettings::prefer_msbc`] for the codec connections
    /// from now on (one under way is not changed).
    pub fn set_prefer_msbc(&mut self, prefer: bool) {
        self.settings.prefer_msbc = prefer;
    }

    pub fn state(&self) -> SlcState {
        self.state
    }

    pub fn established(&self) -> bool {
        self.state == SlcState::Established
    }

    /// Features from the headset's `AT+BRSF` (0 before it).
    pub fn hf_features(&self) -> u32 {
        self.hf_features
    }

    /// Codecs from the headset's last `AT+BAC`.
    pub fn hf_codecs(&self) -> &[Codec] {
        &self.hf_codecs
    }

    /// Both sides negotiate codecs.
    pub fn codec_negotiation(&self) -> bool {
        self.hf_features & hf_feature::CODEC_NEGOTIATION != 0
            && self.settings.ag_features() & ag_feature::CODEC_NEGOTIATION != 0
    }

    /// The codec last agreed, if any.
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// A `+BCS` proposal is waiting for the headset's answer.
    pub fn negotiating(&self) -> bool {
        self.negotiation.is_some()
    }

    /// The codec of the `+BCS` proposal waiting for the headset's answer
    /// and which attempt it is (1, or 2 for the CVSD fallback), if any.
    pub fn proposal(&self) -> Option<(Codec, u8)> {
        self.negotiation.map(|n| (n.proposed, n.attempts))
    }

    pub fn indicator(&self, indicator: Indicator) -> u8 {
        self.values[indicator as usize]
    }

    /// Bytes of an unfinished command line held in the buffer.
    pub fn buffered(&self) -> usize {
        self.line.len()
    }

    // ---- outputs ----

    /// The next output. Transmits come in the order they must be written.
    pub fn poll_output(&mut self) -> Option<HfpOutput> {
        self.outputs.pop_front()
    }

    /// The earliest deadline: SLC setup, codec answer, or the next RING.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    // ---- inputs ----

    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in TIMERS {
            if self.timers[timer as usize].is_some_and(|t| t <= now) {
                self.set_timer(timer, None);
                self.on_timer(timer, now);
            }
        }
    }

    /// Bytes read from the channel, in any split: lines end at CR or LF (any
    /// mix), empty lines are ignored.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) {
        for &b in bytes {
            if self.state == SlcState::Failed {
                return;
            }
            if b == b'\r' || b == b'\n' {
                if self.discarding {
                    self.discarding = false;
                    self.line.clear();
                    continue;
                }
                if self.line.is_empty() {
                    continue;
                }
                let line = std::mem::take(&mut self.line);
                self.handle_line(&line, now);
                // Keep the allocation bounded and reusable.
                self.line = line;
                self.line.clear();
            } else if self.discarding {
                continue;
            } else if self.line.len() >= self.settings.max_line {
                let shown = printable(&self.line);
                self.line.clear();
                self.discarding = true;
                self.reject(shown, RejectReason::TooLong);
            } else {
                self.line.push(b);
            }
        }
    }

    /// The door call changed: indicators, RING and `+CLIP` follow it.
    pub fn handle_call(&mut self, call: DoorCall, now: Instant) {
        if self.call == call {
            return;
        }
        let before = std::mem::replace(&mut self.call, call.clone());
        match (&before, &call) {
            (_, DoorCall::Ringing { .. }) => {
                if self.values[Indicator::Call as usize] == 1 {
                    self.set_indicator(Indicator::Call, 0);
                }
                self.set_indicator(Indicator::CallSetup, 1);
                self.ring(now);
            }
            (_, DoorCall::Active) => {
                self.set_timer(Timer::Ring, None);
                // Call first, then callsetup, as headsets expect when answering.
                self.set_indicator(Indicator::Call, 1);
                self.set_indicator(Indicator::CallSetup, 0);
            }
            (_, DoorCall::Idle) => {
                self.set_timer(Timer::Ring, None);
                self.set_indicator(Indicator::CallSetup, 0);
                self.set_indicator(Indicator::Call, 0);
            }
        }
    }

    /// Battery level 0..=5 (clamped) for the `battchg` indicator.
    pub fn set_battery(&mut self, level: u8) {
        self.set_indicator(Indicator::BattChg, level.min(5));
    }

    // ---- commands ----

    /// Agrees a codec before the controller opens the SCO link. Without codec
    /// negotiation CVSD is ready at once; otherwise `+BCS` is sent and
    /// [`HfpEvent::AudioReady`] follows the headset's `AT+BCS`.
    pub fn connect_audio(&mut self, now: Instant) -> Result<(), AudioSetupError> {
        if self.state != SlcState::Established {
            return Err(AudioSetupError::NoSlc);
        }
        if !self.codec_negotiation() {
            self.codec = Some(Codec::Cvsd);
            self.event(HfpEvent::AudioReady { codec: Codec::Cvsd });
            return Ok(());
        }
        if self.negotiation.is_none() {
            let codec = self.preferred_codec();
            self.propose(codec, 1, now);
        }
        Ok(())
    }

    // ---- internals ----

    fn preferred_codec(&self) -> Codec {
        if self.settings.prefer_msbc && self.hf_codecs.contains(&Codec::Msbc) {
            Codec::Msbc
        } else {
            Codec::Cvsd
        }
    }

    fn propose(&mut self, codec: Codec, attempts: u8, now: Instant) {
        self.negotiation = Some(Negotiation {
            proposed: codec,
            attempts,
        });
        self.codec = None;
        self.send_line(&format!("+BCS: {}", codec.id()));
        self.set_timer(Timer::Codec, Some(now + self.settings.codec_timeout));
    }

    /// The current proposal failed: try CVSD once, else give up.
    fn negotiation_failed(&mut self, now: Instant) {
        match self.negotiation.take() {
            Some(n) if n.attempts < 2 => self.propose(Codec::Cvsd, n.attempts + 1, now),
            _ => {
                self.set_timer(Timer::Codec, None);
                self.event(HfpEvent::CodecFailed);
            }
        }
    }

    fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Slc => {
                if self.state != SlcState::Established {
                    self.state = SlcState::Failed;
                    self.negotiation = None;
                    self.timers = [None; 3];
                    self.event(HfpEvent::SlcTimeout);
                }
            }
            Timer::Codec => {
                if self.negotiation.is_some() {
                    self.negotiation_failed(now);
                }
            }
            Timer::Ring => self.ring(now),
        }
    }

    /// Sends RING (and `+CLIP` when asked for) and schedules the next one.
    fn ring(&mut self, now: Instant) {
        let DoorCall::Ringing { caller } = &self.call else {
            return;
        };
        let caller = clip_text(caller);
        if self.state == SlcState::Established {
            self.send_line("RING");
            if self.clip {
                self.send_line(&format!("+CLIP: \"{caller}\",129"));
            }
        }
        self.set_timer(Timer::Ring, Some(now + self.settings.ring_interval));
    }

    fn set_timer(&mut self, timer: Timer, at: Option<Instant>) {
        self.timers[timer as usize] = at;
    }

    fn set_indicator(&mut self, indicator: Indicator, value: u8) {
        let i = indicator as usize;
        let value = value.min(indicator.max());
        if self.values[i] == value {
            return;
        }
        self.values[i] = value;
        if self.state == SlcState::Established && self.reporting && self.active[i] {
            self.send_line(&format!("+CIEV: {},{}", indicator.number(), value));
        }
    }

    fn event(&mut self, event: HfpEvent) {
        self.outputs.push_back(HfpOutput::Event(event));
    }

    /// A result code or unsolicited line, framed as `\r\n<text>\r\n`.
    fn send_line(&mut self, text: &str) {
        let mut bytes = Vec::with_capacity(text.len() + 4);
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.outputs.push_back(HfpOutput::Transmit(bytes));
    }

    fn ok(&mut self) {
        self.send_line("OK");
    }

    fn reject(&mut self, line: String, reason: RejectReason) {
        self.send_line("ERROR");
        self.event(HfpEvent::Rejected { line, reason });
    }

    fn handle_line(&mut self, raw: &[u8], now: Instant) {
        let shown = printable(raw);
        if !raw.iter().all(|b| (0x20..0x7f).contains(b)) {
            self.reject(shown, RejectReason::NotText);
            return;
        }
        // Checked above: printable ASCII only.
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        let Some(rest) = text
            .get(..2)
            .filter(|p| p.eq_ignore_ascii_case("AT"))
            .map(|_| &text[2..])
        else {
            self.reject(shown, RejectReason::Unknown);
            return;
        };
        let command = Command::parse(rest);
        if let Err(reason) = self.execute(command, now) {
            self.reject(shown, reason);
        }
    }

    fn execute(&mut self, command: Command, now: Instant) -> Result<(), RejectReason> {
        use Command as C;
        use RejectReason as R;
        match command {
            C::Basic(name) if name.eq_ignore_ascii_case("A") => {
                if !self.established() || !matches!(self.call, DoorCall::Ringing { .. }) {
                    return Err(R::NotAllowed);
                }
                self.ok();
                self.event(HfpEvent::AnswerRequested);
            }
            C::Basic(name) if name.starts_with(['D', 'd']) => return Err(R::NotSupported),
            C::Basic(_) => return Err(R::Unknown),
            C::Extended { name, form } => self.extended(&name, form, now)?,
        }
        Ok(())
    }

    fn extended(&mut self, name: &str, form: Form, now: Instant) -> Result<(), RejectReason> {
        use Form as F;
        use RejectReason as R;
        match (name, form) {
            ("BRSF", F::Set(args)) => {
                let [features] = numbers::<1>(&args)?;
                self.hf_features = features;
                let ag = self.settings.ag_features();
                self.send_line(&format!("+BRSF: {ag}"));
                self.ok();
            }
            ("BAC", F::Set(args)) => self.bac(&args, now)?,
            ("CIND", F::Test) => {
                let list: Vec<String> = INDICATORS
                    .iter()
                    .map(|(_, name, range)| format!("(\"{name}\",{range})"))
                    .collect();
                self.send_line(&format!("+CIND: {}", list.join(",")));
                self.ok();
            }
            ("CIND", F::Read) => {
                let values: Vec<String> = self.values.iter().map(u8::to_string).collect();
                self.send_line(&format!("+CIND: {}", values.join(",")));
                self.ok();
            }
            ("CMER", F::Set(args)) => self.cmer(&args)?,
            ("CHLD", F::Test) => self.chld_test()?,
            // The door call is the only call: nothing to hold or release.
            ("CHLD", _) => return Err(R::NotSupported),
            ("BIA", F::Set(args)) => self.bia(&args)?,
            ("BCS", F::Set(args)) => self.bcs(&args, now)?,
            ("BCC", F::Action) => self.bcc(now)?,
            ("CHUP", F::Action) => {
                if !self.established() || self.call == DoorCall::Idle {
                    return Err(R::NotAllowed);
                }
                self.ok();
                self.event(HfpEvent::HangupRequested);
            }
            (kind @ ("VGS" | "VGM"), F::Set(args)) => self.gain(kind, &args)?,
            ("NREC", F::Set(args)) => match numbers::<1>(&args)? {
                [0] => {
                    self.ok();
                    self.event(HfpEvent::EchoCancelOff);
                }
                // Only switching off is defined.
                _ => return Err(R::Malformed),
            },
            ("BVRA", _) => return Err(R::NotSupported),
            ("CLIP", F::Set(args)) => {
                let [on] = numbers::<1>(&args)?;
                if on > 1 {
                    return Err(R::Malformed);
                }
                self.clip = on == 1;
                self.ok();
            }
            ("CCWA", F::Set(args)) => {
                let [on] = numbers::<1>(&args)?;
                if on > 1 {
                    return Err(R::Malformed);
                }
                self.ok();
            }
            ("CLCC", F::Action) => self.clcc(),
            ("COPS", F::Set(args)) => {
                // Only "3,0": long alphanumeric format.
                if args.replace(' ', "") != "3,0" {
                    return Err(R::Malformed);
                }
                self.ok();
            }
            ("COPS", F::Read) => {
                let name = clip_text(&self.settings.operator);
                let name: String = name.chars().take(16).collect();
                self.send_line(&format!("+COPS: 0,0,\"{name}\""));
                self.ok();
            }
            ("CNUM", F::Action) => self.ok(),
            ("BTRH", F::Read) => self.ok(),
            (
                "BRSF" | "BAC" | "CIND" | "CMER" | "BIA" | "BCS" | "BCC" | "CHUP" | "VGS" | "VGM"
                | "NREC" | "CLIP" | "CCWA" | "CLCC" | "COPS" | "CNUM" | "BTRH",
                _,
            ) => return Err(R::Malformed),
            _ => return Err(R::Unknown),
        }
        Ok(())
    }

    /// `AT+BAC`: the codecs the headset has.
    fn bac(&mut self, args: &str, now: Instant) -> Result<(), RejectReason> {
        use RejectReason as R;
        if !self.codec_negotiation() {
            return Err(R::NotAllowed);
        }
        let mut codecs = Vec::new();
        for arg in args.split(',') {
            let id = number(arg)?;
            // Unknown codec ids are legal and ignored.
            if let Some(codec) = Codec::from_id(id)
                && !codecs.contains(&codec)
            {
                codecs.push(codec);
            }
        }
        if !codecs.contains(&Codec::Cvsd) {
            // CVSD is mandatory in every list.
            return Err(R::Malformed);
        }
        self.hf_codecs = codecs;
        self.ok();
        self.codecs_changed(now);
        Ok(())
    }

    /// `AT+CMER`: indicator reporting on or off.
    fn cmer(&mut self, args: &str) -> Result<(), RejectReason> {
        use RejectReason as R;
        let parts: Vec<&str> = args.split(',').map(str::trim).collect();
        // <mode>,<keyp>,<disp>,<ind>: only mode 3 with ind 0 or 1.
        let ind = match parts.as_slice() {
            ["3", _, _, ind] | ["3", _, _, ind, ..] => number(ind)?,
            _ => return Err(R::Malformed),
        };
        if ind > 1 {
            return Err(R::Malformed);
        }
        self.reporting = ind == 1;
        self.ok();
        if self.state == SlcState::Connecting && self.reporting {
            if self.three_way_both() {
                self.state = SlcState::AwaitingChld;
            } else {
                self.establish();
            }
        }
        Ok(())
    }

    /// `AT+BIA`: which indicators the headset wants.
    fn bia(&mut self, args: &str) -> Result<(), RejectReason> {
        use RejectReason as R;
        let mut active = self.active;
        for (i, arg) in args.split(',').enumerate() {
            let arg = arg.trim();
            if i >= active.len() {
                return Err(R::Malformed);
            }
            // An empty entry leaves that indicator as it is.
            if arg.is_empty() {
                continue;
            }
            active[i] = match arg {
                "0" => INDICATORS[i].0.always_on(),
                "1" => true,
                _ => return Err(R::Malformed),
            };
        }
        self.active = active;
        self.ok();
        Ok(())
    }

    /// `AT+BCS`: the headset confirms the proposed codec.
    fn bcs(&mut self, args: &str, now: Instant) -> Result<(), RejectReason> {
        use RejectReason as R;
        let [id] = numbers::<1>(args)?;
        let Some(n) = self.negotiation else {
            return Err(R::NotAllowed);
        };
        if Codec::from_id(id) != Some(n.proposed) {
            self.send_line("ERROR");
            self.event(HfpEvent::Rejected {
                line: format!("AT+BCS={id}"),
                reason: R::NotAllowed,
            });
            self.negotiation_failed(now);
            return Ok(());
        }
        self.negotiation = None;
        self.set_timer(Timer::Codec, None);
        self.codec = Some(n.proposed);
        self.ok();
        self.event(HfpEvent::AudioReady { codec: n.proposed });
        Ok(())
    }

    /// `AT+VGS`, `AT+VGM`: speaker or microphone gain.
    fn gain(&mut self, kind: &str, args: &str) -> Result<(), RejectReason> {
        use RejectReason as R;
        // Volume levels are 0..=15 for both the speaker and the mic.
        let [gain] = numbers::<1>(args)?;
        let gain = u8::try_from(gain)
            .ok()
            .filter(|g| *g <= 15)
            .ok_or(R::Malformed)?;
        self.ok();
        self.event(if kind == "VGS" {
            HfpEvent::SpeakerGain(gain)
        } else {
            HfpEvent::MicGain(gain)
        });
        Ok(())
    }

    /// `AT+CHLD=?`: three-way calling, for the headset that asks.
    fn chld_test(&mut self) -> Result<(), RejectReason> {
        use RejectReason as R;
        if !self.three_way_both() {
            return Err(R::NotSupported);
        }
        self.send_line("+CHLD: (0,1,2)");
        self.ok();
        if self.state == SlcState::AwaitingChld {
            self.establish();
        }
        Ok(())
    }

    /// `AT+BCC`: the headset asks for a codec connection.
    fn bcc(&mut self, now: Instant) -> Result<(), RejectReason> {
        use RejectReason as R;
        if !self.established() || !self.codec_negotiation() {
            return Err(R::NotAllowed);
        }
        self.ok();
        if self.negotiation.is_none() {
            let codec = self.preferred_codec();
            self.propose(codec, 1, now);
        }
        Ok(())
    }

    /// `AT+CLCC`: the list of current calls (the door call or none).
    fn clcc(&mut self) {
        match self.call {
            DoorCall::Idle => {}
            // <idx>,<dir: incoming>,<status>,<mode: voice>,<mpty: no>
            DoorCall::Ringing { .. } => self.send_line("+CLCC: 1,1,4,0,0"),
            DoorCall::Active => self.send_line("+CLCC: 1,1,0,0,0"),
        }
        self.ok();
    }

    fn three_way_both(&self) -> bool {
        self.settings.three_way && self.hf_features & hf_feature::THREE_WAY != 0
    }

    fn establish(&mut self) {
        self.state = SlcState::Established;
        self.set_timer(Timer::Slc, None);
        self.event(HfpEvent::SlcEstablished {
            hf_features: self.hf_features,
            codec_negotiation: self.codec_negotiation(),
        });
    }

    /// A new `AT+BAC`: a codec no longer offered is forgotten, and a
    /// proposal under way is restarted with a codec still on the list.
    fn codecs_changed(&mut self, now: Instant) {
        if let Some(codec) = self.codec
            && !self.hf_codecs.contains(&codec)
        {
            self.codec = None;
        }
        if let Some(n) = self.negotiation
            && !self.hf_codecs.contains(&n.proposed)
        {
            let codec = self.preferred_codec();
            self.propose(codec, n.attempts, now);
        }
    }
}

/// One command after `AT`.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// `ATA`, `ATD…`: a basic command, its text.
    Basic(String),
    /// `AT+NAME…`, name uppercased.
    Extended { name: String, form: Form },
}

#[derive(Debug, PartialEq, Eq)]
enum Form {
    /// `AT+X`
    Action,
    /// `AT+X=?`
    Test,
    /// `AT+X?`
    Read,
    /// `AT+X=args`
    Set(String),
}

impl Command {
    fn parse(rest: &str) -> Command {
        let Some(ext) = rest.strip_prefix('+') else {
            return Command::Basic(rest.trim().to_owned());
        };
        let end = ext
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(ext.len());
        let name = ext[..end].to_ascii_uppercase();
        let tail = ext[end..].trim();
        let form = if tail.is_empty() {
            Form::Action
        } else if tail == "?" {
            Form::Read
        } else if let Some(args) = tail.strip_prefix('=') {
            let args = args.trim();
            if args == "?" {
                Form::Test
            } else {
                Form::Set(args.to_owned())
            }
        } else {
            // Garbage after the name: keep it as an unknown command.
            return Command::Extended {
                name: format!("{name}{tail}"),
                form: Form::Action,
            };
        };
        Command::Extended { name, form }
    }
}

/// A decimal argument up to `u32::MAX`.
fn number(text: &str) -> Result<u32, RejectReason> {
    let text = text.trim();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RejectReason::Malformed);
    }
    text.parse().map_err(|_| RejectReason::Malformed)
}

/// Exactly `N` decimal arguments.
fn numbers<const N: usize>(args: &str) -> Result<[u32; N], RejectReason> {
    let mut out = [0; N];
    let mut parts = args.split(',');
    for slot in &mut out {
        *slot = number(parts.next().ok_or(RejectReason::Malformed)?)?;
    }
    if parts.next().is_some() {
        return Err(RejectReason::Malformed);
    }
    Ok(out)
}

/// A line for the log: at most 64 bytes, non-printable bytes as `\xNN`.
fn printable(raw: &[u8]) -> String {
    let mut out = String::new();
    for &b in raw.iter().take(64) {
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if raw.len() > 64 {
        out.push('…');
    }
    out
}

/// Text safe inside a quoted AT string: printable ASCII without quotes,
/// at most 32 characters.
fn clip_text(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| *c != '"')
        .take(32)
        .collect()
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Cvsd => "CVSD",
            Codec::Msbc => "mSBC",
        })
    }
}
