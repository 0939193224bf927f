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
//! it sent that packet. A report whose newest packet left more than
//! [`LAG_LIMIT`] before the report came back means nothing newer arrived.
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

/// A healthy path delivers a report about packets sent a round trip ago
/// (well under a second); one about packets sent longer ago than this means
/// the newer ones never arrived.
pub(super) const LAG_LIMIT: Duration = Duration::from_secs(2);
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
    /// Reports received so far.
    reports: AtomicU64,
    /// The highest sequence number in the last report (extended).
    reported: AtomicU64,
    /// How long before that report its newest packet was sent, in ms.
    lag_ms: AtomicU64,
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

    /// A report arrived: its newest packet, sent `lag` before it came.
    fn report(&self, reported: u64, lag: Duration) {
        self.reported.store(reported, Ordering::Relaxed);
        let ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        self.lag_ms.store(ms, Ordering::Relaxed);
        self.reports.fetch_add(1, Ordering::Relaxed);
    }
}

/// The reports looked at so far.
#[derive(Debug, Default)]
pub(super) struct Reports {
    seen: u64,
}

/// Why the watch fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unheard {
    /// The highest sequence number the resident last reported.
    pub reported: u64,
    /// How long before that report its newest packet had been sent.
    pub lag: Duration,
}

impl Reports {
    /// Looks at a new report, if one came: `Some` when the station's audio
    /// counts as unheard.
    pub(super) fn check(&mut self, watch: &OneWayWatch) -> Option<Unheard> {
        let count = watch.reports.load(Ordering::Relaxed);
        if watch.reset.swap(false, Ordering::Relaxed) {
            // Reports before the state change are about the old path.
            self.seen = count;
            return None;
        }
        if count == self.seen {
            return None;
        }
        self.seen = count;
        let lag = Duration::from_millis(watch.lag_ms.load(Ordering::Relaxed));
        if !watch.resumed.load(Ordering::Relaxed) || lag < LAG_LIMIT {
            return None;
        }
        // Said once; the recovery it starts changes the state (reset).
        watch.gap.store(false, Ordering::Relaxed);
        watch.resumed.store(false, Ordering::Relaxed);
        let reported = watch.reported.load(Ordering::Relaxed);
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
    let mut reports = Reports::default();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(u) = reports.check(&watch) {
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
        let lag = self
            .sent
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map_or(Duration::MAX, |(_, at)| now.saturating_duration_since(*at));
        self.watch.report(u64::from(highest), lag);
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
    fn fires_on_a_lagging_report_after_a_gap_that_ended() {
        let w = OneWayWatch::default();
        let mut r = Reports::default();
        assert_eq!(r.check(&w), None, "no report yet");
        w.report(100, Duration::from_millis(80));
        assert_eq!(r.check(&w), None);
        // A lagging report without a gap: a stalled network both ways, which
        // the stack notices itself.
        w.report(100, s(6));
        assert_eq!(r.check(&w), None);
        // Incoming audio stops and comes back; reports still fresh: fine.
        w.gap();
        w.resumed();
        w.report(400, Duration::from_millis(90));
        assert_eq!(r.check(&w), None);
        // Then a report about packets sent 5 s ago: nothing newer arrived.
        w.report(420, s(5));
        let u = r.check(&w).expect("unheard");
        assert_eq!((u.reported, u.lag), (420, s(5)));
        // Said once, and not again for the same report.
        assert_eq!(r.check(&w), None);
        w.report(420, s(7));
        assert_eq!(r.check(&w), None, "needs a new gap");
    }

    #[test]
    fn a_state_change_starts_over() {
        let w = OneWayWatch::default();
        let mut r = Reports::default();
        w.gap();
        w.resumed();
        // A lagging report that came before the stack's own restore is
        // about the old path.
        w.report(50, s(9));
        w.reset();
        assert_eq!(r.check(&w), None);
        w.report(60, s(9));
        assert_eq!(r.check(&w), None, "no gap since the reset");
    }

    #[test]
    fn the_tap_matches_reports_with_the_packets_sent() {
        let w = Arc::new(OneWayWatch::default());
        let mut tap = ReportTap::new(w.clone());
        let t0 = Instant::now();
        for i in 0..100u16 {
            tap.sent.push_back((
                65_500u16.wrapping_add(i),
                t0 + Duration::from_millis(20 * u64::from(i)),
            ));
        }
        // Extended number of the packet sent at 1 s (after a wrap).
        let highest = (1u32 << 16) + u32::from(65_500u16.wrapping_add(50));
        tap.block(highest, t0 + s(3));
        assert_eq!(w.lag_ms.load(Ordering::Relaxed), 2_000);
        assert_eq!(w.reported.load(Ordering::Relaxed), u64::from(highest));
        // A packet no longer (or never) kept: as old as can be.
        tap.block(30_000, t0 + s(3));
        assert_eq!(w.lag_ms.load(Ordering::Relaxed), u64::MAX);
    }
}
