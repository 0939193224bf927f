//! The hardware rig's helper: the far side of the door station in the
//! hardware tests (`hw-tests/`), run inside the test VM next to the daemon,
//! or on a board wired for loop tests.
//!
//! ```text
//! hw_rig answer --hub ws://127.0.0.1:8080/ws --token-file FILE [--tone 1000]
//! hw_rig duplex --play DEV --record DEV --played FILE --recorded FILE
//!               [--hz 700] [--seconds 120] [--stop-file FILE]
//! hw_rig tone --file FILE --from BYTE --to BYTE
//! hw_rig onset --file FILE --from BYTE [--hz 1000] [--window-ms 20] [--min-db -40]
//! hw_rig latency --played FILE --recorded FILE --from BYTE --to BYTE
//!                [--hz 700] [--min-correlation 0.3]
//! hw_rig watch --file FILE --ms 2000 [--every-ms 5] [--settle-ms 1000]
//! ```
//!
//! `answer` is a resident: it joins the hub as an answerer with the
//! product's own media engine (host candidates on 127.0.0.1 only, so ICE
//! works in a VM that has nothing but loopback) and obeys one command per
//! line on stdin: `accept` (the ringing call), `listen [max Hz]` (print the
//! dominant frequency of the last second heard, 100–4000 Hz or up to the
//! bound given), `open` (ask the door to open on the
//! call's data channel), `echo` (send back what it hears) / `tone` (send its
//! own tone again), `hangup`, `quit`. It prints one line per event on
//! stdout (`ready`, `ring`, `established`, `heard`, `door`, `hangup`, …).
//!
//! `duplex` is the sound around the door: it plays a 700 Hz tone keyed on
//! and off in pseudo-random 60 ms chips into one ALSA PCM and records
//! another, one 10 ms frame each per turn, so that sample `k` of the played
//! file and sample `k` of the recorded file were handled in the same turn.
//! Both files are raw 48 kHz mono S16LE and grow frame by frame; their size
//! is the position a test notes to select windows.
//!
//! `watch` samples a file holding `0` or `1` (a GPIO line's level, e.g.
//! gpio-sim's `value`) and prints how long it stayed high and the length of
//! its runs, from which a test tells steady, slow and fast blinking and a
//! relay pulse apart.
//!
//! `tone` prints the dominant frequency of a window of a recording; `onset`
//! where a tone starts in a recording after a position (`onset_ms`, the
//! first window that carries it), e.g. the speaker taking a call back;
//! `latency`
//! finds the delay between the played keying and its return in the
//! recording (envelope cross-correlation), i.e. the time a sound takes from
//! the station's microphone through the call and back out of its speaker
//! when the far end echoes.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use intercomd::audio::{FRAME_SAMPLES, SAMPLE_RATE, dominant_frequency, port_pair, tone_power};
use intercomd::media::{MediaEvent, MediaSettings, SdpKind};
use intercomd::resident::{Heard, Resident};
use intercomd::signaling::protocol::{CallId, Message};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Far side of the door station for the hardware tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A resident answering over the hub, driven by commands on stdin.
    Answer {
        #[arg(long)]
        hub: String,
        #[arg(long)]
        token_file: PathBuf,
        /// The tone the resident speaks, Hz (a multiple of 10).
        #[arg(long, default_value_t = 1000.0)]
        tone: f32,
        /// Opus encoder effort, 0 to 10. Low by default: in an emulated
        /// CPU the encoder's floating point dominates the resident's load.
        #[arg(long, default_value_t = 0)]
        opus_complexity: u8,
    },
    /// Play a keyed tone into one PCM and record another, in lockstep.
    Duplex {
        #[arg(long)]
        play: String,
        #[arg(long)]
        record: String,
        #[arg(long)]
        played: PathBuf,
        #[arg(long)]
        recorded: PathBuf,
        /// The keyed tone, Hz (a multiple of 10).
        #[arg(long, default_value_t = 700.0)]
        hz: f32,
        /// Longest run; it ends earlier when the stop file appears.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        #[arg(long)]
        stop_file: Option<PathBuf>,
    },
    /// Dominant frequency of a window (byte offsets) of a raw recording.
    Tone {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// Where a tone starts after a byte offset of a raw recording: the
    /// first window whose level reaches `min_db` and whose dominant
    /// frequency is within 50 Hz of `hz`.
    Onset {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        from: u64,
        #[arg(long, default_value_t = 1000.0)]
        hz: f32,
        #[arg(long, default_value_t = 20)]
        window_ms: u64,
        #[arg(long, default_value_t = -40.0)]
        min_db: f64,
    },
    /// Delay of the played keying in the recording, over a window.
    Latency {
        #[arg(long)]
        played: PathBuf,
        #[arg(long)]
        recorded: PathBuf,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[arg(long, default_value_t = 700.0)]
        hz: f32,
        /// A 1 s window matches when its best correlation reaches this;
        /// exit 1 unless most windows match.
        #[arg(long, default_value_t = 0.3)]
        min_correlation: f64,
    },
    /// Sample a 0/1 file and describe its runs.
    Watch {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        ms: u64,
        #[arg(long, default_value_t = 5)]
        every_ms: u64,
        /// Stop early once the level has come back to where it started and
        /// stayed there this long (a pulse that is over).
        #[arg(long)]
        settle_ms: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The media engine's own log lines, on stderr, when RUST_LOG asks.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match cli.cmd {
        Cmd::Answer {
            hub,
            token_file,
            tone,
            opus_complexity,
        } => {
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("cannot read the token file {}", token_file.display()))?;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(answer(&hub, token.trim(), tone, opus_complexity))
        }
        Cmd::Duplex {
            play,
            record,
            played,
            recorded,
            hz,
            seconds,
            stop_file,
        } => duplex(
            &play,
            &record,
            &played,
            &recorded,
            hz,
            Duration::from_secs(seconds),
            stop_file.as_deref(),
        ),
        Cmd::Tone { file, from, to } => {
            let s = read_window(&file, from, to)?;
            let candidates: Vec<f32> = (10..=400).map(|k| k as f32 * 10.0).collect();
            let level = intercomd::audio::testsignal::energy_db(&s);
            match dominant_frequency(&s, SAMPLE_RATE, &candidates) {
                Some(hz) => println!("hz={hz} level_db={level:.1} samples={}", s.len()),
                None => println!("hz=none level_db={level:.1} samples={}", s.len()),
            }
            Ok(())
        }
        Cmd::Onset {
            file,
            from,
            hz,
            window_ms,
            min_db,
        } => {
            let end = std::fs::metadata(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .len();
            let s = read_window(&file, from, end.max(from))?;
            let window = (SAMPLE_RATE as usize * window_ms.max(1) as usize / 1000).max(1);
            match tone_onset(&s, window, hz, min_db) {
                Some((i, found, level)) => println!(
                    "onset_ms={} hz={found} level_db={level:.1} windows={}",
                    i as u64 * window_ms,
                    s.len() / window
                ),
                None => println!("onset_ms=none windows={}", s.len() / window),
            }
            Ok(())
        }
        Cmd::Watch {
            file,
            ms,
            every_ms,
            settle_ms,
        } => {
            let w = watch_level(
                &file,
                Duration::from_millis(ms),
                Duration::from_millis(every_ms.max(1)),
                settle_ms.map(Duration::from_millis),
            )?;
            println!("{w}");
            Ok(())
        }
        Cmd::Latency {
            played,
            recorded,
            from,
            to,
            hz,
            min_correlation,
        } => {
            let p = read_window(&played, from, to)?;
            let r = read_window(&recorded, from, to)?;
            let l = windowed_lag(&p, &r, hz, Duration::from_secs(2), min_correlation);
            println!(
                "latency_ms={} low_ms={} high_ms={} windows={} matched={}",
                l.median.as_millis(),
                l.low.as_millis(),
                l.high.as_millis(),
                l.windows,
                l.matched
            );
            // Most of the windows must find the keying again.
            if l.windows == 0 || l.matched * 2 <= l.windows {
                bail!(
                    "the played keying is not in the recording: {} of {} windows reach correlation {min_correlation}",
                    l.matched,
                    l.windows
                );
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- analysis

/// The first `window`-sample block of `s` whose level reaches `min_db` and
/// whose dominant frequency is within 50 Hz of `hz`: its index, that
/// frequency and the level.
fn tone_onset(s: &[i16], window: usize, hz: f32, min_db: f64) -> Option<(usize, f32, f64)> {
    let candidates: Vec<f32> = (10..=400).map(|k| k as f32 * 10.0).collect();
    s.chunks_exact(window).enumerate().find_map(|(i, w)| {
        let level = intercomd::audio::testsignal::energy_db(w);
        if level < min_db {
            return None;
        }
        let found = dominant_frequency(w, SAMPLE_RATE, &candidates)?;
        ((found - hz).abs() <= 50.0).then_some((i, found, level))
    })
}

/// Samples `[from, to)` (byte offsets, rounded down to whole samples) of a
/// raw S16LE file.
fn read_window(path: &Path, from: u64, to: u64) -> anyhow::Result<Vec<i16>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (from, to) = ((from & !1) as usize, (to & !1) as usize);
    if from >= to || to > bytes.len() {
        bail!(
            "{}: window {from}..{to} is outside the file's {} bytes",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes[from..to]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Length of the blocks the envelopes are measured in.
const ENVELOPE_BLOCK: usize = 240; // 5 ms

/// Amplitude of `hz` in consecutive 5 ms blocks.
fn envelope(s: &[i16], hz: f32) -> Vec<f64> {
    s.chunks_exact(ENVELOPE_BLOCK)
        .map(|b| f64::from(tone_power(b, hz, SAMPLE_RATE)).sqrt())
        .collect()
}

/// Pearson correlation of two equally long series (0 when one is flat).
fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
    }
    let (x, y) = (&x[..n], &y[..n]);
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

const BLOCK_MS: u64 = (ENVELOPE_BLOCK * 1000) as u64 / SAMPLE_RATE as u64;

/// The delay measured over consecutive 1 s windows of `played` (hop
/// 0.5 s), each searched up to `max` later in `recorded`: the path's delay
/// may drift (jitter buffers adapt), so one long window can blur it.
#[derive(Debug, PartialEq)]
struct Latency {
    windows: usize,
    /// Windows whose best correlation reached the minimum.
    matched: usize,
    /// Median, lowest and highest delay of the matched windows.
    median: Duration,
    low: Duration,
    high: Duration,
}

fn windowed_lag(
    played: &[i16],
    recorded: &[i16],
    hz: f32,
    max: Duration,
    min_correlation: f64,
) -> Latency {
    let ep = envelope(played, hz);
    let er = envelope(recorded, hz);
    let win = (1000 / BLOCK_MS) as usize;
    let max_lag = (max.as_millis() as u64 / BLOCK_MS) as usize;
    let mut lags = Vec::new();
    let mut windows = 0;
    let mut start = 0;
    while start + win + max_lag <= ep.len().min(er.len()) {
        windows += 1;
        let x = &ep[start..start + win];
        let best = (0..=max_lag)
            .map(|lag| (lag, correlation(x, &er[start + lag..start + lag + win])))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((lag, c)) = best
            && c >= min_correlation
        {
            lags.push(Duration::from_millis(lag as u64 * BLOCK_MS));
        }
        start += win / 2;
    }
    lags.sort_unstable();
    Latency {
        windows,
        matched: lags.len(),
        median: lags.get(lags.len() / 2).copied().unwrap_or_default(),
        low: lags.first().copied().unwrap_or_default(),
        high: lags.last().copied().unwrap_or_default(),
    }
}

// ------------------------------------------------------------------- watch

/// What sampling a level for a while showed.
#[derive(Debug, PartialEq)]
struct Runs {
    first: bool,
    last: bool,
    samples: usize,
    transitions: usize,
    high: Duration,
    /// Lengths of the runs between two transitions (the first and the last
    /// run are cut by the window and left out).
    whole_runs: Vec<Duration>,
}

impl std::fmt::Display for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut runs: Vec<u128> = self.whole_runs.iter().map(Duration::as_millis).collect();
        runs.sort_unstable();
        let median = runs.get(runs.len() / 2).map_or(-1, |&m| m as i128);
        write!(
            f,
            "first={} last={} samples={} transitions={} high_ms={} median_run_ms={median}",
            u8::from(self.first),
            u8::from(self.last),
            self.samples,
            self.transitions,
            self.high.as_millis(),
        )
    }
}

/// Describes timed samples `(t, level)` in time order.
fn runs(samples: &[(Duration, bool)]) -> Option<Runs> {
    let (&(t0, first), &(_, last)) = (samples.first()?, samples.last()?);
    let mut high = Duration::ZERO;
    let mut transitions = 0;
    let mut whole_runs = Vec::new();
    let mut run_start: Option<Duration> = None;
    let (mut prev_t, mut prev) = (t0, first);
    for &(t, v) in &samples[1..] {
        if prev {
            high += t - prev_t;
        }
        if v != prev {
            transitions += 1;
            if let Some(s) = run_start {
                whole_runs.push(t - s);
            }
            run_start = Some(t);
        }
        (prev_t, prev) = (t, v);
    }
    Some(Runs {
        first,
        last,
        samples: samples.len(),
        transitions,
        high,
        whole_runs,
    })
}

fn watch_level(
    path: &Path,
    total: Duration,
    every: Duration,
    settle: Option<Duration>,
) -> anyhow::Result<Runs> {
    let start = Instant::now();
    let mut samples: Vec<(Duration, bool)> = Vec::new();
    let mut next = start;
    let mut changed_at: Option<Duration> = None;
    while start.elapsed() < total {
        // A pulse is over when the level is back where it started.
        if let (Some(settle), Some(at), Some(&(_, first)), Some(&(_, last))) =
            (settle, changed_at, samples.first(), samples.last())
            && last == first
            && start.elapsed() >= at + settle
        {
            break;
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v = match text.trim() {
            "0" => false,
            "1" => true,
            other => bail!("{}: expected 0 or 1, read {other:?}", path.display()),
        };
        let now = start.elapsed();
        if samples.last().is_some_and(|&(_, last)| last != v) {
            changed_at = Some(now);
        }
        if samples.is_empty() {
            // A test waits for this before it acts on the line.
            eprintln!("watching {} level={}", path.display(), u8::from(v));
        }
        samples.push((now, v));
        next += every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    runs(&samples).with_context(|| format!("{}: no sample taken", path.display()))
}

// ------------------------------------------------------------------ duplex

/// One period of 100 ms of a sine of `hz` at `amplitude` (0..1 of full
/// scale): a whole number of cycles when `hz` is a multiple of 10, so the
/// table repeats seamlessly. Signals are read from tables because floating
/// point is slow in an emulated CPU (qemu's TCG computes it in software):
/// a `sin` per sample would cost more than the call it is meant to test.
struct ToneTable {
    samples: Vec<i16>,
    at: usize,
}

impl ToneTable {
    fn new(hz: f32, amplitude: f32) -> Self {
        let mut samples = vec![0i16; SAMPLE_RATE as usize / 10];
        intercomd::audio::fill_sine(&mut samples, hz, amplitude, SAMPLE_RATE, 0.0);
        ToneTable { samples, at: 0 }
    }

    fn next(&mut self) -> i16 {
        let v = self.samples[self.at];
        self.at = (self.at + 1) % self.samples.len();
        v
    }
}

/// The keyed tone: on or off for 60 ms chips, from a 16-bit maximal LFSR,
/// with 2 ms ramps so the keying makes no clicks. Integer arithmetic only.
struct KeyedTone {
    table: ToneTable,
    n: u64,
    lfsr: u16,
    on: bool,
    /// 0..=RAMP_STEPS
    gain: i32,
}

const CHIP_SAMPLES: u64 = 48 * 60;
const RAMP_STEPS: i32 = 96;

impl KeyedTone {
    fn new(hz: f32) -> Self {
        KeyedTone {
            // -6 dBFS when on.
            table: ToneTable::new(hz, 0.5),
            n: 0,
            lfsr: 0xACE1,
            on: true,
            gain: 0,
        }
    }

    fn fill(&mut self, out: &mut [i16]) {
        for s in out {
            if self.n.is_multiple_of(CHIP_SAMPLES) {
                // x^16 + x^14 + x^13 + x^11 + 1
                let bit = (self.lfsr ^ (self.lfsr >> 2) ^ (self.lfsr >> 3) ^ (self.lfsr >> 5)) & 1;
                self.lfsr = (self.lfsr >> 1) | (bit << 15);
                self.on = self.lfsr & 1 == 1;
            }
            if self.on {
                self.gain = (self.gain + 1).min(RAMP_STEPS);
            } else {
                self.gain = (self.gain - 1).max(0);
            }
            *s = (i32::from(self.table.next()) * self.gain / RAMP_STEPS) as i16;
            self.n += 1;
        }
    }
}

fn open_pcm(device: &str, dir: alsa::Direction) -> anyhow::Result<alsa::PCM> {
    use alsa::pcm::{Access, Format, HwParams};
    let what = match dir {
        alsa::Direction::Playback => "playback",
        alsa::Direction::Capture => "capture",
    };
    let pcm = alsa::PCM::new(device, dir, false)
        .with_context(|| format!("cannot open ALSA {what} device \"{device}\""))?;
    {
        let hw = HwParams::any(&pcm)?;
        hw.set_access(Access::RWInterleaved)?;
        hw.set_format(Format::s16())?;
        hw.set_channels(1)?;
        hw.set_rate(SAMPLE_RATE, alsa::ValueOr::Nearest)?;
        hw.set_period_size_near(FRAME_SAMPLES as i64, alsa::ValueOr::Nearest)?;
        hw.set_buffer_size_near(4 * FRAME_SAMPLES as i64)?;
        pcm.hw_params(&hw)
            .with_context(|| format!("ALSA {what} device \"{device}\" refuses 48 kHz mono S16"))?;
    }
    if dir == alsa::Direction::Playback {
        let sw = pcm.sw_params_current()?;
        sw.set_start_threshold(FRAME_SAMPLES as i64)?;
        pcm.sw_params(&sw)?;
    }
    pcm.prepare()?;
    Ok(pcm)
}

/// Errors of the duplex loop other than xruns: each is printed and the PCM
/// prepared again; only a run of them ends the loop (an emulated machine
/// stalls long enough to upset a PCM now and then).
#[derive(Default)]
struct Faults {
    in_a_row: u32,
}

impl Faults {
    const LIMIT: u32 = 50;

    fn fault(&mut self, e: &alsa::Error, device: &str) -> anyhow::Result<()> {
        self.in_a_row += 1;
        if e.errno() != libc::EPIPE {
            println!("duplex: \"{device}\": {e}; prepared again");
        }
        if self.in_a_row >= Self::LIMIT {
            bail!(
                "\"{device}\": {} errors in a row, the last: {e}",
                self.in_a_row
            );
        }
        Ok(())
    }

    fn clean_turn(&mut self) {
        self.in_a_row = 0;
    }
}

fn duplex(
    play: &str,
    record: &str,
    played: &Path,
    recorded: &Path,
    hz: f32,
    max: Duration,
    stop_file: Option<&Path>,
) -> anyhow::Result<()> {
    let out = open_pcm(play, alsa::Direction::Playback)?;
    let inp = open_pcm(record, alsa::Direction::Capture)?;
    let create = |p: &Path| {
        std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))
    };
    let (mut pf, mut rf) = (create(played)?, create(recorded)?);
    let mut tone = KeyedTone::new(hz);
    let mut frame = [0i16; FRAME_SAMPLES];
    let mut got = [0i16; FRAME_SAMPLES];
    let mut xruns = 0u32;
    let mut errors = Faults::default();
    let start = Instant::now();
    let mut turns = 0u64;
    println!("duplex running: playing {hz} Hz keyed into \"{play}\", recording \"{record}\"");
    while start.elapsed() < max && !stop_file.is_some_and(Path::exists) {
        tone.fill(&mut frame);
        let io = out.io_i16()?;
        let mut done = 0;
        while done < FRAME_SAMPLES {
            match io.writei(&frame[done..]) {
                Ok(n) => done += n,
                Err(e) => {
                    xruns += 1;
                    errors.fault(&e, play)?;
                    out.prepare()
                        .with_context(|| format!("preparing \"{play}\" again"))?;
                }
            }
        }
        let io = inp.io_i16()?;
        let mut done = 0;
        while done < FRAME_SAMPLES {
            match io.readi(&mut got[done..]) {
                Ok(n) => done += n,
                Err(e) => {
                    xruns += 1;
                    errors.fault(&e, record)?;
                    inp.prepare()
                        .with_context(|| format!("preparing \"{record}\" again"))?;
                }
            }
        }
        let bytes = |s: &[i16]| s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        pf.write_all(&bytes(&frame))?;
        rf.write_all(&bytes(&got))?;
        turns += 1;
        errors.clean_turn();
    }
    println!(
        "duplex stopped after {turns} frames in {} ms, {xruns} xruns",
        start.elapsed().as_millis()
    );
    Ok(())
}

// ------------------------------------------------------------------ answer

/// What the resident sends into the call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Voice {
    Tone,
    Echo,
}

/// The call's audio, as the resident's sound card sees it.
struct Call {
    ports: intercomd::audio::DevicePorts,
    cancel: CancellationToken,
}

/// Last two seconds of what the resident heard.
const HEARD_KEEP: usize = 2 * SAMPLE_RATE as usize;
/// Most frames waiting to be echoed (0.5 s): beyond that the oldest go.
const ECHO_KEEP: usize = 50;

/// What the resident does with each line on stdin (see the module docs).
struct Commands {
    tone_hz: f32,
    opus_complexity: u8,
    ringing: Option<CallId>,
    call: Option<Call>,
    voice: Voice,
    heard: VecDeque<i16>,
    echo: VecDeque<intercomd::audio::Frame>,
    voice_tone: ToneTable,
    nonce_n: u32,
}

async fn answer(hub: &str, token: &str, tone_hz: f32, opus_complexity: u8) -> anyhow::Result<()> {
    let mut r = Resident::connect(hub, token, None).await?;
    println!("ready id={}", r.id);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut me = Commands {
        tone_hz,
        opus_complexity,
        ringing: None,
        call: None,
        voice: Voice::Tone,
        heard: VecDeque::with_capacity(HEARD_KEEP),
        echo: VecDeque::new(),
        voice_tone: ToneTable::new(tone_hz, 0.3),
        nonce_n: 0,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tokio::select! {
            heard = r.next() => match heard? {
                Heard::Hub(m) => me.hub(m),
                Heard::Media(ev) => print_media(&ev),
            },
            line = stdin.next_line() => {
                let Some(line) = line.context("reading commands from stdin")? else {
                    break;
                };
                if !me.command(&mut r, line.trim()).await? {
                    break;
                }
            }
            _ = tick.tick(), if me.call.is_some() => me.tick(),
        }
    }
    me.end(&mut r).await;
    println!("bye");
    Ok(())
}

impl Commands {
    /// A message from the hub (already relayed to the media engine).
    fn hub(&mut self, m: Message) {
        match m {
            Message::Ring { call_id, door, .. } => {
                let door = door.map(|d| d.name).unwrap_or_default();
                println!("ring call_id={call_id} door={door:?}");
                self.ringing = Some(call_id);
            }
            Message::Offer { sdp, .. } => println!("offer {}", setup_line(&sdp)),
            Message::Candidate { candidate, .. } => match &candidate {
                Some(c) => println!("candidate from door {}", c.candidate),
                None => println!("candidate from door: end"),
            },
            Message::Hangup { reason, .. } | Message::Cancel { reason, .. } => {
                println!("hangup from door reason={reason:?}");
                self.ringing = None;
                // The resident has ended the call's media already.
                if let Some(c) = self.call.take() {
                    c.cancel.cancel();
                }
            }
            Message::Error { code, message, .. } => {
                println!("hub error code={} message={message:?}", code.as_str());
            }
            other => println!("hub sent {}", other.type_name()),
        }
    }

    /// One command line; false for `quit`.
    async fn command(&mut self, r: &mut Resident, line: &str) -> anyhow::Result<bool> {
        match line {
            "" => {}
            "accept" => {
                let Some(id) = self.ringing.take() else {
                    println!("error nothing is ringing");
                    return Ok(true);
                };
                let settings = MediaSettings {
                    udp_bind_ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
                    opus_complexity: self.opus_complexity,
                    ..MediaSettings::default()
                };
                let (audio, ports) = port_pair(intercomd::audio::DEFAULT_PORT_CAPACITY);
                let cancel = CancellationToken::new();
                r.accept(id.clone(), settings, audio, cancel.clone())
                    .await?;
                self.heard.clear();
                self.echo.clear();
                self.voice = Voice::Tone;
                println!("accepted call_id={id}");
                self.call = Some(Call { ports, cancel });
            }
            l if l == "listen" || l.starts_with("listen ") => self.listen(l),
            "open" => {
                if self.call.is_none() {
                    println!("error no call");
                    return Ok(true);
                }
                self.nonce_n += 1;
                let nonce = format!("{:016x}{:08x}", rand::random::<u64>(), self.nonce_n);
                let text = serde_json::json!({"type": "open", "nonce": nonce}).to_string();
                r.door_send(text)?;
                println!("open sent nonce={nonce}");
            }
            "echo" => {
                self.voice = Voice::Echo;
                println!("voice echo");
            }
            "tone" => {
                self.voice = Voice::Tone;
                println!("voice tone hz={}", self.tone_hz);
            }
            "hangup" => {
                if self.call.is_none() {
                    println!("error no call");
                    return Ok(true);
                }
                r.hang_up("hangup").await?;
                self.end(r).await;
                println!("hung up");
            }
            "quit" => return Ok(false),
            other => println!("error unknown command {other:?}"),
        }
        Ok(true)
    }

    /// `listen [max Hz]`: the dominant frequency of the last second heard,
    /// candidates from 100 Hz to 4000 Hz unless a higher bound is given (up
    /// to 8000 Hz).
    fn listen(&self, l: &str) {
        let top = l["listen".len()..]
            .trim()
            .parse::<u32>()
            .unwrap_or(4000)
            .clamp(4000, 8000)
            / 10;
        let s: Vec<i16> = self
            .heard
            .iter()
            .rev()
            .take(SAMPLE_RATE as usize)
            .rev()
            .copied()
            .collect();
        let candidates: Vec<f32> = (10..=top).map(|k| k as f32 * 10.0).collect();
        let level = intercomd::audio::testsignal::energy_db(&s);
        match dominant_frequency(&s, SAMPLE_RATE, &candidates) {
            Some(hz) => println!("heard hz={hz} level_db={level:.1} samples={}", s.len()),
            None => println!("heard hz=none level_db={level:.1} samples={}", s.len()),
        }
    }

    /// Every 10 ms in a call: what the engine played is heard (and kept
    /// for the echo), and the resident's voice goes in.
    fn tick(&mut self) {
        let Some(c) = self.call.as_mut() else { return };
        while let Ok(f) = c.ports.playback.try_recv() {
            if self.heard.len() + FRAME_SAMPLES > HEARD_KEEP {
                self.heard.drain(..FRAME_SAMPLES);
            }
            self.heard.extend(f.iter());
            self.echo.push_back(f);
            if self.echo.len() > ECHO_KEEP {
                self.echo.pop_front();
            }
        }
        let frame = match self.voice {
            Voice::Echo => self
                .echo
                .pop_front()
                .unwrap_or_else(intercomd::audio::silent_frame),
            Voice::Tone => {
                let mut f = intercomd::audio::silent_frame();
                for v in f.iter_mut() {
                    *v = self.voice_tone.next();
                }
                self.echo.clear();
                f
            }
        };
        // A full queue means the engine is behind: drop, as a sound card would.
        let _ = c.ports.capture.try_send(frame);
    }

    async fn end(&mut self, r: &mut Resident) {
        r.end().await;
        if let Some(c) = self.call.take() {
            c.cancel.cancel();
        }
    }
}

/// The media engine's events the rig's log shows.
fn print_media(ev: &MediaEvent) {
    match ev {
        MediaEvent::LocalDescription {
            sdp,
            kind: SdpKind::Answer,
            ..
        } => {
            println!("answer {}", setup_line(sdp));
        }
        MediaEvent::LocalCandidate { candidate, .. } => match candidate {
            Some(c) => println!("candidate to door {}", c.candidate),
            None => println!("candidate to door: end"),
        },
        MediaEvent::AudioEstablished { selected_pair, .. } => {
            println!("established selected_pair={selected_pair}");
        }
        MediaEvent::DoorChannelOpen { .. } => println!("door channel open"),
        MediaEvent::DoorMessage { text, .. } => println!("door {text}"),
        MediaEvent::State { state, .. } => println!("media state {state:?}"),
        MediaEvent::Error { message, .. } => println!("media error {message}"),
        _ => {}
    }
}

/// The DTLS role line of an SDP (`a=setup:…`), for the log.
fn setup_line(sdp: &str) -> &str {
    sdp.lines()
        .find(|l| l.starts_with("a=setup:"))
        .unwrap_or("a=setup missing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onset_finds_where_the_tone_starts_after_silence() {
        let rate = SAMPLE_RATE as usize;
        let mut s = vec![0i16; rate / 4];
        let mut tone = vec![0i16; rate / 4];
        intercomd::audio::fill_sine(&mut tone, 1000.0, 0.3, SAMPLE_RATE, 0.0);
        s.extend_from_slice(&tone);
        let window = rate / 50;
        let (i, hz, _) = tone_onset(&s, window, 1000.0, -40.0).expect("the tone is found");
        // The window straddling the start (240-260 ms) already carries it.
        assert!(
            (240..=260).contains(&(i * 20)),
            "the tone starts at 250 ms, found {}",
            i * 20
        );
        assert!((hz - 1000.0).abs() <= 50.0, "found {hz} Hz");
        let mut other = vec![0i16; rate / 2];
        intercomd::audio::fill_sine(&mut other, 400.0, 0.3, SAMPLE_RATE, 0.0);
        assert!(tone_onset(&other, window, 1000.0, -40.0).is_none());
        assert!(tone_onset(&vec![0i16; rate / 2], window, 1000.0, -40.0).is_none());
    }

    #[test]
    fn runs_tell_a_blink_from_a_pulse() {
        let ms = Duration::from_millis;
        // 500 ms on, 500 ms off, sampled every 100 ms for 2.3 s.
        let blink: Vec<(Duration, bool)> =
            (0..=23).map(|i| (ms(i * 100), (i / 5) % 2 == 0)).collect();
        let r = runs(&blink).expect("samples");
        assert_eq!(r.transitions, 4);
        assert_eq!(r.whole_runs, [ms(500), ms(500), ms(500)]);
        assert_eq!(
            r.to_string().split(' ').next_back(),
            Some("median_run_ms=500")
        );
        assert!(r.first && r.last);
        // Low, a 1.5 s pulse, low again.
        let pulse: Vec<(Duration, bool)> = (0..=30)
            .map(|i| (ms(i * 100), (5..20).contains(&i)))
            .collect();
        let r = runs(&pulse).expect("samples");
        assert_eq!((r.transitions, r.high), (2, ms(1500)));
        assert_eq!(r.whole_runs, [ms(1500)]);
        assert!(!r.first && !r.last);
        // Steady: no transition, no whole run.
        let steady: Vec<(Duration, bool)> = (0..10).map(|i| (ms(i * 100), true)).collect();
        let r = runs(&steady).expect("samples");
        assert_eq!((r.transitions, r.high), (0, ms(900)));
        assert!(r.to_string().ends_with("median_run_ms=-1"));
        assert!(runs(&[]).is_none());
    }

    #[test]
    fn the_keying_is_found_at_its_delay_and_not_in_noise() {
        let mut tone = KeyedTone::new(700.0);
        let mut played = vec![0i16; 4 * SAMPLE_RATE as usize];
        tone.fill(&mut played);
        // The same signal 230 ms later, at a quarter of the level.
        let delay = 230 * 48;
        let mut recorded = vec![0i16; played.len()];
        for (i, s) in played.iter().enumerate().take(played.len() - delay) {
            recorded[i + delay] = s / 4;
        }
        let l = windowed_lag(&played, &recorded, 700.0, Duration::from_secs(2), 0.95);
        assert_eq!((l.windows, l.matched), (3, 3), "{l:?}");
        assert_eq!(
            (l.low, l.high),
            (Duration::from_millis(230), Duration::from_millis(230))
        );
        // Window by window, with the delay growing from 200 to 260 ms
        // halfway (a jitter buffer adapting).
        let mut drifting = vec![0i16; played.len()];
        let half = played.len() / 2;
        for (i, s) in played.iter().enumerate() {
            let d = if i < half { 200 * 48 } else { 260 * 48 };
            if i + d < drifting.len() {
                drifting[i + d] = *s;
            }
        }
        let l = windowed_lag(&played, &drifting, 700.0, Duration::from_millis(500), 0.5);
        assert_eq!(l.windows, 6, "{l:?}");
        assert!(l.matched >= 5, "{l:?}");
        assert_eq!(l.low, Duration::from_millis(200), "{l:?}");
        assert_eq!(l.high, Duration::from_millis(260), "{l:?}");
        // A steady tone carries no keying: nothing correlates.
        let mut steady = vec![0i16; played.len()];
        intercomd::audio::fill_sine(&mut steady, 700.0, 0.3, SAMPLE_RATE, 0.0);
        let l = windowed_lag(&played, &steady, 700.0, Duration::from_secs(2), 0.3);
        assert_eq!(l.matched, 0, "{l:?}");
    }
}
