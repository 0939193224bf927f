//! Door hardware behind small traits, one per capability: inputs (call
//! buttons, exit button, door sensor, tamper switch) that produce events,
//! status LEDs and the lock relay. Each has a real backend and a simulated one; configuration
//! picks one in a single place (`crate::daemon`), and a device never falls
//! back to the simulation silently.

pub mod gpio;
pub mod sim;

use std::fmt;

/// What an input line reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HwEvent {
    /// A call button went down (after debouncing).
    ButtonPressed { button: String },
    /// A call button went up again.
    ButtonReleased { button: String },
    /// A local request to end the call (panel, terminal).
    HangupRequested,
    /// The exit button inside was pressed.
    ExitPressed,
    /// The door sensor reports the door open or closed.
    DoorSensor { open: bool },
    /// The tamper switch tripped (`true`) or was restored.
    Tamper { active: bool },
    /// The service button went down or up.
    Service { pressed: bool },
    /// Door hardware failed (`true`: lines lost, their chip gone) or is
    /// back (`false`: every line requested again).
    Fault { active: bool },
}

// What the LEDs show is the door logic's to decide (door::indication);
// the backends here display it.
use crate::door::indication::LedPattern;

/// Errors of hardware backends, carrying the device and line concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwError {
    #[error("{device}: line `{line}`: {message}")]
    Line {
        device: String,
        line: String,
        message: String,
    },
    #[error("cannot start the hardware control panel on {addr}: {message}")]
    Panel { addr: String, message: String },
}

/// An LED output. The door logic computes blink phases from time and
/// sets the level at each edge; `pattern` is for display only.
pub trait Led: Send + fmt::Debug {
    fn name(&self) -> &str;
    fn set(&mut self, pattern: LedPattern, on: bool) -> Result<(), HwError>;
}

/// Sets the LED called `name` (if there is one); a failure is logged, the
/// door works on without it.
pub fn set_led(leds: &mut [Box<dyn Led>], name: &str, pattern: LedPattern, on: bool) {
    if let Some(led) = leds.iter_mut().find(|l| l.name() == name)
        && let Err(e) = led.set(pattern, on)
    {
        tracing::warn!(led = %name, error = %e, "cannot set LED");
    }
}

/// The lock relay.
pub trait Relay: Send + fmt::Debug {
    /// Drive the relay coil (`true`: energised).
    fn set(&mut self, energised: bool) -> Result<(), HwError>;
}
