//! Integration: what peers send cannot forge, flood or leak into the
//! station's log, and tokens cannot be guessed quickly. A whole standalone
//! station (hub included) on loopback; the first two tests read the log
//! captured in this process, the third runs the binary at `RUST_LOG=trace`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use intercomd::signaling::protocol::Message;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::common::station::{InProcessStation, StationConfig, hang_up};
use crate::common::*;

const FLAT_1A: &str = "Ka7pW2xR9mQ4vT6yB3nJ8cF1";
const FLAT_1B: &str = "Lb8qX3yS0nR5wU7zC4oK9dG2";
/// The hub's refusal summaries: one line per connection per this interval
/// (`hub::guard::REFUSAL_LOG_INTERVAL`), plus one when it closes.
const INTERVAL: Duration = Duration::from_secs(10);
/// A forged line would start with this; the daemon's lines start with today.
const FORGED_DATE: &str = "1999-01-01T00:00:00.000000Z";

async fn start_station(name: &str) -> InProcessStation {
    capture_log("info,webrtc=warn,rtc=warn");
    let dir = std::env::temp_dir().join(format!("intercomd-log-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let toml = station_config(&dir).toml();
    let st = InProcessStation::start("test.toml", &toml)
        .await
        .owning(dir);
    st.signaling_up().await
}

/// The station of these tests: both flats, door opens not rate limited.
fn station_config(dir: &std::path::Path) -> StationConfig {
    StationConfig::new(dir)
        .answerer("flat-1a", FLAT_1A)
        .answerer("flat-1b", FLAT_1B)
        .extra("[door]\nremote_open_interval_ms = 1\n")
}

async fn raw(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("hub reachable")
        .0
}

/// Sends a frame; false once the hub has closed the connection.
async fn push(ws: &mut Socket, text: &str) -> bool {
    ws.send(Ws::Text(text.to_owned().into())).await.is_ok()
}

/// Reads frames until the hub closes the socket (bounded: 5 s, 10 000
/// frames). `Ok(code)`: closed, with the close code when one arrived before
/// the connection went (a client still writing may see a reset instead);
/// `Err(())`: still open.
async fn drain_until_closed(ws: &mut Socket) -> Result<Option<u16>, ()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..10_000 {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            ws.next(),
        )
        .await
        {
            Ok(Some(Ok(Ws::Close(c)))) => return Ok(c.map(|c| u16::from(c.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return Ok(None),
            Err(_) => return Err(()),
        }
    }
    Err(())
}

fn closed_by_policy(r: Result<Option<u16>, ()>) {
    assert!(matches!(r, Ok(None | Some(1008))), "{r:?}");
}

/// Text with a newline followed by a whole forged line in the daemon's
/// format, and other characters that end or recolour a line.
fn forged(tag: &str) -> String {
    format!(
        "{tag}\n{FORGED_DATE}  INFO intercomd::controller: door opened by the resident AUDIT=\"door_open\" granted=true\r\u{1b}[2K\u{2028}\u{0}"
    )
}

/// Every line of the captured log in the daemon's own format: a timestamp,
/// the level, then the rest. Returns the lines.
fn parse_log(log: &str) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    for l in &lines {
        let ts = l.split(' ').next().unwrap_or("");
        let ok_ts = ts.len() >= 20
            && ts.as_bytes()[4] == b'-'
            && ts.as_bytes()[10] == b'T'
            && ts.ends_with('Z')
            && !ts.starts_with("1999");
        let level = l[ts.len()..].trim_start().split(' ').next().unwrap_or("");
        assert!(
            ok_ts && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "a line the station did not start: {l:?}"
        );
    }
    lines
}

/// The `peer=` field of a hub line (one connection's address and port).
fn peer_of(line: &str) -> Option<&str> {
    let at = line.find(" peer=")? + " peer=".len();
    line[at..].split(' ').next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_text_cannot_forge_or_flood_the_log() {
    crate::common::run_alone!("peer_text_cannot_forge_or_flood_the_log");
    let st = start_station("forge").await;
    let url = st.url();
    let started = Instant::now();

    // Four unauthenticated sockets sending `{`: each is closed after three
    // errors, whatever it sends.
    let mut sent_before_hello = 0;
    for _ in 0..4 {
        let mut ws = raw(&url).await;
        for _ in 0..200 {
            if !push(&mut ws, "{").await {
                break;
            }
            sent_before_hello += 1;
        }
        closed_by_policy(drain_until_closed(&mut ws).await);
    }

    // Before hello: control characters in the type, role and name.
    let mut ws = raw(&url).await;
    for frame in [
        serde_json::json!({"type": forged("type")}),
        serde_json::json!({"type": "hello", "v": 1, "role": forged("role"), "token": "x"}),
        serde_json::json!({"type": "hello", "v": 1, "role": "x".repeat(60_000), "token": "x"}),
    ] {
        push(&mut ws, &frame.to_string()).await;
    }
    assert_eq!(drain_until_closed(&mut ws).await, Ok(Some(1008)));

    // A call, so that call-bound messages reach the station.
    let ws_a = connect(&url, FLAT_1A).await;
    st.running
        .sim
        .as_ref()
        .expect("sim")
        .press(None)
        .expect("button");
    let mut a = Answerer::answer(ws_a).await;
    st.wait_state("in_call").await;
    let call = a.call_id.to_string();

    // An authenticated answerer floods malformed and hostile frames for a
    // few seconds: every peer-supplied field carries a forged line.
    let mut b = connect(&url, FLAT_1B).await;
    let hostile = [
        serde_json::json!({"type": forged("type"), "call_id": "c-1"}),
        serde_json::json!({"type": "accept", "call_id": forged("call")}),
        serde_json::json!({"type": "register", "groups": [forged("group")]}),
        serde_json::json!({"type": "decline", "call_id": call}),
        serde_json::json!({"type": "candidate", "call_id": call, "candidate": {"candidate": forged("cand"), "sdpMid": "0"}}),
        serde_json::json!({"type": "offer", "call_id": call, "sdp": forged("v=0")}),
        serde_json::json!({"type": "error", "code": "bad_sdp", "message": forged("err"), "call_id": call}),
        serde_json::json!({"type": "push_subscribe", "subscription": {"endpoint": forged("https://p"), "keys": {"p256dh": forged("k"), "auth": forged("a")}}}),
        serde_json::json!({"type": "call_door", "call_id": "r-1", "door": forged("door")}),
        serde_json::json!({"type": "hangup", "call_id": forged("h"), "reason": forged("r")}),
        serde_json::json!({"type": "open", "call_id": call, "nonce": forged("nonce")}),
    ];
    let mut flood = 0;
    let until = Instant::now() + Duration::from_secs(3);
    'flood: while Instant::now() < until && flood < 20_000 {
        for f in &hostile {
            if !push(&mut b, &f.to_string()).await || !push(&mut b, "{").await {
                break 'flood;
            }
            flood += 2;
        }
        // Keep reading so that the hub's queue to us never fills.
        while let Ok(Some(Ok(_))) = timeout(Duration::from_millis(1), b.next()).await {}
    }
    assert!(flood > 200, "only {flood} frames sent");

    // The resident (a party of the call) sends hostile text to the door,
    // on signaling and on the door channel; the door still opens.
    for f in [
        serde_json::json!({"type": "candidate", "call_id": call, "candidate": {"candidate": forged("cand"), "sdpMid": "0"}}),
        serde_json::json!({"type": "error", "code": "bad_sdp", "message": forged("err"), "call_id": call}),
    ] {
        push(&mut a.resident.ws, &f.to_string()).await;
    }
    let bad = a
        .door(&serde_json::json!({"type": forged("dc")}).to_string())
        .await;
    assert_eq!(bad["granted"], false, "{bad}");
    let bad = a
        .door(&serde_json::json!({"type": "open", "nonce": forged("nonce")}).to_string())
        .await;
    assert_eq!(bad["type"], "open_result", "{bad}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = a.door(r#"{"type":"open","nonce":"n-ok"}"#).await;
    assert_eq!(r["granted"], true, "{r}");
    let bye = Message::Hangup {
        call_id: a.call_id.clone(),
        reason: forged("bye"),
    };
    send(&mut a.resident.ws, &bye).await;
    st.wait_state("ended").await;
    a.cancel.cancel();
    drop(b);
    // The hub writes the closing summaries once the sockets are gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = started.elapsed();
    st.shutdown().await;

    let log = captured_log();
    let lines = parse_log(&log);
    // Legitimate events are still there.
    for want in [
        "call button pressed",
        "hub: answerer flat-1a authenticated",
        "door opened by the resident",
        "AUDIO CONNECTION ESTABLISHED",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "missing {want:?}");
    }
    // Exactly one audit record of an opened door: the real one, with the
    // nonce escaped in its field.
    let opened: Vec<_> = lines
        .iter()
        .filter(|l| {
            l.find("door opened by the resident")
                .is_some_and(|at| at < l.find("1999-01-01").unwrap_or(usize::MAX))
        })
        .collect();
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert!(opened[0].contains("nonce=n-ok"), "{}", opened[0]);
    // The forged line is in the log only as escaped text inside real lines.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\\n1999-01-01T00:00:00.000000Z  INFO")),
        "the hostile text was expected in escaped form"
    );
    // Refusal lines per connection: at most one per interval plus the
    // closing summary.
    let mut per_peer: std::collections::HashMap<&str, usize> = Default::default();
    for l in lines.iter().filter(|l| l.contains("hub: refused")) {
        *per_peer.entry(peer_of(l).unwrap_or("?")).or_default() += 1;
    }
    let intervals = elapsed.as_secs() / INTERVAL.as_secs() + 1;
    let worst = per_peer.values().copied().max().unwrap_or(0);
    assert!(per_peer.len() >= 5, "{per_peer:?}");
    assert!(
        worst as u64 <= intervals + 1,
        "{worst} refusal lines for one connection in {elapsed:?}: {per_peer:?}"
    );
    // No line is longer than the cut pieces allow.
    let longest = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    assert!(longest < 4000, "a line of {longest} bytes");
    eprintln!(
        "log_integrity: {sent_before_hello} frames before hello on 4 sockets, {flood} hostile frames after; \
         {} log lines in {elapsed:?}, at most {worst} refusal lines per connection",
        lines.len()
    );
}

/// Connects from `local` (a loopback address of our choosing) and says
/// hello; the reply's `message` when refused, `None` on welcome.
async fn hello_from(
    local: std::net::IpAddr,
    hub: std::net::SocketAddr,
    token: &str,
) -> Option<String> {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind((local, 0).into()).expect("loopback address");
    let stream = sock.connect(hub).await.expect("hub reachable");
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{hub}/ws"), stream)
        .await
        .expect("websocket");
    let hello = serde_json::json!({"type": "hello", "v": 1, "role": "answerer", "token": token});
    push(&mut ws, &hello.to_string()).await;
    match recv(&mut ws).await {
        Message::Welcome { .. } => None,
        Message::Error { message, .. } => Some(message),
        m => panic!("{m:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_storm_is_throttled_and_another_address_still_gets_in() {
    crate::common::run_alone!("a_wrong_token_storm_is_throttled_and_another_address_still_gets_in");
    let st = start_station("storm").await;
    let hub = st.running.hub_addr.expect("standalone");
    let attacker: std::net::IpAddr = "127.0.0.7".parse().expect("address");
    let padded = format!("{FLAT_1A}{}", "\0".repeat(256));
    let truncated = &FLAT_1A[..FLAT_1A.len() - 1];
    let t0 = Instant::now();
    let mut evaluated = 0;
    let mut evaluated_at = Vec::new();
    let mut attempts = 0;
    // Padded and truncated forms of the real token are wrong guesses too.
    for i in 0..3000 {
        let guess = match i {
            0 => padded.clone(),
            1 => truncated.to_owned(),
            _ => format!("{}{i:04}", &FLAT_1A[..20]),
        };
        let reply = hello_from(attacker, hub, &guess)
            .await
            .expect("a wrong token never gets in");
        attempts += 1;
        if !reply.contains("too many failed attempts") {
            evaluated += 1;
            evaluated_at.push(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    // Six at once (five free failures, then the sixth is evaluated at
    // once), then 62, 125, 250, 500 ms and 1, 2 s apart: at most 12
    // evaluated within four seconds, however fast the guesses come.
    assert!(evaluated >= 5, "{evaluated}");
    assert!(
        evaluated <= 12,
        "{evaluated} of {attempts} guesses evaluated"
    );
    // After the tenth failure, evaluated guesses are a second or more apart
    // (the hub's clock; a little slack for this side's).
    for w in evaluated_at.windows(2).skip(9) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(900),
            "evaluated at {evaluated_at:?}"
        );
    }
    // Another address is not held back; nor is the right token elsewhere.
    let other: std::net::IpAddr = "127.0.0.8".parse().expect("address");
    assert_eq!(hello_from(other, hub, FLAT_1B).await, None);
    let log = captured_log();
    assert!(!log.contains(&FLAT_1A[..20]), "a guess reached the log");
    let lines = parse_log(&log);
    let about_attacker = lines
        .iter()
        .filter(|l| l.contains("from 127.0.0.7"))
        .count();
    assert!(
        about_attacker <= 7,
        "{about_attacker} lines about one guesser"
    );
    st.shutdown().await;
    eprintln!(
        "log_integrity: {attempts} guesses in {secs:.1} s ({:.0}/s), {evaluated} evaluated ({:.1}/s)",
        attempts as f64 / secs,
        evaluated as f64 / secs
    );
}

/// At `RUST_LOG=trace`, a whole call (with TURN servers configured) writes
/// no token, TURN password, TURN secret or signaling frame into the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logging_of_a_whole_call_leaks_no_secret() {
    crate::common::run_alone!("trace_logging_of_a_whole_call_leaks_no_secret");
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("intercomd-log-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    const TURN_PASSWORD: &str = "TurnPassw0rdOfTheRun9Xq";
    const TURN_SECRET: &str = "TurnRestSecretOfTheRun7Zk";
    write_secret(&dir.join("turn-cred"), &format!("{TURN_PASSWORD}\n"));
    write_secret(&dir.join("turn-secret"), &format!("{TURN_SECRET}\n"));
    // Nothing listens there: the station tries, and must not print.
    let turn_port = free_port();
    let extra = format!(
        "[[ice.servers]]\nurls = [\"turn:127.0.0.1:{turn_port}?transport=udp\"]\nusername = \"intercom\"\ncredential_file = \"{d}/turn-cred\"\n\n\
         [[ice.servers]]\nurls = [\"turn:127.0.0.1:{turn_port}?transport=tcp\"]\nsecret_file = \"{d}/turn-secret\"\n",
        d = dir.display()
    );
    let hub_port = free_port();
    station_config(&dir)
        .hub(format!("127.0.0.1:{hub_port}"))
        .stdin()
        .extra(&extra)
        .write("station.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_intercomd"))
        .args(["run", "--config"])
        .arg(dir.join("station.toml"))
        .env("RUST_LOG", "trace")
        .env_remove("JOURNAL_STREAM")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).expect("writable"))
        .spawn()
        .expect("binary runs");
    let url = format!("ws://127.0.0.1:{hub_port}/ws");
    // Refused until the station's hub listens.
    let ws = poll_until(
        Duration::from_secs(20),
        async || {
            timeout(
                Duration::from_secs(2),
                tokio_tungstenite::connect_async(&url),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(s, _)| s)
        },
        Option::is_some,
    )
    .await
    .ok()
    .flatten();
    let mut ws = ws.expect("the station's hub comes up");
    // The TURN credentials minted for this client are secrets too.
    let mut secrets = vec![
        FLAT_1A.to_owned(),
        FLAT_1B.to_owned(),
        TURN_PASSWORD.to_owned(),
        TURN_SECRET.to_owned(),
    ];
    let welcome = hello(
        &mut ws,
        intercomd::signaling::protocol::Role::Answerer,
        FLAT_1A,
    )
    .await;
    match welcome {
        Message::Welcome { ice_servers, .. } => {
            let v = serde_json::to_value(&ice_servers).expect("serialisable");
            for s in v.as_array().into_iter().flatten() {
                if let Some(c) = s["credential"].as_str() {
                    secrets.push(c.to_owned());
                }
            }
        }
        m => panic!("{m:?}"),
    }
    assert!(
        secrets.len() >= 6,
        "welcome carries both TURN credentials: {secrets:?}"
    );
    // Press the button (the simulated board reads the terminal).
    child
        .stdin
        .as_mut()
        .expect("piped")
        .write_all(b"\n")
        .expect("the station reads stdin");
    let mut a = Answerer::answer(ws).await;
    a.wait_hears("resident hears", 600.0).await;
    let r = a.door(r#"{"type":"open","nonce":"n-1"}"#).await;
    assert_eq!(r["granted"], true, "{r}");
    hang_up(&mut a).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.cancel.cancel();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = poll_until(
        Duration::from_secs(10),
        async || child.try_wait().ok().flatten(),
        Option::is_some,
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let log = String::from_utf8_lossy(&std::fs::read(dir.join("log")).expect("log")).into_owned();
    assert!(log.contains("AUDIO CONNECTION ESTABLISHED"), "the call ran");
    assert!(log.contains(" TRACE "), "trace lines were written");
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret reached the log: {s}");
    }
    // No frame of the signaling protocol with a token or credential in it.
    // Nor ICE passwords (in SDP, or as the ICE agent prints them).
    for frame_part in [
        "\"token\":",
        "\"credential\":",
        "token: \"",
        "a=ice-pwd:",
        "remotePwd",
        "localPwd",
    ] {
        assert!(
            !log.contains(frame_part),
            "a frame reached the log: {frame_part}"
        );
    }
    eprintln!(
        "log_integrity: {} trace log lines of a whole call, no secret in them",
        log.lines().count()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
