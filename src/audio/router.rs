//! The call audio router: sits between a call's media session and the
//! station's own audio device, and switches the call to a headset's frame
//! channels and back. The media session never notices a switch: it keeps
//! the same [`AudioPorts`] for the whole call.
//!
//! On the speaker route, microphone frames go to the call and the call's
//! frames to the speaker. On the headset route, the headset's frames go to
//! the call (the microphone's are drained and dropped) and the call's go to
//! the headset. A headset whose channels close (the SCO link dropped) hands
//! the call back to the speaker at the next frame, without waiting for a
//! command: the call audio is never left without a device.
//!
//! The router ends when the call's side closes (the media session ended).

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{AudioPorts, DevicePorts, Frame, port_pair};

/// A headset's audio as frame channels (48 kHz, 10 ms).
pub struct HeadsetPorts {
    /// What the headset's microphone hears.
    pub from_headset: mpsc::Receiver<Frame>,
    /// What the headset's speaker plays.
    pub to_headset: mpsc::Sender<Frame>,
}

/// What the controller tells a call's router.
pub enum RouterCommand {
    /// Carry the call on this headset (`name` for the log).
    Headset { name: String, ports: HeadsetPorts },
    /// Back to the station's speaker and microphone.
    Speaker,
}

/// Starts a router between `device` (the station's audio for this call)
/// and the returned ports (for the media session). Commands go to the
/// returned sender; the router ends with the call.
pub fn start(device: AudioPorts, capacity: usize) -> (AudioPorts, mpsc::Sender<RouterCommand>) {
    let (call, call_device) = port_pair(capacity);
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(run(device, call_device, rx));
    (call, tx)
}

async fn run(
    mut station: AudioPorts,
    call: DevicePorts,
    mut commands: mpsc::Receiver<RouterCommand>,
) {
    let DevicePorts {
        capture: to_call,
        playback: mut from_call,
    } = call;
    let mut headset: Option<(String, HeadsetPorts)> = None;
    let mut commands_open = true;
    let mut station_open = true;
    loop {
        tokio::select! {
            cmd = commands.recv(), if commands_open => match cmd {
                Some(RouterCommand::Headset { name, ports }) => {
                    info!(device = %name, "call audio on the headset");
                    headset = Some((name, ports));
                }
                Some(RouterCommand::Speaker) => {
                    if let Some((name, _)) = headset.take() {
                        info!(device = %name, "call audio back on the speaker");
                    }
                }
                // The controller is gone: keep the current route.
                None => commands_open = false,
            },
            f = from_call.recv() => match f {
                Some(frame) => {
                    let dead = match &headset {
                        Some((_, h)) => matches!(
                            h.to_headset.try_send(frame),
                            Err(mpsc::error::TrySendError::Closed(_))
                        ),
                        None => {
                            let _ = station.playback.try_send(frame);
                            false
                        }
                    };
                    if dead {
                        fall_back(&mut headset);
                    }
                }
                // The call ended.
                None => return,
            },
            f = station.capture.recv(), if station_open => match f {
                Some(frame) if headset.is_none() => {
                    if to_call.try_send(frame).is_err() && to_call.is_closed() {
                        return;
                    }
                }
                // On the headset route the microphone is drained.
                Some(_) => {}
                None => {
                    // The station's device stopped; a headset may still
                    // carry the call.
                    if headset.is_none() {
                        warn!("station audio ended during the call");
                        return;
                    }
                    station_open = false;
                }
            },
            f = next_headset_frame(&mut headset) => match f {
                Some(frame) => {
                    if to_call.try_send(frame).is_err() && to_call.is_closed() {
                        return;
                    }
                }
                None => fall_back(&mut headset),
            },
        }
    }
}

fn fall_back(headset: &mut Option<(String, HeadsetPorts)>) {
    if let Some((name, _)) = headset.take() {
        warn!(device = %name, "headset audio ended; the speaker takes the call");
    }
}

async fn next_headset_frame(headset: &mut Option<(String, HeadsetPorts)>) -> Option<Frame> {
    match headset {
        Some((_, h)) => h.from_headset.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn frame(v: i16) -> Frame {
        Box::new([v; super::super::FRAME_SAMPLES])
    }

    async fn next(rx: &mut mpsc::Receiver<Frame>) -> i16 {
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("a frame within 1 s")
            .expect("channel open")[0]
    }

    #[tokio::test]
    async fn frames_follow_the_route_and_a_dead_headset_falls_back_at_once() {
        let (station, station_dev) = port_pair(8);
        let DevicePorts {
            capture: mic,
            playback: mut speaker,
        } = station_dev;
        let (mut call, router) = start(station, 8);

        // Speaker route: microphone to the call, the call to the speaker.
        mic.send(frame(1)).await.expect("router running");
        assert_eq!(next(&mut call.capture).await, 1);
        call.playback.send(frame(2)).await.expect("router running");
        assert_eq!(next(&mut speaker).await, 2);

        // Headset route.
        let (hs_mic, from_headset) = mpsc::channel(8);
        let (to_headset, mut hs_speaker) = mpsc::channel(8);
        router
            .send(RouterCommand::Headset {
                name: "00:AA:01:01:00:01".into(),
                ports: HeadsetPorts {
                    from_headset,
                    to_headset,
                },
            })
            .await
            .expect("router running");
        tokio::time::sleep(Duration::from_millis(20)).await;
        mic.send(frame(3)).await.expect("router running");
        hs_mic.send(frame(4)).await.expect("router running");
        assert_eq!(
            next(&mut call.capture).await,
            4,
            "the microphone is not heard"
        );
        call.playback.send(frame(5)).await.expect("router running");
        assert_eq!(next(&mut hs_speaker).await, 5);
        assert!(speaker.try_recv().is_err(), "the speaker is silent");

        // The headset's link drops: the next microphone frame reaches the
        // call without any command.
        drop(hs_mic);
        drop(hs_speaker);
        tokio::time::sleep(Duration::from_millis(20)).await;
        mic.send(frame(6)).await.expect("router running");
        assert_eq!(next(&mut call.capture).await, 6);
        call.playback.send(frame(7)).await.expect("router running");
        assert_eq!(next(&mut speaker).await, 7);

        // A command back to the speaker while already there is harmless;
        // the call ending ends the router.
        router
            .send(RouterCommand::Speaker)
            .await
            .expect("router running");
        drop(call);
        tokio::time::timeout(Duration::from_secs(1), router.closed())
            .await
            .expect("router ends with the call");
    }
}
