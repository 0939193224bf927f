//! The command line as a technician meets it: `config check` on good and
//! bad files, exit codes and messages that name file, key and line.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_intercomd"))
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("intercomd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("temp dir is writable");
    // Private, as intercomd requires of secret files.
    std::fs::set_permissions(
        &p,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("our own file");
    p
}

fn check(path: &PathBuf) -> (i32, String) {
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(path)
        .output()
        .expect("binary runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn version_prints() {
    let out = bin().arg("--version").output().expect("binary runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("intercomd "));
}

#[test]
fn shipped_files_check_clean() {
    for f in [
        "config/boards/sim.toml",
        "config/boards/gpio-example.toml",
        "config/boards/raspberrypi4-64.toml",
        "config/boards/hil-vm.toml",
        "config/site.example.toml",
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(f);
        let out = bin()
            .args(["config", "check", "--config"])
            .arg(&path)
            .output()
            .expect("binary runs");
        // The example site file names secret files that do not exist here;
        // `check` validates structure, so it must still pass.
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unknown_key_names_file_key_and_line() {
    let p = write(
        "unknown.toml",
        "[station]\nid = \"door-1\"\n\n[signaling]\nreconect_initial_ms = 500\n",
    );
    let (code, text) = check(&p);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains(&format!("{}:5", p.display())), "{text}");
    assert!(text.contains("signaling.reconect_initial_ms"), "{text}");
}

#[test]
fn wrong_type_names_file_key_and_line() {
    let p = write(
        "type.toml",
        "[call]\n\nring_timeout_ms = \"thirty seconds\"\n",
    );
    let (code, text) = check(&p);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains(&format!("{}:3", p.display())), "{text}");
    assert!(text.contains("call.ring_timeout_ms"), "{text}");
}

#[test]
fn missing_required_value_names_the_key_and_where_to_add_it() {
    let p = write("missing.toml", "[signaling]\nmode = \"hub\"\n");
    let (code, text) = check(&p);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("signaling.url"), "{text}");
    assert!(text.contains(&p.display().to_string()), "{text}");
}

#[test]
fn run_with_bad_config_exits_78_before_starting_anything() {
    let p = write("bad-run.toml", "[hub]\nlisten = \"not an address\"\n");
    let out = bin()
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hub.listen") && err.contains(":2"), "{err}");
}

#[test]
fn dump_redacts_and_reloads() {
    let secret_file = write("tok", "very-secret-token-value\n");
    let p = write(
        "dump.toml",
        &format!(
            "[[hub.answerers]]\nid = \"flat-1a\"\ntoken_file = \"{}\"\ngroups = [\"residents\"]\n",
            secret_file.display()
        ),
    );
    let out = bin()
        .args(["config", "dump", "--config"])
        .arg(&p)
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("very-secret-token-value"));
    let dumped = write("dumped.toml", &text);
    let (code, t) = check(&dumped);
    assert_eq!(code, 0, "{t}");
}

#[test]
fn plain_ws_to_a_lan_hub_fails_config_check_with_78() {
    let p = write(
        "plain-ws.toml",
        "[signaling]\nmode = \"hub\"\nurl = \"ws://192.168.1.20:8080/ws\"\ntoken_credential = \"door-token\"\n",
    );
    let (code, text) = check(&p);
    assert_eq!(code, 78, "{text}");
    assert!(
        text.contains("plain-ws.toml:3")
            && text.contains("signaling.url")
            && text.contains("wss://"),
        "{text}"
    );
    // Allowed explicitly (a trusted network): accepted.
    let p = write(
        "plain-ws-allowed.toml",
        "[signaling]\nmode = \"hub\"\nurl = \"ws://192.168.1.20:8080/ws\"\ntoken_credential = \"door-token\"\nallow_insecure_ws = true\n",
    );
    let (code, text) = check(&p);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn hub_invite_prints_the_link_and_a_qr_code_or_names_the_known_answerers() {
    let token = write("invite-flat.token", "0123456789abcdef0123456789abcdef\n");
    let p = write(
        "invite.toml",
        &format!(
            "[hub]\nlisten = \"0.0.0.0:8443\"\npublic_url = \"https://door.example.net:8443/\"\n\
             [[hub.answerers]]\nid = \"flat-1a\"\nname = \"Flat 1A\"\ntoken_file = \"{}\"\ngroups = [\"residents\"]\n",
            token.display()
        ),
    );
    let out = bin()
        .args(["hub", "invite", "--config"])
        .arg(&p)
        .arg("flat-1a")
        .output()
        .expect("binary runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("https://door.example.net:8443/#token=0123456789abcdef0123456789abcdef"),
        "{text}"
    );
    // The QR code: rows of half-block characters.
    assert!(
        text.lines()
            .filter(|l| l.contains('▀') || l.contains('▄'))
            .count()
            >= 10,
        "{text}"
    );

    let out = bin()
        .args(["hub", "invite", "--config"])
        .arg(&p)
        .arg("flat-9")
        .output()
        .expect("binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("flat-9") && err.contains("flat-1a") && err.contains("invite.toml"),
        "{err}"
    );
}

/// `config check` and `run` refuse a short hub token, one token for two
/// members and a secret file others can read: exit 78, naming the
/// configuration file and line, the dotted key and the secret file.
#[test]
fn weak_shared_or_exposed_tokens_fail_with_78() {
    let strong = write("strong.token", "Zq3x9V1mK8pT2rL5wN7yB4cD\n");
    let other = write("other.token", "Hh4y0W2nL9qU3sM6xO8zC5eF\n");
    let short = write("short.token", "x\n");
    let open = write("open.token", "Jj5z1X3oM0rV4tN7yP9aD6gH\n");
    std::fs::set_permissions(
        &open,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .expect("our own file");
    let site = |name: &str, door: &PathBuf, flat: &PathBuf| {
        write(
            name,
            &format!(
                "[[hub.doors]]\nid = \"door-1\"\ngroups = [\"residents\"]\ntoken_file = \"{}\"\n\n[[hub.answerers]]\nid = \"flat-1a\"\ntoken_file = \"{}\"\ngroups = [\"residents\"]\n",
                door.display(),
                flat.display()
            ),
        )
    };
    let (code, text) = check(&site("tok-ok.toml", &strong, &other));
    assert_eq!(code, 0, "{text}");
    for (name, flat, why) in [
        (
            "tok-short.toml",
            &short,
            "at least 22 are needed for 128 bits",
        ),
        (
            "tok-shared.toml",
            &strong,
            "the same token as `hub.doors[0].token_file`",
        ),
        ("tok-open.toml", &open, "readable by everyone"),
    ] {
        let p = site(name, &strong, flat);
        let (code, text) = check(&p);
        assert_eq!(code, 78, "{name}: {text}");
        assert!(
            text.contains(&format!("{name}:8"))
                && text.contains("hub.answerers[0].token_file")
                && text.contains(&flat.display().to_string())
                && text.contains(why),
            "{name}: {text}"
        );
        assert!(
            !text.contains("Zq3x9V1m") && !text.contains("Jj5z1X3o"),
            "{text}"
        );
        // The daemon refuses to start on the same grounds.
        let out = bin()
            .args(["run", "--config"])
            .arg(&p)
            .output()
            .expect("binary runs");
        assert_eq!(out.status.code(), Some(78), "{name}");
    }
}
#[test]
fn a_config_path_that_does_not_exist_fails_with_78_naming_it() {
    for missing in [
        "/nonexistent-intercomd/config.d",
        "/nonexistent-intercomd/site.toml",
    ] {
        let (code, text) = check(&PathBuf::from(missing));
        assert_eq!(code, 78, "{missing}: {text}");
        assert!(text.contains(missing), "{text}");
        assert!(!text.contains("configuration OK"), "{text}");
    }
}

#[test]
fn every_bad_key_of_a_file_is_reported_in_one_run() {
    let p = write(
        "several.toml",
        "[call]\nring_timeout_ms = \"x\"\n\n[door]\npulse_ms = \"y\"\nbogus = 1\n[[buttons]]\nname = \"call\"\ngroup = 7\n",
    );
    let (code, text) = check(&p);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("4 configuration errors"), "{text}");
    for want in [
        "several.toml:2: wrong type for `call.ring_timeout_ms`",
        "several.toml:5: wrong type for `door.pulse_ms`",
        "several.toml:6: unknown key `door.bogus`",
        "several.toml:9: wrong type for `buttons[0].group`",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
}

#[test]
fn ctrl_c_ends_the_demo_within_two_seconds_while_the_terminal_is_open() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = std::env::temp_dir().join(format!("intercomd-cli-demo-{}", std::process::id()));
    let mut demo = bin()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--panel",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&dir)
        .env("RUST_LOG", "info")
        // A terminal nobody types into: the demo reads it for Enter.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let stderr = demo.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("intercomd ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the demo gets ready");
    let pid = demo.id().to_string();
    let sent = Instant::now();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let exited = crate::common::poll_until_blocking(
        Duration::from_secs(10),
        || demo.try_wait().expect("child status"),
        Option::is_some,
    );
    let Ok(Some(status)) = exited else {
        let _ = demo.kill();
        panic!("the demo was still running 10 s after Ctrl+C");
    };
    let took = sent.elapsed();
    assert!(
        took <= Duration::from_secs(2),
        "the demo took {took:?} to stop"
    );
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_busy_port_is_said_once_with_what_to_do_and_no_banner() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = busy.local_addr().expect("bound").to_string();
    let dir = std::env::temp_dir().join(format!("intercomd-cli-busy-{}", std::process::id()));
    let out = bin()
        .args([
            "demo",
            "--listen",
            &addr,
            "--http",
            "127.0.0.1:0",
            "--panel",
            "127.0.0.1:0",
        ])
        .arg("--state-dir")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        !stdout.contains("#token="),
        "no links to a demo that is not running: {stdout}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("--listen"), "{stderr}");
    assert!(stderr.contains("make demo ARGS="), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
