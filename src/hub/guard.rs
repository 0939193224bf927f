//! What the hub does about clients that misbehave before or after `hello`,
//! sans-I/O like [`super::state`]: token comparison, a per-source backoff
//! after failed `hello`s, and per-connection summaries of refused frames so
//! that a flood costs one log line per interval, not one per frame.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed `hello`s a source may make before it is slowed down.
pub const FREE_FAILURES: u32 = 5;
/// The delay never grows beyond this.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A source quiet for this long is forgotten (its next failure is free).
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Sources tracked at once; beyond it the one quiet longest is dropped, so
/// a spoofing or many-address attacker costs bounded memory.
pub const MAX_SOURCES: usize = 4096;
/// A source that keeps failing gets one log line per this interval.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// One refusal log line per connection per this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Refused frames before `hello` after which the hub closes the connection.
pub const MAX_ERRORS_BEFORE_HELLO: u32 = 3;

/// A token's SHA-256: every comparison is over 32 bytes, so neither the
/// time taken nor a padded token can tell how long the real one is.
pub fn token_digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equal digests, in time independent of where they differ.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keeps the compiler from short-cutting the loop above.
    std::hint::black_box(diff) == 0
}

/// Where failures are counted: an IPv4 address, or the /64 of an IPv6 one
/// (one host usually owns a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => SourceKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    SourceKey(IpAddr::V6(std::net::Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

#[derive(Debug)]
struct Source {
    failures: u32,
    last_failure: Instant,
    /// No `hello` from this source is evaluated before this.
    blocked_until: Instant,
    /// `hello`s refused unevaluated since the last log line.
    refused: u32,
    /// Failures since the last log line.
    unlogged: u32,
    logged_at: Option<Instant>,
}

/// The delay after the `failures`-th failure: none for the first
/// [`FREE_FAILURES`], then 62 ms doubling to 1 s at the tenth, 2 s at the
/// eleventh, … up to [`MAX_DELAY`].
pub fn delay_after(failures: u32) -> Duration {
    if failures <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let ms = if failures < 10 {
        1000u64 >> (10 - failures)
    } else {
        1000u64.saturating_mul(1u64 << (failures - 10).min(16))
    };
    Duration::from_micros(ms.saturating_mul(1000)).min(MAX_DELAY)
}

/// What to do with a `hello` from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Check the token.
    Evaluate,
    /// Refuse without looking at the token; `log` is a line to write (at
    /// most one per source per [`FAILURE_LOG_INTERVAL`]).
    Refuse { log: Option<String> },
}

/// Failed `hello`s per source, bounded in memory.
#[derive(Debug, Default)]
pub struct HelloBackoff {
    sources: HashMap<SourceKey, Source>,
}

impl HelloBackoff {
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Whether a `hello` from `key` at `now` may be evaluated.
    pub fn check(&mut self, key: SourceKey, now: Instant) -> Verdict {
        let Some(s) = self.sources.get_mut(&key) else {
            return Verdict::Evaluate;
        };
        if now >= s.blocked_until {
            return Verdict::Evaluate;
        }
        s.refused += 1;
        Verdict::Refuse {
            log: Self::maybe_log(key, s, now),
        }
    }

    /// A `hello` from `key` failed. Returns the line to log, if any: every
    /// free failure is logged, later ones at most once per
    /// [`FAILURE_LOG_INTERVAL`].
    pub fn failed(&mut self, key: SourceKey, now: Instant) -> Option<String> {
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            self.forget(now);
            if self.sources.len() >= MAX_SOURCES
                && let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, s)| s.last_failure)
                    .map(|(k, _)| *k)
            {
                self.sources.remove(&oldest);
            }
        }
        let s = self.sources.entry(key).or_insert(Source {
            failures: 0,
            last_failure: now,
            blocked_until: now,
            refused: 0,
            unlogged: 0,
            logged_at: None,
        });
        s.failures = s.failures.saturating_add(1);
        s.unlogged += 1;
        s.last_failure = now;
        s.blocked_until = now + delay_after(s.failures);
        if s.failures <= FREE_FAILURES {
            s.unlogged = 0;
            s.logged_at = Some(now);
            let more = if s.failures == FREE_FAILURES {
                "; further attempts from there are delayed"
            } else {
                ""
            };
            return Some(format!(
                "failed hello {} of {FREE_FAILURES} allowed from {key}{more}",
                s.failures
            ));
        }
        Self::maybe_log(key, s, now)
    }

    fn maybe_log(key: SourceKey, s: &mut Source, now: Instant) -> Option<String> {
        if s.logged_at
            .is_some_and(|t| now.duration_since(t) < FAILURE_LOG_INTERVAL)
        {
            return None;
        }
        let line = format!(
            "failed hellos from {key}: {} in all, {} since the last line, {} refused unevaluated; next evaluated in {} ms",
            s.failures,
            s.unlogged,
            s.refused,
            s.blocked_until.saturating_duration_since(now).as_millis()
        );
        s.logged_at = Some(now);
        s.unlogged = 0;
        s.refused = 0;
        Some(line)
    }

    /// A `hello` from `key` succeeded: its count starts again.
    pub fn succeeded(&mut self, key: SourceKey) {
        self.sources.remove(&key);
    }

    /// Drops sources quiet for [`FORGET_AFTER`].
    pub fn forget(&mut self, now: Instant) {
        self.sources.retain(|_, s| {
            now.duration_since(s.last_failure) < FORGET_AFTER || now < s.blocked_until
        });
    }
}

/// Refused frames of one connection: the first of an interval is logged,
/// the rest counted and summarised.
#[derive(Debug, Default)]
pub struct Refusals {
    logged_at: Option<Instant>,
    /// Refusals not yet in a log line, and the first of them.
    pending: u32,
    first: Option<String>,
    /// Refused frames while the connection had not said `hello`.
    pub before_hello: u32,
}

impl Refusals {
    /// A frame was refused for `reason` (already escaped). Returns the line
    /// to log now, if any.
    pub fn refused(&mut self, reason: String, now: Instant) -> Option<String> {
        if self
            .logged_at
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_INTERVAL)
        {
            self.pending += 1;
            self.first.get_or_insert(reason);
            return None;
        }
        let line = match self.pending {
            0 => format!("refused frame: {reason}"),
            n => format!(
                "refused frame: {reason} (and {n} more since the last line, first: {})",
                self.first.as_deref().unwrap_or("")
            ),
        };
        self.pending = 0;
        self.first = None;
        self.logged_at = Some(now);
        Some(line)
    }

    /// The summary of what was counted, once the interval is over (or
    /// `closing`).
    pub fn summary(&mut self, now: Instant, closing: bool) -> Option<String> {
        if self.pending == 0 {
            return None;
        }
        let since = self.logged_at?;
        let elapsed = now.duration_since(since);
        if !closing && elapsed < REFUSAL_LOG_INTERVAL {
            return None;
        }
        let line = format!(
            "refused {} more frames in {} s, first: {}",
            self.pending,
            elapsed.as_secs(),
            self.first.as_deref().unwrap_or("")
        );
        self.pending = 0;
        self.first = None;
        self.logged_at = Some(now);
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> SourceKey {
        SourceKey::of(s.parse().expect("test address"))
    }

    #[test]
    fn digests_compare_whole_tokens_only() {
        let t = "Zq3x9V1mK8pT2rL5wN7yB4cD6fG0hJ";
        assert!(digests_equal(&token_digest(t), &token_digest(t)));
        let padded = format!("{t}{}", "\0".repeat(256));
        assert!(!digests_equal(&token_digest(t), &token_digest(&padded)));
        assert!(!digests_equal(
            &token_digest(t),
            &token_digest(&t[..t.len() - 1])
        ));
        assert!(!digests_equal(&token_digest(t), &token_digest("")));
    }

    #[test]
    fn delays_double_from_the_sixth_failure() {
        for n in 0..=FREE_FAILURES {
            assert_eq!(delay_after(n), Duration::ZERO, "failure {n}");
        }
        assert_eq!(delay_after(6), Duration::from_micros(62_000));
        assert_eq!(delay_after(9), Duration::from_millis(500));
        assert_eq!(delay_after(10), Duration::from_secs(1));
        assert_eq!(delay_after(11), Duration::from_secs(2));
        assert_eq!(delay_after(20), MAX_DELAY);
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
    }

    /// A client that retries every 10 ms for ten minutes with wrong tokens:
    /// after its tenth failure no two evaluated attempts are closer than a
    /// second.
    #[test]
    fn a_guessing_storm_is_slowed_to_one_evaluation_per_second() {
        let mut b = HelloBackoff::default();
        let me = ip("192.0.2.7");
        let t0 = Instant::now();
        let mut evaluated = Vec::new();
        let mut lines = 0;
        for i in 0..60_000u64 {
            let now = t0 + Duration::from_millis(10 * i);
            match b.check(me, now) {
                Verdict::Evaluate => {
                    evaluated.push(now);
                    lines += usize::from(b.failed(me, now).is_some());
                }
                Verdict::Refuse { log } => lines += usize::from(log.is_some()),
            }
        }
        assert!(evaluated.len() >= 10);
        // The first five are free: evaluated back to back.
        assert_eq!(evaluated[4] - evaluated[0], Duration::from_millis(40));
        for w in evaluated[9..].windows(2) {
            assert!(w[1] - w[0] >= Duration::from_secs(1), "{:?}", w[1] - w[0]);
        }
        // 60 000 attempts; 10 free or nearly so, then 1, 2, 4, … 60 s apart.
        assert!(evaluated.len() <= 25, "{} evaluated", evaluated.len());
        // Five free-failure lines, then one per minute.
        assert!(lines <= 5 + 11, "{lines} log lines");
        // Another address is not slowed down.
        assert_eq!(b.check(ip("192.0.2.8"), t0), Verdict::Evaluate);
    }

    #[test]
    fn success_and_silence_reset_a_source() {
        let mut b = HelloBackoff::default();
        let me = ip("2001:db8::1");
        let t0 = Instant::now();
        for _ in 0..8 {
            b.failed(me, t0);
        }
        // Another host of the same /64 shares the count.
        assert!(matches!(
            b.check(ip("2001:db8::2"), t0),
            Verdict::Refuse { .. }
        ));
        b.succeeded(me);
        assert_eq!(b.check(me, t0), Verdict::Evaluate);
        for _ in 0..8 {
            b.failed(me, t0);
        }
        b.forget(t0 + FORGET_AFTER);
        assert_eq!(b.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut b = HelloBackoff::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            b.failed(
                SourceKey::of(IpAddr::V4(a)),
                t0 + Duration::from_millis(i.into()),
            );
        }
        assert_eq!(b.tracked(), MAX_SOURCES);
    }

    #[test]
    fn refusals_give_one_line_per_interval() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        let mut lines = Vec::new();
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(25 * i);
            lines.extend(r.refused(format!("bad {i}"), now));
            lines.extend(r.summary(now, false));
        }
        // 25 s of frames: a line at 0 s, 10 s and 20 s.
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert_eq!(lines[0], "refused frame: bad 0");
        assert!(
            lines[1].contains("399 more") && lines[1].contains("first: bad 1"),
            "{}",
            lines[1]
        );
        let last = r
            .summary(t0 + Duration::from_secs(25), true)
            .expect("pending");
        assert!(last.starts_with("refused 199 more frames"), "{last}");
        assert_eq!(r.summary(t0 + Duration::from_secs(26), true), None);
    }
}
