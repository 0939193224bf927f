//! HFP's transport of mSBC over a transparent SCO link: every frame
//! travels in a 60-byte packet, a 2-byte H2 synchronisation header (0x01,
//! then 0x08, 0x38, 0xC8, 0xF8 for the sequence numbers 0..3 in turn),
//! the 57-byte mSBC frame and one padding byte.
//!
//! [`MsbcSender`] turns 16 kHz samples into that byte stream.
//! [`MsbcReceiver`] takes the stream in reads of any size and alignment
//! (the socket's packets need not start on a header), finds the headers,
//! decodes the frames and fills each missing or undecodable frame with a
//! concealment frame, counted in [`RxStats`].

use super::sbc::{FRAME_BYTES, FRAME_SAMPLES, MsbcCodec, SYNCWORD, SbcError};

/// Bytes of one H2 packet.
pub const PACKET_BYTES: usize = 60;
/// The first byte of the H2 header.
const H2_FIRST: u8 = 0x01;
/// The second byte of the H2 header for sequence numbers 0..3.
const H2_SEQ: [u8; 4] = [0x08, 0x38, 0xC8, 0xF8];

fn seq_of(byte: u8) -> Option<u8> {
    H2_SEQ.iter().position(|&b| b == byte).map(|i| i as u8)
}

/// Encodes 16 kHz samples into H2 packets.
pub struct MsbcSender {
    codec: MsbcCodec,
    pending: Vec<i16>,
    seq: u8,
    frame: [u8; FRAME_BYTES],
}

impl MsbcSender {
    pub fn new() -> Result<MsbcSender, SbcError> {
        Ok(MsbcSender {
            codec: MsbcCodec::new()?,
            pending: Vec::with_capacity(FRAME_SAMPLES * 2),
            seq: 0,
            frame: [0; FRAME_BYTES],
        })
    }

    /// Appends one whole packet to `out` for every 120 samples gathered;
    /// the rest waits for the next call. Returns how many packets.
    pub fn push(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<usize, SbcError> {
        self.pending.extend_from_slice(pcm);
        let mut packets = 0;
        let mut block = [0i16; FRAME_SAMPLES];
        let mut used = 0;
        while self.pending.len() - used >= FRAME_SAMPLES {
            block.copy_from_slice(&self.pending[used..used + FRAME_SAMPLES]);
            used += FRAME_SAMPLES;
            self.codec.encode(&block, &mut self.frame)?;
            out.push(H2_FIRST);
            out.push(H2_SEQ[usize::from(self.seq)]);
            out.extend_from_slice(&self.frame);
            out.push(0);
            self.seq = (self.seq + 1) % 4;
            packets += 1;
        }
        self.pending.drain(..used);
        Ok(packets)
    }
}

/// What the receiver met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxStats {
    /// Frames decoded.
    pub frames: u64,
    /// Frames missing from the stream (a gap in the sequence numbers, or
    /// a packet whose header was lost), concealed.
    pub lost: u64,
    /// Frames with a header but refused by the decoder (bad syncword,
    /// CRC or bitpool), concealed.
    pub corrupt: u64,
    /// Bytes thrown away while looking for a header.
    pub skipped_bytes: u64,
}

impl RxStats {
    /// Frames filled in by concealment.
    pub fn concealed(&self) -> u64 {
        self.lost + self.corrupt
    }
}

/// Losses in a row after which concealment is silence.
const FADE_FRAMES: u32 = 3;

/// Decodes an H2 packet stream into 16 kHz samples.
pub struct MsbcReceiver {
    codec: MsbcCodec,
    buf: Vec<u8>,
    /// The sequence number the next packet should carry, once in step.
    expect: Option<u8>,
    /// The last frame decoded, repeated (fading) to conceal a loss.
    last: [i16; FRAME_SAMPLES],
    /// Frames concealed since the last good one.
    losses: u32,
    /// Bytes skipped since the last packet taken.
    gap_bytes: usize,
    stats: RxStats,
}

impl MsbcReceiver {
    pub fn new() -> Result<MsbcReceiver, SbcError> {
        Ok(MsbcReceiver {
            codec: MsbcCodec::new()?,
            buf: Vec::with_capacity(PACKET_BYTES * 4),
            expect: None,
            last: [0; FRAME_SAMPLES],
            losses: 0,
            gap_bytes: 0,
            stats: RxStats::default(),
        })
    }

    pub fn stats(&self) -> RxStats {
        self.stats
    }

    /// Takes `bytes` read from the link and appends the samples of every
    /// packet now complete (decoded or concealed) to `out`.
    ///
    /// A header right where the previous packet ended is trusted: a frame
    /// the decoder refuses there is corrupt. A header found by scanning
    /// (after a loss, or at the start) may be payload bytes that look like
    /// one: unless its frame decodes, the scan goes on from the next byte.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<i16>) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        let mut pcm = [0i16; FRAME_SAMPLES];
        let mut frame = [0u8; FRAME_BYTES];
        loop {
            let Some(start) = find_header(&self.buf[at..]).map(|i| at + i) else {
                self.skip(self.buf.len() - at);
                at = self.buf.len();
                break;
            };
            let in_step = start == at && self.expect.is_some();
            self.skip(start - at);
            at = start;
            if self.buf.len() - at < PACKET_BYTES {
                break;
            }
            let seq = seq_of(self.buf[at + 1]).unwrap_or(0);
            frame.copy_from_slice(&self.buf[at + 2..at + 2 + FRAME_BYTES]);
            let decoded = self.codec.decode(&frame, &mut pcm).is_ok();
            if !decoded && !in_step {
                self.skip(1);
                at += 1;
                continue;
            }
            if let Some(expect) = self.expect {
                for _ in 0..missing(seq, expect, self.gap_bytes) {
                    self.stats.lost += 1;
                    self.conceal(out);
                }
            }
            self.gap_bytes = 0;
            self.expect = Some((seq + 1) % 4);
            if decoded {
                self.stats.frames += 1;
                self.losses = 0;
                self.last = pcm;
                out.extend_from_slice(&pcm);
            } else {
                self.stats.corrupt += 1;
                self.conceal(out);
            }
            at += PACKET_BYTES;
        }
        self.buf.drain(..at);
    }

    fn skip(&mut self, n: usize) {
        self.stats.skipped_bytes += n as u64;
        self.gap_bytes += n;
    }

    /// One frame in place of a missing one: the last good frame again at
    /// half the level per loss in a row, silence after [`FADE_FRAMES`].
    fn conceal(&mut self, out: &mut Vec<i16>) {
        self.losses += 1;
        if self.losses > FADE_FRAMES {
            out.extend(std::iter::repeat_n(0, FRAME_SAMPLES));
            return;
        }
        let shift = self.losses;
        out.extend(self.last.iter().map(|&s| s >> shift));
    }
}

/// Frames missing before a packet numbered `seq` when `expect` was due
/// and `gap_bytes` were skipped since the last packet: the count the
/// sequence numbers give (0..3), plus the whole cycles of four that the
/// skipped bytes account for (a controller that delivers a lost packet as
/// zeros or noise keeps the stream's length).
fn missing(seq: u8, expect: u8, gap_bytes: usize) -> u64 {
    let mut k = u64::from((seq + 4 - expect) % 4);
    let by_length = (gap_bytes as u64 + PACKET_BYTES as u64 / 2) / PACKET_BYTES as u64;
    while k + 2 < by_length {
        k += 4;
    }
    k
}

/// Where the next H2 header may start in `buf`: 0x01, a sequence byte and
/// the mSBC syncword, or a prefix of that at the very end of `buf`.
fn find_header(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| {
        buf[i] == H2_FIRST
            && buf.get(i + 1).is_none_or(|&b| seq_of(b).is_some())
            && buf.get(i + 2).is_none_or(|&b| b == SYNCWORD)
    })
}

#[cfg(test)]
#[path = "msbc_tests.rs"]
mod tests;
