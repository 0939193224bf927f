//! A SCO link as an audio device of the product: 16-bit PCM packets at the
//! link's rate (8 kHz for CVSD) in, 48 kHz 10 ms [`Frame`]s out through the
//! audio engine's resampler, and the reverse. The engine's frames set the
//! pace of what is sent: one frame in, 10 ms of samples out in packets of
//! the link's MTU.
//!
//! A full engine queue drops the newest frame (counted), never blocks the
//! link; a closed link or engine ends the bridge with its [`VoiceStats`].

use std::io;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::sco::ScoStream;
use crate::audio::resample::{Downsampler, Upsampler};
use crate::audio::{FRAME_SAMPLES, Frame};

/// Counters of one bridged link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoiceStats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Frames from the link dropped because the engine's queue was full.
    pub frames_dropped: u64,
}

/// How a bridge ended.
#[derive(Debug)]
pub enum VoiceEnd {
    /// The link closed (headset gone, SCO dropped).
    LinkClosed,
    /// The engine closed its side (the call ended).
    EngineClosed,
    Cancelled,
    Io(io::Error),
}

/// Bridges `link` (at `rate`: 8000 or 16000) to the engine until either
/// side closes: samples from the link go to `to_engine` as 48 kHz frames,
/// frames from `from_engine` go to the link.
pub async fn run(
    link: &ScoStream,
    rate: u32,
    to_engine: mpsc::Sender<Frame>,
    mut from_engine: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
) -> (VoiceEnd, VoiceStats) {
    let ratio = (crate::audio::SAMPLE_RATE / rate.max(1)) as usize;
    let mut up = Upsampler::new(ratio);
    let mut down = Downsampler::new(ratio);
    let mut stats = VoiceStats::default();
    // An odd or zero MTU would split samples; two bytes is the floor.
    let mtu = (usize::from(link.mtu()) & !1).max(2);
    let mut packet = vec![0u8; 2048.max(mtu)];
    let mut high: Vec<i16> = Vec::with_capacity(FRAME_SAMPLES * 2);
    let mut low: Vec<i16> = Vec::with_capacity(FRAME_SAMPLES);
    let mut out_bytes: Vec<u8> = Vec::with_capacity(mtu * 4);
    let end = loop {
        tokio::select! {
            r = link.recv(&mut packet) => match r {
                Ok(0) => break VoiceEnd::LinkClosed,
                Ok(n) => {
                    stats.packets_in += 1;
                    let samples: Vec<i16> = packet[..n & !1]
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    up.process(&samples, &mut high);
                    while high.len() >= FRAME_SAMPLES {
                        let mut frame: Frame = Box::new([0; FRAME_SAMPLES]);
                        frame.copy_from_slice(&high[..FRAME_SAMPLES]);
                        high.drain(..FRAME_SAMPLES);
                        match to_engine.try_send(frame) {
                            Ok(()) => stats.frames_out += 1,
                            Err(mpsc::error::TrySendError::Full(_)) => stats.frames_dropped += 1,
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                return (VoiceEnd::EngineClosed, stats);
                            }
                        }
                    }
                }
                Err(e) => break VoiceEnd::Io(e),
            },
            f = from_engine.recv() => match f {
                Some(frame) => {
                    stats.frames_in += 1;
                    low.clear();
                    down.process(&frame[..], &mut low);
                    out_bytes.extend(low.iter().flat_map(|s| s.to_le_bytes()));
                    while out_bytes.len() >= mtu {
                        if let Err(e) = link.send(&out_bytes[..mtu]).await {
                            return (VoiceEnd::Io(e), stats);
                        }
                        out_bytes.drain(..mtu);
                        stats.packets_out += 1;

                    }
                }
                None => break VoiceEnd::EngineClosed,
            },
            _ = cancel.cancelled() => break VoiceEnd::Cancelled,
        }
    };
    (end, stats)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audio::{fill_sine, scan_dominant_frequency};

    /// 16-bit PCM packets of a tone at 8 kHz.
    fn tone_packets(hz: f32, seconds: usize, mtu: usize) -> Vec<Vec<u8>> {
        let mut s = vec![0i16; 8_000 * seconds];
        fill_sine(&mut s, hz, 0.5, 8_000, 0.0);
        let bytes: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.chunks(mtu).map(<[u8]>::to_vec).collect()
    }

    #[tokio::test]
    async fn a_tone_crosses_the_bridge_both_ways_at_the_right_rates() {
        let (gateway, headset) = ScoStream::test_pair(48).expect("socketpair");
        let (to_engine, mut engine_in) = mpsc::channel(200);
        let (engine_out, from_engine) = mpsc::channel(200);
        let cancel = CancellationToken::new();
        let bridge = tokio::spawn({
            let cancel = cancel.clone();
            async move { run(&gateway, 8_000, to_engine, from_engine, cancel).await }
        });

        // The headset sends 1 s of 1000 Hz: 100 frames of 48 kHz arrive.
        for p in tone_packets(1_000.0, 1, 48) {
            headset.send(&p).await.expect("send to the bridge");
        }
        let mut heard = Vec::new();
        while heard.len() < 48_000 {
            let f = tokio::time::timeout(Duration::from_secs(2), engine_in.recv())
                .await
                .expect("frames within 2 s")
                .expect("bridge running");
            heard.extend_from_slice(&f[..]);
        }
        assert_eq!(scan_dominant_frequency(&heard, 48_000), Some(1_000.0));

        // The engine sends 1 s of 400 Hz at 48 kHz: 8000 samples, of which
        // the whole 48-byte packets (333, 7992 samples) reach the headset.
        let mut phase = 0.0;
        for _ in 0..100 {
            let mut frame: Frame = Box::new([0; FRAME_SAMPLES]);
            phase = fill_sine(&mut frame[..], 400.0, 0.5, 48_000, phase);
            engine_out.send(frame).await.expect("bridge running");
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < 333 * 24 {
            let n = tokio::time::timeout(Duration::from_secs(2), headset.recv(&mut buf))
                .await
                .expect("packets within 2 s")
                .expect("link open");
            assert_eq!(n, 48, "packets are the link's MTU");
            got.extend(
                buf[..n]
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            );
        }
        assert_eq!(scan_dominant_frequency(&got, 8_000), Some(400.0));

        // The headset going away ends the bridge; the call's side is free.
        drop(headset);
        let (end, stats) = bridge.await.expect("bridge task");
        assert!(matches!(end, VoiceEnd::LinkClosed), "{end:?}");
        assert_eq!(stats.frames_out, 100);
        assert_eq!(stats.frames_in, 100);
        assert_eq!(stats.packets_out, 8_000 * 2 / 48);
        assert_eq!(stats.frames_dropped, 0);
    }

    #[tokio::test]
    async fn a_full_engine_queue_drops_frames_without_stalling_the_link() {
        let (gateway, headset) = ScoStream::test_pair(48).expect("socketpair");
        let (to_engine, engine_in) = mpsc::channel(2);
        let (_engine_out, from_engine) = mpsc::channel(2);
        let cancel = CancellationToken::new();
        let bridge = tokio::spawn({
            let cancel = cancel.clone();
            async move { run(&gateway, 8_000, to_engine, from_engine, cancel).await }
        });
        for p in tone_packets(1_000.0, 1, 48) {
            headset.send(&p).await.expect("send to the bridge");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
        let (end, stats) = bridge.await.expect("bridge task");
        assert!(matches!(end, VoiceEnd::Cancelled), "{end:?}");
        assert_eq!(stats.frames_out, 2);
        assert_eq!(stats.frames_dropped, 98);
        drop(engine_in);
    }
}
