//! The Hands-Free Audio Gateway's I/O shell: one task per headset
//! connection, feeding the RFCOMM channel's bytes to the pure
//! [`HfpMachine`] and writing what it answers. Generic over the stream,
//! so tests drive it through an in-memory pipe; the BlueZ backend hands it
//! the RFCOMM stream of each accepted profile connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::adapter::{AdapterEvent, DeviceAddr, GatewayCommand, VoiceLink};
use super::hfp::{Codec, HfpEvent, HfpMachine, HfpOutput, HfpSettings};
use super::sco::ScoStream;
use super::voice;
use crate::audio::router::HeadsetPorts;

/// The Hands-Free Audio Gateway's service class UUID (0x111f).
pub const HFP_AG_UUID: &str = "0000111f-0000-1000-8000-00805f9b34fb";
/// The RFCOMM channel the gateway listens on (BlueZ's default for the
/// gateway role).
pub const HFP_AG_CHANNEL: u16 = 13;
/// HFP 1.8 in the SDP record.
pub const HFP_VERSION: u16 = 0x0108;
/// An SCO connect taking longer than this is given up.
const SCO_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// A write to the headset taking longer than this ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The headset closed the channel.
    ByHeadset,
    /// Not established within the machine's SLC timeout.
    SlcTimeout,
    /// Reading or writing failed.
    Io(String),
    /// The daemon is stopping.
    Shutdown,
}

impl Closed {
    pub fn as_str(&self) -> &str {
        match self {
            Closed::ByHeadset => "closed by the headset",
            Closed::SlcTimeout => "service level connection not established in time",
            Closed::Io(e) => e,
            Closed::Shutdown => "shutdown",
        }
    }
}

/// Opens the SCO link to the headset once a codec is agreed, with the
/// voice setting that codec needs ([`voice::LinkFormat::of`]).
pub type ScoOpener =
    Box<dyn FnMut(Codec) -> Pin<Box<dyn Future<Output = io::Result<ScoStream>> + Send>> + Send>;

/// Runs one service level connection until it closes. `events` receives
/// [`AdapterEvent::HandsFree`] when it is established and when it ends,
/// and [`AdapterEvent::Sco`] as the audio link opens and closes;
/// `commands` carries the door call and audio requests.
pub async fn run<S>(
    mut stream: S,
    device: DeviceAddr,
    settings: HfpSettings,
    mut commands: mpsc::Receiver<GatewayCommand>,
    mut open_sco: ScoOpener,
    events: mpsc::Sender<AdapterEvent>,
    cancel: CancellationToken,
) -> Closed
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    info!(device = %device, "bluetooth hands-free channel open");
    let mut m = HfpMachine::new(settings, Instant::now().into_std());
    let mut established = false;
    let mut buf = [0u8; 512];
    let mut commands_open = true;
    // The task opening and then bridging the SCO link, while there is one.
    let mut audio: Option<AbortOnDrop> = None;
    // The +BCS proposal last logged.
    let mut proposal = None;
    // Set when an mSBC link could not be opened: CVSD from then on.
    let msbc_failed = Arc::new(AtomicBool::new(false));
    let closed = 'conn: loop {
        if m.proposal() != proposal {
            proposal = m.proposal();
            if let Some((codec, attempt)) = proposal {
                info!(device = %device, codec = %codec, attempt, "bluetooth hands-free codec proposed");
            }
        }
        while let Some(out) = m.poll_output() {
            match out {
                HfpOutput::Transmit(bytes) => {
                    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break 'conn Closed::Io(format!("write: {e}")),
                        Err(_) => break 'conn Closed::Io("write timed out".into()),
                    }
                }
                HfpOutput::Event(HfpEvent::AudioReady { codec }) => {
                    audio = Some(start_audio_link(
                        &mut open_sco,
                        codec,
                        &device,
                        &events,
                        &msbc_failed,
                    ));
                }
                HfpOutput::Event(HfpEvent::CodecFailed) => {
                    warn!(device = %device, "bluetooth hands-free codec not agreed; no SCO");
                    sco_down(&device, &events).await;
                }
                HfpOutput::Event(ev) => {
                    let codecs = codec_list(m.hf_codecs());
                    if let Some(closed) =
                        on_event(&device, ev, &codecs, &mut established, &events).await
                    {
                        break 'conn closed;
                    }
                }
            }
        }
        let deadline = m.poll_timeout().map(Instant::from_std);
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) => break Closed::ByHeadset,
                Ok(n) => m.handle_bytes(&buf[..n], Instant::now().into_std()),
                Err(e) => break Closed::Io(format!("read: {e}")),
            },
            _ = sleep_until(deadline) => m.handle_timeout(Instant::now().into_std()),
            cmd = commands.recv(), if commands_open => match cmd {
                Some(GatewayCommand::Call(call)) => m.handle_call(call, Instant::now().into_std()),
                Some(GatewayCommand::OpenAudio) => {
                    open_audio(&mut m, audio.as_ref(), &msbc_failed, &device, &events).await;
                }
                Some(GatewayCommand::CloseAudio) => {
                    if audio.take().is_some() {
                        info!(device = %device, "bluetooth SCO closed");
                        sco_down(&device, &events).await;
                    }
                }
                None => commands_open = false,
            },
            _ = cancel.cancelled() => break Closed::Shutdown,
        }
    };
    if audio.take().is_some() {
        sco_down(&device, &events).await;
    }
    info!(device = %device, reason = closed.as_str(), "bluetooth hands-free channel closed");
    if established {
        let _ = events
            .send(AdapterEvent::HandsFree {
                device,
                connected: false,
            })
            .await;
    }
    closed
}

/// The headset asks for audio: the SCO link, unless one is up or opening
/// (CVSD once an mSBC link failed).
async fn open_audio(
    m: &mut HfpMachine,
    audio: Option<&AbortOnDrop>,
    msbc_failed: &AtomicBool,
    device: &DeviceAddr,
    events: &mpsc::Sender<AdapterEvent>,
) {
    if audio.is_some_and(|a| !a.0.is_finished()) {
        return;
    }
    if msbc_failed.load(Ordering::Relaxed) && m.settings().prefer_msbc {
        warn!(device = %device, "bluetooth mSBC link failed; CVSD for this headset until it reconnects");
        m.set_prefer_msbc(false);
    }
    if let Err(e) = m.connect_audio(Instant::now().into_std()) {
        warn!(device = %device, error = %e, "bluetooth SCO not opened");
        sco_down(device, events).await;
    }
}

/// A codec is agreed: the task opening and then bridging the SCO link.
fn start_audio_link(
    open_sco: &mut ScoOpener,
    codec: Codec,
    device: &DeviceAddr,
    events: &mpsc::Sender<AdapterEvent>,
    msbc_failed: &Arc<AtomicBool>,
) -> AbortOnDrop {
    let format = voice::LinkFormat::of(codec);
    info!(
        device = %device,
        codec = %codec,
        voice_setting = format.voice.as_str(),
        rate = format.rate,
        "bluetooth hands-free codec agreed; opening SCO"
    );
    AbortOnDrop(tokio::spawn(audio_link(
        open_sco(codec),
        device.clone(),
        codec,
        events.clone(),
        msbc_failed.clone(),
    )))
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sco_down(device: &DeviceAddr, events: &mpsc::Sender<AdapterEvent>) {
    let _ = events
        .send(AdapterEvent::Sco {
            device: device.clone(),
            link: None,
        })
        .await;
}

/// Opens the SCO link, reports it with its frame channels, bridges it until
/// either side ends, and reports it closed. An mSBC link that cannot be
/// opened (a controller without transparent SCO, a headset refusing or
/// not answering the link) sets `msbc_failed`: the next attempt agrees
/// CVSD.
async fn audio_link(
    open: Pin<Box<dyn Future<Output = io::Result<ScoStream>> + Send>>,
    device: DeviceAddr,
    codec: Codec,
    events: mpsc::Sender<AdapterEvent>,
    msbc_failed: Arc<AtomicBool>,
) {
    let link = match tokio::time::timeout(SCO_OPEN_TIMEOUT, open).await {
        Ok(Ok(link)) => link,
        Ok(Err(e)) => {
            if codec == Codec::Msbc {
                msbc_failed.store(true, Ordering::Relaxed);
            }
            warn!(device = %device, codec = %codec, error = %e, "bluetooth SCO connect failed");
            return sco_down(&device, &events).await;
        }
        Err(_) => {
            if codec == Codec::Msbc {
                msbc_failed.store(true, Ordering::Relaxed);
            }
            warn!(device = %device, codec = %codec, "bluetooth SCO connect timed out");
            return sco_down(&device, &events).await;
        }
    };
    info!(device = %device, codec = %codec, rate = codec.sample_rate(), mtu = link.mtu(), "bluetooth SCO audio connected");
    let (to_engine, from_headset) = mpsc::channel(crate::audio::DEFAULT_PORT_CAPACITY);
    let (to_headset, from_engine) = mpsc::channel(crate::audio::DEFAULT_PORT_CAPACITY);
    let ev = AdapterEvent::Sco {
        device: device.clone(),
        link: Some(VoiceLink {
            device: device.clone(),
            codec,
            ports: HeadsetPorts {
                from_headset,
                to_headset,
            },
        }),
    };
    if events.send(ev).await.is_err() {
        return;
    }
    let (end, stats) = voice::run(
        &link,
        codec,
        to_engine,
        from_engine,
        CancellationToken::new(),
    )
    .await;
    if let voice::VoiceEnd::Codec(e) = &end {
        warn!(device = %device, codec = %codec, error = %e, "bluetooth SCO codec failed");
    }
    info!(
        device = %device,
        codec = %codec,
        end = ?end,
        packets_in = stats.packets_in,
        packets_out = stats.packets_out,
        frames_dropped = stats.frames_dropped,
        frames_lost = stats.codec_lost,
        frames_corrupt = stats.codec_corrupt,
        bytes_skipped = stats.codec_skipped_bytes,
        "bluetooth SCO audio ended"
    );
    sco_down(&device, &events).await;
}

/// The headset's codecs for the journal: `CVSD,mSBC`; CVSD alone when it
/// sent no `AT+BAC` (CVSD is mandatory).
fn codec_list(codecs: &[Codec]) -> String {
    if codecs.is_empty() {
        return Codec::Cvsd.to_string();
    }
    codecs
        .iter()
        .map(Codec::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

async fn on_event(
    device: &DeviceAddr,
    ev: HfpEvent,
    hf_codecs: &str,
    established: &mut bool,
    events: &mpsc::Sender<AdapterEvent>,
) -> Option<Closed> {
    match ev {
        HfpEvent::SlcEstablished {
            hf_features,
            codec_negotiation,
        } => {
            info!(
                device = %device,
                hf_features,
                codec_negotiation,
                hf_codecs,
                "bluetooth hands-free service level connection established"
            );
            *established = true;
            let _ = events
                .send(AdapterEvent::HandsFree {
                    device: device.clone(),
                    connected: true,
                })
                .await;
        }
        HfpEvent::SlcTimeout => return Some(Closed::SlcTimeout),
        HfpEvent::HangupRequested => {
            info!(device = %device, "bluetooth headset asks to hang up");
            let _ = events
                .send(AdapterEvent::HangupRequested {
                    device: device.clone(),
                })
                .await;
        }
        HfpEvent::Rejected { line, reason } => {
            warn!(device = %device, line = %crate::logging::PeerText::new(&line), reason = reason.as_str(), "bluetooth hands-free command refused");
        }
        other => {
            info!(device = %device, event = %crate::logging::PeerText::new(&format!("{other:?}")), "bluetooth hands-free event")
        }
    }
    None
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bt::hfp::DoorCall;
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

    struct Hf {
        read: BufReader<ReadHalf<DuplexStream>>,
        write: WriteHalf<DuplexStream>,
    }

    impl Hf {
        /// Sends one command, returns the non-empty reply lines up to and
        /// including the final `OK` or `ERROR`.
        async fn cmd(&mut self, line: &str) -> Vec<String> {
            self.write
                .write_all(format!("{line}\r").as_bytes())
                .await
                .expect("gateway reads");
            let mut out = Vec::new();
            loop {
                let mut l = String::new();
                let n = tokio::time::timeout(Duration::from_secs(2), self.read.read_line(&mut l))
                    .await
                    .expect("gateway answers within 2 s")
                    .expect("pipe open");
                assert!(n > 0, "gateway closed the channel after {out:?}");
                let l = l.trim().to_owned();
                if l.is_empty() {
                    continue;
                }
                let last = l == "OK" || l == "ERROR";
                out.push(l);
                if last {
                    return out;
                }
            }
        }
    }

    type Started = (
        Hf,
        mpsc::Receiver<AdapterEvent>,
        CancellationToken,
        tokio::task::JoinHandle<Closed>,
    );

    fn start(settings: HfpSettings) -> Started {
        start_with(
            settings,
            mpsc::channel(1).1,
            Box::new(|_| Box::pin(async { Err(io::Error::other("no SCO in this test")) })),
        )
    }

    fn start_with(
        settings: HfpSettings,
        commands: mpsc::Receiver<GatewayCommand>,
        open_sco: ScoOpener,
    ) -> Started {
        let (ours, theirs) = tokio::io::duplex(4096);
        let (tx, rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let device = DeviceAddr::parse("00:AA:01:00:00:23").expect("valid address");
        let task = tokio::spawn(run(
            ours,
            device,
            settings,
            commands,
            open_sco,
            tx,
            cancel.clone(),
        ));
        let (r, w) = tokio::io::split(theirs);
        (
            Hf {
                read: BufReader::new(r),
                write: w,
            },
            rx,
            cancel,
            task,
        )
    }

    #[tokio::test]
    async fn a_headset_establishes_the_slc_and_its_close_is_reported() {
        let (mut hf, mut events, _cancel, task) = start(HfpSettings::default());
        let brsf = hf.cmd("AT+BRSF=0").await;
        assert!(brsf[0].starts_with("+BRSF: "), "{brsf:?}");
        assert_eq!(brsf.last().map(String::as_str), Some("OK"));
        let cind = hf.cmd("AT+CIND=?").await;
        assert!(cind[0].starts_with("+CIND: "), "{cind:?}");
        assert_eq!(
            hf.cmd("AT+CIND?").await.last().map(String::as_str),
            Some("OK")
        );
        assert_eq!(hf.cmd("AT+CMER=3,0,0,1").await, vec!["OK".to_owned()]);
        match events.recv().await {
            Some(AdapterEvent::HandsFree {
                connected: true, ..
            }) => {}
            other => panic!("expected the SLC up, got {other:?}"),
        }
        assert_eq!(hf.cmd("AT+BOGUS").await, vec!["ERROR".to_owned()]);
        drop(hf);
        assert_eq!(task.await.expect("task ends"), Closed::ByHeadset);
        match events.recv().await {
            Some(AdapterEvent::HandsFree {
                connected: false, ..
            }) => {}
            other => panic!("expected the SLC down, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_silent_headset_is_dropped_at_the_slc_timeout() {
        let settings = HfpSettings {
            slc_timeout: Duration::from_millis(200),
            ..HfpSettings::default()
        };
        let (hf, mut events, _cancel, task) = start(settings);
        let closed = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("closed within 2 s")
            .expect("task ends");
        assert_eq!(closed, Closed::SlcTimeout);
        assert!(
            events.try_recv().is_err(),
            "never established, nothing to report"
        );
        drop(hf);
    }

    async fn establish(hf: &mut Hf, events: &mut mpsc::Receiver<AdapterEvent>) {
        hf.cmd("AT+BRSF=0").await;
        establish_rest(hf, events).await;
    }

    /// The service level connection after `AT+BRSF` (and `AT+BAC`).
    async fn establish_rest(hf: &mut Hf, events: &mut mpsc::Receiver<AdapterEvent>) {
        hf.cmd("AT+CIND=?").await;
        hf.cmd("AT+CIND?").await;
        hf.cmd("AT+CMER=3,0,0,1").await;
        match events.recv().await {
            Some(AdapterEvent::HandsFree {
                connected: true, ..
            }) => {}
            other => panic!("expected the SLC up, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn open_audio_bridges_the_sco_link_and_close_audio_ends_it() {
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (headset_end, gateway_end) =
            crate::bt::sco::ScoStream::test_pair(48).expect("socketpair");
        let mut gateway_end = Some(gateway_end);
        let opener: ScoOpener = Box::new(move |codec| {
            assert_eq!(codec, Codec::Cvsd);
            let link = gateway_end
                .take()
                .ok_or_else(|| io::Error::other("opened twice"));
            Box::pin(async move { link })
        });
        let (mut hf, mut events, _cancel, _task) =
            start_with(HfpSettings::default(), cmd_rx, opener);
        establish(&mut hf, &mut events).await;

        // Without codec negotiation (no AT+BAC), CVSD is ready at once.
        cmd_tx
            .send(GatewayCommand::OpenAudio)
            .await
            .expect("gateway running");
        let mut link = match events.recv().await {
            Some(AdapterEvent::Sco {
                link: Some(link), ..
            }) => link,
            other => panic!("expected the SCO link, got {other:?}"),
        };
        assert_eq!(link.codec, Codec::Cvsd);
        // One 10 ms frame of the engine reaches the headset as 8 kHz PCM
        // (80 samples: three 48-byte packets and 16 bytes kept back).
        link.ports
            .to_headset
            .send(Box::new([1000; crate::audio::FRAME_SAMPLES]))
            .await
            .expect("bridge running");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(1), headset_end.recv(&mut buf))
            .await
            .expect("a packet within 1 s")
            .expect("link open");
        assert_eq!(n, 48);
        // What the headset sends comes out as 48 kHz frames.
        for _ in 0..4 {
            headset_end.send(&[0u8; 48]).await.expect("link open");
        }
        let f = tokio::time::timeout(Duration::from_secs(1), link.ports.from_headset.recv())
            .await
            .expect("a frame within 1 s")
            .expect("bridge running");
        assert_eq!(f.len(), crate::audio::FRAME_SAMPLES);

        cmd_tx
            .send(GatewayCommand::CloseAudio)
            .await
            .expect("gateway running");
        match events.recv().await {
            Some(AdapterEvent::Sco { link: None, .. }) => {}
            other => panic!("expected the SCO link closed, got {other:?}"),
        }
        // The bridge is gone: the headset's end sees the link close.
        let n = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match headset_end.recv(&mut buf).await {
                    Ok(0) | Err(_) => return 0,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .expect("closed within 1 s");
        assert_eq!(n, 0);
    }

    /// Tones both ways over an mSBC link: the engine's to the headset in H2
    /// packets, the headset's back as 48 kHz frames.
    async fn msbc_flows_both_ways(link: &mut VoiceLink, headset_end: &ScoStream) {
        use crate::bt::msbc::{MsbcReceiver, MsbcSender, PACKET_BYTES};
        // 100 ms of the engine reach the headset as H2 packets of mSBC.
        let mut phase = 0.0;
        for _ in 0..10 {
            let mut frame: crate::audio::Frame = Box::new([0; crate::audio::FRAME_SAMPLES]);
            phase = crate::audio::fill_sine(&mut frame[..], 2_000.0, 0.5, 48_000, phase);
            link.ports
                .to_headset
                .send(frame)
                .await
                .expect("bridge running");
        }
        let mut rx = MsbcReceiver::new().expect("libsbc mSBC");
        let mut got = Vec::new();
        let mut buf = [0u8; 128];
        // 1600 samples at 16 kHz: 13 packets.
        for i in 0..13 {
            let n = tokio::time::timeout(Duration::from_secs(1), headset_end.recv(&mut buf))
                .await
                .expect("a packet within 1 s")
                .expect("link open");
            assert_eq!(n, PACKET_BYTES);
            assert_eq!(buf[..2], [0x01, [0x08, 0x38, 0xC8, 0xF8][i % 4]]);
            rx.push(&buf[..n], &mut got);
        }
        assert_eq!(rx.stats().frames, 13);
        assert_eq!(
            crate::audio::scan_dominant_frequency(&got, 16_000),
            Some(2_000.0)
        );
        // The headset's mSBC comes out as 48 kHz frames of its tone.
        let mut mic = vec![0i16; 1_600];
        crate::audio::fill_sine(&mut mic, 1_500.0, 0.5, 16_000, 0.0);
        let mut tx = MsbcSender::new().expect("libsbc mSBC");
        let mut stream = Vec::new();
        tx.push(&mic, &mut stream).expect("encode");
        for p in stream.chunks(PACKET_BYTES) {
            headset_end.send(p).await.expect("link open");
        }
        let mut heard = Vec::new();
        for _ in 0..9 {
            let f = tokio::time::timeout(Duration::from_secs(1), link.ports.from_headset.recv())
                .await
                .expect("a frame within 1 s")
                .expect("bridge running");
            heard.extend_from_slice(&f[..]);
        }
        assert_eq!(
            crate::audio::scan_dominant_frequency(&heard, 48_000),
            Some(1_500.0)
        );
    }

    #[tokio::test]
    async fn an_msbc_headset_gets_bcs_then_a_transparent_msbc_link() {
        use std::sync::{Arc, Mutex};
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (headset_end, gateway_end) =
            crate::bt::sco::ScoStream::test_pair(60).expect("socketpair");
        let mut gateway_end = Some(gateway_end);
        let opened: Arc<Mutex<Vec<Codec>>> = Arc::default();
        let seen = opened.clone();
        let opener: ScoOpener = Box::new(move |codec| {
            seen.lock().expect("test lock").push(codec);
            let link = gateway_end
                .take()
                .ok_or_else(|| io::Error::other("opened twice"));
            Box::pin(async move { link })
        });
        let (mut hf, mut events, _cancel, _task) =
            start_with(HfpSettings::default(), cmd_rx, opener);
        // Codec negotiation (feature bit 7) and both codecs offered.
        hf.cmd("AT+BRSF=128").await;
        assert_eq!(hf.cmd("AT+BAC=1,2").await, vec!["OK".to_owned()]);
        establish_rest(&mut hf, &mut events).await;

        cmd_tx
            .send(GatewayCommand::OpenAudio)
            .await
            .expect("gateway running");
        // The gateway proposes mSBC and waits for the headset's answer
        // before it opens anything.
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(2), hf.read.read_line(&mut line))
            .await
            .expect("+BCS within 2 s")
            .expect("pipe open");
        while line.trim().is_empty() {
            line.clear();
            hf.read.read_line(&mut line).await.expect("pipe open");
        }
        assert_eq!(line.trim(), "+BCS: 2");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            opened.lock().expect("test lock").is_empty(),
            "SCO before AT+BCS"
        );
        assert_eq!(hf.cmd("AT+BCS=2").await, vec!["OK".to_owned()]);
        let mut link = match events.recv().await {
            Some(AdapterEvent::Sco {
                link: Some(link), ..
            }) => link,
            other => panic!("expected the SCO link, got {other:?}"),
        };
        assert_eq!(link.codec, Codec::Msbc);
        assert_eq!(*opened.lock().expect("test lock"), vec![Codec::Msbc]);
        assert_eq!(
            voice::LinkFormat::of(Codec::Msbc).voice,
            crate::bt::sco::VoiceSetting::Transparent
        );

        msbc_flows_both_ways(&mut link, &headset_end).await;
    }

    #[tokio::test]
    async fn a_failed_msbc_link_falls_back_to_cvsd_at_the_next_attempt() {
        use std::sync::{Arc, Mutex};
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (_headset_end, gateway_end) =
            crate::bt::sco::ScoStream::test_pair(48).expect("socketpair");
        let mut gateway_end = Some(gateway_end);
        let opened: Arc<Mutex<Vec<Codec>>> = Arc::default();
        let seen = opened.clone();
        // As a controller without transparent SCO: mSBC connects fail.
        let opener: ScoOpener = Box::new(move |codec| {
            seen.lock().expect("test lock").push(codec);
            let link = match codec {
                Codec::Msbc => Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
                Codec::Cvsd => gateway_end
                    .take()
                    .ok_or_else(|| io::Error::other("opened twice")),
            };
            Box::pin(async move { link })
        });
        let (mut hf, mut events, _cancel, _task) =
            start_with(HfpSettings::default(), cmd_rx, opener);
        hf.cmd("AT+BRSF=128").await;
        hf.cmd("AT+BAC=1,2").await;
        establish_rest(&mut hf, &mut events).await;

        async fn proposal(hf: &mut Hf) -> String {
            let mut line = String::new();
            while line.trim().is_empty() {
                line.clear();
                tokio::time::timeout(Duration::from_secs(2), hf.read.read_line(&mut line))
                    .await
                    .expect("+BCS within 2 s")
                    .expect("pipe open");
            }
            line.trim().to_owned()
        }
        cmd_tx
            .send(GatewayCommand::OpenAudio)
            .await
            .expect("gateway running");
        assert_eq!(proposal(&mut hf).await, "+BCS: 2");
        hf.cmd("AT+BCS=2").await;
        match events.recv().await {
            Some(AdapterEvent::Sco { link: None, .. }) => {}
            other => panic!("expected the failed link, got {other:?}"),
        }
        // The station asks again (its route machine reopens): CVSD now.
        cmd_tx
            .send(GatewayCommand::OpenAudio)
            .await
            .expect("gateway running");
        assert_eq!(proposal(&mut hf).await, "+BCS: 1");
        hf.cmd("AT+BCS=1").await;
        match events.recv().await {
            Some(AdapterEvent::Sco {
                link: Some(link), ..
            }) => assert_eq!(link.codec, Codec::Cvsd),
            other => panic!("expected the CVSD link, got {other:?}"),
        }
        assert_eq!(
            *opened.lock().expect("test lock"),
            vec![Codec::Msbc, Codec::Cvsd]
        );
    }

    #[tokio::test]
    async fn open_audio_before_the_slc_reports_no_link() {
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let opener: ScoOpener = Box::new(|_| Box::pin(async { Err(io::Error::other("unused")) }));
        let (_hf, mut events, _cancel, _task) = start_with(HfpSettings::default(), cmd_rx, opener);
        cmd_tx
            .send(GatewayCommand::OpenAudio)
            .await
            .expect("gateway running");
        match events.recv().await {
            Some(AdapterEvent::Sco { link: None, .. }) => {}
            other => panic!("expected no link, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_door_call_reaches_the_headset_and_its_button_hangs_up() {
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let opener: ScoOpener = Box::new(|_| Box::pin(async { Err(io::Error::other("unused")) }));
        let (mut hf, mut events, _cancel, _task) =
            start_with(HfpSettings::default(), cmd_rx, opener);
        establish(&mut hf, &mut events).await;
        // No call: the button is refused.
        assert_eq!(hf.cmd("AT+CHUP").await, vec!["ERROR".to_owned()]);
        cmd_tx
            .send(GatewayCommand::Call(DoorCall::Active))
            .await
            .expect("gateway running");
        // The indicators announce the call (+CIEV: call = 1)…
        let mut line = String::new();
        while !line.starts_with("+CIEV: 2,1") {
            line.clear();
            tokio::time::timeout(Duration::from_secs(2), hf.read.read_line(&mut line))
                .await
                .expect("an indicator within 2 s")
                .expect("pipe open");
            line = line.trim().to_owned();
        }
        // …then the button works.
        assert_eq!(
            hf.cmd("AT+CHUP").await.last().map(String::as_str),
            Some("OK")
        );
        match events.recv().await {
            Some(AdapterEvent::HangupRequested { .. }) => {}
            other => panic!("expected the hang-up, got {other:?}"),
        }
    }
}
