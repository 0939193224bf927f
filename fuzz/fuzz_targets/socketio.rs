//! Socket.IO v4 framing on any text frame a Socket.IO backend sends: it
//! never panics, and an event it maps onto a message encodes back into a
//! frame that decodes to the same message.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use intercomd::signaling::socketio::{Incoming, SocketIoWire};
use libfuzzer_sys::fuzz_target;

fn wires() -> &'static [SocketIoWire; 2] {
    static WIRES: OnceLock<[SocketIoWire; 2]> = OnceLock::new();
    WIRES.get_or_init(|| {
        let mut events = BTreeMap::new();
        events.insert("offer".to_owned(), "webrtc-offer".to_owned());
        events.insert("candidate".to_owned(), "ice".to_owned());
        events.insert("ring".to_owned(), "ring".to_owned());
        [
            SocketIoWire::new("/", "token", &BTreeMap::new()),
            SocketIoWire::new("/intercom", "auth", &events),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let wire = &wires()[usize::from(which & 1)];
    match wire.decode(text, 64 * 1024) {
        Ok(Incoming::Message(message)) => {
            let frame = wire.encode(&message);
            match wire.decode(&frame, usize::MAX) {
                Ok(Incoming::Message(again)) => assert_eq!(again.to_json(), message.to_json()),
                other => panic!("{frame} decodes to {other:?}"),
            }
        }
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
