//! Door hardware behind small traits, one per capability: call buttons
//! (inputs that produce events) and status LEDs (outputs that show a
//! pattern). Each has a real backend and a simulated one; configuration
//! picks one in a single place (`crate::daemon`), and a device never falls
//! back to the simulation silently.

pub mod sim;

use std::fmt;

/// What an input line reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HwEvent {
    /// A call button was pressed (after debouncing).
    ButtonPressed { button: String },
    /// A local request to end the call (long press, panel, terminal).
    HangupRequested,
}

/// How an LED shows a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedPattern {
    Off,
    On,
    /// 1 Hz: something is in progress (ringing).
    SlowBlink,
    /// 4 Hz: attention (signaling down, fault).
    FastBlink,
}

/// The station-wide state LEDs reflect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StationState {
    Idle,
    SignalingDown,
    Ringing,
    InCall,
}

impl StationState {
    /// The default pattern of the status LED for a state.
    pub fn default_pattern(self) -> LedPattern {
        match self {
            StationState::Idle => LedPattern::On,
            StationState::SignalingDown => LedPattern::FastBlink,
            StationState::Ringing => LedPattern::SlowBlink,
            StationState::InCall => LedPattern::On,
        }
    }
}

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

/// An output that shows a pattern (blinking is the backend's job).
pub trait Led: Send + fmt::Debug {
    fn name(&self) -> &str;
    fn set(&mut self, pattern: LedPattern) -> Result<(), HwError>;
}
