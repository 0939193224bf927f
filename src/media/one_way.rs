//! A path lost one way, which the stack cannot see: it judges the selected
//! pair alive by the last packet from its remote candidate. When the
//! station's path to the resident dies and the browser moves its own
//! sending to another pair that ends at the same remote candidate (the
//! station's TURN relay to the resident's relay, say), the station hears
//! the resident again and the stack reports nothing, while everything the
//! station sends still goes into the dead path.
//!
//! The resident's RTCP receiver reports tell: the highest sequence number
//! they report for the station's stream stops moving. The watch acts only
//! on that pattern: incoming audio stopped and came back while the stack
//! stayed connected, and the reports have not moved for
//! [`UNHEARD_AFTER`]. Any state change of the connection (an outage the
//! stack saw, an ICE restart) starts the watch afresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::PeerConnection;

/// Browsers send a receiver report on an audio stream every 2.5 to 7.5 s
/// (5 s nominal, randomised): a report that has not moved for longer than
/// that means none of the station's packets arrived in between.
pub(super) const UNHEARD_AFTER: Duration = Duration::from_secs(8);
const POLL: Duration = Duration::from_millis(500);

/// What the receive loop and the actor tell the watch.
#[derive(Default, Debug)]
pub(super) struct OneWayWatch {
    /// Incoming audio stopped (a gap worth a log line) in this period.
    gap: AtomicBool,
    /// ...and came back.
    resumed: AtomicBool,
    /// The connection changed state: start over.
    reset: AtomicBool,
}

impl OneWayWatch {
    pub(super) fn gap(&self) {
        self.gap.store(true, Ordering::Relaxed);
    }

    pub(super) fn resumed(&self) {
        if self.gap.load(Ordering::Relaxed) {
            self.resumed.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn reset(&self) {
        self.gap.store(false, Ordering::Relaxed);
        self.resumed.store(false, Ordering::Relaxed);
        self.reset.store(true, Ordering::Relaxed);
    }
}

/// The reports' progress on the station's stream.
#[derive(Debug, Default)]
pub(super) struct Reports {
    /// The highest sequence number reported, and when it last moved.
    heard: Option<(u64, Instant)>,
}

/// Why the watch fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unheard {
    /// The highest sequence number the resident last reported.
    pub reported: u64,
    /// How long that report has not moved.
    pub still_for: Duration,
}

impl Reports {
    /// One look at the reports (`reported`: `None` before the first) at
    /// `now`. `Some` when the station's audio counts as unheard.
    pub(super) fn check(
        &mut self,
        watch: &OneWayWatch,
        reported: Option<u64>,
        now: Instant,
    ) -> Option<Unheard> {
        if watch.reset.swap(false, Ordering::Relaxed) {
            self.heard = None;
        }
        let reported = reported.filter(|&r| r > 0)?;
        match self.heard {
            Some((r, _)) if r == reported => {}
            _ => {
                self.heard = Some((reported, now));
                return None;
            }
        }
        let (_, since) = self.heard?;
        let still_for = now.saturating_duration_since(since);
        let back = watch.resumed.load(Ordering::Relaxed);
        if !back || still_for < UNHEARD_AFTER {
            return None;
        }
        // Said once; the recovery it starts changes the state (reset).
        watch.gap.store(false, Ordering::Relaxed);
        watch.resumed.store(false, Ordering::Relaxed);
        self.heard = Some((reported, now));
        Some(Unheard {
            reported,
            still_for,
        })
    }
}

/// The highest sequence number the peer reports for the station's stream.
async fn reported(pc: &Arc<dyn PeerConnection>) -> Option<u64> {
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    report.iter().find_map(|e| match e {
        RTCStatsReportEntry::RemoteInboundRtp(s) => {
            Some(s.received_rtp_stream_stats.packets_received)
        }
        _ => None,
    })
}

/// Polls the connection's reports until `cancel`; `unheard` is called each
/// time the watch fires.
pub(super) async fn run(
    pc: Arc<dyn PeerConnection>,
    watch: Arc<OneWayWatch>,
    cancel: CancellationToken,
    unheard: impl Fn(Unheard),
) {
    let mut reports = Reports::default();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let seen = reported(&pc).await;
        if let Some(u) = reports.check(&watch, seen, Instant::now()) {
            unheard(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn fires_only_after_a_gap_that_ended_while_reports_stood_still() {
        let t0 = Instant::now();
        let w = OneWayWatch::default();
        let mut r = Reports::default();
        assert_eq!(r.check(&w, None, t0), None, "no report yet");
        assert_eq!(r.check(&w, Some(100), t0), None);
        // Reports stand still for 20 s, no gap: a quiet network, not a lost path.
        assert_eq!(r.check(&w, Some(100), t0 + s(20)), None);
        // Progress, then a gap and its end while the reports stay at 300.
        assert_eq!(r.check(&w, Some(300), t0 + s(21)), None);
        w.gap();
        assert_eq!(r.check(&w, Some(300), t0 + s(25)), None, "gap not over");
        w.resumed();
        assert_eq!(
            r.check(&w, Some(300), t0 + s(28)),
            None,
            "7 s is within a report interval"
        );
        let u = r
            .check(&w, Some(300), t0 + s(29))
            .expect("8 s without progress");
        assert_eq!((u.reported, u.still_for), (300, s(8)));
        // Said once.
        assert_eq!(r.check(&w, Some(300), t0 + s(40)), None);
    }

    #[test]
    fn a_state_change_starts_over() {
        let t0 = Instant::now();
        let w = OneWayWatch::default();
        let mut r = Reports::default();
        r.check(&w, Some(50), t0);
        w.gap();
        w.resumed();
        // The stack saw the outage (or ICE restarted): the watch starts
        // over, and the reports get a full interval to move.
        w.reset();
        assert_eq!(r.check(&w, Some(50), t0 + s(30)), None);
        assert_eq!(
            r.check(&w, Some(50), t0 + s(45)),
            None,
            "no gap since the reset"
        );
        // Reports moving keep it quiet even after a gap.
        w.gap();
        w.resumed();
        assert_eq!(r.check(&w, Some(60), t0 + s(46)), None);
        assert_eq!(r.check(&w, Some(70), t0 + s(53)), None);
        assert_eq!(r.check(&w, Some(80), t0 + s(60)), None);
    }
}
