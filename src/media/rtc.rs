//! The WebRTC stack behind the media actor. This is the only place that
//! names `webrtc` or `rtc` types.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidate, RTCIceCandidateInit, RTCIceConnectionState,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

use super::opus::{JitterBuffer, JitterSettings, OpusConfig, OpusEncoder};
use super::turn_bridge;
use super::{
    CallId, DOOR_CHANNEL, DOOR_MESSAGE_MAX, IceCandidate, IceServer, MdnsMode, MediaCommand,
    MediaError, MediaErrorKind, MediaEvent, MediaSettings, MediaState, SdpKind,
};
use crate::audio::{AudioPorts, FRAME_SAMPLES, Frame};

/// Opus payload type, as browsers use it.
const OPUS_PT: u8 = 111;
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

/// What the per-connection event handler and the per-call audio tasks report
/// to the actor. Tagged with the session generation so that events of a
/// stopped session are recognised and dropped.
enum Internal {
    Candidate(RTCIceCandidate),
    GatheringComplete,
    ConnState(RTCPeerConnectionState),
    /// ICE reached connected (DTLS starts now).
    IceConnected,
    /// `dtls_timeout` after ICE connected.
    DtlsDeadline,
    Track(Arc<dyn TrackRemote>),
    SendReady,
    RecvReady,
    FirstSent,
    FirstReceived,
    AudioFailed(String),
    /// The peer opened a data channel (the answering side).
    RemoteChannel(Arc<dyn DataChannel>),
    DoorOpen,
    DoorText(String),
    /// The peer's reports show the station's audio no longer arrives.
    Unheard(super::one_way::Unheard),
}

struct Tagged {
    call_id: CallId,
    generation: u64,
    msg: Internal,
}

/// Forwards connection events into the actor; no logic here.
/// What a resident's page may send on the door channel before the door
/// logic sees it: a few taps at once, two a second after. The door machine
/// grants at most one opening per `door.remote_open_interval` anyway; this
/// keeps a flood (tens of thousands a second) off the controller's queue
/// and the journal.
struct DoorGate {
    bucket: crate::limits::TokenBucket,
    dropped: crate::limits::LogThrottle,
}

impl DoorGate {
    const BURST: u32 = 4;
    const PER_SECOND: u32 = 2;

    fn new() -> Self {
        DoorGate {
            bucket: crate::limits::TokenBucket::new(Self::BURST, Self::PER_SECOND),
            dropped: crate::limits::LogThrottle::new(Duration::from_secs(10)),
        }
    }
}

struct Forwarder {
    call_id: CallId,
    generation: u64,
    tx: mpsc::UnboundedSender<Tagged>,
}

impl Forwarder {
    fn forward(&self, msg: Internal) {
        // The actor being gone means shutdown: nothing left to tell.
        let _ = self.tx.send(Tagged {
            call_id: self.call_id.clone(),
            generation: self.generation,
            msg,
        });
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Forwarder {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        self.forward(Internal::Candidate(event.candidate));
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.forward(Internal::GatheringComplete);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.forward(Internal::ConnState(state));
    }
    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if state == RTCIceConnectionState::Connected {
            self.forward(Internal::IceConnected);
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        self.forward(Internal::Track(track));
    }
    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        self.forward(Internal::RemoteChannel(data_channel));
    }
}

struct Session {
    /// Generation of the current peer connection: its events, door channel
    /// and receive loop are tagged with it.
    generation: u64,
    /// Generation of the send loop, which outlives renewed connections.
    audio_generation: u64,
    pc: Option<Arc<dyn PeerConnection>>,
    sender: Option<Arc<dyn RtpSender>>,
    /// Ends the tasks of the current peer connection only.
    pc_cancel: CancellationToken,
    /// The track the send loop writes to (`None` while none is up).
    track_tx: tokio::sync::watch::Sender<Option<Arc<TrackLocalStaticSample>>>,
    ssrc: u32,
    /// ICE servers as given to the stack (stream TURN already bridged).
    ice_servers: Vec<IceServer>,
    offerer: bool,
    remote_set: bool,
    pending: Vec<IceCandidate>,
    mid: Option<String>,
    muted: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    /// Wakes the send loop the moment the connection is up.
    connected_now: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
    playback: mpsc::Sender<Frame>,
    receiving: bool,
    send_ready: bool,
    recv_ready: bool,
    first_sent: bool,
    first_received: bool,
    /// The remote description sends audio; `false` for a listen-only
    /// answer (no microphone), where audio is established once sent.
    remote_sends_audio: bool,
    established: bool,
    setup_done: bool,
    state: Option<MediaState>,
    /// DTLS completed once on the current peer connection.
    dtls_done: bool,
    /// A DTLS deadline is armed for the current peer connection.
    dtls_watch: bool,
    started: Instant,
    /// The door data channel: created by the offerer, received by the
    /// answerer.
    door: Option<Arc<dyn DataChannel>>,
    /// Whether the relay flusher pokes the stack (see [`relay_flusher`]):
    /// until audio is established, and afterwards while the selected pair
    /// runs through a TURN relay.
    flush_relay: Arc<AtomicBool>,
    /// Watches for a path lost one way (see `one_way.rs`).
    one_way: Arc<super::one_way::OneWayWatch>,
    /// The peer connection generation whose reports are watched.
    one_way_generation: Option<u64>,
}

pub(super) struct Actor {
    settings: MediaSettings,
    events: mpsc::Sender<MediaEvent>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    sessions: HashMap<CallId, Session>,
    internal_tx: mpsc::UnboundedSender<Tagged>,
    internal_rx: mpsc::UnboundedReceiver<Tagged>,
    next_generation: u64,
    /// Loopback UDP endpoints standing in for TURN servers reached over
    /// TCP or TLS, started on first use and kept for the actor's life.
    turn_bridges: HashMap<turn_bridge::StreamTarget, std::net::SocketAddr>,
}

fn map_state(s: RTCPeerConnectionState) -> Option<MediaState> {
    Some(match s {
        RTCPeerConnectionState::New => MediaState::New,
        RTCPeerConnectionState::Connecting => MediaState::Checking,
        RTCPeerConnectionState::Connected => MediaState::Connected,
        RTCPeerConnectionState::Disconnected => MediaState::Disconnected,
        RTCPeerConnectionState::Failed => MediaState::Failed,
        RTCPeerConnectionState::Closed => MediaState::Closed,
        _ => return None,
    })
}

fn candidate_type(candidate: &str) -> &str {
    let mut it = candidate.split_ascii_whitespace();
    while let Some(tok) = it.next() {
        if tok == "typ" {
            return it.next().unwrap_or("unknown");
        }
    }
    "unknown"
}

fn candidate_address(candidate: &str) -> Option<&str> {
    // foundation component transport priority address port "typ" type ...
    candidate
        .strip_prefix("candidate:")
        .unwrap_or(candidate)
        .split_ascii_whitespace()
        .nth(4)
}

fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
}

fn webrtc_err(op: &'static str) -> impl FnOnce(webrtc::error::Error) -> MediaError {
    move |e| MediaError::WebRtc {
        op,
        detail: e.to_string(),
    }
}

impl Actor {
    pub(super) fn new(
        settings: MediaSettings,
        events: mpsc::Sender<MediaEvent>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        Actor {
            settings,
            events,
            cancel,
            tracker,
            sessions: HashMap::new(),
            internal_tx,
            internal_rx,
            next_generation: 1,
            turn_bridges: HashMap::new(),
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<MediaCommand>) {
        info!(mdns = ?self.settings.mdns, "media actor started");
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.handle_command(cmd).await,
                    None => break,
                },
                Some(ev) = self.internal_rx.recv() => self.handle_internal(ev).await,
            }
        }
        let ids: Vec<CallId> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
        info!("media actor stopped");
    }

    async fn emit(&self, ev: MediaEvent) {
        // A closed event channel means the controller is gone (shutdown).
        let _ = self.events.send(ev).await;
    }

    async fn error(&self, call_id: &CallId, err: MediaError) {
        warn!(call_id = %call_id, error = %crate::logging::PeerText::new(&err.to_string()), "media error");
        self.emit(MediaEvent::Error {
            call_id: call_id.clone(),
            kind: err.kind(),
            message: err.to_string(),
        })
        .await;
    }

    async fn handle_command(&mut self, cmd: MediaCommand) {
        let call_id = cmd.call_id().clone();
        if !matches!(cmd, MediaCommand::Start { .. }) && !self.sessions.contains_key(&call_id) {
            info!(call_id = %call_id, command = ?cmd, "command for unknown call ignored");
            return;
        }
        let result = match cmd {
            MediaCommand::Start {
                call_id,
                offerer,
                ice_servers,
                audio,
            } => self.start(&call_id, offerer, ice_servers, audio).await,
            MediaCommand::RemoteDescription { call_id, kind, sdp } => {
                self.remote_description(&call_id, kind, sdp).await
            }
            MediaCommand::RemoteCandidate { call_id, candidate } => {
                self.remote_candidate(&call_id, candidate).await
            }
            MediaCommand::SetMuted { call_id, muted } => {
                if let Some(s) = self.sessions.get(&call_id) {
                    s.muted.store(muted, Ordering::Relaxed);
                    info!(call_id = %call_id, muted, "microphone mute changed");
                }
                Ok(())
            }
            MediaCommand::Stop { call_id } => {
                self.stop(&call_id).await;
                Ok(())
            }
            MediaCommand::RestartIce { call_id } => self.restart_ice(&call_id).await,
            MediaCommand::Renew { call_id } => self.renew(&call_id).await,
            MediaCommand::DoorSend { call_id, text } => {
                let dc = self.sessions.get(&call_id).and_then(|s| s.door.clone());
                match dc {
                    Some(dc) => dc
                        .send_text(&text)
                        .await
                        .map_err(webrtc_err("sending on the door data channel")),
                    None => {
                        warn!(call_id = %call_id, "no door data channel to reply on");
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = result {
            self.error(&call_id, e).await;
        }
    }

    /// The stack skips TURN over TCP and TLS: point those URLs at a local
    /// bridge instead (see `turn_bridge`). A URL that cannot be bridged is
    /// dropped with a warning; the others still work.
    async fn bridge_stream_turn(
        &mut self,
        call_id: &CallId,
        servers: Vec<IceServer>,
    ) -> Vec<IceServer> {
        let mut out = Vec::with_capacity(servers.len());
        for mut srv in servers {
            let mut urls = Vec::with_capacity(srv.urls.len());
            for url in srv.urls {
                match turn_bridge::stream_target(&url) {
                    Ok(None) => urls.push(url),
                    Ok(Some(target)) => {
                        let addr = match self.turn_bridges.get(&target) {
                            Some(a) => Some(*a),
                            None => match turn_bridge::start(
                                target.clone(),
                                turn_bridge::TlsTrust {
                                    extra_ca_file: self.settings.turn_ca_file.clone(),
                                },
                                self.settings.dscp_ef.then_some(turn_bridge::TOS_EF),
                                self.cancel.clone(),
                            )
                            .await
                            {
                                Ok(a) => {
                                    self.turn_bridges.insert(target, a);
                                    Some(a)
                                }
                                Err(e) => {
                                    warn!(call_id = %call_id, url = %url, error = %e, "TURN server skipped");
                                    None
                                }
                            },
                        };
                        if let Some(a) = addr {
                            debug!(call_id = %call_id, url = %url, bridge = %a, "TURN over a stream via the local bridge");
                            urls.push(format!("turn:{a}?transport=udp"));
                        }
                    }
                    Err(e) => warn!(call_id = %call_id, error = %e, "TURN server skipped"),
                }
            }
            if !urls.is_empty() {
                srv.urls = urls;
                out.push(srv);
            }
        }
        out
    }

    /// The stack's default interceptors, and the report tap of the
    /// call's one-way watch last in the chain (nearest the application, so
    /// every report reaches it).
    fn interceptors(
        &self,
        call_id: &CallId,
        media_engine: &mut MediaEngine,
    ) -> Result<Registry, webrtc::error::Error> {
        let registry = register_default_interceptors(Registry::new(), media_engine)?;
        Ok(match self.sessions.get(call_id) {
            Some(session) => registry.with(
                rtc::interceptor::Slot::from(14_000),
                super::one_way::ReportTap::new(session.one_way.clone()),
            ),
            None => registry,
        })
    }

    async fn build_pc(
        &self,
        call_id: &CallId,
        generation: u64,
        ice_servers: Vec<IceServer>,
    ) -> Result<Arc<dyn PeerConnection>, MediaError> {
        let s = &self.settings;
        let build = |e: webrtc::error::Error| MediaError::Build(e.to_string());
        let mut media_engine = MediaEngine::default();
        media_engine
            .register_codec(opus_codec_parameters(), RtpCodecKind::Audio)
            .map_err(build)?;
        let registry = self
            .interceptors(call_id, &mut media_engine)
            .map_err(build)?;
        let mdns = match s.mdns {
            MdnsMode::Disabled => rtc::ice::mdns::MulticastDnsMode::Disabled,
            MdnsMode::QueryOnly => rtc::ice::mdns::MulticastDnsMode::QueryOnly,
            MdnsMode::QueryAndGather => rtc::ice::mdns::MulticastDnsMode::QueryAndGather,
        };
        let setting_engine = SettingEngineBuilder::new()
            .with_ice_connection_attempts(
                Some(s.ice_check_interval),
                Some(s.ice_max_binding_requests),
            )
            // None keeps the stack's defaults for failed timeout and keepalive.
            .with_ice_timeouts(Some(s.receiving_timeout), None, None)
            .with_multicast_dns_mode(mdns)
            // The stack waits before nominating non-host pairs (prflx 1 s,
            // srflx 0.5 s, relay 2 s). A browser's first checks arrive before
            // its trickled candidates, so its pair starts out peer-reflexive:
            // waiting a second for it is pure call-setup delay. Relay keeps
            // a short wait so a direct path found at the same time wins,
            // except when only relays are gathered: then no direct path can
            // win and the wait only delays the call.
            .with_host_acceptance_min_wait(Some(Duration::ZERO))
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .with_srflx_acceptance_min_wait(Some(s.srflx_nomination_wait))
            .with_relay_acceptance_min_wait(Some(if s.relay_only {
                Duration::ZERO
            } else {
                s.relay_nomination_wait
            }))
            .build();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(
                ice_servers
                    .into_iter()
                    .map(|srv| RTCIceServer {
                        urls: srv.urls,
                        username: srv.username.unwrap_or_default(),
                        credential: srv.credential.unwrap_or_default(),
                    })
                    .collect(),
            )
            .with_ice_transport_policy(if s.relay_only {
                rtc::peer_connection::configuration::RTCIceTransportPolicy::Relay
            } else {
                rtc::peer_connection::configuration::RTCIceTransportPolicy::All
            })
            .build();
        let udp_addrs: Vec<String> = if s.udp_bind_ips.is_empty() {
            vec!["0.0.0.0:0".to_owned()]
        } else {
            s.udp_bind_ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, 0).to_string())
                .collect()
        };
        let handler = Arc::new(Forwarder {
            call_id: call_id.clone(),
            generation,
            tx: self.internal_tx.clone(),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting_engine)
            .with_handler(handler)
            .with_udp_addrs(udp_addrs)
            .build()
            .await
            .map_err(|e| {
                let detail = e.to_string();
                if s.mdns != MdnsMode::Disabled {
                    MediaError::BuildMdns {
                        mode: s.mdns,
                        detail,
                    }
                } else {
                    MediaError::Build(detail)
                }
            })?;
        Ok(Arc::new(pc))
    }

    async fn start(
        &mut self,
        call_id: &CallId,
        offerer: bool,
        ice_servers: Vec<IceServer>,
        audio: AudioPorts,
    ) -> Result<(), MediaError> {
        if self.sessions.contains_key(call_id) {
            return Err(MediaError::DuplicateCall);
        }
        let started = Instant::now();
        let audio_generation = self.next_generation;
        self.next_generation += 1;
        info!(call_id = %call_id, offerer, ice_servers = ice_servers.len(), "starting media session");
        let ice_servers = self.bridge_stream_turn(call_id, ice_servers).await;

        let encoder = OpusEncoder::new(self.opus_config())?;
        let cancel = self.cancel.child_token();
        let muted = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let connected_now = Arc::new(tokio::sync::Notify::new());
        let (track_tx, track_rx) = tokio::sync::watch::channel(None);
        let ssrc: u32 = rand::random();
        let AudioPorts { capture, playback } = audio;
        self.tracker.spawn(send_loop(SendLoop {
            call_id: call_id.clone(),
            generation: audio_generation,
            track: track_rx,
            ssrc,
            capture,
            encoder,
            muted: muted.clone(),
            connected: connected.clone(),
            connected_now: connected_now.clone(),
            cancel: cancel.clone(),
            internal: self.internal_tx.clone(),
        }));

        self.sessions.insert(
            call_id.clone(),
            Session {
                generation: audio_generation,
                audio_generation,
                pc: None,
                sender: None,
                pc_cancel: cancel.child_token(),
                track_tx,
                ssrc,
                ice_servers,
                offerer,
                remote_set: false,
                pending: Vec::new(),
                mid: None,
                muted,
                connected,
                connected_now,
                cancel,
                playback,
                receiving: false,
                send_ready: false,
                recv_ready: false,
                first_sent: false,
                first_received: false,
                remote_sends_audio: true,
                established: false,
                setup_done: false,
                state: None,
                dtls_done: false,
                dtls_watch: false,
                started,
                door: None,
                flush_relay: Arc::new(AtomicBool::new(true)),
                one_way: Arc::default(),
                one_way_generation: None,
            },
        );
        if let Err(e) = self.attach_pc(call_id).await {
            self.stop(call_id).await;
            return Err(e);
        }
        Ok(())
    }

    /// Builds the session's peer connection (a new generation: events of
    /// an earlier one are dropped), points the send loop at its track and,
    /// as offerer, emits its offer.
    async fn attach_pc(&mut self, call_id: &CallId) -> Result<(), MediaError> {
        let generation = self.next_generation;
        self.next_generation += 1;
        let Some(s) = self.sessions.get(call_id) else {
            return Ok(());
        };
        let (ice_servers, ssrc, offerer) = (s.ice_servers.clone(), s.ssrc, s.offerer);
        let pc = self.build_pc(call_id, generation, ice_servers).await?;
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    format!("intercom-{call_id}"),
                    "intercom-audio".to_owned(),
                    "door station microphone".to_owned(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: opus_codec_parameters().rtp_codec,
                        ..Default::default()
                    }],
                ),
            )
            .map_err(webrtc_err("creating the audio track"))?,
        );
        // Field lesson: a local track that is not explicitly enabled may stay silent.
        track.set_enabled(true).await;
        let sender = match pc.add_track(track.clone() as Arc<dyn TrackLocal>).await {
            Ok(s) => s,
            Err(e) => {
                let _ = pc.close().await;
                return Err(webrtc_err("adding the audio track")(e));
            }
        };
        let Some(s) = self.sessions.get_mut(call_id) else {
            let _ = pc.close().await;
            return Ok(());
        };
        s.generation = generation;
        s.pc = Some(pc.clone());
        s.sender = Some(sender);
        s.pc_cancel = s.cancel.child_token();
        // The send loop writes to the newest track only.
        s.track_tx.send_replace(Some(track));

        if offerer {
            // Created before the offer so that the offer carries the SCTP
            // section: door opening then travels over DTLS, bound to this
            // call, out of reach of the signaling server.
            let dc = pc
                .create_data_channel(DOOR_CHANNEL, None)
                .await
                .map_err(webrtc_err("creating the door data channel"))?;
            self.attach_door_channel(call_id, generation, dc);
            self.make_offer(call_id, &pc, false).await?;
        }
        Ok(())
    }

    /// Creates the offer (restarting ICE when asked), sets it locally and
    /// emits it.
    async fn make_offer(
        &mut self,
        call_id: &CallId,
        pc: &Arc<dyn PeerConnection>,
        ice_restart: bool,
    ) -> Result<(), MediaError> {
        if ice_restart {
            pc.restart_ice().await.map_err(webrtc_err("restart_ice"))?;
        }
        let offer = pc
            .create_offer(None)
            .await
            .map_err(webrtc_err("create_offer"))?;
        let desc = set_local(pc, offer).await?;
        if let Some(s) = self.sessions.get_mut(call_id) {
            // The answer to this offer comes with candidates of its own.
            s.remote_set = false;
        }
        self.local_description_ready(call_id, SdpKind::Offer, desc.sdp)
            .await;
        Ok(())
    }

    /// ICE restart: fresh credentials and candidates, the same DTLS
    /// session; audio resumes on whatever path the new checks find.
    async fn restart_ice(&mut self, call_id: &CallId) -> Result<(), MediaError> {
        let Some(pc) = self.sessions.get_mut(call_id).and_then(|s| {
            s.flush_relay.store(true, Ordering::Relaxed);
            s.pc.clone()
        }) else {
            return Ok(());
        };
        info!(call_id = %call_id, "restarting ICE");
        self.make_offer(call_id, &pc, true).await
    }

    /// A new peer connection for the call (new ICE and DTLS), the audio
    /// loops kept: the remedy for a handshake the stack will not finish.
    async fn renew(&mut self, call_id: &CallId) -> Result<(), MediaError> {
        let Some(s) = self.sessions.get_mut(call_id) else {
            return Ok(());
        };
        let old = s.pc.take();
        s.sender = None;
        s.pc_cancel.cancel();
        s.connected.store(false, Ordering::Relaxed);
        s.flush_relay = Arc::new(AtomicBool::new(true));
        s.track_tx.send_replace(None);
        s.remote_set = false;
        s.pending.clear();
        s.mid = None;
        s.door = None;
        s.receiving = false;
        s.first_received = false;
        s.first_sent = false;
        s.state = None;
        s.dtls_watch = false;
        info!(call_id = %call_id, "replacing the media session's peer connection");
        if let Some(pc) = old
            && let Err(e) = pc.close().await
        {
            warn!(call_id = %call_id, error = %e, "closing the stalled peer connection failed");
        }
        self.attach_pc(call_id).await
    }

    fn opus_config(&self) -> OpusConfig {
        OpusConfig {
            bitrate: self.settings.opus_bitrate,
            complexity: self.settings.opus_complexity,
            fec: self.settings.opus_fec,
            expected_loss_pct: self.settings.expected_loss_pct,
        }
    }

    async fn local_description_ready(&mut self, call_id: &CallId, kind: SdpKind, sdp: String) {
        if let Some(s) = self.sessions.get_mut(call_id) {
            s.mid = first_mid(&sdp);
        }
        info!(call_id = %call_id, kind = ?kind, "local description created");
        let sdp = if kind == SdpKind::Offer && self.settings.offer_dtls_active {
            offer_as_dtls_client(&sdp)
        } else {
            sdp
        };
        self.emit(MediaEvent::LocalDescription {
            call_id: call_id.clone(),
            kind,
            sdp,
        })
        .await;
    }

    async fn remote_description(
        &mut self,
        call_id: &CallId,
        kind: SdpKind,
        sdp: String,
    ) -> Result<(), MediaError> {
        let Some((pc, offerer)) = self
            .sessions
            .get(call_id)
            .and_then(|s| Some((s.pc.clone()?, s.offerer)))
        else {
            return Ok(());
        };
        let invalid = |e: webrtc::error::Error| MediaError::InvalidSdp {
            kind,
            detail: e.to_string(),
        };
        match kind {
            SdpKind::Offer => {
                let desc = RTCSessionDescription::offer(sdp).map_err(invalid)?;
                pc.set_remote_description(desc).await.map_err(invalid)?;
                info!(call_id = %call_id, "remote offer set");
                let answer = pc
                    .create_answer(None)
                    .await
                    .map_err(webrtc_err("create_answer"))?;
                let desc = set_local(&pc, answer).await?;
                self.local_description_ready(call_id, SdpKind::Answer, desc.sdp)
                    .await;
            }
            SdpKind::Answer => {
                if !offerer {
                    return Err(MediaError::UnexpectedAnswer);
                }
                let sdp_text = sdp.clone();
                let desc = RTCSessionDescription::answer(sdp).map_err(invalid)?;
                pc.set_remote_description(desc).await.map_err(invalid)?;
                let sends = !crate::signaling::sdp::listen_only(&sdp_text);
                if let Some(s) = self.sessions.get_mut(call_id) {
                    s.remote_sends_audio = sends;
                }
                info!(call_id = %call_id, remote_sends_audio = sends, "remote answer set");
            }
        }
        let pending = match self.sessions.get_mut(call_id) {
            Some(s) => {
                s.remote_set = true;
                std::mem::take(&mut s.pending)
            }
            None => return Ok(()),
        };
        if !pending.is_empty() {
            let n = pending.len();
            info!(call_id = %call_id, count = n, "Processing {n} pending ICE candidates");
            for c in pending {
                if let Err(e) = self.add_candidate(call_id, &pc, c).await {
                    self.error(call_id, e).await;
                }
            }
        }
        Ok(())
    }

    async fn remote_candidate(
        &mut self,
        call_id: &CallId,
        candidate: Option<IceCandidate>,
    ) -> Result<(), MediaError> {
        let Some(s) = self.sessions.get_mut(call_id) else {
            return Ok(());
        };
        let Some(c) = candidate.filter(|c| !c.candidate.trim().is_empty()) else {
            info!(call_id = %call_id, "remote end of candidates");
            return Ok(());
        };
        // Reject malformed candidates now rather than when they are dequeued.
        let body = c
            .candidate
            .strip_prefix("candidate:")
            .unwrap_or(&c.candidate);
        if let Err(e) = rtc::ice::candidate::unmarshal_candidate(body) {
            return Err(MediaError::InvalidCandidate {
                candidate: c.candidate,
                detail: e.to_string(),
            });
        }
        if !s.remote_set {
            s.pending.push(c);
            debug!(call_id = %call_id, queued = s.pending.len(), "remote ICE candidate queued until the remote description is set");
            return Ok(());
        }
        let Some(pc) = s.pc.clone() else {
            return Ok(());
        };
        self.add_candidate(call_id, &pc, c).await
    }

    async fn add_candidate(
        &self,
        call_id: &CallId,
        pc: &Arc<dyn PeerConnection>,
        c: IceCandidate,
    ) -> Result<(), MediaError> {
        let typ = candidate_type(&c.candidate).to_owned();
        if let Some(addr) = candidate_address(&c.candidate)
            && addr.ends_with(".local")
            && self.settings.mdns == MdnsMode::Disabled
        {
            info!(call_id = %call_id, address = %crate::logging::PeerText::new(addr), "mDNS candidate skipped: mDNS is disabled");
            return Ok(());
        }
        let init = RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
            url: None,
        };
        pc.add_ice_candidate(init)
            .await
            .map_err(|e| MediaError::InvalidCandidate {
                candidate: c.candidate.clone(),
                detail: e.to_string(),
            })?;
        info!(call_id = %call_id, candidate_type = %crate::logging::PeerText::new(&typ), "Added remote ICE candidate");
        Ok(())
    }

    /// Keep the call's door channel and forward its events to the actor
    /// from a task that ends with the session.
    fn attach_door_channel(&mut self, call_id: &CallId, generation: u64, dc: Arc<dyn DataChannel>) {
        let Some(s) = self.sessions.get_mut(call_id) else {
            return;
        };
        if s.door.is_some() {
            debug!(call_id = %call_id, "additional data channel ignored");
            return;
        }
        s.door = Some(dc.clone());
        let cancel = s.pc_cancel.clone();
        self.tracker.spawn(relay_flusher(
            dc.clone(),
            s.flush_relay.clone(),
            cancel.clone(),
        ));
        let fwd = Forwarder {
            call_id: call_id.clone(),
            generation,
            tx: self.internal_tx.clone(),
        };
        self.tracker.spawn(async move {
            let mut gate = DoorGate::new();
            loop {
                let ev = tokio::select! {
                    _ = cancel.cancelled() => break,
                    ev = dc.poll() => ev,
                };
                match ev {
                    Some(DataChannelEvent::OnOpen) => fwd.forward(Internal::DoorOpen),
                    Some(DataChannelEvent::OnMessage(m)) => {
                        let now = Instant::now();
                        let why = if !m.is_string || m.data.len() > DOOR_MESSAGE_MAX {
                            "not short text"
                        } else if !gate.bucket.admit(now) {
                            "over the rate limit"
                        } else {
                            match String::from_utf8(m.data.to_vec()) {
                                Ok(text) => {
                                    fwd.forward(Internal::DoorText(text));
                                    continue;
                                }
                                Err(_) => "not UTF-8",
                            }
                        };
                        if let Some(count) = gate.dropped.hit(now) {
                            warn!(call_id = %fwd.call_id, count, last_reason = why, "door channel messages dropped before the door logic");
                        }
                    }
                    Some(DataChannelEvent::OnClose) | None => break,
                    Some(_) => {}
                }
            }
            if let Some(count) = gate.dropped.take_unreported() {
                warn!(call_id = %fwd.call_id, count, "door channel messages dropped before the door logic");
            }
        });
    }

    /// "Audio setup completed" means capture, encoding, decoding and playback
    /// all run with media flowing, so it is reported once the connection is
    /// established and both audio loops are up, whatever order they came in.
    async fn maybe_setup_completed(&mut self, call_id: &CallId) {
        let Some(s) = self.sessions.get_mut(call_id) else {
            return;
        };
        let recv_ready = s.recv_ready || !s.remote_sends_audio;
        if s.setup_done || !(s.established && s.send_ready && recv_ready) {
            return;
        }
        s.setup_done = true;
        info!(call_id = %call_id, "Audio setup for call completed");
        self.emit(MediaEvent::AudioSetupCompleted {
            call_id: call_id.clone(),
        })
        .await;
    }

    async fn stop(&mut self, call_id: &CallId) {
        let Some(s) = self.sessions.remove(call_id) else {
            return;
        };
        s.cancel.cancel();
        if let Some(pc) = &s.pc
            && let Err(e) = pc.close().await
        {
            warn!(call_id = %call_id, error = %e, "closing the peer connection failed");
        }
        info!(call_id = %call_id, duration_ms = s.started.elapsed().as_millis() as u64, "media session stopped");
        self.emit(MediaEvent::State {
            call_id: call_id.clone(),
            state: MediaState::Closed,
        })
        .await;
    }

    async fn handle_internal(&mut self, ev: Tagged) {
        let call_id = ev.call_id;
        let Some(s) = self.sessions.get_mut(&call_id) else {
            return;
        };
        let from_send_loop = matches!(
            ev.msg,
            Internal::SendReady | Internal::FirstSent | Internal::AudioFailed(_)
        );
        if s.generation != ev.generation && !(from_send_loop && s.audio_generation == ev.generation)
        {
            return;
        }
        match ev.msg {
            Internal::Candidate(c) => self.local_candidate(call_id, c).await,
            Internal::GatheringComplete => {
                info!(call_id = %call_id, "ICE gathering complete");
                self.emit(MediaEvent::LocalCandidate {
                    call_id,
                    candidate: None,
                })
                .await;
            }
            Internal::ConnState(st) => self.conn_state(call_id, st).await,
            Internal::Track(track) => self.remote_track(call_id, track),
            Internal::SendReady | Internal::RecvReady => {
                if matches!(ev.msg, Internal::SendReady) {
                    s.send_ready = true;
                } else {
                    s.recv_ready = true;
                }
                self.maybe_setup_completed(&call_id).await;
            }
            Internal::FirstSent | Internal::FirstReceived => {
                self.first_media(call_id, ev.msg).await
            }
            Internal::RemoteChannel(dc) => {
                let label = dc.label().await.unwrap_or_default();
                if label != DOOR_CHANNEL {
                    debug!(call_id = %call_id, label = %crate::logging::PeerText::new(&label), "data channel ignored");
                    return;
                }
                let generation = s.generation;
                self.attach_door_channel(&call_id, generation, dc);
            }
            Internal::IceConnected => self.ice_connected(call_id),
            Internal::DtlsDeadline => {
                if s.dtls_done {
                    return;
                }
                warn!(call_id = %call_id, waited_ms = self.settings.dtls_timeout.as_millis() as u64, "DTLS handshake stalled after ICE connected");
                s.state = Some(MediaState::Stalled);
                self.emit(MediaEvent::State {
                    call_id,
                    state: MediaState::Stalled,
                })
                .await;
            }
            Internal::DoorOpen => {
                info!(call_id = %call_id, "door data channel open");
                self.emit(MediaEvent::DoorChannelOpen { call_id }).await;
            }
            Internal::DoorText(text) => {
                self.emit(MediaEvent::DoorMessage { call_id, text }).await;
            }
            Internal::Unheard(u) => self.unheard(call_id, u).await,
            Internal::AudioFailed(message) => {
                warn!(call_id = %call_id, error = %crate::logging::PeerText::new(&message.to_string()), "audio path failed");
                self.emit(MediaEvent::Error {
                    call_id,
                    kind: MediaErrorKind::Session,
                    message,
                })
                .await;
            }
        }
    }

    /// A local ICE candidate, for the peer.
    async fn local_candidate(&mut self, call_id: CallId, c: RTCIceCandidate) {
        let Some(s) = self.sessions.get_mut(&call_id) else {
            return;
        };
        let mid = s.mid.clone();
        match c.to_json() {
            Ok(init) => {
                debug!(call_id = %call_id, candidate = %init.candidate, "local ICE candidate");
                let candidate = IceCandidate {
                    candidate: init.candidate,
                    // The stack reports an empty mid; browsers need the real one.
                    sdp_mid: mid.or(init.sdp_mid).filter(|m| !m.is_empty()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                };
                self.emit(MediaEvent::LocalCandidate {
                    call_id,
                    candidate: Some(candidate),
                })
                .await;
            }
            Err(e) => {
                warn!(call_id = %call_id, error = %e, "local candidate not serialisable")
            }
        }
    }

    async fn conn_state(&mut self, call_id: CallId, st: RTCPeerConnectionState) {
        let Some(s) = self.sessions.get_mut(&call_id) else {
            return;
        };
        let Some(state) = map_state(st) else { return };
        s.connected
            .store(state == MediaState::Connected, Ordering::Relaxed);
        if matches!(state, MediaState::Checking | MediaState::Disconnected) {
            // A new path is being found (ICE restart, outage): it
            // may run through the relay.
            s.flush_relay.store(true, Ordering::Relaxed);
        }
        if state == MediaState::Connected {
            s.dtls_done = true;
            s.connected_now.notify_one();
        }
        if s.state == Some(state) {
            return;
        }
        let was = s.state.replace(state);
        info!(call_id = %call_id, state = ?state, elapsed_ms = s.started.elapsed().as_millis() as u64, "media state changed");
        s.one_way.reset();
        if state == MediaState::Connected {
            self.watch_one_way(&call_id);
        }
        let Some(s) = self.sessions.get_mut(&call_id) else {
            return;
        };
        if state == MediaState::Connected && s.established && was.is_some() {
            // Back after an outage or an ICE restart: say which path.
            let selected_pair = match s.sender.clone() {
                Some(sender) => selected_pair(&sender).await,
                None => "unknown (no sender)".to_owned(),
            };
            info!(call_id = %call_id, selected_pair = %selected_pair, "media path restored");
        }
        self.emit(MediaEvent::State { call_id, state }).await;
    }

    /// Watches the current peer connection's reports for a path lost one
    /// way (once per connection).
    fn watch_one_way(&mut self, call_id: &CallId) {
        let Some(s) = self.sessions.get_mut(call_id) else {
            return;
        };
        let generation = s.generation;
        // Only a TURN relay gives the peer a second way into the station
        // that ends at the same remote candidate: without one, a path cannot
        // break one way unseen.
        let relayed = s
            .ice_servers
            .iter()
            .flat_map(|srv| &srv.urls)
            .any(|u| u.starts_with("turn"));
        if !relayed || s.pc.is_none() || s.one_way_generation == Some(generation) {
            return;
        }
        s.one_way_generation = Some(generation);
        let (watch, cancel) = (s.one_way.clone(), s.pc_cancel.clone());
        let internal = self.internal_tx.clone();
        let call_id = call_id.clone();
        self.tracker
            .spawn(super::one_way::run(watch, cancel, move |u| {
                let msg = Internal::Unheard(u);
                let _ = internal.send(Tagged {
                    call_id: call_id.clone(),
                    generation,
                    msg,
                });
            }));
    }

    /// The path works one way only: said, and told to the call logic as a
    /// state of its own, which starts an ICE restart.
    async fn unheard(&mut self, call_id: CallId, u: super::one_way::Unheard) {
        let Some(s) = self.sessions.get_mut(&call_id) else {
            return;
        };
        if s.state != Some(MediaState::Connected) {
            return;
        }
        warn!(call_id = %call_id, reported_seq = u.reported, lag_ms = u.lag.as_millis() as u64, "the resident's audio arrives but its reports show the station's no longer does: path lost one way");
        s.state = Some(MediaState::Unheard);
        // The new path may run through the relay.
        s.flush_relay.store(true, Ordering::Relaxed);
        let state = MediaState::Unheard;
        self.emit(MediaEvent::State { call_id, state }).await;
    }

    /// The peer's audio track: received on a task of its own.
    fn remote_track(&mut self, call_id: CallId, track: Arc<dyn TrackRemote>) {
        let Some(s) = self.sessions.get_mut(&call_id) else {
            return;
        };
        if s.receiving {
            debug!(call_id = %call_id, "additional remote track ignored");
            return;
        }
        s.receiving = true;
        let playback = s.playback.clone();
        let cancel = s.pc_cancel.clone();
        let generation = s.generation;
        let internal = self.internal_tx.clone();
        let id = call_id.clone();
        let one_way = s.one_way.clone();
        self.tracker.spawn(async move {
            recv_loop(id, generation, track, playback, cancel, internal, one_way).await;
        });
    }

    /// The first audio sent or received: established once both went.
    async fn first_media(&mut self, call_id: CallId, msg: Internal) {
        let Some(s) = self.sessions.get_mut(&call_id) else {
            return;
        };
        if matches!(msg, Internal::FirstSent) {
            s.first_sent = true;
        } else {
            s.first_received = true;
        }
        // A listen-only answer sends nothing: audio out is all
        // there is to wait for.
        let received = s.first_received || !s.remote_sends_audio;
        if s.first_sent && received && !s.established {
            s.established = true;
            let elapsed = s.started.elapsed();
            let selected_pair = match s.sender.clone() {
                Some(sender) => selected_pair(&sender).await,
                None => "unknown (no sender)".to_owned(),
            };
            s.flush_relay
                .store(local_candidate_is_relay(&selected_pair), Ordering::Relaxed);
            info!(message_id = crate::logging::message_id::AUDIO_ESTABLISHED, call_id = %call_id, selected_pair = %selected_pair, elapsed_ms = elapsed.as_millis() as u64, "AUDIO CONNECTION ESTABLISHED");
            self.emit(MediaEvent::AudioEstablished {
                call_id: call_id.clone(),
                selected_pair,
            })
            .await;
        }
        self.maybe_setup_completed(&call_id).await;
    }

    /// ICE connected: DTLS gets `dtls_timeout` from now.
    fn ice_connected(&mut self, call_id: CallId) {
        let Some(s) = self.sessions.get_mut(&call_id) else {
            return;
        };
        info!(call_id = %call_id, elapsed_ms = s.started.elapsed().as_millis() as u64, "ICE connected");
        if s.dtls_done || s.dtls_watch {
            return;
        }
        s.dtls_watch = true;
        let fwd = Forwarder {
            call_id: call_id.clone(),
            generation: s.generation,
            tx: self.internal_tx.clone(),
        };
        let cancel = s.pc_cancel.clone();
        let wait = self.settings.dtls_timeout;
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(wait) => fwd.forward(Internal::DtlsDeadline),
            }
        });
    }
}

/// Sets a local description and returns it as the stack completed it.
async fn set_local(
    pc: &Arc<dyn PeerConnection>,
    desc: RTCSessionDescription,
) -> Result<RTCSessionDescription, MediaError> {
    pc.set_local_description(desc)
        .await
        .map_err(webrtc_err("set_local_description"))?;
    pc.local_description().await.ok_or(MediaError::WebRtc {
        op: "local_description",
        detail: "no local description after setting it".into(),
    })
}

fn opus_codec_parameters() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            // RFC 7587: the rtpmap always says 2 channels; we send mono.
            channels: 2,
            sdp_fmtp_line: OPUS_FMTP.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PT,
    }
}

/// How often the relay flusher pokes the stack: the most a packet sent
/// through a TURN relay waits in the stack before it goes out.
const RELAY_FLUSH_INTERVAL: Duration = Duration::from_millis(5);

/// Works around webrtc 0.21.1's driver loop, which hands a packet for a
/// TURN relay to the TURN client in the same pass that drains the client's
/// queue to the socket, after the drain: the packet leaves only on the
/// loop's next wake, a timer or a socket read that may be hundreds of
/// milliseconds away. Through a relay that delayed ICE checks and every
/// DTLS flight (press to first audio measured 800 ms relay-only against
/// 190 ms for a browser door on the same path). A channel setting call is
/// the cheapest public call that wakes the loop; setting the low-water mark
/// to the value it has changes nothing else.
async fn relay_flusher(
    dc: Arc<dyn DataChannel>,
    enabled: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(RELAY_FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !enabled.load(Ordering::Relaxed) {
            continue;
        }
        let Ok(mark) = dc.buffered_amount_low_threshold().await else {
            // The channel or the connection is closed: nothing left to flush.
            return;
        };
        if dc.set_buffered_amount_low_threshold(mark).await.is_err() {
            return;
        }
    }
}

/// Whether the local side of a pair as [`selected_pair`] prints it
/// (`(local) udp relay 198.18.0.1:50672… <-> (remote) …`) is a relay.
fn local_candidate_is_relay(pair: &str) -> bool {
    pair.strip_prefix("(local)")
        .and_then(|rest| rest.split_whitespace().nth(1))
        == Some("relay")
}

async fn selected_pair(sender: &Arc<dyn RtpSender>) -> String {
    let pair = match sender.transport().await {
        Ok(Some(dtls)) => dtls.ice_transport().get_selected_candidate_pair().await,
        Ok(None) => return "unknown (no transport)".to_owned(),
        Err(e) => return format!("unknown ({e})"),
    };
    match pair {
        Ok(Some(p)) => p.to_string(),
        Ok(None) => "unknown (no pair selected)".to_owned(),
        Err(e) => format!("unknown ({e})"),
    }
}

struct SendLoop {
    call_id: CallId,
    generation: u64,
    /// The current peer connection's track; replaced when the connection is.
    track: tokio::sync::watch::Receiver<Option<Arc<TrackLocalStaticSample>>>,
    ssrc: u32,
    capture: mpsc::Receiver<Frame>,
    encoder: OpusEncoder,
    muted: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    connected_now: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
    internal: mpsc::UnboundedSender<Tagged>,
}

/// Capture → Opus → RTP. Muted sessions encode silence so packets keep flowing.
async fn send_loop(mut l: SendLoop) {
    let tell = |msg| {
        let _ = l.internal.send(Tagged {
            call_id: l.call_id.clone(),
            generation: l.generation,
            msg,
        });
    };
    tell(Internal::SendReady);
    let silence = [0i16; FRAME_SAMPLES];
    let mut first_sent = false;
    let mut write_errors = 0u64;
    // The newest packet encoded before the connection was up: sent the
    // moment it is, instead of waiting up to 20 ms for the next one.
    let mut held: Option<Bytes> = None;
    loop {
        let packet = tokio::select! {
            _ = l.cancel.cancelled() => break,
            _ = l.connected_now.notified() => match held.take() {
                Some(p) => p,
                None => continue,
            },
            f = l.capture.recv() => {
                let Some(frame) = f else {
                    tell(Internal::AudioFailed("capture channel closed".into()));
                    break;
                };
                let input: &[i16; FRAME_SAMPLES] = if l.muted.load(Ordering::Relaxed) {
                    &silence
                } else {
                    &frame
                };
                match l.encoder.push(input) {
                    Ok(Some(p)) => Bytes::copy_from_slice(p),
                    Ok(None) => continue,
                    Err(e) => {
                        tell(Internal::AudioFailed(e.to_string()));
                        break;
                    }
                }
            }
        };
        // Before DTLS is up there is nowhere to send to.
        if !l.connected.load(Ordering::Relaxed) {
            held = Some(packet);
            continue;
        }
        if l.track.has_changed().unwrap_or(false) {
            // A new peer connection: its first packet is news again.
            first_sent = false;
        }
        let Some(track) = l.track.borrow_and_update().clone() else {
            held = Some(packet);
            continue;
        };
        let sample = Sample {
            data: packet,
            duration: Duration::from_millis(20),
            ..Sample::new(Instant::now())
        };
        match track.write_sample(l.ssrc, OPUS_PT, &sample, &[]).await {
            Ok(()) => {
                if !first_sent {
                    first_sent = true;
                    tell(Internal::FirstSent);
                }
            }
            Err(e) => {
                write_errors += 1;
                if write_errors.is_power_of_two() {
                    debug!(call_id = %l.call_id, error = %e, count = write_errors, "RTP write failed");
                }
            }
        }
    }
    debug!(call_id = %l.call_id, "send loop ended");
}

/// Frames queued towards the speaker above which a playout tick is skipped:
/// the speaker's clock runs slower than ours, and the jitter buffer then
/// trims the surplus.
const PLAYBACK_BACKLOG: usize = 3;

/// RTP → adaptive jitter buffer → Opus (FEC, loss concealment) → playback
/// frames, one per 10 ms playout tick.
/// Silence on the wire (no RTP at all, not quiet audio) that is worth a log line.
const MEDIA_GAP_LOG: Duration = Duration::from_millis(1000);

async fn recv_loop(
    call_id: CallId,
    generation: u64,
    track: Arc<dyn TrackRemote>,
    playback: mpsc::Sender<Frame>,
    cancel: CancellationToken,
    internal: mpsc::UnboundedSender<Tagged>,
    one_way: Arc<super::one_way::OneWayWatch>,
) {
    let tell = |msg| {
        let _ = internal.send(Tagged {
            call_id: call_id.clone(),
            generation,
            msg,
        });
    };
    let mut jitter = match JitterBuffer::new(JitterSettings::default()) {
        Ok(d) => d,
        Err(e) => {
            tell(Internal::AudioFailed(e.to_string()));
            return;
        }
    };
    tell(Internal::RecvReady);
    let mut first = true;
    // A gap in the incoming audio (the network dropped out) is logged when it
    // starts and when packets come back, so the journal tells the story.
    let mut last_packet: Option<tokio::time::Instant> = None;
    let mut gap_logged = false;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    // The long-run rate must stay 100 frames a second.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut received = 0u64;
    let mut playout = Playout::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ev = track.poll() => match ev {
                Some(TrackRemoteEvent::OnRtpPacket(pkt)) => {
                    if first {
                        first = false;
                        tell(Internal::FirstReceived);
                    }
                    let arrived = tokio::time::Instant::now();
                    if gap_logged {
                        gap_logged = false;
                        let gap_ms = last_packet.map_or(0, |t| arrived.duration_since(t).as_millis() as u64);
                        info!(call_id = %call_id, gap_ms, "incoming audio resumed");
                        one_way.resumed(arrived.into_std());
                    }
                    last_packet = Some(arrived);
                    received += 1;
                    let now = arrived.into_std();
                    jitter.push(pkt.header.sequence_number, pkt.header.timestamp, &pkt.payload, now);
                }
                Some(_) => {}
                None => break,
            },
            _ = tick.tick() => {
                if let Some(t) = last_packet.filter(|t| !gap_logged && t.elapsed() >= MEDIA_GAP_LOG) {
                    gap_logged = true;
                    one_way.gap(t.into_std());
                    warn!(call_id = %call_id, silent_ms = t.elapsed().as_millis() as u64, "no incoming audio; the call is kept until ice.receiving_timeout_ms");
                }
                playout.tick(&call_id, &mut jitter, &playback);
            }
        }
    }
    log_incoming_quality(&call_id, received, &jitter, &playout);
}

/// What the playout did: frames dropped, and the audible gaps (playout
/// ticks with nothing to play once playout has begun: the jitter buffer
/// refilling, or no packets at all).
#[derive(Default)]
struct Playout {
    dropped: u64,
    playing: bool,
    silent_ticks: u64,
    silent_run: u64,
    longest_silent_run: u64,
}

impl Playout {
    /// One 10 ms playout tick: the next frame, unless playback is behind.
    fn tick(
        &mut self,
        call_id: &CallId,
        jitter: &mut JitterBuffer,
        playback: &mpsc::Sender<Frame>,
    ) {
        let queued = playback.max_capacity() - playback.capacity();
        if queued > PLAYBACK_BACKLOG {
            return;
        }
        match jitter.pop(tokio::time::Instant::now().into_std()) {
            Ok(Some(frame)) => {
                self.playing = true;
                self.silent_run = 0;
                if playback.try_send(frame).is_err() {
                    self.dropped += 1;
                }
            }
            Ok(None) => {
                if self.playing {
                    self.silent_ticks += 1;
                    self.silent_run += 1;
                    self.longest_silent_run = self.longest_silent_run.max(self.silent_run);
                }
            }
            Err(e) => debug!(call_id = %call_id, error = %e, "undecodable RTP payload skipped"),
        }
    }
}

fn log_incoming_quality(call_id: &CallId, received: u64, jitter: &JitterBuffer, p: &Playout) {
    // The call's incoming audio in figures: what the network did to it
    // (packets, late, FEC-rebuilt, concealed) and what was heard (frames
    // played, gaps with nothing to play).
    let s = jitter.stats;
    info!(
        call_id = %call_id,
        packets = received,
        frames_out = s.frames_out,
        concealed = s.concealed,
        fec_recovered = s.fec_recovered,
        late = s.late,
        underruns = s.underruns,
        stretched = s.stretched,
        dropped_for_latency = s.dropped_for_latency,
        silent_ms = p.silent_ticks * 10,
        longest_gap_ms = p.longest_silent_run * 10,
        target_ms = jitter.target_delay().as_millis() as u64,
        dropped = p.dropped,
        "incoming audio quality"
    );
}

/// The offer as sent to the peer, asking to be the DTLS client.
///
/// As DTLS server (the usual outcome of `actpass`), the station depends on
/// the browser's ClientHello, which a browser sends as soon as *its* ICE
/// check succeeds: measured here, that first hello reaches the stack before
/// its own checks finish and is dropped, and the browser's retransmission
/// comes ~100 ms later. Offering `active` makes the browser answer
/// `passive` and wait for our hello, sent the moment our ICE connects. The
/// stack derives its role from the answer, so its own local description
/// keeps `actpass`; fingerprints are untouched.
fn offer_as_dtls_client(sdp: &str) -> String {
    sdp.replace("a=setup:actpass", "a=setup:active")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_asks_for_the_client_role() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:actpass\r\na=mid:0\r\n";
        assert_eq!(
            offer_as_dtls_client(sdp),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:active\r\na=mid:0\r\n"
        );
    }

    #[test]
    fn recognises_a_relayed_local_side() {
        assert!(local_candidate_is_relay(
            "(local) udp relay 198.18.0.1:5067210.97.1.2 <-> (remote) udp srflx 198.18.2.2:5161310.97.2.2"
        ));
        assert!(!local_candidate_is_relay(
            "(local) udp host 10.97.1.2:40000 <-> (remote) udp relay 198.18.0.1:3000"
        ));
        assert!(!local_candidate_is_relay("unknown (no pair selected)"));
    }

    #[test]
    fn parses_candidate_fields() {
        let c = "candidate:1 1 udp 2130706431 abc.local 5000 typ host";
        assert_eq!(candidate_type(c), "host");
        assert_eq!(candidate_address(c), Some("abc.local"));
        assert_eq!(first_mid("v=0\r\na=mid:0\r\n"), Some("0".to_owned()));
    }
}
