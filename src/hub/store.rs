//! The hub's own data (push subscriptions, call history) in one embedded
//! SQLite database, `<hub.state_dir>/hub.sqlite3`, behind the narrow
//! [`HubStore`] interface so that the routing logic never sees SQL.
//!
//! All database work runs on one dedicated thread fed by a bounded queue
//! ([`StoreWorker`]): the hub's actor only ever `try_send`s, so a slow,
//! locked or broken database can cost history and push, never a ring.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params, params_from_iter};
use tracing::{info, warn};

use super::push::{Subscription, SubscriptionKeys};
use crate::signaling::protocol::{CallOutcome, HistoryCall, PeerInfo};

pub const FILE_NAME: &str = "hub.sqlite3";
/// History kept: older calls are dropped as new ones come in.
const MAX_CALLS: u32 = 5000;
/// How long a statement waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);
const QUEUE: usize = 256;
/// At most one database error line per this long (plus a count).
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[error("hub database {}: {cause}", path.display())]
pub struct StoreError {
    pub path: PathBuf,
    pub cause: String,
}

/// A call as it starts ringing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call_id: String,
    pub door: PeerInfo,
    pub group: String,
    pub started_at_ms: u64,
    /// Members of the group that were not rung because of quiet hours.
    pub quiet: Vec<String>,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    pub call_id: String,
    pub outcome: CallOutcome,
    pub answered_by: Option<PeerInfo>,
    pub duration_ms: Option<u64>,
    pub door_opened: bool,
}

/// A write the hub's routing logic asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Adds the subscription, or replaces the one with the same endpoint.
    SaveSubscription {
        answerer: String,
        subscription: Subscription,
        at_ms: u64,
    },
    /// `answerer`: only that answerer's (`None`: whoever's, for a push
    /// service saying the endpoint is gone).
    DeleteSubscription {
        answerer: Option<String>,
        endpoint: String,
    },
    InsertCall(CallRecord),
    FinishCall(CallEnd),
}

/// The hub's storage. Implemented by SQLite here; a clustered hub could
/// put the same data in a server database.
pub trait HubStore: Send {
    fn save_subscription(
        &mut self,
        answerer: &str,
        sub: &Subscription,
        at_ms: u64,
    ) -> Result<(), StoreError>;
    /// Whether there was one.
    fn delete_subscription(
        &mut self,
        answerer: Option<&str>,
        endpoint: &str,
    ) -> Result<bool, StoreError>;
    /// Every subscription of these answerers, oldest first.
    fn subscriptions(
        &mut self,
        answerers: &[String],
    ) -> Result<Vec<(String, Subscription)>, StoreError>;
    /// A repeated insert of the same call (a door resuming after a hub
    /// restart) keeps the first.
    fn insert_call(&mut self, rec: &CallRecord) -> Result<(), StoreError>;
    fn finish_call(&mut self, end: &CallEnd) -> Result<(), StoreError>;
    /// Finished calls of these groups, newest first; `quiet_hours` as seen
    /// by `answerer`.
    fn history(
        &mut self,
        groups: &[String],
        answerer: &str,
        limit: u32,
    ) -> Result<Vec<HistoryCall>, StoreError>;

    fn apply(&mut self, op: &StoreOp) -> Result<(), StoreError> {
        match op {
            StoreOp::SaveSubscription {
                answerer,
                subscription,
                at_ms,
            } => self.save_subscription(answerer, subscription, *at_ms),
            StoreOp::DeleteSubscription { answerer, endpoint } => self
                .delete_subscription(answerer.as_deref(), endpoint)
                .map(|_| ()),
            StoreOp::InsertCall(r) => self.insert_call(r),
            StoreOp::FinishCall(e) => self.finish_call(e),
        }
    }
}

pub struct SqliteStore {
    path: PathBuf,
    db: Connection,
}

/// Schema versions, applied in order; `PRAGMA user_version` counts those
/// done. Never edit one that shipped: append.
const MIGRATIONS: &[&str] = &[
    // 1: subscriptions and calls.
    "CREATE TABLE push_subscriptions (
         endpoint TEXT PRIMARY KEY,
         answerer TEXT NOT NULL,
         p256dh TEXT NOT NULL,
         auth TEXT NOT NULL,
         created_at_ms INTEGER NOT NULL
     );
     CREATE INDEX push_subscriptions_answerer ON push_subscriptions(answerer);
     CREATE TABLE calls (
         call_id TEXT PRIMARY KEY,
         door_id TEXT NOT NULL,
         door_name TEXT NOT NULL,
         ring_group TEXT NOT NULL,
         started_at_ms INTEGER NOT NULL,
         outcome TEXT,
         answered_by_id TEXT,
         answered_by_name TEXT,
         duration_ms INTEGER,
         door_opened INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX calls_group_started ON calls(ring_group, started_at_ms);
     CREATE INDEX calls_started ON calls(started_at_ms);
     CREATE TABLE call_quiet (
         call_id TEXT NOT NULL REFERENCES calls(call_id) ON DELETE CASCADE,
         answerer TEXT NOT NULL,
         PRIMARY KEY (call_id, answerer)
     );",
];

impl SqliteStore {
    /// Opens (creating) `<state_dir>/hub.sqlite3` and brings its schema up
    /// to date. Calls left unfinished by an earlier run become `failed`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join(FILE_NAME);
        super::tls::ensure_private_dir(state_dir).map_err(|e| StoreError {
            path: path.clone(),
            cause: e.to_string(),
        })?;
        let err = |e: rusqlite::Error| StoreError {
            path: path.clone(),
            cause: describe(&e),
        };
        let db = Connection::open(&path).map_err(err)?;
        db.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // Reading the mode back fails on a file that is not a database.
        let mode: String = db
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!(file = %path.display(), mode = %mode, "hub database is not in WAL mode");
        }
        db.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(err)?;
        let mut store = SqliteStore { path, db };
        store.migrate()?;
        store
            .db
            .execute(
                "UPDATE calls SET outcome = 'failed' WHERE outcome IS NULL",
                [],
            )
            .map_err(|e| store.err(e))?;
        store.prune()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            cause: describe(&e),
        }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let done: i64 = self
            .db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if done as usize > MIGRATIONS.len() {
            return Err(StoreError {
                path: self.path.clone(),
                cause: format!(
                    "schema version {done} is newer than this build knows ({}): written by a newer intercomd",
                    MIGRATIONS.len()
                ),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            let tx = self.db.transaction().map_err(|e| StoreError {
                path: self.path.clone(),
                cause: describe(&e),
            })?;
            tx.execute_batch(sql)
                .and_then(|_| tx.pragma_update(None, "user_version", (i + 1) as i64))
                .and_then(|_| tx.commit())
                .map_err(|e| self.err(e))?;
            info!(file = %self.path.display(), version = i + 1, "hub database schema updated");
        }
        Ok(())
    }

    fn prune(&mut self) -> Result<(), StoreError> {
        self.db
            .execute(
                "DELETE FROM calls WHERE call_id IN
                   (SELECT call_id FROM calls ORDER BY started_at_ms DESC LIMIT -1 OFFSET ?1)",
                [MAX_CALLS],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// The cause in words a technician can act on.
fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode as C;
    let what = match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked) => "locked by another process",
        Some(C::NotADatabase | C::DatabaseCorrupt) => "not a database or corrupt",
        Some(C::DiskFull) => "disk full",
        Some(C::ReadOnly | C::PermissionDenied | C::CannotOpen) => "cannot write or open",
        Some(C::SystemIoFailure) => "I/O error",
        _ => "",
    };
    if what.is_empty() {
        e.to_string()
    } else {
        format!("{what} ({e})")
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl HubStore for SqliteStore {
    fn save_subscription(
        &mut self,
        answerer: &str,
        sub: &Subscription,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO push_subscriptions (endpoint, answerer, p256dh, auth, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(endpoint) DO UPDATE SET answerer = ?2, p256dh = ?3, auth = ?4,
                     created_at_ms = ?5",
                params![
                    sub.endpoint,
                    answerer,
                    sub.keys.p256dh,
                    sub.keys.auth,
                    i64_of(at_ms)
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn delete_subscription(
        &mut self,
        answerer: Option<&str>,
        endpoint: &str,
    ) -> Result<bool, StoreError> {
        let n = match answerer {
            Some(a) => self.db.execute(
                "DELETE FROM push_subscriptions WHERE endpoint = ?1 AND answerer = ?2",
                params![endpoint, a],
            ),
            None => self.db.execute(
                "DELETE FROM push_subscriptions WHERE endpoint = ?1",
                params![endpoint],
            ),
        };
        n.map(|n| n > 0).map_err(|e| self.err(e))
    }

    fn subscriptions(
        &mut self,
        answerers: &[String],
    ) -> Result<Vec<(String, Subscription)>, StoreError> {
        if answerers.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; answerers.len()].join(",");
        let sql = format!(
            "SELECT answerer, endpoint, p256dh, auth FROM push_subscriptions
             WHERE answerer IN ({marks}) ORDER BY created_at_ms, rowid"
        );
        let run = || -> rusqlite::Result<Vec<(String, Subscription)>> {
            let mut st = self.db.prepare(&sql)?;
            let rows = st.query_map(params_from_iter(answerers), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Subscription {
                        endpoint: r.get(1)?,
                        keys: SubscriptionKeys {
                            p256dh: r.get(2)?,
                            auth: r.get(3)?,
                        },
                    },
                ))
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    fn insert_call(&mut self, rec: &CallRecord) -> Result<(), StoreError> {
        let run = |db: &mut Connection| -> rusqlite::Result<()> {
            let tx = db.transaction()?;
            let new = tx.execute(
                "INSERT INTO calls (call_id, door_id, door_name, ring_group, started_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(call_id) DO NOTHING",
                params![
                    rec.call_id,
                    rec.door.id,
                    rec.door.name,
                    rec.group,
                    i64_of(rec.started_at_ms)
                ],
            )?;
            if new > 0 {
                for a in &rec.quiet {
                    tx.execute(
                        "INSERT OR IGNORE INTO call_quiet (call_id, answerer) VALUES (?1, ?2)",
                        params![rec.call_id, a],
                    )?;
                }
            }
            tx.commit()
        };
        run(&mut self.db).map_err(|e| self.err(e))?;
        self.prune()
    }

    fn finish_call(&mut self, end: &CallEnd) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE calls SET outcome = ?2, answered_by_id = ?3, answered_by_name = ?4,
                     duration_ms = ?5, door_opened = ?6
                 WHERE call_id = ?1",
                params![
                    end.call_id,
                    end.outcome.as_str(),
                    end.answered_by.as_ref().map(|p| p.id.as_str()),
                    end.answered_by.as_ref().map(|p| p.name.as_str()),
                    end.duration_ms.map(i64_of),
                    end.door_opened
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn history(
        &mut self,
        groups: &[String],
        answerer: &str,
        limit: u32,
    ) -> Result<Vec<HistoryCall>, StoreError> {
        if groups.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; groups.len()].join(",");
        let sql = format!(
            "SELECT c.call_id, c.door_id, c.door_name, c.started_at_ms, c.outcome,
                    c.answered_by_id, c.answered_by_name, c.duration_ms, c.door_opened,
                    EXISTS (SELECT 1 FROM call_quiet q
                            WHERE q.call_id = c.call_id AND q.answerer = ?1)
             FROM calls c
             WHERE c.outcome IS NOT NULL AND c.ring_group IN ({marks})
             ORDER BY c.started_at_ms DESC, c.rowid DESC
             LIMIT {limit}"
        );
        let mut args: Vec<&str> = vec![answerer];
        args.extend(groups.iter().map(String::as_str));
        let run = || -> rusqlite::Result<Vec<HistoryCall>> {
            let mut st = self.db.prepare(&sql)?;
            let rows = st.query_map(params_from_iter(args), |r| {
                let outcome: String = r.get(4)?;
                let by_id: Option<String> = r.get(5)?;
                let by_name: Option<String> = r.get(6)?;
                let duration: Option<i64> = r.get(7)?;
                Ok(HistoryCall {
                    call_id: r.get(0)?,
                    door: PeerInfo {
                        id: r.get(1)?,
                        name: r.get(2)?,
                    },
                    started_at_ms: r.get::<_, i64>(3)?.max(0) as u64,
                    outcome: CallOutcome::parse(&outcome).unwrap_or(CallOutcome::Failed),
                    answered_by: by_id.map(|id| PeerInfo {
                        id,
                        name: by_name.unwrap_or_default(),
                    }),
                    duration_ms: duration.map(|d| d.max(0) as u64),
                    door_opened: r.get(8)?,
                    quiet_hours: r.get(9)?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }
}

/// A job for the database thread.
pub type Job = Box<dyn FnOnce(&mut dyn HubStore) -> Result<(), StoreError> + Send>;

/// The database thread's queue. Cloning is cheap; every send is
/// non-blocking.
#[derive(Clone)]
pub struct StoreWorker {
    tx: SyncSender<Job>,
    path: PathBuf,
    dropped: std::sync::Arc<std::sync::Mutex<Throttle>>,
}

impl StoreWorker {
    /// Starts the thread that owns `store`. It ends when every handle is
    /// dropped.
    pub fn spawn(mut store: Box<dyn HubStore>, path: PathBuf) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let shown = path.clone();
        std::thread::Builder::new()
            .name("hub-db".into())
            .spawn(move || {
                let mut throttle = Throttle::default();
                while let Ok(job) = rx.recv() {
                    if let Err(e) = job(store.as_mut()) {
                        throttle.warn(|n| {
                            warn!(file = %shown.display(), cause = %e.cause, suppressed = n, "hub database write or read failed; history and push subscriptions may be incomplete")
                        });
                    }
                }
            })?;
        Ok(Self {
            tx,
            path,
            dropped: Default::default(),
        })
    }

    /// Queues a job; a full queue drops it (logged, rate-limited) rather
    /// than wait.
    pub fn submit(&self, job: Job) {
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let mut t = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
                t.warn(|n| warn!(file = %self.path.display(), suppressed = n, "hub database is too slow: a write or read was dropped"));
            }
            Err(TrySendError::Disconnected(_)) => {
                let mut t = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
                t.warn(|n| warn!(file = %self.path.display(), suppressed = n, "hub database thread has stopped: a write or read was dropped"));
            }
        }
    }

    pub fn apply(&self, op: StoreOp) {
        self.submit(Box::new(move |s| s.apply(&op)));
    }
}

/// One log line per [`LOG_EVERY`], saying how many were held back.
struct Throttle(crate::limits::LogThrottle);

impl Default for Throttle {
    fn default() -> Self {
        Throttle(crate::limits::LogThrottle::new(LOG_EVERY))
    }
}

impl Throttle {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        // `hit` counts this event too.
        if let Some(n) = self.0.hit(Instant::now()) {
            log(n - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("intercomd-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn sub(n: u8) -> Subscription {
        Subscription {
            endpoint: format!("https://push.example.net/send/{n}"),
            keys: SubscriptionKeys {
                p256dh: format!("p{n}"),
                auth: format!("a{n}"),
            },
        }
    }

    fn peer(id: &str) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            name: id.to_uppercase(),
        }
    }

    fn rec(id: &str, group: &str, at: u64, quiet: &[&str]) -> CallRecord {
        CallRecord {
            call_id: id.into(),
            door: peer("door-1"),
            group: group.into(),
            started_at_ms: at,
            quiet: quiet.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn end(id: &str, outcome: CallOutcome, by: Option<&str>) -> CallEnd {
        CallEnd {
            call_id: id.into(),
            outcome,
            answered_by: by.map(peer),
            duration_ms: by.map(|_| 4200),
            door_opened: by.is_some(),
        }
    }

    #[test]
    fn subscriptions_round_trip_and_survive_reopen() {
        let d = dir("subs");
        let mut s = SqliteStore::open(&d).expect("opens");
        s.save_subscription("flat-1a", &sub(1), 1).unwrap();
        s.save_subscription("flat-1a", &sub(2), 2).unwrap();
        s.save_subscription("flat-2b", &sub(3), 3).unwrap();
        // The same endpoint again replaces (here: moves to another flat).
        let mut moved = sub(2);
        moved.keys.auth = "new".into();
        s.save_subscription("flat-2b", &moved, 4).unwrap();
        let all = s
            .subscriptions(&["flat-1a".into(), "flat-2b".into()])
            .unwrap();
        assert_eq!(
            all,
            vec![
                ("flat-1a".into(), sub(1)),
                ("flat-2b".into(), sub(3)),
                ("flat-2b".into(), moved.clone())
            ]
        );
        // Only its owner removes it by name; a gone endpoint goes anyway.
        assert!(
            !s.delete_subscription(Some("flat-1a"), &sub(3).endpoint)
                .unwrap()
        );
        assert!(
            s.delete_subscription(Some("flat-2b"), &sub(3).endpoint)
                .unwrap()
        );
        assert!(s.delete_subscription(None, &sub(1).endpoint).unwrap());
        drop(s);
        let mut s = SqliteStore::open(&d).expect("reopens");
        assert_eq!(
            s.subscriptions(&["flat-1a".into(), "flat-2b".into()])
                .unwrap(),
            vec![("flat-2b".into(), moved)]
        );
        assert!(s.subscriptions(&[]).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn history_is_newest_first_per_group_and_survives_reopen() {
        let d = dir("history");
        let mut s = SqliteStore::open(&d).expect("opens");
        s.insert_call(&rec("c1", "g", 1000, &[])).unwrap();
        s.finish_call(&end("c1", CallOutcome::Missed, None))
            .unwrap();
        s.insert_call(&rec("c2", "g", 2000, &["flat-1a"])).unwrap();
        s.finish_call(&end("c2", CallOutcome::Answered, Some("flat-2b")))
            .unwrap();
        s.insert_call(&rec("c3", "other", 3000, &[])).unwrap();
        s.finish_call(&end("c3", CallOutcome::Declined, None))
            .unwrap();
        // Ringing: not in the history yet; a repeated insert is ignored.
        s.insert_call(&rec("c4", "g", 4000, &[])).unwrap();
        s.insert_call(&rec("c4", "g", 5000, &["x"])).unwrap();
        let h = s.history(&["g".into()], "flat-1a", 50).unwrap();
        let ids: Vec<_> = h.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(ids, ["c2", "c1"]);
        assert_eq!(h[0].outcome, CallOutcome::Answered);
        assert_eq!(h[0].answered_by, Some(peer("flat-2b")));
        assert_eq!(h[0].duration_ms, Some(4200));
        assert!(h[0].door_opened && h[0].quiet_hours);
        assert_eq!(h[1].outcome, CallOutcome::Missed);
        assert!(!h[1].quiet_hours && h[1].answered_by.is_none());
        // Quiet is per answerer.
        assert!(!s.history(&["g".into()], "flat-2b", 50).unwrap()[0].quiet_hours);
        assert_eq!(s.history(&["g".into()], "flat-1a", 1).unwrap().len(), 1);
        assert!(
            s.history(&["nobody".into()], "flat-1a", 50)
                .unwrap()
                .is_empty()
        );
        drop(s);
        // A call left ringing by the previous run is failed after reopening.
        let mut s = SqliteStore::open(&d).expect("reopens");
        let h = s
            .history(&["g".into(), "other".into()], "flat-1a", 50)
            .unwrap();
        let got: Vec<_> = h.iter().map(|c| (c.call_id.as_str(), c.outcome)).collect();
        assert_eq!(
            got,
            [
                ("c4", CallOutcome::Failed),
                ("c3", CallOutcome::Declined),
                ("c2", CallOutcome::Answered),
                ("c1", CallOutcome::Missed)
            ]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let d = dir("corrupt");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        let e = SqliteStore::open(&d).err().expect("refused");
        let text = e.to_string();
        assert!(text.contains("hub.sqlite3"), "{text}");
        assert!(text.contains("not a database"), "{text}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unusable_state_dir_is_an_error_naming_the_file() {
        let d = dir("notadir");
        std::fs::write(&d, b"a file where the directory should be").unwrap();
        let e = SqliteStore::open(&d).err().expect("refused");
        assert!(e.to_string().contains("hub.sqlite3"), "{e}");
        let _ = std::fs::remove_file(&d);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let d = dir("newer");
        drop(SqliteStore::open(&d).unwrap());
        let c = Connection::open(d.join(FILE_NAME)).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = SqliteStore::open(&d).err().expect("refused");
        assert!(e.to_string().contains("newer"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_worker_runs_jobs_in_order_and_survives_errors() {
        let d = dir("worker");
        let s = SqliteStore::open(&d).unwrap();
        let w = StoreWorker::spawn(Box::new(s), d.join(FILE_NAME)).unwrap();
        w.apply(StoreOp::InsertCall(rec("c1", "g", 1, &[])));
        w.submit(Box::new(|_| {
            Err(StoreError {
                path: "x".into(),
                cause: "test".into(),
            })
        }));
        w.apply(StoreOp::FinishCall(end("c1", CallOutcome::Missed, None)));
        let (tx, rx) = mpsc::channel();
        w.submit(Box::new(move |s| {
            let _ = tx.send(s.history(&["g".into()], "a", 10)?);
            Ok(())
        }));
        let h = rx.recv_timeout(Duration::from_secs(5)).expect("answered");
        assert_eq!(h.len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
