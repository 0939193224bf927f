//! The mSBC receiver on any bytes a SCO link delivers, in reads of any
//! size: never a panic, and every packet it takes yields exactly one frame
//! of samples, decoded or concealed, as its statistics count them.
//!
//! Input: the first byte sets the read size (1..=256 bytes).
#![no_main]

use intercomd::bt::msbc::MsbcReceiver;
use libfuzzer_sys::fuzz_target;

/// Samples of one mSBC frame (7.5 ms at 16 kHz).
const FRAME_SAMPLES: u64 = 120;

fuzz_target!(|data: &[u8]| {
    let Some((&size, stream)) = data.split_first() else {
        return;
    };
    let mut rx = MsbcReceiver::new().expect("libsbc opens an mSBC codec");
    let mut out = Vec::new();
    for read in stream.chunks(usize::from(size) + 1) {
        rx.push(read, &mut out);
    }
    let stats = rx.stats();
    assert_eq!(
        out.len() as u64,
        FRAME_SAMPLES * (stats.frames + stats.concealed()),
        "{stats:?}"
    );
    assert!(stats.skipped_bytes <= stream.len() as u64, "{stats:?}");
});
