//! The mSBC codec of wide band Bluetooth voice (HFP 1.6+): BlueZ's SBC
//! library (`libsbc`, linked by `build.rs`) through its C API, in the
//! mSBC configuration its `sbc_init_msbc` sets: 16 kHz mono, 15 blocks,
//! 8 subbands, loudness allocation, bitpool 26. One frame is
//! [`FRAME_SAMPLES`] samples (7.5 ms) coded in [`FRAME_BYTES`] bytes.
//!
//! [`MsbcCodec`] codes one frame at a time; the HFP transport framing
//! around the frames is in [`super::msbc`].

use std::ffi::c_void;

/// PCM samples in one mSBC frame (7.5 ms at 16 kHz).
pub const FRAME_SAMPLES: usize = 120;
/// Bytes of one coded mSBC frame.
pub const FRAME_BYTES: usize = 57;
/// The first byte of every mSBC frame (plain SBC frames start with 0x9C).
pub const SYNCWORD: u8 = 0xAD;

mod ffi {
    use std::ffi::{c_int, c_ulong, c_void};

    /// `struct sbc_struct` of `<sbc/sbc.h>` (libsbc 1.x and 2.x).
    #[repr(C)]
    pub struct Sbc {
        pub flags: c_ulong,
        pub frequency: u8,
        pub blocks: u8,
        pub subbands: u8,
        pub mode: u8,
        pub allocation: u8,
        pub bitpool: u8,
        pub endian: u8,
        pub private: *mut c_void,
        pub private_alloc_base: *mut c_void,
    }

    pub const SBC_LE: u8 = 0x00;
    pub const SBC_BE: u8 = 0x01;

    unsafe extern "C" {
        pub fn sbc_init_msbc(sbc: *mut Sbc, flags: c_ulong) -> c_int;
        pub fn sbc_decode(
            sbc: *mut Sbc,
            input: *const c_void,
            input_len: usize,
            output: *mut c_void,
            output_len: usize,
            written: *mut usize,
        ) -> isize;
        pub fn sbc_encode(
            sbc: *mut Sbc,
            input: *const c_void,
            input_len: usize,
            output: *mut c_void,
            output_len: usize,
            written: *mut isize,
        ) -> isize;
        pub fn sbc_get_frame_length(sbc: *mut Sbc) -> usize;
        pub fn sbc_get_codesize(sbc: *mut Sbc) -> usize;
        pub fn sbc_finish(sbc: *mut Sbc);
    }
}

/// Why a frame could not be coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SbcError {
    #[error("libsbc could not set up an mSBC codec ({0})")]
    Init(i32),
    /// libsbc's negative return: -1 too short, -2 bad syncword, -3 CRC
    /// mismatch, -4 bad bitpool.
    #[error("libsbc refused the frame ({0})")]
    Frame(isize),
    #[error("libsbc coded {0} bytes where one whole frame was expected")]
    Length(usize),
}

/// One direction's mSBC encoder or decoder state (SBC keeps filter history
/// between frames: use one value per stream and direction).
pub struct MsbcCodec {
    /// Boxed so the C library's handle never moves.
    sbc: Box<ffi::Sbc>,
}

// SAFETY: the handle and the library state it points to are owned by this
// value alone and used only through `&mut self`; libsbc keeps no
// thread-local or global state, so the value may move between threads.
unsafe impl Send for MsbcCodec {}

impl MsbcCodec {
    /// A codec in libsbc's mSBC configuration, samples in host byte order.
    pub fn new() -> Result<MsbcCodec, SbcError> {
        let mut sbc = Box::new(ffi::Sbc {
            flags: 0,
            frequency: 0,
            blocks: 0,
            subbands: 0,
            mode: 0,
            allocation: 0,
            bitpool: 0,
            endian: 0,
            private: std::ptr::null_mut(),
            private_alloc_base: std::ptr::null_mut(),
        });
        // SAFETY: sbc points to a writable, zeroed sbc_struct; the library
        // allocates its private state, freed by sbc_finish in Drop (and not
        // allocated when init fails).
        let r = unsafe { ffi::sbc_init_msbc(&mut *sbc, 0) };
        if r < 0 {
            return Err(SbcError::Init(r));
        }
        sbc.endian = if cfg!(target_endian = "big") {
            ffi::SBC_BE
        } else {
            ffi::SBC_LE
        };
        let mut codec = MsbcCodec { sbc };
        // SAFETY: an initialised handle.
        let (frame, code) = unsafe {
            (
                ffi::sbc_get_frame_length(&mut *codec.sbc),
                ffi::sbc_get_codesize(&mut *codec.sbc),
            )
        };
        if frame != FRAME_BYTES || code != FRAME_SAMPLES * 2 {
            return Err(SbcError::Length(frame));
        }
        Ok(codec)
    }

    /// Codes one frame of 16 kHz samples into `out`.
    pub fn encode(
        &mut self,
        pcm: &[i16; FRAME_SAMPLES],
        out: &mut [u8; FRAME_BYTES],
    ) -> Result<(), SbcError> {
        let mut written: isize = 0;
        // SAFETY: pcm is readable for its FRAME_SAMPLES * 2 bytes, out
        // writable for FRAME_BYTES; the handle is initialised.
        let r = unsafe {
            ffi::sbc_encode(
                &mut *self.sbc,
                pcm.as_ptr().cast::<c_void>(),
                FRAME_SAMPLES * 2,
                out.as_mut_ptr().cast::<c_void>(),
                FRAME_BYTES,
                &mut written,
            )
        };
        if r < 0 {
            return Err(SbcError::Frame(r));
        }
        if r as usize != FRAME_SAMPLES * 2 || written as usize != FRAME_BYTES {
            return Err(SbcError::Length(written.max(0) as usize));
        }
        Ok(())
    }

    /// Decodes one coded frame into 16 kHz samples. A frame whose header
    /// or CRC is wrong is refused ([`SbcError::Frame`]).
    pub fn decode(
        &mut self,
        frame: &[u8; FRAME_BYTES],
        pcm: &mut [i16; FRAME_SAMPLES],
    ) -> Result<(), SbcError> {
        let mut written: usize = 0;
        // SAFETY: frame is readable for FRAME_BYTES, pcm writable for its
        // FRAME_SAMPLES * 2 bytes; the handle is initialised.
        let r = unsafe {
            ffi::sbc_decode(
                &mut *self.sbc,
                frame.as_ptr().cast::<c_void>(),
                FRAME_BYTES,
                pcm.as_mut_ptr().cast::<c_void>(),
                FRAME_SAMPLES * 2,
                &mut written,
            )
        };
        if r < 0 {
            return Err(SbcError::Frame(r));
        }
        if written != FRAME_SAMPLES * 2 {
            return Err(SbcError::Length(written));
        }
        Ok(())
    }
}

impl Drop for MsbcCodec {
    fn drop(&mut self) {
        // SAFETY: the handle was initialised by sbc_init_msbc and is
        // finished once.
        unsafe { ffi::sbc_finish(&mut *self.sbc) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_codes_msbc_frames_of_57_bytes_from_120_samples() {
        let mut enc = MsbcCodec::new().expect("libsbc mSBC");
        let mut dec = MsbcCodec::new().expect("libsbc mSBC");
        let mut pcm = [0i16; FRAME_SAMPLES];
        crate::audio::fill_sine(&mut pcm, 1_000.0, 0.5, 16_000, 0.0);
        let mut frame = [0u8; FRAME_BYTES];
        enc.encode(&pcm, &mut frame).expect("encode");
        assert_eq!(frame[0], SYNCWORD);
        // mSBC's two reserved header bytes are zero.
        assert_eq!(&frame[1..3], &[0, 0]);
        let mut out = [0i16; FRAME_SAMPLES];
        dec.decode(&frame, &mut out).expect("decode");
        // A wrong syncword and a wrong CRC are refused.
        let mut bad = frame;
        bad[0] = 0x9C;
        assert!(matches!(
            dec.decode(&bad, &mut out),
            Err(SbcError::Frame(_))
        ));
        let mut bad = frame;
        bad[3] ^= 0xFF;
        assert!(matches!(
            dec.decode(&bad, &mut out),
            Err(SbcError::Frame(_))
        ));
    }
}
