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

/// Decides when a repeated event is worth a log line: the first `burst`
/// of each `interval` at once, one line each; the rest are counted, and the
/// next line (when the next interval starts) carries how many happened
/// since the previous one.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    interval: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    unreported: u64,
}

impl LogThrottle {
    /// One line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self::with_burst(interval, 1)
    }

    /// `burst` lines per `interval`: the few events of normal use each get
    /// their own line; a flood becomes a count.
    pub fn with_burst(interval: Duration, burst: u32) -> Self {
        LogThrottle {
            interval,
            burst: burst.max(1),
            window_start: None,
            in_window: 0,
            unreported: 0,
        }
    }

    fn window_over(&self, now: Instant) -> bool {
        self.window_start
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval)
    }

    /// Counts one event at `now`. `Some(n)`: write a line now for `n`
    /// events (this one included); `None`: counted for a later line.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        if self.window_over(now) {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= self.burst {
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.unreported))
    }

    /// Events counted but not yet reported, reset: for a last line when
    /// the source goes away, or when [`due`](Self::due).
    pub fn take_unreported(&mut self) -> Option<u64> {
        (self.unreported > 0).then(|| std::mem::take(&mut self.unreported))
    }

    /// When the events waiting may be reported (`None`: none wait).
    pub fn due_at(&self) -> Option<Instant> {
        // A counted event always started a window (see `hit`).
        (self.unreported > 0)
            .then_some(self.window_start)
            .flatten()
            .map(|t| t + self.interval)
    }

    /// True when events wait and their interval is over at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.unreported > 0 && self.window_over(now)
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
        assert_eq!(l.take_unreported(), Some(1));
        assert_eq!(l.take_unreported(), None);
    }

    #[test]
    fn a_burst_gets_a_line_each_then_a_count() {
        let t0 = Instant::now();
        let mut l = LogThrottle::with_burst(Duration::from_secs(10), 5);
        let first: Vec<_> = (0..5u64).map(|i| l.hit(t0 + ms(i))).collect();
        assert_eq!(first, vec![Some(1); 5]);
        assert_eq!((5..1000u64).filter_map(|i| l.hit(t0 + ms(i))).count(), 0);
        // The next window: its first line carries the 995 counted.
        assert_eq!(l.hit(t0 + ms(10_000)), Some(996));
        assert_eq!(l.hit(t0 + ms(10_001)), Some(1));
    }
}
