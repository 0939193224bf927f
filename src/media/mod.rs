//! The media actor: one task owning every call's WebRTC session. The
//! controller talks to it only by [`MediaCommand`] and hears back by
//! [`MediaEvent`]; audio frames flow between the session and the audio
//! backend over [`AudioPorts`](crate::audio::AudioPorts), never through the
//! controller.

mod one_way;
pub mod opus;
mod rtc;
pub mod turn_bridge;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::AudioPorts;

pub use crate::signaling::protocol::CallId;

/// An ICE candidate as exchanged with browsers (`RTCIceCandidateInit`):
/// the signaling protocol's own type.
pub use crate::signaling::protocol::Candidate as IceCandidate;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpKind {
    Offer,
    Answer,
}

pub enum MediaCommand {
    /// Creates the session. `offerer` → an offer is created and emitted as
    /// [`MediaEvent::LocalDescription`].
    Start {
        call_id: CallId,
        offerer: bool,
        ice_servers: Vec<IceServer>,
        audio: AudioPorts,
    },
    /// An offer is answered (the answer is emitted); queued remote
    /// candidates are applied right after.
    RemoteDescription {
        call_id: CallId,
        kind: SdpKind,
        sdp: String,
    },
    /// `None` is end-of-candidates.
    RemoteCandidate {
        call_id: CallId,
        candidate: Option<IceCandidate>,
    },
    /// Muted sessions keep sending (silence), so the path stays alive.
    SetMuted {
        call_id: CallId,
        muted: bool,
    },
    /// Restart ICE (fresh credentials, candidates gathered again) and emit
    /// the new offer; the DTLS session and the audio carry on.
    RestartIce {
        call_id: CallId,
    },
    /// Replace the session's peer connection with a new one (new ICE and
    /// DTLS) and emit its offer; capture and playback stay attached.
    Renew {
        call_id: CallId,
    },
    Stop {
        call_id: CallId,
    },
    /// Send a text message on the call's door data channel.
    DoorSend {
        call_id: CallId,
        text: String,
    },
}

/// Label of the data channel the door station opens in its offer; door
/// opening travels on it (docs/signaling.md, "Door opening").
pub const DOOR_CHANNEL: &str = "door";

/// Longest message accepted on the door channel; longer ones are dropped
/// unread.
pub const DOOR_MESSAGE_MAX: usize = 1024;

impl fmt::Debug for MediaCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaCommand::Start {
                call_id, offerer, ..
            } => write!(f, "Start({call_id}, offerer={offerer})"),
            MediaCommand::RemoteDescription { call_id, kind, .. } => {
                write!(f, "RemoteDescription({call_id}, {kind:?})")
            }
            MediaCommand::RemoteCandidate { call_id, candidate } => {
                write!(f, "RemoteCandidate({call_id}, {candidate:?})")
            }
            MediaCommand::SetMuted { call_id, muted } => write!(f, "SetMuted({call_id}, {muted})"),
            MediaCommand::Stop { call_id } => write!(f, "Stop({call_id})"),
            MediaCommand::RestartIce { call_id } => write!(f, "RestartIce({call_id})"),
            MediaCommand::Renew { call_id } => write!(f, "Renew({call_id})"),
            MediaCommand::DoorSend { call_id, text } => {
                write!(f, "DoorSend({call_id}, {} bytes)", text.len())
            }
        }
    }
}

impl MediaCommand {
    /// The engine's command for a request of the call logic; `None` for a
    /// start, which needs the call's audio (the controller builds it).
    pub fn from_request(req: crate::call::MediaRequest) -> Option<MediaCommand> {
        use crate::call::MediaRequest as R;
        Some(match req {
            R::RemoteAnswer { call_id, sdp } => MediaCommand::RemoteDescription {
                call_id,
                kind: SdpKind::Answer,
                sdp,
            },
            R::RemoteCandidate { call_id, candidate } => {
                MediaCommand::RemoteCandidate { call_id, candidate }
            }
            R::RestartIce { call_id } => MediaCommand::RestartIce { call_id },
            R::Renew { call_id } => MediaCommand::Renew { call_id },
            R::Stop { call_id } => MediaCommand::Stop { call_id },
            R::StartOffer { .. } => return None,
        })
    }

    pub fn call_id(&self) -> &CallId {
        match self {
            MediaCommand::Start { call_id, .. }
            | MediaCommand::RemoteDescription { call_id, .. }
            | MediaCommand::RemoteCandidate { call_id, .. }
            | MediaCommand::SetMuted { call_id, .. }
            | MediaCommand::DoorSend { call_id, .. }
            | MediaCommand::RestartIce { call_id }
            | MediaCommand::Renew { call_id }
            | MediaCommand::Stop { call_id } => call_id,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaState {
    New,
    Checking,
    Connected,
    Disconnected,
    Failed,
    /// ICE connected but DTLS did not complete within `dtls_timeout`.
    Stalled,
    /// Connected, but the peer's receiver reports show the station's audio
    /// no longer arrives while the peer's own still does (`one_way.rs`).
    Unheard,
    Closed,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MediaEvent {
    LocalDescription {
        call_id: CallId,
        kind: SdpKind,
        sdp: String,
    },
    /// `None`: gathering complete.
    LocalCandidate {
        call_id: CallId,
        candidate: Option<IceCandidate>,
    },
    /// Peer connection state (ICE + DTLS), reported on change.
    State { call_id: CallId, state: MediaState },
    /// First RTP received and first RTP sent: media flows both ways.
    AudioEstablished {
        call_id: CallId,
        selected_pair: String,
    },
    /// Capture, encoder and playback path all running.
    AudioSetupCompleted { call_id: CallId },
    /// The door data channel of the call opened.
    DoorChannelOpen { call_id: CallId },
    /// A text message arrived on the call's door data channel.
    DoorMessage { call_id: CallId, text: String },
    /// A failed command or session (invalid SDP, invalid candidate, ...).
    Error {
        call_id: CallId,
        kind: MediaErrorKind,
        message: String,
    },
}

/// A STUN or TURN server: the same `RTCIceServer` the hub hands to
/// answering pages (its `Debug` redacts the credential).
pub use crate::signaling::protocol::IceServerInfo as IceServer;

/// Handling of mDNS (`.local`) host candidates.
///
/// The default is `Disabled`: the other modes open a multicast socket when
/// each connection is built, and that fails ("No such device") wherever there
/// is no multicast route (containers, network namespaces, some boards before
/// the LAN is up). A browser that answers a call has microphone permission
/// and then offers its real host addresses, so `.local` candidates only add
/// redundancy; they are logged and skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MdnsMode {
    /// Remote `.local` candidates are logged and skipped; no multicast socket.
    #[default]
    Disabled,
    /// Remote `.local` candidates are resolved; local candidates use IPs.
    QueryOnly,
    /// As `QueryOnly`, and local host candidates are hidden behind `.local` names.
    QueryAndGather,
}

/// Peer connection settings. Each field says what it maps to in the WebRTC
/// stack.
#[derive(Clone, Debug)]
pub struct MediaSettings {
    /// Time without inbound traffic before the connection counts as
    /// disconnected: the ICE disconnected timeout.
    pub receiving_timeout: Duration,
    /// Mark audio packets Expedited Forwarding. Applied to the TCP/TLS
    /// connections of the TURN bridge (a socket option); not on UDP, where
    /// the WebRTC stack rewrites the TOS byte of every datagram it sends and
    /// a firewall rule does the marking.
    pub dscp_ef: bool,
    /// Interval between connectivity checks (default 20 ms; the stack's
    /// 200 ms delays DTLS against Chromium by ~350 ms).
    pub ice_check_interval: Duration,
    /// Binding requests per pair before it fails. With 20 ms checks, 100
    /// gives a pair 2 s to answer (a relay across the world needs more than
    /// the stack's default 7 × interval).
    pub ice_max_binding_requests: u16,
    pub mdns: MdnsMode,
    /// Addresses to bind UDP sockets on; empty = every non-loopback interface.
    pub udp_bind_ips: Vec<IpAddr>,
    pub opus_bitrate: u32,
    pub opus_complexity: u8,
    pub opus_fec: bool,
    /// Loss the encoder plans for; FEC is only produced when this is > 0.
    pub expected_loss_pct: u8,
    /// Gather only relay candidates (`ice.transport_policy = "relay"`).
    pub relay_only: bool,
    /// How long a server-reflexive / relay pair must wait before it may be
    /// nominated, giving a direct path found at the same time the win.
    pub srflx_nomination_wait: Duration,
    pub relay_nomination_wait: Duration,
    /// Offer `a=setup:active` so the station is the DTLS client (see
    /// `rtc::offer_as_dtls_client` for the measured reason).
    pub offer_dtls_active: bool,
    /// Extra trust anchor (PEM) for `turns:` servers, beside the system's.
    pub turn_ca_file: Option<std::path::PathBuf>,
    /// Time from ICE connected to DTLS connected after which the session
    /// counts as stalled ([`MediaState::Stalled`]): webrtc 0.21.1's DTLS
    /// stops retransmitting a lost flight once any handshake packet
    /// arrives, so a single lost datagram can hang the handshake.
    pub dtls_timeout: Duration,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            receiving_timeout: Duration::from_secs(30),
            dscp_ef: true,
            ice_check_interval: Duration::from_millis(20),
            ice_max_binding_requests: 100,
            mdns: MdnsMode::Disabled,
            udp_bind_ips: Vec::new(),
            opus_bitrate: 32_000,
            opus_complexity: 10,
            opus_fec: true,
            expected_loss_pct: 5,
            relay_only: false,
            offer_dtls_active: true,
            srflx_nomination_wait: Duration::from_millis(50),
            relay_nomination_wait: Duration::from_millis(50),
            turn_ca_file: None,
            dtls_timeout: Duration::from_secs(3),
        }
    }
}

/// Errors of the media module (carried to the controller as
/// [`MediaEvent::Error`] messages).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("building the peer connection failed: {0}")]
    Build(String),
    #[error(
        "building the peer connection failed: {detail} (mDNS mode {mode:?} opens a multicast socket on 224.0.0.251:5353; on hosts without a multicast route set mdns to Disabled)"
    )]
    BuildMdns { mode: MdnsMode, detail: String },
    #[error("invalid remote {kind:?}: {detail}")]
    InvalidSdp { kind: SdpKind, detail: String },
    #[error("invalid remote ICE candidate {candidate:?}: {detail}")]
    InvalidCandidate { candidate: String, detail: String },
    #[error("{op} failed: {detail}")]
    WebRtc { op: &'static str, detail: String },
    #[error("a session for this call already exists")]
    DuplicateCall,
    #[error("remote answer received but this side did not offer")]
    UnexpectedAnswer,
    #[error(transparent)]
    Opus(#[from] opus::OpusError),
}

/// What an error concerns, so the call logic can decide whether the call
/// can go on (a bad candidate) or not (a bad description).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaErrorKind {
    /// The remote description was refused.
    Description,
    /// A remote candidate was refused; the call goes on.
    Candidate,
    /// The session itself failed (build, local description, audio).
    Session,
}

impl MediaError {
    pub fn kind(&self) -> MediaErrorKind {
        match self {
            MediaError::InvalidSdp { .. } | MediaError::UnexpectedAnswer => {
                MediaErrorKind::Description
            }
            MediaError::InvalidCandidate { .. } => MediaErrorKind::Candidate,
            _ => MediaErrorKind::Session,
        }
    }
}

/// Sending side of the media actor's command channel.
#[derive(Clone, Debug)]
pub struct MediaHandle {
    pub tx: mpsc::Sender<MediaCommand>,
}

impl MediaHandle {
    /// Queues a command without waiting; a full or closed channel is
    /// returned to the caller, who decides (the controller never blocks).
    pub fn try_send(
        &self,
        cmd: MediaCommand,
    ) -> Result<(), mpsc::error::TrySendError<MediaCommand>> {
        self.tx.try_send(cmd)
    }

    pub fn try_stop(
        &self,
        call_id: &CallId,
    ) -> Result<(), mpsc::error::TrySendError<MediaCommand>> {
        self.try_send(MediaCommand::Stop {
            call_id: call_id.clone(),
        })
    }
}

/// Depth of the command channel.
pub const COMMAND_CAPACITY: usize = 64;

/// Spawns the media actor, registered with `tracker` so shutdown can wait for
/// it. It stops on `cancel`, closing every session first.
pub fn spawn_media(
    settings: MediaSettings,
    events: mpsc::Sender<MediaEvent>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> MediaHandle {
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let actor = rtc::Actor::new(settings, events, cancel, tracker.clone());
    tracker.spawn(actor.run(rx));
    MediaHandle { tx }
}
