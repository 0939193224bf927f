//! Socket.IO v4 framing, so a door station can join an existing Socket.IO
//! backend (Engine.IO protocol 4 over a WebSocket opened directly, without
//! long-polling first). Pure codec: the client actor does the I/O.
//!
//! Frames, as text WebSocket messages:
//! - server `0{"sid",…,"pingInterval","pingTimeout","maxPayload"}` (open)
//! - client `40[/ns,]{auth}` → server `40[/ns,]{"sid"}` or `44[/ns,]{"message"}`
//! - events `42[/ns,][ackid]["name",data]`
//! - server ping `2` → client pong `3`; `1` closes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::protocol::{self, DecodeError, Message};

/// How protocol messages map onto one Socket.IO namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct SocketIoWire {
    namespace: String,
    auth_field: String,
    to_event: BTreeMap<String, String>,
    from_event: HashMap<String, String>,
}

/// One decoded frame from the server.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// Engine.IO open: the server's keepalive figures.
    Open {
        sid: String,
        ping_interval: Duration,
        ping_timeout: Duration,
    },
    /// Engine.IO ping: answer with [`PONG`].
    Ping,
    /// Engine.IO close, or a Socket.IO disconnect of our namespace.
    Closed(String),
    /// Our namespace accepted the connection.
    Connected { sid: String },
    /// Our namespace refused the connection.
    ConnectError(String),
    /// An event mapped onto a protocol message.
    Message(Message),
    /// Something valid we do not act on (another namespace, an ack, an
    /// unmapped event name): the string says what, for the debug log.
    Ignored(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketIoError {
    #[error("not a Socket.IO v4 frame: {0}")]
    Frame(String),
    #[error("event `{event}`: {source}")]
    Event {
        event: String,
        #[source]
        source: DecodeError,
    },
}

/// The Engine.IO pong frame.
pub const PONG: &str = "3";

impl SocketIoWire {
    /// `events` maps message types to event names; unlisted types use
    /// their own name.
    pub fn new(namespace: &str, auth_field: &str, events: &BTreeMap<String, String>) -> Self {
        let to_event = events.clone();
        let from_event = to_event
            .iter()
            .map(|(kind, event)| (event.clone(), kind.clone()))
            .collect();
        SocketIoWire {
            namespace: namespace.to_owned(),
            auth_field: auth_field.to_owned(),
            to_event,
            from_event,
        }
    }

    /// The WebSocket URL for a server address: `/socket.io/` is appended
    /// unless the URL already names it.
    pub fn connect_url(url: &str) -> String {
        if url.contains("/socket.io/") {
            if url.contains("EIO=") {
                url.to_owned()
            } else {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}EIO=4&transport=websocket")
            }
        } else {
            format!(
                "{}/socket.io/?EIO=4&transport=websocket",
                url.trim_end_matches('/')
            )
        }
    }

    fn ns_prefix(&self) -> String {
        if self.namespace == "/" {
            String::new()
        } else {
            format!("{},", self.namespace)
        }
    }

    /// The CONNECT packet carrying the token.
    pub fn connect_packet(&self, token: &str) -> String {
        let mut auth = serde_json::Map::new();
        auth.insert(self.auth_field.clone(), token.into());
        format!("40{}{}", self.ns_prefix(), serde_json::Value::Object(auth))
    }

    /// An event frame for a protocol message.
    pub fn encode(&self, msg: &Message) -> String {
        let kind = msg.type_name();
        let event = self.to_event.get(kind).map(String::as_str).unwrap_or(kind);
        let data: serde_json::Value =
            serde_json::from_str(&msg.to_json()).expect("protocol messages are JSON objects");
        let frame = serde_json::Value::Array(vec![event.into(), data]);
        format!("42{}{}", self.ns_prefix(), frame)
    }

    /// Decode one text frame from the server.
    pub fn decode(&self, text: &str, limit: usize) -> Result<Incoming, SocketIoError> {
        let bad = |what: &str| SocketIoError::Frame(format!("{what}: {}", preview(text)));
        if text.len() > limit {
            return Err(bad(&format!("larger than {limit} bytes")));
        }
        let mut chars = text.chars();
        match chars.next() {
            Some('0') => {
                let v: serde_json::Value =
                    serde_json::from_str(&text[1..]).map_err(|_| bad("bad open packet"))?;
                let ms = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
                Ok(Incoming::Open {
                    sid: v
                        .get("sid")
                        .and_then(|s| s.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    ping_interval: Duration::from_millis(ms("pingInterval")),
                    ping_timeout: Duration::from_millis(ms("pingTimeout")),
                })
            }
            Some('1') => Ok(Incoming::Closed("engine.io close".into())),
            Some('2') => Ok(Incoming::Ping),
            Some('3') | Some('6') => Ok(Incoming::Ignored("pong/noop".into())),
            Some('4') => self.decode_socket(&text[1..], text),
            _ => Err(bad("unknown Engine.IO packet type")),
        }
    }

    fn decode_socket(&self, packet: &str, whole: &str) -> Result<Incoming, SocketIoError> {
        let bad = |what: &str| SocketIoError::Frame(format!("{what}: {}", preview(whole)));
        let kind = packet.chars().next().ok_or_else(|| bad("empty packet"))?;
        let mut rest = &packet[kind.len_utf8()..];
        // Namespace: present when the rest starts with '/', up to a comma.
        let mut ns = "/";
        if rest.starts_with('/') {
            match rest.find(',') {
                Some(i) => {
                    ns = &rest[..i];
                    rest = &rest[i + 1..];
                }
                None => {
                    ns = rest;
                    rest = "";
                }
            }
        }
        if ns != self.namespace {
            return Ok(Incoming::Ignored(format!("namespace {ns}")));
        }
        // Optional ack id.
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack = &rest[..digits];
        let json = &rest[digits..];
        match kind {
            '0' => {
                let v: serde_json::Value =
                    serde_json::from_str(json).unwrap_or(serde_json::Value::Null);
                Ok(Incoming::Connected {
                    sid: v
                        .get("sid")
                        .and_then(|s| s.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                })
            }
            '1' => Ok(Incoming::Closed("socket.io disconnect".into())),
            '4' => {
                let v: serde_json::Value =
                    serde_json::from_str(json).unwrap_or(serde_json::Value::Null);
                let msg = v
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| json.to_owned());
                Ok(Incoming::ConnectError(msg))
            }
            '2' => {
                let v: serde_json::Value =
                    serde_json::from_str(json).map_err(|_| bad("event is not JSON"))?;
                let arr = v.as_array().ok_or_else(|| bad("event is not an array"))?;
                let event = arr
                    .first()
                    .and_then(|e| e.as_str())
                    .ok_or_else(|| bad("event has no name"))?;
                // A configured name maps to its type; any other name is
                // taken as a type name (and refused below if it is none).
                let kind = self
                    .from_event
                    .get(event)
                    .cloned()
                    .unwrap_or_else(|| event.to_owned());
                let mut data = arr.get(1).cloned().unwrap_or(serde_json::json!({}));
                let Some(obj) = data.as_object_mut() else {
                    return Err(bad("event data is not an object"));
                };
                obj.insert("type".into(), kind.into());
                let text = data.to_string();
                protocol::decode(&text, usize::MAX)
                    .map(Incoming::Message)
                    .map_err(|source| SocketIoError::Event {
                        event: event.to_owned(),
                        source,
                    })
            }
            '3' => Ok(Incoming::Ignored(format!("ack {ack}"))),
            _ => Err(bad("unknown Socket.IO packet type")),
        }
    }
}

fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::protocol::{CallId, Candidate};

    fn wire(ns: &str) -> SocketIoWire {
        let mut events = BTreeMap::new();
        events.insert("offer".to_string(), "webrtc-offer".to_string());
        events.insert("ring".to_string(), "ring".to_string());
        SocketIoWire::new(ns, "token", &events)
    }

    fn cid() -> CallId {
        CallId::new("c-1").expect("valid")
    }

    #[test]
    fn url_gets_the_engine_io_path() {
        assert_eq!(
            SocketIoWire::connect_url("ws://10.0.0.1:3000"),
            "ws://10.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            SocketIoWire::connect_url("wss://h/socket.io/"),
            "wss://h/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            SocketIoWire::connect_url("ws://h/socket.io/?EIO=4&transport=websocket"),
            "ws://h/socket.io/?EIO=4&transport=websocket"
        );
    }

    #[test]
    fn handshake_frames() {
        let w = wire("/");
        assert_eq!(
            w.decode(
                r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
                1 << 20
            ),
            Ok(Incoming::Open {
                sid: "abc".into(),
                ping_interval: Duration::from_secs(25),
                ping_timeout: Duration::from_secs(20)
            })
        );
        assert_eq!(w.connect_packet("s3"), r#"40{"token":"s3"}"#);
        assert_eq!(
            w.decode(r#"40{"sid":"x1"}"#, 1 << 20),
            Ok(Incoming::Connected { sid: "x1".into() })
        );
        assert_eq!(
            w.decode(r#"44{"message":"invalid token"}"#, 1 << 20),
            Ok(Incoming::ConnectError("invalid token".into()))
        );
        assert_eq!(w.decode("2", 10), Ok(Incoming::Ping));
        assert_eq!(
            w.decode("1", 10),
            Ok(Incoming::Closed("engine.io close".into()))
        );
    }

    #[test]
    fn namespaces_are_prefixed_and_filtered() {
        let w = wire("/doors");
        assert_eq!(w.connect_packet("t"), r#"40/doors,{"token":"t"}"#);
        assert!(matches!(
            w.decode(r#"40/doors,{"sid":"x"}"#, 1 << 20),
            Ok(Incoming::Connected { .. })
        ));
        assert!(matches!(
            w.decode(r#"42["ring",{"call_id":"c-1","group":"g"}]"#, 1 << 20),
            Ok(Incoming::Ignored(_))
        ));
        let f = w.encode(&Message::Hangup {
            call_id: cid(),
            reason: "normal".into(),
        });
        assert!(f.starts_with(r#"42/doors,["hangup",{"#), "{f}");
    }

    #[test]
    fn events_map_both_ways() {
        let w = wire("/");
        let f = w.encode(&Message::Offer {
            call_id: cid(),
            sdp: "v=0".into(),
        });
        assert!(f.starts_with(r#"42["webrtc-offer",{"#), "{f}");
        // Incoming with a custom name, with and without `type`, with an ack id.
        let m = w
            .decode(
                r#"42["webrtc-offer",{"call_id":"c-1","sdp":"v=0"}]"#,
                1 << 20,
            )
            .expect("decodes");
        assert_eq!(
            m,
            Incoming::Message(Message::Offer {
                call_id: cid(),
                sdp: "v=0".into()
            })
        );
        let m = w
            .decode(
                r#"4217["candidate",{"call_id":"c-1","candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0"}}]"#,
                1 << 20,
            )
            .expect("decodes");
        assert!(matches!(
            m,
            Incoming::Message(Message::Candidate {
                candidate: Some(Candidate { .. }),
                ..
            })
        ));
        // The custom name replaces the type's own name.
        assert!(matches!(
            w.decode(r#"42["offer",{"call_id":"c-1","sdp":"v=0"}]"#, 1 << 20),
            Ok(Incoming::Message(_))
        ));
        assert!(matches!(
            w.decode(r#"42["chat",{"text":"hi"}]"#, 1 << 20),
            Err(SocketIoError::Event { .. })
        ));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let w = wire("/");
        for f in [
            "",
            "9",
            "0{",
            "4",
            "42",
            "42[",
            "42{}",
            "42[1,2]",
            r#"42["ring","text"]"#,
            r#"42["ring",{"call_id":"bad id"}]"#,
            "4x",
            "42/ns",
        ] {
            match w.decode(f, 1 << 20) {
                Err(_) | Ok(Incoming::Ignored(_)) => {}
                other => panic!("{f:?} gave {other:?}"),
            }
        }
        assert!(w.decode(&"2".repeat(100), 10).is_err());
    }
}
