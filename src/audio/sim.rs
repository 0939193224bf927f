//! Simulated audio device for tests and the demo: a synthetic or file-backed
//! microphone paced in real time, and a speaker that records what it is given.
//! It is chosen explicitly by configuration, never as a fallback.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::processing::{ProcessingSettings, Processor};
use super::tones::ToneCue;
use super::wav::{WavWriter, read_wav};
use super::{
    AudioError, AudioPorts, DEFAULT_PORT_CAPACITY, DevicePorts, FRAME_SAMPLES, Frame, SAMPLE_RATE,
    fill_sine, port_pair, scan_dominant_frequency,
};

/// Amplitude of generated tones: -12 dBFS.
const TONE_AMPLITUDE: f32 = 0.25;
/// Played samples kept for inspection: 5 s.
const RECENT_SAMPLES: usize = 5 * SAMPLE_RATE as usize;
/// Frames queued for the recorder thread before frames are dropped: 2 s.
const RECORDER_QUEUE: usize = 200;

/// What the simulated microphone produces.
#[derive(Debug, Clone, PartialEq)]
pub enum SimSource {
    /// A sine at this frequency, -12 dBFS.
    Tone(f32),
    /// A 16-bit PCM WAV file, looped; converted to 48 kHz mono on load.
    Wav(PathBuf),
    Silence,
}

impl FromStr for SimSource {
    type Err = AudioError;

    /// Parses `tone:<Hz>`, `wav:<path>` or `silence`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| AudioError::InvalidSource {
            spec: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s == "silence" {
            return Ok(SimSource::Silence);
        }
        if let Some(f) = s.strip_prefix("tone:") {
            let hz: f32 = f
                .trim()
                .parse()
                .map_err(|_| bad("tone frequency is not a number"))?;
            if !(20.0..=(SAMPLE_RATE / 2) as f32).contains(&hz) {
                return Err(bad("tone frequency must be within 20..=24000 Hz"));
            }
            return Ok(SimSource::Tone(hz));
        }
        if let Some(p) = s.strip_prefix("wav:") {
            if p.is_empty() {
                return Err(bad("empty WAV path"));
            }
            return Ok(SimSource::Wav(PathBuf::from(p)));
        }
        Err(bad("expected tone:<Hz>, wav:<path> or silence"))
    }
}

/// A simulated room between the speaker and the microphone: the direct
/// sound after `delay_ms` and 48 reflections decaying 60 dB over the
/// following [`ECHO_TAIL_MS`], scaled so the echo is about `gain_db` of the
/// played level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimEcho {
    pub delay_ms: u32,
    pub gain_db: f32,
}

/// Length of the simulated room's reflections after the direct sound.
pub const ECHO_TAIL_MS: u32 = 120;

/// The echo path as sparse taps over a history of what the speaker played.
struct EchoLine {
    taps: Vec<(usize, f32)>,
    history: Vec<i16>,
    /// Index in `history` just after the last sample played.
    pos: usize,
}

impl EchoLine {
    fn new(echo: SimEcho) -> Self {
        let per_ms = (SAMPLE_RATE / 1000) as usize;
        let delay = echo.delay_ms as usize * per_ms;
        let tail = ECHO_TAIL_MS as usize * per_ms;
        let mut rng = super::testsignal::Rng::new(17);
        let mut taps = vec![(delay, 1.0f64)];
        for _ in 0..48 {
            let at = (rng.uniform().abs() * tail as f64) as usize;
            let decay = 10f64.powf(-3.0 * at as f64 / tail as f64);
            taps.push((delay + at, 0.6 * decay * rng.uniform()));
        }
        let norm = taps.iter().map(|(_, g)| g * g).sum::<f64>().sqrt();
        let gain = 10f64.powf(f64::from(echo.gain_db) / 20.0) / norm;
        EchoLine {
            taps: taps
                .into_iter()
                .map(|(d, g)| (d, (g * gain) as f32))
                .collect(),
            history: vec![0; delay + tail + 2 * FRAME_SAMPLES],
            pos: 0,
        }
    }

    /// Appends a frame the speaker plays now.
    fn played(&mut self, frame: &[i16; FRAME_SAMPLES]) {
        let len = self.history.len();
        for &x in frame.iter() {
            self.history[self.pos] = x;
            self.pos = (self.pos + 1) % len;
        }
    }

    /// Adds the echo to a microphone frame captured over the same 10 ms as
    /// the last frame played.
    fn mix(&self, frame: &mut [i16; FRAME_SAMPLES]) {
        let len = self.history.len();
        // `history[start]` is the first sample of the last frame played.
        let start = (self.pos + len - FRAME_SAMPLES) % len;
        for (i, s) in frame.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for &(d, g) in &self.taps {
                acc += g * f32::from(self.history[(start + i + len - d) % len]);
            }
            *s = (f32::from(*s) + acc).clamp(-32768.0, 32767.0) as i16;
        }
    }
}

/// Frames waiting for the simulated speaker's clock when an echo path is
/// simulated; beyond this the oldest are dropped.
const SPEAKER_QUEUE: usize = 20;

/// Configuration of a simulated audio device.
#[derive(Debug, Clone)]
pub struct SimAudioSpec {
    pub source: SimSource,
    /// Where to record played frames (48 kHz mono 16-bit WAV), if anywhere.
    pub record: Option<PathBuf>,
    /// Depth of the capture and playback channels, in 10 ms frames.
    pub port_capacity: usize,
    /// Capture processing, as on a real device; off unless configured.
    pub processing: ProcessingSettings,
    /// A simulated room feeding the speaker into the microphone. With it
    /// the speaker plays one frame per 10 ms tick, like a sound card, so
    /// the echo canceller's reference and the echo keep a fixed delay.
    pub echo: Option<SimEcho>,
}

impl SimAudioSpec {
    pub fn new(source: SimSource) -> Self {
        SimAudioSpec {
            source,
            record: None,
            port_capacity: DEFAULT_PORT_CAPACITY,
            processing: ProcessingSettings::off(),
            echo: None,
        }
    }
}

#[derive(Default)]
struct Stats {
    captured: AtomicU64,
    capture_dropped: AtomicU64,
    played: AtomicU64,
    record_dropped: AtomicU64,
    recent: Mutex<VecDeque<i16>>,
    /// The last tone cue; the simulated speaker records it instead of
    /// mixing it, so recordings hold only the far end.
    cue: Mutex<Option<ToneCue>>,
}

impl Stats {
    /// The last `RECENT_SAMPLES` samples played, for the probes.
    fn keep_recent(&self, frame: &[i16]) {
        let mut recent = self
            .recent
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        recent.extend(frame.iter().copied());
        let excess = recent.len().saturating_sub(RECENT_SAMPLES);
        recent.drain(..excess);
    }
}

/// Control and observation handle of a running simulated device.
#[derive(Clone)]
pub struct SimAudioHandle {
    stats: Arc<Stats>,
    attach_tx: mpsc::Sender<DevicePorts>,
    port_capacity: usize,
}

impl std::fmt::Debug for SimAudioHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAudioHandle")
            .field("frames_captured", &self.frames_captured())
            .field("frames_played", &self.frames_played())
            .finish()
    }
}

impl SimAudioHandle {
    /// Frames delivered into the capture channel.
    pub fn frames_captured(&self) -> u64 {
        self.stats.captured.load(Ordering::Relaxed)
    }
    /// Frames dropped because the capture channel was full.
    pub fn capture_dropped(&self) -> u64 {
        self.stats.capture_dropped.load(Ordering::Relaxed)
    }
    /// Frames received on the playback channel.
    pub fn frames_played(&self) -> u64 {
        self.stats.played.load(Ordering::Relaxed)
    }
    /// Frames not recorded because the recorder fell behind.
    pub fn record_dropped(&self) -> u64 {
        self.stats.record_dropped.load(Ordering::Relaxed)
    }
    /// The last `ms` milliseconds of played samples (at most 5 s).
    pub fn recent_playback(&self, ms: u32) -> Vec<i16> {
        let want = (ms as usize * SAMPLE_RATE as usize / 1000).min(RECENT_SAMPLES);
        let recent = self
            .stats
            .recent
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        let skip = recent.len().saturating_sub(want);
        recent.iter().skip(skip).copied().collect()
    }
    /// Dominant frequency of the last second played (100..4000 Hz), `None` for silence.
    pub fn played_dominant_frequency(&self) -> Option<f32> {
        scan_dominant_frequency(&self.recent_playback(1000), SAMPLE_RATE)
    }

    /// The last local tone the controller cued, if any.
    pub fn last_cue(&self) -> Option<ToneCue> {
        *self
            .stats
            .cue
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
    }

    /// Detaches the current ports and returns a fresh pair, for the next call.
    /// Returns `None` once the device has stopped.
    pub async fn attach(&self) -> Option<AudioPorts> {
        let (ports, device) = port_pair(self.port_capacity);
        self.attach_tx.send(device).await.ok()?;
        Some(ports)
    }

    /// Like [`attach`](Self::attach) without waiting: for the controller,
    /// which never blocks. Fails when the device has stopped or has not yet
    /// taken the previous pair.
    pub fn try_attach(&self) -> Result<AudioPorts, AudioError> {
        let (ports, device) = port_pair(self.port_capacity);
        self.attach_tx
            .try_send(device)
            .map_err(|e| AudioError::Device {
                device: "simulated audio".into(),
                reason: e.to_string(),
            })?;
        Ok(ports)
    }
}

impl super::AudioProvider for SimAudioHandle {
    fn open_call(&mut self) -> Result<AudioPorts, AudioError> {
        self.try_attach()
    }

    fn cue(&mut self, cue: ToneCue) {
        *self
            .stats
            .cue
            .lock()
            .expect("stats lock is never poisoned: no panics while held") = Some(cue);
    }

    fn stats(&self) -> super::AudioStats {
        super::AudioStats {
            backend: "sim",
            captured_frames: self.frames_captured(),
            capture_dropped: self.capture_dropped(),
            played_frames: self.frames_played(),
            tone: self.last_cue().map(ToneCue::as_str),
            ..Default::default()
        }
    }
}

enum SourceState {
    Tone { freq: f32, phase: f64 },
    Samples { data: Vec<i16>, pos: usize },
    Silence,
}

impl SourceState {
    fn load(source: &SimSource) -> Result<Self, AudioError> {
        Ok(match source {
            SimSource::Tone(freq) => SourceState::Tone {
                freq: *freq,
                phase: 0.0,
            },
            SimSource::Silence => SourceState::Silence,
            SimSource::Wav(path) => {
                let wav = read_wav(path)?;
                let data = wav.to_mono(SAMPLE_RATE).ok_or_else(|| AudioError::InvalidSource {
                    spec: format!("wav:{}", path.display()),
                    reason: format!(
                        "{} Hz is no integer ratio of {SAMPLE_RATE} Hz: convert the file to 8, 12, 16, 24, 48 or 96 kHz (for example `sox in.wav -r 48000 out.wav`)",
                        wav.sample_rate
                    ),
                })?;
                if data.is_empty() {
                    return Err(AudioError::InvalidSource {
                        spec: format!("wav:{}", path.display()),
                        reason: "the file holds no samples".into(),
                    });
                }
                SourceState::Samples { data, pos: 0 }
            }
        })
    }

    fn next_frame(&mut self) -> Frame {
        let mut frame: Frame = Box::new([0; FRAME_SAMPLES]);
        match self {
            SourceState::Tone { freq, phase } => {
                *phase = fill_sine(&mut frame[..], *freq, TONE_AMPLITUDE, SAMPLE_RATE, *phase);
            }
            SourceState::Samples { data, pos } => {
                for s in frame.iter_mut() {
                    *s = data[*pos];
                    *pos = (*pos + 1) % data.len();
                }
            }
            SourceState::Silence => {}
        }
        frame
    }
}

/// Starts the simulated device on the current tokio runtime. See
/// [`start_sim_audio_tracked`].
pub fn start_sim_audio(
    spec: &SimAudioSpec,
    cancel: CancellationToken,
) -> Result<(AudioPorts, SimAudioHandle), AudioError> {
    let tracker = TaskTracker::new();
    let r = start_sim_audio_tracked(spec, cancel, &tracker);
    tracker.close();
    r
}

/// Starts the simulated device: one task paced by a 10 ms interval sends a
/// source frame per tick into `capture` (dropped and counted when full) and
/// drains `playback` into the recent-samples ring and, if configured, a WAV
/// recording written on its own thread. Stops on `cancel`.
pub fn start_sim_audio_tracked(
    spec: &SimAudioSpec,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(AudioPorts, SimAudioHandle), AudioError> {
    let mut source = SourceState::load(&spec.source)?;
    let mut processor = Processor::new(&spec.processing);
    let stats = Arc::new(Stats::default());
    let recorder = match &spec.record {
        Some(path) => Some(Recorder::start(path.clone(), stats.clone())?),
        None => None,
    };
    let mut echo = spec.echo.map(EchoLine::new);
    let mut speaker: VecDeque<Frame> = VecDeque::new();
    let (ports, device) = port_pair(spec.port_capacity);
    let (attach_tx, mut attach_rx) = mpsc::channel::<DevicePorts>(1);
    let handle = SimAudioHandle {
        stats: stats.clone(),
        attach_tx,
        port_capacity: spec.port_capacity,
    };

    tracker.spawn(async move {
        let mut capture = Some(device.capture);
        let mut playback = Some(device.playback);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        // A real microphone keeps producing while we are descheduled and its
        // buffer hands over the missed periods at once: Burst keeps the long
        // run rate exact, and the bounded channel caps the catch-up.
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                // Once every handle is gone the pattern fails and the branch
                // is skipped, so a closed channel does not spin.
                Some(d) = attach_rx.recv() => {
                    capture = Some(d.capture);
                    playback = Some(d.playback);
                }
                _ = tick.tick() => {
                    let mut frame = source.next_frame();
                    if let Some(line) = echo.as_mut() {
                        // The speaker plays one frame per tick; what it
                        // plays is the echo reference and, through the
                        // room, part of what the microphone hears.
                        let out = speaker.pop_front().unwrap_or_else(super::silent_frame);
                        if capture.is_some() {
                            processor.render(&out);
                        }
                        line.played(&out);
                        line.mix(&mut frame);
                    }
                    // Process only for a call: an idle station costs no CPU.
                    if capture.is_some() {
                        processor.capture(&mut frame);
                    }
                    if let Some(tx) = &capture {
                        match tx.try_send(frame) {
                            Ok(()) => { stats.captured.fetch_add(1, Ordering::Relaxed); }
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                stats.capture_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            // The call ended; idle until the next attach.
                            Err(mpsc::error::TrySendError::Closed(_)) => capture = None,
                        }
                    }
                }
                frame = async {
                    match playback.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match frame {
                    Some(frame) => {
                        if echo.is_some() {
                            if speaker.len() >= SPEAKER_QUEUE {
                                speaker.pop_front();
                            }
                            speaker.push_back(frame.clone());
                        } else {
                            // What the simulated speaker plays is the echo reference.
                            processor.render(&frame);
                        }
                        stats.played.fetch_add(1, Ordering::Relaxed);
                        stats.keep_recent(&frame[..]);
                        if let Some(rec) = &recorder {
                            rec.push(frame);
                        }
                    }
                    None => playback = None,
                },
            }
        }
        drop(recorder); // closes the queue: the thread finalises the header
    });
    Ok((ports, handle))
}

/// Writes played frames to a WAV file on a dedicated thread, so file I/O
/// never blocks an async worker.
struct Recorder {
    tx: std::sync::mpsc::SyncSender<Frame>,
    stats: Arc<Stats>,
}

impl Recorder {
    fn start(path: PathBuf, stats: Arc<Stats>) -> Result<Self, AudioError> {
        let mut writer = WavWriter::create(&path, SAMPLE_RATE, 1)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Frame>(RECORDER_QUEUE);
        std::thread::Builder::new()
            .name("sim-audio-rec".into())
            .spawn(move || {
                let mut since_header = 0u32;
                while let Ok(frame) = rx.recv() {
                    if let Err(e) = writer.write_samples(&frame[..]) {
                        tracing::error!(error = %e, "simulated speaker: recording stopped");
                        return;
                    }
                    since_header += 1;
                    // Keep the file valid while it grows: sizes rewritten every second.
                    if since_header >= 100 {
                        since_header = 0;
                        if let Err(e) = writer.update_header() {
                            tracing::warn!(error = %e, "simulated speaker: header update failed");
                        }
                    }
                }
                if let Err(e) = writer.finish() {
                    tracing::warn!(error = %e, "simulated speaker: closing the recording failed");
                }
            })
            .map_err(|source| AudioError::RecorderThread { path, source })?;
        Ok(Recorder { tx, stats })
    }

    fn push(&self, frame: Frame) {
        if self.tx.try_send(frame).is_err() {
            self.stats.record_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            "tone:600".parse::<SimSource>().ok(),
            Some(SimSource::Tone(600.0))
        );
        assert_eq!(
            "silence".parse::<SimSource>().ok(),
            Some(SimSource::Silence)
        );
        assert_eq!(
            "wav:/tmp/x.wav".parse::<SimSource>().ok(),
            Some(SimSource::Wav("/tmp/x.wav".into()))
        );
        assert!("tone:abc".parse::<SimSource>().is_err());
        assert!("mp3:/x".parse::<SimSource>().is_err());
    }

    #[test]
    fn echo_line_delays_and_attenuates_what_was_played() {
        let mut line = EchoLine::new(SimEcho {
            delay_ms: 30,
            gain_db: -6.0,
        });
        let mut played = vec![0i16; 100 * FRAME_SAMPLES];
        fill_sine(
            &mut played[..50 * FRAME_SAMPLES],
            1000.0,
            0.25,
            SAMPLE_RATE,
            0.0,
        );
        let mut mic = Vec::new();
        for chunk in played.chunks_exact(FRAME_SAMPLES) {
            let mut out = [0i16; FRAME_SAMPLES];
            out.copy_from_slice(chunk);
            line.played(&out);
            let mut m = [0i16; FRAME_SAMPLES];
            line.mix(&mut m);
            mic.extend_from_slice(&m);
        }
        // Silent for the delay, then the echo.
        let first = mic.iter().position(|&s| s != 0).expect("an echo");
        assert_eq!(first, 30 * 48 + 1, "sin(0) = 0: the first non-zero sample");
        let level = |s: &[i16]| super::super::testsignal::energy_db(s);
        let steady = level(&mic[20 * FRAME_SAMPLES..45 * FRAME_SAMPLES]);
        let source = level(&played[20 * FRAME_SAMPLES..45 * FRAME_SAMPLES]);
        assert!(
            (steady - source + 6.0).abs() < 6.0,
            "echo {steady:.1} dB vs played {source:.1} dB"
        );
        // A decaying tail after the tone stops: present 60 ms later, gone
        // after the delay plus the tail.
        let stop = 50 * FRAME_SAMPLES + 30 * 48;
        assert!(level(&mic[stop + 40 * 48..stop + 60 * 48]) > steady - 40.0);
        assert!(level(&mic[stop + 121 * 48..stop + 140 * 48]) < -150.0);
    }

    /// A conversation through the simulated room, as the end-to-end echo
    /// test has it: the far end talks in 300 ms bursts of 1000 Hz, the near
    /// end in 400 ms bursts of 600 Hz, so there is single talk from each
    /// side and double talk. The capture processing removes the far end's
    /// echo and keeps the near end.
    /// Speech on both sides through the simulated room: the resident's
    /// voice from the speaker, the visitor talking in bursts (quiet and
    /// loud). Where the visitor is silent, what is left of the echo after
    /// the default chain must be at least 30 dB below the echo without
    /// processing. (Pure tones are not used: a tonal visitor can pull the
    /// canceller's filter off the room, 4 to 70 dB depending on the phase
    /// of its bursts, which says nothing about speech.)
    #[test]
    fn echo_path_is_removed_by_the_capture_processing() {
        use crate::audio::processing::{ProcessingSettings, Processor};
        use crate::audio::testsignal::{SpeechLike, energy_db};
        const FRAMES: usize = 900;
        // The visitor talks 400 ms of every 800, with 20 ms fades.
        let visitor_gain = |k: usize, i: usize| {
            let t = ((k % 80) * FRAME_SAMPLES + i) as f64 / 48.0;
            if t >= 400.0 {
                0.0
            } else {
                let r = (t.min(400.0 - t) / 20.0).min(1.0);
                0.5 - 0.5 * (std::f64::consts::PI * r).cos()
            }
        };
        for seed in 1..=3u64 {
            for visitor_level in [0.06, 0.5] {
                let far = SpeechLike::new(seed).take_samples(FRAMES * FRAME_SAMPLES, 0.5);
                let near =
                    SpeechLike::new(seed + 100).take_samples(FRAMES * FRAME_SAMPLES, visitor_level);
                let run = |settings: &ProcessingSettings| {
                    let mut line = EchoLine::new(SimEcho {
                        delay_ms: 30,
                        gain_db: -6.0,
                    });
                    let mut p = Processor::new(settings);
                    let mut quiet = Vec::new();
                    for k in 0..FRAMES {
                        let r = k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES;
                        let mut f = [0i16; FRAME_SAMPLES];
                        f.copy_from_slice(&far[r.clone()]);
                        p.render(&f);
                        line.played(&f);
                        let mut mic = [0i16; FRAME_SAMPLES];
                        for (i, m) in mic.iter_mut().enumerate() {
                            *m = (f64::from(near[r.start + i]) * visitor_gain(k, i)) as i16;
                        }
                        line.mix(&mut mic);
                        p.capture(&mut mic);
                        // The last 3 s, where the visitor is silent (with
                        // a margin for the room's tail).
                        if k >= FRAMES - 300 && (45..78).contains(&(k % 80)) {
                            quiet.extend_from_slice(&mic);
                        }
                    }
                    energy_db(&quiet)
                };
                let off = run(&ProcessingSettings::off());
                let on = run(&ProcessingSettings::default());
                eprintln!(
                    "seed {seed}, visitor peak {visitor_level}: echo {off:.1} -> {on:.1} dBFS ({:.1} dB)",
                    off - on
                );
                assert!(
                    off - on >= 30.0,
                    "seed {seed}, visitor peak {visitor_level}: echo suppressed by {:.1} dB",
                    off - on
                );
            }
        }
    }

    #[tokio::test]
    async fn paces_and_records() {
        let dir = std::env::temp_dir().join(format!("sim-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let rec = dir.join("played.wav");
        let mut spec = SimAudioSpec::new(SimSource::Tone(600.0));
        spec.record = Some(rec.clone());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (mut ports, handle) =
            start_sim_audio_tracked(&spec, cancel.clone(), &tracker).expect("sim starts");
        // Loop captured frames straight back to playback.
        let start = tokio::time::Instant::now();
        let mut n = 0;
        while n < 50 {
            let f = ports.capture.recv().await.expect("capture frame");
            ports.playback.send(f).await.expect("playback open");
            n += 1;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(450), "paced: {elapsed:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(handle.played_dominant_frequency(), Some(600.0));
        assert!(handle.frames_played() >= 50);
        // Re-attach gives working ports for a next call.
        let mut next = handle.attach().await.expect("device running");
        assert!(next.capture.recv().await.is_some());
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let data = super::super::wav::read_wav(&rec).expect("recording readable");
        assert!(data.samples.len() >= 50 * FRAME_SAMPLES);
        std::fs::remove_dir_all(&dir).ok();
    }
}
