//! Web Push from a real hub, checked by the independent push service of
//! `tests/push/push_service.py` (py_vapid verifies the VAPID token,
//! http_ece decrypts): residents subscribe and close their pages; a ring
//! reaches their phones with the `ring` payload, `Urgency: high`, the ring
//! timeout as `TTL` and the call's `Topic`; another resident answering
//! sends them `end` (`taken`) under the same topic. Endpoints answering
//! 410 or 404 are deleted; the subscriptions survive a restart; the hub's
//! log shows a push service's host, never an endpoint, a key or a payload.
//! Skipped when the push service's venv is missing (`scripts/setup.sh`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use intercomd::hub::state::push_topic;
use intercomd::signaling::protocol::{Message, Role};
use serde_json::{Value, json};

use crate::common::push_service::{PushService as Service, python};
use crate::common::*;

const DOOR: &str = "door-token-0123456789abcdef";
const SUBJECT: &str = "mailto:hub-push@test.invalid";
/// `[call] ring_timeout_ms` of the test hub: the ring push's TTL.
const RING_TIMEOUT_S: u64 = 20;
/// Residents: A and B subscribe a phone and close their pages, C keeps
/// its page open, D's endpoint answers 410 and E's 404.
const RESIDENTS: [(&str, &str); 5] = [
    ("flat-a", "flata-token-0123456789abcdef"),
    ("flat-b", "flatb-token-0123456789abcdef"),
    ("flat-c", "flatc-token-0123456789abcdef"),
    ("flat-d", "flatd-token-0123456789abcdef"),
    ("flat-e", "flate-token-0123456789abcdef"),
];

fn token(id: &str) -> &'static str {
    RESIDENTS
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, t)| *t)
        .expect("a resident of the test")
}

// --- logs -----------------------------------------------------------------

// --- the push service -------------------------------------------------------

/// What this test reads from the push service's records.
impl Service {
    /// The records of pushes to `name` whose payload has this call id.
    fn pushes(&self, name: &str, call_id: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("/{name}")))
            })
            .filter(|r| payload(r)["call_id"] == call_id)
            .collect()
    }

    /// Waits until `name` has `n` pushes for `call_id`.
    async fn wait_pushes(&self, name: &str, call_id: &str, n: usize) -> Vec<Value> {
        let got = poll_until(
            Duration::from_secs(10),
            async || self.pushes(name, call_id),
            |got| got.len() >= n,
        )
        .await;
        got.unwrap_or_else(|got| {
            panic!(
                "{name}: {} of {n} pushes for {call_id} within 10 s; all records: {:#?}",
                got.len(),
                self.records()
            )
        })
    }
}

/// The decrypted payload of a record, as JSON (Null when it did not decrypt).
fn payload(r: &Value) -> Value {
    r["plaintext_b64"]
        .as_str()
        .and_then(|b| B64.decode(b).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(Value::Null)
}

/// The service accepted the push: VAPID verified by py_vapid for its own
/// origin (signature, aud, exp ≤ 24 h ahead, sub) and the body decrypted
/// by http_ece.
fn check_delivered(r: &Value, svc: &Service, vapid_key: &str) {
    assert_eq!(r["vapid"]["ok"], true, "{r:#?}");
    assert_eq!(r["error"], Value::Null, "{r:#?}");
    let claims = &r["vapid"]["claims"];
    assert_eq!(claims["aud"], svc.origin.as_str());
    assert_eq!(claims["sub"], SUBJECT);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let exp = claims["exp"].as_u64().expect("exp is a number");
    assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}, now {now}");
    assert_eq!(r["vapid"]["k"], vapid_key, "signed with the key in welcome");
    assert_eq!(r["content_encoding"], "aes128gcm");
}

// --- the hub ------------------------------------------------------------------

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("intercomd-hubpush-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    crate::common::write_secret(&dir.join("door"), &format!("{DOOR}\n"));
    for (id, token) in RESIDENTS {
        crate::common::write_secret(&dir.join(id), &format!("{token}\n"));
    }
    dir
}

/// The hub of this test's configuration.
struct Hub;

impl Hub {
    async fn start(dir: &Path) -> TestHub {
        let mut toml = format!(
            r#"
[hub]
listen = "127.0.0.1:0"
state_dir = "{d}/state"
[hub.tls]
mode = "off"
[hub.push]
enabled = true
subject = "{SUBJECT}"
[call]
ring_timeout_ms = {ms}
"#,
            d = dir.display(),
            ms = RING_TIMEOUT_S * 1000,
        );
        toml.push_str(&front_door_entry(&dir.join("door")));
        for (id, _) in RESIDENTS {
            toml.push_str(&answerer_entry(id, Some(id), &dir.join(id), "residents"));
        }
        TestHub::start(&toml).await
    }
}

/// An answerer's connection and the VAPID key its welcome offered.
async fn resident(url: &str, id: &str) -> (Socket, Option<String>) {
    let mut ws = open(url, None).await;
    match hello(&mut ws, Role::Answerer, token(id)).await {
        Message::Welcome { push, .. } => (ws, push.map(|p| p.vapid_public_key)),
        m => panic!("expected welcome, got {m:?}"),
    }
}

async fn cancel(door: &mut Socket, id: &str) {
    send(
        door,
        &Message::Cancel {
            call_id: cid(id),
            reason: "timeout".into(),
        },
    )
    .await;
}

/// Waits until the hub has logged `n` deleted subscriptions.
async fn wait_gone(n: usize) {
    eventually(
        &format!("the hub logging {n} deleted subscriptions (count)"),
        Duration::from_secs(10),
        async || captured_log().matches("push subscription gone").count(),
        |&count| count >= n,
    )
    .await;
}

fn check_ring(r: &Value, svc: &Service, key: &str, call_id: &str) {
    check_delivered(r, svc, key);
    let p = payload(r);
    assert_eq!(p["kind"], "ring", "{p}");
    assert_eq!(p["call_id"], call_id);
    assert_eq!(p["door"], json!({"id": "door-1", "name": "Front door"}));
    let at = p["at_ms"].as_u64().expect("at_ms is a number");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    assert!(
        at <= now_ms && now_ms - at < 60_000,
        "at_ms {at}, now {now_ms}"
    );
    assert_eq!(
        p.as_object().map(|o| o.len()),
        Some(4),
        "only kind, call_id, door and at_ms: {p}"
    );
    assert_eq!(r["urgency"], "high");
    assert_eq!(r["ttl"], RING_TIMEOUT_S.to_string());
    assert_eq!(r["topic"], push_topic(&cid(call_id)).as_str());
}

fn check_end(r: &Value, svc: &Service, key: &str, call_id: &str, reason: &str) {
    check_delivered(r, svc, key);
    assert_eq!(
        payload(r),
        json!({"kind": "end", "call_id": call_id, "reason": reason})
    );
    assert_eq!(r["urgency"], "high");
    assert_eq!(r["ttl"], "60");
    assert_eq!(r["topic"], push_topic(&cid(call_id)).as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_and_end_reach_closed_pages_gone_endpoints_are_deleted_and_a_restart_keeps_the_rest() {
    crate::common::run_alone!(
        "ring_and_end_reach_closed_pages_gone_endpoints_are_deleted_and_a_restart_keeps_the_rest"
    );
    let Some(py) = python() else { return };
    capture_log("debug");
    let dir = temp_dir();
    let svc = Service::start(&py, &dir, &[]);
    let hub = Hub::start(&dir).await;

    // A, B, D and E subscribe a phone each, then close their pages.
    let mut vapid_key = None;
    for (id, behaviour) in [
        ("flat-a", "201"),
        ("flat-b", "201"),
        ("flat-d", "410"),
        ("flat-e", "404"),
    ] {
        let (mut ws, key) = resident(&hub.url, id).await;
        let key = key.expect("welcome offers push");
        assert_eq!(*vapid_key.get_or_insert_with(|| key.clone()), key);
        send(
            &mut ws,
            &Message::PushSubscribe {
                subscription: serde_json::from_value(json!({
                    "endpoint": svc.endpoint(behaviour, id),
                    "keys": {"p256dh": svc.p256dh, "auth": svc.auth},
                }))
                .expect("a subscription"),
            },
        )
        .await;
        let m = recv_until(&mut ws, |m| {
            matches!(m, Message::PushSubscribed | Message::Error { .. })
        })
        .await;
        assert!(matches!(m, Message::PushSubscribed), "{id}: {m:?}");
        drop(ws);
    }
    let key = vapid_key.expect("four welcomes");
    let (mut c, _) = resident(&hub.url, "flat-c").await;
    let mut d = connect_door(&hub.url, DOOR).await;
    // The hub notices the closed pages.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Ring: C's page rings, the four phones are pushed.
    let call1 = "c-push-1";
    assert_eq!(
        ring_residents(&mut d, call1).await,
        5,
        "C online, A B D E by push"
    );
    recv_until(&mut c, |m| matches!(m, Message::Ring { .. })).await;
    for name in ["flat-a", "flat-b"] {
        let got = svc.wait_pushes(name, call1, 1).await;
        check_ring(&got[0], &svc, &key, call1);
        assert_eq!(got[0]["status_returned"], 201);
    }
    for (name, status) in [("flat-d", 410), ("flat-e", 404)] {
        let got = svc.wait_pushes(name, call1, 1).await;
        assert_eq!(got[0]["status_returned"], status);
        check_ring(&got[0], &svc, &key, call1);
    }
    wait_gone(2).await;

    // C answers: the phones still ringing are told the call was taken.
    send(
        &mut c,
        &Message::Accept {
            call_id: cid(call1),
        },
    )
    .await;
    recv_until(&mut d, |m| matches!(m, Message::Accepted { .. })).await;
    for name in ["flat-a", "flat-b"] {
        let got = svc.wait_pushes(name, call1, 2).await;
        check_end(&got[1], &svc, &key, call1, "taken");
    }
    send(
        &mut d,
        &Message::Hangup {
            call_id: cid(call1),
            reason: "normal".into(),
        },
    )
    .await;
    recv_until(&mut c, |m| matches!(m, Message::Hangup { .. })).await;

    // The next ring reaches A and B only; a long call id gets a hashed
    // topic; the door's timeout ends it with `timeout`.
    let call2 = "c-push-2-with-a-call-id-longer-than-32-characters";
    assert_eq!(
        ring_residents(&mut d, call2).await,
        3,
        "C online, A B by push"
    );
    for name in ["flat-a", "flat-b"] {
        let got = svc.wait_pushes(name, call2, 1).await;
        check_ring(&got[0], &svc, &key, call2);
        assert_eq!(got[0]["topic"].as_str().map(str::len), Some(32));
    }
    cancel(&mut d, call2).await;
    for name in ["flat-a", "flat-b"] {
        let got = svc.wait_pushes(name, call2, 2).await;
        check_end(&got[1], &svc, &key, call2, "timeout");
    }
    drop((c, d));
    hub.stop().await;

    // The same state directory after a restart: nobody online, A and B's
    // phones ring, the deleted endpoints stay deleted.
    let hub = Hub::start(&dir).await;
    let (_, key_after) = resident(&hub.url, "flat-c").await;
    assert_eq!(
        key_after.as_deref(),
        Some(key.as_str()),
        "the VAPID key is kept"
    );
    let mut d = connect_door(&hub.url, DOOR).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let call3 = "c-push-3";
    assert_eq!(
        ring_residents(&mut d, call3).await,
        2,
        "A and B by push only"
    );
    for name in ["flat-a", "flat-b"] {
        let got = svc.wait_pushes(name, call3, 1).await;
        check_ring(&got[0], &svc, &key, call3);
    }
    cancel(&mut d, call3).await;
    for name in ["flat-a", "flat-b"] {
        svc.wait_pushes(name, call3, 2).await;
    }
    // Anything still in flight would have arrived by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["flat-d", "flat-e"] {
        let all: Vec<Value> = svc
            .records()
            .into_iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .collect();
        assert_eq!(all.len(), 1, "{name}: only the first ring: {all:#?}");
    }
    drop(d);
    hub.stop().await;

    // The log names the push service's host, never an endpoint's path, a
    // key, or a payload.
    let log = captured_log();
    let host = svc.origin.trim_start_matches("http://");
    assert!(log.contains(host), "the service's host is logged");
    for secret in [
        "/push/201",
        "/push/404",
        "/push/410",
        svc.p256dh.as_str(),
        svc.auth.as_str(),
        "\"kind\"",
        "at_ms",
    ] {
        assert!(!log.contains(secret), "the log shows {secret:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
