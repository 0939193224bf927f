//! Bounds on what a peer can make the station do, sans-I/O: time is an
//! input. A token bucket admits peer requests before they reach an actor;
//! a log throttle turns a flood of refusals into a line per interval that
//! carries the count, so nothing is lost and nothing floods the journal.

use std::time::{Duration, Instant};

/// Admits `burst` requests at once and `per_second` on average after.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: u32,
    per_second: u32,
    /// Tokens in thousandths, so that refill needs no floating point.
    milli_tokens: u64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: u32) -> Self {
        TokenBucket {
            burst,
            per_second,
            milli_tokens: u64::from(burst) * 1000,
            last: None,
        }
    }

    /// Takes one token at `now`; false when none is left.
    pub fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let ms = now.saturating_duration_since(last).as_millis() as u64;
            let refill = ms.saturating_mul(u64::from(self.per_second));
            self.milli_tokens =
                (self.milli_tokens.saturating_add(refill)).min(u64::from(self.burst) * 1000);
        }
        self.last = Some(now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// Decides when a repeated event is worth a log line: the first at once,
/// then at most one per `interval`, each carrying how many happened since
/// the previous line.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    interval: Duration,
    last_line: Option<Instant>,
    unreported: u64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            last_line: None,
            unreported: 0,
        }
    }

    /// Counts one event at `now`. `Some(n)`: write a line now for `n`
    /// events (this one included); `None`: counted for a later line.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }

    /// Events counted but not yet reported, reset: for a last line when
    /// the source goes away, or on a periodic check.
    pub fn take_unreported(&mut self, now: Instant) -> Option<u64> {
        if self.unreported == 0 {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }

    /// True when events wait and a line for them is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.unreported > 0
            && self
                .last_line
                .is_none_or(|t| now.saturating_duration_since(t) >= self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_admits_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(4, 2);
        let first: usize = (0..100).filter(|_| b.admit(t0)).count();
        assert_eq!(first, 4);
        // 2 per second afterwards: 10 s of a flood admit 20.
        let later = (1..=10_000u64).filter(|i| b.admit(t0 + ms(*i))).count();
        assert_eq!(later, 20);
        // Idle time refills up to the burst, not beyond.
        let t = t0 + ms(60_000);
        assert_eq!((0..100).filter(|_| b.admit(t)).count(), 4);
    }

    #[test]
    fn throttle_writes_one_line_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut l = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(l.hit(t0), Some(1));
        let lines: Vec<u64> = (1..=30_000u64).filter_map(|i| l.hit(t0 + ms(i))).collect();
        // 30 s of events: lines at 10, 20 and 30 s.
        assert_eq!(lines, vec![10_000, 10_000, 10_000]);
        assert!(!l.due(t0 + ms(30_001)));
        l.hit(t0 + ms(30_500));
        assert!(!l.due(t0 + ms(35_000)));
        assert!(l.due(t0 + ms(40_000)));
        assert_eq!(l.take_unreported(t0 + ms(40_000)), Some(1));
        assert_eq!(l.take_unreported(t0 + ms(40_000)), None);
    }
}
