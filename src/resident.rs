//! A resident's answering client in Rust: the hub's protocol and the
//! product's own media engine, for the integration tests and the rig tools
//! (`hw_rig answer`) that play the resident. Browsers are the residents
//! in the field; this is the one Rust stand-in, so every harness speaks
//! the protocol the same way.
//!
//! [`Resident::next`] is the whole relay: the call's offer and candidates
//! from the hub go to the media engine, its answer and candidates to the
//! hub, and each is also returned so the caller can log or act on it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::AudioPorts;
use crate::media::{self, MediaCommand, MediaEvent, MediaHandle, MediaSettings, SdpKind};
use crate::signaling::protocol::{self, CallId, Message, Role};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The largest message the resident accepts from the hub.
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ResidentError {
    #[error("{url}: {message}")]
    Connect { url: String, message: String },
    #[error("the hub connection failed: {0}")]
    Hub(String),
    #[error("the hub closed the connection")]
    Closed,
    #[error("the hub sent an invalid message: {0}")]
    Invalid(String),
    #[error("the media engine refused a command: {0}")]
    Media(String),
    #[error("no call")]
    NoCall,
}

/// What [`Resident::next`] brings: a message from the hub or an event of
/// the call's media engine (already relayed where the call needs it).
#[derive(Debug)]
pub enum Heard {
    Hub(Message),
    Media(MediaEvent),
}

/// The call the resident answered.
pub struct ResidentCall {
    pub id: CallId,
    pub media: MediaHandle,
    /// The door data channel is open.
    pub door_open: bool,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl ResidentCall {
    fn command(&self, cmd: MediaCommand) -> Result<(), ResidentError> {
        self.media
            .try_send(cmd)
            .map_err(|e| ResidentError::Media(e.to_string()))
    }
}

pub struct Resident {
    pub ws: Socket,
    /// The answerer id the hub welcomed.
    pub id: String,
    events_tx: mpsc::Sender<MediaEvent>,
    events: mpsc::Receiver<MediaEvent>,
    pub call: Option<ResidentCall>,
}

impl Resident {
    /// Connects to the hub at `url` (`wss://` through `tls` when given),
    /// says `hello` as an answerer with `token` and waits (10 s at most)
    /// for the welcome.
    pub async fn connect(
        url: &str,
        token: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Resident, ResidentError> {
        let connect_err = |message: String| ResidentError::Connect {
            url: url.to_owned(),
            message,
        };
        let connector = tls.map(tokio_tungstenite::Connector::Rustls);
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(20), connecting)
            .await
            .map_err(|_| connect_err("timed out after 20 s".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        let mut r = Resident::over(ws, String::new());
        r.send(&Message::Hello {
            v: 1,
            role: Role::Answerer,
            token: token.into(),
            name: None,
        })
        .await?;
        let welcome = tokio::time::timeout(Duration::from_secs(10), r.recv_hub())
            .await
            .map_err(|_| connect_err("no welcome within 10 s".into()))??;
        match welcome {
            Message::Welcome { id, .. } => {
                r.id = id;
                Ok(r)
            }
            other => Err(connect_err(format!(
                "expected welcome, got {}",
                other.type_name()
            ))),
        }
    }

    /// A resident on a socket that has already been welcomed as `id`.
    pub fn over(ws: Socket, id: String) -> Resident {
        let (events_tx, events) = mpsc::channel(256);
        Resident {
            ws,
            id,
            events_tx,
            events,
            call: None,
        }
    }

    pub async fn send(&mut self, m: &Message) -> Result<(), ResidentError> {
        self.ws
            .send(Ws::Text(m.to_json().into()))
            .await
            .map_err(|e| ResidentError::Hub(e.to_string()))
    }

    /// The next message from the hub (pings answered underneath).
    pub async fn recv_hub(&mut self) -> Result<Message, ResidentError> {
        read_hub(&mut self.ws).await
    }

    /// The next thing from the hub or the call's media engine, relayed:
    /// an offer or candidate for the call goes to the media engine, the
    /// engine's answer and candidates go to the hub, a `hangup` or
    /// `cancel` for the call ends it here.
    pub async fn next(&mut self) -> Result<Heard, ResidentError> {
        tokio::select! {
            m = read_hub(&mut self.ws) => {
                let m = m?;
                self.relay_hub(&m).await;
                Ok(Heard::Hub(m))
            }
            Some(ev) = self.events.recv() => {
                self.relay_media(&ev).await?;
                Ok(Heard::Media(ev))
            }
        }
    }

    /// The next event of the call's media engine, relayed as in
    /// [`Resident::next`], without reading the hub (`None` once no engine
    /// is left to send one).
    pub async fn next_media(&mut self) -> Result<Option<MediaEvent>, ResidentError> {
        let Some(ev) = self.events.recv().await else {
            return Ok(None);
        };
        self.relay_media(&ev).await?;
        Ok(Some(ev))
    }

    async fn relay_hub(&mut self, m: &Message) {
        let Some(c) = &self.call else { return };
        let cmd = match m {
            Message::Offer { sdp, .. } => MediaCommand::RemoteDescription {
                call_id: c.id.clone(),
                kind: SdpKind::Offer,
                sdp: sdp.clone(),
            },
            Message::Candidate { candidate, .. } => MediaCommand::RemoteCandidate {
                call_id: c.id.clone(),
                candidate: candidate.clone(),
            },
            Message::Hangup { call_id, .. } | Message::Cancel { call_id, .. }
                if *call_id == c.id =>
            {
                self.end().await;
                return;
            }
            _ => return,
        };
        // A full engine queue loses this one message, as a busy browser
        // would; the call shows it.
        let _ = c.command(cmd);
    }

    async fn relay_media(&mut self, ev: &MediaEvent) -> Result<(), ResidentError> {
        let Some(c) = &mut self.call else {
            return Ok(());
        };
        let id = c.id.clone();
        match ev {
            MediaEvent::LocalDescription {
                sdp,
                kind: SdpKind::Answer,
                ..
            } => {
                self.send(&Message::Answer {
                    call_id: id,
                    sdp: sdp.clone(),
                })
                .await
            }
            MediaEvent::LocalCandidate { candidate, .. } => {
                self.send(&Message::Candidate {
                    call_id: id,
                    candidate: candidate.clone(),
                })
                .await
            }
            MediaEvent::DoorChannelOpen { .. } => {
                c.door_open = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Accepts the ringing call `call_id` and starts the media engine
    /// (answerer side) with `audio` as its microphone and speaker; the
    /// engine stops with `cancel` (or [`Resident::end`]).
    pub async fn accept(
        &mut self,
        call_id: CallId,
        settings: MediaSettings,
        audio: AudioPorts,
        cancel: CancellationToken,
    ) -> Result<(), ResidentError> {
        self.end().await;
        self.send(&Message::Accept {
            call_id: call_id.clone(),
        })
        .await?;
        // Its own token under the caller's: ending the call here stops
        // the engine only.
        let cancel = cancel.child_token();
        let tracker = TaskTracker::new();
        let handle = media::spawn_media(settings, self.events_tx.clone(), cancel.clone(), &tracker);
        let call = ResidentCall {
            id: call_id,
            media: handle,
            door_open: false,
            cancel,
            tracker,
        };
        call.command(MediaCommand::Start {
            call_id: call.id.clone(),
            offerer: false,
            ice_servers: vec![],
            audio,
        })?;
        self.call = Some(call);
        Ok(())
    }

    /// Sends `text` on the call's door data channel.
    pub fn door_send(&self, text: String) -> Result<(), ResidentError> {
        let c = self.call.as_ref().ok_or(ResidentError::NoCall)?;
        c.command(MediaCommand::DoorSend {
            call_id: c.id.clone(),
            text,
        })
    }

    /// Hangs up the call (`reason` to the hub) and ends its media.
    pub async fn hang_up(&mut self, reason: &str) -> Result<(), ResidentError> {
        let id = self.call.as_ref().ok_or(ResidentError::NoCall)?.id.clone();
        self.send(&Message::Hangup {
            call_id: id,
            reason: reason.into(),
        })
        .await?;
        self.end().await;
        Ok(())
    }

    /// Ends the call's media here (nothing sent to the hub); waits up to
    /// 5 s for the engine's tasks.
    pub async fn end(&mut self) {
        let Some(c) = self.call.take() else { return };
        let _ = c.media.try_send(MediaCommand::Stop {
            call_id: c.id.clone(),
        });
        c.cancel.cancel();
        c.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.tracker.wait()).await;
    }
}

async fn read_hub(ws: &mut Socket) -> Result<Message, ResidentError> {
    loop {
        let text = match ws.next().await {
            Some(Ok(Ws::Text(t))) => t,
            Some(Ok(Ws::Close(_))) | None => return Err(ResidentError::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ResidentError::Hub(e.to_string())),
        };
        return protocol::decode(text.as_str(), MAX_MESSAGE)
            .map_err(|e| ResidentError::Invalid(e.to_string()));
    }
}
