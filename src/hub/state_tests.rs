use super::*;

fn p(id: &str, token: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        name: id.to_uppercase(),
        token: token.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        call_door: false,
        quiet_hours: Default::default(),
    }
}

/// The route key of the hub and of the same hub after a restart.
const ROUTE_KEY: &[u8] = b"route key of this test hub 32 b.";

fn hub() -> HubState {
    let mut h = HubState::new(hub_settings());
    h.set_route_key(ROUTE_KEY);
    h
}

fn hub_settings() -> HubSettings {
    HubSettings {
        doors: vec![
            p("door-1", "dt", &["residents", "caretaker", "nobody"]),
            p("door-2", "dt2", &["residents", "caretaker", "nobody"]),
        ],
        answerers: vec![
            p("a", "at", &["residents"]),
            p("b", "bt", &["residents"]),
            p("c", "ct", &["caretaker"]),
        ],
        ice_servers: vec![],
        max_message_bytes: 1024,
        hello_timeout: Duration::from_secs(10),
        ring_timeout: Duration::from_secs(30),
        own_door: None,
    }
}

fn sends(actions: &[Action]) -> Vec<(ConnId, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, m) => Some((*c, m.clone())),
            _ => None,
        })
        .collect()
}

fn cid(s: &str) -> CallId {
    CallId::new(s).expect("valid test id")
}

struct T {
    h: HubState,
    now: Instant,
}

const DOOR: ConnId = 1;
const A: ConnId = 2;
const B: ConnId = 3;
const C: ConnId = 4;

impl T {
    fn new() -> T {
        let mut t = T {
            h: hub(),
            now: Instant::now(),
        };
        for (conn, role, tok) in [
            (DOOR, "door", "dt"),
            (A, "answerer", "at"),
            (B, "answerer", "bt"),
            (C, "answerer", "ct"),
        ] {
            t.h.connected(conn, format!("s{conn}"), t.now);
            let out = t.text(
                conn,
                &format!(r#"{{"type":"hello","v":1,"role":"{role}","token":"{tok}"}}"#),
            );
            assert!(
                matches!(sends(&out)[0].1, Message::Welcome { .. }),
                "{out:?}"
            );
        }
        t
    }

    fn text(&mut self, conn: ConnId, s: &str) -> Vec<Action> {
        self.h.handle_text(conn, s)
    }

    fn msg(&mut self, conn: ConnId, m: Message) -> Vec<(ConnId, Message)> {
        sends(&self.h.handle_message(conn, m))
    }

    fn ring(&mut self) -> Vec<(ConnId, Message)> {
        self.msg(
            DOOR,
            Message::Ring {
                call_id: cid("c1"),
                group: "residents".into(),
                door: None,
            },
        )
    }
}

fn err_code(out: &[(ConnId, Message)]) -> Option<ErrorCode> {
    out.iter().find_map(|(_, m)| match m {
        Message::Error { code, .. } => Some(*code),
        _ => None,
    })
}

#[test]
fn welcome_carries_identity_from_config_not_from_client() {
    let mut h = hub();
    h.connected(9, "s9".into(), Instant::now());
    let out = sends(&h.handle_text(
        9,
        r#"{"type":"hello","v":1,"role":"answerer","token":"at","name":"I am the admin"}"#,
    ));
    match &out[0].1 {
        Message::Welcome {
            id, name, groups, ..
        } => {
            assert_eq!(id, "a");
            assert_eq!(name, "A");
            assert_eq!(groups, &vec!["residents".to_string()]);
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn authentication_failures() {
    let mut h = hub();
    let now = Instant::now();
    for (i, hello) in [
        r#"{"type":"hello","v":1,"role":"door","token":"wrong"}"#,
        r#"{"type":"hello","v":1,"role":"door","token":""}"#,
        // An answerer's token does not make a door.
        r#"{"type":"hello","v":1,"role":"door","token":"at"}"#,
    ]
    .iter()
    .enumerate()
    {
        let c = 10 + i as u64;
        h.connected(c, "s".into(), now);
        let out = h.handle_text(c, hello);
        assert_eq!(err_code(&sends(&out)), Some(ErrorCode::AuthFailed));
        assert!(out.contains(&Action::Close(c, 1008, "authentication failed")));
        // The token never appears in a log action.
        for a in &out {
            if let Action::Log { text: s, .. } = a {
                assert!(!s.contains("wrong") && !s.contains("\"at\""), "{s}");
            }
        }
    }
    h.connected(20, "s".into(), now);
    let out = h.handle_text(20, r#"{"type":"hello","v":3,"role":"door","token":"dt"}"#);
    assert_eq!(err_code(&sends(&out)), Some(ErrorCode::UnsupportedVersion));
    assert!(out.contains(&Action::Close(20, 1008, "unsupported protocol version")));
}

#[test]
fn nothing_before_hello_and_hello_timeout() {
    let mut h = hub();
    let t0 = Instant::now();
    h.connected(5, "s".into(), t0);
    let out = sends(&h.handle_text(5, r#"{"type":"accept","call_id":"c1"}"#));
    assert_eq!(err_code(&out), Some(ErrorCode::NotAuthenticated));
    assert!(h.handle_tick(t0 + Duration::from_secs(9)).is_empty());
    assert_eq!(
        h.handle_tick(t0 + Duration::from_secs(10)),
        vec![Action::Close(5, 4001, "no hello in time")]
    );
}

#[test]
fn ring_fans_out_to_the_group_and_first_accept_wins() {
    let mut t = T::new();
    let out = t.ring();
    let rung: Vec<ConnId> = out
        .iter()
        .filter(|(_, m)| matches!(m, Message::Ring { .. }))
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(rung, vec![A, B], "C is in another group");
    assert!(out.contains(&(
        DOOR,
        Message::Ringing {
            call_id: cid("c1"),
            answerers: 2
        }
    )));
    match &out[0].1 {
        Message::Ring { door: Some(d), .. } => assert_eq!(d.id, "door-1"),
        m => panic!("{m:?}"),
    }

    let out = t.msg(B, Message::Accept { call_id: cid("c1") });
    assert!(out.contains(&(
        DOOR,
        Message::Accepted {
            call_id: cid("c1"),
            answerer: PeerInfo {
                id: "b".into(),
                name: "B".into()
            },
            route: t.h.route_proof("door-1", &cid("c1"), "b", "residents"),
        }
    )));
    assert!(out.contains(&(
        A,
        Message::Taken {
            call_id: cid("c1"),
            by: "B".into()
        }
    )));
    // A late accept is told the call was taken.
    let out = t.msg(A, Message::Accept { call_id: cid("c1") });
    assert_eq!(
        out,
        vec![(
            A,
            Message::Taken {
                call_id: cid("c1"),
                by: "B".into()
            }
        )]
    );
    // An outsider cannot accept.
    let out = t.msg(C, Message::Accept { call_id: cid("c1") });
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
}

#[test]
fn media_messages_flow_only_between_the_two_parties() {
    let mut t = T::new();
    t.ring();
    t.msg(A, Message::Accept { call_id: cid("c1") });
    let offer = Message::Offer {
        call_id: cid("c1"),
        sdp: "v=0".into(),
    };
    assert_eq!(t.msg(DOOR, offer.clone()), vec![(A, offer.clone())]);
    let answer = Message::Answer {
        call_id: cid("c1"),
        sdp: "v=0".into(),
    };
    assert_eq!(t.msg(A, answer.clone()), vec![(DOOR, answer)]);
    // The loser and outsiders may not inject anything.
    for conn in [B, C] {
        let out = t.msg(conn, offer.clone());
        assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted), "{conn}");
        let out = t.msg(
            conn,
            Message::Hangup {
                call_id: cid("c1"),
                reason: "x".into(),
            },
        );
        assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
    }
    let cand = Message::Candidate {
        call_id: cid("c1"),
        candidate: None,
    };
    assert_eq!(t.msg(A, cand.clone()), vec![(DOOR, cand)]);
    let hang = Message::Hangup {
        call_id: cid("c1"),
        reason: "normal".into(),
    };
    assert_eq!(t.msg(A, hang.clone()), vec![(DOOR, hang.clone())]);
    assert_eq!(t.h.calls_in_progress(), 0);
    assert_eq!(err_code(&t.msg(A, hang)), Some(ErrorCode::UnknownCall));
}

#[test]
fn decline_by_everyone_tells_the_door() {
    let mut t = T::new();
    t.ring();
    assert!(t.msg(A, Message::Decline { call_id: cid("c1") }).is_empty());
    let out = t.msg(B, Message::Decline { call_id: cid("c1") });
    assert_eq!(out, vec![(DOOR, Message::Declined { call_id: cid("c1") })]);
}

#[test]
fn cancel_reaches_those_still_ringing() {
    let mut t = T::new();
    t.ring();
    t.msg(A, Message::Decline { call_id: cid("c1") });
    let out = t.msg(
        DOOR,
        Message::Cancel {
            call_id: cid("c1"),
            reason: "timeout".into(),
        },
    );
    assert_eq!(
        out,
        vec![(
            B,
            Message::Cancel {
                call_id: cid("c1"),
                reason: "timeout".into()
            }
        )]
    );
}

#[test]
fn nobody_online_gives_zero_answerers() {
    let mut t = T::new();
    let out = t.msg(
        DOOR,
        Message::Ring {
            call_id: cid("c1"),
            group: "nobody".into(),
            door: None,
        },
    );
    assert_eq!(
        out,
        vec![(
            DOOR,
            Message::Ringing {
                call_id: cid("c1"),
                answerers: 0
            }
        )]
    );
}

#[test]
fn repeated_ring_is_harmless_and_ids_are_not_shared() {
    let mut t = T::new();
    t.ring();
    assert!(t.ring().is_empty());
    // Another door cannot hijack the id.
    t.h.connected(7, "s7".into(), t.now);
    t.text(7, r#"{"type":"hello","v":1,"role":"door","token":"dt2"}"#);
    let out = t.msg(
        7,
        Message::Ring {
            call_id: cid("c1"),
            group: "residents".into(),
            door: None,
        },
    );
    assert_eq!(err_code(&out), Some(ErrorCode::BadState));
}

#[test]
fn roles_are_enforced() {
    let mut t = T::new();
    let out = t.msg(
        A,
        Message::Ring {
            call_id: cid("c1"),
            group: "residents".into(),
            door: None,
        },
    );
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
    let out = t.msg(DOOR, Message::Accept { call_id: cid("c1") });
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
    let out = t.msg(
        A,
        Message::Register {
            groups: vec!["caretaker".into()],
        },
    );
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
}

#[test]
fn register_narrows_ringing() {
    let mut t = T::new();
    let out = t.msg(A, Message::Register { groups: vec![] });
    assert_eq!(out, vec![(A, Message::Registered { groups: vec![] })]);
    let rung: Vec<ConnId> = t
        .ring()
        .iter()
        .filter(|(_, m)| matches!(m, Message::Ring { .. }))
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(rung, vec![B]);
}

#[test]
fn malformed_frames_get_error_replies() {
    let mut t = T::new();
    for (frame, code) in [
        ("not json", ErrorCode::BadJson),
        (r#"{"type":"warp"}"#, ErrorCode::UnknownType),
        (r#"{"type":"accept"}"#, ErrorCode::BadMessage),
        (
            r#"{"type":"accept","call_id":"bad id!"}"#,
            ErrorCode::BadMessage,
        ),
        (r#"{"no":"type"}"#, ErrorCode::BadMessage),
    ] {
        let out = t.text(A, frame);
        assert_eq!(err_code(&sends(&out)), Some(code), "{frame}");
        assert!(!out.iter().any(|a| matches!(a, Action::Close(..))));
    }
    let big = format!(r#"{{"type":"ping","x":"{}"}}"#, "y".repeat(2000));
    let out = t.text(A, &big);
    assert_eq!(err_code(&sends(&out)), Some(ErrorCode::TooLarge));
    assert!(out.contains(&Action::Close(A, 1009, "message too big")));
    let out = t.h.handle_binary(A);
    assert_eq!(err_code(&sends(&out)), Some(ErrorCode::BadMessage));
}

#[test]
fn reconnect_replaces_the_old_connection_and_routing_follows() {
    let mut t = T::new();
    t.ring();
    t.msg(A, Message::Accept { call_id: cid("c1") });
    // A reconnects on a new connection.
    t.h.connected(42, "s42".into(), t.now);
    let out = t.text(
        42,
        r#"{"type":"hello","v":1,"role":"answerer","token":"at"}"#,
    );
    assert!(out.contains(&Action::Close(A, 4000, "replaced by a newer connection")));
    t.h.disconnected(A);
    let hang = Message::Hangup {
        call_id: cid("c1"),
        reason: "normal".into(),
    };
    assert_eq!(t.msg(DOOR, hang.clone()), vec![(42, hang)]);
}

/// The route proof the door got with `accepted` (or `call_door`).
fn route_of(out: &[(ConnId, Message)]) -> String {
    out.iter()
        .find_map(|(c, m)| match m {
            Message::Accepted { route, .. } | Message::CallDoor { route, .. } if *c == DOOR => {
                route.clone()
            }
            _ => None,
        })
        .expect("the door gets a route proof")
}

fn resume(call: &str, answerer: &str, group: Option<&str>, route: Option<&str>) -> Message {
    Message::Resume {
        call_id: cid(call),
        answerer: Some(answerer.into()),
        group: group.map(str::to_owned),
        route: route.map(str::to_owned),
    }
}

#[test]
fn resume_after_hub_restart_rebuilds_routes() {
    let mut before = T::new();
    before.ring();
    let route = route_of(&before.msg(A, Message::Accept { call_id: cid("c1") }));

    let mut t = T::new(); // the hub restarted: it knows no calls
    let out = t.msg(DOOR, resume("c1", "a", Some("residents"), Some(&route)));
    assert_eq!(out, vec![(DOOR, Message::Resumed { call_id: cid("c1") })]);
    let hang = Message::Hangup {
        call_id: cid("c1"),
        reason: "normal".into(),
    };
    assert_eq!(t.msg(A, hang.clone()), vec![(DOOR, hang)]);

    let out = t.msg(DOOR, resume("c10", "ghost", None, None));
    assert_eq!(err_code(&out), Some(ErrorCode::UnknownPeer));

    // A forgotten ringing call rings again, quietly.
    let out = t.msg(
        DOOR,
        Message::Resume {
            call_id: cid("c11"),
            answerer: None,
            group: Some("residents".into()),
            route: None,
        },
    );
    let rung = out
        .iter()
        .filter(|(_, m)| matches!(m, Message::Ring { .. }))
        .count();
    assert_eq!(rung, 2);
    assert!(
        !out.iter()
            .any(|(_, m)| matches!(m, Message::Ringing { .. }))
    );
}

/// A door token, then the same padded with NULs, cut short, and a prefix:
/// only the exact token authenticates.
#[test]
fn only_the_exact_token_authenticates() {
    let tok = "Zq3x9V1mK8pT2rL5wN7yB4";
    let mut h = HubState::new(HubSettings {
        doors: vec![p("door-1", tok, &[])],
        max_message_bytes: 65536,
        ..hub().settings
    });
    let now = Instant::now();
    let hello = |t: &str| {
        serde_json::json!({"type": "hello", "v": 1, "role": "door", "token": t}).to_string()
    };
    let padded = format!("{tok}{}", "\0".repeat(256));
    for (i, t) in [
        padded.as_str(),
        &tok[..tok.len() - 1],
        &tok[..1],
        "",
        &format!("{tok}x"),
    ]
    .into_iter()
    .enumerate()
    {
        let c = 100 + i as u64;
        h.connected(c, "s".into(), now);
        let out = h.handle_text(c, &hello(t));
        assert_eq!(err_code(&sends(&out)), Some(ErrorCode::AuthFailed), "{t:?}");
    }
    h.connected(120, "s".into(), now);
    let out = h.handle_text(120, &hello(tok));
    assert!(
        matches!(sends(&out)[0].1, Message::Welcome { .. }),
        "{out:?}"
    );
}

fn log_lines(out: &[Action]) -> Vec<String> {
    out.iter()
        .filter_map(|a| match a {
            Action::Log { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// One address guessing door tokens as fast as it can (a connection every
/// 5 ms for two minutes of synthetic time): five free failures, then no two
/// evaluated guesses within a second of each other after the tenth; another
/// address with the right token gets in at once; no token reaches a log.
#[test]
fn failed_hellos_from_one_address_are_slowed_down() {
    let mut h = hub();
    let t0 = Instant::now();
    let attacker: std::net::IpAddr = "192.0.2.66".parse().expect("address");
    let mut evaluated = Vec::new();
    let mut lines = Vec::new();
    let mut conn = 1000;
    for i in 0..24_000u64 {
        let now = t0 + Duration::from_millis(5 * i);
        conn += 1;
        h.connected_from(conn, attacker, "s".into(), now);
        let guess = format!("guess-{i:06}");
        let out = h.handle_text(
            conn,
            &format!(r#"{{"type":"hello","v":1,"role":"door","token":"{guess}"}}"#),
        );
        let (code, text) = match &sends(&out)[0].1 {
            Message::Error { code, message, .. } => (*code, message.clone()),
            m => panic!("{m:?}"),
        };
        assert_eq!(code, ErrorCode::AuthFailed);
        if !text.contains("too many failed attempts") {
            evaluated.push(now);
        }
        for l in log_lines(&out) {
            assert!(!l.contains("guess-"), "a token was logged: {l}");
            lines.push(l);
        }
        lines.extend(log_lines(&h.disconnected(conn)));
        if i % 200 == 0 {
            lines.extend(log_lines(&h.handle_tick(now)));
        }
    }
    assert_eq!(evaluated[4] - evaluated[0], Duration::from_millis(20));
    for w in evaluated[9..].windows(2) {
        assert!(w[1] - w[0] >= Duration::from_secs(1), "{:?}", w[1] - w[0]);
    }
    // Before: 24 000 evaluated; after: 10 within the first second, then
    // 1, 2, 4, 8, 16, 32 and 60 s apart: 16 in two minutes.
    assert!(evaluated.len() <= 17, "{} evaluated", evaluated.len());
    // 24 000 attempts cost a handful of lines: five, then one a minute.
    assert!(lines.len() <= 5 + 3, "{lines:#?}");
    let now = t0 + Duration::from_secs(120);
    h.connected_from(5000, "192.0.2.1".parse().expect("address"), "s".into(), now);
    let out = h.handle_text(5000, r#"{"type":"hello","v":1,"role":"door","token":"dt"}"#);
    assert!(
        matches!(sends(&out)[0].1, Message::Welcome { .. }),
        "{out:?}"
    );
}

/// A flood of malformed frames from one connection before and after
/// `hello`: one line per connection per interval, and three errors before
/// `hello` close the connection.
#[test]
fn refused_frames_are_summarised_per_connection() {
    let mut h = hub();
    let t0 = Instant::now();
    h.connected(7, "s".into(), t0);
    let mut closed = false;
    let mut lines = Vec::new();
    for i in 0..3 {
        h.set_instant(t0 + Duration::from_millis(i));
        let out = h.handle_text(7, "{");
        closed |= out.contains(&Action::Close(7, 1008, "too many errors before hello"));
        lines.extend(log_lines(&out));
    }
    assert!(closed, "three errors before hello close the connection");
    lines.extend(log_lines(&h.disconnected(7)));
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[1].starts_with("refused 2 more frames"),
        "{}",
        lines[1]
    );

    let mut t = T::new();
    let mut lines = Vec::new();
    for i in 0..2500u64 {
        let now = t.now + Duration::from_millis(10 * i);
        t.h.set_instant(now);
        let bad = serde_json::json!({"type": format!("x\nAUDIT=door_open {i}")}).to_string();
        let out = t.text(A, &bad);
        assert_eq!(err_code(&sends(&out)), Some(ErrorCode::UnknownType));
        lines.extend(log_lines(&out));
        if i % 100 == 0 {
            lines.extend(log_lines(&t.h.handle_tick(now)));
        }
    }
    // 25 s of frames every 10 ms: lines at 0, 10 and 20 s.
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains('\n')), "{lines:#?}");
    let last = log_lines(&t.h.disconnected(A));
    assert_eq!(last.len(), 2, "a summary, then `went offline`: {last:#?}");
}

#[test]
fn resume_without_the_hubs_proof_is_refused_and_reaches_nobody() {
    let mut before = T::new();
    before.ring();
    let route = route_of(&before.msg(A, Message::Accept { call_id: cid("c1") }));
    let other_key = {
        let mut h = HubState::new(hub_settings());
        h.set_route_key(b"another hub's key, not this one.");
        h
    };
    let forged = [
        resume("c1", "a", Some("residents"), None),
        resume("c1", "a", Some("residents"), Some("")),
        resume("c1", "a", Some("residents"), Some("not base64 !")),
        resume(
            "c1",
            "a",
            Some("residents"),
            Some(&route[..route.len() - 2]),
        ),
        // The proof names one call, answerer and group.
        resume("c2", "a", Some("residents"), Some(&route)),
        resume("c1", "b", Some("residents"), Some(&route)),
        resume("c1", "a", Some("caretaker"), Some(&route)),
        resume("c1", "a", None, Some(&route)),
    ];
    for m in forged {
        let mut t = T::new();
        let out = t.msg(DOOR, m.clone());
        assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted), "{m:?}");
        assert!(out.iter().all(|(c, _)| *c == DOOR), "{m:?}: {out:?}");
        // Nothing was routed: the door's offer reaches nobody.
        let offer = Message::Offer {
            call_id: m.call_id().expect("resume names a call").clone(),
            sdp: "v=0".into(),
        };
        let out = t.msg(DOOR, offer);
        assert_eq!(err_code(&out), Some(ErrorCode::UnknownCall), "{m:?}");
        assert!(out.iter().all(|(c, _)| *c == DOOR));
    }
    // Another hub's key does not verify this hub's proof.
    let mut t = T {
        h: other_key,
        now: Instant::now(),
    };
    t.h.connected(DOOR, "s1".into(), t.now);
    t.text(DOOR, r#"{"type":"hello","v":1,"role":"door","token":"dt"}"#);
    let out = t.msg(DOOR, resume("c1", "a", Some("residents"), Some(&route)));
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
}

#[test]
fn a_door_rings_only_its_own_groups() {
    let mut settings = hub_settings();
    settings.doors[0].groups = vec!["residents".into()];
    let mut t = T {
        h: HubState::new(settings),
        now: Instant::now(),
    };
    for (conn, role, tok) in [(DOOR, "door", "dt"), (C, "answerer", "ct")] {
        t.h.connected(conn, format!("s{conn}"), t.now);
        t.text(
            conn,
            &format!(r#"{{"type":"hello","v":1,"role":"{role}","token":"{tok}"}}"#),
        );
    }
    let ring = Message::Ring {
        call_id: cid("c1"),
        group: "caretaker".into(),
        door: None,
    };
    let out = t.msg(DOOR, ring);
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
    assert!(out.iter().all(|(c, _)| *c == DOOR), "{out:?}");
    // Nor by resuming a ringing call it never had.
    let out = t.msg(
        DOOR,
        Message::Resume {
            call_id: cid("c2"),
            answerer: None,
            group: Some("caretaker".into()),
            route: None,
        },
    );
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
    assert!(out.iter().all(|(c, _)| *c == DOOR), "{out:?}");
    assert_eq!(t.h.calls_in_progress(), 0);
}

#[test]
fn candidates_are_capped_per_second_and_per_call() {
    let mut t = T::new();
    t.ring();
    t.msg(A, Message::Accept { call_id: cid("c1") });
    let candidate = Message::Candidate {
        call_id: cid("c1"),
        candidate: None,
    };
    let mut relayed = 0;
    let mut warnings = 0;
    // 10,000 from the answerer over 100 seconds of wall clock.
    for i in 0..10_000u64 {
        t.h.set_clock(1_000_000 + i * 10, Default::default());
        let out = t.h.handle_message(A, candidate.clone());
        relayed += sends(&out).iter().filter(|(c, _)| *c == DOOR).count() as u32;
        warnings += out
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Log {
                        level: LogLevel::Warn,
                        ..
                    }
                )
            })
            .count();
    }
    assert_eq!(relayed, MAX_CANDIDATES_PER_CALL);
    assert_eq!(warnings, 1, "one line for the whole flood");
    // Within one second, the per-second cap.
    let mut t = T::new();
    t.ring();
    t.msg(A, Message::Accept { call_id: cid("c1") });
    t.h.set_clock(5_000_000, Default::default());
    let relayed = (0..1000)
        .map(|_| sends(&t.h.handle_message(A, candidate.clone())).len())
        .sum::<usize>();
    assert_eq!(relayed as u32, MAX_CANDIDATES_PER_SECOND);
    // The door's own budget is its own.
    let out = t.msg(DOOR, candidate.clone());
    assert_eq!(out, vec![(A, candidate)]);
}

#[test]
fn errors_about_a_call_reach_the_other_party_only() {
    let mut t = T::new();
    t.ring();
    t.msg(A, Message::Accept { call_id: cid("c1") });
    let e = Message::Error {
        code: ErrorCode::BadCandidate,
        message: "refused".into(),
        reference: Some("candidate".into()),
        call_id: Some(cid("c1")),
    };
    assert_eq!(t.msg(DOOR, e.clone()), vec![(A, e.clone())]);
    assert_eq!(t.msg(A, e.clone()), vec![(DOOR, e.clone())]);
    // Not from outsiders, and errors without a call are only logged.
    assert!(t.msg(B, e).is_empty());
    assert!(t.msg(A, Message::error(ErrorCode::BadJson, "x")).is_empty());
}

#[test]
fn an_open_over_signaling_is_refused_and_never_relayed() {
    let mut t = T::new();
    let out = t.text(
        A,
        r#"{"type":"open","call_id":"c-1","nonce":"n-1 <script>"}"#,
    );
    assert_eq!(
        out[0],
        Action::RefusedOpen {
            conn: A,
            call_id: "c-1".into(),
            nonce: "n-1<script>".into(),
            refusals: 1,
        }
    );
    // Only the sender hears about it: the door never sees the request.
    let sent = sends(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, A);
    assert_eq!(err_code(&sent), Some(ErrorCode::NotPermitted));
    // An open_result forged towards the door is an unknown type too.
    let out = t.text(A, r#"{"type":"open_result","granted":true}"#);
    assert!(sends(&out).iter().all(|(c, _)| *c == A));
}

#[test]
fn opens_over_signaling_are_audited_each_then_counted() {
    let mut t = T::new();
    let audits = |out: &[Action]| {
        out.iter()
            .filter(|a| matches!(a, Action::RefusedOpen { .. }))
            .count()
    };
    let open = r#"{"type":"open","call_id":"c-1","nonce":"n"}"#;
    // A few, as a confused page sends: each its own audit record.
    let few: usize = (0..3).map(|_| audits(&t.text(B, open))).sum();
    assert_eq!(few, 3);
    // A flood: two more records in this interval, the rest counted.
    let flood: usize = (0..10_000).map(|_| audits(&t.text(B, open))).sum();
    assert_eq!(flood, 2);
    let out = t.h.disconnected(B);
    assert!(
        out.iter().any(|a| matches!(a, Action::Log { text, .. }
            if text.starts_with("9998 more door-open requests over signaling refused"))),
        "{out:?}"
    );
}

#[test]
fn welcome_carries_turn_credentials_minted_for_each_client() {
    use crate::ice_servers::{IceAuth, IceServerSpec, rest_credential};
    let mut h = hub();
    h.settings.ice_servers = vec![
        IceServerSpec {
            urls: vec!["stun:stun.example.org:3478".into()],
            auth: IceAuth::None,
        },
        IceServerSpec {
            urls: vec!["turn:turn.example.org:443?transport=tcp".into()],
            auth: IceAuth::SharedSecret {
                secret: "shared".into(),
                ttl: Duration::from_secs(600),
            },
        },
    ];
    h.set_unix_time(1_800_000_000);
    let now = Instant::now();
    let mut minted = Vec::new();
    for (conn, role, tok, id) in [(DOOR, "door", "dt", "door-1"), (A, "answerer", "at", "a")] {
        h.connected(conn, format!("s{conn}"), now);
        let out = h.handle_text(
            conn,
            &format!(r#"{{"type":"hello","v":1,"role":"{role}","token":"{tok}"}}"#),
        );
        let Message::Welcome { ice_servers, .. } = &sends(&out)[0].1 else {
            panic!("no welcome: {out:?}")
        };
        assert_eq!(ice_servers[0].username, None, "STUN has no credential");
        let turn = &ice_servers[1];
        let (user, pass) = rest_credential("shared", id, 1_800_000_600);
        assert_eq!(turn.username.as_deref(), Some(user.as_str()));
        assert_eq!(turn.credential.as_deref(), Some(pass.as_str()));
        minted.push(pass);
    }
    assert_ne!(minted[0], minted[1], "each client its own password");
}

// ---- a resident calls the door

const DOOR2: ConnId = 5;

/// Door-1 and door-2 online; `a` may call doors, `c` may not.
fn door_calls() -> T {
    let mut settings = hub_settings();
    settings.answerers[0].call_door = true;
    let mut t = T {
        h: HubState::new(settings),
        now: Instant::now(),
    };
    t.h.set_route_key(ROUTE_KEY);
    for (conn, role, tok) in [
        (DOOR, "door", "dt"),
        (DOOR2, "door", "dt2"),
        (A, "answerer", "at"),
        (C, "answerer", "ct"),
    ] {
        t.h.connected(conn, format!("s{conn}"), t.now);
        t.text(
            conn,
            &format!(r#"{{"type":"hello","v":1,"role":"{role}","token":"{tok}"}}"#),
        );
    }
    t
}

fn call_door(t: &mut T, conn: ConnId, id: &str, door: Option<&str>) -> Vec<(ConnId, Message)> {
    t.msg(
        conn,
        Message::CallDoor {
            call_id: cid(id),
            door: door.map(str::to_owned),
            answerer: None,
            route: None,
        },
    )
}

fn peer(id: &str) -> PeerInfo {
    PeerInfo {
        id: id.into(),
        name: id.to_uppercase(),
    }
}

#[test]
fn welcome_lists_the_doors_only_for_permitted_answerers() {
    let mut settings = hub_settings();
    settings.answerers[0].call_door = true;
    let mut h = HubState::new(settings);
    for (conn, role, tok, want) in [
        (1, "answerer", "at", vec![peer("door-1"), peer("door-2")]),
        (2, "answerer", "bt", vec![]),
        (3, "door", "dt", vec![]),
    ] {
        h.connected(conn, format!("s{conn}"), Instant::now());
        let out = sends(&h.handle_text(
            conn,
            &format!(r#"{{"type":"hello","v":1,"role":"{role}","token":"{tok}"}}"#),
        ));
        match &out[0].1 {
            Message::Welcome { doors, .. } => assert_eq!(doors, &want, "{tok}"),
            m => panic!("{m:?}"),
        }
        // Absent from the wire when empty, so older pages see no change.
        assert_eq!(out[0].1.to_json().contains("\"doors\""), !want.is_empty());
    }
}

#[test]
fn an_answerer_without_the_permission_is_refused_not_permitted() {
    let mut t = door_calls();
    let actions = t.h.handle_message(
        C,
        Message::CallDoor {
            call_id: cid("r1"),
            door: Some("door-1".into()),
            answerer: None,
            route: None,
        },
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Log { level: LogLevel::Warn, call_id: Some(id), .. } if *id == cid("r1"))),
        "a log line: {actions:?}"
    );
    let out = sends(&actions);
    assert_eq!(out.len(), 1, "only the sender hears of it: {out:?}");
    match &out[0] {
        (
            C,
            Message::Error {
                code: ErrorCode::NotPermitted,
                reference: Some(r),
                call_id: Some(id),
                ..
            },
        ) => {
            assert_eq!(r, "call_door");
            assert_eq!(id, &cid("r1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.h.calls_in_progress(), 0);
    // Nor may a door call a door, nor an answerer forge `calling`.
    assert_eq!(
        err_code(&call_door(&mut t, DOOR, "r2", Some("door-2"))),
        Some(ErrorCode::NotPermitted)
    );
    let out = t.msg(
        A,
        Message::Calling {
            call_id: cid("r3"),
            door: peer("door-1"),
        },
    );
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
    assert_eq!(t.h.calls_in_progress(), 0);
}

#[test]
fn call_door_refusals_name_the_reason() {
    let mut t = door_calls();
    // Two doors: the answerer must choose.
    assert_eq!(
        err_code(&call_door(&mut t, A, "r1", None)),
        Some(ErrorCode::BadMessage)
    );
    assert_eq!(
        err_code(&call_door(&mut t, A, "r1", Some("door-9"))),
        Some(ErrorCode::UnknownPeer)
    );
    // Door 2 goes offline.
    t.h.disconnected(DOOR2);
    assert_eq!(
        err_code(&call_door(&mut t, A, "r1", Some("door-2"))),
        Some(ErrorCode::DoorOffline)
    );
    // Door 1 is ringing its own call (b is not online here; c rings).
    let out = t.msg(
        DOOR,
        Message::Ring {
            call_id: cid("c1"),
            group: "caretaker".into(),
            door: None,
        },
    );
    assert!(out.iter().any(|(c, _)| *c == C), "{out:?}");
    assert_eq!(
        err_code(&call_door(&mut t, A, "r1", Some("door-1"))),
        Some(ErrorCode::Busy)
    );
    // A call id in use cannot be taken over.
    assert_eq!(
        err_code(&call_door(&mut t, A, "c1", Some("door-1"))),
        Some(ErrorCode::BadState)
    );
    assert_eq!(t.h.calls_in_progress(), 1);
}

#[test]
fn a_resident_call_is_forwarded_and_then_relayed_like_an_answered_call() {
    let mut t = door_calls();
    let out = call_door(&mut t, A, "r1", Some("door-1"));
    assert_eq!(
        out,
        vec![
            (
                DOOR,
                Message::CallDoor {
                    call_id: cid("r1"),
                    door: None,
                    answerer: Some(PeerInfo {
                        id: "a".into(),
                        name: "A".into()
                    }),
                    route: t.h.route_proof("door-1", &cid("r1"), "a", ""),
                }
            ),
            (
                A,
                Message::Calling {
                    call_id: cid("r1"),
                    door: peer("door-1"),
                }
            ),
        ]
    );
    // The door offers, the resident answers, candidates both ways.
    let offer = Message::Offer {
        call_id: cid("r1"),
        sdp: "o".into(),
    };
    assert_eq!(t.msg(DOOR, offer.clone()), vec![(A, offer)]);
    let answer = Message::Answer {
        call_id: cid("r1"),
        sdp: "a".into(),
    };
    assert_eq!(t.msg(A, answer.clone()), vec![(DOOR, answer)]);
    let cand = Message::Candidate {
        call_id: cid("r1"),
        candidate: None,
    };
    assert_eq!(t.msg(A, cand.clone()), vec![(DOOR, cand.clone())]);
    assert_eq!(t.msg(DOOR, cand.clone()), vec![(A, cand.clone())]);
    // Nobody else is a party.
    assert_eq!(err_code(&t.msg(C, cand)), Some(ErrorCode::NotPermitted));
    // A second call to the same door while this one runs: busy.
    assert_eq!(
        err_code(&call_door(&mut t, A, "r2", Some("door-1"))),
        Some(ErrorCode::Busy)
    );
    // The resident hangs up: the door hears it, the route is gone.
    let hangup = Message::Hangup {
        call_id: cid("r1"),
        reason: "normal".into(),
    };
    assert_eq!(t.msg(A, hangup.clone()), vec![(DOOR, hangup)]);
    assert_eq!(t.h.calls_in_progress(), 0);
}

#[test]
fn the_door_refusing_busy_reaches_the_resident() {
    let mut t = door_calls();
    call_door(&mut t, A, "r1", Some("door-2"));
    let busy = Message::Hangup {
        call_id: cid("r1"),
        reason: "busy".into(),
    };
    assert_eq!(t.msg(DOOR2, busy.clone()), vec![(A, busy)]);
    assert_eq!(t.h.calls_in_progress(), 0);
}

#[test]
fn a_press_crossing_a_resident_call_tells_the_resident() {
    let mut t = door_calls();
    call_door(&mut t, A, "r1", Some("door-1"));
    // The door rang before it saw `call_door`: it will refuse that call,
    // and the hub has already dropped the route the refusal would take.
    let out = t.msg(
        DOOR,
        Message::Ring {
            call_id: cid("c1"),
            group: "caretaker".into(),
            door: None,
        },
    );
    assert!(
        out.contains(&(
            A,
            Message::Hangup {
                call_id: cid("r1"),
                reason: "busy".into()
            }
        )),
        "{out:?}"
    );
}

#[test]
fn a_resident_call_is_rebuilt_by_resume_after_a_hub_restart() {
    let mut before = door_calls();
    let route = route_of(&call_door(&mut before, A, "r1", Some("door-1")));
    let mut t = door_calls();
    let resume = resume("r1", "a", None, Some(&route));
    assert_eq!(
        t.msg(DOOR, resume),
        vec![(DOOR, Message::Resumed { call_id: cid("r1") })]
    );
    let hangup = Message::Hangup {
        call_id: cid("r1"),
        reason: "normal".into(),
    };
    assert_eq!(t.msg(DOOR, hangup.clone()), vec![(A, hangup)]);
}

// --- Web Push, quiet hours and the call history ---

use super::super::push::SubscriptionKeys;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sub(n: u8) -> Subscription {
    let mut point = vec![4u8; 65];
    point[1] = n;
    Subscription {
        endpoint: format!("https://push.example.net/send/{n}"),
        keys: SubscriptionKeys {
            p256dh: b64(&point),
            auth: b64(&[n; 16]),
        },
    }
}

fn pushes(actions: &[Action]) -> Vec<PushJob> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Push(j) => Some(j.clone()),
            _ => None,
        })
        .collect()
}

fn stores(actions: &[Action]) -> Vec<StoreOp> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Store(op) => Some(op.clone()),
            _ => None,
        })
        .collect()
}

fn kinds(jobs: &[PushJob]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                j.answerer.clone(),
                j.payload["kind"].as_str().unwrap_or_default().to_owned(),
                j.payload["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn ring_actions(t: &mut T, id: &str) -> Vec<Action> {
    t.h.handle_message(
        DOOR,
        Message::Ring {
            call_id: cid(id),
            group: "residents".into(),
            door: None,
        },
    )
}

fn ringing_count(out: &[Action]) -> u32 {
    sends(out)
        .iter()
        .find_map(|(c, m)| match m {
            Message::Ringing { answerers, .. } if *c == DOOR => Some(*answerers),
            _ => None,
        })
        .expect("the door is answered with ringing")
}

fn finished(out: &[Action]) -> CallEnd {
    stores(out)
        .into_iter()
        .find_map(|op| match op {
            StoreOp::FinishCall(e) => Some(e),
            _ => None,
        })
        .expect("the call's record is finished")
}

/// A rings on its page and by push; B is offline with a phone; C (other
/// group) has a phone too.
fn with_phones() -> T {
    let mut t = T::new();
    t.h.handle_message(B, Message::Ping);
    t.h.disconnected(B);
    t.h.load_subscriptions(vec![
        ("a".into(), sub(1)),
        ("b".into(), sub(2)),
        ("b".into(), sub(3)),
        ("c".into(), sub(4)),
    ]);
    t.h.set_clock(1_700_000_000_000, WeekMinute::new(2, 12, 0));
    t
}

#[test]
fn ring_pushes_every_device_of_the_rung_answerers() {
    let mut t = with_phones();
    let out = ring_actions(&mut t, "c1");
    // A online (and pushed) plus B by push only; C is another group.
    assert_eq!(ringing_count(&out), 2);
    let jobs = pushes(&out);
    assert_eq!(
        kinds(&jobs),
        [
            ("a".into(), "ring".into(), String::new()),
            ("b".into(), "ring".into(), String::new())
        ]
    );
    let b = jobs.iter().find(|j| j.answerer == "b").unwrap();
    assert_eq!(b.subscriptions, vec![sub(2), sub(3)]);
    assert_eq!(
        b.payload,
        serde_json::json!({"kind":"ring","call_id":"c1",
            "door":{"id":"door-1","name":"DOOR-1"},"at_ms":1_700_000_000_000u64})
    );
    assert_eq!(b.ttl, Duration::from_secs(30));
    assert_eq!(b.urgency, Urgency::High);
    assert_eq!(b.topic, "c1");
    // The push leaves after the ring is routed.
    let first_push = out.iter().position(|a| matches!(a, Action::Push(_)));
    let last_send = out.iter().rposition(|a| matches!(a, Action::Send(..)));
    assert!(first_push > last_send, "{out:?}");
    match &stores(&out)[..] {
        [StoreOp::InsertCall(r)] => {
            assert_eq!(r.call_id, "c1");
            assert_eq!(r.group, "residents");
            assert_eq!(r.started_at_ms, 1_700_000_000_000);
            assert!(r.quiet.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_ending_pushes_end_with_its_reason() {
    // Taken: every pushed device closes its notification.
    let mut t = with_phones();
    ring_actions(&mut t, "c1");
    t.h.set_clock(1_700_000_002_000, WeekMinute::new(2, 12, 0));
    let out =
        t.h.handle_message(A, Message::Accept { call_id: cid("c1") });
    let jobs = pushes(&out);
    assert_eq!(
        kinds(&jobs),
        [
            ("a".into(), "end".into(), "taken".into()),
            ("b".into(), "end".into(), "taken".into())
        ]
    );
    assert_eq!(jobs[0].ttl, END_PUSH_TTL);
    assert_eq!(jobs[0].topic, "c1");
    // Door cancels: timeout, or any other reason as cancel.
    for (reason, want) in [("timeout", "timeout"), ("hangup", "cancel")] {
        let mut t = with_phones();
        ring_actions(&mut t, "c1");
        let out = t.h.handle_message(
            DOOR,
            Message::Cancel {
                call_id: cid("c1"),
                reason: reason.into(),
            },
        );
        assert_eq!(
            kinds(&pushes(&out)),
            [
                ("a".into(), "end".into(), want.into()),
                ("b".into(), "end".into(), want.into())
            ],
            "{reason}"
        );
        assert_eq!(finished(&out).outcome, CallOutcome::Missed);
    }
    // Declined: each answerer's devices when it declines.
    let mut t = with_phones();
    ring_actions(&mut t, "c1");
    let out =
        t.h.handle_message(A, Message::Decline { call_id: cid("c1") });
    assert_eq!(
        kinds(&pushes(&out)),
        [("a".into(), "end".into(), "declined".into())]
    );
    assert!(stores(&out).is_empty(), "B still rings");
    // B declines from its phone (opened from the notification).
    t.h.connected(B, "sB".into(), t.now);
    t.text(
        B,
        r#"{"type":"hello","v":1,"role":"answerer","token":"bt"}"#,
    );
    let out =
        t.h.handle_message(B, Message::Decline { call_id: cid("c1") });
    assert_eq!(
        kinds(&pushes(&out)),
        [("b".into(), "end".into(), "declined".into())]
    );
    assert!(sends(&out).contains(&(DOOR, Message::Declined { call_id: cid("c1") })));
    assert_eq!(finished(&out).outcome, CallOutcome::Declined);
}

#[test]
fn an_answered_call_is_recorded_with_who_how_long_and_the_door() {
    let mut t = with_phones();
    ring_actions(&mut t, "c1");
    t.h.set_clock(1_700_000_001_000, WeekMinute::new(2, 12, 0));
    t.h.handle_message(A, Message::Accept { call_id: cid("c1") });
    let out =
        t.h.handle_message(DOOR, Message::DoorOpened { call_id: cid("c1") });
    assert!(out.is_empty(), "{out:?}");
    t.h.set_clock(1_700_000_043_000, WeekMinute::new(2, 12, 1));
    let out = t.h.handle_message(
        DOOR,
        Message::Hangup {
            call_id: cid("c1"),
            reason: "normal".into(),
        },
    );
    assert_eq!(
        finished(&out),
        CallEnd {
            call_id: "c1".into(),
            outcome: CallOutcome::Answered,
            answered_by: Some(PeerInfo {
                id: "a".into(),
                name: "A".into()
            }),
            duration_ms: Some(42_000),
            door_opened: true,
        }
    );
    assert!(pushes(&out).is_empty(), "the end was pushed at accept");
    // The group's connected answerers get the fresh history.
    let hist: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::History { conn, answerer, .. } => Some((*conn, answerer.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(hist, [(A, "a".to_string())]);
    // Only the door of the call may mark it.
    ring_actions(&mut t, "c2");
    let out = sends(&t.h.handle_message(A, Message::DoorOpened { call_id: cid("c2") }));
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
}

#[test]
fn quiet_hours_exclude_an_answerer_from_ring_and_push() {
    let mut t = with_phones();
    t.h.settings.answerers[0].quiet_hours = QuietHours::parse(&["wed 22:00-07:00"]).expect("valid");
    // Wednesday 23:00: A is quiet; Thursday 08:00 it is not.
    t.h.set_clock(1, WeekMinute::new(2, 23, 0));
    let out = ring_actions(&mut t, "c1");
    assert_eq!(ringing_count(&out), 1);
    assert!(!sends(&out).iter().any(|(c, _)| *c == A), "{out:?}");
    assert_eq!(
        kinds(&pushes(&out)),
        [("b".into(), "ring".into(), String::new())]
    );
    match &stores(&out)[..] {
        [StoreOp::InsertCall(r)] => assert_eq!(r.quiet, ["a"]),
        other => panic!("{other:?}"),
    }
    // A quiet answerer cannot take the call either.
    let out = sends(&t.h.handle_message(A, Message::Accept { call_id: cid("c1") }));
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
    t.h.set_clock(2, WeekMinute::new(3, 8, 0));
    let out = ring_actions(&mut t, "c2");
    assert_eq!(ringing_count(&out), 2);
}

#[test]
fn everybody_quiet_ends_like_no_answerer_and_is_recorded_missed() {
    let mut t = with_phones();
    for a in &mut t.h.settings.answerers {
        a.quiet_hours = QuietHours::parse(&["daily 00:00-24:00"]).expect("valid");
    }
    let out = ring_actions(&mut t, "c1");
    assert_eq!(ringing_count(&out), 0);
    assert!(pushes(&out).is_empty());
    assert_eq!(t.h.calls_in_progress(), 0);
    let ops = stores(&out);
    match &ops[..] {
        [StoreOp::InsertCall(r), StoreOp::FinishCall(e)] => {
            let mut q = r.quiet.clone();
            q.sort();
            assert_eq!(q, ["a", "b"]);
            assert_eq!(e.outcome, CallOutcome::Missed);
            assert_eq!(e.answered_by, None);
        }
        other => panic!("{other:?}"),
    }
    // Offline without a phone counts as nobody, too.
    let mut t = T::new();
    t.h.disconnected(A);
    t.h.disconnected(B);
    let out = ring_actions(&mut t, "c1");
    assert_eq!(ringing_count(&out), 0);
    assert_eq!(finished(&out).outcome, CallOutcome::Missed);
}

#[test]
fn history_is_asked_for_the_answerers_own_groups_only() {
    let mut t = T::new();
    let out = t.text(C, r#"{"type":"get_history","limit":1000}"#);
    assert_eq!(
        out,
        vec![Action::History {
            conn: C,
            answerer: "c".into(),
            groups: vec!["caretaker".into()],
            limit: HISTORY_MAX,
        }]
    );
    let out = t.text(A, r#"{"type":"get_history"}"#);
    assert!(
        matches!(&out[..], [Action::History { limit: HISTORY_DEFAULT, groups, .. }] if groups == &["residents"])
    );
    // Doors have no history.
    let out = sends(&t.text(DOOR, r#"{"type":"get_history"}"#));
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
}

#[test]
fn a_late_joiner_gets_the_ring_and_may_answer() {
    let mut t = with_phones();
    ring_actions(&mut t, "c1");
    t.h.connected(9, "s9".into(), t.now);
    let out = sends(&t.text(
        9,
        r#"{"type":"hello","v":1,"role":"answerer","token":"bt"}"#,
    ));
    assert!(matches!(out[0].1, Message::Welcome { .. }));
    assert_eq!(
        out[1],
        (
            9,
            Message::Ring {
                call_id: cid("c1"),
                group: "residents".into(),
                door: Some(PeerInfo {
                    id: "door-1".into(),
                    name: "DOOR-1".into()
                }),
            }
        )
    );
    let out = t.msg(9, Message::Accept { call_id: cid("c1") });
    assert!(out.contains(&(
        DOOR,
        Message::Accepted {
            call_id: cid("c1"),
            answerer: PeerInfo {
                id: "b".into(),
                name: "B".into()
            },
            route: t.h.route_proof("door-1", &cid("c1"), "b", "residents"),
        }
    )));
    // Once taken, nobody joining is rung.
    t.h.connected(10, "s10".into(), t.now);
    let out = sends(&t.text(
        10,
        r#"{"type":"hello","v":1,"role":"answerer","token":"bt"}"#,
    ));
    assert_eq!(out.len(), 1, "{out:?}");
}

#[test]
fn welcome_offers_push_to_answerers_when_the_hub_can_push() {
    let mut h = hub();
    h.set_push_key(Some("BPubKey".into()));
    h.connected(1, "s1".into(), Instant::now());
    h.connected(2, "s2".into(), Instant::now());
    let a = sends(&h.handle_text(
        1,
        r#"{"type":"hello","v":1,"role":"answerer","token":"at"}"#,
    ));
    let d = sends(&h.handle_text(2, r#"{"type":"hello","v":1,"role":"door","token":"dt"}"#));
    assert!(
        matches!(&a[0].1, Message::Welcome { push: Some(p), .. } if p.vapid_public_key == "BPubKey")
    );
    assert!(matches!(&d[0].1, Message::Welcome { push: None, .. }));
    assert!(
        a[0].1
            .to_json()
            .contains(r#""push":{"vapid_public_key":"BPubKey"}"#)
    );
    let mut h = hub();
    h.connected(1, "s1".into(), Instant::now());
    let a = sends(&h.handle_text(
        1,
        r#"{"type":"hello","v":1,"role":"answerer","token":"at"}"#,
    ));
    assert!(!a[0].1.to_json().contains("push"));
}

/// Subscriptions the hub refuses, each with the error it answers.
fn refused_subscriptions() -> Vec<(Subscription, ErrorCode)> {
    vec![
        (
            Subscription {
                endpoint: "http://push.example.net/x".into(),
                ..sub(3)
            },
            ErrorCode::BadMessage,
        ),
        (
            Subscription {
                endpoint: "ftp://push.example.net/x".into(),
                ..sub(3)
            },
            ErrorCode::BadMessage,
        ),
        (
            Subscription {
                endpoint: "https:///nohost".into(),
                ..sub(3)
            },
            ErrorCode::BadMessage,
        ),
        (
            Subscription {
                endpoint: "https://push.example.net/a b".into(),
                ..sub(3)
            },
            ErrorCode::BadMessage,
        ),
        (
            Subscription {
                keys: SubscriptionKeys {
                    p256dh: b64(&[4; 33]),
                    auth: b64(&[1; 16]),
                },
                ..sub(3)
            },
            ErrorCode::BadMessage,
        ),
        (
            Subscription {
                keys: SubscriptionKeys {
                    p256dh: b64(&[4; 65]),
                    auth: b64(&[1; 15]),
                },
                ..sub(3)
            },
            ErrorCode::BadMessage,
        ),
        (
            Subscription {
                keys: SubscriptionKeys {
                    p256dh: "not base64!".into(),
                    auth: b64(&[1; 16]),
                },
                ..sub(3)
            },
            ErrorCode::BadMessage,
        ),
        (
            Subscription {
                keys: SubscriptionKeys {
                    p256dh: "A".repeat(300),
                    auth: b64(&[1; 16]),
                },
                ..sub(3)
            },
            ErrorCode::TooLarge,
        ),
    ]
}

#[test]
fn subscriptions_are_checked_before_they_are_kept() {
    let mut t = T::new();
    let frame = |s: &Subscription| {
        serde_json::json!({"type":"push_subscribe","subscription":s}).to_string()
    };
    let out = t.text(A, &frame(&sub(1)));
    assert_eq!(sends(&out), [(A, Message::PushSubscribed)]);
    assert!(
        matches!(&stores(&out)[..], [StoreOp::SaveSubscription { answerer, subscription, .. }] if answerer == "a" && *subscription == sub(1))
    );
    assert_eq!(t.h.subscription_count("a"), 1);
    // http only to this machine (a local test push service).
    let mut local = sub(2);
    local.endpoint = "http://127.0.0.1:9999/push/2".into();
    assert_eq!(
        sends(&t.text(A, &frame(&local))),
        [(A, Message::PushSubscribed)]
    );
    for (s, code) in refused_subscriptions() {
        let out = t.text(A, &frame(&s));
        assert_eq!(err_code(&sends(&out)), Some(code), "{s:?}");
        assert!(stores(&out).is_empty());
    }
    // An endpoint beyond the cap (in a frame the hub accepts).
    let mut h = hub();
    h.settings.max_message_bytes = 65536;
    h.connected(1, "s1".into(), Instant::now());
    h.handle_text(
        1,
        r#"{"type":"hello","v":1,"role":"answerer","token":"at"}"#,
    );
    let mut long = sub(5);
    long.endpoint = format!(
        "https://push.example.net/{}",
        "x".repeat(MAX_ENDPOINT_BYTES)
    );
    let out = sends(&h.handle_text(1, &frame(&long)));
    assert_eq!(err_code(&out), Some(ErrorCode::TooLarge));
    // Missing keys: malformed.
    let out = sends(&t.text(
        A,
        r#"{"type":"push_subscribe","subscription":{"endpoint":"https://p.example/x"}}"#,
    ));
    assert_eq!(err_code(&out), Some(ErrorCode::BadMessage));
    // Doors do not subscribe.
    let out = sends(&t.text(DOOR, &frame(&sub(6))));
    assert_eq!(err_code(&out), Some(ErrorCode::NotPermitted));
    assert_eq!(t.h.subscription_count("a"), 2);
}

#[test]
fn subscriptions_are_capped_replaced_and_removed() {
    let mut t = T::new();
    for n in 0..(MAX_SUBSCRIPTIONS_PER_ANSWERER as u8 + 2) {
        t.h.handle_message(
            A,
            Message::PushSubscribe {
                subscription: sub(n),
            },
        );
    }
    assert_eq!(t.h.subscription_count("a"), MAX_SUBSCRIPTIONS_PER_ANSWERER);
    // The same device signing in as another flat moves over.
    t.h.handle_message(
        B,
        Message::PushSubscribe {
            subscription: sub(9),
        },
    );
    assert_eq!(
        t.h.subscription_count("a"),
        MAX_SUBSCRIPTIONS_PER_ANSWERER - 1
    );
    let out = t.h.handle_message(
        B,
        Message::PushUnsubscribe {
            endpoint: sub(9).endpoint,
        },
    );
    assert_eq!(sends(&out), [(B, Message::PushUnsubscribed)]);
    assert_eq!(t.h.subscription_count("b"), 0);
    // A push service saying "gone" removes it everywhere.
    let out = t.h.push_gone("a", &sub(8).endpoint);
    assert_eq!(
        stores(&out),
        [StoreOp::DeleteSubscription {
            answerer: None,
            endpoint: sub(8).endpoint
        }]
    );
    assert_eq!(
        t.h.subscription_count("a"),
        MAX_SUBSCRIPTIONS_PER_ANSWERER - 2
    );
}

#[test]
fn a_long_call_id_gets_a_hashed_topic() {
    assert_eq!(push_topic(&cid("c-1")), "c-1");
    let long = cid(&"x".repeat(40));
    let t = push_topic(&long);
    assert_eq!(t.len(), 32);
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_ne!(t, push_topic(&cid(&"y".repeat(40))));
}
