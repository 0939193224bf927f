use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "intercomd-config-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the system temp directory is writable");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the test directory is writable");
        }
        // Private, as secret files must be (and harmless for the rest).
        std::fs::write(&path, text).expect("the test directory is writable");
        chmod(&path, 0o600);
        path
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .expect("the test's own file");
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn err(fragments: &[(&str, &str)]) -> ConfigError {
    match load_from_strs(fragments) {
        Ok(_) => panic!("expected a configuration error for {fragments:?}"),
        Err(e) => e,
    }
}

fn ok(fragments: &[(&str, &str)]) -> Settings {
    load_from_strs(fragments).unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The seed values of `[ice]` and `[audio]`.
fn assert_media_defaults(s: &Settings) {
    // Field notes, PeerConnection settings.
    let ice = &s.ice;
    assert_eq!(ice.receiving_timeout, Duration::from_secs(30));
    assert!(ice.dscp);
    assert_eq!(ice.check_interval, Duration::from_millis(20));
    assert_eq!(ice.mdns, MdnsMode::Disabled);
    assert_eq!(ice.transport_policy, IceTransportPolicy::All);
    assert!(ice.bind_ips.is_empty());
    // Works on a LAN with no internet: no third-party servers.
    assert!(ice.servers.is_empty());

    // Field notes, capture processing.
    let a = &s.audio;
    assert_eq!(a.backend, AudioBackend::Sim);
    assert!(a.echo_cancellation);
    assert!(a.auto_gain_control);
    assert!(a.high_pass_filter);
    assert!(a.noise_suppression);
    assert_eq!(
        a.opus,
        Opus {
            bitrate: 32000,
            complexity: 10,
            fec: true,
            frame: Duration::from_millis(20)
        }
    );
    assert_eq!(a.sim.source, SimSource::Tone { hz: 600 });
    assert_eq!(a.sim.record_file, None);
    assert_eq!(a.sim.echo_path, None);
}

#[test]
fn defaults_load_with_every_seed_value() {
    let s = defaults().unwrap_or_else(|e| panic!("built-in defaults must be valid: {e}"));

    assert_eq!(s.station.id, "door-1");
    assert_eq!(s.station.name, "Front door");

    let sig = &s.signaling;
    assert_eq!(sig.target.mode(), SignalingMode::Standalone);
    assert_eq!(sig.target, SignalingTarget::Standalone);
    // Field notes: first retry after ~1 s, at most 5 s; connect timeout 20 s.
    assert_eq!(sig.reconnect_initial, Duration::from_secs(1));
    assert_eq!(sig.reconnect_max, Duration::from_secs(5));
    assert_eq!(sig.connect_timeout, Duration::from_secs(20));
    assert_eq!(sig.reconnect_jitter, 0.2);
    assert_eq!(sig.keepalive_interval, Duration::from_secs(10));
    assert_eq!(sig.dead_peer_timeout, Duration::from_secs(25));
    assert_eq!(sig.max_message_bytes, 65536);

    assert_eq!(
        s.hub.listen,
        "0.0.0.0:8443"
            .parse::<std::net::SocketAddr>()
            .expect("literal address")
    );
    // A phone on the LAN gets a secure context out of the box.
    assert_eq!(
        s.hub.tls,
        Some(crate::hub::tls::TlsSource::SelfSigned {
            extra_names: vec![]
        })
    );
    assert_eq!(s.hub.loopback_listen, None);
    assert_eq!(s.hub.redirect_listen, None);
    assert_eq!(s.hub.state_dir, PathBuf::from("/var/lib/intercomd/hub"));
    assert!(!sig.allow_insecure_ws);
    assert_eq!(sig.ca_file, None);
    assert_eq!(s.hub.ping_interval, Duration::from_secs(15));
    assert_eq!(s.hub.hello_timeout, Duration::from_secs(10));
    assert!(s.hub.doors.is_empty());
    assert!(s.hub.answerers.is_empty());

    assert_eq!(s.call.ring_timeout, Duration::from_secs(30));
    assert_eq!(s.call.connect_timeout, Duration::from_secs(20));
    assert_eq!(s.call.max_duration, Duration::from_secs(600));

    assert_eq!(
        s.buttons,
        vec![Button {
            name: "call".into(),
            group: "residents".into()
        }]
    );

    assert_media_defaults(&s);

    assert_eq!(s.hardware.backend, HardwareBackend::Sim);
    assert_eq!(
        s.hardware.sim.control_listen,
        Some("127.0.0.1:7081".parse().expect("literal address"))
    );
    assert!(s.hardware.sim.stdin);

    assert_eq!(s.log.target, LogTarget::Auto);
    assert_eq!(
        s.log.level,
        "info,rtc_dtls=error,rtc_ice=error,rtc_sctp=error"
    );
    assert_eq!(s.sources, vec![PathBuf::from(BUILTIN_DEFAULTS)]);
}

#[test]
fn shipped_board_and_site_example_load() {
    let s = load(&[
        repo_file("config/boards/sim.toml"),
        repo_file("config/site.example.toml"),
    ])
    .unwrap_or_else(|e| panic!("shipped examples must be valid: {e}"));
    assert_eq!(s.hardware.backend, HardwareBackend::Sim);
    assert_eq!(s.ice.servers.len(), 3);
    assert!(
        s.ice
            .servers
            .iter()
            .any(|srv| srv.urls == ["turn:turn.example.org:443?transport=tcp"])
    );
    assert_eq!(s.hub.answerers.len(), 2);
}

#[test]
fn later_fragments_win_key_by_key_and_arrays_are_replaced() {
    let s = ok(&[
        (
            "a.toml",
            "[station]\nname = \"Back door\"\n[[buttons]]\nname = \"a\"\ngroup = \"g1\"\n[[buttons]]\nname = \"b\"\ngroup = \"g2\"\n",
        ),
        (
            "b.toml",
            "[station]\nid = \"door-7\"\n[[buttons]]\nname = \"c\"\ngroup = \"g3\"\n",
        ),
    ]);
    assert_eq!(s.station.id, "door-7");
    // Set only by the earlier fragment: kept.
    assert_eq!(s.station.name, "Back door");
    // Arrays of tables replace each other wholesale.
    assert_eq!(
        s.buttons,
        vec![Button {
            name: "c".into(),
            group: "g3".into()
        }]
    );
    // Untouched keys keep their defaults.
    assert_eq!(s.signaling.reconnect_max, Duration::from_secs(5));
}

#[test]
fn directories_are_read_in_lexical_order() {
    let dir = TempDir::new();
    let lib = dir.path().join("lib");
    let etc = dir.path().join("etc");
    dir.write("lib/20-board.toml", "[station]\nname = \"from board\"\n");
    dir.write(
        "etc/50-site.toml",
        "[station]\nid = \"site\"\nname = \"from 50\"\n",
    );
    dir.write("etc/10-early.toml", "[station]\nname = \"from 10\"\n");
    // Ignored: not *.toml, or hidden editor leftovers.
    dir.write("etc/99-notes.txt", "this is not TOML");
    dir.write("etc/.99-swap.toml", "not = [valid");

    let s = load(&[lib.clone(), etc.clone(), dir.path().join("absent.d")])
        .unwrap_or_else(|e| panic!("unexpected error: {e}"));
    assert_eq!(s.station.id, "site");
    assert_eq!(s.station.name, "from 50");
    assert_eq!(
        s.sources,
        vec![
            PathBuf::from(BUILTIN_DEFAULTS),
            lib.join("20-board.toml"),
            etc.join("10-early.toml"),
            etc.join("50-site.toml"),
        ]
    );
}

#[test]
fn a_missing_file_is_an_error_but_a_missing_directory_is_not() {
    let dir = TempDir::new();
    assert!(load(&[dir.path().join("config.d")]).is_ok());
    let file = dir.path().join("site.toml");
    match load(std::slice::from_ref(&file)) {
        Err(ConfigError::Read { path, .. }) => assert_eq!(path, file),
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn unknown_key_names_file_line_and_dotted_key() {
    let dir = TempDir::new();
    let file = dir.write(
        "config.d/50-site.toml",
        "# site\n[signaling]\nmode = \"hub\"\nurll = \"wss://hub\"\n",
    );
    let e = load(&[dir.path().join("config.d")]).expect_err("urll is not a key");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "{}:4: unknown key `signaling.urll`",
            file.display()
        )),
        "{text}"
    );
    assert!(text.contains("expected one of `mode`, `url`"), "{text}");
    assert_eq!(e.exit_code(), 78);

    // Dotted keys and arrays of tables are named the same way.
    match err(&[("site.toml", "station.nmae = \"x\"\n")]) {
        ConfigError::UnknownKey { at, key, .. } => {
            assert_eq!(at, Location::new("site.toml", 1));
            assert_eq!(key, "station.nmae");
        }
        other => panic!("unexpected {other:?}"),
    }
    match err(&[(
        "site.toml",
        "[[hub.doors]]\nid = \"a\"\ntoken_file = \"/t\"\n\n[[hub.doors]]\nid = \"b\"\ntokn_file = \"/t\"\n",
    )]) {
        ConfigError::UnknownKey { at, key, .. } => {
            assert_eq!(at, Location::new("site.toml", 7));
            assert_eq!(key, "hub.doors[1].tokn_file");
        }
        other => panic!("unexpected {other:?}"),
    }
    match err(&[("site.toml", "\n\nbogus = 1\n")]) {
        ConfigError::UnknownKey { at, key, expected } => {
            assert_eq!(at.line, 3);
            assert_eq!(key, "bogus");
            assert!(expected.contains(&"signaling".to_owned()));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn wrong_type_names_key_and_line() {
    let e = err(&[("site.toml", "[signaling]\n\nreconnect_max_ms = \"5s\"\n")]);
    assert_eq!(
        e,
        ConfigError::WrongType {
            at: Location::new("site.toml", 3),
            key: "signaling.reconnect_max_ms".into(),
            message: "found string \"5s\", expected a whole number ≥ 0".into(),
        }
    );
    match err(&[("site.toml", "[ice]\ndscp = \"yes\"\n")]) {
        ConfigError::WrongType { key, message, .. } => {
            assert_eq!(key, "ice.dscp");
            assert!(message.contains("true or false"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match err(&[("site.toml", "[signaling]\nmode = \"hubb\"\n")]) {
        ConfigError::InvalidValue { at, key, reason } => {
            assert_eq!(at.line, 2);
            assert_eq!(key, "signaling.mode");
            assert!(reason.contains("`socketio`"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match err(&[("site.toml", "[audio.opus]\nbitrate = -1\n")]) {
        ConfigError::InvalidValue { key, .. } => assert_eq!(key, "audio.opus.bitrate"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn syntax_error_names_file_and_line() {
    match err(&[("site.toml", "[station]\nid = \n")]) {
        ConfigError::Syntax { at, .. } => assert_eq!(at, Location::new("site.toml", 2)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn hub_mode_without_url_names_the_key_and_the_files() {
    let dir = TempDir::new();
    let board = dir.write("lib/20-board.toml", "[station]\nname = \"x\"\n");
    let site = dir.write(
        "etc/50-site.toml",
        "[signaling]\nmode = \"hub\"\ntoken_file = \"/etc/intercomd/hub.token\"\n",
    );
    let e = load(&[dir.path().join("lib"), dir.path().join("etc")]).expect_err("url is required");
    match &e {
        ConfigError::Missing {
            key,
            files_read,
            add_to,
            why,
        } => {
            assert_eq!(key, "signaling.url");
            assert_eq!(
                files_read,
                &vec![PathBuf::from(BUILTIN_DEFAULTS), board, site.clone()]
            );
            assert_eq!(add_to, &site);
            assert!(why.contains(&format!("{}:2", site.display())), "{why}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("`signaling.url`"), "{text}");
    assert!(
        text.contains(&format!("add it to {}", site.display())),
        "{text}"
    );

    // The token is required too, and both are reported at once.
    let e = err(&[("site.toml", "[signaling]\nmode = \"socketio\"\n")]);
    let ConfigError::Several(errors) = e else {
        panic!("expected two errors, got {e:?}");
    };
    let keys: Vec<&str> = errors
        .iter()
        .filter_map(|e| match e {
            ConfigError::Missing { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, ["signaling.url", "signaling.token_file"]);

    let s = ok(&[(
        "site.toml",
        "[signaling]\nmode = \"hub\"\nurl = \"wss://hub.example.org/ws\"\ntoken_credential = \"hub-token\"\n",
    )]);
    let remote = s.signaling.target.remote().expect("hub mode has a remote");
    assert_eq!(remote.url.expose(), "wss://hub.example.org/ws");
    assert_eq!(remote.token, SecretSource::Credential("hub-token".into()));
}

#[test]
fn cross_key_errors_point_at_the_value_set_after_the_defaults() {
    // The site lowers reconnect_max_ms below the default initial delay: the
    // error points at the site's line, not at the built-in default.
    let e = err(&[
        ("20-board.toml", "[log]\nlevel = \"debug\"\n"),
        ("50-site.toml", "[signaling]\n\n\nreconnect_max_ms = 500\n"),
    ]);
    match e {
        ConfigError::InvalidValue { at, key, reason } => {
            assert_eq!(at, Location::new("50-site.toml", 4));
            assert_eq!(key, "signaling.reconnect_max_ms");
            assert!(reason.contains("50-site.toml:4"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }

    // A value overridden in a later file is reported where it was set last.
    let e = err(&[
        ("20-board.toml", "[hub]\nlisten = \"nonsense\"\n"),
        ("50-site.toml", "\n[hub]\nlisten = \"0.0.0.0:80800\"\n"),
    ]);
    match e {
        ConfigError::InvalidValue { at, key, .. } => {
            assert_eq!(at, Location::new("50-site.toml", 3));
            assert_eq!(key, "hub.listen");
        }
        other => panic!("unexpected {other:?}"),
    }

    let e = err(&[("site.toml", "[signaling]\ndead_peer_timeout_ms = 10000\n")]);
    match e {
        ConfigError::InvalidValue { at, key, .. } => {
            assert_eq!(at, Location::new("site.toml", 2));
            assert_eq!(key, "signaling.dead_peer_timeout_ms");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The key of the one bad value in `text`.
#[test]
fn removed_keys_name_file_line_and_why_all_at_once() {
    let e = err(&[(
        "site.toml",
        "[ice]\ncandidate_pool_size = 300\nbackup_ping_interval_ms = 25000\n\
         resurface_candidates_on_transport_change = true\n\
         [audio]\ntransient_suppression = true\nmirroring = false\nforce_enable_track = \"x\"\n",
    )]);
    let ConfigError::Several(errors) = &e else {
        panic!("expected six errors, got {e:?}");
    };
    let found: Vec<(String, usize)> = errors
        .iter()
        .map(|e| match e {
            ConfigError::Removed { at, key, .. } => (key.clone(), at.line),
            other => panic!("expected a removed key, got {other:?}"),
        })
        .collect();
    assert_eq!(
        found,
        [
            ("ice.candidate_pool_size".to_owned(), 2),
            ("ice.backup_ping_interval_ms".to_owned(), 3),
            ("ice.resurface_candidates_on_transport_change".to_owned(), 4),
            ("audio.transient_suppression".to_owned(), 6),
            ("audio.mirroring".to_owned(), 7),
            ("audio.force_enable_track".to_owned(), 8),
        ]
    );
    let text = e.to_string();
    assert!(
        text.contains("site.toml:2: `ice.candidate_pool_size` was removed: the WebRTC stack does not gather candidates ahead of a call"),
        "{text}"
    );
    assert!(text.contains("delete the line"), "{text}");
}

fn invalid_key(text: &str) -> String {
    match err(&[("site.toml", text)]) {
        ConfigError::InvalidValue { key, .. } => key,
        other => panic!("expected one bad value for {text:?}, got {other:?}"),
    }
}

#[test]
fn value_rules() {
    assert_eq!(invalid_key("[station]\nid = \"door 1\"\n"), "station.id");
    assert_eq!(invalid_key("[station]\nid = \"\"\n"), "station.id");
    assert_eq!(
        invalid_key("[signaling]\nreconnect_jitter = 1.5\n"),
        "signaling.reconnect_jitter"
    );
    assert_eq!(
        invalid_key("[signaling]\nmode = \"hub\"\nurl = \"https://hub\"\ntoken_file = \"/t\"\n"),
        "signaling.url"
    );
    assert_eq!(
        invalid_key("[call]\nring_timeout_ms = 0\n"),
        "call.ring_timeout_ms"
    );
    assert_eq!(
        invalid_key("[audio.sim]\nsource = \"tone:20001\"\n"),
        "audio.sim.source"
    );
    assert_eq!(
        invalid_key("[audio.sim]\nsource = \"noise\"\n"),
        "audio.sim.source"
    );
    assert_eq!(
        invalid_key("[audio.opus]\nframe_ms = 25\n"),
        "audio.opus.frame_ms"
    );
    assert_eq!(
        invalid_key("[ice]\nbind_ips = [\"10.0.0.1\", \"eth0\"]\n"),
        "ice.bind_ips[1]"
    );
    assert_eq!(
        invalid_key("[[ice.servers]]\nurls = [\"stun.example.org:3478\"]\n"),
        "ice.servers[0].urls[0]"
    );
    assert_eq!(
        invalid_key("[ice]\ntransport_policy = \"relay\"\n"),
        "ice.transport_policy"
    );
    assert_eq!(
        invalid_key("[hardware.sim]\ncontrol_listen = \"localhost\"\n"),
        "hardware.sim.control_listen"
    );
    assert_eq!(
        invalid_key("[signaling]\ntoken_file = \"/a\"\ntoken_credential = \"b\"\n"),
        "signaling.token_file"
    );
    assert_eq!(
        invalid_key("[signaling]\ntoken_credential = \"../etc/shadow\"\n"),
        "signaling.token_credential"
    );
}

#[test]
fn turn_server_rules() {
    // TURN needs a username and a credential.
    match err(&[(
        "site.toml",
        "[[ice.servers]]\nurls = [\"turn:turn.example.org:443?transport=tcp\"]\n",
    )]) {
        ConfigError::Several(errors) => {
            let keys: Vec<String> = errors
                .iter()
                .filter_map(|e| match e {
                    ConfigError::Missing { key, .. } => Some(key.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                keys,
                ["ice.servers[0].username", "ice.servers[0].credential_file"]
            );
        }
        other => panic!("unexpected {other:?}"),
    }

    // Shared-secret TURN: a secret instead of user and password, not both;
    // the credential lifetime is bounded.
    let s = ok(&[(
        "site.toml",
        "[[ice.servers]]\nurls = [\"turn:turn.example.org:3478\"]\nsecret_file = \"/etc/credstore/turn-secret\"\ncredential_ttl_s = 3600\n",
    )]);
    let srv = &s.ice.servers[0];
    // A shared secret, its lifetime and no username.
    assert_eq!(
        srv.auth,
        IceServerAuth::SharedSecret {
            secret: SecretSource::File(PathBuf::from("/etc/credstore/turn-secret")),
            ttl: Duration::from_secs(3600),
        }
    );
    assert_eq!(
        invalid_key(
            "[[ice.servers]]\nurls = [\"turn:t:3478\"]\nusername = \"u\"\ncredential_file = \"/c\"\nsecret_file = \"/s\"\n"
        ),
        "ice.servers[0].username"
    );
    assert_eq!(
        invalid_key(
            "[[ice.servers]]\nurls = [\"turn:t:3478\"]\nsecret_file = \"/s\"\ncredential_ttl_s = 0\n"
        ),
        "ice.servers[0].credential_ttl_s"
    );
}

#[test]
fn hub_member_rules() {
    // Button groups are checked against answerers only when some are listed.
    let answerer =
        "[[hub.answerers]]\nid = \"flat-1a\"\ntoken_file = \"/t\"\ngroups = [\"flat-1a\"]\n";
    match err(&[("site.toml", answerer)]) {
        ConfigError::InvalidValue { at, key, reason } => {
            assert_eq!(at.file, PathBuf::from(BUILTIN_DEFAULTS));
            assert_eq!(key, "buttons[0].group");
            assert!(reason.contains("`residents`"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let s = ok(&[(
        "site.toml",
        &format!("{answerer}[[buttons]]\nname = \"call\"\ngroup = \"flat-1a\"\n"),
    )]);
    assert_eq!(s.hub.answerers[0].name, "flat-1a");

    // A door names the groups it may ring, each one some answerer's.
    match err(&[(
        "site.toml",
        "[[hub.doors]]\nid = \"d\"\ntoken_file = \"/t\"\n",
    )]) {
        ConfigError::Missing { key, why, .. } => {
            assert_eq!(key, "hub.doors[0].groups");
            assert!(why.contains("site.toml:1"), "{why}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match err(&[(
        "site.toml",
        "[[hub.doors]]\nid = \"d\"\ntoken_file = \"/t\"\ngroups = [\"residents\", \"shop\"]\n\
         [[hub.answerers]]\nid = \"flat-1a\"\ntoken_file = \"/t\"\ngroups = [\"residents\"]\n",
    )]) {
        ConfigError::InvalidValue { at, key, reason } => {
            assert_eq!(at, Location::new("site.toml", 4));
            assert_eq!(key, "hub.doors[0].groups[1]");
            assert!(reason.contains("`shop`"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Duplicate ids.
    match err(&[(
        "site.toml",
        "[[hub.doors]]\nid = \"a\"\ntoken_file = \"/t\"\ngroups = [\"g\"]\n[[hub.doors]]\nid = \"a\"\ntoken_file = \"/t\"\ngroups = [\"g\"]\n",
    )]) {
        ConfigError::InvalidValue { at, key, reason } => {
            assert_eq!(at.line, 6);
            assert_eq!(key, "hub.doors[1].id");
            assert!(reason.contains("site.toml:2"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn several_errors_are_reported_together() {
    let e = err(&[(
        "site.toml",
        "[station]\nid = \"a b\"\n[signaling]\nreconnect_jitter = 2.0\n",
    )]);
    let text = e.to_string();
    assert!(text.starts_with("2 configuration errors:"), "{text}");
    assert!(
        text.contains("site.toml:2: bad value for `station.id`"),
        "{text}"
    );
    assert!(
        text.contains("site.toml:4: bad value for `signaling.reconnect_jitter`"),
        "{text}"
    );
}

#[test]
fn dump_never_contains_secret_values() {
    let dir = TempDir::new();
    let token = dir.write("hub.token", "s3cr3t-token\n");
    let turn = dir.write("turn.cred", "turn-p4ss\n");
    let site = format!(
        "[signaling]\nmode = \"hub\"\nurl = \"wss://user:pw-in-url@hub.example.org/ws?token=qu3ry-secret\"\n\
         token_file = \"{}\"\n\
         [[ice.servers]]\nurls = [\"turn:turn.example.org:443?transport=tcp\"]\nusername = \"door\"\n\
         credential_file = \"{}\"\n",
        token.display(),
        turn.display()
    );
    let s = ok(&[("site.toml", &site)]);

    let secret = read_secret(
        &s.signaling
            .target
            .remote()
            .expect("token is required in hub mode")
            .token,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(secret.expose(), "s3cr3t-token");
    assert_eq!(format!("{secret} {secret:?}"), "<redacted> <redacted>");

    let dump = s.redacted_toml();
    for leaked in ["s3cr3t-token", "turn-p4ss", "pw-in-url", "qu3ry-secret"] {
        assert!(!dump.contains(leaked), "{leaked} leaked into:\n{dump}");
    }
    assert!(dump.contains(&format!("token_file = \"{}\"", token.display())));
    assert!(dump.contains("wss://<redacted>@hub.example.org/ws?token=<redacted>"));
    assert!(!format!("{s:?}").contains("s3cr3t-token"));
}

#[test]
fn dump_loads_back_to_the_same_settings() {
    let defaults = defaults().unwrap_or_else(|e| panic!("{e}"));
    let again = ok(&[("dump.toml", &defaults.redacted_toml())]);
    assert_eq!(
        Settings {
            sources: defaults.sources.clone(),
            ..again
        },
        defaults
    );

    let example = load(&[
        repo_file("config/boards/sim.toml"),
        repo_file("config/site.example.toml"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let again = ok(&[("dump.toml", &example.redacted_toml())]);
    assert_eq!(
        Settings {
            sources: example.sources.clone(),
            ..again
        },
        example
    );
}

#[test]
fn read_secret_trims_and_names_the_path() {
    let dir = TempDir::new();
    let file = dir.write("token", "abc\r\n");
    let secret = read_secret(&SecretSource::File(file)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(secret.expose(), "abc");

    let absent = dir.path().join("absent");
    let e = read_secret(&SecretSource::File(absent.clone())).expect_err("file is absent");
    assert!(matches!(&e, ConfigError::Secret { path, .. } if *path == absent));
    assert!(e.to_string().starts_with(&absent.display().to_string()));

    let empty = dir.write("empty", "\n");
    assert!(matches!(
        read_secret(&SecretSource::File(empty.clone())),
        Err(ConfigError::Secret { path, .. }) if path == empty
    ));

    // systemd credentials resolve inside $CREDENTIALS_DIRECTORY.
    dir.write("creds/turn", "xyz\n");
    let cred = SecretSource::Credential("turn".into());
    let secret =
        read_secret_in(&cred, Some(&dir.path().join("creds"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(secret.expose(), "xyz");
    assert_eq!(
        read_secret_in(&cred, None),
        Err(ConfigError::NoCredentialsDirectory {
            name: "turn".into()
        })
    );
}

#[test]
fn door_defaults_and_overrides() {
    let s = defaults().unwrap_or_else(|e| panic!("{e}"));
    let d = &s.door;
    assert_eq!(d.lock, crate::door::LockKind::FailSecure);
    assert_eq!(d.pulse, Duration::from_secs(5));
    assert_eq!(d.held_open_alarm, Duration::from_secs(60));
    assert_eq!(d.tamper_lockout, Some(Duration::from_secs(300)));
    assert_eq!(d.remote_open_interval, Duration::from_secs(3));
    assert_eq!(d.long_press, Duration::from_secs(2));
    assert_eq!(s.leds.len(), 1);
    assert_eq!(s.leds[0].name, "status");
    assert_eq!(
        s.leds[0].door_open,
        crate::door::indication::LedPattern::SlowBlink
    );
    assert!(s.inputs.is_empty());
    assert_eq!(s.gpio.relay, None);
    assert_eq!(s.gpio.debounce, Duration::from_millis(20));
    assert_eq!(s.hardware.sim.state_file, None);

    let s = ok(&[(
        "site.toml",
        "[door]\nlock = \"fail_safe\"\npulse_ms = 3000\ntamper_lockout_ms = 0\n\
         [[leds]]\nname = \"door\"\nidle = \"off\"\n",
    )]);
    assert_eq!(s.door.lock, crate::door::LockKind::FailSafe);
    assert_eq!(s.door.pulse, Duration::from_secs(3));
    assert_eq!(s.door.tamper_lockout, None);
    assert_eq!(s.leds.len(), 1);
    assert_eq!(s.leds[0].idle, crate::door::indication::LedPattern::Off);
    assert_eq!(
        s.leds[0].ringing,
        crate::door::indication::LedPattern::SlowBlink
    );
    // Round trip through the dump.
    let again = ok(&[("dump.toml", &s.redacted_toml())]);
    assert_eq!(
        Settings {
            sources: s.sources.clone(),
            ..again
        },
        s
    );
}

const GPIO_BOARD: &str = "[hardware]\nbackend = \"gpio\"\n\
[gpio.relay]\nline = \"RELAY\"\n\
[[leds]]\nname = \"status\"\nline = \"LED\"\n\
[[inputs]]\nkind = \"button\"\nbutton = \"call\"\nline = \"BTN\"\nactive_low = true\nbias = \"pull_up\"\n\
[[inputs]]\nkind = \"exit\"\nchip = \"gpiochip0\"\noffset = 4\n";

#[test]
fn a_gpio_board_loads_and_dumps_back() {
    let s = ok(&[("20-board.toml", GPIO_BOARD)]);
    assert_eq!(s.inputs.len(), 2);
    assert_eq!(s.inputs[0].debounce, Duration::from_millis(20));
    let again = ok(&[("dump.toml", &s.redacted_toml())]);
    assert_eq!(
        Settings {
            sources: s.sources.clone(),
            ..again
        },
        s
    );
}

#[test]
fn wiring_mistakes_name_the_line_and_both_places() {
    let one = |site: &str| match err(&[("20-board.toml", GPIO_BOARD), ("50-site.toml", site)]) {
        ConfigError::InvalidValue { at, key, reason } => (at.to_string(), key, reason),
        other => panic!("expected one bad value for {site:?}, got {other}"),
    };
    // Same line twice as inputs.
    let (at, key, reason) = one(
        "[[inputs]]\nkind = \"button\"\nbutton = \"call\"\nline = \"BTN\"\n\
         [[inputs]]\nkind = \"tamper\"\nline = \"BTN\"\n",
    );
    assert_eq!(at, "50-site.toml:7");
    assert_eq!(key, "inputs[1]");
    assert_eq!(
        reason,
        "line `BTN` is already used by `inputs[0]` (50-site.toml:4)"
    );
    // An input on the relay's output line.
    let (at, key, reason) = one("[[inputs]]\nkind = \"exit\"\nline = \"RELAY\"\n");
    assert_eq!(at, "50-site.toml:3");
    assert_eq!(key, "inputs[0]");
    assert_eq!(
        reason,
        "line `RELAY` is an output of `gpio.relay` (20-board.toml:4) and cannot also be an input here"
    );
    // By chip and offset too.
    let (_, key, reason) = one("[[leds]]\nname = \"status\"\nchip = \"gpiochip0\"\noffset = 4\n");
    assert_eq!(key, "inputs[1]");
    assert!(
        reason.contains("gpiochip0 offset 4 is an output of `leds[0]`"),
        "{reason}"
    );
    // Half a reference, a button input for no button, an unknown kind.
    let (_, key, _) = one("[[inputs]]\nkind = \"exit\"\nchip = \"gpiochip0\"\n");
    assert_eq!(key, "inputs[0].chip");
    let (_, key, reason) = one("[[inputs]]\nkind = \"button\"\nbutton = \"nope\"\nline = \"B2\"\n");
    assert_eq!(key, "inputs[0].button");
    assert!(reason.contains("no [[buttons]] entry is named `nope`"));
    let (_, key, _) = one("[[inputs]]\nkind = \"doorbell\"\nline = \"B2\"\n");
    assert_eq!(key, "inputs[0].kind");
    let (_, key, _) = one("[[inputs]]\nkind = \"exit\"\nline = \"B2\"\nbias = \"up\"\n");
    assert_eq!(key, "inputs[0].bias");
}

#[test]
fn a_gpio_board_needs_a_relay_and_led_lines() {
    let e = err(&[("20-board.toml", "[hardware]\nbackend = \"gpio\"\n")]).to_string();
    assert!(e.contains("missing required key `gpio.relay.line`"), "{e}");
    assert!(e.contains("missing required key `leds[0].line`"), "{e}");
}

#[test]
fn the_example_gpio_board_loads() {
    let s = load(&[repo_file("config/boards/gpio-example.toml")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.hardware.backend, HardwareBackend::Gpio);
    assert_eq!(s.inputs.len(), 5);
    assert_eq!(s.leds.len(), 2);
    assert!(s.gpio.relay.is_some());
}

#[test]
fn audio_device_sections_have_defaults_and_are_checked() {
    let invalid_key = |text: &str| match err(&[("site.toml", text)]) {
        ConfigError::InvalidValue { key, .. } => key,
        other => panic!("expected one bad value for {text:?}, got {other:?}"),
    };
    let s = ok(&[]);
    let al = &s.audio.alsa;
    assert_eq!(al.capture_device, "default");
    assert_eq!(al.playback_device, "default");
    assert_eq!(al.period, Duration::from_millis(10));
    assert_eq!(al.buffer, Duration::from_millis(40));
    assert_eq!(al.pacing, AlsaPacing::Device);
    assert_eq!(al.capture_control, None);
    assert_eq!(s.audio.processing.echo_delay, None);
    assert_eq!(s.audio.tones.ringback_hz, 425);

    let s = ok(&[(
        "site.toml",
        "[audio.alsa]\ncapture_device = \"plughw:1\"\npacing = \"timer\"\ncapture_control = \"Mic\"\ncapture_volume_pct = 60\n[audio.processing]\necho_delay_ms = 30\n",
    )]);
    assert_eq!(s.audio.alsa.capture_device, "plughw:1");
    assert_eq!(s.audio.alsa.pacing, AlsaPacing::Timer);
    assert_eq!(
        s.audio.alsa.capture_control,
        Some(MixerControl {
            name: "Mic".into(),
            volume_pct: 60
        })
    );
    assert_eq!(
        s.audio.processing.echo_delay,
        Some(Duration::from_millis(30))
    );

    assert_eq!(
        invalid_key("[audio.alsa]\npacing = \"fast\"\n"),
        "audio.alsa.pacing"
    );
    assert_eq!(
        invalid_key("[audio.alsa]\nperiod_ms = 20\nbuffer_ms = 30\n"),
        "audio.alsa.buffer_ms"
    );
    assert_eq!(
        invalid_key("[audio.processing]\nnoise_suppression_level = \"max\"\n"),
        "audio.processing.noise_suppression_level"
    );
    assert_eq!(
        invalid_key("[audio.tones]\nvolume_pct = 101\n"),
        "audio.tones.volume_pct"
    );
}

#[test]
fn bluetooth_defaults_checks_and_dump() {
    let s = ok(&[]);
    let b = &s.bluetooth;
    assert!(!b.enabled);
    assert_eq!(b.pairing, BluetoothPairing::JustWorks);
    assert_eq!(b.pairing_timeout, Duration::from_secs(120));
    assert!(b.prefer_msbc);
    assert_eq!(b.backend, BluetoothBackend::Bluez);
    assert_eq!(b.adapter, None);
    assert!(b.discoverable);
    assert_eq!(
        s.station.control_socket.as_deref(),
        Some(std::path::Path::new("/run/intercomd/control.sock"))
    );

    let s = ok(&[(
        "site.toml",
        "[station]\ncontrol_socket = \"\"\n\
         [bluetooth]\nenabled = true\npairing = \"pin\"\npin_file = \"/etc/intercomd/bt.pin\"\n\
         pairing_timeout_ms = 30000\nprefer_msbc = false\nbackend = \"sim\"\nadapter = \"hci1\"\n\
         discoverable = false\n",
    )]);
    assert_eq!(s.station.control_socket, None);
    let b = &s.bluetooth;
    assert!(b.enabled);
    assert_eq!(b.backend, BluetoothBackend::Sim);
    assert_eq!(b.adapter.as_deref(), Some("hci1"));
    assert!(!b.discoverable);
    assert_eq!(
        b.pairing,
        BluetoothPairing::Pin(SecretSource::File("/etc/intercomd/bt.pin".into()))
    );
    assert_eq!(b.pairing_timeout, Duration::from_secs(30));
    assert!(!b.prefer_msbc);
    let dump = s.redacted_toml();
    assert!(dump.contains(
        "[bluetooth]\nenabled = true\nbackend = \"sim\"\nadapter = \"hci1\"\ndiscoverable = false\n\
         pairing = \"pin\"\npin_file = "
    ));
    assert!(
        dump.contains("[station]\nid = \"door-1\"\nname = \"Front door\"\ncontrol_socket = \"\"\n")
    );
    let again = ok(&[("dump.toml", &dump)]);
    assert_eq!(
        Settings {
            sources: s.sources.clone(),
            ..again
        },
        s
    );

    let invalid_key = |text: &str| match err(&[("site.toml", text)]) {
        ConfigError::InvalidValue { key, .. } => key,
        other => panic!("expected one bad value for {text:?}, got {other:?}"),
    };
    assert_eq!(
        invalid_key("[bluetooth]\npairing = \"numeric\"\n"),
        "bluetooth.pairing"
    );
    assert_eq!(
        invalid_key("[bluetooth]\nbackend = \"ofono\"\n"),
        "bluetooth.backend"
    );
    for bad in ["hci", "hcix", "usb0", "hci0 ", "hci1234"] {
        assert_eq!(
            invalid_key(&format!("[bluetooth]\nadapter = {bad:?}\n")),
            "bluetooth.adapter",
            "{bad:?}"
        );
    }
    assert_eq!(
        invalid_key("[bluetooth]\npairing_timeout_ms = 999\n"),
        "bluetooth.pairing_timeout_ms"
    );
    assert_eq!(
        invalid_key("[bluetooth]\npairing_timeout_ms = 600001\n"),
        "bluetooth.pairing_timeout_ms"
    );
    // A PIN file without PIN pairing would suggest a protection not in force.
    assert_eq!(
        invalid_key("[bluetooth]\npin_file = \"/etc/intercomd/bt.pin\"\n"),
        "bluetooth.pin_file"
    );
    match err(&[("site.toml", "[bluetooth]\npairing = \"pin\"\n")]) {
        ConfigError::Missing { key, add_to, .. } => {
            assert_eq!(key, "bluetooth.pin_file");
            assert_eq!(add_to, PathBuf::from("site.toml"));
        }
        other => panic!("expected the PIN file to be missing, got {other:?}"),
    }
    match err(&[("site.toml", "[bluetooth]\npin = \"0000\"\n")]) {
        ConfigError::UnknownKey { key, .. } => assert_eq!(key, "bluetooth.pin"),
        other => panic!("a PIN in the TOML must be refused, got {other:?}"),
    }
}

#[test]
fn hub_tls_modes_validate_and_name_the_key() {
    use crate::hub::tls::TlsSource;
    let s = ok(&[(
        "site.toml",
        "[hub.tls]\nmode = \"files\"\ncert_file = \"/etc/ssl/door.pem\"\nkey_file = \"/etc/ssl/door.key\"\nreload_check_ms = 2000\n",
    )]);
    assert_eq!(
        s.hub.tls,
        Some(TlsSource::Files {
            cert: "/etc/ssl/door.pem".into(),
            key: "/etc/ssl/door.key".into(),
            reload_check: Duration::from_secs(2)
        })
    );
    let e = err(&[("site.toml", "[hub.tls]\nmode = \"files\"\n")]).to_string();
    assert!(
        e.contains("hub.tls.cert_file") && e.contains("hub.tls.key_file"),
        "{e}"
    );

    let s = ok(&[(
        "site.toml",
        "[hub.tls]\nmode = \"acme\"\n[hub.tls.acme]\ndomains = [\"Door.Example.net\"]\ncontact = [\"mailto:ops@example.net\"]\n",
    )]);
    match s.hub.tls {
        Some(TlsSource::Acme(a)) => {
            assert_eq!(a.domains, vec!["door.example.net".to_owned()]);
            assert_eq!(a.renew_before, Duration::from_secs(30 * 86400));
            assert!(a.directory_url.starts_with("https://"));
        }
        other => panic!("expected ACME, got {other:?}"),
    }
    let e = err(&[("site.toml", "[hub.tls]\nmode = \"acme\"\n")]).to_string();
    assert!(e.contains("hub.tls.acme.domains"), "{e}");
    let e = err(&[(
        "site.toml",
        "[hub.tls]\nmode = \"acme\"\n[hub.tls.acme]\ndomains = [\"10.0.0.1\"]\ncontact = [\"ops@example.net\"]\ndirectory_url = \"http://ca.example/dir\"\n",
    )])
    .to_string();
    assert!(e.contains("hub.tls.acme.domains[0]"), "{e}");
    assert!(e.contains("hub.tls.acme.contact[0]"), "{e}");
    assert!(e.contains("hub.tls.acme.directory_url"), "{e}");

    let s = ok(&[("site.toml", "[hub.tls]\nmode = \"off\"\n")]);
    assert_eq!(s.hub.tls, None);
    // A redirect to HTTPS without HTTPS makes no sense.
    let e = err(&[(
        "site.toml",
        "[hub]\nredirect_listen = \"0.0.0.0:8080\"\n[hub.tls]\nmode = \"off\"\n",
    )])
    .to_string();
    assert!(e.contains("hub.redirect_listen"), "{e}");
    // Plain HTTP only on loopback.
    let e = err(&[("site.toml", "[hub]\nloopback_listen = \"0.0.0.0:8080\"\n")]).to_string();
    assert!(
        e.contains("hub.loopback_listen") && e.contains("loopback"),
        "{e}"
    );
    let s = ok(&[("site.toml", "[hub]\nloopback_listen = \"127.0.0.1:8080\"\n")]);
    assert_eq!(
        s.hub.loopback_listen,
        Some("127.0.0.1:8080".parse().unwrap())
    );
}

#[test]
fn plain_ws_to_another_host_is_refused_unless_allowed() {
    let remote = |url: &str, extra: &str| {
        format!(
            "[signaling]\nmode = \"hub\"\nurl = \"{url}\"\ntoken_credential = \"door-token\"\n{extra}"
        )
    };
    let e = err(&[("site.toml", &remote("ws://10.0.0.5:8080/ws", ""))]).to_string();
    assert!(
        e.contains("signaling.url") && e.contains("in clear") && e.contains("site.toml:3"),
        "{e}"
    );
    ok(&[("site.toml", &remote("ws://127.0.0.1:8080/ws", ""))]);
    ok(&[("site.toml", &remote("ws://localhost:8080/ws", ""))]);
    ok(&[("site.toml", &remote("ws://[::1]:8080/ws", ""))]);
    ok(&[("site.toml", &remote("wss://hub.example.net/ws", ""))]);
    ok(&[(
        "site.toml",
        &remote("ws://10.0.0.5:8080/ws", "allow_insecure_ws = true\n"),
    )]);
}

#[test]
fn hub_public_url_is_an_optional_https_url() {
    assert_eq!(ok(&[]).hub.public_url, None);
    assert_eq!(
        ok(&[("site.toml", "[hub]\npublic_url = \"\"\n")])
            .hub
            .public_url,
        None
    );
    let s = ok(&[(
        "site.toml",
        "[hub]\npublic_url = \"https://door.example.net:8443/\"\n",
    )]);
    assert_eq!(
        s.hub.public_url.as_deref(),
        Some("https://door.example.net:8443/")
    );
    let again = ok(&[("dump.toml", &s.redacted_toml())]);
    assert_eq!(again.hub.public_url, s.hub.public_url);

    for bad in [
        "http://door.example.net/",
        "door.example.net",
        "https://",
        "https:///path",
        "https://door example.net/",
        "https://door.example.net/\\\"><script>",
    ] {
        match err(&[("site.toml", &format!("[hub]\n\npublic_url = {bad:?}\n"))]) {
            ConfigError::InvalidValue { at, key, reason } => {
                assert_eq!(at.line, 3, "{bad}");
                assert_eq!(key, "hub.public_url");
                assert!(reason.contains("https://"), "{reason}");
            }
            other => panic!("unexpected {other:?} for {bad}"),
        }
    }
}

#[test]
fn an_answerer_may_call_the_door_only_when_configured() {
    let entry = |extra: &str| {
        format!(
            "[[hub.answerers]]\nid = \"flat-1a\"\ntoken_file = \"/t\"\ngroups = [\"residents\"]\n{extra}\
             [[hub.answerers]]\nid = \"flat-2b\"\ntoken_file = \"/t\"\ngroups = [\"residents\"]\n"
        )
    };
    let s = ok(&[("site.toml", &entry(""))]);
    assert!(!s.hub.answerers[0].call_door, "off unless configured");
    let s = ok(&[("site.toml", &entry("call_door = true\n"))]);
    assert!(s.hub.answerers[0].call_door);
    assert!(!s.hub.answerers[1].call_door);
    // The dump shows it and loads back to the same settings.
    let dump = s.redacted_toml();
    assert!(dump.contains("call_door = true"), "{dump}");
    assert!(dump.contains("call_door = false"), "{dump}");
    let again = ok(&[("dump.toml", &dump)]);
    assert_eq!(again.hub.answerers, s.hub.answerers);
    match err(&[("site.toml", &entry("call_door = \"yes\"\n"))]) {
        ConfigError::WrongType { at, key, message } => {
            assert_eq!(at, Location::new("site.toml", 5));
            assert_eq!(key, "hub.answerers[0].call_door");
            assert!(message.contains("true or false"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn quiet_hours_are_parsed_dumped_and_refused_by_file_line_and_key() {
    use crate::hub::quiet::WeekMinute;
    let entry = |extra: &str| {
        format!(
            "[[hub.answerers]]\nid = \"flat-1a\"\ntoken_file = \"/t\"\ngroups = [\"residents\"]\n{extra}"
        )
    };
    let s = ok(&[("site.toml", &entry(""))]);
    assert!(
        s.hub.answerers[0].quiet_hours.is_empty(),
        "none unless configured"
    );
    let s = ok(&[(
        "site.toml",
        &entry("quiet_hours = [\"mon-fri 22:00-07:00\", \"sat,sun 23:00-08:30\"]\n"),
    )]);
    let q = &s.hub.answerers[0].quiet_hours;
    assert!(q.contains(WeekMinute::new(0, 23, 0)));
    assert!(
        q.contains(WeekMinute::new(5, 6, 0)),
        "Friday night runs into Saturday"
    );
    assert!(!q.contains(WeekMinute::new(2, 12, 0)));
    let dump = s.redacted_toml();
    assert!(
        dump.contains(r#"quiet_hours = ["mon-fri 22:00-07:00", "sat,sun 23:00-08:30"]"#),
        "{dump}"
    );
    let again = ok(&[("dump.toml", &dump)]);
    assert_eq!(again.hub.answerers, s.hub.answerers);
    match err(&[(
        "site.toml",
        &entry("quiet_hours = [\n  \"daily 00:00-24:00\",\n  \"weekdays 22:00-07:00\",\n]\n"),
    )]) {
        ConfigError::InvalidValue { at, key, reason } => {
            assert_eq!(at, Location::new("site.toml", 7));
            assert_eq!(key, "hub.answerers[0].quiet_hours[1]");
            assert!(reason.contains("not a day"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match err(&[("site.toml", &entry("quiet_hours = [\"mon 22:00-25:00\"]\n"))]) {
        ConfigError::InvalidValue { key, reason, .. } => {
            assert_eq!(key, "hub.answerers[0].quiet_hours[0]");
            assert!(reason.contains("time of day"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn hub_push_defaults_and_checks() {
    let s = ok(&[]);
    assert!(s.hub.push.enabled);
    assert_eq!(s.hub.push.subject, None);
    assert_eq!(s.hub.push.ca_file, None);
    let s = ok(&[(
        "site.toml",
        "[hub.push]\nenabled = false\nsubject = \"mailto:admin@example.net\"\nca_file = \"/etc/ca.pem\"\n",
    )]);
    assert!(!s.hub.push.enabled);
    assert_eq!(
        s.hub.push.subject.as_deref(),
        Some("mailto:admin@example.net")
    );
    let dump = s.redacted_toml();
    assert!(dump.contains("[hub.push]\nenabled = false\nsubject = \"mailto:admin@example.net\"\nca_file = \"/etc/ca.pem\""), "{dump}");
    assert_eq!(ok(&[("dump.toml", &dump)]).hub.push, s.hub.push);
    match err(&[(
        "site.toml",
        "[hub.push]\n\nsubject = \"admin@example.net\"\n",
    )]) {
        ConfigError::InvalidValue { at, key, reason } => {
            assert_eq!(at, Location::new("site.toml", 3));
            assert_eq!(key, "hub.push.subject");
            assert!(reason.contains("mailto:"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Hub tokens: long enough for 128 bits, one per member, in private files.
#[test]
fn hub_tokens_must_be_strong_unique_and_private() {
    let dir = TempDir::new();
    let good = dir.write("door", "Zq3x9V1mK8pT2rL5wN7yB4\n");
    let good2 = dir.write("flat", "0123456789abcdef0123456789abcdef\n");
    let short = dir.write("short", "x\n");
    let hex_short = dir.write("hexshort", "0123456789abcdef0123456789abcde\n");
    let spaced = dir.write("spaced", "correct horse battery staple xx\n");
    let open = dir.write("open", "Ab3x9V1mK8pT2rL5wN7yB4cD\n");
    chmod(&open, 0o644);
    let group = dir.write("group", "Cd3x9V1mK8pT2rL5wN7yB4cD\n");
    chmod(&group, 0o640);
    // Group-readable is refused for any group but intercomd's own: give
    // the file another one (the `nogroup` id) when we are allowed to.
    let c_path = std::ffi::CString::new(group.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: a valid NUL-terminated path; -1 keeps the owner.
    let regrouped = unsafe { libc::chown(c_path.as_ptr(), u32::MAX, 65534) } == 0;
    let hub = |door: &Path, flat: &Path| {
        format!(
            "[[hub.doors]]\nid = \"door-1\"\ngroups = [\"residents\"]\ntoken_file = \"{}\"\n\n\
             [[hub.answerers]]\nid = \"flat-1a\"\ntoken_file = \"{}\"\ngroups = [\"residents\"]\n",
            door.display(),
            flat.display()
        )
    };
    let errors = |toml: String| -> Vec<(String, String)> {
        let e = load_from_strs(&[("site.toml", &toml)]).expect_err("refused");
        let list = match e {
            ConfigError::Several(v) => v,
            e => vec![e],
        };
        list.into_iter()
            .map(|e| match &e {
                ConfigError::InvalidValue { key, at, .. } => {
                    assert_eq!(at.file, Path::new("site.toml"), "{e}");
                    (key.clone(), e.to_string())
                }
                e => panic!("{e}"),
            })
            .collect()
    };
    load_from_strs(&[("site.toml", &hub(&good, &good2))]).unwrap_or_else(|e| panic!("{e}"));
    for (flat, why) in [
        (&short, "1 characters (6 bits)"),
        (&hex_short, "31 characters (124 bits); at least 32"),
        (&spaced, "outside A-Z"),
        (&good, "the same token as `hub.doors[0].token_file`"),
        (&open, "readable by everyone (mode 0644)"),
        (&group, "(mode 0640)"),
    ] {
        if flat == &group && !regrouped {
            eprintln!("not root: the group-readable case is not checked");
            continue;
        }
        let e = errors(hub(&good, flat));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "hub.answerers[0].token_file");
        assert!(e[0].1.contains(why), "{}", e[0].1);
        assert!(e[0].1.contains(&flat.display().to_string()), "{}", e[0].1);
        // The token itself is never in the message.
        assert!(
            !e[0].1.contains("Zq3x9V1m") && !e[0].1.contains("horse"),
            "{}",
            e[0].1
        );
    }
    // Any secret file, not only hub tokens: the station's own token.
    let e = errors(format!(
        "[signaling]\nmode = \"hub\"\nurl = \"wss://hub.example.org/ws\"\ntoken_file = \"{}\"\n",
        open.display()
    ));
    assert_eq!(e[0].0, "signaling.token_file");
}
