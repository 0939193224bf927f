//! A SCO link as an audio device of the product: the link's packets in,
//! 48 kHz 10 ms [`Frame`]s out through the audio engine's resampler, and
//! the reverse. What the packets hold depends on the codec agreed
//! ([`LinkFormat::of`]): with CVSD, 16-bit PCM at 8 kHz (the controller
//! codes); with mSBC, HFP's 60-byte H2 packets of mSBC frames at 16 kHz,
//! coded here ([`super::msbc`]) on a transparent link. The engine's frames
//! set the pace of what is sent: one frame in, 10 ms of audio out in
//! packets of the link's MTU (mSBC: one H2 packet each, split if the MTU
//! is smaller).
//!
//! A full engine queue drops the newest frame (counted), never blocks the
//! link; a closed link or engine ends the bridge with its [`VoiceStats`].

use std::io;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hfp::Codec;
use super::msbc::{self, MsbcReceiver, MsbcSender};
use super::sbc::SbcError;
use super::sco::{ScoStream, VoiceSetting};
use crate::audio::resample::{Downsampler, Upsampler};
use crate::audio::{FRAME_SAMPLES, Frame};

/// How a codec's audio crosses the SCO socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFormat {
    /// The socket's voice setting, set before it connects.
    pub voice: VoiceSetting,
    /// The sample rate on the codec's PCM side, resampled to and from the
    /// engine's 48 kHz.
    pub rate: u32,
}

impl LinkFormat {
    /// CVSD: the controller codes, PCM at 8 kHz. mSBC: transparent, coded
    /// on the host at 16 kHz.
    pub fn of(codec: Codec) -> LinkFormat {
        match codec {
            Codec::Cvsd => LinkFormat {
                voice: VoiceSetting::Cvsd,
                rate: codec.sample_rate(),
            },
            Codec::Msbc => LinkFormat {
                voice: VoiceSetting::Transparent,
                rate: codec.sample_rate(),
            },
        }
    }
}

/// Counters of one bridged link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoiceStats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Frames from the link dropped because the engine's queue was full.
    pub frames_dropped: u64,
    /// mSBC: frames missing from the headset's stream, concealed.
    pub codec_lost: u64,
    /// mSBC: frames the decoder refused, concealed.
    pub codec_corrupt: u64,
    /// mSBC: bytes skipped to find the next H2 header.
    pub codec_skipped_bytes: u64,
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
    /// The mSBC codec failed to start or to code.
    Codec(SbcError),
}

/// The codec's side of the bridge: link bytes to and from samples at the
/// link's rate.
enum Coding {
    /// CVSD: the host side is 16-bit little-endian PCM.
    Pcm,
    Msbc {
        tx: Box<MsbcSender>,
        rx: Box<MsbcReceiver>,
    },
}

impl Coding {
    fn new(codec: Codec) -> Result<Coding, SbcError> {
        Ok(match codec {
            Codec::Cvsd => Coding::Pcm,
            Codec::Msbc => Coding::Msbc {
                tx: Box::new(MsbcSender::new()?),
                rx: Box::new(MsbcReceiver::new()?),
            },
        })
    }

    /// Bytes of one packet to the link for a link MTU of `mtu`.
    fn packet_len(&self, mtu: u16) -> usize {
        let mtu = usize::from(mtu);
        match self {
            // An odd or zero MTU would split samples; two bytes is the floor.
            Coding::Pcm => (mtu & !1).max(2),
            Coding::Msbc { .. } => {
                if mtu == 0 {
                    msbc::PACKET_BYTES
                } else {
                    mtu.min(msbc::PACKET_BYTES)
                }
            }
        }
    }

    fn decode(&mut self, bytes: &[u8], out: &mut Vec<i16>) {
        match self {
            Coding::Pcm => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            ),
            Coding::Msbc { rx, .. } => rx.push(bytes, out),
        }
    }

    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), SbcError> {
        match self {
            Coding::Pcm => out.extend(pcm.iter().flat_map(|s| s.to_le_bytes())),
            Coding::Msbc { tx, .. } => {
                tx.push(pcm, out)?;
            }
        }
        Ok(())
    }

    fn add_stats(&self, stats: &mut VoiceStats) {
        if let Coding::Msbc { rx, .. } = self {
            let s = rx.stats();
            stats.codec_lost = s.lost;
            stats.codec_corrupt = s.corrupt;
            stats.codec_skipped_bytes = s.skipped_bytes;
        }
    }
}

/// Bridges `link`, carrying `codec`, to the engine until either side
/// closes: audio from the link goes to `to_engine` as 48 kHz frames,
/// frames from `from_engine` go to the link.
pub async fn run(
    link: &ScoStream,
    codec: Codec,
    to_engine: mpsc::Sender<Frame>,
    from_engine: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
) -> (VoiceEnd, VoiceStats) {
    let mut coding = match Coding::new(codec) {
        Ok(c) => c,
        Err(e) => return (VoiceEnd::Codec(e), VoiceStats::default()),
    };
    let mut stats = VoiceStats::default();
    let end = bridge(
        link,
        codec,
        &mut coding,
        &mut stats,
        to_engine,
        from_engine,
        cancel,
    )
    .await;
    coding.add_stats(&mut stats);
    (end, stats)
}

async fn bridge(
    link: &ScoStream,
    codec: Codec,
    coding: &mut Coding,
    stats: &mut VoiceStats,
    to_engine: mpsc::Sender<Frame>,
    mut from_engine: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
) -> VoiceEnd {
    let rate = LinkFormat::of(codec).rate;
    let ratio = (crate::audio::SAMPLE_RATE / rate.max(1)) as usize;
    let mut up = Upsampler::new(ratio);
    let mut down = Downsampler::new(ratio);
    let packet_len = coding.packet_len(link.mtu());
    let mut packet = vec![0u8; 2048.max(usize::from(link.mtu()))];
    let mut samples: Vec<i16> = Vec::with_capacity(FRAME_SAMPLES);
    let mut high: Vec<i16> = Vec::with_capacity(FRAME_SAMPLES * 2);
    let mut low: Vec<i16> = Vec::with_capacity(FRAME_SAMPLES);
    let mut out_bytes: Vec<u8> = Vec::with_capacity(packet_len * 4);
    loop {
        tokio::select! {
            r = link.recv(&mut packet) => match r {
                Ok(0) => return VoiceEnd::LinkClosed,
                Ok(n) => {
                    stats.packets_in += 1;
                    samples.clear();
                    coding.decode(&packet[..n], &mut samples);
                    up.process(&samples, &mut high);
                    while high.len() >= FRAME_SAMPLES {
                        let mut frame: Frame = Box::new([0; FRAME_SAMPLES]);
                        frame.copy_from_slice(&high[..FRAME_SAMPLES]);
                        high.drain(..FRAME_SAMPLES);
                        match to_engine.try_send(frame) {
                            Ok(()) => stats.frames_out += 1,
                            Err(mpsc::error::TrySendError::Full(_)) => stats.frames_dropped += 1,
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                return VoiceEnd::EngineClosed;
                            }
                        }
                    }
                }
                Err(e) => return VoiceEnd::Io(e),
            },
            f = from_engine.recv() => match f {
                Some(frame) => {
                    stats.frames_in += 1;
                    low.clear();
                    down.process(&frame[..], &mut low);
                    if let Err(e) = coding.encode(&low, &mut out_bytes) {
                        return VoiceEnd::Codec(e);
                    }
                    let mut sent = 0;
                    while out_bytes.len() - sent >= packet_len {
                        if let Err(e) = link.send(&out_bytes[sent..sent + packet_len]).await {
                            return VoiceEnd::Io(e);
                        }
                        sent += packet_len;
                        stats.packets_out += 1;
                    }
                    out_bytes.drain(..sent);
                }
                None => return VoiceEnd::EngineClosed,
            },
            _ = cancel.cancelled() => return VoiceEnd::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audio::{dominant_frequency, fill_sine, scan_dominant_frequency, tone_snr_db};

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
            async move { run(&gateway, Codec::Cvsd, to_engine, from_engine, cancel).await }
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
            async move { run(&gateway, Codec::Cvsd, to_engine, from_engine, cancel).await }
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

    #[test]
    fn msbc_takes_a_transparent_link_at_16_khz_and_cvsd_stays_pcm_at_8_khz() {
        assert_eq!(
            LinkFormat::of(Codec::Msbc),
            LinkFormat {
                voice: VoiceSetting::Transparent,
                rate: 16_000,
            }
        );
        assert_eq!(
            LinkFormat::of(Codec::Cvsd),
            LinkFormat {
                voice: VoiceSetting::Cvsd,
                rate: 8_000,
            }
        );
        let msbc = Coding::new(Codec::Msbc).expect("libsbc mSBC");
        assert!(matches!(msbc, Coding::Msbc { .. }));
        // One H2 packet per SCO packet, split when the MTU is smaller.
        assert_eq!(msbc.packet_len(60), 60);
        assert_eq!(msbc.packet_len(120), 60);
        assert_eq!(msbc.packet_len(48), 48);
        let cvsd = Coding::new(Codec::Cvsd).expect("no codec needed");
        assert!(matches!(cvsd, Coding::Pcm));
        assert_eq!(cvsd.packet_len(48), 48);
    }

    /// Dominant frequency in 50 Hz steps up to 7.5 kHz (wide band).
    fn wide_band_frequency(samples: &[i16], rate: u32) -> Option<f32> {
        let candidates: Vec<f32> = (2..=150).map(|k| k as f32 * 50.0).collect();
        dominant_frequency(samples, rate, &candidates)
    }

    /// An mSBC headset on a link of `mtu` bytes: it sends 1 s of
    /// `mic_hz` as H2 packets cut to the MTU, the engine sends 1 s of
    /// `speaker_hz`; both must come out with their tone.
    async fn msbc_round_trip(mtu: u16, mic_hz: f32, speaker_hz: f32) {
        let (gateway, headset) = ScoStream::test_pair(mtu).expect("socketpair");
        let (to_engine, mut engine_in) = mpsc::channel(200);
        let (engine_out, from_engine) = mpsc::channel(200);
        let cancel = CancellationToken::new();
        let bridge = tokio::spawn({
            let cancel = cancel.clone();
            async move { run(&gateway, Codec::Msbc, to_engine, from_engine, cancel).await }
        });

        // The headset's microphone: 1 s at 16 kHz, 133 packets of 60 bytes
        // sent in pieces of the MTU (not aligned to the packets).
        let mut mic = vec![0i16; 16_000];
        fill_sine(&mut mic, mic_hz, 0.5, 16_000, 0.0);
        let mut tx = MsbcSender::new().expect("libsbc mSBC");
        let mut stream = Vec::new();
        tx.push(&mic, &mut stream).expect("encode");
        for p in stream.chunks(usize::from(mtu)) {
            headset.send(p).await.expect("send to the bridge");
        }
        // 133 * 120 samples at 16 kHz: 99 whole frames of 48 kHz.
        let mut heard = Vec::new();
        while heard.len() < 99 * FRAME_SAMPLES {
            let f = tokio::time::timeout(Duration::from_secs(2), engine_in.recv())
                .await
                .expect("frames within 2 s")
                .expect("bridge running");
            heard.extend_from_slice(&f[..]);
        }
        assert_eq!(wide_band_frequency(&heard, 48_000), Some(mic_hz));
        let snr = tone_snr_db(&heard[4 * FRAME_SAMPLES..], mic_hz, 48_000);
        assert!(snr > 40.0, "headset to engine: SNR {snr:.1} dB");

        // The engine's 1 s: 16000 samples at 16 kHz, 133 H2 packets.
        let mut phase = 0.0;
        for _ in 0..100 {
            let mut frame: Frame = Box::new([0; FRAME_SAMPLES]);
            phase = fill_sine(&mut frame[..], speaker_hz, 0.5, 48_000, phase);
            engine_out.send(frame).await.expect("bridge running");
        }
        let mut rx = MsbcReceiver::new().expect("libsbc mSBC");
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        let mut bytes = 0;
        while bytes < 133 * msbc::PACKET_BYTES / usize::from(mtu) * usize::from(mtu) {
            let n = tokio::time::timeout(Duration::from_secs(2), headset.recv(&mut buf))
                .await
                .expect("packets within 2 s")
                .expect("link open");
            assert_eq!(
                n,
                usize::from(mtu.min(60)),
                "packets are the MTU, at most 60"
            );
            if bytes == 0 {
                assert_eq!(&buf[..2], &[0x01, 0x08], "the first H2 header");
            }
            bytes += n;
            rx.push(&buf[..n], &mut got);
        }
        assert_eq!(rx.stats().concealed(), 0);
        assert_eq!(rx.stats().skipped_bytes, 0);
        assert!(rx.stats().frames >= 132, "{:?}", rx.stats());
        assert_eq!(wide_band_frequency(&got, 16_000), Some(speaker_hz));
        let snr = tone_snr_db(&got[4 * 120..], speaker_hz, 16_000);
        assert!(snr > 40.0, "engine to headset: SNR {snr:.1} dB");

        drop(headset);
        let (end, stats) = bridge.await.expect("bridge task");
        assert!(matches!(end, VoiceEnd::LinkClosed), "{end:?}");
        assert_eq!(stats.frames_out, 99);
        assert_eq!(stats.frames_in, 100);
        assert_eq!(stats.codec_lost + stats.codec_corrupt, 0);
        assert_eq!(stats.codec_skipped_bytes, 0);
    }

    #[tokio::test]
    async fn an_msbc_link_carries_wide_band_tones_both_ways() {
        // 6 kHz and 5 kHz: beyond what CVSD's 8 kHz can carry.
        msbc_round_trip(60, 6_000.0, 5_000.0).await;
    }

    #[tokio::test]
    async fn an_msbc_link_with_a_small_mtu_splits_and_rejoins_packets() {
        msbc_round_trip(48, 1_000.0, 400.0).await;
    }

    #[tokio::test]
    async fn a_lost_msbc_packet_from_the_headset_is_concealed_and_counted() {
        let (gateway, headset) = ScoStream::test_pair(60).expect("socketpair");
        let (to_engine, mut engine_in) = mpsc::channel(200);
        let (_engine_out, from_engine) = mpsc::channel(200);
        let cancel = CancellationToken::new();
        let bridge = tokio::spawn({
            let cancel = cancel.clone();
            async move { run(&gateway, Codec::Msbc, to_engine, from_engine, cancel).await }
        });
        let mut mic = vec![0i16; 16_000];
        fill_sine(&mut mic, 1_000.0, 0.5, 16_000, 0.0);
        let mut tx = MsbcSender::new().expect("libsbc mSBC");
        let mut stream = Vec::new();
        tx.push(&mic, &mut stream).expect("encode");
        for (i, p) in stream.chunks(60).enumerate() {
            if i == 40 {
                continue;
            }
            let mut p = p.to_vec();
            if i == 90 {
                p[5] ^= 0xFF;
            }
            headset.send(&p).await.expect("send to the bridge");
        }
        // The concealed frames keep the time: still 99 frames of 48 kHz.
        let mut heard = Vec::new();
        while heard.len() < 99 * FRAME_SAMPLES {
            let f = tokio::time::timeout(Duration::from_secs(2), engine_in.recv())
                .await
                .expect("frames within 2 s")
                .expect("bridge running");
            heard.extend_from_slice(&f[..]);
        }
        assert_eq!(scan_dominant_frequency(&heard, 48_000), Some(1_000.0));
        cancel.cancel();
        let (end, stats) = bridge.await.expect("bridge task");
        assert!(matches!(end, VoiceEnd::Cancelled), "{end:?}");
        assert_eq!(stats.codec_lost, 1);
        assert_eq!(stats.codec_corrupt, 1);
    }
}
