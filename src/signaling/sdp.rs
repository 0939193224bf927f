//! What the door station reads from a peer's SDP beyond what the WebRTC
//! stack does with it. Pure functions over peer text: never panic.

/// Whether the SDP has audio sections and its sender sends on none of them:
/// each `m=audio` section is rejected (port 0) or its direction (its own
/// attribute, else the session's, else `sendrecv`) is `recvonly` or
/// `inactive`.
///
/// A resident whose browser has no microphone answers `recvonly` (or
/// `inactive`): the call goes on listen-only and no audio will come back.
/// SDP without any audio section (not a call's answer) says nothing: `false`.
pub fn listen_only(sdp: &str) -> bool {
    let mut session_dir: Option<&str> = None;
    let mut audio_sections = 0;
    let mut sending = false;
    let sends = |(live, dir): (bool, Option<&str>), session: Option<&str>| {
        live && matches!(
            dir.or(session).unwrap_or("sendrecv"),
            "sendrecv" | "sendonly"
        )
    };
    // (a non-rejected audio section, its direction) of the section being read
    let mut section: Option<(bool, Option<&str>)> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            if let Some(s) = section.take() {
                sending |= sends(s, session_dir);
            }
            let mut fields = media.split_ascii_whitespace();
            if fields.next() == Some("audio") {
                audio_sections += 1;
                let live = fields
                    .next()
                    .and_then(|p| p.split('/').next())
                    .is_some_and(|p| p != "0");
                section = Some((live, None));
            } else {
                // Directions of other sections are not about audio.
                section = Some((false, None));
            }
            continue;
        }
        let dir = match line {
            "a=sendrecv" => "sendrecv",
            "a=sendonly" => "sendonly",
            "a=recvonly" => "recvonly",
            "a=inactive" => "inactive",
            _ => continue,
        };
        match &mut section {
            Some((_, d)) => *d = Some(dir),
            None => session_dir = Some(dir),
        }
    }
    if let Some(s) = section {
        sending |= sends(s, session_dir);
    }
    audio_sections > 0 && !sending
}

#[cfg(test)]
mod tests {
    use super::listen_only;

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n";

    fn answer(audio_dir: &str) -> String {
        format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n{audio_dir}a=rtpmap:111 opus/48000/2\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\na=sctp-port:5000\r\n"
        )
    }

    #[test]
    fn a_microphone_sends_audio() {
        assert!(!listen_only(&answer("a=sendrecv\r\n")));
        assert!(!listen_only(&answer("a=sendonly\r\n")));
        // No direction attribute at all means sendrecv.
        assert!(!listen_only(&answer("")));
    }

    #[test]
    fn listen_only_answers_send_no_audio() {
        assert!(listen_only(&answer("a=recvonly\r\n")));
        assert!(listen_only(&answer("a=inactive\r\n")));
        // LF line endings too.
        assert!(listen_only(&answer("a=recvonly\r\n").replace("\r\n", "\n")));
        // A rejected audio section carries nothing either.
        let rejected = answer("a=sendrecv\r\n").replace("m=audio 9", "m=audio 0");
        assert!(listen_only(&rejected));
    }

    #[test]
    fn session_level_direction_applies_unless_overridden() {
        let s = answer("").replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
        assert!(listen_only(&s));
        let s = answer("a=sendrecv\r\n").replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
        assert!(!listen_only(&s));
        // The data channel section's direction is not the audio's.
        let s = answer("a=sendrecv\r\n").replace("a=sctp-port", "a=inactive\r\na=sctp-port");
        assert!(!listen_only(&s));
    }

    #[test]
    fn without_audio_sections_nothing_is_said() {
        assert!(!listen_only(
            "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=recvonly\r\n"
        ));
        for junk in ["", "answer", "m=", "\u{0}\u{ffff}m=audio x", "a=recvonly"] {
            assert!(!listen_only(junk), "{junk:?}");
        }
        // An audio line without a port is a rejected section.
        assert!(listen_only("m=audio"));
    }
}
