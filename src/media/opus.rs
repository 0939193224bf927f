//! Opus for the wire: 48 kHz mono, 20 ms packets (two 10 ms frames), in-band
//! FEC; decoding with loss concealment driven by RTP sequence numbers.

use opusic_c::{Application, Bitrate, Channels, Decoder, Encoder, InbandFec, SampleRate, Signal};

use crate::audio::{FRAME_SAMPLES, Frame};

/// Samples in one 20 ms packet.
pub const PACKET_SAMPLES: usize = 2 * FRAME_SAMPLES;
/// Longest Opus packet: 120 ms.
const MAX_DECODE_SAMPLES: usize = 5760;
/// Gaps longer than this are treated as a stream reset, not concealed.
const MAX_CONCEALED_PACKETS: u16 = 10;

#[derive(Debug, thiserror::Error)]
pub enum OpusError {
    #[error("opus {op} failed: {code:?}")]
    Codec {
        op: &'static str,
        code: opusic_c::ErrorCode,
    },
}

fn codec(op: &'static str) -> impl FnOnce(opusic_c::ErrorCode) -> OpusError {
    move |code| OpusError::Codec { op, code }
}

/// Encoder settings taken from the media settings.
#[derive(Debug, Clone, Copy)]
pub struct OpusConfig {
    pub bitrate: u32,
    pub complexity: u8,
    pub fec: bool,
    pub expected_loss_pct: u8,
}

/// Collects 10 ms frames and encodes every second one into a 20 ms packet.
pub struct OpusEncoder {
    enc: Encoder,
    pending: Vec<u16>,
    out: Vec<u8>,
}

impl OpusEncoder {
    pub fn new(cfg: OpusConfig) -> Result<Self, OpusError> {
        let mut enc = Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip)
            .map_err(codec("encoder create"))?;
        enc.set_bitrate(Bitrate::Value(cfg.bitrate))
            .map_err(codec("set bitrate"))?;
        enc.set_complexity(cfg.complexity.min(10))
            .map_err(codec("set complexity"))?;
        enc.set_signal(Signal::Voice).map_err(codec("set signal"))?;
        enc.set_inband_fec(if cfg.fec {
            InbandFec::Mode1
        } else {
            InbandFec::Off
        })
        .map_err(codec("set fec"))?;
        // FEC is only emitted when the encoder expects loss.
        let loss = if cfg.fec {
            cfg.expected_loss_pct.clamp(1, 100)
        } else {
            cfg.expected_loss_pct.min(100)
        };
        enc.set_packet_loss(loss)
            .map_err(codec("set packet loss"))?;
        Ok(OpusEncoder {
            enc,
            pending: Vec::with_capacity(PACKET_SAMPLES),
            out: vec![0; 1500],
        })
    }

    /// Adds one frame; returns an encoded packet every second frame.
    pub fn push(&mut self, frame: &[i16; FRAME_SAMPLES]) -> Result<Option<&[u8]>, OpusError> {
        // libopus takes the 16-bit samples as u16 bit patterns.
        self.pending.extend(frame.iter().map(|&s| s as u16));
        if self.pending.len() < PACKET_SAMPLES {
            return Ok(None);
        }
        let n = self
            .enc
            .encode_to_slice(&self.pending, &mut self.out)
            .map_err(codec("encode"))?;
        self.pending.clear();
        Ok(Some(&self.out[..n]))
    }
}

/// Decodes RTP payloads into 10 ms frames, concealing gaps found in the
/// sequence numbers (FEC from the next packet for the last lost one, PLC for
/// the rest).
pub struct OpusDecoder {
    dec: Decoder,
    expected_seq: Option<u16>,
    last_packet_samples: usize,
    buf: Vec<u16>,
    carry: Vec<i16>,
    pub concealed_packets: u64,
    pub late_packets: u64,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, OpusError> {
        Ok(OpusDecoder {
            dec: Decoder::new(Channels::Mono, SampleRate::Hz48000)
                .map_err(codec("decoder create"))?,
            expected_seq: None,
            last_packet_samples: PACKET_SAMPLES,
            buf: vec![0; MAX_DECODE_SAMPLES],
            carry: Vec::with_capacity(MAX_DECODE_SAMPLES + FRAME_SAMPLES),
            concealed_packets: 0,
            late_packets: 0,
        })
    }

    /// Decodes one received packet; complete 10 ms frames are passed to `emit`.
    pub fn decode(
        &mut self,
        seq: u16,
        payload: &[u8],
        mut emit: impl FnMut(Frame),
    ) -> Result<(), OpusError> {
        if let Some(expected) = self.expected_seq {
            let gap = seq.wrapping_sub(expected);
            if gap >= 0x8000 {
                // Older than what was already played: too late to use.
                self.late_packets += 1;
                return Ok(());
            }
            if gap > 0 && gap <= MAX_CONCEALED_PACKETS {
                for i in 0..gap {
                    let len = self.last_packet_samples.min(MAX_DECODE_SAMPLES);
                    let last = i + 1 == gap;
                    // The packet after a loss carries FEC for it; empty input is PLC.
                    let (input, fec) = if last {
                        (payload, true)
                    } else {
                        (&[][..], false)
                    };
                    let n = self
                        .dec
                        .decode_to_slice(input, &mut self.buf[..len], fec)
                        .map_err(codec("conceal"))?;
                    self.concealed_packets += 1;
                    self.push_samples(n, &mut emit);
                }
            }
        }
        self.expected_seq = Some(seq.wrapping_add(1));
        let n = self
            .dec
            .decode_to_slice(payload, &mut self.buf, false)
            .map_err(codec("decode"))?;
        if n > 0 {
            self.last_packet_samples = n;
        }
        self.push_samples(n, &mut emit);
        Ok(())
    }

    fn push_samples(&mut self, n: usize, emit: &mut impl FnMut(Frame)) {
        self.carry.extend(self.buf[..n].iter().map(|&s| s as i16));
        let mut start = 0;
        while self.carry.len() - start >= FRAME_SAMPLES {
            let mut frame: Frame = Box::new([0; FRAME_SAMPLES]);
            frame.copy_from_slice(&self.carry[start..start + FRAME_SAMPLES]);
            emit(frame);
            start += FRAME_SAMPLES;
        }
        self.carry.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{SAMPLE_RATE, dominant_frequency, fill_sine};

    fn cfg() -> OpusConfig {
        OpusConfig {
            bitrate: 32_000,
            complexity: 10,
            fec: true,
            expected_loss_pct: 5,
        }
    }

    #[test]
    fn tone_survives_encode_loss_and_decode() {
        let mut enc = OpusEncoder::new(cfg()).expect("encoder");
        let mut dec = OpusDecoder::new().expect("decoder");
        let mut phase = 0.0;
        let mut out = Vec::new();
        let mut seq = 100u16;
        for i in 0..200 {
            let mut f = [0i16; FRAME_SAMPLES];
            phase = fill_sine(&mut f, 1000.0, 0.25, SAMPLE_RATE, phase);
            if let Some(pkt) = enc.push(&f).expect("encode") {
                let pkt = pkt.to_vec();
                seq = seq.wrapping_add(1);
                // Lose every tenth packet.
                if i % 20 != 7 {
                    dec.decode(seq, &pkt, |fr| out.extend_from_slice(&fr[..]))
                        .expect("decode");
                }
            }
        }
        assert!(dec.concealed_packets > 0);
        // Every packet, lost or not, yields 20 ms of audio.
        assert!(out.len() >= 98 * PACKET_SAMPLES, "{}", out.len());
        assert_eq!(
            dominant_frequency(&out[out.len() / 2..], SAMPLE_RATE, &[600.0, 1000.0]),
            Some(1000.0)
        );
    }
}
