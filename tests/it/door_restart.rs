//! A station killed with SIGKILL in the middle of a door pulse leaves the
//! relay energised (nothing runs to release it); the restarted station
//! must de-energise it before anything else. The simulated relay keeps its
//! level in a state file, as a latching output would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{eventually_blocking, free_port, http};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

/// A standalone station's site file in `dir`: hub on loopback without TLS,
/// the simulated panel on a free port (`sim_extra`: more `[hardware.sim]`
/// keys), then `rest` (the `[door]` table and whatever else the test
/// wants). Returns the panel's address and the file.
fn site(dir: &Dir, sim_extra: &str, rest: &str) -> (SocketAddr, PathBuf) {
    std::fs::create_dir_all(&dir.0).expect("temp dir is writable");
    let panel: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("literal");
    let config = dir.0.join("50-site.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\nlisten = \"127.0.0.1:0\"\n[hub.tls]\nmode = \"off\"\n\
             [hardware.sim]\ncontrol_listen = \"{panel}\"\nstdin = false\n{sim_extra}{rest}"
        ),
    )
    .expect("temp dir is writable");
    (panel, config)
}

fn wait_state(panel: SocketAddr) -> serde_json::Value {
    eventually_blocking(
        "the panel answering with the relay's state",
        Duration::from_secs(20),
        || match http(panel, "GET", "/state") {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body).ok(),
            _ => None,
        },
        |v| {
            v.as_ref()
                .is_some_and(|v| v.get("relay_energised").is_some_and(|r| !r.is_null()))
        },
    )
    .expect("checked by the wait")
}

fn wait_file(path: &Path, want: &str) {
    eventually_blocking(
        &format!("{} becoming {want:?}", path.display()),
        Duration::from_secs(10),
        || std::fs::read_to_string(path).unwrap_or_default(),
        |text| text == want,
    );
}

#[test]
fn a_restart_after_kill_9_during_a_pulse_de_energises_the_relay_first() {
    let dir = Dir(std::env::temp_dir().join(format!("intercomd-kill9-{}", std::process::id())));
    let relay_file = dir.0.join("relay");
    let (panel, config) = site(
        &dir,
        &format!("state_file = \"{}\"\n", relay_file.display()),
        "[door]\npulse_ms = 60000\n",
    );

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
    eventually_blocking(
        "the daemon stopping on SIGTERM",
        Duration::from_secs(15),
        || daemon.try_wait().expect("child status"),
        Option::is_some,
    );
    assert_eq!(
        std::fs::read_to_string(&relay_file).expect("state file"),
        "de-energised\n"
    );
}

fn wait_for(
    panel: SocketAddr,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually_blocking(what, Duration::from_secs(10), || wait_state(panel), pred)
}

#[test]
fn the_panel_drives_every_simulated_input() {
    let dir = Dir(std::env::temp_dir().join(format!("intercomd-panel-{}", std::process::id())));
    let (panel, config) = site(
        &dir,
        "",
        "[door]\nheld_open_alarm_ms = 400\ntamper_lockout_ms = 60000\n\
         [[leds]]\nname = \"status\"\n\
         [[leds]]\nname = \"door\"\nidle = \"off\"\nsignaling_down = \"off\"\ndoor_open = \"on\"\nfault = \"slow_blink\"\n",
    );
    let mut daemon = start(&config);
    let s = wait_for(panel, "idle", |v| v["door"]["station_state"] == "idle");
    assert_eq!(s["leds"]["status"]["pattern"], "on");
    assert_eq!(s["leds"]["door"]["on"], false);

    // Door held open: alarm, LEDs show the fault; closing clears it.
    assert_eq!(
        http(panel, "POST", "/door?state=open").expect("panel").0,
        200
    );
    let s = wait_for(panel, "held-open alarm", |v| {
        v["door"]["held_open_alarm"] == true
    });
    assert_eq!(s["door_open"], true);
    assert_eq!(s["door"]["station_state"], "fault");
    assert_eq!(s["leds"]["status"]["pattern"], "fast_blink");
    assert_eq!(s["leds"]["door"]["pattern"], "slow_blink");
    assert_eq!(
        http(panel, "POST", "/door?state=closed").expect("panel").0,
        200
    );
    wait_for(panel, "alarm cleared", |v| {
        v["door"]["station_state"] == "idle"
    });

    // Exit button: the door LED lights for the pulse.
    assert_eq!(http(panel, "POST", "/exit").expect("panel").0, 200);
    let s = wait_for(panel, "door open", |v| v["door"]["unlocked"] == true);
    assert_eq!(s["relay_energised"], true);
    assert_eq!(
        s["leds"]["door"],
        serde_json::json!({"pattern": "on", "on": true})
    );

    // Tamper: event and lockout of remote opening.
    assert_eq!(http(panel, "POST", "/tamper").expect("panel").0, 200);
    let s = wait_for(panel, "tamper", |v| v["door"]["tamper"] == true);
    assert_eq!(s["tamper"], true);
    assert_eq!(s["door"]["remote_open_locked_out"], true);
    assert_eq!(
        http(panel, "POST", "/tamper?active=false")
            .expect("panel")
            .0,
        200
    );
    wait_for(panel, "tamper restored", |v| v["door"]["tamper"] == false);

    // A held press returns after the release.
    let t0 = Instant::now();
    assert_eq!(
        http(panel, "POST", "/press?button=call&ms=300")
            .expect("panel")
            .0,
        200
    );
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // Bad requests are refused with a reason.
    let (status, body) = http(panel, "POST", "/door?state=ajar").expect("panel");
    assert_eq!(status, 400);
    assert!(body.contains("\"open\" or \"closed\""), "{body}");
    assert_eq!(
        http(panel, "POST", "/press?button=nope").expect("panel").0,
        400
    );
    assert_eq!(
        http(panel, "POST", "/press?ms=600000").expect("panel").0,
        400
    );

    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// Sends `head` (request line and headers, without the blank line) with
/// `body`; returns the status code.
fn raw(panel: SocketAddr, head: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&panel, Duration::from_secs(1))
        .expect("panel reachable");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("socket option");
    write!(
        s,
        "{head}\r\nHost: {panel}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_panel_refuses_a_cross_site_post_and_keeps_the_relay() {
    let dir = Dir(std::env::temp_dir().join(format!("intercomd-panel-{}", std::process::id())));
    let (panel, config) = site(&dir, "", "[door]\npulse_ms = 60000\n");
    let mut daemon = start(&config);
    wait_state(panel);
    // What a page on another site can send without asking first: a form
    // or a "simple" fetch (text/plain), with its own Origin.
    let refused = [
        (
            "POST /exit HTTP/1.1\r\nContent-Type: text/plain\r\nOrigin: http://evil.example",
            415,
        ),
        ("POST /exit HTTP/1.1\r\nContent-Type: text/plain", 415),
        (
            "POST /exit HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
            415,
        ),
        (
            "POST /exit HTTP/1.1\r\nContent-Type: application/json\r\nOrigin: http://evil.example",
            403,
        ),
        (
            "POST /press HTTP/1.1\r\nContent-Type: application/json\r\nOrigin: null",
            403,
        ),
    ];
    for (head, want) in refused {
        assert_eq!(raw(panel, head, "{}"), want, "{head}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let state = wait_state(panel);
    assert_eq!(state["relay_energised"], false, "{state}");
    assert_eq!(state["door"]["unlocked"], false, "{state}");
    // The panel's own page (same origin) and tools (no Origin) still work.
    let own =
        format!("POST /exit HTTP/1.1\r\nContent-Type: application/json\r\nOrigin: http://{panel}");
    assert_eq!(raw(panel, &own, "{}"), 200);
    eventually_blocking(
        "the door unlocked by the same-origin POST",
        Duration::from_secs(5),
        || wait_state(panel),
        |v| v["door"]["unlocked"] == true,
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}
