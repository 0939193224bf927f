//! Soak: calls back to back through the station's built-in hub, the daemon
//! in its own process (simulated hardware and audio), answered by the Rust
//! resident of tests/it/common. Every `SOAK_EVERY` calls the daemon's resident
//! memory, open file descriptors, threads (all from /proc) and tokio's
//! alive tasks (`runtime.tasks` of `GET /state`) are sampled once the call
//! has ended and settled. After a warm-up of 100 calls: RSS grows at most
//! 1 MiB, descriptors and tasks stay as they were, threads do not grow.
//!
//! Too long for `make test`: ignored by default, run by `make soak`
//! (`SOAK_CALLS`, default 1000; `SOAK_EVERY`, default 50;
//! `INTERCOMD_BIN`, default the binary built with this test). Prints one
//! `SOAK` line per sample and a `SOAK_RESULT` JSON line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::common::station::{StationConfig, hang_up};
use crate::common::*;

/// Calls before the baseline is taken: pools, caches and the history
/// store reach their working size.
const WARM_UP: usize = 100;
/// Allowed RSS growth after the warm-up.
const RSS_SLACK_KIB: u64 = 1024;
const TOKEN: &str = "token-of-flat-1a-0123456789";

struct Daemon {
    child: Child,
    control: SocketAddr,
    hub: SocketAddr,
    dir: PathBuf,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = std::env::temp_dir().join(format!("intercomd-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let hub: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("literal");
        let control: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("literal");
        let config = StationConfig::new(&dir)
            .hub(hub)
            .answerer("flat-1a", TOKEN)
            .panel(control)
            .extra(
                "[[buttons]]\nname = \"call\"\ngroup = \"residents\"\n\
                 [audio]\nbackend = \"sim\"\n[hardware]\nbackend = \"sim\"\n\
                 [log]\ntarget = \"stderr\"\nlevel = \"warn\"\n",
            )
            .write("soak.toml");
        let bin = std::env::var("INTERCOMD_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_intercomd").to_owned());
        let log = std::fs::File::create(dir.join("daemon.log")).expect("temp dir is writable");
        let child = Command::new(&bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Daemon {
            child,
            control,
            hub,
            dir,
        }
    }

    async fn state(&self) -> serde_json::Value {
        panel_state(self.control).await
    }

    async fn wait_for(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
        if let Err(last) =
            poll_until(Duration::from_secs(20), async || self.state().await, ok).await
        {
            panic!("{what} not reached in 20 s: {last}\n{}", self.log());
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    async fn sample(&self, calls: usize, started: Instant) -> Sample {
        let pid = self.child.id();
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon runs");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("the daemon runs")
            .count() as u64;
        let tasks = self.state().await["runtime"]["tasks"]
            .as_u64()
            .expect("GET /state has runtime.tasks");
        // The hub's history grows with every call (up to its 5,000-call
        // limit), and SQLite's page cache with it: shown beside the RSS.
        let db_kib = ["hub.sqlite3", "hub.sqlite3-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join("hub-state").join(f)).ok())
            .map(|m| m.len())
            .sum::<u64>()
            / 1024;
        Sample {
            calls,
            secs: started.elapsed().as_secs_f64(),
            rss_kib: field("VmRSS:"),
            fds,
            threads: field("Threads:"),
            tasks,
            db_kib,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    calls: usize,
    secs: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: u64,
    db_kib: u64,
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a count")))
        .unwrap_or(default)
}

fn no_call(state: &serde_json::Value) -> bool {
    matches!(state["call"]["state"].as_str(), Some("idle" | "ended"))
}

/// One call: press, ring, accept, audio established (and heard, on
/// `listen`), hang-up from the resident, the station back to no call.
async fn one_call(daemon: &Daemon, ws: Socket, listen: bool) -> Socket {
    panel_press(daemon.control).await;
    let mut a = tokio::time::timeout(Duration::from_secs(30), Answerer::answer(ws))
        .await
        .unwrap_or_else(|_| panic!("call not answered in 30 s\n{}", daemon.log()));
    if listen {
        a.wait_hears("resident hears the door", 600.0).await;
    }
    hang_up(&mut a).await;
    daemon.wait_for("the call ends", no_call).await;
    a.cancel.cancel();
    a.resident.ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: minutes long, run by `make soak`"]
async fn a_thousand_calls_leak_no_memory_descriptors_or_tasks() {
    let calls = env_count("SOAK_CALLS", 1000);
    let every = env_count("SOAK_EVERY", 50).max(1);
    assert!(
        calls > WARM_UP,
        "SOAK_CALLS must exceed the {WARM_UP}-call warm-up"
    );
    let daemon = Daemon::start();
    daemon
        .wait_for("the station's signaling link", |s| s["signaling"] == "up")
        .await;
    let started = Instant::now();
    let mut samples = vec![daemon.sample(0, started).await];
    let mut ws = connect(&format!("ws://{}/ws", daemon.hub), TOKEN).await;
    for n in 1..=calls {
        ws = one_call(&daemon, ws, n % 100 == 1).await;
        if n % every == 0 || n == WARM_UP || n == calls {
            // Let the call's media tasks and sockets wind down and the
            // status (published every 500 ms) catch up.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let s = daemon.sample(n, started).await;
            println!(
                "SOAK calls={} t={:.0}s rss_kib={} fds={} threads={} tasks={} db_kib={}",
                s.calls, s.secs, s.rss_kib, s.fds, s.threads, s.tasks, s.db_kib
            );
            samples.push(s);
        }
    }
    let base = *samples
        .iter()
        .find(|s| s.calls == WARM_UP)
        .expect("a sample at the warm-up");
    let last = *samples.last().expect("samples taken");
    let max_rss = samples.iter().map(|s| s.rss_kib).max().expect("samples");
    println!(
        "SOAK_RESULT {{\"calls\":{},\"secs\":{:.0},\"rss_kib_start\":{},\"rss_kib_at_{WARM_UP}\":{},\"rss_kib_end\":{},\"rss_kib_max\":{},\"fds\":[{},{}],\"threads\":[{},{}],\"tasks\":[{},{}]}}",
        last.calls,
        last.secs,
        samples[0].rss_kib,
        base.rss_kib,
        last.rss_kib,
        max_rss,
        base.fds,
        last.fds,
        base.threads,
        last.threads,
        base.tasks,
        last.tasks
    );
    for s in samples.iter().filter(|s| s.calls >= WARM_UP) {
        assert!(
            s.rss_kib <= base.rss_kib + RSS_SLACK_KIB,
            "RSS grew from {} KiB at {WARM_UP} calls to {} KiB at {}",
            base.rss_kib,
            s.rss_kib,
            s.calls
        );
        assert_eq!(s.fds, base.fds, "open descriptors at {} calls", s.calls);
        assert_eq!(s.tasks, base.tasks, "alive tasks at {} calls", s.calls);
        assert!(
            s.threads <= base.threads,
            "threads grew from {} to {} at {} calls",
            base.threads,
            s.threads,
            s.calls
        );
    }
}
