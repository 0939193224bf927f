//! The real ALSA code path without a sound card: ALSA's user-space `file`
//! plugin (slave `null`) reads the microphone from a raw file and writes the
//! speaker to another. ALSA reads its configuration once per process, so
//! the test runs alone in a process of its own (`in_own_process`) and sets
//! `ALSA_CONFIG_PATH` there before the first ALSA call.
//!
//! File PCMs have no clock (reads and writes return at once), so the
//! backend runs with `Pacing::Timer`; at end of file the plugin repeats the
//! last period, so the input is padded with silence.
//!
//! Proven by content: the microphone file is captured sample-exact, the
//! far end is recorded byte-exact after the ringback cued before the call,
//! and the tone still comes through with the capture processing on. Last,
//! a whole station starts with `audio.backend = "alsa"` on the same PCMs.

use std::path::Path;
use std::time::Duration;

use intercomd::audio::alsa::{AlsaSpec, Pacing, start_alsa_audio};
use intercomd::audio::processing::ProcessingSettings;
use intercomd::audio::tones::ToneCue;
use intercomd::audio::{AudioError, FRAME_SAMPLES, SAMPLE_RATE, dominant_frequency, fill_sine};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::station::InProcessStation;

const MIC_HZ: f32 = 700.0;
const FAR_HZ: f32 = 1000.0;
const CANDIDATES: [f32; 4] = [425.0, 600.0, 700.0, 1000.0];

fn write_raw(path: &Path, samples: &[i16]) {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("temp dir is writable");
}

fn read_raw(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .expect("the playback file PCM wrote its file")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn sine(frames: usize, hz: f32, phase: f64) -> Vec<i16> {
    let mut v = vec![0i16; frames * FRAME_SAMPLES];
    fill_sine(&mut v, hz, 0.25, SAMPLE_RATE, phase);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_pcm_capture_and_playback_by_content() {
    crate::common::run_alone!("file_pcm_capture_and_playback_by_content");
    let dir = std::env::temp_dir().join(format!("alsa-file-pcm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let infile = dir.join("mic.raw");
    let outfile = dir.join("speaker.raw");
    let conf = dir.join("asoundrc");

    // 2 s of tone, then 2 s of silence: the plugin repeats the last period
    // once the file ends, and the silence keeps that repeat silent.
    let mut mic = sine(200, MIC_HZ, 0.3);
    mic.extend(std::iter::repeat_n(0, 200 * FRAME_SAMPLES));
    write_raw(&infile, &mic);
    std::fs::write(
        &conf,
        format!(
            r#"pcm.testcap {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{}"
    format "raw"
}}
pcm.testplay {{
    type file
    slave.pcm "null"
    file "{}"
    format "raw"
}}
"#,
            infile.display(),
            outfile.display()
        ),
    )
    .expect("temp dir is writable");
    // SAFETY: set before any ALSA call and before this test starts any
    // thread of its own; no other test runs in this process.
    unsafe {
        std::env::set_var(
            "ALSA_CONFIG_PATH",
            format!("/usr/share/alsa/alsa.conf:{}", conf.display()),
        );
    }

    // A device that does not exist is an error naming it, not a fallback.
    let tracker = TaskTracker::new();
    let missing = start_alsa_audio(
        &AlsaSpec::new("testcap_missing", "testplay"),
        CancellationToken::new(),
        &tracker,
    );
    match missing {
        Err(AudioError::Alsa(e)) => {
            let text = e.to_string();
            assert!(text.contains("\"testcap_missing\""), "{text}");
            assert!(text.contains("capture"), "{text}");
        }
        other => panic!("expected an ALSA open error, got {other:?}"),
    }

    let mut spec = AlsaSpec::new("testcap", "testplay");
    spec.pacing = Pacing::Timer;
    // Off: the check below is sample-exact.
    spec.processing = ProcessingSettings::off();
    let cancel = CancellationToken::new();
    let (_idle, handle) =
        start_alsa_audio(&spec, cancel.clone(), &tracker).expect("file PCMs open");
    // Ringback while the residents are rung, before the call's media.
    handle.cue(ToneCue::Ringback);
    tokio::time::sleep(Duration::from_millis(400)).await;
    handle.cue(ToneCue::Silence);
    let mut ports = handle.try_attach().expect("audio thread takes a call");

    // Far end: 150 frames of tone handed to the speaker.
    let far = sine(150, FAR_HZ, 0.5);
    let feeder = {
        let playback = ports.playback.clone();
        let far = far.clone();
        tokio::spawn(async move {
            for chunk in far.chunks_exact(FRAME_SAMPLES) {
                let mut f = Box::new([0i16; FRAME_SAMPLES]);
                f.copy_from_slice(chunk);
                if playback.send(f).await.is_err() {
                    break;
                }
            }
        })
    };

    // Microphone: 150 frames, timed to check the pacing.
    let start = tokio::time::Instant::now();
    let mut captured = Vec::new();
    while captured.len() < 150 * FRAME_SAMPLES {
        let f = tokio::time::timeout(Duration::from_secs(2), ports.capture.recv())
            .await
            .expect("capture keeps flowing")
            .expect("capture port open");
        captured.extend_from_slice(&f[..]);
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1300),
        "timer pacing: 150 frames in {elapsed:?}"
    );
    feeder.await.expect("feeder ends");
    assert_eq!(
        dominant_frequency(&captured, SAMPLE_RATE, &CANDIDATES),
        Some(MIC_HZ)
    );
    // The file was captured sample-exact. The first frames went to the
    // ports handed out at start, so the call's frames begin later in the
    // file, on a frame boundary.
    let at = mic
        .windows(FRAME_SAMPLES)
        .position(|w| w == &captured[..FRAME_SAMPLES])
        .expect("captured audio comes from the file");
    assert_eq!(at % FRAME_SAMPLES, 0);
    assert_eq!(&captured[..], &mic[at..at + captured.len()]);

    // Let the last far-end frames play, then stop: closing the PCM flushes
    // the recording.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(handle.frames_played() >= 150);
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("audio thread stops");

    let played = read_raw(&outfile);
    let tone_start = played
        .iter()
        .position(|&s| s != 0)
        .expect("the speaker recording holds the ringback");
    assert_eq!(
        dominant_frequency(
            &played[tone_start..tone_start + 9600],
            SAMPLE_RATE,
            &CANDIDATES
        ),
        Some(425.0),
        "ringback mixed into the speaker"
    );
    let first = played
        .windows(FRAME_SAMPLES)
        .position(|w| w == &far[..FRAME_SAMPLES])
        .expect("the speaker recording holds the far end");
    assert!(first > tone_start);
    assert!(played.len() >= first + far.len());
    assert_eq!(
        &played[first..first + far.len()],
        &far[..],
        "far end recorded byte-exact"
    );
    assert_eq!(
        dominant_frequency(&played[first..first + far.len()], SAMPLE_RATE, &CANDIDATES),
        Some(FAR_HZ)
    );

    // The same path with the default capture processing on: the
    // microphone's tone still comes through the echo canceller, noise
    // suppressor and AGC.
    let mut spec = AlsaSpec::new("testcap", "testplay");
    spec.pacing = Pacing::Timer;
    // Exercised either way: granted, or refused with a warning and the
    // thread running on at normal priority.
    spec.realtime_priority = 10;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (mut ports, _handle) =
        start_alsa_audio(&spec, cancel.clone(), &tracker).expect("file PCMs open again");
    let mut processed = Vec::new();
    while processed.len() < 100 * FRAME_SAMPLES {
        let f = tokio::time::timeout(Duration::from_secs(2), ports.capture.recv())
            .await
            .expect("capture keeps flowing")
            .expect("capture port open");
        processed.extend_from_slice(&f[..]);
    }
    assert_eq!(
        dominant_frequency(&processed[50 * FRAME_SAMPLES..], SAMPLE_RATE, &CANDIDATES),
        Some(MIC_HZ)
    );
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("audio thread stops");

    station_runs_on_the_alsa_backend().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// The daemon wiring: `audio.backend = "alsa"` from configuration starts the
/// ALSA thread, whose figures reach the status snapshot.
async fn station_runs_on_the_alsa_backend() {
    let st = InProcessStation::start(
        "test.toml",
        r#"[hub]
listen = "127.0.0.1:0"
[hub.tls]
mode = "off"
[ice]
bind_ips = ["127.0.0.1"]
[audio]
backend = "alsa"
[audio.alsa]
capture_device = "testcap"
playback_device = "testplay"
pacing = "timer"
[hardware.sim]
control_listen = ""
stdin = false
"#,
    )
    .await;
    let status = st.running.status.clone();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let now = status.get().await.expect("station alive");
            if now.audio.played_frames >= 50 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the ALSA thread plays to the speaker");
    let audio = status.get().await.expect("station alive").audio;
    assert_eq!(audio.backend, "alsa");
    // Every task, the audio thread included, stops.
    st.shutdown_checked().await;
}
