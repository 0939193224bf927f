//! Deterministic signals for tests and benchmarks: a speech-like far-end
//! voice and a synthetic room echo path. Kept in the library (not under
//! `cfg(test)`) so the benchmark example measures on the same signals.

/// A small deterministic generator (xorshift64*): tests must not depend on
/// the thread RNG.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in -1..1.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Voiced syllables (a glottal pulse train with a wandering pitch through two
/// formant resonators) separated by pauses, with some breath noise: enough
/// like speech for an echo canceller and a noise suppressor to treat it as
/// speech, unlike a stationary tone.
#[derive(Debug, Clone)]
pub struct SpeechLike {
    rng: Rng,
    rate: f64,
}

impl SpeechLike {
    pub fn new(seed: u64) -> Self {
        SpeechLike {
            rng: Rng::new(seed),
            rate: 48_000.0,
        }
    }

    /// `n` samples peaking near `level` of full scale.
    pub fn take_samples(&mut self, n: usize, level: f64) -> Vec<i16> {
        let mut out = Vec::with_capacity(n);
        let rate = self.rate;
        // Two-pole resonator coefficients for a formant at `f` Hz.
        let reson = |f: f64, bw: f64| {
            let r = (-std::f64::consts::PI * bw / rate).exp();
            let c = 2.0 * r * (2.0 * std::f64::consts::PI * f / rate).cos();
            (c, -r * r)
        };
        let mut y1 = [0.0f64; 2];
        let mut y2 = [0.0f64; 2];
        let mut phase = 0.0f64;
        while out.len() < n {
            // A syllable of 120..370 ms, then a pause of 40..300 ms.
            let syl = (0.12 + 0.25 * (self.rng.uniform() + 1.0) / 2.0) * rate;
            let pause = (0.04 + 0.26 * (self.rng.uniform() + 1.0) / 2.0) * rate;
            let f0 = 100.0 + 80.0 * (self.rng.uniform() + 1.0) / 2.0;
            let f1 = 400.0 + 400.0 * (self.rng.uniform() + 1.0) / 2.0;
            let f2 = 1100.0 + 1200.0 * (self.rng.uniform() + 1.0) / 2.0;
            let (a1, b1) = reson(f1, 90.0);
            let (a2, b2) = reson(f2, 120.0);
            let len = syl as usize;
            for i in 0..len {
                let t = i as f64 / len as f64;
                // Rise and fall of the syllable; the pitch glides down a little.
                let env = (std::f64::consts::PI * t).sin().powf(0.7);
                let f = f0 * (1.0 - 0.15 * t);
                phase += f / rate;
                let pulse = if phase >= 1.0 {
                    phase -= 1.0;
                    1.0
                } else {
                    0.0
                };
                let excitation = pulse + 0.02 * self.rng.uniform();
                let s1 = excitation + a1 * y1[0] + b1 * y1[1];
                y1[1] = y1[0];
                y1[0] = s1;
                let s2 = s1 + a2 * y2[0] + b2 * y2[1];
                y2[1] = y2[0];
                y2[0] = s2;
                out.push(env * s2);
            }
            out.extend(
                std::iter::repeat_n(0.0, pause as usize).map(|z| z + 1e-4 * self.rng.uniform()),
            );
        }
        out.truncate(n);
        let peak = out.iter().fold(0.0f64, |m, s| m.max(s.abs())).max(1e-9);
        out.iter()
            .map(|s| (s / peak * level * 32767.0).round() as i16)
            .collect()
    }
}

/// `far` as heard by a microphone across a room: silent for `delay_ms`, then
/// the direct sound and 48 reflections decaying 60 dB over `tail_ms`, scaled
/// to about `gain` of the far-end level. Sparse taps keep the convolution
/// cheap enough for debug-build tests.
pub fn echo_path(far: &[i16], delay_ms: u32, tail_ms: u32, gain: f64, seed: u64) -> Vec<i16> {
    let mut rng = Rng::new(seed);
    let per_ms = 48usize;
    let delay = delay_ms as usize * per_ms;
    let tail = (tail_ms as usize * per_ms).max(1);
    let mut taps = vec![(delay, 1.0f64)];
    for _ in 0..48 {
        let at = (rng.uniform().abs() * tail as f64) as usize;
        let decay = 10f64.powf(-3.0 * at as f64 / tail as f64);
        taps.push((delay + at, 0.6 * decay * rng.uniform()));
    }
    let norm = taps.iter().map(|(_, g)| g * g).sum::<f64>().sqrt();
    let mut out = vec![0i16; far.len()];
    for (n, o) in out.iter_mut().enumerate() {
        let mut acc = 0.0;
        for &(d, g) in &taps {
            if n >= d {
                acc += g * f64::from(far[n - d]);
            }
        }
        *o = (acc * gain / norm).clamp(-32768.0, 32767.0) as i16;
    }
    out
}

/// Mean energy in dB relative to full scale (-200 for silence).
pub fn energy_db(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -200.0;
    }
    let e = samples
        .iter()
        .map(|&s| {
            let x = f64::from(s) / 32768.0;
            x * x
        })
        .sum::<f64>()
        / samples.len() as f64;
    10.0 * e.max(1e-20).log10()
}
