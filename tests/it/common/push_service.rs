//! The independent test push service (`tests/push/push_service.py`, Python's
//! http-ece and py-vapid) as the Rust tests run it: it verifies each VAPID
//! token, decrypts each push and records it as a JSON line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The venv's Python, or `None` (with the reason printed) when
/// `scripts/setup.sh` has not made it.
pub fn python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/push/.venv/bin/python");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is missing; run scripts/setup.sh to make the push service's venv",
            p.display()
        );
        None
    }
}

/// One running push service; killed on drop.
pub struct PushService {
    child: Child,
    pub origin: String,
    /// The browser key pair and auth secret the service decrypts with.
    pub p256dh: String,
    pub auth: String,
    log: PathBuf,
}

impl PushService {
    /// Starts the service on a free loopback port; `extra`: more arguments.
    pub fn start(python: &Path, dir: &Path, extra: &[&str]) -> PushService {
        let log = dir.join("push-log.jsonl");
        let mut child = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/push/push_service.py"))
            .args(["--listen", "127.0.0.1:0", "--log-file"])
            .arg(&log)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the venv's python runs");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("push_service.py did not start within 20 s");
            }
        };
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("push_service.py's first line {line:?}: {e}"));
        let s = |k: &str| {
            v[k].as_str()
                .expect("the start line has origin and keys")
                .to_owned()
        };
        PushService {
            origin: s("origin"),
            p256dh: s("p256dh"),
            auth: s("auth"),
            log,
            child,
        }
    }

    /// An endpoint on the service that answers as `behaviour` says.
    pub fn endpoint(&self, behaviour: &str, name: &str) -> String {
        format!("{}/push/{behaviour}/{name}", self.origin)
    }

    /// Every push the service took, in order.
    pub fn records(&self) -> Vec<Value> {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("the log is JSON lines"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
