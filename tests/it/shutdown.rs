//! SIGTERM in the middle of a call while the door relay is pulsed: the
//! resident is told the call ended, the relay is de-energised and the
//! daemon exits 0 within 2 s. The real binary, real signals.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use intercomd::signaling::protocol::Message;

use crate::common::station::StationConfig;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_call_hangs_up_releases_the_relay_and_exits_0_within_2s() {
    let dir = std::env::temp_dir().join(format!("intercomd-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let (hub, panel) = (free_port(), free_port());
    let relay_file = dir.join("relay");
    let config = StationConfig::new(&dir)
        .hub(format!("127.0.0.1:{hub}"))
        .answerer("flat-1a", "token-of-flat-1a-0123456789")
        .panel(format!("127.0.0.1:{panel}"))
        .sim_keys(&format!("state_file = \"{}\"\n", relay_file.display()))
        .extra("[door]\npulse_ms = 10000\n[log]\ntarget = \"stderr\"\n")
        .write("station.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_intercomd"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the daemon binary starts");
    let panel: SocketAddr = ([127, 0, 0, 1], panel).into();
    wait_panel(panel, "station up", |s| s["signaling"] == "up").await;

    // A call with audio flowing.
    let ws = connect(
        &format!("ws://127.0.0.1:{hub}/ws"),
        "token-of-flat-1a-0123456789",
    )
    .await;
    panel_press(panel).await;
    let mut a = Answerer::answer(ws).await;
    wait_panel(panel, "in call", |s| s["call"]["state"] == "in_call").await;

    // The exit button pulses the relay for 10 s.
    tokio::task::spawn_blocking(move || http(panel, "POST", "/exit"))
        .await
        .expect("blocking task runs")
        .expect("panel answers");
    eventually(
        "the relay energised (its state file)",
        Duration::from_secs(5),
        async || std::fs::read_to_string(&relay_file).unwrap_or_default(),
        |text| text == "energised\n",
    )
    .await;

    // SIGTERM.
    let t0 = std::time::Instant::now();
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "signal delivered");
    let status = poll_until(
        Duration::from_secs(2),
        async || child.try_wait().expect("child waitable"),
        Option::is_some,
    )
    .await
    .ok()
    .flatten()
    .expect("still running 2 s after SIGTERM");
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "clean exit");
    eprintln!("exited {took:?} after SIGTERM");

    // The resident was told.
    match recv_until(&mut a.resident.ws, |m| matches!(m, Message::Hangup { .. })).await {
        Message::Hangup { call_id, reason } => {
            assert_eq!(call_id, a.call_id);
            assert_eq!(reason, "shutdown");
        }
        _ => unreachable!("filtered above"),
    }
    // The relay is released.
    assert_eq!(
        std::fs::read_to_string(&relay_file).unwrap_or_default(),
        "de-energised\n"
    );
    a.cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
