//! Hostile load on a running station with its hub (the real binary, on
//! loopback): 3,000 idle TCP connections, 500 slowloris requests and 1,000
//! silent WebSockets at once, from 100 loopback source addresses. Meanwhile
//! a resident signs in, a button press rings it and the call carries audio
//! both ways (checked by frequency). Afterwards every hostile socket has
//! been closed by the station within the configured timeouts, the
//! per-address cap refused exactly the excess, and the daemon's memory is
//! back near its baseline.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

use crate::common::station::{StationConfig, hang_up};
use crate::common::*;

const SOURCES: u8 = 100;
const IDLE_PER_SOURCE: usize = 30;
const SLOW_PER_SOURCE: usize = 5;
const WS_PER_SOURCE: usize = 10;
const PER_ADDRESS_CAP: usize = 30;
/// Configured for the test: long enough for a call under attack, short
/// enough to keep the test brief.
const HEADER_TIMEOUT: Duration = Duration::from_secs(8);
const HELLO_TIMEOUT: Duration = Duration::from_secs(8);
/// Closing is checked against the timeout plus this (a loaded 2-core
/// machine, thousands of sockets).
const SLACK: Duration = Duration::from_secs(4);

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raise this process's descriptor limit to its hard limit: thousands of
/// client sockets live here (and the daemon inherits the limit).
fn raise_nofile(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= need,
        "RLIMIT_NOFILE hard limit {} is below the {need} this test needs",
        lim.rlim_cur
    );
}

async fn connect_from(src: u8, hub: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, src)),
        0,
    ))?;
    timeout(Duration::from_secs(10), s.connect(hub))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// What one hostile socket saw.
#[derive(Debug)]
enum Fate {
    /// Closed by the station before it was served (cap).
    Refused,
    /// Served, then closed by the station this long after it opened.
    Closed(Duration),
    /// Still open at the deadline, or a client-side error.
    Open(String),
}

/// Reads until the station closes the socket (EOF or reset).
async fn until_closed(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Refused connections are closed at once: no byte, EOF within this.
const REFUSED_WITHIN: Duration = Duration::from_millis(1500);

async fn idle(src: u8, hub: SocketAddr, deadline: Instant) -> Fate {
    let t0 = Instant::now();
    let Ok(mut s) = connect_from(src, hub).await else {
        return Fate::Open("connect failed".into());
    };
    if !until_closed(&mut s, deadline).await {
        return Fate::Open("idle".into());
    }
    match t0.elapsed() {
        d if d < REFUSED_WITHIN => Fate::Refused,
        d => Fate::Closed(d),
    }
}

async fn slowloris(src: u8, hub: SocketAddr, deadline: Instant) -> Fate {
    let t0 = Instant::now();
    let Ok(mut s) = connect_from(src, hub).await else {
        return Fate::Open("connect failed".into());
    };
    let _ = s
        .write_all(format!("GET / HTTP/1.1\r\nHost: {hub}\r\n").as_bytes())
        .await;
    let mut buf = [0u8; 512];
    // One more header line a second, never the blank line.
    for i in 0..60 {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    return match t0.elapsed() {
                        d if d < REFUSED_WITHIN => Fate::Refused,
                        d => Fate::Closed(d),
                    };
                }
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if Instant::now() > deadline {
                    return Fate::Open("slowloris".into());
                }
                if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                    return Fate::Closed(t0.elapsed());
                }
            }
        }
    }
    Fate::Open("slowloris ran out of rounds".into())
}

async fn silent_ws(src: u8, hub: SocketAddr, deadline: Instant) -> Fate {
    let t0 = Instant::now();
    let Ok(mut s) = connect_from(src, hub).await else {
        return Fate::Open("connect failed".into());
    };
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {hub}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return Fate::Refused;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 4096 {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Fate::Refused,
            Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
            Err(_) => return Fate::Open("no upgrade answer".into()),
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Fate::Open(String::from_utf8_lossy(&head[..head.len().min(40)]).into());
    }
    // Upgraded; never says hello.
    if !until_closed(&mut s, deadline).await {
        return Fate::Open("silent websocket".into());
    }
    Fate::Closed(t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_succeeds_under_hostile_load_and_every_hostile_socket_is_closed() {
    let per_source = IDLE_PER_SOURCE + SLOW_PER_SOURCE + WS_PER_SOURCE;
    let hostile = SOURCES as usize * per_source;
    raise_nofile(hostile as u64 + 1024);
    let dir = std::env::temp_dir().join(format!("intercomd-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let (hub_port, panel_port) = (free_port(), free_port());
    let config = StationConfig::new(&dir)
        .hub(format!("127.0.0.1:{hub_port}"))
        .hub_keys(&format!(
            "ping_interval_ms = 4000\n\
             hello_timeout_ms = {hello}\n\
             header_read_timeout_ms = {head}\n\
             idle_timeout_ms = 20000\n\
             max_connections = 3200\n\
             max_connections_per_address = {cap}\n",
            hello = HELLO_TIMEOUT.as_millis(),
            head = HEADER_TIMEOUT.as_millis(),
            cap = PER_ADDRESS_CAP,
        ))
        .answerer("flat-1a", "token-of-flat-1a-0123456789")
        .panel(format!("127.0.0.1:{panel_port}"))
        .extra("[hub.push]\nenabled = false\n[log]\ntarget = \"stderr\"\n")
        .write("station.toml");
    let log = std::fs::File::create(dir.join("daemon.log")).expect("writable");
    let mut child = Command::new(env!("CARGO_BIN_EXE_intercomd"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,webrtc=warn,rtc=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the daemon binary starts");
    let pid = child.id();
    let hub: SocketAddr = ([127, 0, 0, 1], hub_port).into();
    let panel: SocketAddr = ([127, 0, 0, 1], panel_port).into();
    let url = format!("ws://{hub}/ws");
    wait_panel(panel, "station up", |s| s["signaling"] == "up").await;

    // A first call, so that what a call allocates for good is in the
    // baseline.
    let ws = connect(&url, "token-of-flat-1a-0123456789").await;
    panel_press(panel).await;
    let mut a = Answerer::answer(ws).await;
    wait_panel(panel, "first call", |s| s["call"]["state"] == "in_call").await;
    hang_up(&mut a).await;
    a.cancel.cancel();
    drop(a);
    wait_panel(panel, "idle after the first call", |s| {
        s["call"]["state"] == "idle"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_before, fds_before) = (rss_kb(pid), open_fds(pid));

    // The attack: every hostile socket at once, from 127.0.0.2 upwards
    // (the resident and the station stay on 127.0.0.1).
    let t_attack = Instant::now();
    let deadline = t_attack + HEADER_TIMEOUT.max(HELLO_TIMEOUT) + SLACK + Duration::from_secs(10);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SOURCES {
        let src = i + 2;
        for _ in 0..IDLE_PER_SOURCE {
            tasks.spawn(async move { ("idle", idle(src, hub, deadline).await) });
        }
        for _ in 0..SLOW_PER_SOURCE {
            tasks.spawn(async move { ("slowloris", slowloris(src, hub, deadline).await) });
        }
        for _ in 0..WS_PER_SOURCE {
            tasks.spawn(async move { ("websocket", silent_ws(src, hub, deadline).await) });
        }
        // Ramp up over ~2 s: 4,500 SYNs in one burst would overflow the
        // kernel's accept queue (somaxconn) and leave client sockets that
        // the station never saw.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the connections land, then sign in, ring and talk through it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fds_attack = open_fds(pid);
    let rss_attack = rss_kb(pid);
    let ws = timeout(
        Duration::from_secs(10),
        connect(&url, "token-of-flat-1a-0123456789"),
    )
    .await
    .expect("the resident signs in under attack");
    let t_press = Instant::now();
    panel_press(panel).await;
    let mut a = Answerer::answer(ws).await;
    eprintln!(
        "under attack: rang and answered {:?} after the press",
        t_press.elapsed()
    );
    a.wait_hears("resident hears the door", 600.0).await;
    eventually(
        "the door hearing 1000 Hz",
        Duration::from_secs(10),
        async || panel_state(panel).await["audio"]["played_dominant_hz"].as_f64(),
        |hz| hz.is_some_and(|hz| (hz - 1000.0).abs() <= 30.0),
    )
    .await;
    let call_done = t_attack.elapsed();
    assert!(
        call_done < HEADER_TIMEOUT,
        "the call finished {call_done:?} into the attack, after the hostile sockets' timeout: it did not run under load"
    );
    hang_up(&mut a).await;

    // Every hostile socket closed by the station, within its timeout.
    let (mut refused, mut closed, mut open) = (0usize, Vec::new(), Vec::new());
    while let Some(r) = tasks.join_next().await {
        let (kind, fate) = r.expect("hostile task ran");
        match fate {
            Fate::Refused => refused += 1,
            Fate::Closed(d) => closed.push((kind, d)),
            Fate::Open(why) => open.push((kind, why)),
        }
    }
    let t_all_closed = t_attack.elapsed();
    assert!(
        open.is_empty(),
        "{} hostile sockets were not closed, e.g. {:?}",
        open.len(),
        &open[..open.len().min(5)]
    );
    let latest = closed.iter().map(|(_, d)| *d).max().unwrap_or_default();
    for (kind, d) in &closed {
        let limit = if *kind == "websocket" {
            HELLO_TIMEOUT
        } else {
            HEADER_TIMEOUT
        };
        assert!(
            *d <= limit + SLACK,
            "a {kind} socket closed only after {d:?} (timeout {limit:?})"
        );
        assert!(
            *d + Duration::from_millis(100) >= limit,
            "a {kind} socket closed after {d:?}: before its timeout"
        );
    }
    // Each source address got exactly the cap; the rest was refused.
    assert_eq!(
        (refused, closed.len()),
        (
            hostile - SOURCES as usize * PER_ADDRESS_CAP,
            SOURCES as usize * PER_ADDRESS_CAP
        ),
        "refused and served hostile connections"
    );

    // Memory back near the baseline once the sockets are gone.
    let rss_after = poll_until(
        Duration::from_secs(10),
        async || rss_kb(pid),
        |&r| r <= rss_before + 5 * 1024,
    )
    .await
    .unwrap_or_else(|last| last);
    let fds_after = open_fds(pid);
    eprintln!(
        "hostile={hostile} refused={refused} served={} latest close {latest:?}, all closed {t_all_closed:?} into the attack; \
         fds {fds_before} -> {fds_attack} -> {fds_after}; RSS kB {rss_before} -> {rss_attack} -> {rss_after}",
        closed.len()
    );
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    assert!(
        log.contains("connection refused: max_connections_per_address"),
        "the cap is logged"
    );
    let refusal_lines = log.matches("connection refused").count();
    assert!(
        refusal_lines <= 3,
        "{refusal_lines} refusal lines: not throttled"
    );
    assert!(
        rss_after <= rss_before + 5 * 1024,
        "RSS {rss_after} kB, baseline {rss_before} kB"
    );
    assert!(
        fds_after <= fds_before + 10,
        "descriptors {fds_before} -> {fds_after}"
    );

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let _ = poll_until(
        Duration::from_secs(5),
        async || child.try_wait().expect("child waitable"),
        Option::is_some,
    )
    .await;
    let _ = child.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
