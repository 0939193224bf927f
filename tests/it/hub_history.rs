//! The hub's call history: a missed, an answered and a declined call, as a
//! resident's page asks for them with `get_history`, also after the hub
//! restarted on the same state directory; a resident of another group
//! sees none of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use intercomd::signaling::protocol::{CallOutcome, HistoryCall, Message};

use crate::common::*;

const DOOR: &str = "door-token-0123456789abcdef";
const FLAT_1A: &str = "flat1a-token-0123456789abcdef";
const FLAT_1B: &str = "flat1b-token-0123456789abcdef";
const SHOP: &str = "shop-token-0123456789abcdef";

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("intercomd-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    for (name, token) in [
        ("door", DOOR),
        ("flat1a", FLAT_1A),
        ("flat1b", FLAT_1B),
        ("shop", SHOP),
    ] {
        crate::common::write_secret(&dir.join(name), &format!("{token}\n"));
    }
    dir
}

/// The hub of this test's configuration.
struct Hub;

impl Hub {
    async fn start(dir: &Path) -> TestHub {
        let mut toml = format!(
            "[hub]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}/state\"\n[hub.tls]\nmode = \"off\"\n",
            dir.display()
        );
        toml.push_str(&front_door_entry(&dir.join("door")));
        for (id, name, file, group) in [
            ("flat-1a", "Flat 1A", "flat1a", "residents"),
            ("flat-1b", "Flat 1B", "flat1b", "residents"),
            ("shop", "Shop", "shop", "shop"),
        ] {
            toml.push_str(&answerer_entry(id, Some(name), &dir.join(file), group));
        }
        TestHub::start(&toml).await
    }
}

/// The door rings the residents with the call `id`; the hub rings both
/// flats and each of `answerers` is rung.
async fn ring(door: &mut Socket, id: &str, answerers: &mut [&mut Socket]) {
    assert_eq!(ring_residents(door, id).await, 2, "both flats rung");
    for a in answerers {
        recv_until(
            a,
            |m| matches!(m, Message::Ring { call_id, .. } if call_id.as_str() == id),
        )
        .await;
    }
}

/// Asks for the history until it holds `n` calls (the last call's record
/// is written off the hub's routing path, a moment after it ended).
async fn history(ws: &mut Socket, n: usize) -> Vec<HistoryCall> {
    let ask = async || {
        send(ws, &Message::GetHistory { limit: Some(50) }).await;
        let Message::History { calls } =
            recv_until(ws, |m| matches!(m, Message::History { .. })).await
        else {
            unreachable!("matched above")
        };
        calls
    };
    // Fewer than `n` after the time: the caller's checks say what is
    // missing.
    poll_until(Duration::from_secs(10), ask, |calls| calls.len() >= n)
        .await
        .unwrap_or_else(|calls| calls)
}

fn check(calls: &[HistoryCall]) {
    let got: Vec<_> = calls
        .iter()
        .map(|c| (c.call_id.as_str(), c.outcome))
        .collect();
    assert_eq!(
        got,
        [
            ("c-declined", CallOutcome::Declined),
            ("c-answered", CallOutcome::Answered),
            ("c-missed", CallOutcome::Missed),
        ],
        "newest first"
    );
    for c in calls {
        assert_eq!(c.door.id, "door-1");
        assert_eq!(c.door.name, "Front door");
        assert!(!c.quiet_hours);
        assert!(c.started_at_ms > 1_600_000_000_000, "{c:?}");
    }
    let answered = &calls[1];
    assert_eq!(
        answered.answered_by.as_ref().map(|p| p.id.as_str()),
        Some("flat-1a")
    );
    assert_eq!(
        answered.answered_by.as_ref().map(|p| p.name.as_str()),
        Some("Flat 1A")
    );
    assert!(answered.duration_ms.is_some());
    assert!(answered.door_opened);
    for other in [&calls[0], &calls[2]] {
        assert!(other.answered_by.is_none() && other.duration_ms.is_none());
        assert!(!other.door_opened);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_each_outcome_and_survives_a_restart() {
    let dir = temp_dir();
    let hub = Hub::start(&dir).await;
    let mut d = connect_door(&hub.url, DOOR).await;
    let mut a = connect(&hub.url, FLAT_1A).await;
    let mut b = connect(&hub.url, FLAT_1B).await;

    // Missed: nobody answers before the door's ring timeout.
    ring(&mut d, "c-missed", &mut [&mut a, &mut b]).await;
    send(
        &mut d,
        &Message::Cancel {
            call_id: cid("c-missed"),
            reason: "timeout".into(),
        },
    )
    .await;
    recv_until(&mut a, |m| matches!(m, Message::Cancel { .. })).await;
    recv_until(&mut b, |m| matches!(m, Message::Cancel { .. })).await;

    // Answered by 1A, who opens the door, then hung up by the door.
    ring(&mut d, "c-answered", &mut [&mut a, &mut b]).await;
    send(
        &mut a,
        &Message::Accept {
            call_id: cid("c-answered"),
        },
    )
    .await;
    recv_until(&mut d, |m| matches!(m, Message::Accepted { .. })).await;
    recv_until(&mut b, |m| matches!(m, Message::Taken { .. })).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(
        &mut d,
        &Message::DoorOpened {
            call_id: cid("c-answered"),
        },
    )
    .await;
    send(
        &mut d,
        &Message::Hangup {
            call_id: cid("c-answered"),
            reason: "normal".into(),
        },
    )
    .await;
    recv_until(&mut a, |m| matches!(m, Message::Hangup { .. })).await;

    // Declined by both.
    ring(&mut d, "c-declined", &mut [&mut a, &mut b]).await;
    for ws in [&mut a, &mut b] {
        send(
            ws,
            &Message::Decline {
                call_id: cid("c-declined"),
            },
        )
        .await;
    }
    recv_until(&mut d, |m| matches!(m, Message::Declined { .. })).await;

    // The answerers of the group are sent the final history unasked.
    let m = recv_until(
        &mut b,
        |m| matches!(m, Message::History { calls } if calls.len() == 3),
    )
    .await;
    let Message::History { calls } = m else {
        unreachable!("matched above")
    };
    check(&calls);
    check(&history(&mut a, 3).await);

    // Another group's answerer sees none of them.
    let mut shop = connect(&hub.url, SHOP).await;
    assert!(history(&mut shop, 0).await.is_empty());

    drop((d, a, b, shop));
    hub.stop().await;

    // The same state directory after a restart.
    let hub = Hub::start(&dir).await;
    let mut a = connect(&hub.url, FLAT_1A).await;
    check(&history(&mut a, 3).await);
    let mut shop = connect(&hub.url, SHOP).await;
    assert!(history(&mut shop, 0).await.is_empty());
    assert!(
        dir.join("state/hub.sqlite3").is_file(),
        "the database lives in the state directory"
    );
    drop((a, shop));
    hub.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
