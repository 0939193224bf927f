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

use super::adapter::{AdapterEvent, DeviceAddr};
use super::hfp::{HfpEvent, HfpMachine, HfpOutput, HfpSettings};

/// The Hands-Free Audio Gateway's service class UUID (0x111f).
pub const HFP_AG_UUID: &str = "0000111f-0000-1000-8000-00805f9b34fb";
/// The RFCOMM channel the gateway listens on (BlueZ's default for the
/// gateway role).
pub const HFP_AG_CHANNEL: u16 = 13;
/// HFP 1.8 in the SDP record.
pub const HFP_VERSION: u16 = 0x0108;
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

/// Runs one service level connection until it closes. `events` receives
/// [`AdapterEvent::HandsFree`] when it is established and when it ends.
pub async fn run<S>(
    mut stream: S,
    device: DeviceAddr,
    settings: HfpSettings,
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
    let closed = 'conn: loop {
        while let Some(out) = m.poll_output() {
            match out {
                HfpOutput::Transmit(bytes) => {
                    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break 'conn Closed::Io(format!("write: {e}")),
                        Err(_) => break 'conn Closed::Io("write timed out".into()),
                    }
                }
                HfpOutput::Event(ev) => {
                    if let Some(closed) = on_event(&device, ev, &mut established, &events).await {
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
            _ = cancel.cancelled() => break Closed::Shutdown,
        }
    };
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

async fn on_event(
    device: &DeviceAddr,
    ev: HfpEvent,
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
        HfpEvent::Rejected { line, reason } => {
            warn!(device = %device, line = %line, reason = reason.as_str(), "bluetooth hands-free command refused");
        }
        other => info!(device = %device, event = ?other, "bluetooth hands-free event"),
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

    fn start(
        settings: HfpSettings,
    ) -> (
        Hf,
        mpsc::Receiver<AdapterEvent>,
        CancellationToken,
        tokio::task::JoinHandle<Closed>,
    ) {
        let (ours, theirs) = tokio::io::duplex(4096);
        let (tx, rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let device = DeviceAddr::parse("00:AA:01:00:00:23").expect("valid address");
        let task = tokio::spawn(run(ours, device, settings, tx, cancel.clone()));
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
}
