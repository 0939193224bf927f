//! Audio frames inside the product: 48 kHz mono, 10 ms per frame.
//!
//! Backends (ALSA, simulated) produce captured frames and consume frames for
//! the speaker through an [`AudioPorts`] pair of bounded channels; the media
//! session is joined to them directly, never through the controller.

pub mod alsa;
pub mod processing;
pub mod resample;
pub mod router;
pub mod sim;
pub mod testsignal;
pub mod tones;
pub mod wav;

use std::path::PathBuf;

use tokio::sync::mpsc;

/// Sample rate of every frame inside the product.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 10 ms mono frame.
pub const FRAME_SAMPLES: usize = 480;
/// Default depth of the capture and playback channels: 20 frames = 200 ms.
pub const DEFAULT_PORT_CAPACITY: usize = 20;

/// One 10 ms mono frame. Boxed so that moving it through a channel copies a
/// pointer, not 960 bytes.
pub type Frame = Box<[i16; FRAME_SAMPLES]>;

/// A frame of digital silence.
pub fn silent_frame() -> Frame {
    Box::new([0; FRAME_SAMPLES])
}

/// The per-call pair a media session uses: captured microphone frames come in
/// on `capture`, decoded far-end frames for the speaker go out on `playback`.
#[derive(Debug)]
pub struct AudioPorts {
    pub capture: mpsc::Receiver<Frame>,
    pub playback: mpsc::Sender<Frame>,
}

/// The backend's side of an [`AudioPorts`] pair.
#[derive(Debug)]
pub struct DevicePorts {
    pub capture: mpsc::Sender<Frame>,
    pub playback: mpsc::Receiver<Frame>,
}

/// Creates a connected pair of bounded channels, `capacity` frames each.
pub fn port_pair(capacity: usize) -> (AudioPorts, DevicePorts) {
    let (capture_tx, capture_rx) = mpsc::channel(capacity.max(1));
    let (playback_tx, playback_rx) = mpsc::channel(capacity.max(1));
    (
        AudioPorts {
            capture: capture_rx,
            playback: playback_tx,
        },
        DevicePorts {
            capture: capture_tx,
            playback: playback_rx,
        },
    )
}

/// Errors of the audio subsystem.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("invalid simulated audio source {spec:?}: {reason}")]
    InvalidSource { spec: String, reason: String },
    #[error(transparent)]
    Wav(#[from] wav::WavError),
    #[error("audio device {device}: {reason}")]
    Device { device: String, reason: String },
    #[error(transparent)]
    Alsa(#[from] alsa::AlsaError),
    #[error("cannot start the WAV recorder thread for {path}: {source}")]
    RecorderThread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Power of `freq_hz` in `samples` (Goertzel), normalised so that a full
/// scale sine at that frequency gives about 0.25 regardless of length.
pub fn tone_power(samples: &[i16], freq_hz: f32, rate: u32) -> f32 {
    if samples.is_empty() || rate == 0 {
        return 0.0;
    }
    let n = samples.len() as f64;
    let w = 2.0 * std::f64::consts::PI * f64::from(freq_hz) / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    (power / (n * n)) as f32
}

/// The candidate frequency with the most power, if any has a measurable level
/// (silence gives `None`).
pub fn dominant_frequency(samples: &[i16], rate: u32, candidates: &[f32]) -> Option<f32> {
    // About -60 dBFS for a sine: below that it is noise or silence.
    const FLOOR: f32 = 2.5e-7;
    candidates
        .iter()
        .map(|&f| (f, tone_power(samples, f, rate)))
        .filter(|&(_, p)| p > FLOOR)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(f, _)| f)
}

/// Dominant frequency over 100..=4000 Hz in 10 Hz steps. Only the last
/// second of `samples` is scanned, which bounds the cost.
pub fn scan_dominant_frequency(samples: &[i16], rate: u32) -> Option<f32> {
    // 200 ms is plenty to tell tones 10 Hz apart and keeps a scan to a few
    // million multiply-adds.
    let window = (rate as usize / 5).min(samples.len());
    let tail = &samples[samples.len() - window..];
    let candidates: Vec<f32> = (10..=400).map(|k| k as f32 * 10.0).collect();
    dominant_frequency(tail, rate, &candidates)
}

/// Signal to noise ratio (dB) of `samples` as a tone of `freq_hz`: the
/// least squares fit of a sine and a cosine at that frequency is the
/// signal, what is left the noise. Independent of delay and phase, so it
/// judges a tone after a codec or resampler.
pub fn tone_snr_db(samples: &[i16], freq_hz: f32, rate: u32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * f64::from(freq_hz) / f64::from(rate.max(1));
    let (mut ss, mut cc, mut sc, mut xs, mut xc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, &x) in samples.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        let x = f64::from(x);
        ss += s * s;
        cc += c * c;
        sc += s * c;
        xs += x * s;
        xc += x * c;
    }
    let det = ss * cc - sc * sc;
    if det.abs() < 1e-9 {
        return f64::NEG_INFINITY;
    }
    let a = (xs * cc - xc * sc) / det;
    let b = (xc * ss - xs * sc) / det;
    let (mut signal, mut noise) = (0.0, 0.0);
    for (i, &x) in samples.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        let fit = a * s + b * c;
        signal += fit * fit;
        noise += (f64::from(x) - fit).powi(2);
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

/// Fills `out` with a sine of `freq_hz` at `amplitude` (0..1 of full scale),
/// continuing from `phase` (radians), and returns the phase to continue from.
pub fn fill_sine(out: &mut [i16], freq_hz: f32, amplitude: f32, rate: u32, phase: f64) -> f64 {
    let step = 2.0 * std::f64::consts::PI * f64::from(freq_hz) / f64::from(rate);
    let mut ph = phase;
    for s in out.iter_mut() {
        *s = (ph.sin() * f64::from(amplitude) * 32767.0) as i16;
        ph += step;
        if ph > 2.0 * std::f64::consts::PI {
            ph -= 2.0 * std::f64::consts::PI;
        }
    }
    ph
}

/// Hands out the audio ports for one call: what the station's controller
/// asks of an audio backend (ALSA, simulated).
pub trait AudioProvider: Send {
    fn open_call(&mut self) -> Result<AudioPorts, AudioError>;
    /// Which local tone the speaker plays (ringback, door chime). Must not
    /// block: implementations use `try_send`.
    fn cue(&mut self, _cue: tones::ToneCue) {}
    /// Figures for the status snapshot.
    fn stats(&self) -> AudioStats;
}

/// The audio device's counters in the status snapshot: one shape for every
/// backend (a figure a backend does not have stays 0 or `null`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct AudioStats {
    /// `"alsa"` or `"sim"`.
    pub backend: &'static str,
    /// The ALSA device (`null` on the simulated one).
    pub device: Option<String>,
    pub captured_frames: u64,
    /// Capture frames dropped because the call's queue was full.
    pub capture_dropped: u64,
    pub played_frames: u64,
    /// Playback periods filled with silence for lack of audio.
    pub playback_starved: u64,
    pub xruns: u64,
    /// Times the device was opened again after an error.
    pub reopens: u64,
    pub device_down: bool,
    /// The local tone last asked for (simulated device only).
    pub tone: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_finds_the_tone() {
        let mut buf = vec![0i16; 4800];
        fill_sine(&mut buf, 600.0, 0.25, SAMPLE_RATE, 0.0);
        assert_eq!(
            dominant_frequency(&buf, SAMPLE_RATE, &[600.0, 1000.0]),
            Some(600.0)
        );
        assert_eq!(scan_dominant_frequency(&buf, SAMPLE_RATE), Some(600.0));
        let silence = vec![0i16; 4800];
        assert_eq!(scan_dominant_frequency(&silence, SAMPLE_RATE), None);
    }
}
