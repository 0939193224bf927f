//! The hub's routing logic, sans-I/O: connections come and go, frames come
//! in, and `HubState` answers with a list of [`Action`]s for the server shell
//! to carry out. Nothing here touches a socket or a clock.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use crate::ice_servers::IceServerSpec;
use crate::signaling::protocol::{
    self, CallId, DecodeError, ErrorCode, Message, PROTOCOL_VERSION, PeerInfo, Role,
};

/// A door station or answerer allowed to connect.
#[derive(Clone)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub token: String,
    pub groups: Vec<String>,
    /// An answerer that may call the hub's doors (`call_door`).
    pub call_door: bool,
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
    },
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
}

#[derive(Debug)]
struct HubCall {
    door: String,
    /// The ring group; empty for a resident's call to the door.
    group: String,
    rung: HashSet<String>,
    declined: HashSet<String>,
    accepted: Option<String>,
}

pub struct HubState {
    settings: HubSettings,
    conns: HashMap<ConnId, Conn>,
    online: HashMap<(Role, String), ConnId>,
    calls: HashMap<CallId, HubCall>,
    /// Wall-clock seconds, given by the server before each message.
    unix_now: u64,
}

/// Compare secrets without leaking, through timing, how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

impl HubState {
    pub fn new(settings: HubSettings) -> Self {
        HubState {
            settings,
            conns: HashMap::new(),
            online: HashMap::new(),
            calls: HashMap::new(),
            unix_now: 0,
        }
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
        self.conns.insert(
            conn,
            Conn {
                opened: now,
                who: None,
                session,
            },
        );
    }

    pub fn disconnected(&mut self, conn: ConnId) -> Vec<Action> {
        let mut out = Vec::new();
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
        let limit = self.settings.hello_timeout;
        self.conns
            .iter()
            .filter(|(_, c)| c.who.is_none() && now.duration_since(c.opened) >= limit)
            .map(|(id, _)| Action::Close(*id, 4001, "no hello in time"))
            .collect()
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, conn: ConnId, text: &str) -> Vec<Action> {
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
                let mut out = vec![
                    Action::log(LogLevel::Warn, conn, format!("refused frame: {e}")),
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
        vec![
            Action::log(LogLevel::Warn, conn, "refused binary frame".into()),
            Action::Send(
                conn,
                Message::error(
                    ErrorCode::BadMessage,
                    "binary frames are not part of the protocol",
                ),
            ),
        ]
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
        let kind = msg.type_name();
        let call_id = msg.call_id().cloned();
        let err = |code: ErrorCode, text: String| {
            vec![
                Action::log(LogLevel::Warn, conn, format!("{kind}: {text}")),
                Action::Send(
                    conn,
                    Message::Error {
                        code,
                        message: text,
                        reference: Some(kind.into()),
                        call_id: call_id.clone(),
                    },
                ),
            ]
        };
        let who = match (&c.who, msg) {
            (None, Message::Hello { v, role, token, .. }) => {
                return self.hello(conn, v, role, &token);
            }
            (None, Message::Ping) => return vec![Action::Send(conn, Message::Pong)],
            (None, _) => return err(ErrorCode::NotAuthenticated, "send hello first".into()),
            (Some(_), Message::Hello { .. }) => {
                return err(ErrorCode::BadState, "already authenticated".into());
            }
            (Some(w), m) => (w.clone(), m),
        };
        let (me, msg) = who;
        match (me.role, msg) {
            (_, Message::Ping) => vec![Action::Send(conn, Message::Pong)],
            (_, Message::Pong) => Vec::new(),
            (role, m @ Message::Error { .. }) => {
                let Message::Error {
                    code,
                    message,
                    call_id,
                    ..
                } = &m
                else {
                    unreachable!("matched just above")
                };
                let mut out = vec![Action::log(
                    LogLevel::Warn,
                    conn,
                    format!("peer reported error {}: {message}", code.as_str()),
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
            (Role::Answerer, Message::Register { groups }) => {
                let allowed = self
                    .principal(Role::Answerer, &me.id)
                    .map(|p| p.groups.clone())
                    .unwrap_or_default();
                if let Some(bad) = groups.iter().find(|g| !allowed.contains(g)) {
                    return err(
                        ErrorCode::NotPermitted,
                        format!("not a member of group `{bad}`"),
                    );
                }
                if let Some(w) = self.conns.get_mut(&conn).and_then(|c| c.who.as_mut()) {
                    w.groups = groups.clone();
                }
                vec![Action::Send(conn, Message::Registered { groups })]
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
                },
            ) => self.resume(conn, &me, call_id, answerer, group),
            (Role::Door, Message::Cancel { call_id, reason }) => {
                let Some(call) = self.calls.get(&call_id) else {
                    return err(ErrorCode::UnknownCall, format!("no call {call_id}"));
                };
                if call.door != me.id {
                    return err(ErrorCode::NotPermitted, "not your call".into());
                }
                let call = self.calls.remove(&call_id).expect("looked up just above");
                let mut out = vec![Action::log(
                    LogLevel::Info,
                    conn,
                    format!("call {call_id} cancelled by the door ({reason})"),
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
                out
            }
            (Role::Answerer, Message::Accept { call_id }) => self.accept(conn, &me, call_id),
            (Role::Answerer, Message::CallDoor { call_id, door, .. }) => {
                self.call_door(conn, &me, call_id, door)
            }
            (Role::Answerer, Message::Decline { call_id }) => {
                let Some(call) = self.calls.get_mut(&call_id) else {
                    return err(ErrorCode::UnknownCall, format!("no call {call_id}"));
                };
                if !call.rung.contains(&me.id) || call.accepted.is_some() {
                    return err(
                        ErrorCode::BadState,
                        format!("call {call_id} is not ringing you"),
                    );
                }
                call.declined.insert(me.id.clone());
                if call.declined.len() < call.rung.len() {
                    return Vec::new();
                }
                let call = self.calls.remove(&call_id).expect("looked up just above");
                let mut out = vec![Action::log(
                    LogLevel::Info,
                    conn,
                    format!("call {call_id}: every answerer declined"),
                )];
                out.extend(self.to_identity(Role::Door, &call.door, Message::Declined { call_id }));
                out
            }
            (
                role,
                m @ (Message::Offer { .. }
                | Message::Answer { .. }
                | Message::Candidate { .. }
                | Message::Hangup { .. }),
            ) => {
                let call_id = m
                    .call_id()
                    .cloned()
                    .expect("these variants all carry a call id");
                let Some(call) = self.calls.get(&call_id) else {
                    return err(ErrorCode::UnknownCall, format!("no call {call_id}"));
                };
                if call.accepted.is_none() {
                    return err(
                        ErrorCode::BadState,
                        format!("call {call_id} is not accepted yet"),
                    );
                }
                let Some((peer_role, peer)) = Self::other_party(call, role, &me.id) else {
                    return err(
                        ErrorCode::NotPermitted,
                        format!("you are not a party of call {call_id}"),
                    );
                };
                let mut out = Vec::new();
                if let Message::Hangup { reason, .. } = &m {
                    self.calls.remove(&call_id);
                    out.push(Action::log(
                        LogLevel::Info,
                        conn,
                        format!("call {call_id} hung up by {} {} ({reason})", role, me.id),
                    ));
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
            (_, m) => err(
                ErrorCode::NotPermitted,
                format!("a {} may not send `{}`", me.role, m.type_name()),
            ),
        }
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
        let list = match role {
            Role::Door => &self.settings.doors,
            Role::Answerer => &self.settings.answerers,
        };
        // Check every entry so the time taken does not depend on which one
        // matched.
        let mut found = None;
        for p in list {
            if constant_time_eq(p.token.as_bytes(), token.as_bytes()) && !token.is_empty() {
                found = Some(p.clone());
            }
        }
        let Some(p) = found else {
            return vec![
                Action::log(
                    LogLevel::Warn,
                    conn,
                    format!("authentication failed for a {role}"),
                ),
                Action::Send(
                    conn,
                    Message::error(ErrorCode::AuthFailed, "authentication failed"),
                ),
                Action::Close(conn, 1008, "authentication failed"),
            ];
        };
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
            },
        ));
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
        // A door has one call at a time: forget its stale ones. A resident
        // whose call to this door crossed the visitor's press is told: the
        // door will refuse that call, and the refusal would find no route.
        let stale: Vec<(CallId, String)> = self
            .calls
            .iter()
            .filter(|(_, c)| c.door == me.id && c.group.is_empty())
            .filter_map(|(id, c)| Some((id.clone(), c.accepted.clone()?)))
            .collect();
        self.calls.retain(|_, c| c.door != me.id);
        let mut out = Vec::new();
        for (id, answerer) in stale {
            out.extend(self.to_identity(
                Role::Answerer,
                &answerer,
                Message::Hangup {
                    call_id: id,
                    reason: "busy".into(),
                },
            ));
        }
        let answerers = self.online_answerers(&group);
        out.push(Action::log(
            LogLevel::Info,
            conn,
            format!(
                "call {call_id}: door {} rings group `{group}` ({} online)",
                me.id,
                answerers.len()
            ),
        ));
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
                    answerers: answerers.len() as u32,
                },
            ));
        }
        if !answerers.is_empty() {
            self.calls.insert(
                call_id,
                HubCall {
                    door: me.id.clone(),
                    group,
                    rung: answerers.into_iter().map(|(id, _)| id).collect(),
                    declined: HashSet::new(),
                    accepted: None,
                },
            );
        }
        out
    }

    fn resume(
        &mut self,
        conn: ConnId,
        me: &Identity,
        call_id: CallId,
        answerer: Option<String>,
        group: Option<String>,
    ) -> Vec<Action> {
        let resumed = vec![Action::Send(
            conn,
            Message::Resumed {
                call_id: call_id.clone(),
            },
        )];
        if let Some(call) = self.calls.get(&call_id) {
            if call.door != me.id {
                return vec![Action::Send(
                    conn,
                    Message::Error {
                        code: ErrorCode::NotPermitted,
                        message: "not your call".into(),
                        reference: Some("resume".into()),
                        call_id: Some(call_id),
                    },
                )];
            }
            return resumed;
        }
        // The hub restarted (or forgot): rebuild the route from the door's word.
        match answerer {
            Some(a) => {
                let Some(p) = self.principal(Role::Answerer, &a) else {
                    return vec![Action::Send(
                        conn,
                        Message::Error {
                            code: ErrorCode::UnknownPeer,
                            message: format!("no answerer `{a}`"),
                            reference: Some("resume".into()),
                            call_id: Some(call_id),
                        },
                    )];
                };
                // A resident's call to the door has no group (the door
                // resumes it without one).
                let group = match &group {
                    Some(_) => p.groups.first().cloned().unwrap_or_default(),
                    None => String::new(),
                };
                self.calls.retain(|_, c| c.door != me.id);
                self.calls.insert(
                    call_id.clone(),
                    HubCall {
                        door: me.id.clone(),
                        group,
                        rung: HashSet::from([a.clone()]),
                        declined: HashSet::new(),
                        accepted: Some(a.clone()),
                    },
                );
                let mut out = vec![Action::log(
                    LogLevel::Info,
                    conn,
                    format!("call {call_id} between door {} and {a} resumed", me.id),
                )];
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
        let refuse = |code: ErrorCode, text: String| {
            vec![
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
            ]
        };
        let doors = match self.principal(Role::Answerer, &me.id) {
            Some(p) if p.call_door => self.callable_doors(Role::Answerer, p),
            _ => {
                return refuse(
                    ErrorCode::NotPermitted,
                    "this answerer may not call a door".into(),
                );
            }
        };
        let target = match (door, doors.as_slice()) {
            (Some(d), _) => match doors.iter().find(|p| p.id == d) {
                Some(p) => p.clone(),
                None => {
                    let mut shown: String = d.chars().filter(|c| c.is_ascii_graphic()).collect();
                    shown.truncate(64);
                    return refuse(ErrorCode::UnknownPeer, format!("no door `{shown}`"));
                }
            },
            (None, [only]) => only.clone(),
            (None, _) => {
                return refuse(
                    ErrorCode::BadMessage,
                    format!("`door` is required: {} doors may be called", doors.len()),
                );
            }
        };
        if self.calls.contains_key(&call_id) {
            return refuse(ErrorCode::BadState, format!("call id {call_id} is in use"));
        }
        if !self.online.contains_key(&(Role::Door, target.id.clone())) {
            return refuse(
                ErrorCode::DoorOffline,
                format!("door {} is not connected", target.id),
            );
        }
        if self.calls.values().any(|c| c.door == target.id) {
            return refuse(
                ErrorCode::Busy,
                format!("door {} is in another call", target.id),
            );
        }
        self.calls.insert(
            call_id.clone(),
            HubCall {
                door: target.id.clone(),
                group: String::new(),
                rung: HashSet::from([me.id.clone()]),
                declined: HashSet::new(),
                accepted: Some(me.id.clone()),
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
        out
    }

    fn to_identity(&self, role: Role, id: &str, msg: Message) -> Vec<Action> {
        match self.online.get(&(role, id.to_owned())) {
            Some(c) => vec![Action::Send(*c, msg)],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
