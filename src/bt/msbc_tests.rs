//! Tones through the H2 framing and libsbc's mSBC codec and back, judged
//! by their content: the dominant frequency and the signal to noise ratio
//! against the best fitting sine ([`tone_snr_db`]).

use super::*;
use crate::audio::{dominant_frequency, fill_sine, scan_dominant_frequency, tone_snr_db};

const RATE: u32 = 16_000;
/// The decoder's first frames hold the codec's start-up transient.
const WARM_UP: usize = 4 * FRAME_SAMPLES;

fn tone(hz: f32, samples: usize) -> Vec<i16> {
    let mut s = vec![0i16; samples];
    fill_sine(&mut s, hz, 0.5, RATE, 0.0);
    s
}

/// The H2 packet stream of `pcm`, pushed in 10 ms blocks as the voice
/// bridge does.
fn encode(pcm: &[i16]) -> Vec<u8> {
    let mut tx = MsbcSender::new().expect("libsbc mSBC");
    let mut out = Vec::new();
    for block in pcm.chunks(160) {
        tx.push(block, &mut out).expect("encode");
    }
    out
}

/// Decodes `bytes` read in pieces whose sizes cycle through `reads`.
fn decode(bytes: &[u8], reads: &[usize]) -> (Vec<i16>, RxStats) {
    let mut rx = MsbcReceiver::new().expect("libsbc mSBC");
    let mut out = Vec::new();
    let mut at = 0;
    for &n in reads.iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + n).min(bytes.len());
        rx.push(&bytes[at..end], &mut out);
        at = end;
    }
    (out, rx.stats())
}

fn snr_db(samples: &[i16], hz: f32) -> f64 {
    tone_snr_db(samples, hz, RATE)
}

/// Dominant frequency over the whole 16 kHz band (50 Hz steps up to
/// 7950 Hz), where CVSD's scan stops at 4 kHz.
fn wide_band_frequency(samples: &[i16]) -> Option<f32> {
    let candidates: Vec<f32> = (2..160).map(|k| k as f32 * 50.0).collect();
    dominant_frequency(samples, RATE, &candidates)
}

fn packets_of(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.chunks(PACKET_BYTES).map(<[u8]>::to_vec).collect()
}

#[test]
fn packets_are_60_bytes_with_h2_headers_in_sequence() {
    // 1 s: 133 whole frames (16000 / 120), 80 samples wait for more.
    let bytes = encode(&tone(1_000.0, 16_000));
    assert_eq!(bytes.len(), 133 * PACKET_BYTES);
    for (i, p) in packets_of(&bytes).iter().enumerate() {
        assert_eq!(p[0], 0x01, "packet {i}");
        assert_eq!(p[1], [0x08, 0x38, 0xC8, 0xF8][i % 4], "packet {i}");
        assert_eq!(p[2], SYNCWORD, "packet {i}");
        assert_eq!(p[59], 0, "packet {i}: padding");
    }
}

#[test]
fn a_tone_crosses_the_framing_and_the_codec() {
    let bytes = encode(&tone(1_000.0, 16_000));
    let (out, stats) = decode(&bytes, &[PACKET_BYTES]);
    assert_eq!(out.len(), 133 * FRAME_SAMPLES);
    assert_eq!(
        stats,
        RxStats {
            frames: 133,
            ..RxStats::default()
        }
    );
    assert_eq!(scan_dominant_frequency(&out, RATE), Some(1_000.0));
    let snr = snr_db(&out[WARM_UP..], 1_000.0);
    assert!(snr > 45.0, "SNR {snr:.1} dB");
}

#[test]
fn wide_band_carries_a_tone_above_cvsd_band() {
    // 6 kHz: beyond CVSD's 8 kHz sampling, within mSBC's 16 kHz.
    let bytes = encode(&tone(6_000.0, 16_000));
    let (out, _) = decode(&bytes, &[PACKET_BYTES]);
    assert_eq!(wide_band_frequency(&out), Some(6_000.0));
    let snr = snr_db(&out[WARM_UP..], 6_000.0);
    assert!(snr > 45.0, "SNR {snr:.1} dB");
}

#[test]
fn misaligned_reads_give_the_same_samples_as_aligned_ones() {
    let bytes = encode(&tone(1_000.0, 16_000));
    let (aligned, _) = decode(&bytes, &[PACKET_BYTES]);
    // Reads of every size from 1 byte to nearly three packets, starting
    // inside a packet: the tail of a previous one (no header in it).
    let mut stream = vec![0x55u8; 17];
    stream.extend_from_slice(&bytes);
    let (out, stats) = decode(&stream, &[1, 7, 23, 48, 59, 61, 2, 119, 170]);
    assert_eq!(out, aligned);
    assert_eq!(stats.frames, 133);
    assert_eq!(stats.skipped_bytes, 17);
    assert_eq!(stats.concealed(), 0);
}

#[test]
fn a_lost_packet_is_concealed_counted_and_the_stream_goes_on() {
    let bytes = encode(&tone(1_000.0, 16_000));
    let mut p = packets_of(&bytes);
    p.remove(50);
    let stream: Vec<u8> = p.concat();
    let (out, stats) = decode(&stream, &[48]);
    assert_eq!(stats.lost, 1);
    assert_eq!(stats.corrupt, 0);
    assert_eq!(stats.frames, 132);
    // The lost frame is filled in: the stream keeps its length and time.
    assert_eq!(out.len(), 133 * FRAME_SAMPLES);
    assert_eq!(scan_dominant_frequency(&out, RATE), Some(1_000.0));
    // Around the loss the tone is disturbed; after it the decoder is
    // clean again.
    let overall = snr_db(&out[WARM_UP..], 1_000.0);
    let after = snr_db(&out[53 * FRAME_SAMPLES..], 1_000.0);
    assert!(overall > 12.0, "SNR with the loss {overall:.1} dB");
    assert!(after > 45.0, "SNR after the loss {after:.1} dB");
}

#[test]
fn a_corrupted_frame_is_concealed_and_counted() {
    let bytes = encode(&tone(1_000.0, 16_000));
    let mut p = packets_of(&bytes);
    // The frame's CRC byte: the header still says where the packet is.
    p[70][2 + 3] ^= 0x5A;
    let (out, stats) = decode(&p.concat(), &[60]);
    assert_eq!(stats.corrupt, 1);
    assert_eq!(stats.lost, 0);
    assert_eq!(stats.frames, 132);
    assert_eq!(out.len(), 133 * FRAME_SAMPLES);
    assert_eq!(scan_dominant_frequency(&out, RATE), Some(1_000.0));
    let after = snr_db(&out[73 * FRAME_SAMPLES..], 1_000.0);
    assert!(after > 45.0, "SNR after the corrupt frame {after:.1} dB");
}

#[test]
fn a_damaged_header_is_skipped_and_found_again_at_the_next_packet() {
    let bytes = encode(&tone(1_000.0, 16_000));
    let mut p = packets_of(&bytes);
    p[30][0] = 0x00;
    p[90][1] = 0x11;
    let (out, stats) = decode(&p.concat(), &[37]);
    assert_eq!(stats.lost, 2);
    assert_eq!(stats.skipped_bytes, 2 * PACKET_BYTES as u64);
    assert_eq!(out.len(), 133 * FRAME_SAMPLES);
    assert_eq!(scan_dominant_frequency(&out, RATE), Some(1_000.0));
}

#[test]
fn sequence_numbers_count_up_to_three_dropped_packets() {
    let bytes = encode(&tone(1_000.0, 16_000));
    let mut p = packets_of(&bytes);
    p.drain(10..13);
    let (out, stats) = decode(&p.concat(), &[60]);
    assert_eq!(stats.lost, 3);
    assert_eq!(out.len(), 133 * FRAME_SAMPLES);
}

#[test]
fn a_run_of_zeroed_packets_is_counted_by_length_and_fades_to_silence() {
    let bytes = encode(&tone(1_000.0, 16_000));
    let mut p = packets_of(&bytes);
    // Five packets as zeros (as a controller delivers what it lost): the
    // sequence numbers alone would say one.
    for packet in &mut p[40..45] {
        packet.fill(0);
    }
    let (out, stats) = decode(&p.concat(), &[60]);
    assert_eq!(stats.lost, 5);
    assert_eq!(stats.frames, 128);
    assert_eq!(out.len(), 133 * FRAME_SAMPLES);
    let frame = |i: usize| &out[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES];
    let peak = |f: &[i16]| f.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    // The last good frame again at half, a quarter, an eighth, then
    // silence.
    assert_eq!(
        frame(40),
        &frame(39).iter().map(|s| s >> 1).collect::<Vec<_>>()[..]
    );
    assert!(peak(frame(41)) < peak(frame(40)));
    assert!(peak(frame(42)) < peak(frame(41)));
    assert_eq!(peak(frame(43)), 0);
    assert_eq!(peak(frame(44)), 0);
    assert!(peak(frame(46)) > 10_000, "the tone is back");
}

#[test]
fn the_receiver_waits_for_whole_packets_and_ignores_noise_before_the_first() {
    let bytes = encode(&tone(1_000.0, 16_000));
    let mut rx = MsbcReceiver::new().expect("libsbc mSBC");
    let mut out = Vec::new();
    // Bytes that hold lone header bytes but no packet.
    rx.push(&[0x01, 0x00, 0x01, 0x08, 0x00, 0x01], &mut out);
    assert!(out.is_empty());
    rx.push(&bytes[..59], &mut out);
    assert!(out.is_empty(), "59 bytes are not a packet yet");
    rx.push(&bytes[59..60], &mut out);
    assert_eq!(out.len(), FRAME_SAMPLES);
    assert_eq!(rx.stats().frames, 1);
    assert_eq!(rx.stats().skipped_bytes, 6);
}
