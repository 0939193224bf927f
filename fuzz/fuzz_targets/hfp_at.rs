//! The HFP audio gateway's AT command reader on any bytes a headset sends
//! over RFCOMM, in any split, with the door call and the clock moving in
//! between. Never a panic, the line buffer stays within `max_line`, and
//! every reply is a whole CR LF framed line.
//!
//! Input: a byte below 0x08 is an action (door call idle, ringing,
//! answered, time passes, audio asked for, battery); every other byte is
//! from the headset, fed in runs.
#![no_main]

use std::time::{Duration, Instant};

use intercomd::bt::hfp::{DoorCall, HfpMachine, HfpOutput, HfpSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let settings = HfpSettings::default();
    let max_line = settings.max_line;
    let mut now = Instant::now();
    let mut hfp = HfpMachine::new(settings, now);
    for run in data.split_inclusive(|&b| b < 0x08) {
        let (bytes, action) = match run.split_last() {
            Some((&b, head)) if b < 0x08 => (head, Some(b)),
            _ => (run, None),
        };
        hfp.handle_bytes(bytes, now);
        assert!(hfp.buffered() <= max_line, "line buffer over max_line");
        match action {
            Some(0) => hfp.handle_call(DoorCall::Idle, now),
            Some(1) => hfp.handle_call(
                DoorCall::Ringing {
                    caller: "Front door".into(),
                },
                now,
            ),
            Some(2) => hfp.handle_call(DoorCall::Active, now),
            Some(3) => {
                now += Duration::from_secs(1);
                hfp.handle_timeout(now);
            }
            Some(4) => {
                if let Some(deadline) = hfp.poll_timeout() {
                    now = now.max(deadline);
                    hfp.handle_timeout(now);
                }
            }
            Some(5) => {
                let _ = hfp.connect_audio(now);
            }
            Some(6) => hfp.set_battery(3),
            _ => {}
        }
        while let Some(out) = hfp.poll_output() {
            if let HfpOutput::Transmit(bytes) = out {
                assert!(
                    bytes.starts_with(b"\r\n") && bytes.ends_with(b"\r\n"),
                    "reply not framed: {bytes:?}"
                );
            }
        }
    }
});
