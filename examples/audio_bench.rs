//! Capture-processing benchmark: intercomd's chain (sonora) against two
//! references, the `aec3` crate and speexdsp's canceller (Debian's
//! libspeexdsp, through its C API), on the same synthetic signals in one run.
//!
//! `cargo run --release --example audio_bench` (or `make bench-audio`).
//!
//! Four rooms (delay 20..60 ms, reflections over 100..200 ms, echo gain
//! -6..-3 dB, different talkers), so one lucky signal cannot decide:
//!
//! * ERLE: far-end speech through the room into the microphone, with a
//!   little noise; echo return loss enhancement over the last 8 s, echo
//!   canceller and high-pass filter only (speexdsp: its canceller and its
//!   preprocessor holding the residual echo suppressor, as speexdsp documents
//!   them, preprocessor settings at the library's defaults; the canceller
//!   alone is printed too, as an extra row that is not a reference).
//!   `--noise-amplitude N` changes the peak of the microphone's white noise
//!   (default 10, about -75 dBFS; 0 leaves only the echo).
//! * Double talk: the same echo plus a near-end talker from 10 s on; the
//!   near-end attenuation is how much more of the near-end voice (by
//!   projection, so residual echo does not count) the chain loses with the
//!   far end talking than with it silent, in dB: 0 is perfect. Measured
//!   against the chain's own near-end single talk so that its high-pass
//!   filter (WebRTC's cuts below about 150 Hz, where these talkers' pitch
//!   lies) is not counted as double-talk loss; the loss against the raw
//!   voice is printed too.
//! * CPU: wall time of the full chain (high-pass, echo canceller, noise
//!   suppression, AGC) per second of audio, best of three, first room.
//!
//! Then the whole call chain of one station (`--chain` and `--chain-input`
//! run only this part, short enough for `valgrind --tool=callgrind`; see
//! `make bench-audio-instructions`):
//!
//! * CPU per second of call audio: capture processing, Opus encode of the
//!   microphone, jitter buffer and Opus decode of the far end, on one
//!   thread, best of three.
//! * Latency: a click captured by one station until it comes out of the
//!   peer's jitter buffer and decoder, on a virtual clock with a zero-delay
//!   network: device period, processing, 20 ms packetisation, the jitter
//!   buffer's target, the codec's own delay.
//! * Loss and jitter: 60 s through 5 % random loss and 0..30 ms random
//!   delay; every 10 ms playout tick after the start must yield a frame,
//!   and the concealed and FEC-recovered packets are counted.

use std::time::{Duration, Instant};

use aec3::nodes::audio::AudioFormat;
use aec3::pipelines::linear;
use intercomd::audio::FRAME_SAMPLES;
use intercomd::audio::processing::{ProcessingSettings, Processor};
use intercomd::audio::testsignal::{Rng, SpeechLike, echo_path, energy_db};
use intercomd::media::opus::{JitterBuffer, JitterSettings, OpusConfig, OpusEncoder};

const SECONDS: usize = 20;
const FRAMES: usize = SECONDS * 100;
/// Measured over the last 8 s.
const TAIL_FRAMES: usize = 800;

/// A capture chain under test: render one frame, then process one frame.
trait Chain {
    fn step(&mut self, far: &[i16], near: &[i16], out: &mut [i16]);
}

struct Ours(Processor);

impl Chain for Ours {
    fn step(&mut self, far: &[i16], near: &[i16], out: &mut [i16]) {
        let mut f = [0i16; FRAME_SAMPLES];
        f.copy_from_slice(far);
        self.0.render(&f);
        let mut m = [0i16; FRAME_SAMPLES];
        m.copy_from_slice(near);
        self.0.capture(&mut m);
        out.copy_from_slice(&m);
    }
}

struct Reference(linear::LinearPipeline);

impl Chain for Reference {
    fn step(&mut self, far: &[i16], near: &[i16], out: &mut [i16]) {
        let to_f = |s: &[i16]| {
            s.iter()
                .map(|&x| f32::from(x) / 32768.0)
                .collect::<Vec<_>>()
        };
        let mut o = vec![0.0f32; FRAME_SAMPLES];
        self.0
            .handle_render_frame(&to_f(far))
            .expect("reference accepts a 10 ms render frame");
        let produced = self
            .0
            .process_capture_frame(&to_f(near), &mut o)
            .expect("reference accepts a 10 ms capture frame");
        for (d, s) in out.iter_mut().zip(o) {
            // Rounded to the nearest integer like sonora's own i16 output
            // (`as` alone truncates toward zero, which takes up to 1 LSB off
            // every sample and, at the few-LSB residual after convergence,
            // reads as more than 1 dB of extra ERLE).
            *d = if produced {
                (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
            } else {
                0
            };
        }
    }
}

/// speexdsp's echo canceller (MDF, 200 ms filter) followed by its
/// preprocessor, which holds the residual echo suppressor: the pairing
/// speexdsp documents (`SPEEX_PREPROCESS_SET_ECHO_STATE`, as in its
/// `testecho.c`). The preprocessor keeps the library's defaults (noise
/// suppression on at -15 dB, echo suppression -40 dB / -15 dB with the near
/// end active, AGC off): it applies its gains, the residual echo
/// suppression's included, only while its noise suppression is on. `full`
/// adds its AGC. Without a preprocessor (`pre` null) it is the canceller
/// alone.
struct Speex {
    echo: *mut speex::EchoState,
    pre: *mut speex::PreprocessState,
}

mod speex {
    use std::ffi::{c_int, c_void};

    #[repr(C)]
    pub struct EchoState {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct PreprocessState {
        _opaque: [u8; 0],
    }

    pub const ECHO_SET_SAMPLING_RATE: c_int = 24;
    pub const PREPROCESS_SET_AGC: c_int = 2;
    pub const PREPROCESS_SET_ECHO_STATE: c_int = 24;

    #[link(name = "speexdsp")]
    unsafe extern "C" {
        pub fn speex_echo_state_init(frame_size: c_int, filter_length: c_int) -> *mut EchoState;
        pub fn speex_echo_state_destroy(st: *mut EchoState);
        pub fn speex_echo_ctl(st: *mut EchoState, request: c_int, ptr: *mut c_void) -> c_int;
        pub fn speex_echo_cancellation(
            st: *mut EchoState,
            rec: *const i16,
            play: *const i16,
            out: *mut i16,
        );
        pub fn speex_preprocess_state_init(frame_size: c_int, rate: c_int) -> *mut PreprocessState;
        pub fn speex_preprocess_state_destroy(st: *mut PreprocessState);
        pub fn speex_preprocess_ctl(
            st: *mut PreprocessState,
            request: c_int,
            ptr: *mut c_void,
        ) -> c_int;
        pub fn speex_preprocess_run(st: *mut PreprocessState, x: *mut i16) -> c_int;
    }
}

impl Speex {
    fn new(preprocessor: bool, full: bool) -> Self {
        let frame = FRAME_SAMPLES as i32;
        // SAFETY: plain constructors of the C library; both pointers are
        // checked before use and owned by this value until `drop`.
        unsafe {
            let echo = speex::speex_echo_state_init(frame, 48 * 200);
            assert!(!echo.is_null(), "speexdsp allocates its echo state");
            let mut rate: i32 = 48_000;
            speex::speex_echo_ctl(echo, speex::ECHO_SET_SAMPLING_RATE, (&raw mut rate).cast());
            if !preprocessor {
                return Speex {
                    echo,
                    pre: std::ptr::null_mut(),
                };
            }
            let pre = speex::speex_preprocess_state_init(frame, 48_000);
            assert!(!pre.is_null(), "speexdsp allocates its preprocessor");
            let mut agc: i32 = i32::from(full);
            speex::speex_preprocess_ctl(pre, speex::PREPROCESS_SET_AGC, (&raw mut agc).cast());
            speex::speex_preprocess_ctl(pre, speex::PREPROCESS_SET_ECHO_STATE, echo.cast());
            Speex { echo, pre }
        }
    }
}

impl Drop for Speex {
    fn drop(&mut self) {
        // SAFETY: both states came from their init functions (or `pre` is
        // null and left alone) and are freed once.
        unsafe {
            if !self.pre.is_null() {
                speex::speex_preprocess_state_destroy(self.pre);
            }
            speex::speex_echo_state_destroy(self.echo);
        }
    }
}

impl Chain for Speex {
    fn step(&mut self, far: &[i16], near: &[i16], out: &mut [i16]) {
        assert!(
            far.len() == FRAME_SAMPLES && near.len() == FRAME_SAMPLES && out.len() == FRAME_SAMPLES
        );
        // SAFETY: all three buffers hold exactly the frame size the states
        // were created with; `pre` is only used when it is not null.
        unsafe {
            speex::speex_echo_cancellation(
                self.echo,
                near.as_ptr(),
                far.as_ptr(),
                out.as_mut_ptr(),
            );
            if !self.pre.is_null() {
                speex::speex_preprocess_run(self.pre, out.as_mut_ptr());
            }
        }
    }
}

/// Builds a chain; `true` for the full chain (noise suppression and AGC on).
type MakeChain = fn(bool) -> Box<dyn Chain>;

fn speexdsp(full: bool) -> Box<dyn Chain> {
    Box::new(Speex::new(true, full))
}

/// The canceller without the preprocessor: no residual echo suppression.
fn speexdsp_canceller_alone(_full: bool) -> Box<dyn Chain> {
    Box::new(Speex::new(false, false))
}

fn ours(full: bool) -> Box<dyn Chain> {
    let settings = ProcessingSettings {
        noise_suppression: full,
        auto_gain_control: full,
        ..ProcessingSettings::default()
    };
    Box::new(Ours(Processor::new(&settings)))
}

fn reference(full: bool) -> Box<dyn Chain> {
    let format = AudioFormat::ten_ms(48_000, 1);
    let p = linear::builder(format, format)
        .enable_high_pass_filter(true)
        .enable_noise_suppression(full)
        .enable_gain_controller2(full)
        .build()
        .expect("reference pipeline builds");
    Box::new(Reference(p))
}

/// A room between the far-end talker (through the speaker) and the
/// microphone, with the talkers' voices.
struct Room {
    delay_ms: u32,
    tail_ms: u32,
    gain: f64,
    seed: u64,
    far_seed: u64,
    near_seed: u64,
}

const ROOMS: [Room; 4] = [
    Room {
        delay_ms: 25,
        tail_ms: 100,
        gain: 0.5,
        seed: 11,
        far_seed: 7,
        near_seed: 99,
    },
    Room {
        delay_ms: 20,
        tail_ms: 150,
        gain: 0.7,
        seed: 23,
        far_seed: 13,
        near_seed: 41,
    },
    Room {
        delay_ms: 40,
        tail_ms: 200,
        gain: 0.5,
        seed: 37,
        far_seed: 29,
        near_seed: 53,
    },
    Room {
        delay_ms: 60,
        tail_ms: 120,
        gain: 0.6,
        seed: 47,
        far_seed: 31,
        near_seed: 67,
    },
];

struct Signals {
    far: Vec<i16>,
    /// Echo and noise only.
    single: Vec<i16>,
    /// The near-end talker alone (silent for the first half).
    near: Vec<i16>,
    /// Echo, noise and the near-end talker.
    double: Vec<i16>,
    /// Noise and the near-end talker, the far end silent.
    near_single: Vec<i16>,
}

impl Room {
    fn label(&self) -> String {
        format!(
            "{} ms / {} ms / {:.0} dB",
            self.delay_ms,
            self.tail_ms,
            20.0 * self.gain.log10()
        )
    }

    /// `noise`: peak of the microphone's white noise, in LSB.
    fn signals(&self, noise: f64) -> Signals {
        let n = FRAMES * FRAME_SAMPLES;
        let far = SpeechLike::new(self.far_seed).take_samples(n, 0.3);
        let mut rng = Rng::new(self.seed ^ 5);
        let noise: Vec<i16> = (0..n).map(|_| (rng.uniform() * noise) as i16).collect();
        let echo = echo_path(&far, self.delay_ms, self.tail_ms, self.gain, self.seed);
        let single: Vec<i16> = echo.iter().zip(&noise).map(|(e, z)| e + z).collect();
        let mut near = SpeechLike::new(self.near_seed).take_samples(n, 0.25);
        near[..n / 2].fill(0);
        let double = single
            .iter()
            .zip(&near)
            .map(|(m, v)| m.saturating_add(*v))
            .collect();
        let near_single = noise
            .iter()
            .zip(&near)
            .map(|(z, v)| z.saturating_add(*v))
            .collect();
        Signals {
            far,
            single,
            near,
            double,
            near_single,
        }
    }
}

/// The number after `flag` on the command line, if any.
fn arg_value(flag: &str) -> Option<f64> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == flag)?;
    let v = args.get(i + 1)?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{flag} needs a number, got {v:?}")),
    )
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn fmt_row(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn run(chain: &mut dyn Chain, far: &[i16], mic: &[i16]) -> Vec<i16> {
    let mut out = vec![0i16; mic.len()];
    for i in 0..FRAMES {
        let r = i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES;
        chain.step(&far[r.clone()], &mic[r.clone()], &mut out[r]);
    }
    out
}

fn tail(s: &[i16]) -> &[i16] {
    &s[s.len() - TAIL_FRAMES * FRAME_SAMPLES..]
}

/// Gain of `near` in `out` (least squares, best lag within 10 ms), in dB
/// of loss.
fn near_loss_db(out: &[i16], near: &[i16]) -> f64 {
    let mut best = f64::MIN;
    for lag in 0..FRAME_SAMPLES {
        let (mut dot, mut nn) = (0.0f64, 0.0f64);
        for i in 0..near.len() - lag {
            let n = f64::from(near[i]);
            dot += f64::from(out[i + lag]) * n;
            nn += n * n;
        }
        best = best.max(dot / nn.max(1.0));
    }
    -20.0 * best.max(1e-6).log10()
}

/// The media session's encoder settings (defaults of `[audio.opus]`).
const OPUS: OpusConfig = OpusConfig {
    bitrate: 32_000,
    complexity: 10,
    fec: true,
    expected_loss_pct: 5,
};

fn frame_of(s: &[i16]) -> [i16; FRAME_SAMPLES] {
    let mut f = [0i16; FRAME_SAMPLES];
    f.copy_from_slice(s);
    f
}

/// Packets (seq, timestamp, payload) of `samples` as a peer sends them.
fn encode_all(samples: &[i16]) -> Vec<(u16, u32, Vec<u8>)> {
    let mut enc = OpusEncoder::new(OPUS).expect("encoder");
    let mut out = Vec::new();
    for (i, c) in samples.chunks_exact(FRAME_SAMPLES).enumerate() {
        if let Some(p) = enc.push(&frame_of(c)).expect("encode") {
            let n = out.len();
            out.push((n as u16, ((i + 1) * FRAME_SAMPLES - 960) as u32, p.to_vec()));
        }
    }
    out
}

/// What one station's call audio is made of, prepared outside the
/// measurement: the far end as the peer's packets, and the microphone (the
/// visitor plus the room's echo of the far end).
struct ChainInput {
    frames: usize,
    near: Vec<i16>,
    packets: Vec<(u16, u32, Vec<u8>)>,
}

fn chain_input(seconds: usize) -> ChainInput {
    let frames = seconds * 100;
    let n = frames * FRAME_SAMPLES;
    let far = SpeechLike::new(7).take_samples(n, 0.3);
    let mut near = SpeechLike::new(99).take_samples(n, 0.25);
    for (m, e) in near.iter_mut().zip(echo_path(&far, 25, 100, 0.5, 11)) {
        *m = m.saturating_add(e);
    }
    ChainInput {
        frames,
        near,
        packets: encode_all(&far),
    }
}

/// CPU of one station's call audio: per 10 ms tick, the far end out of the
/// jitter buffer (a packet pushed every other tick) is the echo reference,
/// the microphone frame is processed and encoded. Returns milliseconds of
/// CPU per second of audio.
fn chain_cpu(input: &ChainInput) -> f64 {
    let t0 = Instant::now();
    let mut proc_ = Processor::new(&ProcessingSettings::default());
    let mut enc = OpusEncoder::new(OPUS).expect("encoder");
    let mut jb = JitterBuffer::new(JitterSettings::default()).expect("jitter buffer");
    let mut bytes = 0usize;
    for i in 0..input.frames {
        let now = t0 + Duration::from_millis(10 * i as u64);
        if i % 2 == 0
            && let Some((seq, ts, p)) = input.packets.get(i / 2)
        {
            jb.push(*seq, *ts, p, now);
        }
        let out = jb
            .pop(now)
            .expect("decode")
            .unwrap_or_else(|| Box::new([0; FRAME_SAMPLES]));
        proc_.render(&out);
        let mut mic = frame_of(&input.near[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES]);
        proc_.capture(&mut mic);
        if let Some(p) = enc.push(&mic).expect("encode") {
            bytes += p.len();
        }
    }
    std::hint::black_box(bytes);
    t0.elapsed().as_secs_f64() * 1000.0 / (input.frames / 100) as f64
}

/// Milliseconds from a click entering one station's microphone to the same
/// click leaving the peer's decoder, network excluded. Virtual clock: the
/// device hands over frame `k` (captured over `[10k, 10k+10)` ms) at
/// `10(k+1)` ms; the peer's playout tick at `10j` ms hands out one frame,
/// whose samples play from then on.
fn click_latency(processing: bool) -> f64 {
    let frames = 600;
    let click_frame = 400;
    let click_at = click_frame * FRAME_SAMPLES + 123;
    let mut rng = Rng::new(3);
    // A quiet room, then a 1 ms click at -6 dBFS.
    let mut mic: Vec<i16> = (0..frames * FRAME_SAMPLES)
        .map(|_| (rng.uniform() * 30.0) as i16)
        .collect();
    for (k, s) in mic[click_at..click_at + 48].iter_mut().enumerate() {
        *s = if k % 2 == 0 { 16000 } else { -16000 };
    }
    let settings = if processing {
        ProcessingSettings::default()
    } else {
        ProcessingSettings::off()
    };
    let mut proc_ = Processor::new(&settings);
    let mut enc = OpusEncoder::new(OPUS).expect("encoder");
    let mut jb = JitterBuffer::new(JitterSettings::default()).expect("jitter buffer");
    let t0 = Instant::now();
    let mut seq = 0u16;
    let mut played: Vec<(usize, [i16; FRAME_SAMPLES])> = Vec::new();
    // Tick `t` (at 10t ms): the frame captured over the previous 10 ms is
    // handed over, processed and, every other frame, sent; then the peer's
    // playout tick.
    for t in 1..=frames {
        let now = t0 + Duration::from_millis(10 * t as u64);
        let k = t - 1;
        let mut f = frame_of(&mic[k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES]);
        proc_.render(&[0; FRAME_SAMPLES]);
        proc_.capture(&mut f);
        if let Some(p) = enc.push(&f).expect("encode") {
            jb.push(seq, u32::from(seq) * 960, p, now);
            seq = seq.wrapping_add(1);
        }
        if let Some(out) = jb.pop(now).expect("decode") {
            played.push((t, *out));
        }
    }
    // The click is the first output sample 20 dB above the noise before it.
    let before: Vec<i16> = played
        .iter()
        .filter(|(t, _)| *t > 200 && *t < 380)
        .flat_map(|(_, f)| f.iter().copied())
        .collect();
    let floor = before
        .iter()
        .map(|&s| i32::from(s).abs())
        .max()
        .unwrap_or(0);
    let threshold = (floor * 10).max(1000);
    for (t, f) in &played {
        if *t < click_frame {
            continue;
        }
        if let Some(i) = f.iter().position(|&s| i32::from(s).abs() > threshold) {
            let out_ms = (*t * FRAME_SAMPLES + i) as f64 / 48.0;
            let in_ms = click_at as f64 / 48.0;
            return out_ms - in_ms;
        }
    }
    f64::NAN
}

/// 60 s of speech through 5 % random loss and 0..30 ms of random delay.
/// Returns (gaps after the start, frames out, JitterStats, target delay at the end).
fn lossy_stream() -> (u64, u64, intercomd::media::opus::JitterStats, Duration) {
    let seconds = 60;
    let far = SpeechLike::new(21).take_samples(seconds * 48_000, 0.3);
    let packets = encode_all(&far);
    let mut rng = Rng::new(42);
    let t0 = Instant::now();
    // (arrival ms, index) of every packet that survives.
    let mut arrivals: Vec<(f64, usize)> = Vec::new();
    for i in 0..packets.len() {
        if (rng.uniform() + 1.0) / 2.0 < 0.05 {
            continue;
        }
        let sent = 20.0 * (i + 1) as f64;
        arrivals.push((sent + 30.0 * (rng.uniform() + 1.0) / 2.0, i));
    }
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut jb = JitterBuffer::new(JitterSettings::default()).expect("jitter buffer");
    let (mut next, mut started, mut gaps) = (0usize, false, 0u64);
    let ticks = seconds * 100 + 20;
    for t in 0..ticks {
        let now_ms = 10.0 * t as f64;
        while next < arrivals.len() && arrivals[next].0 <= now_ms {
            let (at, i) = arrivals[next];
            let (seq, ts, p) = &packets[i];
            jb.push(*seq, *ts, p, t0 + Duration::from_secs_f64(at / 1000.0));
            next += 1;
        }
        match jb
            .pop(t0 + Duration::from_secs_f64(now_ms / 1000.0))
            .expect("decode")
        {
            Some(_) => started = true,
            // Counted until the sender's last packet has had time to arrive.
            None if started && t < seconds * 100 => gaps += 1,
            None => {}
        }
    }
    let target = jb.target_delay();
    (gaps, jb.stats.frames_out, jb.stats, target)
}

fn chain_report() {
    let input = chain_input(20);
    let mut cpu = f64::MAX;
    for _ in 0..3 {
        cpu = cpu.min(chain_cpu(&input));
    }
    println!();
    println!("Whole call chain (processing + Opus encode + jitter buffer + Opus decode):");
    println!(
        "  CPU: {cpu:.2} ms per s of call audio = {:.2} % of one core",
        cpu / 10.0
    );
    let lat_on = click_latency(true);
    let lat_off = click_latency(false);
    println!(
        "  latency, click captured -> decoded at the peer (network excluded): {lat_on:.1} ms with processing, {lat_off:.1} ms without"
    );
    let (gaps, out, st, target) = lossy_stream();
    println!(
        "  5 % loss + 0..30 ms jitter, 60 s: {gaps} gaps after the start, {out} frames out, {} packets concealed, {} rebuilt from FEC, {} late, {} underruns, {} dropped for latency; target delay at the end {} ms",
        st.concealed,
        st.fec_recovered,
        st.late,
        st.underruns,
        st.dropped_for_latency,
        target.as_millis()
    );
}

fn main() {
    // For instruction counts under callgrind: `--chain` prepares 10 s of
    // call audio and runs the chain over it once; `--chain-input` only
    // prepares. The chain's count is the difference.
    if std::env::args().any(|a| a == "--chain-input") {
        std::hint::black_box(chain_input(10));
        return;
    }
    if std::env::args().any(|a| a == "--chain") {
        let ms = chain_cpu(&chain_input(10));
        println!("chain: 10 s of call audio, {ms:.2} ms CPU per s");
        return;
    }
    let noise = arg_value("--noise-amplitude").unwrap_or(10.0);
    // (name, constructor, whether it counts as a reference)
    let chains: [(&str, MakeChain, bool); 4] = [
        ("intercomd (sonora 0.2)", ours, false),
        ("aec3 0.4 (reference)", reference, true),
        (
            "speexdsp 1.2, canceller + preprocessor (reference)",
            speexdsp,
            true,
        ),
        (
            "speexdsp 1.2, canceller alone (not a reference)",
            speexdsp_canceller_alone,
            false,
        ),
    ];
    let mut rows = Vec::new();
    for (name, make, is_reference) in chains {
        let mut per_room = Vec::new();
        for room in &ROOMS {
            let s = room.signals(noise);
            let out = run(make(false).as_mut(), &s.far, &s.single);
            let erle = energy_db(tail(&s.single)) - energy_db(tail(&out));
            let out = run(make(false).as_mut(), &s.far, &s.double);
            let dt_loss = near_loss_db(tail(&out), tail(&s.near));
            let silent = vec![0i16; s.far.len()];
            let out = run(make(false).as_mut(), &silent, &s.near_single);
            let st_loss = near_loss_db(tail(&out), tail(&s.near));
            per_room.push((erle, dt_loss - st_loss, dt_loss));
        }
        // The canceller alone has no full chain to time.
        let cpu = (name != chains[3].0).then(|| {
            let s = ROOMS[0].signals(noise);
            let mut cpu = f64::MAX;
            for _ in 0..3 {
                let mut chain = make(true);
                let t = Instant::now();
                let _ = run(chain.as_mut(), &s.far, &s.double);
                cpu = cpu.min(t.elapsed().as_secs_f64() * 1000.0 / SECONDS as f64);
            }
            cpu
        });
        rows.push((name, per_room, cpu, is_reference));
    }

    let rooms: Vec<String> = ROOMS.iter().map(|r| r.label()).collect();
    if noise != 10.0 {
        println!("Microphone noise: peak {noise} LSB (default 10).");
    }
    println!("ERLE after convergence (dB), echo canceller only; higher is better:");
    println!("| chain | {} | mean |", rooms.join(" | "));
    println!("|---|{}---|", "---|".repeat(ROOMS.len()));
    for (name, per_room, _, _) in &rows {
        let v: Vec<f64> = per_room.iter().map(|r| r.0).collect();
        println!("| {name} | {} | {:.1} |", fmt_row(&v, 1), mean(&v));
    }
    println!();
    println!(
        "Near-end attenuation in double talk (dB, against the chain's near-end single talk); 0 is perfect, lower is better:"
    );
    println!("| chain | {} | mean |", rooms.join(" | "));
    println!("|---|{}---|", "---|".repeat(ROOMS.len()));
    for (name, per_room, _, _) in &rows {
        let v: Vec<f64> = per_room.iter().map(|r| r.1).collect();
        println!("| {name} | {} | {:.2} |", fmt_row(&v, 2), mean(&v));
    }
    println!();
    println!("Near-end loss in double talk against the raw voice (high-pass filter included), dB:");
    println!("| chain | {} | mean |", rooms.join(" | "));
    println!("|---|{}---|", "---|".repeat(ROOMS.len()));
    for (name, per_room, _, _) in &rows {
        let v: Vec<f64> = per_room.iter().map(|r| r.2).collect();
        println!("| {name} | {} | {:.2} |", fmt_row(&v, 2), mean(&v));
    }
    println!();
    println!("CPU, full chain (ms per s of audio):");
    for (name, _, cpu, _) in &rows {
        if let Some(cpu) = cpu {
            println!("  {name}: {cpu:.2}");
        }
    }
    let summary = |i: usize| {
        let r = &rows[i].1;
        (
            mean(&r.iter().map(|x| x.0).collect::<Vec<_>>()),
            mean(&r.iter().map(|x| x.1).collect::<Vec<_>>()),
        )
    };
    let (o_erle, o_dt) = summary(0);
    println!();
    println!("intercomd against each reference (means over the rooms):");
    let references: Vec<usize> = (1..rows.len()).filter(|&i| rows[i].3).collect();
    for &i in &references {
        let (erle, dt) = summary(i);
        println!(
            "  {}: ERLE ratio {:.2} ({o_erle:.1} / {erle:.1} dB, {:+.1} dB), double-talk attenuation {o_dt:.2} vs {dt:.2} dB ({:+.2} dB)",
            rows[i].0,
            o_erle / erle,
            o_erle - erle,
            o_dt - dt
        );
    }
    let best_erle = references
        .iter()
        .map(|&i| summary(i).0)
        .fold(f64::MIN, f64::max);
    let best_dt = references
        .iter()
        .map(|&i| summary(i).1)
        .fold(f64::MAX, f64::min);
    println!(
        "  best reference on each: ERLE {best_erle:.1} dB, double-talk attenuation {best_dt:.2} dB"
    );
    let goal = |erle: f64, dt: f64| {
        if erle >= 35.0 && dt <= 3.0 {
            "meets"
        } else {
            "misses"
        }
    };
    for (i, row) in rows.iter().enumerate() {
        let (erle, dt) = summary(i);
        println!(
            "  {}: {} the goal (ERLE >= 35 dB, double-talk attenuation <= 3 dB) on the means",
            row.0,
            goal(erle, dt)
        );
    }
    if let (Some(o), Some(a)) = (rows[0].2, rows[1].2) {
        println!("  CPU ratio intercomd / aec3 {:.2}", o / a);
    }
    chain_report();
}
