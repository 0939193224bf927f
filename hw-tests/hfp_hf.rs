//! The headset side of the Bluetooth hardware tests: a Hands-Free unit that
//! connects to the door station's Audio Gateway over RFCOMM from a chosen
//! local controller, runs the service level connection (HFP 1.8; codec
//! negotiation only with `--msbc`, CVSD otherwise) and then tries the SCO
//! audio link.
//!
//! ```text
//! hfp-hf <local address> <gateway address> [channel]
//! hfp-hf --sco-listen <local address>
//! hfp-hf --headset [--msbc] <local address> <gateway address> <tone Hz> <stop file>
//! ```
//!
//! Prints one line per step (`SLC established`, `SCO connected`, the tone
//! each side received, or the reason it failed) and exits 0 only when the
//! service level connection was established. The SCO result is reported,
//! not judged: the test that runs this decides what it expects of the
//! emulated controllers. `--sco-listen` is the gateway's end of the plain
//! SCO test (the daemon opens SCO links itself only for an answered call,
//! see `--headset`): it accepts one link on the gateway's adapter with
//! intercomd's SCO socket layer and plays 400 Hz while the headset plays
//! 1000 Hz, both as 8 kHz PCM.
//!
//! `--headset` is a headset in a door call: it listens for SCO on its own
//! controller, runs the SLC with the gateway (channel 13) and waits for the
//! gateway to open the voice link when the call is answered. While the
//! link is up it plays its tone and prints `heard bytes=N hz=F` for each
//! second received (dominant frequency by zero crossings). When the stop
//! file appears it stops listening, closes the SCO link (`SCO closed`),
//! then the RFCOMM channel, and exits: the headset leaving mid-call.
//!
//! `--headset --msbc` is a wide-band headset: it announces codec
//! negotiation in `AT+BRSF`, offers CVSD and mSBC (`AT+BAC=1,2`), answers
//! the gateway's `+BCS: <id>` with `AT+BCS=<id>` and listens with a
//! transparent voice setting (`BT_VOICE_TRANSPARENT`). When the agreed
//! codec is mSBC it codes the link's audio itself with intercomd's H2
//! framing and libsbc (`intercomd::bt::msbc`): its tone goes out as 16 kHz
//! samples in 60-byte packets every 7.5 ms and `heard bytes=N hz=F`
//! counts the decoded 16 kHz PCM (32000 bytes a second). On exit it
//! prints the receiver's frame counts (`mSBC received frames=…`).

use std::process::ExitCode;
use std::time::Duration;

use bluer::Address;
use bluer::rfcomm::{Socket, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use intercomd::bt::DeviceAddr;
use intercomd::bt::hfp::{Codec, ag_feature, hf_feature};
use intercomd::bt::msbc::{MsbcReceiver, MsbcSender, PACKET_BYTES};
use intercomd::bt::sbc::FRAME_SAMPLES;
use intercomd::bt::sco::{ScoListener, ScoStream, VoiceSetting};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const STEP: Duration = Duration::from_secs(10);
/// How long each side plays its tone over SCO.
const TONE_SECONDS: u64 = 2;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--headset") {
        let msbc = args.get(2).map(String::as_str) == Some("--msbc");
        let a = if msbc { 3 } else { 2 };
        let (Some(local), Some(gateway), Some(hz), Some(stop)) = (
            args.get(a).and_then(|a| a.parse::<Address>().ok()),
            args.get(a + 1).and_then(|a| a.parse::<Address>().ok()),
            args.get(a + 2).and_then(|a| a.parse::<f32>().ok()),
            args.get(a + 3),
        ) else {
            eprintln!(
                "usage: hfp-hf --headset [--msbc] <local address> <gateway address> <tone Hz> <stop file>"
            );
            return ExitCode::from(2);
        };
        return match headset(local, gateway, hz, std::path::Path::new(stop), msbc).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.get(1).map(String::as_str) == Some("--sco-listen") {
        let Some(local) = args.get(2).and_then(|a| DeviceAddr::parse(a)) else {
            eprintln!("usage: hfp-hf --sco-listen <local address>");
            return ExitCode::from(2);
        };
        return match sco_listen(&local).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (Some(local), Some(gateway)) = (
        args.get(1).and_then(|a| a.parse::<Address>().ok()),
        args.get(2).and_then(|a| a.parse::<Address>().ok()),
    ) else {
        eprintln!("usage: hfp-hf <local address> <gateway address> [channel]");
        return ExitCode::from(2);
    };
    let channel = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(13u8);
    match run(local, gateway, channel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

type Rfcomm = bluer::rfcomm::Stream;

async fn run(local: Address, gateway: Address, channel: u8) -> Result<(), String> {
    let _channel = slc(local, gateway, channel, false).await?;

    let (Some(l), Some(g)) = (
        DeviceAddr::parse(&local.to_string()),
        DeviceAddr::parse(&gateway.to_string()),
    ) else {
        return Err("unparsable address".into());
    };
    match tokio::time::timeout(
        Duration::from_secs(30),
        ScoStream::connect(&l, &g, VoiceSetting::Cvsd),
    )
    .await
    {
        Ok(Ok(link)) => {
            println!("SCO connected (mtu {})", link.mtu());
            report("headset", 1000.0, exchange(&link, 1000.0).await);
        }
        Ok(Err(e)) => println!("SCO not connected: connect: {e}"),
        Err(_) => println!("SCO not connected: connect timed out after 30 s"),
    }
    Ok(())
}

/// Connects RFCOMM from `local` to the gateway's `channel` and runs the
/// service level connection (with codec negotiation when `msbc`: CVSD and
/// mSBC offered); returns the channel's halves.
async fn slc(
    local: Address,
    gateway: Address,
    channel: u8,
    msbc: bool,
) -> Result<
    (
        BufReader<tokio::io::ReadHalf<Rfcomm>>,
        tokio::io::WriteHalf<Rfcomm>,
    ),
    String,
> {
    let socket = Socket::new().map_err(|e| format!("RFCOMM socket: {e}"))?;
    socket
        .bind(SocketAddr::new(local, 0))
        .map_err(|e| format!("bind to {local}: {e}"))?;
    let stream = tokio::time::timeout(STEP, socket.connect(SocketAddr::new(gateway, channel)))
        .await
        .map_err(|_| format!("RFCOMM connect to {gateway} channel {channel} timed out"))?
        .map_err(|e| format!("RFCOMM connect to {gateway} channel {channel}: {e}"))?;
    println!("RFCOMM connected to {gateway} channel {channel}");
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);

    // Features: remote volume control, and codec negotiation for mSBC;
    // without it the gateway uses CVSD.
    let features = hf_feature::REMOTE_VOLUME
        | if msbc {
            hf_feature::CODEC_NEGOTIATION
        } else {
            0
        };
    let brsf = command(&mut read, &mut write, &format!("AT+BRSF={features}")).await?;
    let Some(ag) = brsf
        .iter()
        .find_map(|l| l.strip_prefix("+BRSF:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
    else {
        return Err(format!("no +BRSF in {brsf:?}"));
    };
    if msbc {
        if ag & ag_feature::CODEC_NEGOTIATION == 0 {
            return Err(format!(
                "the gateway does not negotiate codecs (+BRSF: {ag})"
            ));
        }
        command(&mut read, &mut write, "AT+BAC=1,2").await?;
    }
    let cind = command(&mut read, &mut write, "AT+CIND=?").await?;
    if !cind
        .iter()
        .any(|l| l.starts_with("+CIND:") && l.contains("\"call\""))
    {
        return Err(format!("no indicator list in {cind:?}"));
    }
    command(&mut read, &mut write, "AT+CIND?").await?;
    command(&mut read, &mut write, "AT+CMER=3,0,0,1").await?;
    println!("SLC established");
    Ok((read, write))
}

/// A headset in a door call (`--headset`, see the top of the file).
async fn headset(
    local: Address,
    gateway: Address,
    send_hz: f32,
    stop: &std::path::Path,
    msbc: bool,
) -> Result<(), String> {
    let Some(l) = DeviceAddr::parse(&local.to_string()) else {
        return Err("unparsable address".into());
    };
    // Listening before the SLC: the gateway may open the link right away.
    let voice = if msbc {
        VoiceSetting::Transparent
    } else {
        VoiceSetting::Cvsd
    };
    let listener =
        ScoListener::bind_with_voice(&l, voice).map_err(|e| format!("SCO listen on {l}: {e}"))?;
    let (mut read, mut write) = slc(local, gateway, HEADSET_CHANNEL, msbc).await?;
    // The codec the gateway proposed last with +BCS (HFP codec id; CVSD
    // without negotiation).
    let agreed = Arc::new(AtomicU8::new(Codec::Cvsd.id()));
    // Whatever the gateway sends from now on (RING, +CIEV) is printed; a
    // codec proposal is accepted.
    let reader = {
        let agreed = agreed.clone();
        tokio::spawn(async move {
            let mut line = String::new();
            while let Ok(n) = read.read_line(&mut line).await {
                if n == 0 {
                    break;
                }
                let l = line.trim();
                if !l.is_empty() {
                    println!("< {l}");
                }
                if let Some(id) = l
                    .strip_prefix("+BCS:")
                    .and_then(|v| v.trim().parse::<u8>().ok())
                {
                    agreed.store(id, Ordering::Relaxed);
                    let answer = format!("AT+BCS={id}");
                    println!("> {answer}");
                    if write
                        .write_all(format!("{answer}\r").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                line.clear();
            }
            // The channel closes with both halves.
            drop(write);
        })
    };
    let (link, peer) = tokio::time::timeout(Duration::from_secs(180), listener.accept())
        .await
        .map_err(|_| "no SCO link from the gateway within 180 s".to_owned())?
        .map_err(|e| format!("SCO accept: {e}"))?;
    // A reopen attempt after the link is closed must find nobody.
    drop(listener);
    let codec = if agreed.load(Ordering::Relaxed) == Codec::Msbc.id() {
        Codec::Msbc
    } else {
        Codec::Cvsd
    };
    println!(
        "SCO accepted from {peer} (mtu {}, codec {codec}, voice {})",
        link.mtu(),
        voice.as_str()
    );
    let rate = codec.sample_rate();
    let mut coder = match codec {
        Codec::Msbc => Some((
            MsbcSender::new().map_err(|e| format!("mSBC encoder: {e}"))?,
            MsbcReceiver::new().map_err(|e| format!("mSBC decoder: {e}"))?,
        )),
        Codec::Cvsd => None,
    };

    // CVSD: 16-bit PCM filling the MTU; mSBC: one H2 packet (120 samples
    // at 16 kHz, 7.5 ms) at a time.
    let mtu = usize::from(link.mtu()).clamp(2, 1024) & !1;
    let samples_per_packet = if coder.is_some() {
        FRAME_SAMPLES
    } else {
        mtu / 2
    };
    let period = Duration::from_secs_f64(samples_per_packet as f64 / f64::from(rate));
    let mut tick = tokio::time::interval(period);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.tick().await;
    let mut poll_stop = tokio::time::interval(Duration::from_millis(10));
    let mut buf = vec![0u8; 2048];
    let mut heard: Vec<i16> = Vec::new();
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let pcm: Vec<i16> = (0..samples_per_packet)
                    .map(|k| {
                        let t = (n + k) as f32 / rate as f32;
                        (0.5 * 32767.0 * (2.0 * std::f32::consts::PI * send_hz * t).sin()) as i16
                    })
                    .collect();
                n += samples_per_packet;
                let mut packet = Vec::with_capacity(mtu.max(PACKET_BYTES));
                match &mut coder {
                    Some((sender, _)) => {
                        sender.push(&pcm, &mut packet).map_err(|e| format!("mSBC encode: {e}"))?;
                    }
                    None => packet.extend(pcm.iter().flat_map(|v| v.to_le_bytes())),
                }
                link.send(&packet).await.map_err(|e| format!("SCO send: {e}"))?;
            }
            r = link.recv(&mut buf) => {
                let got = r.map_err(|e| format!("SCO recv: {e}"))?;
                if got == 0 {
                    return Err("the gateway closed the SCO link".into());
                }
                match &mut coder {
                    Some((_, receiver)) => receiver.push(&buf[..got], &mut heard),
                    None => heard.extend(buf[..got & !1].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]))),
                }
            }
            _ = second.tick() => {
                let bytes = heard.len() * 2;
                match zero_crossing_hz(&heard, rate) {
                    Some(hz) => println!("heard bytes={bytes} hz={hz:.0}"),
                    None => println!("heard bytes={bytes} hz=none"),
                }
                heard.clear();
            }
            _ = poll_stop.tick() => {
                if stop.exists() {
                    break;
                }
            }
        }
    }
    drop(link);
    println!("SCO closed");
    if let Some((_, receiver)) = &coder {
        let s = receiver.stats();
        println!(
            "mSBC received frames={} lost={} corrupt={} skipped_bytes={}",
            s.frames, s.lost, s.corrupt, s.skipped_bytes
        );
    }
    reader.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("RFCOMM closed");
    Ok(())
}

/// The gateway's RFCOMM channel (intercomd's HFP_AG_CHANNEL).
const HEADSET_CHANNEL: u8 = 13;

/// Dominant frequency of samples at `rate` by zero crossings; `None` for
/// less than 0.1 s.
fn zero_crossing_hz(samples: &[i16], rate: u32) -> Option<f32> {
    if samples.len() < rate as usize / 10 {
        return None;
    }
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    Some(crossings as f32 / 2.0 / (samples.len() as f32 / rate as f32))
}

/// Sends one AT command; returns the reply lines up to the final `OK`.
async fn command<R, W>(read: &mut R, write: &mut W, line: &str) -> Result<Vec<String>, String>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    println!("> {line}");
    write
        .write_all(format!("{line}\r").as_bytes())
        .await
        .map_err(|e| format!("write {line}: {e}"))?;
    let mut out = Vec::new();
    loop {
        let mut l = String::new();
        let n = tokio::time::timeout(STEP, read.read_line(&mut l))
            .await
            .map_err(|_| format!("no answer to {line}"))?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("gateway closed the channel after {line}"));
        }
        let l = l.trim().to_owned();
        if l.is_empty() {
            continue;
        }
        println!("< {l}");
        match l.as_str() {
            "OK" => return Ok(out),
            "ERROR" => return Err(format!("{line} answered ERROR")),
            _ => out.push(l),
        }
    }
}

/// Exchanges a tone each way over a SCO link for `TONE_SECONDS`: sends
/// `send_hz` paced at 8 kHz (16-bit PCM, CVSD's host format) while
/// receiving; returns the bytes received and their dominant frequency
/// (zero crossings), or `None` when nothing arrived.
async fn exchange(link: &ScoStream, send_hz: f32) -> std::io::Result<(usize, Option<f32>)> {
    let mtu = usize::from(link.mtu()).clamp(2, 1024) & !1;
    let samples_per_packet = mtu / 2;
    let packets = (8000 * TONE_SECONDS as usize) / samples_per_packet;
    let period = Duration::from_secs_f64(samples_per_packet as f64 / 8000.0);
    let mut tick = tokio::time::interval(period);
    let mut received: Vec<i16> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut n = 0usize;
    let mut sent = 0usize;
    let end = tokio::time::Instant::now() + Duration::from_secs(TONE_SECONDS + 1);
    loop {
        tokio::select! {
            _ = tick.tick(), if sent < packets => {
                let mut packet = Vec::with_capacity(mtu);
                for _ in 0..samples_per_packet {
                    let t = n as f32 / 8000.0;
                    let v = (0.5 * 32767.0 * (2.0 * std::f32::consts::PI * send_hz * t).sin()) as i16;
                    packet.extend_from_slice(&v.to_le_bytes());
                    n += 1;
                }
                link.send(&packet).await?;
                sent += 1;
            }
            r = link.recv(&mut buf) => {
                // The side that finishes first closes the link: the other
                // reads end of stream or a reset, after the data it got.
                let got = match r {
                    Ok(got) => got,
                    Err(e) if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::NotConnected
                    ) => 0,
                    Err(e) => return Err(e),
                };
                if got == 0 {
                    println!("SCO link closed after {} samples received", received.len());
                    break;
                }
                received.extend(buf[..got & !1].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
            }
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    Ok((received.len() * 2, zero_crossing_hz(&received, 8000)))
}

fn report(side: &str, sent_hz: f32, r: std::io::Result<(usize, Option<f32>)>) {
    match r {
        Ok((bytes, Some(hz))) => {
            println!("SCO {side}: sent {sent_hz} Hz, received {bytes} bytes, dominant {hz:.0} Hz")
        }
        Ok((bytes, None)) => {
            println!("SCO {side}: sent {sent_hz} Hz, received {bytes} bytes (too few to measure)")
        }
        Err(e) => println!("SCO {side}: exchange failed: {e}"),
    }
}

/// The gateway's end for the SCO test: accepts one link on `local` and
/// exchanges tones (400 Hz out).
async fn sco_listen(local: &DeviceAddr) -> Result<(), String> {
    let listener = ScoListener::bind(local).map_err(|e| format!("SCO listen on {local}: {e}"))?;
    println!("SCO listening on {local}");
    let (link, peer) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
        .await
        .map_err(|_| "no SCO link within 60 s".to_owned())?
        .map_err(|e| format!("SCO accept: {e}"))?;
    println!("SCO accepted from {peer} (mtu {})", link.mtu());
    report("gateway", 400.0, exchange(&link, 400.0).await);
    Ok(())
}
