//! A station killed with SIGKILL in the middle of a door pulse leaves the
//! relay energised (nothing runs to release it); the restarted station
//! must de-energise it before anything else. The simulated relay keeps its
//! level in a state file, as a latching output would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("loopback is available")
        .port()
}

/// One HTTP/1.1 request; returns status and body.
fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_intercomd"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,webrtc=warn,rtc=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the daemon binary starts")
}

fn wait_state(panel: SocketAddr) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, body)) = http(panel, "GET", "/state") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                if v.get("relay_energised").is_some_and(|r| !r.is_null()) {
                    return v;
                }
            }
        }
        assert!(Instant::now() < deadline, "panel never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_file(path: &Path, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(path).unwrap_or_default() != want {
        assert!(
            Instant::now() < deadline,
            "{} never became {want:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_restart_after_kill_9_during_a_pulse_de_energises_the_relay_first() {
    let dir = Dir(std::env::temp_dir().join(format!("intercomd-kill9-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir is writable");
    let relay_file = dir.0.join("relay");
    let panel: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("literal");
    let config = dir.0.join("50-site.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\nlisten = \"127.0.0.1:0\"\n\
             [hardware.sim]\ncontrol_listen = \"{panel}\"\nstdin = false\nstate_file = \"{}\"\n\
             [door]\npulse_ms = 60000\n",
            relay_file.display()
        ),
    )
    .expect("temp dir is writable");

    let mut daemon = start(&config);
    let first = wait_state(panel);
    assert_eq!(first["relay_writes"][0], false);
    assert_eq!(http(panel, "POST", "/exit").expect("panel").0, 200);
    wait_file(&relay_file, "energised\n");
    assert_eq!(wait_state(panel)["door"]["unlocked"], true);

    // SIGKILL: no shutdown path runs, the relay stays as it was.
    daemon.kill().expect("the daemon can be killed");
    daemon.wait().expect("reaped");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::read_to_string(&relay_file).expect("state file"),
        "energised\n"
    );

    let mut daemon = start(&config);
    let state = wait_state(panel);
    assert_eq!(
        std::fs::read_to_string(&relay_file).expect("state file"),
        "de-energised\n"
    );
    assert_eq!(state["relay_writes"], serde_json::json!([false]));
    assert_eq!(state["relay_energised"], false);

    // A clean stop releases it too (SIGTERM path).
    assert_eq!(http(panel, "POST", "/exit").expect("panel").0, 200);
    wait_file(&relay_file, "energised\n");
    let pid = daemon.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while daemon.try_wait().expect("child status").is_none() {
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(&relay_file).expect("state file"),
        "de-energised\n"
    );
}
