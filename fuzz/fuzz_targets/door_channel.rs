//! What a resident's page sends on the door data channel, read as the
//! station reads it and fed to the door logic of an answered call. Never
//! a panic, and the door opens only for a valid nonce that this call has
//! not used before, never twice within the remote-open interval.
//!
//! Input: messages separated by newlines; a message starting with `~`
//! instead advances the clock by its length in 100 ms steps.
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use intercomd::door::indication::StationState;
use intercomd::door::{DoorInput, DoorMachine, DoorOutput, DoorSettings, OpenSource, valid_nonce};
use intercomd::signaling::protocol::CallId;
use intercomd::signaling::protocol::DoorRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let call = CallId::new("c-1").expect("a valid call id");
    let settings = DoorSettings::default();
    let interval = settings.remote_open_interval;
    let mut now = Instant::now();
    let mut door = DoorMachine::new(settings, now);
    door.handle_input(
        DoorInput::Call {
            state: StationState::InCall,
            answered: Some((call.clone(), "flat-1a".into())),
        },
        now,
    );
    let mut granted = HashSet::new();
    let mut last_grant: Option<Instant> = None;
    for line in text.split('\n').take(200) {
        if line.starts_with('~') {
            now += Duration::from_millis(100) * line.len().min(600) as u32;
            door.handle_timeout(now);
        } else {
            let input = match DoorRequest::decode(line) {
                DoorRequest::Open { nonce } => DoorInput::RemoteOpen {
                    call_id: call.clone(),
                    peer: "flat-1a".into(),
                    nonce,
                },
                DoorRequest::Invalid { nonce } => {
                    assert!(nonce.is_empty() || valid_nonce(&nonce));
                    continue;
                }
            };
            door.handle_input(input, now);
        }
        while let Some(out) = door.poll_output() {
            if let DoorOutput::OpenAttempt {
                source: OpenSource::Remote { nonce, .. },
                granted: true,
                ..
            } = out
            {
                assert!(valid_nonce(&nonce), "granted an invalid nonce {nonce:?}");
                assert!(granted.insert(nonce.clone()), "granted {nonce:?} twice");
                if let Some(t) = last_grant {
                    assert!(now - t >= interval, "two opens within the interval");
                }
                last_grant = Some(now);
            }
        }
    }
});
