//! The signaling decoder on any text frame a peer sends: it never panics,
//! refusals carry a short reference, and whatever it accepts encodes to a
//! message it accepts again, unchanged.
#![no_main]

use intercomd::signaling::protocol::{self, DecodeError};
use libfuzzer_sys::fuzz_target;

/// The hub's and the station's frame limit (64 KiB).
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the time they are decoded.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::decode(text, LIMIT) {
        Ok(message) => {
            let _ = message.call_id();
            let json = message.to_json();
            let again = protocol::decode(&json, usize::MAX)
                .unwrap_or_else(|e| panic!("{json} was accepted once, refused now: {e:?}"));
            assert_eq!(again.type_name(), message.type_name());
            assert_eq!(again.to_json(), json, "encoding is stable");
        }
        Err(e) => {
            if let DecodeError::UnknownType(kind) = &e {
                assert!(kind.len() <= 64, "the echoed type is kept short");
            }
            let _ = e.code();
            let _ = e.reference();
            let reply = e.to_reply().to_json();
            protocol::decode(&reply, usize::MAX)
                .unwrap_or_else(|e| panic!("the reply {reply} is no valid message: {e:?}"));
        }
    }
});
