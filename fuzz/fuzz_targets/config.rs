//! The configuration loader on any TOML text (a fragment after the
//! built-in defaults): never a panic; a refusal names where it is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A fragment is read as UTF-8; other bytes are refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match intercomd::config::load_from_strs(&[("fuzz.toml", text)]) {
        Ok(settings) => {
            let _ = format!("{settings:?}");
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
        }
    }
});
