//! `intercomd bt pair` against a running daemon: the CLI reaches it over
//! the control socket, the Bluetooth actor (simulated adapter) opens the
//! pairing window, the status LED shows it and returns when the window
//! closes at its timeout. With Bluetooth off, the CLI says so and fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::{eventually_blocking, free_port, http};

struct Station {
    child: Child,
    dir: PathBuf,
}

impl Drop for Station {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(bluetooth: bool) -> (Station, SocketAddr, PathBuf) {
    let n: u64 = rand::random();
    let dir = std::env::temp_dir().join(format!("intercomd-bt-pair-{n:016x}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("control.sock");
    let panel: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("loopback address");
    let config = dir.join("station.toml");
    std::fs::write(
        &config,
        format!(
            "[station]\ncontrol_socket = \"{}\"\n\n[hub]\nlisten = \"127.0.0.1:{}\"\n[hub.tls]\nmode = \"off\"\n\n\
             [hardware]\nbackend = \"sim\"\n\n[hardware.sim]\ncontrol_listen = \"{panel}\"\nstdin = false\n\n\
             [bluetooth]\nenabled = {bluetooth}\nbackend = \"sim\"\npairing_timeout_ms = 1500\n",
            socket.display(),
            free_port()
        ),
    )
    .expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_intercomd"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,webrtc=warn,rtc=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the daemon binary starts");
    (Station { child, dir }, panel, socket)
}

fn bt_pair(socket: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_intercomd"))
        .args(["bt", "pair", "--socket"])
        .arg(socket)
        .output()
        .expect("the CLI runs")
}

fn status_led(panel: SocketAddr) -> Option<String> {
    let (code, body) = http(panel, "GET", "/state").ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["leds"]["status"]["pattern"].as_str().map(str::to_owned)
}

fn wait_led(panel: SocketAddr, want: &str, within: Duration) {
    eventually_blocking(
        &format!("status LED showing {want}"),
        within,
        || status_led(panel),
        |got| got.as_deref() == Some(want),
    );
}

fn wait_socket(socket: &Path) {
    let _ = eventually_blocking(
        "control socket up",
        Duration::from_secs(20),
        || std::os::unix::net::UnixStream::connect(socket).map(drop),
        Result::is_ok,
    );
}

#[test]
fn bt_pair_opens_pairing_and_the_led_shows_it_until_the_timeout() {
    let (_station, panel, socket) = start(true);
    wait_socket(&socket);
    // Idle with signaling up (the station's own hub), so the LED pattern
    // noted here is the one it returns to: on a loaded machine signaling
    // can come up while pairing is open, changing the idle pattern.
    let before = eventually_blocking(
        "signaling up and the status LED on",
        Duration::from_secs(20),
        || {
            let up = http(panel, "GET", "/state")
                .ok()
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                .is_some_and(|v| v["signaling"] == "up");
            status_led(panel).filter(|p| up && p != "off")
        },
        Option::is_some,
    )
    .expect("checked by the wait");
    assert_ne!(before, "medium_blink");

    let out = bt_pair(&socket);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bt pair failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Bluetooth pairing open on hci0 (00:00:5E:00:53:01) for 1.5 s"),
        "{stdout}"
    );
    wait_led(panel, "medium_blink", Duration::from_secs(2));
    // The window (1.5 s) closes by itself and the LED returns.
    wait_led(panel, &before, Duration::from_secs(5));
}

#[test]
fn bt_pair_fails_clearly_when_bluetooth_is_off_or_the_daemon_is_absent() {
    let (_station, _panel, socket) = start(false);
    wait_socket(&socket);
    let out = bt_pair(&socket);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Bluetooth is off (bluetooth.enabled = false)"),
        "{stderr}"
    );

    let out = bt_pair(&socket.with_file_name("nobody.sock"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the daemon"), "{stderr}");
}
