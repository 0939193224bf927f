//! Signaling protocol v1: the one Rust definition of the messages described
//! in `docs/signaling.md`. The hub, the door station's client and the tests
//! all (de)serialise through these types, so the document and the code cannot
//! drift apart silently.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// A call identifier: 1..=64 characters of `[A-Za-z0-9_-]`, chosen by the
/// door station. Validated on deserialisation so that nothing downstream has
/// to trust peer input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidCallId> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(CallId(s))
        } else {
            Err(InvalidCallId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid call_id: expected 1 to 64 characters of [A-Za-z0-9_-]")]
pub struct InvalidCallId;

impl<'de> Deserialize<'de> for CallId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CallId::new(s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Door,
    Answerer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Door => "door",
            Role::Answerer => "answerer",
        })
    }
}

/// An `RTCIceCandidateInit`, as browsers produce it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub candidate: String,
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
}

/// An `RTCIceServer` as handed to clients in `welcome`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServerInfo {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl fmt::Debug for IceServerInfo {
    // The credential is a secret: it must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServerInfo")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: String,
    pub name: String,
}

/// `welcome.push`: what the page needs to subscribe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushInfo {
    /// base64url of the uncompressed P-256 point (`applicationServerKey`).
    pub vapid_public_key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Answered,
    Missed,
    Declined,
    /// The call ended in an error, or the hub lost track of it.
    Failed,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Missed => "missed",
            CallOutcome::Declined => "declined",
            CallOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Answered, Self::Missed, Self::Declined, Self::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One call of `history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryCall {
    pub call_id: String,
    pub door: PeerInfo,
    pub started_at_ms: u64,
    pub outcome: CallOutcome,
    pub answered_by: Option<PeerInfo>,
    pub duration_ms: Option<u64>,
    pub door_opened: bool,
    /// This answerer was not rung because of its quiet hours.
    pub quiet_hours: bool,
}

/// Every message of protocol v1. `type` is the tag; unknown fields are
/// ignored so newer peers can add fields.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Hello {
        v: u32,
        role: Role,
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Welcome {
        v: u32,
        session: String,
        id: String,
        name: String,
        #[serde(default)]
        groups: Vec<String>,
        #[serde(default)]
        ice_servers: Vec<IceServerInfo>,
        /// The doors this answerer may call (`call_door`); absent when none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        doors: Vec<PeerInfo>,
        /// Present when the hub can send Web Push (answerers only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        push: Option<PushInfo>,
    },
    Register {
        groups: Vec<String>,
    },
    Registered {
        groups: Vec<String>,
    },
    Resume {
        call_id: CallId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answerer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// The hub's proof that it routed this call to `answerer` (from
        /// `accepted` or `call_door`); a hub that forgot the call rebuilds
        /// the route only with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
    },
    Resumed {
        call_id: CallId,
    },
    Ring {
        call_id: CallId,
        group: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        door: Option<PeerInfo>,
    },
    Ringing {
        call_id: CallId,
        answerers: u32,
    },
    /// A resident calls a door. Answerer → hub: `door` names the door
    /// (optional when the answerer may call exactly one). Hub → door:
    /// `answerer` says who calls.
    CallDoor {
        call_id: CallId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        door: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answerer: Option<PeerInfo>,
        /// Hub → door: the route proof the door presents in `resume`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
    },
    /// Hub → answerer: the door was asked to take the resident's call.
    Calling {
        call_id: CallId,
        door: PeerInfo,
    },
    Accept {
        call_id: CallId,
    },
    Decline {
        call_id: CallId,
    },
    Accepted {
        call_id: CallId,
        answerer: PeerInfo,
        /// The route proof the door presents in `resume`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
    },
    Taken {
        call_id: CallId,
        by: String,
    },
    Declined {
        call_id: CallId,
    },
    Cancel {
        call_id: CallId,
        #[serde(default)]
        reason: String,
    },
    Offer {
        call_id: CallId,
        sdp: String,
    },
    Answer {
        call_id: CallId,
        sdp: String,
    },
    Candidate {
        call_id: CallId,
        candidate: Option<Candidate>,
    },
    Hangup {
        call_id: CallId,
        #[serde(default)]
        reason: String,
    },
    /// Answerer → hub: ring this device while the page is closed.
    PushSubscribe {
        subscription: crate::hub::push::Subscription,
    },
    PushSubscribed,
    /// Answerer → hub: stop pushing to this endpoint.
    PushUnsubscribe {
        endpoint: String,
    },
    PushUnsubscribed,
    /// Answerer → hub: the latest calls of the answerer's groups.
    GetHistory {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Hub → answerer: newest first.
    History {
        calls: Vec<HistoryCall>,
    },
    /// Door → hub: the door was opened during this call (for the history).
    DoorOpened {
        call_id: CallId,
    },
    Ping,
    Pong,
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<CallId>,
    },
}

impl fmt::Debug for Message {
    // Hand-written so that a token or an SDP blob never ends up in a log
    // line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Hello { v, role, .. } => write!(f, "Hello {{ v: {v}, role: {role} }}"),
            Message::Offer { call_id, sdp } => {
                write!(
                    f,
                    "Offer {{ call_id: {call_id}, sdp: {} bytes }}",
                    sdp.len()
                )
            }
            Message::Answer { call_id, sdp } => {
                write!(
                    f,
                    "Answer {{ call_id: {call_id}, sdp: {} bytes }}",
                    sdp.len()
                )
            }
            other => write!(f, "{}", other.type_name()),
        }
    }
}

impl Message {
    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Register { .. } => "register",
            Message::Registered { .. } => "registered",
            Message::Resume { .. } => "resume",
            Message::Resumed { .. } => "resumed",
            Message::Ring { .. } => "ring",
            Message::Ringing { .. } => "ringing",
            Message::CallDoor { .. } => "call_door",
            Message::Calling { .. } => "calling",
            Message::Accept { .. } => "accept",
            Message::Decline { .. } => "decline",
            Message::Accepted { .. } => "accepted",
            Message::Taken { .. } => "taken",
            Message::Declined { .. } => "declined",
            Message::Cancel { .. } => "cancel",
            Message::Offer { .. } => "offer",
            Message::Answer { .. } => "answer",
            Message::Candidate { .. } => "candidate",
            Message::Hangup { .. } => "hangup",
            Message::PushSubscribe { .. } => "push_subscribe",
            Message::PushSubscribed => "push_subscribed",
            Message::PushUnsubscribe { .. } => "push_unsubscribe",
            Message::PushUnsubscribed => "push_unsubscribed",
            Message::GetHistory { .. } => "get_history",
            Message::History { .. } => "history",
            Message::DoorOpened { .. } => "door_opened",
            Message::Ping => "ping",
            Message::Pong => "pong",
            Message::Error { .. } => "error",
        }
    }

    /// The call this message belongs to, if any.
    pub fn call_id(&self) -> Option<&CallId> {
        match self {
            Message::Resume { call_id, .. }
            | Message::Resumed { call_id }
            | Message::Ring { call_id, .. }
            | Message::Ringing { call_id, .. }
            | Message::CallDoor { call_id, .. }
            | Message::Calling { call_id, .. }
            | Message::Accept { call_id }
            | Message::Decline { call_id }
            | Message::Accepted { call_id, .. }
            | Message::Taken { call_id, .. }
            | Message::Declined { call_id }
            | Message::Cancel { call_id, .. }
            | Message::Offer { call_id, .. }
            | Message::Answer { call_id, .. }
            | Message::Candidate { call_id, .. }
            | Message::Hangup { call_id, .. }
            | Message::DoorOpened { call_id } => Some(call_id),
            Message::Error { call_id, .. } => call_id.as_ref(),
            _ => None,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error {
            code,
            message: message.into(),
            reference: None,
            call_id: None,
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising these plain types cannot fail: every map key is a
        // string and there are no non-finite floats.
        serde_json::to_string(self).expect("protocol messages always serialise")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    BadMessage,
    UnknownType,
    TooLarge,
    UnsupportedVersion,
    AuthFailed,
    NotAuthenticated,
    NotPermitted,
    UnknownCall,
    BadState,
    UnknownPeer,
    BadSdp,
    BadCandidate,
    /// The door asked for is not connected to the hub.
    DoorOffline,
    /// The door asked for is in another call.
    Busy,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::NotPermitted => "not_permitted",
            ErrorCode::UnknownCall => "unknown_call",
            ErrorCode::BadState => "bad_state",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::BadCandidate => "bad_candidate",
            ErrorCode::DoorOffline => "door_offline",
            ErrorCode::Busy => "busy",
        }
    }
}

/// Why a frame could not be decoded; maps onto an `error` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not valid JSON: {0}")]
    BadJson(String),
    #[error("message has no string field `type`")]
    NoType,
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("invalid `{kind}` message: {detail}")]
    BadMessage { kind: String, detail: String },
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::BadJson(_) => ErrorCode::BadJson,
            DecodeError::NoType | DecodeError::BadMessage { .. } => ErrorCode::BadMessage,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
        }
    }

    /// The `type` of the offending message, when it could be read.
    pub fn reference(&self) -> Option<String> {
        match self {
            DecodeError::UnknownType(t) => Some(t.clone()),
            DecodeError::BadMessage { kind, .. } => Some(kind.clone()),
            _ => None,
        }
    }

    pub fn to_reply(&self) -> Message {
        Message::Error {
            code: self.code(),
            message: self.to_string(),
            reference: self.reference(),
            call_id: None,
        }
    }
}

const KNOWN_TYPES: &[&str] = &[
    "hello",
    "welcome",
    "register",
    "registered",
    "resume",
    "resumed",
    "ring",
    "ringing",
    "call_door",
    "calling",
    "accept",
    "decline",
    "accepted",
    "taken",
    "declined",
    "cancel",
    "offer",
    "answer",
    "candidate",
    "hangup",
    "push_subscribe",
    "push_subscribed",
    "push_unsubscribe",
    "push_unsubscribed",
    "get_history",
    "history",
    "door_opened",
    "ping",
    "pong",
    "error",
];

/// Decode one text frame, enforcing the size limit first so that a huge
/// frame is never parsed.
pub fn decode(text: &str, limit: usize) -> Result<Message, DecodeError> {
    if text.len() > limit {
        return Err(DecodeError::TooLarge {
            size: text.len(),
            limit,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::BadJson(e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or(DecodeError::NoType)?
        .to_owned();
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        // Keep peer-chosen text short in logs and replies: at most 64
        // bytes, cut at a character boundary.
        let mut shown = kind;
        let mut end = shown.len().min(64);
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        return Err(DecodeError::UnknownType(shown));
    }
    serde_json::from_value(value).map_err(|e| DecodeError::BadMessage {
        kind,
        detail: e.to_string(),
    })
}

/// A message from a resident's page on a call's door data channel. Only
/// `open` is known; anything else is an invalid request, refused and
/// audited like a refused open (docs/signaling.md, "The door channel").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DoorRequest {
    /// `{"type":"open","nonce":…}`; the door logic judges the nonce.
    Open { nonce: String },
    /// Anything else. `nonce` is the message's nonce when it is a valid
    /// one (for the audit record), else empty.
    Invalid { nonce: String },
}

impl DoorRequest {
    /// Reads one text message of a door data channel (peer text: never
    /// panics).
    pub fn decode(text: &str) -> DoorRequest {
        #[derive(Deserialize)]
        struct Request {
            #[serde(rename = "type")]
            kind: String,
            nonce: Option<String>,
        }
        match serde_json::from_str::<Request>(text) {
            Ok(Request {
                kind,
                nonce: Some(nonce),
            }) if kind == "open" => DoorRequest::Open { nonce },
            parsed => DoorRequest::Invalid {
                nonce: parsed
                    .ok()
                    .and_then(|r| r.nonce)
                    .filter(|n| crate::door::valid_nonce(n))
                    .unwrap_or_default(),
            },
        }
    }
}

/// The station's answer to an `open` on the door data channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename = "open_result")]
pub struct OpenResult {
    pub nonce: String,
    pub granted: bool,
    /// Why it was refused (`null` when granted).
    pub reason: Option<&'static str>,
    /// How long the relay is energised (0 when refused).
    pub pulse_ms: u64,
}

impl OpenResult {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings, bools and integers serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(s: &str) -> CallId {
        CallId::new(s).expect("test ids are valid")
    }

    #[test]
    fn a_long_unknown_type_is_cut_at_a_character_boundary() {
        // 63 ASCII bytes then a two-byte character across the 64-byte cut.
        let kind = format!("{}é", "a".repeat(63));
        match decode(&format!(r#"{{"type":"{kind}"}}"#), 1 << 20) {
            Err(DecodeError::UnknownType(shown)) => assert_eq!(shown, "a".repeat(63)),
            other => panic!("expected an unknown type, got {other:?}"),
        }
        let kind = "é".repeat(40);
        match decode(&format!(r#"{{"type":"{kind}"}}"#), 1 << 20) {
            Err(DecodeError::UnknownType(shown)) => assert_eq!(shown, "é".repeat(32)),
            other => panic!("expected an unknown type, got {other:?}"),
        }
    }

    #[test]
    fn round_trips_every_shape_in_the_document() {
        let samples = [
            r#"{"type":"hello","v":1,"role":"door","token":"t","name":"Front door"}"#,
            r#"{"type":"ring","call_id":"c-1","group":"residents"}"#,
            r#"{"type":"ring","call_id":"c-1","group":"residents","door":{"id":"door-1","name":"Front door"}}"#,
            r#"{"type":"ringing","call_id":"c-1","answerers":2}"#,
            r#"{"type":"welcome","v":1,"session":"s-1","id":"flat-1a","name":"Flat 1A","groups":["residents"],"ice_servers":[],"doors":[{"id":"door-1","name":"Front door"}]}"#,
            r#"{"type":"call_door","call_id":"r-1","door":"door-1"}"#,
            r#"{"type":"call_door","call_id":"r-1","answerer":{"id":"flat-1a","name":"Flat 1A"}}"#,
            r#"{"type":"calling","call_id":"r-1","door":{"id":"door-1","name":"Front door"}}"#,
            r#"{"type":"hangup","call_id":"r-1","reason":"busy"}"#,
            r#"{"type":"error","code":"door_offline","message":"m","ref":"call_door","call_id":"r-1"}"#,
            r#"{"type":"accept","call_id":"c-1"}"#,
            r#"{"type":"accepted","call_id":"c-1","answerer":{"id":"flat-1a","name":"Flat 1A"}}"#,
            r#"{"type":"taken","call_id":"c-1","by":"Flat 1A"}"#,
            r#"{"type":"candidate","call_id":"c-1","candidate":{"candidate":"candidate:1 1 udp 2122260223 10.0.0.5 50000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
            r#"{"type":"candidate","call_id":"c-1","candidate":null}"#,
            r#"{"type":"hangup","call_id":"c-1","reason":"normal"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"welcome","v":1,"session":"s-1","id":"flat-1a","name":"Flat 1A","groups":["residents"],"ice_servers":[],"push":{"vapid_public_key":"BPk"}}"#,
            r#"{"type":"push_subscribe","subscription":{"endpoint":"https://push.example.net/x","keys":{"p256dh":"BNc","auth":"tBH"}}}"#,
            r#"{"type":"push_subscribed"}"#,
            r#"{"type":"push_unsubscribe","endpoint":"https://push.example.net/x"}"#,
            r#"{"type":"push_unsubscribed"}"#,
            r#"{"type":"get_history","limit":50}"#,
            r#"{"type":"get_history"}"#,
            r#"{"type":"history","calls":[{"call_id":"c-9","door":{"id":"door-1","name":"Front door"},"started_at_ms":1767225600000,"outcome":"answered","answered_by":{"id":"flat-1a","name":"Flat 1A"},"duration_ms":42000,"door_opened":true,"quiet_hours":false},{"call_id":"c-8","door":{"id":"door-1","name":"Front door"},"started_at_ms":1767222000000,"outcome":"missed","answered_by":null,"duration_ms":null,"door_opened":false,"quiet_hours":true}]}"#,
            r#"{"type":"door_opened","call_id":"c-9"}"#,
            r#"{"type":"error","code":"bad_state","message":"m","ref":"accept","call_id":"c-1"}"#,
        ];
        for s in samples {
            let m = decode(s, 65536).unwrap_or_else(|e| panic!("{s}: {e}"));
            let back = decode(&m.to_json(), 65536).expect("re-encoding decodes");
            assert_eq!(m, back, "{s}");
        }
    }

    #[test]
    fn history_serialises_nulls_and_push_debug_hides_the_endpoint() {
        let m = decode(
            r#"{"type":"history","calls":[{"call_id":"c-8","door":{"id":"d","name":"D"},"started_at_ms":1,"outcome":"missed","answered_by":null,"duration_ms":null,"door_opened":false,"quiet_hours":true}]}"#,
            65536,
        )
        .expect("decodes");
        let json = m.to_json();
        assert!(
            json.contains(r#""answered_by":null,"duration_ms":null"#),
            "{json}"
        );
        let m = decode(
            r#"{"type":"push_subscribe","subscription":{"endpoint":"https://push.example.net/secret-path","keys":{"p256dh":"k","auth":"a"}}}"#,
            65536,
        )
        .expect("decodes");
        assert!(!format!("{m:?}").contains("secret-path"));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m = decode(r#"{"type":"accept","call_id":"c-1","extra":true}"#, 1000).unwrap();
        assert_eq!(
            m,
            Message::Accept {
                call_id: cid("c-1")
            }
        );
    }

    #[test]
    fn errors_map_to_codes() {
        let cases = [
            ("{", ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadMessage),
            (r#"{"type":42}"#, ErrorCode::BadMessage),
            (r#"{"type":"launch_rockets"}"#, ErrorCode::UnknownType),
            (r#"{"type":"accept"}"#, ErrorCode::BadMessage),
            (
                r#"{"type":"accept","call_id":"../etc"}"#,
                ErrorCode::BadMessage,
            ),
            (r#"{"type":"accept","call_id":""}"#, ErrorCode::BadMessage),
            (
                r#"{"type":"hello","v":"one","role":"door","token":"t"}"#,
                ErrorCode::BadMessage,
            ),
            (
                r#"{"type":"hello","v":1,"role":"admin","token":"t"}"#,
                ErrorCode::BadMessage,
            ),
        ];
        for (s, code) in cases {
            let e = decode(s, 1000).expect_err(s);
            assert_eq!(e.code(), code, "{s}: {e}");
        }
        let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(2000));
        assert_eq!(decode(&big, 1000).unwrap_err().code(), ErrorCode::TooLarge);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let m = Message::Hello {
            v: 1,
            role: Role::Door,
            token: "s3cret".into(),
            name: None,
        };
        assert!(!format!("{m:?}").contains("s3cret"));
        let s = IceServerInfo {
            urls: vec!["turn:x".into()],
            username: Some("u".into()),
            credential: Some("pw123".into()),
        };
        assert!(!format!("{s:?}").contains("pw123"));
    }

    #[test]
    fn call_id_rules() {
        assert!(CallId::new("a").is_ok());
        assert!(CallId::new("A_b-9").is_ok());
        assert!(CallId::new("x".repeat(64)).is_ok());
        assert!(CallId::new("x".repeat(65)).is_err());
        assert!(CallId::new("a b").is_err());
        assert!(CallId::new("é").is_err());
    }
}
