//! The systemd notification protocol, over a real notify socket: the
//! `intercomd` binary runs with `NOTIFY_SOCKET` pointing at a datagram
//! socket of ours, as systemd would start it for a `Type=notify` unit with
//! `WatchdogSec=`.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `WATCHDOG_USEC` given to the daemon: it pings every 500 ms, and systemd
/// would kill it after a second without one.
const WATCHDOG_USEC: u64 = 1_000_000;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Short: unix socket paths are limited to 108 bytes.
        let dir = std::env::temp_dir().join(format!("icd-{name}-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A station with simulated hardware, nothing listening but the hub on an
/// ephemeral loopback port, and no terminal input.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("station.toml");
    std::fs::write(
        &path,
        "[hub]\nlisten = \"127.0.0.1:0\"\n[hub.tls]\nmode = \"off\"\n\n\
         [hardware.sim]\ncontrol_listen = \"\"\nstdin = false\n\n\
         [log]\ntarget = \"stderr\"\nlevel = \"info\"\n",
    )
    .expect("write the configuration");
    path
}

struct Daemon {
    child: Child,
    socket: UnixDatagram,
    started: Instant,
    log: PathBuf,
    /// Every notification received: (time since start, line).
    seen: Vec<(Duration, String)>,
}

impl Daemon {
    fn start(dir: &Path, extra_env: &[(&str, &str)]) -> Daemon {
        let sock_path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let config = write_config(dir);
        let log = dir.join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_intercomd"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("LISTEN_FDS")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log file"));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start intercomd");
        Daemon {
            child,
            socket,
            started: Instant::now(),
            log,
            seen: Vec::new(),
        }
    }

    /// Receive notifications until `until` is true of what was seen, or
    /// `limit` passes. Returns whether `until` held.
    fn collect(&mut self, limit: Duration, until: impl Fn(&[(Duration, String)]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if until(&self.seen) {
                return true;
            }
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let at = self.started.elapsed();
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    for line in text.lines().filter(|l| !l.is_empty()) {
                        self.seen.push((at, line.to_owned()));
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Drain what is left, then stop.
                while let Ok(n) = self.socket.recv(&mut buf) {
                    let at = self.started.elapsed();
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    for line in text.lines().filter(|l| !l.is_empty()) {
                        self.seen.push((at, line.to_owned()));
                    }
                }
                if !until(&self.seen) {
                    panic!(
                        "intercomd exited early with {status}; seen {:?}; stderr:\n{}",
                        self.seen,
                        self.stderr()
                    );
                }
                return true;
            }
        }
        until(&self.seen)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        crate::common::poll_until_blocking(
            limit,
            || self.child.try_wait().ok().flatten(),
            Option::is_some,
        )
        .ok()
        .flatten()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has(seen: &[(Duration, String)], prefix: &str) -> bool {
    seen.iter().any(|(_, l)| l.starts_with(prefix))
}

fn count(seen: &[(Duration, String)], line: &str) -> usize {
    seen.iter().filter(|(_, l)| l == line).count()
}

#[test]
fn ready_status_watchdog_then_stopping_on_sigterm() {
    let scratch = Scratch::new("notify");
    // In a build without the `fault-injection` feature this switch must do
    // nothing: the watchdog keeps coming.
    #[cfg(not(feature = "fault-injection"))]
    let env: &[(&str, &str)] = &[("INTERCOMD_FAULT_WEDGE_CONTROLLER_AFTER_MS", "0")];
    #[cfg(feature = "fault-injection")]
    let env: &[(&str, &str)] = &[];
    let mut d = Daemon::start(&scratch.0, env);

    let ok = d.collect(Duration::from_secs(30), |s| {
        has(s, "READY=1") && has(s, "STATUS=") && count(s, "WATCHDOG=1") >= 4
    });
    assert!(
        ok,
        "expected READY=1, STATUS= and WATCHDOG=1; seen {:?}; stderr:\n{}",
        d.seen,
        d.stderr()
    );
    let ready_at = d
        .seen
        .iter()
        .find(|(_, l)| l == "READY=1")
        .map(|(t, _)| *t)
        .expect("READY=1 was seen");
    // The watchdog pings at about half of WATCHDOG_USEC: never a gap of a
    // whole period once running.
    let pings: Vec<Duration> = d
        .seen
        .iter()
        .filter(|(t, l)| l == "WATCHDOG=1" && *t >= ready_at)
        .map(|(t, _)| *t)
        .collect();
    for w in pings.windows(2) {
        assert!(
            w[1] - w[0] < Duration::from_micros(WATCHDOG_USEC),
            "watchdog gap of {:?} exceeds WATCHDOG_USEC: {:?}",
            w[1] - w[0],
            pings
        );
    }

    d.signal("TERM");
    let term_at = Instant::now();
    let status = d.wait_exit(Duration::from_secs(2));
    let elapsed = term_at.elapsed();
    d.collect(Duration::from_millis(200), |s| has(s, "STOPPING=1"));
    assert!(
        has(&d.seen, "STOPPING=1"),
        "no STOPPING=1 after SIGTERM; seen {:?}; stderr:\n{}",
        d.seen,
        d.stderr()
    );
    let status = status.unwrap_or_else(|| {
        panic!(
            "intercomd did not exit within 2 s of SIGTERM; stderr:\n{}",
            d.stderr()
        )
    });
    assert!(
        status.success(),
        "exit status {status} after {elapsed:?}; stderr:\n{}",
        d.stderr()
    );
}

/// A controller loop that stops turning stops the watchdog, so systemd
/// (`WatchdogSec=`) kills and restarts the daemon.
#[cfg(feature = "fault-injection")]
#[test]
fn wedged_controller_stops_the_watchdog() {
    let scratch = Scratch::new("wedge");
    let mut d = Daemon::start(
        &scratch.0,
        &[("INTERCOMD_FAULT_WEDGE_CONTROLLER_AFTER_MS", "1500")],
    );
    let ok = d.collect(Duration::from_secs(30), |s| {
        has(s, "READY=1") && count(s, "WATCHDOG=1") >= 2
    });
    assert!(
        ok,
        "expected READY=1 and watchdog pings before the wedge; seen {:?}; stderr:\n{}",
        d.seen,
        d.stderr()
    );
    // Watch for three watchdog periods after the wedge is due: systemd
    // would have killed the daemon after one.
    let window = Duration::from_micros(WATCHDOG_USEC * 3);
    let until = Instant::now() + Duration::from_millis(2000) + window;
    d.collect(until - Instant::now(), |_| false);
    let end = d.started.elapsed();
    let last_ping = d
        .seen
        .iter()
        .filter(|(_, l)| l == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .max()
        .expect("pings were seen");
    assert!(
        end - last_ping >= window,
        "WATCHDOG=1 still sent {:?} before the end of the window; seen {:?}",
        end - last_ping,
        d.seen
    );
    assert!(
        d.stderr().contains("wedged on purpose"),
        "stderr:\n{}",
        d.stderr()
    );
    d.signal("KILL");
    let _ = d.wait_exit(Duration::from_secs(2));
}
