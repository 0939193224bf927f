//! Minimal RIFF/WAVE support: 16-bit PCM only, which is all the product
//! reads (test sources) and writes (recordings).

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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
    /// Mono at `rate`: channels averaged, rate converted by linear
    /// interpolation (good enough for test signals and prompts).
    pub fn to_mono(&self, rate: u32) -> Vec<i16> {
        let ch = usize::from(self.channels.max(1));
        let mono: Vec<i16> = self
            .samples
            .chunks_exact(ch)
            .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / ch as i32) as i16)
            .collect();
        if self.sample_rate == rate || mono.is_empty() {
            return mono;
        }
        let ratio = f64::from(self.sample_rate) / f64::from(rate);
        let out_len = (mono.len() as f64 / ratio).floor() as usize;
        (0..out_len)
            .map(|i| {
                let pos = i as f64 * ratio;
                let idx = pos.floor() as usize;
                let frac = pos - idx as f64;
                let a = f64::from(mono[idx.min(mono.len() - 1)]);
                let b = f64::from(mono[(idx + 1).min(mono.len() - 1)]);
                (a + (b - a) * frac).round() as i16
            })
            .collect()
    }
}

fn format_err(path: &Path, reason: impl Into<String>) -> WavError {
    WavError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WavError + '_ {
    move |source| WavError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a 16-bit PCM WAV file.
pub fn read_wav(path: &Path) -> Result<WavData, WavError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    parse_wav(&bytes).map_err(|reason| format_err(path, reason))
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_wav(b: &[u8]) -> Result<WavData, String> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err("missing RIFF/WAVE header".into());
    }
    let mut pos = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let size = le_u32(b, pos + 4) as usize;
        let body = pos + 8;
        // A recording still being written may claim more than is there.
        let end = body.saturating_add(size).min(b.len());
        match id {
            b"fmt " => {
                if end - body < 16 {
                    return Err("fmt chunk too short".into());
                }
                let mut tag = le_u16(b, body);
                // WAVE_FORMAT_EXTENSIBLE: the real format is the sub-format GUID's first word.
                if tag == 0xFFFE && end - body >= 26 {
                    tag = le_u16(b, body + 24);
                }
                fmt = Some((
                    tag,
                    le_u16(b, body + 2),
                    le_u32(b, body + 4),
                    le_u16(b, body + 14),
                ));
            }
            b"data" => {
                let (tag, channels, rate, bits) = fmt.ok_or("data chunk before fmt chunk")?;
                if tag != 1 {
                    return Err(format!("format tag {tag}, only PCM (1) is supported"));
                }
                if bits != 16 {
                    return Err(format!("{bits}-bit samples, only 16-bit is supported"));
                }
                if channels == 0 || rate == 0 {
                    return Err("zero channels or sample rate".into());
                }
                let samples = b[body..end]
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect();
                return Ok(WavData {
                    sample_rate: rate,
                    channels,
                    samples,
                });
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        pos = body.saturating_add(size).saturating_add(size & 1);
    }
    Err("no data chunk".into())
}

/// Writes a 16-bit PCM WAV file whose header is kept valid while it grows:
/// [`WavWriter::update_header`] rewrites the sizes, and closing does too.
pub struct WavWriter {
    path: PathBuf,
    out: BufWriter<File>,
    data_bytes: u32,
    finished: bool,
}

const HEADER_LEN: u32 = 44;

impl WavWriter {
    pub fn create(path: &Path, sample_rate: u32, channels: u16) -> Result<Self, WavError> {
        let file = File::create(path).map_err(io_err(path))?;
        let mut w = WavWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            data_bytes: 0,
            finished: false,
        };
        let block_align = channels * 2;
        let mut h = Vec::with_capacity(HEADER_LEN as usize);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&(HEADER_LEN - 8).to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&sample_rate.to_le_bytes());
        h.extend_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
        h.extend_from_slice(&block_align.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&0u32.to_le_bytes());
        w.out.write_all(&h).map_err(io_err(path))?;
        w.update_header()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_samples(&mut self, samples: &[i16]) -> Result<(), WavError> {
        // Past 4 GiB the RIFF sizes overflow; stop growing rather than corrupt the file.
        let add = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
        if self
            .data_bytes
            .checked_add(add)
            .is_none_or(|n| n > u32::MAX - HEADER_LEN)
        {
            return Err(format_err(
                &self.path,
                "recording exceeds the 4 GiB WAV limit",
            ));
        }
        let mut buf = Vec::with_capacity(samples.len() * 2);
        for s in samples {
            buf.extend_from_slice(&s.to_le_bytes());
        }
        self.out.write_all(&buf).map_err(io_err(&self.path))?;
        self.data_bytes += add;
        Ok(())
    }

    /// Flushes and rewrites the RIFF and data sizes so the file is valid as it is now.
    pub fn update_header(&mut self) -> Result<(), WavError> {
        let path = self.path.clone();
        let riff = HEADER_LEN - 8 + self.data_bytes;
        let data = self.data_bytes;
        let res = (|| -> io::Result<()> {
            self.out.flush()?;
            let f = self.out.get_mut();
            f.seek(SeekFrom::Start(4))?;
            f.write_all(&riff.to_le_bytes())?;
            f.seek(SeekFrom::Start(40))?;
            f.write_all(&data.to_le_bytes())?;
            f.seek(SeekFrom::End(0))?;
            Ok(())
        })();
        res.map_err(io_err(&path))
    }

    /// Final header update and flush to disk.
    pub fn finish(mut self) -> Result<(), WavError> {
        self.finished = true;
        self.update_header()?;
        let path = self.path.clone();
        self.out.get_mut().sync_data().map_err(io_err(&path))
    }
}

impl Drop for WavWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Best effort: an error here cannot be reported any more.
            let _ = self.update_header();
        }
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
        assert_eq!(d.to_mono(48_000), vec![200, 250, 300, 300]);
    }
}
