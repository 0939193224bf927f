//! A building's worth of door stations and a hub that restarts: do the
//! stations come back spread out (jitter), or all at once (lockstep)?
//!
//! 200 signaling clients (the product's own client actor, default backoff:
//! 1 s first retry, doubling to 5 s, ±20 % jitter) connect to a hub on
//! loopback. The hub is stopped, kept down for `--down-ms` (default 3000),
//! and started again on the same port. For every station the time from the
//! restart to its next `welcome` is recorded; the histogram (100 ms bins)
//! and percentiles are printed as Markdown.
//!
//!     cargo run --release --example reconnect_storm [-- --stations 200 --down-ms 3000]

use std::time::Duration;

use intercomd::hub::{self, ConnSettings, HubSettings, Principal};
use intercomd::signaling::client::{self, ClientEvent, ClientSettings, Wire};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings(n: usize) -> HubSettings {
    HubSettings {
        doors: (0..n)
            .map(|i| Principal {
                id: format!("door-{i}"),
                name: format!("Door {i}"),
                token: format!("token-{i:04}-0123456789abcdef"),
                groups: Vec::new(),
                call_door: false,
                quiet_hours: Default::default(),
            })
            .collect(),
        answerers: Vec::new(),
        ice_servers: Vec::new(),
        max_message_bytes: 65536,
        hello_timeout: Duration::from_secs(10),
        ring_timeout: Duration::from_secs(30),
        own_door: None,
    }
}

async fn start_hub(addr: &str, n: usize) -> CancellationToken {
    // The port may linger briefly after the previous hub: retry (bounded).
    let mut listener = None;
    for _ in 0..100 {
        match hub::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let listener = listener.expect("the hub's port frees up within 2 s");
    let cancel = CancellationToken::new();
    tokio::spawn(hub::run(
        hub::Listeners::plain(listener),
        settings(n),
        ConnSettings {
            ping_interval: Duration::from_secs(15),
            public_url: None,
            state_dir: None,
            push: None,
            station_name: "Front door".into(),
            limits: Default::default(),
            policy: Default::default(),
        },
        cancel.clone(),
    ));
    cancel
}

#[tokio::main]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let n = arg("--stations", 200) as usize;
    let down = Duration::from_millis(arg("--down-ms", 3000));
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback");
    let addr = probe.local_addr().expect("bound").to_string();
    drop(probe);

    let hub = start_hub(&addr, n).await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (up_tx, mut up_rx) = mpsc::channel::<(usize, Instant)>(n * 4);
    // A client whose sending handle is dropped stops: keep them all.
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, mut rx) = mpsc::channel(16);
        let handle = client::spawn(
            ClientSettings {
                url: format!("ws://{addr}/ws"),
                token: format!("token-{i:04}-0123456789abcdef"),
                name: format!("Door {i}"),
                reconnect_initial: Duration::from_secs(1),
                reconnect_max: Duration::from_secs(5),
                jitter: 0.2,
                connect_timeout: Duration::from_secs(20),
                keepalive_interval: Duration::from_secs(10),
                dead_peer_timeout: Duration::from_secs(25),
                max_message_bytes: 65536,
                wire: Wire::Native,
                tls: None,
            },
            tx,
            cancel.clone(),
            &tracker,
        );
        handles.push(handle);
        let up = up_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let ClientEvent::Up { .. } = ev {
                    let _ = up.send((i, Instant::now())).await;
                }
            }
        });
    }
    // Everybody online first.
    let mut online = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while online < n {
        match tokio::time::timeout_at(deadline, up_rx.recv()).await {
            Ok(Some(_)) => online += 1,
            _ => panic!("only {online} of {n} stations came online"),
        }
    }

    hub.cancel();
    tokio::time::sleep(down).await;
    let restarted = Instant::now();
    let hub = start_hub(&addr, n).await;

    let mut back: Vec<Option<Duration>> = vec![None; n];
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count < n {
        match tokio::time::timeout_at(deadline, up_rx.recv()).await {
            Ok(Some((i, t))) if back[i].is_none() => {
                back[i] = Some(t.saturating_duration_since(restarted));
                count += 1;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    cancel.cancel();
    hub.cancel();
    drop(handles);

    let mut ms: Vec<u64> = back
        .iter()
        .flatten()
        .map(|d| d.as_millis() as u64)
        .collect();
    ms.sort_unstable();
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{} stations, hub down {} ms, {} back within 30 s",
        n,
        down.as_millis(),
        ms.len()
    );
    println!();
    println!("| after restart | stations |");
    println!("|---|---|");
    let max_bin = ms.last().copied().unwrap_or(0) / 100;
    let mut peak = 0;
    for bin in 0..=max_bin {
        let c = ms.iter().filter(|&&m| m / 100 == bin).count();
        peak = peak.max(c);
        if c > 0 {
            println!(
                "| {}–{} ms | {} {} |",
                bin * 100,
                bin * 100 + 99,
                c,
                "#".repeat(c.div_ceil(2))
            );
        }
    }
    println!();
    println!(
        "p0 {} ms, p50 {} ms, p90 {} ms, p100 {} ms; busiest 100 ms bin: {} of {} stations",
        pct(0.0),
        pct(0.5),
        pct(0.9),
        pct(1.0),
        peak,
        ms.len()
    );
}
