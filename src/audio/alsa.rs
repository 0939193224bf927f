//! ALSA backend: one dedicated thread (never a tokio worker) owns the
//! capture and playback PCMs and runs the duplex loop, one 10 ms frame per
//! turn:
//!
//! 1. take the next far-end frame from the call's playback port (silence if
//!    none is queued), mix in the local tones, feed it to the echo
//!    canceller's render side and write it to the playback PCM;
//! 2. read one frame from the capture PCM, run the capture processing and
//!    hand it to the call's capture port.
//!
//! The device stays open between calls (tones play before media flows);
//! each call gets fresh ports through [`AlsaAudioHandle::try_attach`].
//! An xrun is logged and the PCM prepared again; a device that vanishes is
//! reopened with backoff while the call goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::processing::{ProcessingSettings, Processor};
use super::tones::{ToneCue, ToneMixer, ToneSettings};
use super::{
    AudioError, AudioPorts, DevicePorts, FRAME_SAMPLES, Frame, SAMPLE_RATE, port_pair, silent_frame,
};

/// What paces the duplex loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Blocking reads on the capture PCM: the sound card's clock. The only
    /// right choice for real hardware.
    Device,
    /// A 10 ms timer on the audio thread. For PCMs with no clock of their
    /// own (the `file` and `null` plugins used in tests), whose reads and
    /// writes return at once: without it the loop would spin.
    Timer,
}

impl Pacing {
    pub fn as_str(self) -> &'static str {
        match self {
            Pacing::Device => "device",
            Pacing::Timer => "timer",
        }
    }
}

/// A simple mixer control set when the device opens: the card's control
/// `name` at `volume_pct` of its range, switched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixerControl {
    pub name: String,
    pub volume_pct: u8,
}

/// Configuration of the ALSA backend.
#[derive(Debug, Clone)]
pub struct AlsaSpec {
    pub capture_device: String,
    pub playback_device: String,
    pub period_ms: u32,
    pub buffer_ms: u32,
    pub pacing: Pacing,
    /// Mixer (control) device, e.g. `hw:0`, for the controls below.
    pub mixer_device: String,
    pub capture_control: Option<MixerControl>,
    pub playback_control: Option<MixerControl>,
    pub processing: ProcessingSettings,
    pub tones: ToneSettings,
    /// Depth of the per-call capture and playback channels, in frames.
    pub port_capacity: usize,
    /// First and longest wait between attempts to reopen a vanished device.
    pub reopen_initial: Duration,
    pub reopen_max: Duration,
    /// SCHED_FIFO priority of the audio thread (1..=99); 0 keeps normal
    /// scheduling.
    pub realtime_priority: u8,
}

impl AlsaSpec {
    /// The shipped defaults for the two device names.
    pub fn new(capture_device: &str, playback_device: &str) -> Self {
        AlsaSpec {
            capture_device: capture_device.to_owned(),
            playback_device: playback_device.to_owned(),
            period_ms: 10,
            buffer_ms: 40,
            pacing: Pacing::Device,
            mixer_device: "default".into(),
            capture_control: None,
            playback_control: None,
            processing: ProcessingSettings::default(),
            tones: ToneSettings::default(),
            port_capacity: super::DEFAULT_PORT_CAPACITY,
            reopen_initial: Duration::from_millis(200),
            reopen_max: Duration::from_secs(5),
            realtime_priority: 0,
        }
    }
}

/// Errors of the ALSA backend; each names the device.
#[derive(Debug, thiserror::Error)]
pub enum AlsaError {
    // The ALSA error is part of the message rather than a `source`: it is
    // short, and callers that log only the top error must still show it.
    #[error(
        "cannot open ALSA {dir} device \"{device}\": {error} (is the sound card present? `aplay -L` lists device names)"
    )]
    Open {
        device: String,
        dir: &'static str,
        error: alsa::Error,
    },
    #[error("ALSA {dir} device \"{device}\" refuses {what}: {error}")]
    Params {
        device: String,
        dir: &'static str,
        what: String,
        error: alsa::Error,
    },
    #[error("ALSA mixer \"{device}\" control \"{control}\": {reason}")]
    Mixer {
        device: String,
        control: String,
        reason: String,
    },
    #[error("cannot start the ALSA audio thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A failed read or write, as the loop must treat it.
#[derive(Debug)]
pub(crate) enum Fault {
    /// Over- or underrun: prepare the PCM and go on.
    Xrun,
    /// The device is gone (unplugged, driver reset): reopen it.
    Gone(String),
}

fn classify(e: &alsa::Error) -> Fault {
    const EPIPE: i32 = 32;
    const ESTRPIPE: i32 = 86;
    match e.errno() {
        // A suspended device resumes like an xrun: prepare and continue.
        EPIPE | ESTRPIPE => Fault::Xrun,
        _ => Fault::Gone(e.to_string()),
    }
}

/// The loop's view of an open duplex device, so the recovery logic can be
/// tested with a fake one.
pub(crate) trait Duplex: Send {
    fn read(&mut self, frame: &mut [i16; FRAME_SAMPLES]) -> Result<(), Fault>;
    fn write(&mut self, frame: &[i16; FRAME_SAMPLES]) -> Result<(), Fault>;
    /// Prepares both PCMs again after an xrun.
    fn recover(&mut self) -> Result<(), Fault>;
}

/// Opens the device pair, for the first time or again after it vanished.
pub(crate) type Opener = Box<dyn FnMut() -> Result<Box<dyn Duplex>, AlsaError> + Send>;

struct AlsaDuplex {
    capture: PCM,
    playback: PCM,
    /// Frames of silence written ahead after (re)starting playback.
    prefill: usize,
}

fn open_pcm(device: &str, dir: Direction, spec: &AlsaSpec) -> Result<PCM, AlsaError> {
    let dname = match dir {
        Direction::Capture => "capture",
        Direction::Playback => "playback",
    };
    let pcm = PCM::new(device, dir, false).map_err(|error| AlsaError::Open {
        device: device.to_owned(),
        dir: dname,
        error,
    })?;
    let params = |what: &str| {
        let what = what.to_owned();
        move |error| AlsaError::Params {
            device: device.to_owned(),
            dir: dname,
            what,
            error,
        }
    };
    let period = i64::from(spec.period_ms) * i64::from(SAMPLE_RATE) / 1000;
    let buffer = i64::from(spec.buffer_ms) * i64::from(SAMPLE_RATE) / 1000;
    {
        let hw = HwParams::any(&pcm).map_err(params("hardware parameters"))?;
        hw.set_access(Access::RWInterleaved)
            .map_err(params("interleaved access"))?;
        hw.set_format(Format::s16())
            .map_err(params("16-bit samples (use a plug: device)"))?;
        hw.set_channels(1)
            .map_err(params("mono (use a plug: device)"))?;
        hw.set_rate(SAMPLE_RATE, ValueOr::Nearest)
            .map_err(params("48000 Hz (use a plug: device)"))?;
        hw.set_period_size_near(period, ValueOr::Nearest)
            .map_err(params("the period size"))?;
        hw.set_buffer_size_near(buffer)
            .map_err(params("the buffer size"))?;
        pcm.hw_params(&hw).map_err(params("the parameter set"))?;
    }
    {
        let sw = pcm
            .sw_params_current()
            .map_err(params("software parameters"))?;
        if dir == Direction::Playback {
            // Start once the silence written ahead is queued, not on the
            // first sample.
            sw.set_start_threshold(2 * FRAME_SAMPLES as i64)
                .map_err(params("the start threshold"))?;
        }
        pcm.sw_params(&sw).map_err(params("software parameters"))?;
    }
    pcm.prepare().map_err(params("prepare"))?;
    Ok(pcm)
}

fn set_control(device: &str, ctl: &MixerControl, capture: bool) -> Result<(), AlsaError> {
    let err = |reason: String| AlsaError::Mixer {
        device: device.to_owned(),
        control: ctl.name.clone(),
        reason,
    };
    let mixer = alsa::mixer::Mixer::new(device, false).map_err(|e| err(e.to_string()))?;
    let id = alsa::mixer::SelemId::new(&ctl.name, 0);
    let elem = mixer
        .find_selem(&id)
        .ok_or_else(|| err("no such control (`amixer scontrols` lists them)".into()))?;
    let pct = i64::from(ctl.volume_pct.min(100));
    if capture {
        let (lo, hi) = elem.get_capture_volume_range();
        elem.set_capture_volume_all(lo + (hi - lo) * pct / 100)
            .map_err(|e| err(e.to_string()))?;
        if elem.has_capture_switch() {
            elem.set_capture_switch_all(1)
                .map_err(|e| err(e.to_string()))?;
        }
    } else {
        let (lo, hi) = elem.get_playback_volume_range();
        elem.set_playback_volume_all(lo + (hi - lo) * pct / 100)
            .map_err(|e| err(e.to_string()))?;
        if elem.has_playback_switch() {
            elem.set_playback_switch_all(1)
                .map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(())
}

impl AlsaDuplex {
    fn open(spec: &AlsaSpec) -> Result<Self, AlsaError> {
        if let Some(c) = &spec.capture_control {
            set_control(&spec.mixer_device, c, true)?;
        }
        if let Some(c) = &spec.playback_control {
            set_control(&spec.mixer_device, c, false)?;
        }
        let capture = open_pcm(&spec.capture_device, Direction::Capture, spec)?;
        let playback = open_pcm(&spec.playback_device, Direction::Playback, spec)?;
        let mut d = AlsaDuplex {
            capture,
            playback,
            prefill: 2,
        };
        d.write_ahead().map_err(|f| AlsaError::Params {
            device: spec.playback_device.clone(),
            dir: "playback",
            what: format!("the first write ({f:?})"),
            error: alsa::Error::unsupported("snd_pcm_writei"),
        })?;
        Ok(d)
    }

    /// Queues a little silence so that playback does not underrun on the
    /// first frame that arrives a bit late.
    fn write_ahead(&mut self) -> Result<(), Fault> {
        let silence = [0i16; FRAME_SAMPLES];
        for _ in 0..self.prefill {
            self.write(&silence)?;
        }
        Ok(())
    }
}

impl Duplex for AlsaDuplex {
    fn read(&mut self, frame: &mut [i16; FRAME_SAMPLES]) -> Result<(), Fault> {
        let io = self.capture.io_i16().map_err(|e| classify(&e))?;
        let mut done = 0;
        // A blocking read can still return short (signals): finish the frame.
        while done < FRAME_SAMPLES {
            match io.readi(&mut frame[done..]) {
                Ok(n) => done += n,
                Err(e) => return Err(classify(&e)),
            }
        }
        Ok(())
    }

    fn write(&mut self, frame: &[i16; FRAME_SAMPLES]) -> Result<(), Fault> {
        let io = self.playback.io_i16().map_err(|e| classify(&e))?;
        let mut done = 0;
        while done < FRAME_SAMPLES {
            match io.writei(&frame[done..]) {
                Ok(n) => done += n,
                Err(e) => return Err(classify(&e)),
            }
        }
        Ok(())
    }

    fn recover(&mut self) -> Result<(), Fault> {
        // `drop` discards stale samples; `prepare` makes the PCM usable again.
        let _ = self.capture.drop();
        self.capture
            .prepare()
            .map_err(|e| Fault::Gone(e.to_string()))?;
        let _ = self.playback.drop();
        self.playback
            .prepare()
            .map_err(|e| Fault::Gone(e.to_string()))?;
        self.write_ahead()
    }
}

impl Drop for AlsaDuplex {
    fn drop(&mut self) {
        // Let queued speaker samples play out (and reach a `file` PCM)
        // before the handle closes.
        let _ = self.playback.drain();
    }
}

#[derive(Default)]
struct Stats {
    captured: AtomicU64,
    capture_dropped: AtomicU64,
    played: AtomicU64,
    /// Far-end frames missing when the speaker needed one (silence played).
    playback_starved: AtomicU64,
    xruns: AtomicU64,
    reopens: AtomicU64,
    /// 1 while the device is gone and being reopened.
    down: AtomicU64,
}

enum Command {
    Attach(DevicePorts),
    Cue(ToneCue),
}

/// Control handle of the running ALSA backend.
#[derive(Clone)]
pub struct AlsaAudioHandle {
    commands: std_mpsc::SyncSender<Command>,
    stats: Arc<Stats>,
    port_capacity: usize,
    device: String,
}

impl std::fmt::Debug for AlsaAudioHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaAudioHandle")
            .field("device", &self.device)
            .finish()
    }
}

impl AlsaAudioHandle {
    /// Fresh ports for the next call; the previous call's are dropped.
    pub fn try_attach(&self) -> Result<AudioPorts, AudioError> {
        let (ports, device) = port_pair(self.port_capacity);
        self.commands
            .try_send(Command::Attach(device))
            .map_err(|e| AudioError::Device {
                device: self.device.clone(),
                reason: format!("audio thread not accepting a new call: {e}"),
            })?;
        Ok(ports)
    }

    /// Which local tone to mix into the speaker; never blocks.
    pub fn cue(&self, cue: ToneCue) {
        if self.commands.try_send(Command::Cue(cue)).is_err() {
            warn!(device = %self.device, ?cue, "audio thread busy; tone cue dropped");
        }
    }

    pub fn xruns(&self) -> u64 {
        self.stats.xruns.load(Ordering::Relaxed)
    }
    pub fn reopens(&self) -> u64 {
        self.stats.reopens.load(Ordering::Relaxed)
    }
    pub fn frames_captured(&self) -> u64 {
        self.stats.captured.load(Ordering::Relaxed)
    }
    pub fn frames_played(&self) -> u64 {
        self.stats.played.load(Ordering::Relaxed)
    }
}

impl super::AudioProvider for AlsaAudioHandle {
    fn open_call(&mut self) -> Result<AudioPorts, AudioError> {
        self.try_attach()
    }

    fn cue(&mut self, cue: ToneCue) {
        AlsaAudioHandle::cue(self, cue);
    }

    fn stats(&self) -> super::AudioStats {
        let s = &self.stats;
        super::AudioStats {
            backend: "alsa",
            device: Some(self.device.clone()),
            captured_frames: s.captured.load(Ordering::Relaxed),
            capture_dropped: s.capture_dropped.load(Ordering::Relaxed),
            played_frames: s.played.load(Ordering::Relaxed),
            playback_starved: s.playback_starved.load(Ordering::Relaxed),
            xruns: s.xruns.load(Ordering::Relaxed),
            reopens: s.reopens.load(Ordering::Relaxed),
            device_down: s.down.load(Ordering::Relaxed) == 1,
            tone: None,
        }
    }
}

/// Opens the devices (a missing card is an error here, naming it) and
/// starts the audio thread. The thread stops on `cancel`; `tracker` waits
/// for it.
pub fn start_alsa_audio(
    spec: &AlsaSpec,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(AudioPorts, AlsaAudioHandle), AudioError> {
    let first = AlsaDuplex::open(spec)?;
    info!(
        capture = %spec.capture_device,
        playback = %spec.playback_device,
        period_ms = spec.period_ms,
        buffer_ms = spec.buffer_ms,
        pacing = spec.pacing.as_str(),
        "ALSA audio devices open"
    );
    let reopen_spec = spec.clone();
    let opener: Opener =
        Box::new(move || AlsaDuplex::open(&reopen_spec).map(|d| Box::new(d) as Box<dyn Duplex>));
    let device = format!(
        "capture \"{}\", playback \"{}\"",
        spec.capture_device, spec.playback_device
    );
    start_loop(Box::new(first), opener, spec, device, cancel, tracker)
}

pub(crate) fn start_loop(
    first: Box<dyn Duplex>,
    opener: Opener,
    spec: &AlsaSpec,
    device: String,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(AudioPorts, AlsaAudioHandle), AudioError> {
    let (ports, device_ports) = port_pair(spec.port_capacity);
    // Attach and cue commands; a few suffice since the controller sends at
    // most one of each per phase change.
    let (cmd_tx, cmd_rx) = std_mpsc::sync_channel(16);
    let stats = Arc::new(Stats::default());
    let handle = AlsaAudioHandle {
        commands: cmd_tx,
        stats: stats.clone(),
        port_capacity: spec.port_capacity,
        device: device.clone(),
    };
    let mut state = Loop {
        dev: Some(first),
        opener,
        ports: Some(device_ports),
        commands: cmd_rx,
        processor: Processor::new(&spec.processing),
        tones: ToneMixer::new(&spec.tones),
        stats,
        pacing: spec.pacing,
        reopen_initial: spec.reopen_initial,
        reopen_max: spec.reopen_max,
        device,
        cancel,
        xrun_logged: None,
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let priority = spec.realtime_priority;
    // The thread logs to the subscriber of whoever started it.
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::Builder::new()
        .name("alsa-audio".into())
        .spawn(move || {
            let _log = tracing::dispatcher::set_default(&dispatch);
            if priority > 0 {
                match set_realtime(priority) {
                    Ok(()) => info!(priority, "audio thread runs at real-time priority"),
                    Err(e) => warn!(
                        priority,
                        error = %e,
                        "audio thread keeps normal priority (grant CAP_SYS_NICE or LimitRTPRIO)"
                    ),
                }
            }
            state.run();
            let _ = done_tx.send(());
        })
        .map_err(|e| AudioError::Alsa(AlsaError::Thread(e)))?;
    // Shutdown waits on the tracker: let it wait for the thread too.
    tracker.spawn(async move {
        let _ = done_rx.await;
    });
    Ok((ports, handle))
}

/// Moves the calling thread to SCHED_FIFO at `priority`, so that a busy
/// board does not delay the 10 ms turns.
fn set_realtime(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority.clamp(1, 99)),
    };
    // SAFETY: `pthread_self` is always valid for the calling thread and
    // `param` is a fully initialised sched_param that outlives the call.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    match rc {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

struct Loop {
    dev: Option<Box<dyn Duplex>>,
    opener: Opener,
    ports: Option<DevicePorts>,
    commands: std_mpsc::Receiver<Command>,
    processor: Processor,
    tones: ToneMixer,
    stats: Arc<Stats>,
    pacing: Pacing,
    reopen_initial: Duration,
    reopen_max: Duration,
    device: String,
    cancel: CancellationToken,
    /// When the last xrun line was written (the log is rate-limited).
    xrun_logged: Option<Instant>,
}

const FRAME: Duration = Duration::from_millis(10);

impl Loop {
    fn run(&mut self) {
        let mut next = Instant::now();
        let mut reopen_at: Option<(Instant, Duration, u32)> = None;
        let mut down_since: Option<Instant> = None;
        while !self.cancel.is_cancelled() {
            self.commands();
            // While the device is gone, and in timer mode, pace with the
            // clock so the ports keep draining at the real rate.
            if self.pacing == Pacing::Timer || self.dev.is_none() {
                next += FRAME;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else if now - next > 10 * FRAME {
                    // Far behind (the machine was stalled): do not burst.
                    next = now;
                }
            }
            match self.dev.is_some() {
                true => self.turn(),
                false => {
                    // The call goes on without audio while the device is away.
                    self.discard_playback();
                    if let Some((at, wait, attempt)) = reopen_at
                        && Instant::now() >= at
                    {
                        reopen_at = self.try_reopen(wait, attempt, down_since);
                    }
                }
            }
            if self.dev.is_some() {
                down_since = None;
            }
            if self.dev.is_none() && reopen_at.is_none() {
                down_since = Some(Instant::now());
                reopen_at = Some((Instant::now() + self.reopen_initial, self.reopen_initial, 1));
                self.stats.down.store(1, Ordering::Relaxed);
            }
        }
        info!(device = %self.device, "audio thread stopped");
    }

    fn try_reopen(
        &mut self,
        wait: Duration,
        attempt: u32,
        down_since: Option<Instant>,
    ) -> Option<(Instant, Duration, u32)> {
        match (self.opener)() {
            Ok(dev) => {
                let down_ms = down_since.map_or(0, |t| t.elapsed().as_millis() as u64);
                info!(device = %self.device, attempt, down_ms, "audio device reopened; audio resumes in the ongoing call");
                self.stats.reopens.fetch_add(1, Ordering::Relaxed);
                self.stats.down.store(0, Ordering::Relaxed);
                self.dev = Some(dev);
                None
            }
            Err(e) => {
                let wait = (wait * 2).min(self.reopen_max);
                warn!(device = %self.device, attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "audio device still missing");
                Some((Instant::now() + wait, wait, attempt + 1))
            }
        }
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Attach(p) => self.ports = Some(p),
                Command::Cue(c) => self.tones.cue(c),
            }
        }
    }

    fn discard_playback(&mut self) {
        if let Some(p) = self.ports.as_mut() {
            while p.playback.try_recv().is_ok() {}
        }
    }

    /// One frame out to the speaker, one frame in from the microphone.
    fn turn(&mut self) {
        // Processing runs only while a call holds the ports, so an idle
        // station costs little CPU; the echo canceller converges on the
        // ringback at the start of each call.
        let in_call = self.ports.is_some();
        let mut out = match self.ports.as_mut().map(|p| p.playback.try_recv()) {
            Some(Ok(f)) => f,
            Some(Err(tokio::sync::mpsc::error::TryRecvError::Empty)) => {
                self.stats.playback_starved.fetch_add(1, Ordering::Relaxed);
                silent_frame()
            }
            // No call, or it ended: silence (tones may still play).
            _ => silent_frame(),
        };
        self.tones.mix(&mut out);
        // The echo reference is exactly what the speaker is handed.
        if in_call {
            self.processor.render(&out);
        }
        if let Err(f) = self.io(|d| d.write(&out)) {
            self.fault(f, "playback");
            return;
        }
        self.stats.played.fetch_add(1, Ordering::Relaxed);

        let mut frame: Frame = silent_frame();
        if let Err(f) = self.io(|d| d.read(&mut frame)) {
            self.fault(f, "capture");
            return;
        }
        if in_call {
            self.processor.capture(&mut frame);
        }
        let closed = match self.ports.as_ref().map(|p| p.capture.try_send(frame)) {
            Some(Ok(())) => {
                self.stats.captured.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(Err(tokio::sync::mpsc::error::TrySendError::Full(_))) => {
                self.stats.capture_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(Err(tokio::sync::mpsc::error::TrySendError::Closed(_))) => true,
            None => false,
        };
        if closed {
            // The call ended: idle until the next attach.
            self.ports = None;
        }
    }

    fn io(
        &mut self,
        f: impl FnOnce(&mut Box<dyn Duplex>) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        match self.dev.as_mut() {
            Some(d) => f(d),
            None => Err(Fault::Gone("device closed".into())),
        }
    }

    fn fault(&mut self, fault: Fault, dir: &'static str) {
        match fault {
            Fault::Xrun => {
                let n = self.stats.xruns.fetch_add(1, Ordering::Relaxed) + 1;
                // A struggling board can xrun many times a second: log the
                // first ten, then at most two a second, so the journal stays
                // usable and a stall (the loop not run for a while) always
                // shows; `xruns` keeps the full count.
                let now = Instant::now();
                let quiet = self
                    .xrun_logged
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(500));
                if n <= 10 || quiet {
                    self.xrun_logged = Some(now);
                    warn!(device = %self.device, direction = dir, xruns = n, "audio xrun; device prepared again");
                }
                if let Some(Err(Fault::Gone(reason))) = self.dev.as_mut().map(|d| d.recover()) {
                    self.vanished(dir, reason);
                }
            }
            Fault::Gone(reason) => self.vanished(dir, reason),
        }
    }

    fn vanished(&mut self, dir: &'static str, reason: String) {
        error!(device = %self.device, direction = dir, %reason, "audio device vanished; reopening, the call goes on");
        self.dev = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A device that fails as scripted: it vanishes after `gone_after`
    /// frames, and reopening fails `refuse_reopen` times.
    struct Fake {
        frames: Arc<Mutex<u64>>,
        gone_after: Option<u64>,
        xrun_at: Option<u64>,
    }

    impl Duplex for Fake {
        fn read(&mut self, frame: &mut [i16; FRAME_SAMPLES]) -> Result<(), Fault> {
            let mut n = self.frames.lock().expect("test lock");
            *n += 1;
            if self.gone_after.is_some_and(|g| *n > g) {
                return Err(Fault::Gone("unplugged".into()));
            }
            if self.xrun_at == Some(*n) {
                return Err(Fault::Xrun);
            }
            frame.fill(1000);
            Ok(())
        }
        fn write(&mut self, _: &[i16; FRAME_SAMPLES]) -> Result<(), Fault> {
            Ok(())
        }
        fn recover(&mut self) -> Result<(), Fault> {
            Ok(())
        }
    }

    /// Log lines written by the code under test, for checking what the
    /// journal would say.
    #[derive(Clone, Default)]
    struct LogBuf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for LogBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("test lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn xrun_and_vanished_device_recover_without_ending_the_call() {
        let log = LogBuf::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let frames = Arc::new(Mutex::new(0u64));
        let attempts = Arc::new(Mutex::new(0u32));
        let first = Box::new(Fake {
            frames: frames.clone(),
            gone_after: Some(30),
            xrun_at: Some(5),
        });
        let (f2, a2) = (frames.clone(), attempts.clone());
        let opener: Opener = Box::new(move || {
            let mut a = a2.lock().expect("test lock");
            *a += 1;
            if *a < 3 {
                return Err(AlsaError::Mixer {
                    device: "fake".into(),
                    control: "-".into(),
                    reason: "still unplugged".into(),
                });
            }
            *f2.lock().expect("test lock") = 0;
            Ok(Box::new(Fake {
                frames: f2.clone(),
                gone_after: None,
                xrun_at: None,
            }) as Box<dyn Duplex>)
        });
        let mut spec = AlsaSpec::new("fake", "fake");
        spec.pacing = Pacing::Timer;
        spec.processing = ProcessingSettings::off();
        spec.reopen_initial = Duration::from_millis(20);
        spec.reopen_max = Duration::from_millis(40);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (mut ports, handle) = start_loop(
            first,
            opener,
            &spec,
            "fake".into(),
            cancel.clone(),
            &tracker,
        )
        .expect("loop starts");
        // Frames before the loss, then after the reopen, on the same ports.
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got < 60 && tokio::time::Instant::now() < deadline {
            if let Ok(Some(f)) =
                tokio::time::timeout(Duration::from_millis(200), ports.capture.recv()).await
            {
                assert_eq!(f[0], 1000);
                got += 1;
            }
        }
        assert_eq!(got, 60, "capture resumed on the call's ports");
        assert_eq!(handle.xruns(), 1);
        assert_eq!(handle.reopens(), 1);
        assert_eq!(*attempts.lock().expect("test lock"), 3);
        cancel.cancel();
        tracker.close();
        tracker.wait().await;

        // The log says what happened, in order, and when audio came back.
        let text = String::from_utf8(log.0.lock().expect("test lock").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("log line {needle:?} missing in:\n{text}"))
        };
        let xrun = at("audio xrun; device prepared again");
        assert!(
            lines[xrun].contains("direction=\"capture\"")
                || lines[xrun].contains("direction=capture")
        );
        assert!(lines[xrun].contains("xruns=1"));
        let gone = at("audio device vanished; reopening, the call goes on");
        assert!(lines[gone].contains("unplugged"));
        let retry = at("audio device still missing");
        assert!(lines[retry].contains("retry_in_ms="));
        let back = at("audio device reopened; audio resumes in the ongoing call");
        assert!(lines[back].contains("attempt=3"), "{}", lines[back]);
        let down_ms: u64 = lines[back]
            .split("down_ms=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("down_ms field");
        // Two refused attempts 20 and 40 ms apart, then the third.
        assert!((40..2000).contains(&down_ms), "down_ms={down_ms}");
        assert!(xrun < gone && gone < retry && retry < back);
    }
}
