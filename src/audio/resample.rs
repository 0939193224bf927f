//! Integer-ratio resampling between the product's 48 kHz and the narrow
//! band rates of Bluetooth voice links (8 kHz CVSD: ratio 6; 16 kHz mSBC:
//! ratio 3). One windowed-sinc low-pass filter serves both directions: it
//! removes the images of zero-stuffing when going up and the alias band
//! before decimating when going down. Streaming: each converter keeps its
//! filter history across calls, so blocks of any length join seamlessly.

/// Taps per output phase; the filter has `ratio * TAPS_PER_PHASE + 1` taps.
const TAPS_PER_PHASE: usize = 16;

/// A low-pass FIR at `cutoff` (a fraction of the high sample rate,
/// 0..0.5) with `len` taps, Hamming-windowed, unity gain at DC.
fn lowpass(len: usize, cutoff: f64) -> Vec<f32> {
    let mid = (len - 1) as f64 / 2.0;
    let mut taps: Vec<f64> = (0..len)
        .map(|i| {
            let x = i as f64 - mid;
            let sinc = if x == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * x).sin() / (std::f64::consts::PI * x)
            };
            let window =
                0.54 - 0.46 * (2.0 * std::f64::consts::PI * i as f64 / (len - 1) as f64).cos();
            sinc * window
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    for t in &mut taps {
        *t /= sum;
    }
    taps.into_iter().map(|t| t as f32).collect()
}

/// The filter for `ratio`: cut off at 0.45 of the low rate's Nyquist
/// band edge (3.6 kHz for 8 kHz), so speech up to 3.4 kHz passes.
fn filter_for(ratio: usize) -> Vec<f32> {
    lowpass(ratio * TAPS_PER_PHASE + 1, 0.45 / ratio as f64)
}

fn clamp(v: f32) -> i16 {
    v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

/// The last `taps.len()` samples and their dot product with the filter.
/// The ring is stored twice over, so the window is always one contiguous
/// slice (no index arithmetic per tap).
#[derive(Debug, Clone)]
struct History {
    /// Taps in reverse order: `rev[j]` meets the window's `j`-th sample,
    /// oldest first.
    rev: Vec<f32>,
    buf: Vec<f32>,
    /// Where the next sample goes, `0..len`.
    pos: usize,
}

impl History {
    fn new(taps: &[f32]) -> History {
        let n = taps.len().max(1);
        History {
            rev: taps.iter().rev().copied().collect(),
            buf: vec![0.0; 2 * n],
            pos: 0,
        }
    }

    fn push(&mut self, x: f32) {
        let n = self.rev.len();
        self.buf[self.pos] = x;
        self.buf[self.pos + n] = x;
        self.pos = (self.pos + 1) % n;
    }

    /// The filter's output for the samples pushed so far.
    fn output(&self) -> f32 {
        let window = &self.buf[self.pos..self.pos + self.rev.len()];
        window.iter().zip(&self.rev).map(|(x, t)| x * t).sum()
    }
}

/// Low rate to 48 kHz: each input sample gives `ratio` output samples.
/// Polyphase: output phase `k` uses taps `k, k + ratio, …` on the input
/// history, which is the zero-stuffed filter without its zero products.
#[derive(Debug, Clone)]
pub struct Upsampler {
    phases: Vec<History>,
}

impl Upsampler {
    /// `ratio`: 6 for 8 kHz, 3 for 16 kHz. At least 1.
    pub fn new(ratio: usize) -> Upsampler {
        let ratio = ratio.max(1);
        let taps = filter_for(ratio);
        // Zero-stuffing divides the level by the ratio; the gain restores it.
        let gain = ratio as f32;
        let phases = (0..ratio)
            .map(|k| {
                let phase: Vec<f32> = taps
                    .iter()
                    .skip(k)
                    .step_by(ratio)
                    .map(|t| t * gain)
                    .collect();
                History::new(&phase)
            })
            .collect();
        Upsampler { phases }
    }

    /// Appends the resampled `input` to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        for &x in input {
            for h in &mut self.phases {
                h.push(f32::from(x));
                out.push(clamp(h.output()));
            }
        }
    }
}

/// 48 kHz to a low rate: keeps one filtered sample in `ratio`.
#[derive(Debug, Clone)]
pub struct Downsampler {
    ratio: usize,
    history: History,
    /// High-rate samples since the last output.
    phase: usize,
}

impl Downsampler {
    /// `ratio`: 6 for 8 kHz, 3 for 16 kHz. At least 1.
    pub fn new(ratio: usize) -> Downsampler {
        let ratio = ratio.max(1);
        Downsampler {
            ratio,
            history: History::new(&filter_for(ratio)),
            phase: 0,
        }
    }

    /// Appends the resampled `input` to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        for &x in input {
            self.history.push(f32::from(x));
            self.phase += 1;
            if self.phase == self.ratio {
                self.phase = 0;
                out.push(clamp(self.history.output()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{fill_sine, scan_dominant_frequency, tone_power};

    fn sine(hz: f32, rate: u32, n: usize) -> Vec<i16> {
        let mut v = vec![0i16; n];
        fill_sine(&mut v, hz, 0.5, rate, 0.0);
        v
    }

    fn level_db(samples: &[i16], hz: f32, rate: u32) -> f32 {
        // A half-scale sine has tone power 0.0625.
        10.0 * (tone_power(samples, hz, rate) / 0.0625).log10()
    }

    #[test]
    fn voice_band_tones_keep_their_frequency_and_level_both_ways() {
        for hz in [300.0, 1000.0, 3000.0] {
            let mut up = Upsampler::new(6);
            let mut high = Vec::new();
            // In odd-sized blocks: the history joins them.
            for block in sine(hz, 8_000, 8_000).chunks(37) {
                up.process(block, &mut high);
            }
            assert_eq!(high.len(), 48_000);
            assert_eq!(scan_dominant_frequency(&high, 48_000), Some(hz));
            let db = level_db(&high[4_800..], hz, 48_000);
            assert!(db.abs() < 0.5, "{hz} Hz up: {db} dB");

            let mut down = Downsampler::new(6);
            let mut low = Vec::new();
            for block in sine(hz, 48_000, 48_000).chunks(480) {
                down.process(block, &mut low);
            }
            assert_eq!(low.len(), 8_000);
            assert_eq!(scan_dominant_frequency(&low, 8_000), Some(hz));
            let db = level_db(&low[800..], hz, 8_000);
            assert!(db.abs() < 0.5, "{hz} Hz down: {db} dB");
        }
    }

    #[test]
    fn tones_above_the_narrow_band_do_not_alias_down() {
        // 5 kHz at 48 kHz would fold to 3 kHz at 8 kHz without the filter.
        let mut down = Downsampler::new(6);
        let mut low = Vec::new();
        down.process(&sine(5_000.0, 48_000, 48_000), &mut low);
        let db = level_db(&low[800..], 3_000.0, 8_000);
        assert!(db < -30.0, "alias of 5 kHz at 3 kHz: {db} dB");
    }

    #[test]
    fn upsampling_images_are_removed() {
        // 1 kHz at 8 kHz, zero-stuffed, has images at 7, 9, 15, 17 kHz.
        let mut up = Upsampler::new(6);
        let mut high = Vec::new();
        up.process(&sine(1_000.0, 8_000, 8_000), &mut high);
        for image in [7_000.0, 9_000.0] {
            let db = level_db(&high[4_800..], image, 48_000);
            assert!(db < -30.0, "image at {image} Hz: {db} dB");
        }
    }

    #[test]
    fn full_scale_input_saturates_instead_of_wrapping() {
        let mut up = Upsampler::new(6);
        let mut out = Vec::new();
        let square: Vec<i16> = (0..800)
            .map(|i| if (i / 4) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        up.process(&square, &mut out);
        // Overshoot clamps at the rails; a wrap would flip the sign right
        // after a positive peak.
        let flips = out
            .windows(2)
            .filter(|w| w[0] > 30_000 && w[1] < -30_000)
            .count();
        assert_eq!(flips, 0);
    }
}
