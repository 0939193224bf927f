//! A call's audio path as the controller holds it: the audio router of the
//! current call (with Bluetooth on) and the headset's open SCO link until
//! the router takes it. The route machine decides where the audio goes;
//! this carries it out.

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Route, VoiceLink};
use crate::audio::AudioPorts;
use crate::audio::router::{self, RouterCommand};

#[derive(Default)]
pub struct CallAudio {
    router: Option<mpsc::Sender<RouterCommand>>,
    link: Option<VoiceLink>,
}

impl CallAudio {
    /// Puts a router between the station's audio for a call and the
    /// returned ports (for the media session), so the call can move to a
    /// headset and back.
    pub fn route(&mut self, station: AudioPorts) -> AudioPorts {
        let (ports, router) = router::start(station, crate::audio::DEFAULT_PORT_CAPACITY);
        self.router = Some(router);
        ports
    }

    /// The call ended: its router goes (it ends with the media session).
    pub fn call_done(&mut self) {
        self.router = None;
    }

    /// The headset's SCO link opened (`Some`) or closed.
    pub fn set_link(&mut self, link: Option<VoiceLink>) {
        self.link = link;
    }

    /// Carries the call's audio on `route`.
    pub fn switch(&mut self, route: Route, call_id: &str) {
        match (route, &self.router) {
            (Route::Speaker, None) => {}
            (Route::Speaker, Some(router)) => {
                info!(call_id = %call_id, "call audio route: speaker");
                let _ = router.try_send(RouterCommand::Speaker);
            }
            (Route::Headset(codec), router) => match (router, self.link.take()) {
                (Some(router), Some(link)) => {
                    info!(call_id = %call_id, device = %link.device, codec = %codec, "call audio route: headset");
                    let cmd = RouterCommand::Headset {
                        name: link.device.to_string(),
                        ports: link.ports,
                    };
                    if router.try_send(cmd).is_err() {
                        warn!(call_id = %call_id, "call audio router not accepting; audio stays on the speaker");
                    }
                }
                _ => {
                    warn!(call_id = %call_id, "headset route without a router or link; audio stays on the speaker")
                }
            },
        }
    }
}
