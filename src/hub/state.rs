//! The hub's routing logic, sans-I/O: connections come and go, frames come
//! in, and `HubState` answers with a list of [`Action`]s for the server shell
//! to carry out. Nothing here touches a socket or a clock.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::guard::{self, HelloBackoff, Refusals, SourceKey, Verdict};
use super::push::{Subscription, Urgency};
use super::quiet::{QuietHours, WeekMinute};
use super::store::{CallEnd, CallRecord, StoreOp};
use crate::ice_servers::IceServerSpec;
use crate::logging::escape_peer_text;
use crate::signaling::protocol::{
    self, CallId, CallOutcome, DecodeError, ErrorCode, Message, PROTOCOL_VERSION, PeerInfo,
    PushInfo, Role,
};

/// Subscriptions kept per answerer; a new one beyond this replaces the
/// oldest (a resident re-installing the page again and again).
pub const MAX_SUBSCRIPTIONS_PER_ANSWERER: usize = 8;
/// Push service URLs are far shorter; this bounds what a peer can store.
pub const MAX_ENDPOINT_BYTES: usize = 1024;
const MAX_KEY_CHARS: usize = 128;
pub const HISTORY_DEFAULT: u32 = 50;
pub const HISTORY_MAX: u32 = 200;
/// Candidates relayed per call from each party (several offers' worth of
/// a browser's few dozen), and per second: the rest are dropped.
pub const MAX_CANDIDATES_PER_CALL: u32 = 150;
pub const MAX_CANDIDATES_PER_SECOND: u32 = 30;
/// How long a push service keeps an `end` for an offline phone.
pub const END_PUSH_TTL: Duration = Duration::from_secs(60);

/// A door station or answerer allowed to connect.
#[derive(Clone)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub token: String,
    pub groups: Vec<String>,
    /// An answerer that may call the hub's doors (`call_door`).
    pub call_door: bool,
    /// When this answerer is neither rung nor pushed (answerers only).
    pub quiet_hours: QuietHours,
}

impl fmt::Debug for Principal {
    // Tokens are secrets: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("groups", &self.groups)
            .field("call_door", &self.call_door)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct HubSettings {
    pub doors: Vec<Principal>,
    pub answerers: Vec<Principal>,
    /// Handed to each client in `welcome`, shared-secret TURN credentials
    /// minted for that client.
    pub ice_servers: Vec<IceServerSpec>,
    pub max_message_bytes: usize,
    pub hello_timeout: Duration,
    /// The door's ring timeout: how long a ring push is worth delivering.
    pub ring_timeout: Duration,
    /// The door id of the station hosting this hub in-process (standalone):
    /// its connection is never dropped as a slow consumer.
    pub own_door: Option<String>,
}

pub type ConnId = u64;

impl Action {
    fn log(level: LogLevel, conn: ConnId, text: String) -> Action {
        Action::Log {
            level,
            conn,
            call_id: None,
            text,
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send(ConnId, Message),
    /// Close with a WebSocket close code and reason.
    Close(ConnId, u16, &'static str),
    /// Write a log line (the shell adds the connection's fields).
    Log {
        level: LogLevel,
        conn: ConnId,
        /// The call the line is about, for the `call_id` field.
        call_id: Option<CallId>,
        text: String,
    },
    /// A door-open request arrived over signaling, which can never open a
    /// door: the shell writes a refused audit record.
    RefusedOpen {
        conn: ConnId,
        call_id: String,
        nonce: String,
        /// How many refusals the record stands for: 1, or more when it is
        /// the first after a counted flood.
        refusals: u64,
    },
    /// A write to the hub's database (never waited for).
    Store(StoreOp),
    /// Web Push to every device in `subscriptions`.
    Push(PushJob),
    /// Look up the history of `groups` and send it to `conn` as `history`.
    History {
        conn: ConnId,
        answerer: String,
        groups: Vec<String>,
        limit: u32,
    },
}

/// One push to one answerer's devices.
#[derive(Debug, Clone, PartialEq)]
pub struct PushJob {
    pub answerer: String,
    pub call_id: CallId,
    pub subscriptions: Vec<Subscription>,
    /// The plaintext payload (contract: `{"kind":"ring"|"end",…}`).
    pub payload: serde_json::Value,
    pub ttl: Duration,
    pub urgency: Urgency,
    pub topic: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
}

#[derive(Debug, Clone)]
struct Identity {
    role: Role,
    id: String,
    name: String,
    /// Groups this connection rings for (answerers).
    groups: Vec<String>,
}

#[derive(Debug)]
struct Conn {
    opened: Instant,
    who: Option<Identity>,
    session: String,
    /// Where failed `hello`s are counted; `None` when the shell did not say.
    source: Option<SourceKey>,
    refusals: Refusals,
    /// Door-open requests over signaling: audited one line each for the
    /// first five of 10 s, then counted (the count is said when due and at
    /// close).
    open_audits: crate::limits::LogThrottle,
}

#[derive(Debug, Default)]
struct HubCall {
    door: String,
    door_name: String,
    /// The ring group; empty for a resident's call to the door.
    group: String,
    rung: HashSet<String>,
    declined: HashSet<String>,
    accepted: Option<String>,
    /// Wall-clock ms when accepted (unknown for a call resumed after a
    /// hub restart).
    accepted_ms: Option<u64>,
    door_opened: bool,
    /// Devices that were pushed the ring, per answerer; they get the `end`.
    pushed: Vec<(String, Vec<Subscription>)>,
    /// Candidates relayed from the door [0] and the answerer [1].
    candidates: [CandidateBudget; 2],
}

/// How many candidates one party of a call may still have relayed.
#[derive(Debug, Default)]
struct CandidateBudget {
    relayed: u32,
    /// Wall-clock second of `in_second`.
    second: u64,
    in_second: u32,
    dropped: u32,
}

impl CandidateBudget {
    /// True when one more candidate may go through at `unix_ms`.
    fn take(&mut self, unix_ms: u64) -> bool {
        let second = unix_ms / 1000;
        if second != self.second {
            self.second = second;
            self.in_second = 0;
        }
        if self.relayed >= MAX_CANDIDATES_PER_CALL || self.in_second >= MAX_CANDIDATES_PER_SECOND {
            self.dropped += 1;
            return false;
        }
        self.relayed += 1;
        self.in_second += 1;
        true
    }
}

/// Who a ring reaches: on their pages, by push, or not at all.
struct RingRoute {
    /// Members of the group in their quiet hours: not rung.
    quiet_ids: Vec<String>,
    /// Rung on their open pages.
    answerers: Vec<(String, ConnId)>,
    /// Rung on their devices by push.
    pushed: Vec<(String, Vec<Subscription>)>,
    /// Every answerer rung, either way.
    rung: Vec<String>,
}

/// The message being handled, for refusing it: a warning logged and an
/// `error` sent back that names the message and its call.
struct Refuse {
    conn: ConnId,
    kind: &'static str,
    call_id: Option<CallId>,
}

impl Refuse {
    fn with(&self, code: ErrorCode, text: String) -> Vec<Action> {
        let kind = self.kind;
        vec![
            Action::log(LogLevel::Warn, self.conn, format!("{kind}: {text}")),
            Action::Send(
                self.conn,
                Message::Error {
                    code,
                    message: text,
                    reference: Some(kind.into()),
                    call_id: self.call_id.clone(),
                },
            ),
        ]
    }
}

pub struct HubState {
    settings: HubSettings,
    conns: HashMap<ConnId, Conn>,
    online: HashMap<(Role, String), ConnId>,
    calls: HashMap<CallId, HubCall>,
    /// Wall-clock seconds, given by the server before each message.
    unix_now: u64,
    /// Wall-clock milliseconds, for the history and push payloads.
    unix_ms: u64,
    /// Local time of week, for quiet hours.
    week: WeekMinute,
    /// The VAPID public key when the hub can push.
    push_key: Option<String>,
    /// Push subscriptions per answerer id, mirrored from the store.
    subs: HashMap<String, Vec<Subscription>>,
    /// Failed `hello`s per source address.
    backoff: HelloBackoff,
    /// The latest monotonic time the shell gave (see [`HubState::set_instant`]).
    now: Option<Instant>,
    /// Signs the route proofs handed to doors (`route`); kept across
    /// restarts by the shell so that a door can resume after one.
    route_key: Option<ring::hmac::Key>,
}

impl HubState {
    pub fn new(settings: HubSettings) -> Self {
        HubState {
            settings,
            conns: HashMap::new(),
            online: HashMap::new(),
            calls: HashMap::new(),
            unix_now: 0,
            unix_ms: 0,
            week: WeekMinute::default(),
            push_key: None,
            subs: HashMap::new(),
            backoff: HelloBackoff::default(),
            now: None,
            route_key: None,
        }
    }

    /// Monotonic time, given by the shell before each frame: refusal
    /// summaries and the `hello` backoff run on it.
    pub fn set_instant(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// The secret that signs route proofs (32 random bytes the shell keeps
    /// in the hub's state directory). Without it no proof is handed out
    /// and a forgotten call is never rebuilt from a door's word.
    pub fn set_route_key(&mut self, secret: &[u8]) {
        self.route_key = Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret));
    }

    /// Whether `conn` is the in-process station's own connection.
    pub fn is_own(&self, conn: ConnId) -> bool {
        let own = self.settings.own_door.as_deref();
        self.conns
            .get(&conn)
            .and_then(|c| c.who.as_ref())
            .is_some_and(|w| w.role == Role::Door && Some(w.id.as_str()) == own)
    }

    /// The proof that this hub routed `call_id` between `door` and
    /// `answerer` in `group` (empty for a resident's call to the door).
    fn route_proof(
        &self,
        door: &str,
        call_id: &CallId,
        answerer: &str,
        group: &str,
    ) -> Option<String> {
        use base64::Engine as _;
        let key = self.route_key.as_ref()?;
        let tag = ring::hmac::sign(key, &route_data(door, call_id, answerer, group));
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn route_proven(
        &self,
        door: &str,
        call_id: &CallId,
        answerer: &str,
        group: &str,
        route: Option<&str>,
    ) -> bool {
        use base64::Engine as _;
        let (Some(key), Some(route)) = (&self.route_key, route) else {
            return false;
        };
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(route) else {
            return false;
        };
        // ring compares in constant time.
        ring::hmac::verify(key, &route_data(door, call_id, answerer, group), &tag).is_ok()
    }

    /// Wall-clock time in ms and the local time of week, given by the
    /// shell before each event.
    pub fn set_clock(&mut self, unix_ms: u64, week: WeekMinute) {
        self.unix_ms = unix_ms;
        self.unix_now = unix_ms / 1000;
        self.week = week;
    }

    /// Turns push on: `welcome` carries this VAPID public key.
    pub fn set_push_key(&mut self, key: Option<String>) {
        self.push_key = key;
    }

    /// The current wall-clock time (seconds since the Unix epoch), for
    /// TURN credentials minted in `welcome`.
    pub fn set_unix_time(&mut self, secs: u64) {
        self.unix_now = secs;
    }

    pub fn max_message_bytes(&self) -> usize {
        self.settings.max_message_bytes
    }

    /// Who is on a connection, for log fields.
    pub fn describe(&self, conn: ConnId) -> Option<(Role, &str)> {
        self.conns
            .get(&conn)
            .and_then(|c| c.who.as_ref())
            .map(|w| (w.role, w.id.as_str()))
    }

    pub fn calls_in_progress(&self) -> usize {
        self.calls.len()
    }

    pub fn connected(&mut self, conn: ConnId, session: String, now: Instant) {
        self.now = Some(now);
        self.conns.insert(
            conn,
            Conn {
                opened: now,
                who: None,
                session,
                source: None,
                refusals: Refusals::default(),
                open_audits: crate::limits::LogThrottle::with_burst(guard::REFUSAL_LOG_INTERVAL, 5),
            },
        );
    }

    /// [`HubState::connected`] from a known address: failed `hello`s are
    /// counted per source.
    pub fn connected_from(
        &mut self,
        conn: ConnId,
        source: std::net::IpAddr,
        session: String,
        now: Instant,
    ) {
        self.connected(conn, session, now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.source = Some(SourceKey::of(source));
        }
    }

    /// The time of the input being handled: the last one given, else when
    /// `conn` opened. `None` only for an unknown connection before any
    /// input carried a time (the state reads no clock of its own).
    fn now_for(&self, conn: ConnId) -> Option<Instant> {
        self.now.or_else(|| self.conns.get(&conn).map(|c| c.opened))
    }

    pub fn disconnected(&mut self, conn: ConnId) -> Vec<Action> {
        let mut out = Vec::new();
        let now = self.now_for(conn);
        if let Some(n) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.open_audits.take_unreported())
        {
            out.push(Action::log(
                LogLevel::Warn,
                conn,
                format!("{n} more door-open requests over signaling refused (closed)"),
            ));
        }
        if let Some(c) = self.conns.get_mut(&conn)
            && let Some(now) = now
            && let Some(line) = c.refusals.summary(now, true)
        {
            let from = c
                .source
                .map(|s| format!(" (from {s}, closed)"))
                .unwrap_or_default();
            out.push(Action::log(LogLevel::Warn, conn, format!("{line}{from}")));
        }
        if let Some(c) = self.conns.remove(&conn)
            && let Some(w) = c.who
        {
            let key = (w.role, w.id.clone());
            if self.online.get(&key) == Some(&conn) {
                self.online.remove(&key);
            }
            out.push(Action::log(
                LogLevel::Info,
                conn,
                format!("{} {} went offline", w.role, w.id),
            ));
        }
        // Calls are kept: both sides may come back and carry on.
        out
    }

    /// Close connections that never said hello in time.
    pub fn handle_tick(&mut self, now: Instant) -> Vec<Action> {
        self.now = Some(now);
        self.backoff.forget(now);
        let limit = self.settings.hello_timeout;
        let mut out: Vec<Action> = self
            .conns
            .iter()
            .filter(|(_, c)| c.who.is_none() && now.duration_since(c.opened) >= limit)
            .map(|(id, _)| Action::Close(*id, 4001, "no hello in time"))
            .collect();
        for (id, c) in &mut self.conns {
            if let Some(line) = c.refusals.summary(now, false) {
                out.push(Action::log(LogLevel::Warn, *id, line));
            }
            if c.open_audits.due(now)
                && let Some(n) = c.open_audits.take_unreported()
            {
                out.push(Action::log(
                    LogLevel::Warn,
                    *id,
                    format!("{n} more door-open requests over signaling refused"),
                ));
            }
        }
        out
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, conn: ConnId, text: &str) -> Vec<Action> {
        let out = self.handle_text_unpoliced(conn, text);
        self.police(conn, out)
    }

    /// Passes a frame's warnings through the connection's refusal summary
    /// (a flood costs one line per interval) and closes a connection that
    /// keeps erring before `hello`.
    fn police(&mut self, conn: ConnId, actions: Vec<Action>) -> Vec<Action> {
        let Some(now) = self.now_for(conn) else {
            return actions;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return actions;
        };
        let mut out = Vec::with_capacity(actions.len());
        let mut refused = false;
        let mut closing = false;
        for a in actions {
            match a {
                Action::Log {
                    level: LogLevel::Warn,
                    conn: lc,
                    call_id,
                    text,
                } if lc == conn => {
                    refused = true;
                    if let Some(line) = c.refusals.refused(text, now) {
                        out.push(Action::Log {
                            level: LogLevel::Warn,
                            conn,
                            call_id,
                            text: line,
                        });
                    }
                }
                Action::RefusedOpen {
                    conn: rc,
                    call_id,
                    nonce,
                    ..
                } => {
                    refused = true;
                    // An audit record each for the first few; a flood is
                    // counted, and the count said later.
                    if let Some(refusals) = c.open_audits.hit(now) {
                        out.push(Action::RefusedOpen {
                            conn: rc,
                            call_id,
                            nonce,
                            refusals,
                        });
                    }
                }
                a => {
                    closing |= matches!(a, Action::Close(id, ..) if id == conn);
                    out.push(a);
                }
            }
        }
        if refused && c.who.is_none() && !closing {
            c.refusals.before_hello += 1;
            if c.refusals.before_hello >= guard::MAX_ERRORS_BEFORE_HELLO {
                out.push(Action::Close(conn, 1008, "too many errors before hello"));
            }
        }
        out
    }

    fn handle_text_unpoliced(&mut self, conn: ConnId, text: &str) -> Vec<Action> {
        match protocol::decode(text, self.settings.max_message_bytes) {
            Ok(msg) => self.handle_message(conn, msg),
            Err(DecodeError::UnknownType(kind)) if kind == "open" => {
                // Door opening travels only on the call's data channel; an
                // `open` here is forged or misdirected. Audited, refused.
                let field = |name: &str| {
                    let v: Option<serde_json::Value> = serde_json::from_str(text).ok();
                    let mut s: String = v
                        .as_ref()
                        .and_then(|v| v.get(name))
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .chars()
                        .filter(|c| c.is_ascii_graphic())
                        .collect();
                    s.truncate(64);
                    s
                };
                vec![
                    Action::RefusedOpen {
                        conn,
                        call_id: field("call_id"),
                        nonce: field("nonce"),
                        refusals: 1,
                    },
                    Action::Send(
                        conn,
                        Message::Error {
                            code: ErrorCode::NotPermitted,
                            message: "the door opens only on the call's data channel".into(),
                            reference: Some("open".into()),
                            call_id: None,
                        },
                    ),
                ]
            }
            Err(e) => {
                // serde's messages quote the offending input.
                let mut out = vec![
                    Action::log(LogLevel::Warn, conn, escape_peer_text(&e.to_string())),
                    Action::Send(conn, e.to_reply()),
                ];
                if let DecodeError::TooLarge { .. } = e {
                    out.push(Action::Close(conn, 1009, "message too big"));
                }
                out
            }
        }
    }

    /// A binary frame arrived: the protocol has none.
    pub fn handle_binary(&mut self, conn: ConnId) -> Vec<Action> {
        let out = vec![
            Action::log(LogLevel::Warn, conn, "binary frame".into()),
            Action::Send(
                conn,
                Message::error(
                    ErrorCode::BadMessage,
                    "binary frames are not part of the protocol",
                ),
            ),
        ];
        self.police(conn, out)
    }

    pub fn handle_message(&mut self, conn: ConnId, msg: Message) -> Vec<Action> {
        let call = msg.call_id().cloned();
        let mut out = self.dispatch(conn, msg);
        if let Some(id) = call {
            for a in &mut out {
                if let Action::Log { call_id, .. } = a {
                    call_id.get_or_insert_with(|| id.clone());
                }
            }
        }
        out
    }

    fn dispatch(&mut self, conn: ConnId, msg: Message) -> Vec<Action> {
        let Some(c) = self.conns.get(&conn) else {
            return Vec::new();
        };
        let err = Refuse {
            conn,
            kind: msg.type_name(),
            call_id: msg.call_id().cloned(),
        };
        let who = match (&c.who, msg) {
            (None, Message::Hello { v, role, token, .. }) => {
                return self.hello(conn, v, role, &token);
            }
            (None, Message::Ping) => return vec![Action::Send(conn, Message::Pong)],
            (None, _) => return err.with(ErrorCode::NotAuthenticated, "send hello first".into()),
            (Some(_), Message::Hello { .. }) => {
                return err.with(ErrorCode::BadState, "already authenticated".into());
            }
            (Some(w), m) => (w.clone(), m),
        };
        let (me, msg) = who;
        match (me.role, msg) {
            (_, Message::Ping) => vec![Action::Send(conn, Message::Pong)],
            (_, Message::Pong) => Vec::new(),
            (role, m @ Message::Error { .. }) => self.peer_error(conn, role, &me, m),
            (Role::Answerer, Message::Register { groups }) => {
                self.register(conn, &me, groups, &err)
            }
            (Role::Door, Message::Ring { call_id, group, .. }) => {
                self.ring(conn, &me, call_id, group, false)
            }
            (
                Role::Door,
                Message::Resume {
                    call_id,
                    answerer,
                    group,
                    route,
                },
            ) => self.resume(conn, &me, call_id, answerer, group, route),
            (Role::Door, Message::Cancel { call_id, reason }) => {
                self.door_cancel(conn, &me, call_id, reason, &err)
            }
            (Role::Answerer, Message::Accept { call_id }) => self.accept(conn, &me, call_id),
            (Role::Answerer, Message::CallDoor { call_id, door, .. }) => {
                self.call_door(conn, &me, call_id, door)
            }
            (Role::Answerer, Message::Decline { call_id }) => {
                self.decline(conn, &me, call_id, &err)
            }
            (Role::Answerer, Message::PushSubscribe { subscription }) => {
                self.push_subscribe(conn, &me, subscription)
            }
            (Role::Answerer, Message::PushUnsubscribe { endpoint }) => {
                self.push_unsubscribe(conn, &me, endpoint, &err)
            }
            (Role::Answerer, Message::GetHistory { limit }) => {
                let groups = self
                    .principal(Role::Answerer, &me.id)
                    .map(|p| p.groups.clone())
                    .unwrap_or_default();
                vec![Action::History {
                    conn,
                    answerer: me.id.clone(),
                    groups,
                    limit: limit.unwrap_or(HISTORY_DEFAULT).clamp(1, HISTORY_MAX),
                }]
            }
            (Role::Door, Message::DoorOpened { call_id }) => match self.calls.get_mut(&call_id) {
                Some(call) if call.door == me.id => {
                    call.door_opened = true;
                    Vec::new()
                }
                Some(_) => err.with(ErrorCode::NotPermitted, "not your call".into()),
                None => err.with(ErrorCode::UnknownCall, format!("no call {call_id}")),
            },
            (
                role,
                m @ (Message::Offer { .. }
                | Message::Answer { .. }
                | Message::Candidate { .. }
                | Message::Hangup { .. }),
            ) => self.relay(conn, role, &me, m, &err),
            (_, m) => err.with(
                ErrorCode::NotPermitted,
                format!("a {} may not send `{}`", me.role, m.type_name()),
            ),
        }
    }

    /// An `error` from a peer: logged, and passed to the other party of
    /// the call it names.
    fn peer_error(&mut self, conn: ConnId, role: Role, me: &Identity, m: Message) -> Vec<Action> {
        let Message::Error {
            code,
            message,
            call_id,
            ..
        } = &m
        else {
            unreachable!("matched by the caller")
        };
        let mut out = vec![Action::log(
            LogLevel::Warn,
            conn,
            format!(
                "peer reported error {}: {}",
                code.as_str(),
                escape_peer_text(message)
            ),
        )];
        // An error about a call goes to the other party, so that a
        // resident learns that the door refused its input.
        if let Some((peer_role, peer)) = call_id
            .as_ref()
            .and_then(|id| self.calls.get(id))
            .and_then(|call| Self::other_party(call, role, &me.id))
        {
            out.extend(self.to_identity(peer_role, &peer, m.clone()));
        }
        out
    }

    fn register(
        &mut self,
        conn: ConnId,
        me: &Identity,
        groups: Vec<String>,
        err: &Refuse,
    ) -> Vec<Action> {
        let allowed = self
            .principal(Role::Answerer, &me.id)
            .map(|p| p.groups.clone())
            .unwrap_or_default();
        if let Some(bad) = groups.iter().find(|g| !allowed.contains(g)) {
            return err.with(
                ErrorCode::NotPermitted,
                format!("not a member of group `{}`", escape_peer_text(bad)),
            );
        }
        if let Some(w) = self.conns.get_mut(&conn).and_then(|c| c.who.as_mut()) {
            w.groups = groups.clone();
        }
        vec![Action::Send(conn, Message::Registered { groups })]
    }

    /// The door's `cancel` of its own call.
    fn door_cancel(
        &mut self,
        conn: ConnId,
        me: &Identity,
        call_id: CallId,
        reason: String,
        err: &Refuse,
    ) -> Vec<Action> {
        let Some(call) = self.calls.get(&call_id) else {
            return err.with(ErrorCode::UnknownCall, format!("no call {call_id}"));
        };
        if call.door != me.id {
            return err.with(ErrorCode::NotPermitted, "not your call".into());
        }
        let call = self.calls.remove(&call_id).expect("looked up just above");
        let mut out = vec![Action::log(
            LogLevel::Info,
            conn,
            format!(
                "call {call_id} cancelled by the door ({})",
                crate::logging::escape_peer_text(&reason)
            ),
        )];
        for a in call.rung.iter().filter(|a| !call.declined.contains(*a)) {
            out.extend(self.to_identity(
                Role::Answerer,
                a,
                Message::Cancel {
                    call_id: call_id.clone(),
                    reason: reason.clone(),
                },
            ));
        }
        let end = if reason == "timeout" {
            "timeout"
        } else {
            "cancel"
        };
        let outcome = match call.accepted {
            Some(_) => CallOutcome::Answered,
            None => CallOutcome::Missed,
        };
        out.extend(self.finish(&call_id, call, outcome, end));
        out
    }

    fn decline(
        &mut self,
        conn: ConnId,
        me: &Identity,
        call_id: CallId,
        err: &Refuse,
    ) -> Vec<Action> {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return err.with(ErrorCode::UnknownCall, format!("no call {call_id}"));
        };
        if !call.rung.contains(&me.id) || call.accepted.is_some() {
            return err.with(
                ErrorCode::BadState,
                format!("call {call_id} is not ringing you"),
            );
        }
        call.declined.insert(me.id.clone());
        // This answerer's other devices stop ringing now.
        let mine: Vec<_> = call
            .pushed
            .iter()
            .filter(|(a, _)| *a == me.id)
            .cloned()
            .collect();
        call.pushed.retain(|(a, _)| *a != me.id);
        let all_declined = call.declined.len() >= call.rung.len();
        let mut out = self.end_pushes(&call_id, &mine, "declined");
        if !all_declined {
            return out;
        }
        let call = self.calls.remove(&call_id).expect("looked up just above");
        out.push(Action::log(
            LogLevel::Info,
            conn,
            format!("call {call_id}: every answerer declined"),
        ));
        out.extend(self.to_identity(
            Role::Door,
            &call.door,
            Message::Declined {
                call_id: call_id.clone(),
            },
        ));
        out.extend(self.finish(&call_id, call, CallOutcome::Declined, "declined"));
        out
    }

    fn push_unsubscribe(
        &mut self,
        conn: ConnId,
        me: &Identity,
        endpoint: String,
        err: &Refuse,
    ) -> Vec<Action> {
        if endpoint.len() > MAX_ENDPOINT_BYTES {
            return err.with(
                ErrorCode::TooLarge,
                format!("endpoint longer than {MAX_ENDPOINT_BYTES} bytes"),
            );
        }
        if let Some(list) = self.subs.get_mut(&me.id) {
            list.retain(|s| s.endpoint != endpoint);
        }
        vec![
            Action::Store(StoreOp::DeleteSubscription {
                answerer: Some(me.id.clone()),
                endpoint,
            }),
            Action::Send(conn, Message::PushUnsubscribed),
        ]
    }

    /// An offer, answer, candidate or hangup, passed to the other party of
    /// an accepted call.
    fn relay(
        &mut self,
        conn: ConnId,
        role: Role,
        me: &Identity,
        m: Message,
        err: &Refuse,
    ) -> Vec<Action> {
        let kind = err.kind;
        let call_id = m
            .call_id()
            .cloned()
            .expect("these variants all carry a call id");
        let Some(call) = self.calls.get(&call_id) else {
            return err.with(ErrorCode::UnknownCall, format!("no call {call_id}"));
        };
        if call.accepted.is_none() {
            return err.with(
                ErrorCode::BadState,
                format!("call {call_id} is not accepted yet"),
            );
        }
        let Some((peer_role, peer)) = Self::other_party(call, role, &me.id) else {
            return err.with(
                ErrorCode::NotPermitted,
                format!("you are not a party of call {call_id}"),
            );
        };
        let mut out = Vec::new();
        if let Message::Candidate { .. } = &m {
            let now = self.unix_ms;
            let budget = &mut self
                .calls
                .get_mut(&call_id)
                .expect("looked up just above")
                .candidates[usize::from(role == Role::Answerer)];
            if !budget.take(now) {
                // Said once per call and party.
                if budget.dropped == 1 {
                    out.push(Action::log(
                        LogLevel::Warn,
                        conn,
                        format!(
                            "candidates for call {call_id} beyond {MAX_CANDIDATES_PER_CALL} per call or {MAX_CANDIDATES_PER_SECOND} per second dropped"
                        ),
                    ));
                }
                return out;
            }
        }
        if let Message::Hangup { reason, .. } = &m {
            let call = self.calls.remove(&call_id).expect("looked up just above");
            out.push(Action::log(
                LogLevel::Info,
                conn,
                format!(
                    "call {call_id} hung up by {} {} ({})",
                    role,
                    me.id,
                    crate::logging::escape_peer_text(reason)
                ),
            ));
            let outcome = match reason.as_str() {
                "failed" | "error" => CallOutcome::Failed,
                _ => CallOutcome::Answered,
            };
            out.extend(self.finish(&call_id, call, outcome, "taken"));
        }
        let delivered = self.to_identity(peer_role, &peer, m);
        if delivered.is_empty() {
            out.push(Action::log(
                LogLevel::Warn,
                conn,
                format!("{kind} for call {call_id} dropped: {peer_role} {peer} is offline"),
            ));
        }
        out.extend(delivered);
        out
    }

    /// The other party of an accepted call, if `me` is one of its parties.
    fn other_party(call: &HubCall, role: Role, me: &str) -> Option<(Role, String)> {
        let answerer = call.accepted.clone()?;
        match role {
            Role::Door if call.door == me => Some((Role::Answerer, answerer)),
            Role::Answerer if answerer == me => Some((Role::Door, call.door.clone())),
            _ => None,
        }
    }

    fn principal(&self, role: Role, id: &str) -> Option<&Principal> {
        let list = match role {
            Role::Door => &self.settings.doors,
            Role::Answerer => &self.settings.answerers,
        };
        list.iter().find(|p| p.id == id)
    }

    fn hello(&mut self, conn: ConnId, v: u32, role: Role, token: &str) -> Vec<Action> {
        // The source and the time of this hello, both known for a known
        // connection.
        let source = self
            .conns
            .get(&conn)
            .and_then(|c| c.source)
            .zip(self.now_for(conn));
        if let Some((key, now)) = source
            && let Verdict::Refuse { log } = self.backoff.check(key, now)
        {
            // Not evaluated: a guesser learns nothing, and pays a connection.
            let mut out: Vec<Action> = log
                .into_iter()
                .map(|l| Action::log(LogLevel::Warn, conn, l))
                .collect();
            out.push(Action::Send(
                conn,
                Message::error(
                    ErrorCode::AuthFailed,
                    "too many failed attempts from this address: retry later",
                ),
            ));
            out.push(Action::Close(conn, 1008, "too many failed attempts"));
            return out;
        }
        if v != PROTOCOL_VERSION {
            return vec![
                Action::log(
                    LogLevel::Warn,
                    conn,
                    format!("refused protocol version {v}"),
                ),
                Action::Send(
                    conn,
                    Message::error(
                        ErrorCode::UnsupportedVersion,
                        format!("this hub speaks protocol version {PROTOCOL_VERSION}"),
                    ),
                ),
                Action::Close(conn, 1008, "unsupported protocol version"),
            ];
        }
        let Some(p) = self.token_owner(role, token) else {
            // With a known source the backoff decides which failures are
            // worth a line; the token itself never is.
            let line = match source {
                Some((key, now)) => self
                    .backoff
                    .failed(key, now)
                    .map(|l| format!("authentication failed for a {role}: {l}")),
                None => Some(format!("authentication failed for a {role}")),
            };
            let mut out: Vec<Action> = line
                .into_iter()
                .map(|l| Action::log(LogLevel::Warn, conn, l))
                .collect();
            out.extend([
                Action::Send(
                    conn,
                    Message::error(ErrorCode::AuthFailed, "authentication failed"),
                ),
                Action::Close(conn, 1008, "authentication failed"),
            ]);
            return out;
        };
        if let Some((key, _)) = source {
            self.backoff.succeeded(key);
        }
        self.authenticated(conn, role, p)
    }

    /// The principal of `role` whose token is `token`.
    fn token_owner(&self, role: Role, token: &str) -> Option<Principal> {
        let list = match role {
            Role::Door => &self.settings.doors,
            Role::Answerer => &self.settings.answerers,
        };
        // Check every entry so the time taken does not depend on which one
        // matched; fixed-length digests, so neither does the token's length.
        let offered = guard::token_digest(token);
        let mut found = None;
        for p in list {
            if guard::digests_equal(&guard::token_digest(&p.token), &offered) && !token.is_empty() {
                found = Some(p.clone());
            }
        }
        found
    }

    /// Connection `conn` is principal `p` from now on: its older
    /// connection closed, the welcome sent, and an answerer's rings replayed.
    fn authenticated(&mut self, conn: ConnId, role: Role, p: Principal) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(old) = self.online.insert((role, p.id.clone()), conn)
            && old != conn
        {
            out.push(Action::Close(old, 4000, "replaced by a newer connection"));
            if let Some(c) = self.conns.get_mut(&old) {
                c.who = None;
            }
        }
        let session = match self.conns.get_mut(&conn) {
            Some(c) => {
                c.who = Some(Identity {
                    role,
                    id: p.id.clone(),
                    name: p.name.clone(),
                    groups: p.groups.clone(),
                });
                c.session.clone()
            }
            None => return out,
        };
        out.push(Action::log(
            LogLevel::Info,
            conn,
            format!("{role} {} authenticated", p.id),
        ));
        out.push(Action::Send(
            conn,
            Message::Welcome {
                v: PROTOCOL_VERSION,
                session,
                id: p.id.clone(),
                name: p.name.clone(),
                groups: if role == Role::Answerer {
                    p.groups.clone()
                } else {
                    Vec::new()
                },
                ice_servers: self
                    .settings
                    .ice_servers
                    .iter()
                    .map(|s| s.resolve(&p.id, self.unix_now))
                    .collect(),
                doors: self.callable_doors(role, &p),
                push: match role {
                    Role::Answerer => self.push_key.clone().map(|k| PushInfo {
                        vapid_public_key: k,
                    }),
                    Role::Door => None,
                },
            },
        ));
        if role == Role::Answerer {
            out.extend(self.replay_rings(conn, &p));
        }
        out
    }

    /// The doors an answerer may call: every door of the hub with
    /// `call_door`, none without.
    fn callable_doors(&self, role: Role, p: &Principal) -> Vec<PeerInfo> {
        if role != Role::Answerer || !p.call_door {
            return Vec::new();
        }
        self.settings
            .doors
            .iter()
            .map(|d| PeerInfo {
                id: d.id.clone(),
                name: d.name.clone(),
            })
            .collect()
    }

    fn online_answerers(&self, group: &str) -> Vec<(String, ConnId)> {
        let mut v: Vec<_> = self
            .online
            .iter()
            .filter(|((role, _), _)| *role == Role::Answerer)
            .filter_map(|((_, id), conn)| {
                let w = self.conns.get(conn)?.who.as_ref()?;
                w.groups
                    .iter()
                    .any(|g| g == group)
                    .then(|| (id.clone(), *conn))
            })
            .collect();
        v.sort();
        v
    }

    fn ring(
        &mut self,
        conn: ConnId,
        me: &Identity,
        call_id: CallId,
        group: String,
        quiet: bool,
    ) -> Vec<Action> {
        let may_ring = self
            .principal(Role::Door, &me.id)
            .is_some_and(|p| p.groups.contains(&group));
        if !may_ring {
            return vec![
                Action::log(
                    LogLevel::Warn,
                    conn,
                    format!(
                        "call {call_id}: door {} may not ring group `{}`",
                        me.id,
                        crate::logging::escape_peer_text(&group)
                    ),
                ),
                Action::Send(
                    conn,
                    Message::Error {
                        code: ErrorCode::NotPermitted,
                        message: format!("this door may not ring group `{group}`"),
                        reference: Some(if quiet { "resume" } else { "ring" }.into()),
                        call_id: Some(call_id),
                    },
                ),
            ];
        }
        if let Some(existing) = self.calls.get(&call_id) {
            if existing.door == me.id {
                // A repeated ring (second press, resend) changes nothing.
                return Vec::new();
            }
            return vec![Action::Send(
                conn,
                Message::Error {
                    code: ErrorCode::BadState,
                    message: format!("call id {call_id} is in use"),
                    reference: Some("ring".into()),
                    call_id: Some(call_id),
                },
            )];
        }
        let mut out = self.end_stale_calls(&me.id);
        let route = self.route_ring(&group);
        out.extend(self.start_ring(conn, me, call_id, group, quiet, route));
        out
    }

    /// A door has one call at a time: forget its stale ones. A resident
    /// whose call to this door crossed the visitor's press is told: the
    /// door will refuse that call, and the refusal would find no route.
    fn end_stale_calls(&mut self, door: &str) -> Vec<Action> {
        let stale_ids: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.door == door)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in stale_ids {
            let Some(c) = self.calls.remove(&id) else {
                continue;
            };
            if let (true, Some(answerer)) = (c.group.is_empty(), &c.accepted) {
                out.extend(self.to_identity(
                    Role::Answerer,
                    answerer,
                    Message::Hangup {
                        call_id: id.clone(),
                        reason: "busy".into(),
                    },
                ));
            }
            out.extend(self.finish_stale(&id, c));
        }
        out
    }

    /// Who a ring of `group` reaches, and how.
    fn route_ring(&self, group: &str) -> RingRoute {
        // Quiet hours are judged once, at the ring: who is quiet stays
        // quiet for this call.
        let members: Vec<(String, bool)> = self
            .settings
            .answerers
            .iter()
            .filter(|p| p.groups.iter().any(|g| g == group))
            .map(|p| (p.id.clone(), p.quiet_hours.contains(self.week)))
            .collect();
        let quiet_ids: Vec<String> = members
            .iter()
            .filter(|(_, q)| *q)
            .map(|(id, _)| id.clone())
            .collect();
        let answerers: Vec<(String, ConnId)> = self
            .online_answerers(group)
            .into_iter()
            .filter(|(id, _)| !quiet_ids.contains(id))
            .collect();
        // Every device of a rung answerer rings, page open or not; an
        // answerer online without this group registered is not rung.
        let pushed: Vec<(String, Vec<Subscription>)> = members
            .iter()
            .filter(|(id, q)| !q && self.rings_by_push(id, &answerers))
            .filter_map(|(id, _)| {
                let subs = self.subs.get(id).filter(|s| !s.is_empty())?;
                Some((id.clone(), subs.clone()))
            })
            .collect();
        let mut rung: Vec<String> = answerers.iter().map(|(id, _)| id.clone()).collect();
        for (id, _) in &pushed {
            if !rung.contains(id) {
                rung.push(id.clone());
            }
        }
        RingRoute {
            quiet_ids,
            answerers,
            pushed,
            rung,
        }
    }

    /// The ring sent, pushed and stored, and the call kept (or ended at
    /// once when nobody is rung).
    fn start_ring(
        &mut self,
        conn: ConnId,
        me: &Identity,
        call_id: CallId,
        group: String,
        quiet: bool,
        route: RingRoute,
    ) -> Vec<Action> {
        let RingRoute {
            quiet_ids,
            answerers,
            pushed,
            rung,
        } = route;
        let mut out = vec![Action::log(
            LogLevel::Info,
            conn,
            format!(
                "call {call_id}: door {} rings group `{group}` ({} online, {} by push only, {} in quiet hours)",
                me.id,
                answerers.len(),
                rung.len() - answerers.len(),
                quiet_ids.len(),
            ),
        )];
        let door = PeerInfo {
            id: me.id.clone(),
            name: me.name.clone(),
        };
        for (_, a) in &answerers {
            out.push(Action::Send(
                *a,
                Message::Ring {
                    call_id: call_id.clone(),
                    group: group.clone(),
                    door: Some(door.clone()),
                },
            ));
        }
        if !quiet {
            out.push(Action::Send(
                conn,
                Message::Ringing {
                    call_id: call_id.clone(),
                    answerers: rung.len() as u32,
                },
            ));
        }
        // Right after routing: a phone in a pocket is as urgent as a page.
        let payload = serde_json::json!({
            "kind": "ring",
            "call_id": call_id,
            "door": door,
            "at_ms": self.unix_ms,
        });
        for (answerer, subscriptions) in &pushed {
            out.push(Action::Push(PushJob {
                answerer: answerer.clone(),
                call_id: call_id.clone(),
                subscriptions: subscriptions.clone(),
                payload: payload.clone(),
                ttl: self.settings.ring_timeout,
                urgency: Urgency::High,
                topic: push_topic(&call_id),
            }));
        }
        out.push(Action::Store(StoreOp::InsertCall(CallRecord {
            call_id: call_id.to_string(),
            door: door.clone(),
            group: group.clone(),
            started_at_ms: self.unix_ms,
            quiet: quiet_ids,
        })));
        let call = HubCall {
            door: me.id.clone(),
            door_name: me.name.clone(),
            group,
            rung: rung.into_iter().collect(),
            pushed,
            ..Default::default()
        };
        if call.rung.is_empty() {
            // Nobody to ring: the door ends the call (`no_answerer`).
            out.extend(self.finish(&call_id, call, CallOutcome::Missed, "cancel"));
        } else {
            self.calls.insert(call_id, call);
        }
        out
    }

    /// Whether answerer `id` is rung by push: offline, or online and
    /// rung on its page.
    fn rings_by_push(&self, id: &str, rung_online: &[(String, ConnId)]) -> bool {
        let online = self.online.contains_key(&(Role::Answerer, id.to_owned()));
        !online || rung_online.iter().any(|(a, _)| a == id)
    }

    /// `end` pushes to devices that were pushed the ring.
    fn end_pushes(
        &self,
        call_id: &CallId,
        pushed: &[(String, Vec<Subscription>)],
        reason: &str,
    ) -> Vec<Action> {
        let payload = serde_json::json!({
            "kind": "end",
            "call_id": call_id,
            "reason": reason,
        });
        pushed
            .iter()
            .map(|(answerer, subscriptions)| {
                Action::Push(PushJob {
                    answerer: answerer.clone(),
                    call_id: call_id.clone(),
                    subscriptions: subscriptions.clone(),
                    payload: payload.clone(),
                    ttl: END_PUSH_TTL,
                    urgency: Urgency::High,
                    topic: push_topic(call_id),
                })
            })
            .collect()
    }

    /// A call is over: `end` to the devices still ringing, the final
    /// record, and the fresh history to the group's connected answerers.
    fn finish(
        &self,
        call_id: &CallId,
        call: HubCall,
        outcome: CallOutcome,
        end_reason: &str,
    ) -> Vec<Action> {
        let mut out = self.end_pushes(call_id, &call.pushed, end_reason);
        if call.group.is_empty() {
            // A resident's call to the door is not a ring of a group.
            return out;
        }
        let answered_by = call.accepted.as_ref().map(|id| PeerInfo {
            id: id.clone(),
            name: self
                .principal(Role::Answerer, id)
                .map(|p| p.name.clone())
                .unwrap_or_default(),
        });
        let duration_ms = match (outcome, call.accepted_ms) {
            (CallOutcome::Answered | CallOutcome::Failed, Some(t)) => {
                Some(self.unix_ms.saturating_sub(t))
            }
            _ => None,
        };
        out.push(Action::Store(StoreOp::FinishCall(CallEnd {
            call_id: call_id.to_string(),
            outcome,
            answered_by,
            duration_ms,
            door_opened: call.door_opened,
        })));
        out.extend(self.history_updates(&call.group));
        out
    }

    /// A call dropped because its door started another.
    fn finish_stale(&self, call_id: &CallId, call: HubCall) -> Vec<Action> {
        let outcome = match call.accepted {
            Some(_) => CallOutcome::Answered,
            None => CallOutcome::Missed,
        };
        self.finish(call_id, call, outcome, "cancel")
    }

    /// The latest history for every connected answerer of `group`.
    fn history_updates(&self, group: &str) -> Vec<Action> {
        let mut v: Vec<Action> = self
            .online
            .iter()
            .filter(|((role, _), _)| *role == Role::Answerer)
            .filter_map(|((_, id), conn)| {
                let p = self.principal(Role::Answerer, id)?;
                p.groups
                    .iter()
                    .any(|g| g == group)
                    .then(|| Action::History {
                        conn: *conn,
                        answerer: id.clone(),
                        groups: p.groups.clone(),
                        limit: HISTORY_DEFAULT,
                    })
            })
            .collect();
        v.sort_by_key(|a| match a {
            Action::History { conn, .. } => *conn,
            _ => 0,
        });
        v
    }

    /// Contract item 5: an answerer connecting while its group rings gets
    /// the ring at once (a phone opened from a notification can answer).
    fn replay_rings(&mut self, conn: ConnId, p: &Principal) -> Vec<Action> {
        if p.quiet_hours.contains(self.week) {
            return Vec::new();
        }
        let mut ids: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.accepted.is_none()
                    && !c.group.is_empty()
                    && p.groups.contains(&c.group)
                    && !c.declined.contains(&p.id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            c.rung.insert(p.id.clone());
            out.push(Action::Send(
                conn,
                Message::Ring {
                    call_id: id.clone(),
                    group: c.group.clone(),
                    door: Some(PeerInfo {
                        id: c.door.clone(),
                        name: c.door_name.clone(),
                    }),
                },
            ));
        }
        out
    }

    /// The subscriptions the store had at start; merged with any made
    /// since.
    pub fn load_subscriptions(&mut self, subs: Vec<(String, Subscription)>) {
        for (answerer, sub) in subs {
            let list = self.subs.entry(answerer).or_default();
            if !list.iter().any(|s| s.endpoint == sub.endpoint) {
                list.push(sub);
            }
        }
    }

    /// The push service said this endpoint is gone (404/410).
    pub fn push_gone(&mut self, answerer: &str, endpoint: &str) -> Vec<Action> {
        if let Some(list) = self.subs.get_mut(answerer) {
            list.retain(|s| s.endpoint != endpoint);
        }
        for c in self.calls.values_mut() {
            for (_, subs) in &mut c.pushed {
                subs.retain(|s| s.endpoint != endpoint);
            }
        }
        vec![Action::Store(StoreOp::DeleteSubscription {
            answerer: None,
            endpoint: endpoint.to_owned(),
        })]
    }

    /// How many subscriptions the hub knows for `answerer`.
    pub fn subscription_count(&self, answerer: &str) -> usize {
        self.subs.get(answerer).map_or(0, Vec::len)
    }

    fn push_subscribe(&mut self, conn: ConnId, me: &Identity, sub: Subscription) -> Vec<Action> {
        if let Err((code, why)) = check_subscription(&sub) {
            return vec![
                Action::log(
                    LogLevel::Warn,
                    conn,
                    format!("push_subscribe refused: {why}"),
                ),
                Action::Send(
                    conn,
                    Message::Error {
                        code,
                        message: why,
                        reference: Some("push_subscribe".into()),
                        call_id: None,
                    },
                ),
            ];
        }
        // An endpoint belongs to one device, so to one answerer: the last
        // to subscribe it.
        for list in self.subs.values_mut() {
            list.retain(|s| s.endpoint != sub.endpoint);
        }
        let list = self.subs.entry(me.id.clone()).or_default();
        let mut out = Vec::new();
        while list.len() >= MAX_SUBSCRIPTIONS_PER_ANSWERER {
            let old = list.remove(0);
            out.push(Action::Store(StoreOp::DeleteSubscription {
                answerer: Some(me.id.clone()),
                endpoint: old.endpoint,
            }));
        }
        list.push(sub.clone());
        out.push(Action::log(
            LogLevel::Info,
            conn,
            format!(
                "push subscription saved ({} for this answerer, service {})",
                list.len(),
                super::push::endpoint_host(&sub.endpoint)
            ),
        ));
        out.push(Action::Store(StoreOp::SaveSubscription {
            answerer: me.id.clone(),
            subscription: sub,
            at_ms: self.unix_ms,
        }));
        out.push(Action::Send(conn, Message::PushSubscribed));
        out
    }

    fn resume(
        &mut self,
        conn: ConnId,
        me: &Identity,
        call_id: CallId,
        answerer: Option<String>,
        group: Option<String>,
        route: Option<String>,
    ) -> Vec<Action> {
        let resumed = vec![Action::Send(
            conn,
            Message::Resumed {
                call_id: call_id.clone(),
            },
        )];
        let refuse = |code: ErrorCode, text: String| {
            vec![
                Action::log(LogLevel::Warn, conn, format!("resume refused: {text}")),
                Action::Send(
                    conn,
                    Message::Error {
                        code,
                        message: text,
                        reference: Some("resume".into()),
                        call_id: Some(call_id.clone()),
                    },
                ),
            ]
        };
        if let Some(call) = self.calls.get(&call_id) {
            if call.door != me.id {
                return refuse(ErrorCode::NotPermitted, "not your call".into());
            }
            return resumed;
        }
        // The hub restarted (or forgot): rebuild the route from the door's
        // word, when the door proves that this hub made that route.
        match answerer {
            Some(a) => {
                if self.principal(Role::Answerer, &a).is_none() {
                    return refuse(ErrorCode::UnknownPeer, format!("no answerer `{a}`"));
                }
                // A resident's call to the door has no group.
                let group = group.unwrap_or_default();
                if !self.route_proven(&me.id, &call_id, &a, &group, route.as_deref()) {
                    return refuse(
                        ErrorCode::NotPermitted,
                        format!("no proof that this hub routed call {call_id} to `{a}`"),
                    );
                }
                let stale: Vec<_> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| c.door == me.id)
                    .map(|(id, _)| id.clone())
                    .collect();
                let mut out = Vec::new();
                for id in stale {
                    if let Some(c) = self.calls.remove(&id) {
                        out.extend(self.finish_stale(&id, c));
                    }
                }
                self.calls.insert(
                    call_id.clone(),
                    HubCall {
                        door: me.id.clone(),
                        door_name: me.name.clone(),
                        group,
                        rung: HashSet::from([a.clone()]),
                        accepted: Some(a.clone()),
                        ..Default::default()
                    },
                );
                out.push(Action::log(
                    LogLevel::Info,
                    conn,
                    format!("call {call_id} between door {} and {a} resumed", me.id),
                ));
                out.extend(resumed);
                out
            }
            // A ringing call the hub forgot: ring the group again, quietly
            // (answerers may still be reconnecting; the door's own ring
            // timeout decides when to give up).
            None => {
                let mut out = match group {
                    Some(g) => self.ring(conn, me, call_id, g, true),
                    None => Vec::new(),
                };
                if out
                    .iter()
                    .any(|a| matches!(a, Action::Send(_, Message::Error { .. })))
                {
                    return out;
                }
                out.extend(resumed);
                out
            }
        }
    }

    /// A resident calls a door: check the permission and the door, then
    /// route the call as an accepted one between the two, so that offer,
    /// answer, candidates and hangup flow exactly as in an answered call.
    fn call_door(
        &mut self,
        conn: ConnId,
        me: &Identity,
        call_id: CallId,
        door: Option<String>,
    ) -> Vec<Action> {
        let target = match self.door_to_call(me, &call_id, door) {
            Ok(target) => target,
            Err((code, text)) => {
                return vec![
                    Action::log(
                        LogLevel::Warn,
                        conn,
                        format!("call_door from {} refused: {text}", me.id),
                    ),
                    Action::Send(
                        conn,
                        Message::Error {
                            code,
                            message: text,
                            reference: Some("call_door".into()),
                            call_id: Some(call_id.clone()),
                        },
                    ),
                ];
            }
        };
        self.calls.insert(
            call_id.clone(),
            HubCall {
                door: target.id.clone(),
                door_name: target.name.clone(),
                group: String::new(),
                rung: HashSet::from([me.id.clone()]),
                accepted: Some(me.id.clone()),
                accepted_ms: Some(self.unix_ms),
                ..Default::default()
            },
        );
        let mut out = vec![Action::log(
            LogLevel::Info,
            conn,
            format!("call {call_id}: {} calls door {}", me.id, target.id),
        )];
        out.extend(self.to_identity(
            Role::Door,
            &target.id,
            Message::CallDoor {
                call_id: call_id.clone(),
                door: None,
                answerer: Some(PeerInfo {
                    id: me.id.clone(),
                    name: me.name.clone(),
                }),
                route: self.route_proof(&target.id, &call_id, &me.id, ""),
            },
        ));
        out.push(Action::Send(
            conn,
            Message::Calling {
                call_id,
                door: target,
            },
        ));
        out
    }

    /// The door that answerer `me` may call now as `call_id`, or why not.
    fn door_to_call(
        &self,
        me: &Identity,
        call_id: &CallId,
        door: Option<String>,
    ) -> Result<PeerInfo, (ErrorCode, String)> {
        let doors = match self.principal(Role::Answerer, &me.id) {
            Some(p) if p.call_door => self.callable_doors(Role::Answerer, p),
            _ => {
                return Err((
                    ErrorCode::NotPermitted,
                    "this answerer may not call a door".into(),
                ));
            }
        };
        let target = match (door, doors.as_slice()) {
            (Some(d), _) => match doors.iter().find(|p| p.id == d) {
                Some(p) => p.clone(),
                None => {
                    let mut shown: String = d.chars().filter(|c| c.is_ascii_graphic()).collect();
                    shown.truncate(64);
                    return Err((ErrorCode::UnknownPeer, format!("no door `{shown}`")));
                }
            },
            (None, [only]) => only.clone(),
            (None, _) => {
                return Err((
                    ErrorCode::BadMessage,
                    format!("`door` is required: {} doors may be called", doors.len()),
                ));
            }
        };
        if self.calls.contains_key(call_id) {
            return Err((ErrorCode::BadState, format!("call id {call_id} is in use")));
        }
        if !self.online.contains_key(&(Role::Door, target.id.clone())) {
            return Err((
                ErrorCode::DoorOffline,
                format!("door {} is not connected", target.id),
            ));
        }
        if self.calls.values().any(|c| c.door == target.id) {
            return Err((
                ErrorCode::Busy,
                format!("door {} is in another call", target.id),
            ));
        }
        Ok(target)
    }

    fn accept(&mut self, conn: ConnId, me: &Identity, call_id: CallId) -> Vec<Action> {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return vec![
                Action::log(
                    LogLevel::Warn,
                    conn,
                    format!("accept for unknown call {call_id}"),
                ),
                Action::Send(
                    conn,
                    Message::Error {
                        code: ErrorCode::UnknownCall,
                        message: format!("no call {call_id}"),
                        reference: Some("accept".into()),
                        call_id: Some(call_id),
                    },
                ),
            ];
        };
        if !call.rung.contains(&me.id) {
            return vec![Action::Send(
                conn,
                Message::Error {
                    code: ErrorCode::NotPermitted,
                    message: format!("call {call_id} did not ring you"),
                    reference: Some("accept".into()),
                    call_id: Some(call_id),
                },
            )];
        }
        if let Some(winner) = call.accepted.clone() {
            if winner == me.id {
                return Vec::new();
            }
            let by = self
                .principal(Role::Answerer, &winner)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            return vec![Action::Send(conn, Message::Taken { call_id, by })];
        }
        call.accepted = Some(me.id.clone());
        call.accepted_ms = Some(self.unix_ms);
        let pushed = std::mem::take(&mut call.pushed);
        let door = call.door.clone();
        let group = call.group.clone();
        let others: Vec<String> = call
            .rung
            .iter()
            .filter(|a| **a != me.id && !call.declined.contains(*a))
            .cloned()
            .collect();
        let mut out = vec![Action::log(
            LogLevel::Info,
            conn,
            format!("call {call_id} (group `{group}`) accepted by {}", me.id),
        )];
        out.extend(self.to_identity(
            Role::Door,
            &door,
            Message::Accepted {
                call_id: call_id.clone(),
                answerer: PeerInfo {
                    id: me.id.clone(),
                    name: me.name.clone(),
                },
                route: self.route_proof(&door, &call_id, &me.id, &group),
            },
        ));
        for a in others {
            out.extend(self.to_identity(
                Role::Answerer,
                &a,
                Message::Taken {
                    call_id: call_id.clone(),
                    by: me.name.clone(),
                },
            ));
        }
        out.extend(self.end_pushes(&call_id, &pushed, "taken"));
        out
    }

    fn to_identity(&self, role: Role, id: &str, msg: Message) -> Vec<Action> {
        match self.online.get(&(role, id.to_owned())) {
            Some(c) => vec![Action::Send(*c, msg)],
            None => Vec::new(),
        }
    }
}

/// What a route proof signs: length-prefixed, so no two routes share an
/// encoding.
fn route_data(door: &str, call_id: &CallId, answerer: &str, group: &str) -> Vec<u8> {
    let mut data = Vec::new();
    for part in [door, call_id.as_str(), answerer, group] {
        data.extend_from_slice(&(part.len() as u32).to_be_bytes());
        data.extend_from_slice(part.as_bytes());
    }
    data
}

/// RFC 8030 `Topic`: at most 32 base64url characters, so a long call id
/// is replaced by the start of its SHA-256.
pub fn push_topic(call_id: &CallId) -> String {
    use base64::Engine;
    let id = call_id.as_str();
    if id.len() <= 32 {
        return id.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    t.truncate(32);
    t
}

/// A subscription's shape: an https endpoint (http only to a loopback
/// host), and keys of the sizes RFC 8291 needs.
fn check_subscription(sub: &Subscription) -> Result<(), (ErrorCode, String)> {
    use base64::Engine;
    let bad = |why: &str| Err((ErrorCode::BadMessage, why.to_owned()));
    let e = &sub.endpoint;
    if e.len() > MAX_ENDPOINT_BYTES {
        return Err((
            ErrorCode::TooLarge,
            format!("endpoint longer than {MAX_ENDPOINT_BYTES} bytes"),
        ));
    }
    if sub.keys.p256dh.len() > MAX_KEY_CHARS || sub.keys.auth.len() > MAX_KEY_CHARS {
        return Err((
            ErrorCode::TooLarge,
            format!("keys longer than {MAX_KEY_CHARS} characters"),
        ));
    }
    if !e.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("endpoint is not a URL (printable ASCII without spaces)");
    }
    let host = super::push::endpoint_host(e);
    let host_name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    if host_name.is_empty() || host.contains('@') {
        return bad("endpoint has no host");
    }
    let loopback = host_name == "localhost"
        || host_name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !(e.starts_with("https://") || (e.starts_with("http://") && loopback)) {
        return bad("endpoint must be an https:// URL");
    }
    let decode = |k: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(k.trim_end_matches('='))
            .ok()
    };
    match decode(&sub.keys.p256dh) {
        Some(k) if k.len() == 65 && k[0] == 4 => {}
        _ => return bad("keys.p256dh must be base64url of an uncompressed P-256 point (65 bytes)"),
    }
    match decode(&sub.keys.auth) {
        Some(k) if k.len() == 16 => {}
        _ => return bad("keys.auth must be base64url of 16 bytes"),
    }
    Ok(())
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
