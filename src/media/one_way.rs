//! A path lost one way, which the stack cannot see: it judges the selected
//! pair alive by the last packet from its remote candidate. When the
//! station's path to the resident dies and the browser moves its own
//! sending to another pair that ends at the same remote candidate (the
//! station's TURN relay to the resident's relay, say), the station hears
//! the resident again and the stack reports nothing, while everything the
//! station sends still goes into the dead path.
//!
//! The resident's RTCP reports tell: each report block gives the highest
//! sequence number received from the station, and the station knows when
//! it sent that packet. When the resident's audio stopped and came back,
//! and [`HOLD`] after it came back the latest report (one that came since)
//! is still about a packet sent before the break, nothing the station sent
//! since the break arrived. (A slow receiver, a virtual machine under load
//! say, can send one such report too, but its next ones move on.)
//! Browsers that send audio carry their report blocks in sender reports,
//! which the stack's statistics do not read (they count receiver reports
//! only), so a small interceptor, [`ReportTap`], notes the packets sent
//! and reads both kinds of report. The watch acts only on the pattern
//! above: incoming audio stopped and came back while the stack stayed
//! connected, and a report since shows the lag. Any state change of the
//! connection (an outage the stack saw, an ICE restart) starts the watch
//! afresh.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use tokio_util::sync::CancellationToken;

/// How long after the resident's audio came back the reports may still
/// be about packets from before the break. Receivers report every 1 to
/// 7.5 s; a slow one in the emulated board reported 2.4 s late about
/// packets from before its 1.4 s stall, then moved on.
pub(super) const HOLD: Duration = Duration::from_secs(4);
/// Both directions of a path break at once, give or take the packets in
/// flight: the station's last packet through may have left this much after
/// the resident's last one came.
const SAME_BREAK: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(200);
/// Packets sent that a report can be matched with: 20 s at 50 a second.
const SENT_KEPT: usize = 1024;

/// What the receive loop, the actor and the report tap tell the watch.
#[derive(Default, Debug)]
pub(super) struct OneWayWatch {
    /// Incoming audio stopped (a gap worth a log line) in this period.
    gap: AtomicBool,
    /// ...and came back.
    resumed: AtomicBool,
    /// The connection changed state: start over.
    reset: AtomicBool,
    /// The highest sequence number in the last report (extended).
    reported: AtomicU64,
    /// How long before that report its newest packet was sent, in ms.
    lag_ms: AtomicU64,
    /// When that newest packet was sent and the report came, and when the
    /// resident's audio last arrived before the gap and came back.
    times: std::sync::Mutex<Times>,
}

#[derive(Default, Debug)]
struct Times {
    newest_sent: Option<Instant>,
    report_at: Option<Instant>,
    gap_from: Option<Instant>,
    resumed_at: Option<Instant>,
}

impl OneWayWatch {
    /// Incoming audio stopped; the last packet came at `last`.
    pub(super) fn gap(&self, last: Instant) {
        self.times().gap_from = Some(last);
        self.gap.store(true, Ordering::Relaxed);
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        // Plain data: a panic elsewhere while holding it leaves it usable.
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Incoming audio came back at `now`.
    pub(super) fn resumed(&self, now: Instant) {
        if self.gap.load(Ordering::Relaxed) {
            self.times().resumed_at = Some(now);
            self.resumed.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn reset(&self) {
        self.gap.store(false, Ordering::Relaxed);
        self.resumed.store(false, Ordering::Relaxed);
        self.reset.store(true, Ordering::Relaxed);
    }

    /// A report arrived at `now`: its newest packet, sent `lag` before (at
    /// `sent`, when the packet is still known).
    fn report(&self, reported: u64, lag: Duration, sent: Option<Instant>, now: Instant) {
        {
            let mut t = self.times();
            t.newest_sent = sent;
            t.report_at = Some(now);
        }
        self.reported.store(reported, Ordering::Relaxed);
        let ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        self.lag_ms.store(ms, Ordering::Relaxed);
    }
}

/// Why the watch fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unheard {
    /// The highest sequence number the resident last reported.
    pub reported: u64,
    /// How long before that report its newest packet had been sent.
    pub lag: Duration,
}

impl OneWayWatch {
    /// Looks at the reports at `now`: `Some` when the station's audio
    /// counts as unheard.
    pub(super) fn check(&self, now: Instant) -> Option<Unheard> {
        let watch = self;
        if watch.reset.swap(false, Ordering::Relaxed) || !watch.resumed.load(Ordering::Relaxed) {
            return None;
        }
        let unheard = {
            let t = watch.times();
            let (Some(gap), Some(back), Some(report)) = (t.gap_from, t.resumed_at, t.report_at)
            else {
                return None;
            };
            // Sent before the break (or too long ago to be known).
            let before = t.newest_sent.is_none_or(|sent| sent <= gap + SAME_BREAK);
            // A report on the new path can come just ahead of its audio.
            report + SAME_BREAK > back && before && now >= back + HOLD
        };
        if !unheard {
            return None;
        }
        // Said once; the recovery it starts changes the state (reset).
        watch.gap.store(false, Ordering::Relaxed);
        watch.resumed.store(false, Ordering::Relaxed);
        let reported = watch.reported.load(Ordering::Relaxed);
        let lag = Duration::from_millis(watch.lag_ms.load(Ordering::Relaxed));
        Some(Unheard { reported, lag })
    }
}

/// Polls the reports until `cancel`; `unheard` is called each time the
/// watch fires.
pub(super) async fn run(
    watch: Arc<OneWayWatch>,
    cancel: CancellationToken,
    unheard: impl Fn(Unheard),
) {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(u) = watch.check(Instant::now()) {
            unheard(u);
        }
    }
}

/// An interceptor that passes everything on, notes when each RTP packet
/// left, and tells a [`OneWayWatch`] about incoming report blocks. The
/// station sends one stream, so every block the peer sends is about it.
pub(super) struct ReportTap {
    watch: Arc<OneWayWatch>,
    /// Sequence numbers sent, and when: the newest last.
    sent: VecDeque<(u16, Instant)>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl ReportTap {
    pub(super) fn new(watch: Arc<OneWayWatch>) -> Self {
        ReportTap {
            watch,
            sent: VecDeque::with_capacity(SENT_KEPT),
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    /// A report block's newest packet (extended sequence number) at `now`.
    fn block(&self, highest: u32, now: Instant) {
        // The low 16 bits are the packet's own sequence number.
        let seq = highest as u16;
        let sent = self
            .sent
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, at)| *at);
        let lag = sent.map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        self.watch.report(u64::from(highest), lag, sent, now);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ReportTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                let any = p.as_any();
                let blocks = match (
                    any.downcast_ref::<SenderReport>(),
                    any.downcast_ref::<ReceiverReport>(),
                ) {
                    (Some(sr), _) => &sr.reports,
                    (None, Some(rr)) => &rr.reports,
                    (None, None) => continue,
                };
                if let Some(highest) = blocks.iter().map(|b| b.last_sequence_number).max() {
                    self.block(highest, msg.now);
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &msg.message.packet {
            if self.sent.len() == SENT_KEPT {
                self.sent.pop_front();
            }
            self.sent.push_back((p.header.sequence_number, msg.now));
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for ReportTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn fires_when_reports_stay_before_the_break() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + s(n);
        let w = OneWayWatch::default();
        assert_eq!(w.check(at(0)), None, "no report yet");
        // A lagging report without a gap: a stall both ways, which the
        // stack notices itself.
        w.report(100, s(6), Some(at(0)), at(6));
        assert_eq!(w.check(at(20)), None);
        // The resident's audio stops (last packet at 10 s), comes back at 14 s.
        w.gap(at(10));
        w.resumed(at(14));
        // A report at 15 s about a packet from before the break...
        w.report(300, s(6), Some(at(9)), at(15));
        assert_eq!(w.check(at(16)), None, "within the hold");
        // ...still the latest at 18 s: nothing since the break arrived.
        let u = w.check(at(18)).expect("unheard");
        assert_eq!((u.reported, u.lag), (300, s(6)));
        // Said once.
        assert_eq!(w.check(at(19)), None);
    }

    #[test]
    fn a_slow_receiver_moves_on() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + s(n);
        let w = OneWayWatch::default();
        w.gap(at(10));
        w.resumed(at(11));
        w.report(300, s(3), Some(at(10)), at(12));
        assert_eq!(w.check(at(13)), None);
        // The next report is about packets sent after the break.
        w.report(420, s(1), Some(at(13)), at(14));
        assert_eq!(w.check(at(16)), None);
        assert_eq!(w.check(at(30)), None);
        // A report from before the audio came back does not count.
        let w = OneWayWatch::default();
        w.gap(at(10));
        w.report(300, s(3), Some(at(9)), at(12));
        w.resumed(at(13));
        assert_eq!(w.check(at(30)), None);
    }

    #[test]
    fn a_state_change_starts_over() {
        let t0 = Instant::now();
        let w = OneWayWatch::default();
        w.gap(t0 + s(5));
        w.resumed(t0 + s(6));
        w.report(50, s(9), Some(t0), t0 + s(7));
        w.reset();
        assert_eq!(w.check(t0 + s(30)), None);
        assert_eq!(w.check(t0 + s(31)), None, "no gap since the reset");
    }

    #[test]
    fn the_tap_matches_reports_with_the_packets_sent() {
        let w = Arc::new(OneWayWatch::default());
        let mut tap = ReportTap::new(w.clone());
        let t0 = Instant::now();
        for i in 0..100u16 {
            let sent = t0 + Duration::from_millis(20 * u64::from(i));
            tap.sent.push_back((65_500u16.wrapping_add(i), sent));
        }
        // Extended number of the packet sent at 1 s (after a wrap).
        let highest = (1u32 << 16) + u32::from(65_500u16.wrapping_add(50));
        tap.block(highest, t0 + s(3));
        assert_eq!(w.lag_ms.load(Ordering::Relaxed), 2_000);
        assert_eq!(w.reported.load(Ordering::Relaxed), u64::from(highest));
        assert_eq!(w.times().newest_sent, Some(t0 + s(1)));
        assert_eq!(w.times().report_at, Some(t0 + s(3)));
        // A packet no longer (or never) kept: as old as can be.
        tap.block(30_000, t0 + s(3));
        assert_eq!(w.lag_ms.load(Ordering::Relaxed), u64::MAX);
        assert_eq!(w.times().newest_sent, None);
    }
}
