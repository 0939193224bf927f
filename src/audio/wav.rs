//! WAV files for the simulated audio backend, through hound: test sources
//! (`wav:` sources: integer or float PCM, any channel count, at a rate
//! the product's resampler reaches from 48 kHz by an integer ratio) and
//! recordings of the simulated speaker (16-bit mono, kept valid while they
//! grow).

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use super::resample::{Downsampler, Upsampler};

/// Errors reading or writing a WAV file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a usable WAV file: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// Decoded contents of a WAV file; `samples` are interleaved.
#[derive(Debug, Clone, PartialEq)]
pub struct WavData {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<i16>,
}

impl WavData {
    /// Mono at `rate`: channels averaged, the rate converted by the
    /// product's windowed-sinc resampler (audio/resample.rs). Only integer
    /// ratios between the two rates are supported (8, 12, 16, 24 and
    /// 96 kHz against 48 kHz); `None` for any other pair.
    pub fn to_mono(&self, rate: u32) -> Option<Vec<i16>> {
        let ch = usize::from(self.channels.max(1));
        let mono: Vec<i16> = self
            .samples
            .chunks_exact(ch)
            .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / ch as i32) as i16)
            .collect();
        let from = self.sample_rate;
        let mut out = Vec::new();
        if from == rate || mono.is_empty() {
            return Some(mono);
        } else if from < rate && rate.is_multiple_of(from) {
            Upsampler::new((rate / from) as usize).process(&mono, &mut out);
        } else if from > rate && from.is_multiple_of(rate) {
            Downsampler::new((from / rate) as usize).process(&mono, &mut out);
        } else {
            return None;
        }
        Some(out)
    }
}

fn format_err(path: &Path, reason: impl Into<String>) -> WavError {
    WavError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn hound_err(path: &Path, e: hound::Error) -> WavError {
    match e {
        hound::Error::IoError(source) => WavError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => format_err(path, other.to_string()),
    }
}

/// Reads a WAV file into 16-bit samples: 8- to 32-bit integer PCM is
/// scaled, 32-bit float clamped. A recording still being written may claim
/// more samples than are there: what is there is read.
pub fn read_wav(path: &Path) -> Result<WavData, WavError> {
    let mut reader = hound::WavReader::open(path).map_err(|e| hound_err(path, e))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(format_err(path, "zero channels or sample rate"));
    }
    let samples = match spec.sample_format {
        hound::SampleFormat::Int if (8..=32).contains(&spec.bits_per_sample) => {
            let shift = i32::from(spec.bits_per_sample) - 16;
            read_until_short(path, reader.samples::<i32>(), |v| {
                if shift >= 0 {
                    (v >> shift) as i16
                } else {
                    (v << -shift) as i16
                }
            })?
        }
        hound::SampleFormat::Float if spec.bits_per_sample == 32 => {
            read_until_short(path, reader.samples::<f32>(), |v| {
                (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16
            })?
        }
        f => {
            return Err(format_err(
                path,
                format!(
                    "{}-bit {f:?} samples are not supported",
                    spec.bits_per_sample
                ),
            ));
        }
    };
    Ok(WavData {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        samples,
    })
}

/// The samples up to the end of the file; a data chunk cut short (a
/// recording being written) ends the read instead of failing it.
fn read_until_short<T>(
    path: &Path,
    samples: impl Iterator<Item = hound::Result<T>>,
    convert: impl Fn(T) -> i16,
) -> Result<Vec<i16>, WavError> {
    let mut out = Vec::new();
    for s in samples {
        match s {
            Ok(v) => out.push(convert(v)),
            Err(hound::Error::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(hound_err(path, e)),
        }
    }
    Ok(out)
}

/// Writes a 16-bit PCM WAV file whose header is kept valid while it grows:
/// [`WavWriter::update_header`] rewrites the sizes, and closing does too
/// (hound also does on drop).
pub struct WavWriter {
    path: PathBuf,
    out: hound::WavWriter<BufWriter<File>>,
    data_bytes: u64,
}

/// The RIFF sizes are 32-bit: a recording stops growing before they wrap.
const MAX_DATA_BYTES: u64 = u32::MAX as u64 - 44;

impl WavWriter {
    pub fn create(path: &Path, sample_rate: u32, channels: u16) -> Result<Self, WavError> {
        let spec = hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let out = hound::WavWriter::create(path, spec).map_err(|e| hound_err(path, e))?;
        let mut w = WavWriter {
            path: path.to_path_buf(),
            out,
            data_bytes: 0,
        };
        w.update_header()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_samples(&mut self, samples: &[i16]) -> Result<(), WavError> {
        let add = samples.len() as u64 * 2;
        if self.data_bytes + add > MAX_DATA_BYTES {
            return Err(format_err(
                &self.path,
                "recording exceeds the 4 GiB WAV limit",
            ));
        }
        let mut w = self.out.get_i16_writer(samples.len() as u32);
        for &s in samples {
            w.write_sample(s);
        }
        w.flush().map_err(|e| hound_err(&self.path, e))?;
        self.data_bytes += add;
        Ok(())
    }

    /// Flushes and rewrites the RIFF and data sizes so the file is valid as it is now.
    pub fn update_header(&mut self) -> Result<(), WavError> {
        self.out.flush().map_err(|e| hound_err(&self.path, e))
    }

    /// Final header update and flush to disk.
    pub fn finish(self) -> Result<(), WavError> {
        let path = self.path;
        self.out.finalize().map_err(|e| hound_err(&path, e))?;
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.sync_data())
            .map_err(|source| WavError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_growing_header() {
        let dir = std::env::temp_dir().join(format!("wav-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let path = dir.join("t.wav");
        let mut w = WavWriter::create(&path, 48_000, 1).expect("create wav");
        w.write_samples(&[1, 2, 3]).expect("write");
        w.update_header().expect("header");
        // Valid while still open.
        let mid = read_wav(&path).expect("readable while growing");
        assert_eq!(mid.samples, vec![1, 2, 3]);
        w.write_samples(&[4]).expect("write");
        w.finish().expect("finish");
        let all = read_wav(&path).expect("read");
        assert_eq!(all.samples, vec![1, 2, 3, 4]);
        assert_eq!(all.sample_rate, 48_000);
        let err = read_wav(&dir.join("missing.wav")).expect_err("missing file");
        assert!(err.to_string().contains("missing.wav"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn resamples_and_downmixes() {
        let d = WavData {
            sample_rate: 24_000,
            channels: 2,
            samples: vec![100, 300, 200, 400],
        };
        // Downmixed: 200, 300. Doubled in rate through the sinc filter:
        // twice as many samples, and the level settles on the input's
        // once the filter's history is full (a longer constant input).
        assert_eq!(d.to_mono(48_000).expect("integer ratio").len(), 4);
        let flat = WavData {
            sample_rate: 16_000,
            channels: 1,
            samples: vec![1000; 400],
        };
        let up = flat.to_mono(48_000).expect("integer ratio");
        assert_eq!(up.len(), 1200);
        assert!(
            up[600..].iter().all(|&s| (990..=1010).contains(&s)),
            "{:?}",
            &up[600..610]
        );
        // 44.1 kHz is no integer ratio of 48 kHz: refused, not guessed.
        let cd = WavData {
            sample_rate: 44_100,
            channels: 1,
            samples: vec![0; 10],
        };
        assert_eq!(cd.to_mono(48_000), None);
    }

    #[test]
    fn reads_24_bit_and_float_sources() {
        let dir = std::env::temp_dir().join(format!("wav-formats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let p24 = dir.join("24.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p24, spec).expect("create 24-bit");
        for v in [0x7f_ff00, -0x80_0000, 0x100] {
            w.write_sample(v).expect("write");
        }
        w.finalize().expect("finalize");
        assert_eq!(
            read_wav(&p24).expect("24-bit").samples,
            vec![0x7fff, -0x8000, 1]
        );
        let pf = dir.join("f.wav");
        let spec = hound::WavSpec {
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
            ..spec
        };
        let mut w = hound::WavWriter::create(&pf, spec).expect("create float");
        for v in [0.5f32, -1.0, 2.0] {
            w.write_sample(v).expect("write");
        }
        w.finalize().expect("finalize");
        assert_eq!(
            read_wav(&pf).expect("float").samples,
            vec![16384, -32768, 32767]
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
