//! Capture-processing benchmark: intercomd's chain (sonora) against the
//! `aec3` crate as a reference, on the same synthetic signals in one run.
//!
//! `cargo run --release --example audio_bench` (or `make bench-audio`).
//!
//! * ERLE: far-end speech through a room (25 ms delay, 100 ms tail) into
//!   the microphone, nothing else; echo return loss enhancement over the
//!   last 8 s, echo canceller and high-pass filter only.
//! * Double talk: the same echo plus a near-end talker from 10 s on; the
//!   near-end attenuation is how much of the near-end voice (by projection,
//!   so residual echo does not count) is lost, in dB: 0 is perfect.
//! * CPU: wall time of the full chain (high-pass, echo canceller, noise
//!   suppression, AGC) per second of audio, best of three.

use std::time::Instant;

use aec3::nodes::audio::AudioFormat;
use aec3::pipelines::linear;
use intercomd::audio::FRAME_SAMPLES;
use intercomd::audio::processing::{ProcessingSettings, Processor};
use intercomd::audio::testsignal::{Rng, SpeechLike, echo_path, energy_db};

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
            *d = if produced {
                (s * 32768.0).clamp(-32768.0, 32767.0) as i16
            } else {
                0
            };
        }
    }
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

fn main() {
    let n = FRAMES * FRAME_SAMPLES;
    let far = SpeechLike::new(7).take_samples(n, 0.3);
    let mut rng = Rng::new(5);
    let noise: Vec<i16> = (0..n).map(|_| (rng.uniform() * 10.0) as i16).collect();
    let echo = echo_path(&far, 25, 100, 0.5, 11);
    let single: Vec<i16> = echo.iter().zip(&noise).map(|(e, z)| e + z).collect();
    let mut near = SpeechLike::new(99).take_samples(n, 0.25);
    near[..n / 2].fill(0);
    let double: Vec<i16> = single
        .iter()
        .zip(&near)
        .map(|(m, v)| m.saturating_add(*v))
        .collect();

    let mut rows = Vec::new();
    for (name, make) in [
        ("intercomd (sonora 0.2)", ours as fn(bool) -> Box<dyn Chain>),
        ("aec3 0.4 (reference)", reference),
    ] {
        let out = run(make(false).as_mut(), &far, &single);
        let erle = energy_db(tail(&single)) - energy_db(tail(&out));
        let out = run(make(false).as_mut(), &far, &double);
        let dt_loss = near_loss_db(tail(&out), tail(&near));
        let mut cpu = f64::MAX;
        for _ in 0..3 {
            let mut chain = make(true);
            let t = Instant::now();
            let _ = run(chain.as_mut(), &far, &double);
            cpu = cpu.min(t.elapsed().as_secs_f64() * 1000.0 / SECONDS as f64);
        }
        rows.push((name, erle, dt_loss, cpu));
    }

    println!(
        "| chain | ERLE after convergence (dB) | double-talk near-end loss (dB) | CPU, full chain (ms per s of audio) |"
    );
    println!("|---|---|---|---|");
    for (name, erle, dt, cpu) in &rows {
        println!("| {name} | {erle:.1} | {dt:.2} | {cpu:.2} |");
    }
    let (o, r) = (&rows[0], &rows[1]);
    println!();
    println!(
        "ratio intercomd / reference: ERLE {:.2}, CPU {:.2}; double-talk loss difference {:+.2} dB",
        o.1 / r.1,
        o.3 / r.3,
        o.2 - r.2
    );
}
