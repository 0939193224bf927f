//! A peer's SDP and ICE candidates as the station reads them: its own
//! listen-only check and the WebRTC stack's parsers the media engine hands
//! the text to (`RTCSessionDescription::offer/answer`, `unmarshal_candidate`
//! after the `candidate:` prefix is dropped), and the candidate object of a
//! signaling message. Never a panic.
#![no_main]

use intercomd::signaling::protocol::Candidate;
use intercomd::signaling::sdp::listen_only;
use libfuzzer_sys::fuzz_target;
use rtc::peer_connection::sdp::RTCSessionDescription;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let quiet = listen_only(text);
    if !text.contains("audio") {
        assert!(!quiet, "no audio section says nothing");
    }
    let _ = RTCSessionDescription::offer(text.to_owned());
    let _ = RTCSessionDescription::answer(text.to_owned());
    let body = text.strip_prefix("candidate:").unwrap_or(text);
    let _ = rtc::ice::candidate::unmarshal_candidate(body);
    let _ = serde_json::from_str::<Candidate>(text);
});
