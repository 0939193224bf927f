//! The Web Push sender against an independent push service:
//! `tests/push/push_service.py` verifies the VAPID token with py_vapid and
//! decrypts with http_ece, then answers as each endpoint path asks (201,
//! 404, 410, 500, or a sleep). Skipped when its venv is missing
//! (`scripts/setup.sh` makes it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use intercomd::hub::push::{
    PushMessage, PushOutcome, Subscription, SubscriptionKeys, Urgency, VapidKeys, WebPush,
};
use serde_json::Value;

use crate::common::push_service::{PushService as Service, python};

const SUBJECT: &str = "mailto:intercomd@test.invalid";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("intercomd-webpush-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// Subscriptions that point at the push service.
impl Service {
    /// A subscription whose endpoint answers as `behaviour` says.
    fn subscription(&self, behaviour: &str, name: &str) -> Subscription {
        Subscription {
            endpoint: format!("{}/push/{behaviour}/{name}", self.origin),
            keys: SubscriptionKeys {
                p256dh: self.p256dh.clone(),
                auth: self.auth.clone(),
            },
        }
    }
}

fn sender(dir: &Path, extra_ca: Option<&Path>) -> (WebPush, String) {
    let keys = VapidKeys::load_or_create(dir).expect("the state dir takes a key");
    let public = keys.public_key_b64url();
    (WebPush::new(keys, SUBJECT.to_owned(), extra_ca), public)
}

fn ring_message(call_id: &str) -> PushMessage {
    PushMessage {
        payload: serde_json::json!({
            "kind": "ring",
            "call_id": call_id,
            "door": {"id": "door-1", "name": "Front door"},
            "at_ms": 1_767_000_000_000u64,
        })
        .to_string()
        .into_bytes(),
        ttl: Duration::from_secs(30),
        urgency: Urgency::High,
        topic: Some(call_id.to_owned()),
    }
}

async fn send_bounded(push: &WebPush, sub: &Subscription, msg: &PushMessage) -> PushOutcome {
    tokio::time::timeout(Duration::from_secs(20), push.send(sub, msg))
        .await
        .expect("send returns within its own timeout")
}

#[tokio::test]
async fn ring_arrives_decrypted_with_its_headers_and_a_valid_vapid_token() {
    let Some(py) = python() else { return };
    let dir = temp_dir("ring");
    let svc = Service::start(&py, &dir, &[]);
    let (push, public) = sender(&dir, None);

    let msg = ring_message("c4ll-Id_01");
    let outcome = send_bounded(&push, &svc.subscription("201", "flat-1a"), &msg).await;
    assert_eq!(outcome, PushOutcome::Delivered);

    // The end of the call: another urgency, no topic, a payload with
    // non-ASCII text, byte-exact too.
    let end = PushMessage {
        payload: "{\"kind\":\"end\",\"reason\":\"taken\",\"x\":\"Tür\"}"
            .as_bytes()
            .to_vec(),
        ttl: Duration::from_secs(60),
        urgency: Urgency::VeryLow,
        topic: None,
    };
    let outcome = send_bounded(&push, &svc.subscription("201", "flat-1a"), &end).await;
    assert_eq!(outcome, PushOutcome::Delivered);

    let recs = svc.records();
    assert_eq!(recs.len(), 2, "{recs:#?}");
    let r = &recs[0];
    assert_eq!(r["error"], Value::Null, "{r:#?}");
    assert_eq!(r["vapid"]["ok"], true, "{r:#?}");
    assert_eq!(r["vapid"]["claims"]["aud"], svc.origin.as_str());
    assert_eq!(r["vapid"]["claims"]["sub"], SUBJECT);
    assert_eq!(r["vapid"]["k"], public.as_str());
    let plain = B64
        .decode(r["plaintext_b64"].as_str().expect("decrypted"))
        .expect("base64url");
    assert_eq!(plain, msg.payload);
    assert_eq!(r["ttl"], "30");
    assert_eq!(r["urgency"], "high");
    assert_eq!(r["topic"], "c4ll-Id_01");
    assert_eq!(r["content_encoding"], "aes128gcm");
    assert_eq!(r["content_type"], "application/octet-stream");
    assert_eq!(r["status_returned"], 201);

    let r = &recs[1];
    assert_eq!(r["vapid"]["ok"], true, "{r:#?}");
    let plain = B64
        .decode(r["plaintext_b64"].as_str().expect("decrypted"))
        .expect("base64url");
    assert_eq!(plain, end.payload);
    assert_eq!(r["ttl"], "60");
    assert_eq!(r["urgency"], "very-low");
    assert_eq!(r["topic"], Value::Null);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn many_tasks_send_at_once() {
    let Some(py) = python() else { return };
    let dir = temp_dir("many");
    let svc = Service::start(&py, &dir, &[]);
    let (push, _) = sender(&dir, None);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let push = push.clone();
        let sub = svc.subscription("201", &format!("flat-{i}"));
        tasks.push(tokio::spawn(async move {
            let msg = ring_message(&format!("call-{i}"));
            (send_bounded(&push, &sub, &msg).await, msg.payload)
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        let (outcome, payload) = t.await.expect("no send panics");
        assert_eq!(outcome, PushOutcome::Delivered);
        sent.push(payload);
    }
    let mut got: Vec<Vec<u8>> = svc
        .records()
        .iter()
        .map(|r| {
            assert_eq!(r["vapid"]["ok"], true, "{r:#?}");
            B64.decode(r["plaintext_b64"].as_str().expect("decrypted"))
                .expect("base64url")
        })
        .collect();
    sent.sort();
    got.sort();
    assert_eq!(got, sent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn gone_and_refused_subscriptions() {
    let Some(py) = python() else { return };
    let dir = temp_dir("status");
    let svc = Service::start(&py, &dir, &[]);
    let (push, _) = sender(&dir, None);
    let msg = ring_message("call-1");
    for (behaviour, want) in [("410", PushOutcome::Gone), ("404", PushOutcome::Gone)] {
        let got = send_bounded(&push, &svc.subscription(behaviour, "x"), &msg).await;
        assert_eq!(got, want, "{behaviour}");
    }
    match send_bounded(&push, &svc.subscription("500", "x"), &msg).await {
        PushOutcome::Failed(why) => {
            assert!(why.contains("500"), "{why}");
            assert!(
                why.contains("refused with 500"),
                "the body is quoted: {why}"
            );
            assert!(!why.contains("/push/"), "no endpoint path in {why}");
        }
        other => panic!("500 gave {other:?}"),
    }
    // Each of them was a well-formed push; only the answer differed.
    let recs = svc.records();
    assert_eq!(recs.len(), 3);
    assert!(
        recs.iter()
            .all(|r| r["vapid"]["ok"] == true && r["error"].is_null())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_slow_push_service_fails_within_the_timeout() {
    let Some(py) = python() else { return };
    let dir = temp_dir("slow");
    let svc = Service::start(&py, &dir, &[]);
    let (push, _) = sender(&dir, None);
    let started = Instant::now();
    let got = send_bounded(
        &push,
        &svc.subscription("sleep-15", "x"),
        &ring_message("c"),
    )
    .await;
    let took = started.elapsed();
    match got {
        PushOutcome::Failed(why) => assert!(why.contains("within 10 s"), "{why}"),
        other => panic!("a 15 s answer gave {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(9_500) && took < Duration::from_secs(12),
        "took {took:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn malformed_subscription_keys_fail_without_sending() {
    let Some(py) = python() else { return };
    let dir = temp_dir("badkeys");
    let svc = Service::start(&py, &dir, &[]);
    let (push, _) = sender(&dir, None);
    let good = svc.subscription("201", "x");
    let mut off_curve = B64.decode(&good.keys.p256dh).expect("base64url");
    off_curve[64] ^= 1;
    let cases = [
        ("AAAA".to_owned(), good.keys.auth.clone()),
        ("not base64 at all!".to_owned(), good.keys.auth.clone()),
        (B64.encode(off_curve), good.keys.auth.clone()),
        (String::new(), good.keys.auth.clone()),
        (good.keys.p256dh.clone(), "c2hvcnQ".to_owned()),
        (good.keys.p256dh.clone(), String::new()),
    ];
    for (p256dh, auth) in cases {
        let sub = Subscription {
            endpoint: good.endpoint.clone(),
            keys: SubscriptionKeys {
                p256dh: p256dh.clone(),
                auth: auth.clone(),
            },
        };
        match send_bounded(&push, &sub, &ring_message("c")).await {
            PushOutcome::Failed(why) => assert!(!why.is_empty()),
            other => panic!("p256dh={p256dh:?} auth={auth:?} gave {other:?}"),
        }
    }
    assert!(svc.records().is_empty(), "nothing reaches the push service");
    // The sender is still fine afterwards.
    let got = send_bounded(&push, &good, &ring_message("c")).await;
    assert_eq!(got, PushOutcome::Delivered);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vapid_keys_persist_in_a_private_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("persist");
    let a = VapidKeys::load_or_create(&dir).expect("the state dir takes a key");
    let b = VapidKeys::load_or_create(&dir).expect("the stored key loads");
    assert_eq!(a.public_key_b64url(), b.public_key_b64url());
    let mode = std::fs::metadata(dir.join("push/vapid.key"))
        .expect("the key is in push/vapid.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_before_connecting() {
    let dir = temp_dir("plainhttp");
    let (push, _) = sender(&dir, None);
    let started = Instant::now();
    let sub = Subscription {
        endpoint: "http://push.example.invalid/push/201/x".into(),
        keys: SubscriptionKeys {
            p256dh: "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4".into(),
            auth: "BTBZMqHH6r4Tts7J_aSIgg".into(),
        },
    };
    match push.send(&sub, &ring_message("c")).await {
        PushOutcome::Failed(why) => assert!(why.contains("https"), "{why}"),
        other => panic!("plain http gave {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real path: HTTPS, the push service trusted only through `extra_ca`.
#[tokio::test]
async fn https_push_service_trusted_through_extra_ca() {
    let Some(py) = python() else { return };
    let dir = temp_dir("https");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "intercomd push test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(
        params,
        rcgen::KeyPair::generate().expect("key generation works"),
    )
    .expect("CA certificate");
    let leaf_key = rcgen::KeyPair::generate().expect("key generation works");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("valid names")
        .signed_by(&leaf_key, &ca)
        .expect("signed");
    let (ca_pem, cert_pem, key_pem) =
        (dir.join("ca.pem"), dir.join("svc.pem"), dir.join("svc.key"));
    std::fs::write(&ca_pem, ca.pem()).expect("writable");
    std::fs::write(&cert_pem, leaf.pem()).expect("writable");
    std::fs::write(&key_pem, leaf_key.serialize_pem()).expect("writable");
    let svc = Service::start(
        &py,
        &dir,
        &[
            "--cert",
            cert_pem.to_str().expect("utf-8 path"),
            "--key",
            key_pem.to_str().expect("utf-8 path"),
            "--host-name",
            "localhost",
        ],
    );
    assert!(svc.origin.starts_with("https://localhost:"));

    let (untrusting, _) = sender(&dir, None);
    match send_bounded(
        &untrusting,
        &svc.subscription("201", "x"),
        &ring_message("c"),
    )
    .await
    {
        PushOutcome::Failed(why) => assert!(why.contains("certificate"), "{why}"),
        other => panic!("an unknown CA gave {other:?}"),
    }
    let (push, _) = sender(&dir, Some(&ca_pem));
    let msg = ring_message("c");
    let got = send_bounded(&push, &svc.subscription("201", "x"), &msg).await;
    assert_eq!(got, PushOutcome::Delivered);
    let recs = svc.records();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0]["vapid"]["ok"], true, "{:#?}", recs[0]);
    assert_eq!(recs[0]["vapid"]["claims"]["aud"], svc.origin.as_str());
    assert_eq!(
        recs[0]["plaintext"],
        String::from_utf8(msg.payload.clone()).expect("the payload is JSON")
    );

    let (bad_ca, _) = sender(&dir, Some(&dir.join("missing.pem")));
    match send_bounded(&bad_ca, &svc.subscription("201", "x"), &msg).await {
        PushOutcome::Failed(why) => assert!(why.contains("missing.pem"), "{why}"),
        other => panic!("a missing ca_file gave {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
