//! Local tones mixed into the speaker: ringback while the residents' browsers
//! ring, and a chime when the door opens. The controller cues them with a
//! [`ToneCue`]; the audio thread generates them frame by frame.

use super::{FRAME_SAMPLES, SAMPLE_RATE};

/// Which tone the speaker should play now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToneCue {
    /// No local tone.
    Silence,
    /// Repeating ringback until the next cue.
    Ringback,
    /// One two-note chime, then silence.
    DoorOpened,
}

impl ToneCue {
    pub fn as_str(self) -> &'static str {
        match self {
            ToneCue::Silence => "silence",
            ToneCue::Ringback => "ringback",
            ToneCue::DoorOpened => "door_opened",
        }
    }
}

/// From `[audio.tones]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToneSettings {
    /// Level of the tones in dBFS (peak), e.g. -20.
    pub volume_db: f32,
    pub ringback: bool,
    pub ringback_hz: f32,
    pub ringback_on_ms: u32,
    pub ringback_off_ms: u32,
    pub door_chime: bool,
}

impl Default for ToneSettings {
    fn default() -> Self {
        // ETSI ringback: 425 Hz, 1 s on, 4 s off.
        ToneSettings {
            volume_db: -20.0,
            ringback: true,
            ringback_hz: 425.0,
            ringback_on_ms: 1000,
            ringback_off_ms: 4000,
            door_chime: true,
        }
    }
}

/// The chime: two notes, 250 ms each.
const CHIME: [(f32, u32); 2] = [(880.0, 250), (660.0, 250)];
/// Fade in and out over 5 ms so notes start and stop without clicks.
const FADE_SAMPLES: u32 = 240;

/// Generates the cued tone and adds it to speaker frames.
#[derive(Debug)]
pub struct ToneMixer {
    settings: ToneSettings,
    amplitude: f32,
    cue: ToneCue,
    /// Samples since the cue started.
    pos: u64,
    phase: f64,
}

impl ToneMixer {
    pub fn new(settings: &ToneSettings) -> Self {
        ToneMixer {
            amplitude: 10f32.powf(settings.volume_db.min(0.0) / 20.0),
            settings: settings.clone(),
            cue: ToneCue::Silence,
            pos: 0,
            phase: 0.0,
        }
    }

    pub fn cue(&mut self, cue: ToneCue) {
        let enabled = match cue {
            ToneCue::Silence => true,
            ToneCue::Ringback => self.settings.ringback,
            ToneCue::DoorOpened => self.settings.door_chime,
        };
        if enabled && cue != self.cue {
            tracing::debug!(tone = cue.as_str(), "local tone");
            self.cue = cue;
            self.pos = 0;
            self.phase = 0.0;
        }
    }

    pub fn current(&self) -> ToneCue {
        self.cue
    }

    /// Frequency and envelope (0..1) at sample `pos` of the current cue;
    /// `None` once a one-shot tone is over.
    fn at(&self, pos: u64) -> Option<(f32, f32)> {
        let per_ms = u64::from(SAMPLE_RATE / 1000);
        let fade = |t: u64, len: u64| {
            let edge = t.min(len.saturating_sub(t + 1));
            (edge as f32 / FADE_SAMPLES as f32).min(1.0)
        };
        match self.cue {
            ToneCue::Silence => None,
            ToneCue::Ringback => {
                let on = u64::from(self.settings.ringback_on_ms) * per_ms;
                let cycle = on + u64::from(self.settings.ringback_off_ms) * per_ms;
                let t = pos % cycle.max(1);
                Some((
                    self.settings.ringback_hz,
                    if t < on { fade(t, on) } else { 0.0 },
                ))
            }
            ToneCue::DoorOpened => {
                let mut start = 0;
                for (hz, ms) in CHIME {
                    let len = u64::from(ms) * per_ms;
                    if pos < start + len {
                        return Some((hz, fade(pos - start, len)));
                    }
                    start += len;
                }
                None
            }
        }
    }

    /// Adds the tone to `frame`, saturating.
    pub fn mix(&mut self, frame: &mut [i16; FRAME_SAMPLES]) {
        if self.cue == ToneCue::Silence {
            return;
        }
        for s in frame.iter_mut() {
            match self.at(self.pos) {
                Some((hz, env)) => {
                    let step = 2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(SAMPLE_RATE);
                    self.phase = (self.phase + step) % (2.0 * std::f64::consts::PI);
                    let v = self.phase.sin() as f32 * self.amplitude * env * 32767.0;
                    *s = (f32::from(*s) + v).clamp(-32768.0, 32767.0) as i16;
                }
                None => {
                    // A one-shot tone ended.
                    self.cue = ToneCue::Silence;
                    return;
                }
            }
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::dominant_frequency;

    fn run(m: &mut ToneMixer, frames: usize) -> Vec<i16> {
        let mut out = Vec::new();
        for _ in 0..frames {
            let mut f = [0i16; FRAME_SAMPLES];
            m.mix(&mut f);
            out.extend_from_slice(&f);
        }
        out
    }

    #[test]
    fn ringback_cadence_and_level() {
        let mut m = ToneMixer::new(&ToneSettings::default());
        m.cue(ToneCue::Ringback);
        let out = run(&mut m, 500);
        let on = &out[4800..43200];
        assert_eq!(
            dominant_frequency(on, SAMPLE_RATE, &[425.0, 660.0, 880.0]),
            Some(425.0)
        );
        let peak = on.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        // -20 dBFS = 3277.
        assert!((3200..=3300).contains(&peak), "peak {peak}");
        // The off part of the cadence is silent.
        assert!(out[60_000..190_000].iter().all(|&s| s == 0));
        m.cue(ToneCue::Silence);
        assert!(run(&mut m, 10).iter().all(|&s| s == 0));
    }

    #[test]
    fn chime_plays_once_and_mixes_over_speech() {
        let mut m = ToneMixer::new(&ToneSettings::default());
        m.cue(ToneCue::DoorOpened);
        let out = run(&mut m, 100);
        let cands = [425.0, 660.0, 880.0];
        assert_eq!(
            dominant_frequency(&out[1000..11000], SAMPLE_RATE, &cands),
            Some(880.0)
        );
        assert_eq!(
            dominant_frequency(&out[13000..23000], SAMPLE_RATE, &cands),
            Some(660.0)
        );
        assert!(out[24_500..].iter().all(|&s| s == 0));
        assert_eq!(m.current(), ToneCue::Silence);
    }

    #[test]
    fn disabled_tones_stay_silent() {
        let mut m = ToneMixer::new(&ToneSettings {
            ringback: false,
            ..ToneSettings::default()
        });
        m.cue(ToneCue::Ringback);
        assert!(run(&mut m, 50).iter().all(|&s| s == 0));
    }
}
