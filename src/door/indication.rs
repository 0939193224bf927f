//! What the station's LEDs show: the station-wide state the door logic
//! derives, and the patterns that show it. The hardware backends display
//! them; the logic owns them.

/// How an LED shows a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedPattern {
    Off,
    On,
    /// 1 Hz: something is in progress (ringing).
    SlowBlink,
    /// 4 Hz: attention (signaling down, fault).
    FastBlink,
    /// 2 Hz: Bluetooth pairing is open.
    MediumBlink,
}

/// The station-wide state LEDs reflect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StationState {
    Idle,
    SignalingDown,
    Ringing,
    InCall,
    /// The lock is released.
    DoorOpen,
    /// Tamper, door held open, or a hardware fault.
    Fault,
    /// Bluetooth pairing is open (shown while no call is ringing or in
    /// progress).
    Pairing,
}

impl StationState {
    /// The default pattern of the status LED for a state.
    pub fn default_pattern(self) -> LedPattern {
        match self {
            StationState::Idle => LedPattern::On,
            StationState::SignalingDown => LedPattern::FastBlink,
            StationState::Ringing => LedPattern::SlowBlink,
            StationState::InCall => LedPattern::On,
            StationState::DoorOpen => LedPattern::SlowBlink,
            StationState::Fault => LedPattern::FastBlink,
            StationState::Pairing => LedPattern::MediumBlink,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StationState::Idle => "idle",
            StationState::SignalingDown => "signaling_down",
            StationState::Ringing => "ringing",
            StationState::InCall => "in_call",
            StationState::DoorOpen => "door_open",
            StationState::Fault => "fault",
            StationState::Pairing => "pairing",
        }
    }
}

impl LedPattern {
    pub fn as_str(self) -> &'static str {
        match self {
            LedPattern::Off => "off",
            LedPattern::On => "on",
            LedPattern::SlowBlink => "slow_blink",
            LedPattern::FastBlink => "fast_blink",
            LedPattern::MediumBlink => "medium_blink",
        }
    }
}
