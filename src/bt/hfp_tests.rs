//! Transcripts of the gateway's command exchange with synthetic headsets and
//! synthetic time.

use std::time::Duration;

use super::hfp::{ag_feature, hf_feature};
use super::*;
use crate::sansio::HfpInput;

/// Features of a plain CVSD headset: EC/NR, CLI, remote volume.
const HF_CVSD: u32 = hf_feature::EC_NR | hf_feature::CLI | hf_feature::REMOTE_VOLUME;
/// A wide-band headset: the above plus codec negotiation, three-way calling
/// and enhanced call status.
const HF_WIDEBAND: u32 = HF_CVSD
    | hf_feature::CODEC_NEGOTIATION
    | hf_feature::THREE_WAY
    | hf_feature::ENHANCED_CALL_STATUS;

const CIND_LIST: &str = "\r\n+CIND: (\"service\",(0,1)),(\"call\",(0,1)),(\"callsetup\",(0-3)),\
(\"callheld\",(0-2)),(\"signal\",(0-5)),(\"roam\",(0,1)),(\"battchg\",(0-5))\r\n\r\nOK\r\n";
const OK: &str = "\r\nOK\r\n";
const ERROR: &str = "\r\nERROR\r\n";

crate::sansio::clocked_rig!(Rig, HfpMachine);

impl Rig {
    fn new(settings: HfpSettings) -> Self {
        Rig(crate::sansio::Clocked::new(|t0| {
            HfpMachine::new(settings, t0)
        }))
    }

    /// The bytes written, as text (events stay in the log).
    fn text(out: Vec<HfpOutput>) -> String {
        let bytes: Vec<u8> = out
            .into_iter()
            .flat_map(|o| match o {
                HfpOutput::Transmit(bytes) => bytes,
                HfpOutput::Event(_) => Vec::new(),
            })
            .collect();
        String::from_utf8(bytes).expect("the gateway writes ASCII")
    }

    /// Bytes written since the last call, as text.
    fn drain(&mut self) -> String {
        Self::text(self.0.drain())
    }

    /// The headset sends `line` ended by CR; returns the gateway's reply.
    fn send(&mut self, line: &str) -> String {
        self.bytes(format!("{line}\r").as_bytes())
    }

    fn bytes(&mut self, bytes: &[u8]) -> String {
        Self::text(self.0.input(HfpInput::Bytes(bytes.to_vec())))
    }

    fn call(&mut self, call: DoorCall) -> String {
        Self::text(self.0.input(HfpInput::Call(call)))
    }

    /// The events since the last call (taken out of the log).
    fn take_events(&mut self) -> Vec<HfpEvent> {
        std::mem::take(&mut self.0.log)
            .into_iter()
            .filter_map(|(_, o)| match o {
                HfpOutput::Event(e) => Some(e),
                HfpOutput::Transmit(_) => None,
            })
            .collect()
    }

    /// Advances to `t0 + at`, firing deadlines in order.
    fn advance_to(&mut self, at: Duration) -> String {
        Self::text(self.0.advance_to(at))
    }

    /// A CVSD headset's whole SLC.
    fn cvsd_slc() -> Self {
        let mut r = Rig::new(HfpSettings::default());
        r.send(&format!("AT+BRSF={HF_CVSD}"));
        r.send("AT+CIND=?");
        r.send("AT+CIND?");
        r.send("AT+CMER=3,0,0,1");
        assert!(r.0.m.established());
        r.take_events();
        r
    }

    /// A wide-band headset's whole SLC.
    fn wideband_slc(settings: HfpSettings) -> Self {
        let mut r = Rig::new(settings);
        r.send(&format!("AT+BRSF={HF_WIDEBAND}"));
        r.send("AT+BAC=1,2");
        r.send("AT+CIND=?");
        r.send("AT+CIND?");
        r.send("AT+CMER=3,0,0,1");
        if r.0.m.state() == SlcState::AwaitingChld {
            r.send("AT+CHLD=?");
        }
        assert!(r.0.m.established());
        r.take_events();
        r
    }
}

fn rejected(events: &[HfpEvent]) -> Vec<RejectReason> {
    events
        .iter()
        .filter_map(|e| match e {
            HfpEvent::Rejected { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn ag_features_announce_codec_negotiation_and_three_way_only_when_set() {
    let plain = HfpSettings::default().ag_features();
    assert_ne!(plain & ag_feature::CODEC_NEGOTIATION, 0);
    assert_eq!(plain & ag_feature::THREE_WAY, 0);
    assert_eq!(plain & ag_feature::VOICE_RECOGNITION, 0);
    // Echo cancellation on the headset route is the headset's own.
    assert_eq!(plain & ag_feature::EC_NR, 0);
    let three_way = HfpSettings {
        three_way: true,
        ..HfpSettings::default()
    };
    assert_ne!(three_way.ag_features() & ag_feature::THREE_WAY, 0);
}

#[test]
fn cvsd_headset_full_slc_transcript() {
    let mut r = Rig::new(HfpSettings::default());
    let ag = HfpSettings::default().ag_features();
    assert_eq!(
        r.send(&format!("AT+BRSF={HF_CVSD}")),
        format!("\r\n+BRSF: {ag}\r\n{OK}")
    );
    assert_eq!(r.0.m.state(), SlcState::Connecting);
    assert_eq!(r.send("AT+CIND=?"), CIND_LIST);
    assert_eq!(
        r.send("AT+CIND?"),
        format!("\r\n+CIND: 1,0,0,0,5,0,5\r\n{OK}")
    );
    assert_eq!(r.send("AT+CMER=3,0,0,1"), OK);
    assert!(r.0.m.established());
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::SlcEstablished {
            hf_features: HF_CVSD,
            codec_negotiation: false,
        }]
    );
    assert_eq!(r.0.m.poll_timeout(), None, "no timer once established");

    // Common follow-ups of real headsets.
    assert_eq!(r.send("AT+CLIP=1"), OK);
    assert_eq!(r.send("AT+VGS=9"), OK);
    assert_eq!(r.send("AT+VGM=8"), OK);
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::SpeakerGain(9), HfpEvent::MicGain(8)]
    );

    // No codec negotiation: CVSD is ready without +BCS.
    r.0.m.connect_audio(r.0.now).unwrap();
    assert_eq!(r.drain(), "");
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::AudioReady { codec: Codec::Cvsd }]
    );
    assert_eq!(r.0.m.codec(), Some(Codec::Cvsd));
}

#[test]
fn cvsd_headset_may_not_send_bac() {
    let mut r = Rig::cvsd_slc();
    assert_eq!(r.send("AT+BAC=1,2"), ERROR);
    assert_eq!(rejected(&r.take_events()), vec![RejectReason::NotAllowed]);
}

#[test]
fn msbc_headset_full_slc_transcript_with_three_way_and_codec_negotiation() {
    let settings = HfpSettings {
        three_way: true,
        ..HfpSettings::default()
    };
    let ag = settings.ag_features();
    let mut r = Rig::new(settings);
    assert_eq!(
        r.send(&format!("AT+BRSF={HF_WIDEBAND}")),
        format!("\r\n+BRSF: {ag}\r\n{OK}")
    );
    assert_eq!(r.send("AT+BAC=1,2"), OK);
    assert_eq!(r.0.m.hf_codecs(), &[Codec::Cvsd, Codec::Msbc]);
    assert_eq!(r.send("AT+CIND=?"), CIND_LIST);
    assert_eq!(
        r.send("AT+CIND?"),
        format!("\r\n+CIND: 1,0,0,0,5,0,5\r\n{OK}")
    );
    assert_eq!(r.send("AT+CMER=3,0,0,1"), OK);
    assert_eq!(r.0.m.state(), SlcState::AwaitingChld);
    assert!(r.take_events().is_empty());
    assert_eq!(r.send("AT+CHLD=?"), format!("\r\n+CHLD: (0,1,2)\r\n{OK}"));
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::SlcEstablished {
            hf_features: HF_WIDEBAND,
            codec_negotiation: true,
        }]
    );

    // Codec connection before audio: mSBC proposed and confirmed.
    r.0.m.connect_audio(r.0.now).unwrap();
    assert_eq!(r.drain(), "\r\n+BCS: 2\r\n");
    assert!(r.0.m.negotiating());
    assert_eq!(r.send("AT+BCS=2"), OK);
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::AudioReady { codec: Codec::Msbc }]
    );
    assert_eq!(r.0.m.codec(), Some(Codec::Msbc));
    assert_eq!(Codec::Msbc.sample_rate(), 16_000);
}

#[test]
fn without_three_way_on_the_gateway_chld_is_not_asked_and_refused() {
    let mut r = Rig::wideband_slc(HfpSettings::default());
    assert_eq!(r.send("AT+CHLD=?"), ERROR);
    assert_eq!(r.send("AT+CHLD=1"), ERROR);
    assert_eq!(
        rejected(&r.take_events()),
        vec![RejectReason::NotSupported, RejectReason::NotSupported]
    );
}

#[test]
fn prefer_msbc_off_chooses_cvsd() {
    let mut r = Rig::wideband_slc(HfpSettings {
        prefer_msbc: false,
        ..HfpSettings::default()
    });
    r.0.m.connect_audio(r.0.now).unwrap();
    assert_eq!(r.drain(), "\r\n+BCS: 1\r\n");
    assert_eq!(r.send("AT+BCS=1"), OK);
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::AudioReady { codec: Codec::Cvsd }]
    );
}

#[test]
fn headset_triggered_codec_connection_with_bcc() {
    let mut r = Rig::wideband_slc(HfpSettings::default());
    assert_eq!(r.send("AT+BCC"), format!("{OK}\r\n+BCS: 2\r\n"));
    assert_eq!(r.send("AT+BCS=2"), OK);
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::AudioReady { codec: Codec::Msbc }]
    );
}

#[test]
fn codec_renegotiation_after_new_bac_list() {
    let mut r = Rig::wideband_slc(HfpSettings::default());
    r.0.m.connect_audio(r.0.now).unwrap();
    r.drain();
    r.send("AT+BCS=2");
    assert_eq!(r.0.m.codec(), Some(Codec::Msbc));
    r.take_events();

    // The headset drops mSBC: the agreed codec is forgotten and the next
    // codec connection uses CVSD.
    assert_eq!(r.send("AT+BAC=1"), OK);
    assert_eq!(r.0.m.codec(), None);
    r.0.m.connect_audio(r.0.now).unwrap();
    assert_eq!(r.drain(), "\r\n+BCS: 1\r\n");
    assert_eq!(r.send("AT+BCS=1"), OK);
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::AudioReady { codec: Codec::Cvsd }]
    );

    // mSBC offered again, while a proposal is under way: a proposal of a
    // codec still listed stands.
    assert_eq!(r.send("AT+BAC=1,2"), OK);
    r.0.m.connect_audio(r.0.now).unwrap();
    assert_eq!(r.drain(), "\r\n+BCS: 2\r\n");
    // Withdrawn during the proposal: proposed again with CVSD at once.
    assert_eq!(r.send("AT+BAC=1"), format!("{OK}\r\n+BCS: 1\r\n"));
    assert_eq!(r.send("AT+BCS=1"), OK);
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::AudioReady { codec: Codec::Cvsd }]
    );
}

#[test]
fn codec_mismatch_falls_back_to_cvsd_then_fails() {
    let mut r = Rig::wideband_slc(HfpSettings::default());
    r.0.m.connect_audio(r.0.now).unwrap();
    assert_eq!(r.drain(), "\r\n+BCS: 2\r\n");
    assert_eq!(r.0.m.proposal(), Some((Codec::Msbc, 1)));
    // The headset answers with another codec: refused, CVSD proposed.
    assert_eq!(r.send("AT+BCS=1"), format!("{ERROR}\r\n+BCS: 1\r\n"));
    assert_eq!(r.0.m.proposal(), Some((Codec::Cvsd, 2)));
    // Wrong again: negotiation fails.
    assert_eq!(r.send("AT+BCS=2"), ERROR);
    assert_eq!(r.0.m.proposal(), None);
    let events = r.take_events();
    assert_eq!(events.last(), Some(&HfpEvent::CodecFailed));
    assert!(!r.0.m.negotiating());
    assert_eq!(r.0.m.poll_timeout(), None);
    // An answer with no proposal pending is refused.
    assert_eq!(r.send("AT+BCS=1"), ERROR);
}

#[test]
fn codec_answer_timeout_retries_cvsd_then_fails() {
    let mut r = Rig::wideband_slc(HfpSettings::default());
    r.0.m.connect_audio(r.0.now).unwrap();
    assert_eq!(r.drain(), "\r\n+BCS: 2\r\n");
    assert_eq!(r.advance_to(Duration::from_secs(3)), "\r\n+BCS: 1\r\n");
    assert!(r.take_events().is_empty());
    assert_eq!(r.advance_to(Duration::from_secs(6)), "");
    assert_eq!(r.take_events(), vec![HfpEvent::CodecFailed]);
    assert_eq!(r.0.m.poll_timeout(), None);
}

#[test]
fn connect_audio_before_slc_is_an_error() {
    let mut r = Rig::new(HfpSettings::default());
    assert_eq!(r.0.m.connect_audio(r.0.now), Err(AudioSetupError::NoSlc));
}

#[test]
fn slc_that_never_completes_times_out() {
    let mut r = Rig::new(HfpSettings::default());
    r.send(&format!("AT+BRSF={HF_CVSD}"));
    r.advance_to(Duration::from_secs(10));
    assert_eq!(r.take_events(), vec![HfpEvent::SlcTimeout]);
    assert_eq!(r.0.m.state(), SlcState::Failed);
    // Nothing more is answered.
    assert_eq!(r.send("AT+CIND=?"), "");
    assert_eq!(r.0.m.poll_timeout(), None);
}

#[test]
fn cmer_with_reporting_off_does_not_establish() {
    let mut r = Rig::new(HfpSettings::default());
    r.send(&format!("AT+BRSF={HF_CVSD}"));
    assert_eq!(r.send("AT+CMER=3,0,0,0"), OK);
    assert_eq!(r.0.m.state(), SlcState::Connecting);
    assert_eq!(r.send("AT+CMER=1,0,0,1"), ERROR);
    assert_eq!(r.send("AT+CMER=3,0,0,2"), ERROR);
    assert_eq!(r.send("AT+CMER=3,0,0,1"), OK);
    assert!(r.0.m.established());
}

#[test]
fn indicators_follow_a_door_call_that_is_answered_and_ended() {
    let mut r = Rig::cvsd_slc();
    r.send("AT+CLIP=1");
    let out = r.call(DoorCall::Ringing {
        caller: "Front \"door\"".to_owned(),
    });
    assert_eq!(
        out,
        "\r\n+CIEV: 3,1\r\n\r\nRING\r\n\r\n+CLIP: \"Front door\",129\r\n"
    );
    assert_eq!(r.0.m.indicator(Indicator::CallSetup), 1);
    // RING repeats while it rings.
    assert_eq!(
        r.advance_to(Duration::from_secs(3)),
        "\r\nRING\r\n\r\n+CLIP: \"Front door\",129\r\n"
    );
    assert_eq!(r.send("AT+CLCC"), format!("\r\n+CLCC: 1,1,4,0,0\r\n{OK}"));

    assert_eq!(
        r.call(DoorCall::Active),
        "\r\n+CIEV: 2,1\r\n\r\n+CIEV: 3,0\r\n"
    );
    assert_eq!(r.0.m.poll_timeout(), None, "no RING once answered");
    assert_eq!(
        r.send("AT+CIND?"),
        format!("\r\n+CIND: 1,1,0,0,5,0,5\r\n{OK}")
    );
    assert_eq!(r.send("AT+CLCC"), format!("\r\n+CLCC: 1,1,0,0,0\r\n{OK}"));

    assert_eq!(r.call(DoorCall::Idle), "\r\n+CIEV: 2,0\r\n");
    assert_eq!(r.send("AT+CLCC"), OK);
    // Same state again: nothing.
    assert_eq!(r.call(DoorCall::Idle), "");
}

#[test]
fn unanswered_call_clears_callsetup_only() {
    let mut r = Rig::cvsd_slc();
    // No +CLIP unless asked for.
    assert_eq!(
        r.call(DoorCall::Ringing {
            caller: "gate".to_owned()
        }),
        "\r\n+CIEV: 3,1\r\n\r\nRING\r\n"
    );
    assert_eq!(r.call(DoorCall::Idle), "\r\n+CIEV: 3,0\r\n");
    assert_eq!(r.advance_to(Duration::from_secs(10)), "");
}

#[test]
fn indicators_are_not_reported_before_the_slc_or_when_deactivated() {
    let mut r = Rig::new(HfpSettings::default());
    r.send(&format!("AT+BRSF={HF_CVSD}"));
    assert_eq!(
        r.call(DoorCall::Ringing {
            caller: "gate".to_owned()
        }),
        ""
    );
    // The read shows the state all the same.
    assert_eq!(
        r.send("AT+CIND?"),
        format!("\r\n+CIND: 1,0,1,0,5,0,5\r\n{OK}")
    );
    r.send("AT+CMER=3,0,0,1");
    r.call(DoorCall::Idle);

    // battchg off; call indicators cannot be switched off.
    assert_eq!(r.send("AT+BIA=0,0,0,0,1,0,0"), OK);
    r.0.m.set_battery(2);
    assert_eq!(r.drain(), "");
    assert_eq!(r.0.m.indicator(Indicator::BattChg), 2);
    assert_eq!(r.call(DoorCall::Active), "\r\n+CIEV: 2,1\r\n");
    assert_eq!(r.send("AT+BIA=,,,,,,1"), OK);
    r.0.m.set_battery(9);
    assert_eq!(r.drain(), "\r\n+CIEV: 7,5\r\n");
    assert_eq!(r.send("AT+BIA=1,1,1,1,1,1,1,1"), ERROR);
    assert_eq!(r.send("AT+BIA=2"), ERROR);
}

#[test]
fn answer_and_hang_up_from_the_headset_become_events() {
    let mut r = Rig::cvsd_slc();
    // Nothing to answer or hang up.
    assert_eq!(r.send("ATA"), ERROR);
    assert_eq!(r.send("AT+CHUP"), ERROR);
    assert_eq!(
        rejected(&r.take_events()),
        vec![RejectReason::NotAllowed, RejectReason::NotAllowed]
    );

    r.call(DoorCall::Ringing {
        caller: "gate".to_owned(),
    });
    assert_eq!(r.send("ATA"), OK);
    assert_eq!(r.take_events(), vec![HfpEvent::AnswerRequested]);
    // The machine waits for the controller to confirm the answer.
    assert_eq!(r.0.m.indicator(Indicator::Call), 0);
    r.call(DoorCall::Active);
    assert_eq!(r.send("AT+CHUP"), OK);
    assert_eq!(r.take_events(), vec![HfpEvent::HangupRequested]);

    // Rejecting a ringing call.
    r.call(DoorCall::Idle);
    r.call(DoorCall::Ringing {
        caller: "gate".to_owned(),
    });
    assert_eq!(r.send("at+chup"), OK);
    assert_eq!(r.take_events(), vec![HfpEvent::HangupRequested]);
}

#[test]
fn volume_nrec_and_voice_recognition() {
    let mut r = Rig::cvsd_slc();
    assert_eq!(r.send("AT+VGS=15"), OK);
    assert_eq!(r.send("AT+VGS=16"), ERROR);
    assert_eq!(r.send("AT+VGM=0"), OK);
    assert_eq!(r.send("AT+VGM=-1"), ERROR);
    assert_eq!(r.send("AT+VGM"), ERROR);
    assert_eq!(r.send("AT+NREC=0"), OK);
    assert_eq!(r.send("AT+NREC=1"), ERROR);
    assert_eq!(r.send("AT+BVRA=1"), ERROR);
    assert_eq!(r.send("AT+BVRA=?"), ERROR);
    assert_eq!(r.send("ATD123;"), ERROR);
    let events = r.take_events();
    assert_eq!(
        events
            .iter()
            .filter(|e| !matches!(e, HfpEvent::Rejected { .. }))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            HfpEvent::SpeakerGain(15),
            HfpEvent::MicGain(0),
            HfpEvent::EchoCancelOff
        ]
    );
    assert_eq!(
        rejected(&events),
        vec![
            RejectReason::Malformed,
            RejectReason::Malformed,
            RejectReason::Malformed,
            RejectReason::Malformed,
            RejectReason::NotSupported,
            RejectReason::NotSupported,
            RejectReason::NotSupported,
        ]
    );
}

#[test]
fn operator_and_misc_queries() {
    let mut r = Rig::cvsd_slc();
    assert_eq!(r.send("AT+COPS=3,0"), OK);
    assert_eq!(
        r.send("AT+COPS?"),
        format!("\r\n+COPS: 0,0,\"intercomd\"\r\n{OK}")
    );
    assert_eq!(r.send("AT+CNUM"), OK);
    assert_eq!(r.send("AT+BTRH?"), OK);
    assert_eq!(r.send("AT+CCWA=1"), OK);
    assert_eq!(r.send("AT+CMEE=1"), ERROR);
    assert_eq!(rejected(&r.take_events()), vec![RejectReason::Unknown]);
}

#[test]
fn line_framing_tolerates_cr_lf_variants_and_split_reads() {
    for ending in ["\r", "\n", "\r\n", "\n\r", "\r\r\n\n"] {
        let mut r = Rig::new(HfpSettings::default());
        let script = format!(
            "AT+BRSF={HF_CVSD}{ending}AT+CIND=?{ending}AT+CIND?{ending}AT+CMER=3,0,0,1{ending}"
        );
        // One byte at a time.
        let mut out = String::new();
        for b in script.as_bytes() {
            out += &r.bytes(&[*b]);
        }
        assert!(r.0.m.established(), "ending {ending:?}");
        assert_eq!(out.matches("\r\nOK\r\n").count(), 4, "ending {ending:?}");
        assert!(rejected(&r.take_events()).is_empty(), "ending {ending:?}");
    }

    // All in one read, with stray blank lines and spaces, lower case.
    let mut r = Rig::new(HfpSettings::default());
    let out = r.bytes(
        format!("\r\n\r\n at+brsf={HF_CVSD} \r\nat+cind=?\r\rAT+CIND?\nAT+CMER = 3,0,0,1\r")
            .as_bytes(),
    );
    assert!(r.0.m.established());
    assert_eq!(out.matches("\r\nOK\r\n").count(), 4);
    assert_eq!(r.0.m.buffered(), 0);
}

#[test]
fn malformed_commands_get_error_and_an_event() {
    let mut r = Rig::cvsd_slc();
    let cases: &[(&[u8], RejectReason)] = &[
        (b"HELLO", RejectReason::Unknown),
        (b"A", RejectReason::Unknown),
        (b"AT+", RejectReason::Unknown),
        (b"AT+XAPL=05AC-1702-0100,7", RejectReason::Unknown),
        (b"AT+BRSF", RejectReason::Malformed),
        (b"AT+BRSF=", RejectReason::Malformed),
        (b"AT+BRSF=abc", RejectReason::Malformed),
        (b"AT+BRSF=99999999999", RejectReason::Malformed),
        (b"AT+BRSF=1,2", RejectReason::Malformed),
        (b"AT+CIND=1", RejectReason::Malformed),
        (b"AT+CMER=", RejectReason::Malformed),
        (b"AT+VGS=1x", RejectReason::Malformed),
        (b"AT+CHUP?", RejectReason::Malformed),
        (b"AT+CIND!", RejectReason::Unknown),
        (b"AT+CLIP=2", RejectReason::Malformed),
        (b"AT+COPS=0", RejectReason::Malformed),
        (b"AT\x01+BRSF=1", RejectReason::NotText),
        (b"AT+VGS=\xff", RejectReason::NotText),
    ];
    for (line, reason) in cases {
        let mut bytes = line.to_vec();
        bytes.push(b'\r');
        assert_eq!(
            r.bytes(&bytes),
            ERROR,
            "{:?}",
            String::from_utf8_lossy(line)
        );
        let events = r.take_events();
        assert_eq!(rejected(&events), vec![*reason], "{line:?}");
    }
    // Still working afterwards.
    assert_eq!(r.send("AT+VGS=3"), OK);
}

#[test]
fn rejected_lines_are_escaped_for_the_log() {
    let mut r = Rig::cvsd_slc();
    r.bytes(b"AT\x1b[31m\r");
    assert_eq!(
        r.take_events(),
        vec![HfpEvent::Rejected {
            line: "AT\\x1b[31m".to_owned(),
            reason: RejectReason::NotText,
        }]
    );
}

#[test]
fn oversized_line_is_dropped_with_one_error_and_the_buffer_stays_bounded() {
    let mut r = Rig::cvsd_slc();
    let max = r.0.m.settings().max_line;
    let long = vec![b'A'; max * 10];
    // Sent in chunks, no terminator yet.
    let mut out = String::new();
    for chunk in long.chunks(7) {
        out += &r.bytes(chunk);
        assert!(r.0.m.buffered() <= max);
    }
    assert_eq!(out, ERROR, "one ERROR for the whole line");
    assert_eq!(rejected(&r.take_events()), vec![RejectReason::TooLong]);
    // The tail of the long line is ignored up to its end, then all is well.
    assert_eq!(r.bytes(b"AAAA\rAT+VGS=2\r"), OK);
    assert_eq!(r.take_events(), vec![HfpEvent::SpeakerGain(2)]);

    // A line of exactly max bytes is still read.
    let mut line = b"AT+VGS=".to_vec();
    line.resize(max - 1, b'0');
    line.push(b'1');
    line.push(b'\r');
    assert_eq!(r.bytes(&line), ERROR, "too many digits for a number");
    assert_eq!(rejected(&r.take_events()), vec![RejectReason::Malformed]);
}

/// A small deterministic generator, so a failure is reproducible from its
/// seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn seeded_fuzz_never_panics_and_keeps_the_buffer_bounded() {
    const FRAGMENTS: &[&[u8]] = &[
        b"AT+BRSF=",
        b"AT+BAC=",
        b"AT+CIND=?",
        b"AT+CIND?",
        b"AT+CMER=3,0,0,1",
        b"AT+CHLD=?",
        b"AT+BCS=",
        b"AT+BCC",
        b"AT+BIA=",
        b"ATA",
        b"AT+CHUP",
        b"AT+VGS=",
        b"AT+NREC=0",
        b"AT+CLIP=1",
        b"AT+CLCC",
        b",",
        b"=",
        b"?",
        b"1",
        b"2",
        b"999999999999",
        b"\r",
        b"\n",
        b"\"",
    ];
    for seed in 1..=64u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let settings = HfpSettings {
            three_way: seed % 2 == 0,
            prefer_msbc: seed % 3 != 0,
            max_line: 16 + (seed as usize % 64),
            ..HfpSettings::default()
        };
        let max = settings.max_line;
        let mut r = Rig::new(settings);
        for _ in 0..400 {
            match rng.below(10) {
                0..=5 => {
                    let len = rng.below(40) as usize;
                    let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    r.0.m.handle_bytes(&bytes, r.0.now);
                }
                6 | 7 => {
                    let f = FRAGMENTS[rng.below(FRAGMENTS.len() as u64) as usize];
                    r.0.m.handle_bytes(f, r.0.now);
                    if rng.below(2) == 0 {
                        let n = rng.below(2000).to_string();
                        r.0.m.handle_bytes(n.as_bytes(), r.0.now);
                        r.0.m.handle_bytes(b"\r", r.0.now);
                    }
                }
                8 => {
                    let call = match rng.below(3) {
                        0 => DoorCall::Idle,
                        1 => DoorCall::Ringing {
                            caller: "x".to_owned(),
                        },
                        _ => DoorCall::Active,
                    };
                    r.0.m.handle_call(call, r.0.now);
                    let _ = r.0.m.connect_audio(r.0.now);
                }
                _ => {
                    let at = r.0.now - r.t0 + Duration::from_millis(rng.below(5000));
                    r.advance_to(at);
                }
            }
            assert!(r.0.m.buffered() <= max, "seed {seed}");
            r.drain();
            for i in [
                Indicator::Service,
                Indicator::Call,
                Indicator::CallSetup,
                Indicator::CallHeld,
                Indicator::Signal,
                Indicator::Roam,
                Indicator::BattChg,
            ] {
                assert!(r.0.m.indicator(i) <= i.max(), "seed {seed}");
            }
            r.take_events();
        }
    }
}

#[test]
fn answer_and_hang_up_need_the_slc() {
    let mut r = Rig::new(HfpSettings::default());
    r.send(&format!("AT+BRSF={HF_CVSD}"));
    r.call(DoorCall::Ringing {
        caller: "gate".to_owned(),
    });
    assert_eq!(r.send("ATA"), ERROR);
    assert_eq!(r.send("AT+CHUP"), ERROR);
    assert_eq!(
        rejected(&r.take_events()),
        vec![RejectReason::NotAllowed, RejectReason::NotAllowed]
    );
}

#[test]
fn three_way_slc_waits_for_chld_and_times_out_without_it() {
    let mut r = Rig::new(HfpSettings {
        three_way: true,
        ..HfpSettings::default()
    });
    r.send(&format!("AT+BRSF={HF_WIDEBAND}"));
    r.send("AT+BAC=1,2");
    r.send("AT+CIND=?");
    r.send("AT+CIND?");
    r.send("AT+CMER=3,0,0,1");
    assert_eq!(r.0.m.state(), SlcState::AwaitingChld);
    assert_eq!(r.0.m.connect_audio(r.0.now), Err(AudioSetupError::NoSlc));
    r.advance_to(Duration::from_secs(10));
    assert_eq!(r.take_events(), vec![HfpEvent::SlcTimeout]);
}
