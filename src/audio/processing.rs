//! Capture processing between the device and the media session: high-pass
//! filter → echo canceller → noise suppression → automatic gain control, all
//! from `sonora` (a pure-Rust port of WebRTC's audio processing module).
//!
//! The echo canceller's far end must be exactly what the speaker plays, so a
//! backend calls [`Processor::render`] with every frame it hands to the
//! device, and [`Processor::capture`] with every frame it reads from it. The
//! two calls come from the same thread and interleave one to one.

use sonora::config::{
    EchoCanceller, GainController2, HighPassFilter, NoiseSuppression, NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, Config, StreamConfig};

use super::{FRAME_SAMPLES, SAMPLE_RATE};

/// Which stages run, from the `[audio]` and `[audio.processing]` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessingSettings {
    pub high_pass_filter: bool,
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    pub auto_gain_control: bool,
    /// Delay from handing a frame to the speaker to hearing it in the
    /// microphone, when known for the board; `None` leaves the estimate to
    /// the echo canceller's own delay estimator.
    pub echo_delay_ms: Option<u32>,
    pub noise_suppression_level: NsLevel,
}

/// Aggressiveness of the noise suppressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsLevel {
    Low,
    Moderate,
    High,
    VeryHigh,
}

impl NsLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            NsLevel::Low => "low",
            NsLevel::Moderate => "moderate",
            NsLevel::High => "high",
            NsLevel::VeryHigh => "very_high",
        }
    }
}

impl Default for ProcessingSettings {
    fn default() -> Self {
        ProcessingSettings {
            high_pass_filter: true,
            echo_cancellation: true,
            noise_suppression: true,
            auto_gain_control: true,
            echo_delay_ms: None,
            noise_suppression_level: NsLevel::Moderate,
        }
    }
}

impl ProcessingSettings {
    /// Every stage off: frames pass through untouched.
    pub fn off() -> Self {
        ProcessingSettings {
            high_pass_filter: false,
            echo_cancellation: false,
            noise_suppression: false,
            auto_gain_control: false,
            echo_delay_ms: None,
            noise_suppression_level: NsLevel::Moderate,
        }
    }

    fn any(&self) -> bool {
        self.high_pass_filter
            || self.echo_cancellation
            || self.noise_suppression
            || self.auto_gain_control
    }
}

/// Counters for the status snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingStats {
    pub captured: u64,
    pub rendered: u64,
    /// Frames passed on unprocessed because the processor refused them.
    pub failed: u64,
}

/// The capture processing chain of one device.
pub struct Processor {
    apm: Option<AudioProcessing>,
    echo_delay_ms: Option<u32>,
    out: [i16; FRAME_SAMPLES],
    stats: ProcessingStats,
    warned: bool,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("enabled", &self.apm.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Processor {
    pub fn new(settings: &ProcessingSettings) -> Self {
        let apm = settings.any().then(|| {
            let config = Config {
                high_pass_filter: settings.high_pass_filter.then(HighPassFilter::default),
                echo_canceller: settings.echo_cancellation.then(|| EchoCanceller {
                    // The separate high-pass switch decides; AEC3 would
                    // otherwise force one on.
                    enforce_high_pass_filtering: settings.high_pass_filter,
                    ..EchoCanceller::default()
                }),
                noise_suppression: settings.noise_suppression.then(|| NoiseSuppression {
                    level: match settings.noise_suppression_level {
                        NsLevel::Low => NoiseSuppressionLevel::Low,
                        NsLevel::Moderate => NoiseSuppressionLevel::Moderate,
                        NsLevel::High => NoiseSuppressionLevel::High,
                        NsLevel::VeryHigh => NoiseSuppressionLevel::VeryHigh,
                    },
                    ..NoiseSuppression::default()
                }),
                gain_controller2: settings.auto_gain_control.then(|| GainController2 {
                    adaptive_digital: Some(Default::default()),
                    ..GainController2::default()
                }),
                ..Config::default()
            };
            AudioProcessing::builder()
                .config(config)
                .capture_config(StreamConfig::new(SAMPLE_RATE, 1))
                .render_config(StreamConfig::new(SAMPLE_RATE, 1))
                .build()
        });
        Processor {
            apm,
            echo_delay_ms: settings.echo_delay_ms,
            out: [0; FRAME_SAMPLES],
            stats: ProcessingStats::default(),
            warned: false,
        }
    }

    /// Whether any stage runs.
    pub fn is_active(&self) -> bool {
        self.apm.is_some()
    }

    pub fn stats(&self) -> ProcessingStats {
        self.stats
    }

    /// Feeds one frame that is about to be played: the echo canceller's
    /// reference.
    pub fn render(&mut self, far: &[i16; FRAME_SAMPLES]) {
        let Some(apm) = self.apm.as_mut() else { return };
        self.stats.rendered += 1;
        // The render path only analyses; its output is not played.
        if let Err(e) = apm.process_render_i16(far, &mut self.out) {
            self.stats.failed += 1;
            if !self.warned {
                self.warned = true;
                tracing::warn!(error = ?e, "audio processing refused a speaker frame");
            }
        }
    }

    /// Processes one microphone frame in place. A frame the processor
    /// refuses is passed on as it was captured.
    pub fn capture(&mut self, near: &mut [i16; FRAME_SAMPLES]) {
        let Some(apm) = self.apm.as_mut() else { return };
        self.stats.captured += 1;
        if let Some(ms) = self.echo_delay_ms {
            // Only a hint for the delay estimator; out-of-range values are
            // clamped by the processor and reported, never fatal.
            let _ = apm.set_stream_delay_ms(ms.min(500) as i32);
        }
        match apm.process_capture_i16(near, &mut self.out) {
            Ok(()) => near.copy_from_slice(&self.out),
            Err(e) => {
                self.stats.failed += 1;
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(error = ?e, "audio processing refused a microphone frame");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::testsignal::{SpeechLike, echo_path, energy_db};

    /// A far-end voice played through a room (100 ms tail, 25 ms delay)
    /// comes back to the microphone; after convergence the echo canceller
    /// removes at least 25 dB of it.
    #[test]
    fn echo_is_attenuated_after_convergence() {
        let settings = ProcessingSettings {
            // Noise suppression and AGC off: measure the echo canceller (and
            // the high-pass filter it runs behind) alone.
            noise_suppression: false,
            auto_gain_control: false,
            ..ProcessingSettings::default()
        };
        let mut p = Processor::new(&settings);
        let seconds = 12;
        let frames = seconds * 100;
        let far = SpeechLike::new(7).take_samples(frames * FRAME_SAMPLES, 0.3);
        let echo = echo_path(&far, 25, 100, 0.5, 11);
        let (mut in_tail, mut out_tail) = (Vec::new(), Vec::new());
        for i in 0..frames {
            let r = i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES;
            let mut f = [0i16; FRAME_SAMPLES];
            f.copy_from_slice(&far[r.clone()]);
            p.render(&f);
            let mut mic = [0i16; FRAME_SAMPLES];
            mic.copy_from_slice(&echo[r]);
            let before = mic;
            p.capture(&mut mic);
            // Judge the last 4 s, after convergence.
            if i >= frames - 400 {
                in_tail.extend_from_slice(&before);
                out_tail.extend_from_slice(&mic);
            }
        }
        let erle = energy_db(&in_tail) - energy_db(&out_tail);
        eprintln!("echo return loss enhancement after convergence: {erle:.1} dB");
        assert!(erle >= 25.0, "echo return loss enhancement {erle:.1} dB");
        assert_eq!(p.stats().failed, 0);
    }

    /// The simulated microphone's steady tone (what the end-to-end tests
    /// check by content) still comes through the full default chain.
    #[test]
    fn steady_tone_survives_the_default_chain() {
        let mut p = Processor::new(&ProcessingSettings::default());
        let mut phase = 0.0;
        let mut out = Vec::new();
        for _ in 0..500 {
            p.render(&[0; FRAME_SAMPLES]);
            let mut f = [0i16; FRAME_SAMPLES];
            phase = crate::audio::fill_sine(&mut f, 600.0, 0.25, SAMPLE_RATE, phase);
            p.capture(&mut f);
            out.extend_from_slice(&f);
        }
        let tail = &out[out.len() - 48_000..];
        assert_eq!(
            crate::audio::dominant_frequency(tail, SAMPLE_RATE, &[425.0, 600.0, 1000.0]),
            Some(600.0)
        );
        let level = energy_db(tail);
        eprintln!("steady 600 Hz tone after 5 s of processing: {level:.1} dBFS");
        assert!(level > -40.0, "tone level {level:.1} dBFS");
    }

    #[test]
    fn everything_off_passes_frames_through() {
        let mut p = Processor::new(&ProcessingSettings::off());
        assert!(!p.is_active());
        let mut f = [0i16; FRAME_SAMPLES];
        crate::audio::fill_sine(&mut f, 440.0, 0.5, SAMPLE_RATE, 0.0);
        let orig = f;
        p.render(&orig);
        p.capture(&mut f);
        assert_eq!(f, orig);
    }
}
