//! systemd's watchdog as a tick the controller's loop awaits: `WATCHDOG=1`
//! every half `WatchdogSec`, sent from that loop, so if the loop wedges
//! the pings stop and systemd restarts the daemon.

use tokio::time::{Interval, MissedTickBehavior};

pub struct Watchdog {
    tick: Option<Interval>,
}

impl Watchdog {
    /// From the service manager's `WATCHDOG_USEC` (none: never pings).
    pub fn from_env() -> Self {
        let tick = sd_notify::watchdog_enabled().map(|period| {
            let mut tick = tokio::time::interval(period / 2);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick
        });
        Watchdog { tick }
    }

    /// Waits for the next ping's time and sends it; pending forever when
    /// the watchdog is off.
    pub async fn ping(&mut self) {
        match &mut self.tick {
            Some(tick) => {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            None => std::future::pending::<()>().await,
        }
    }
}
