//! The call, door, route, station and hub logic reads no clock and draws no random
//! numbers: time and randomness are inputs its shells give it, which is
//! what lets the unit tests run it in synthetic time. This reads the
//! modules' source (their own test modules excluded) and fails on a clock
//! or random read.

use std::path::Path;

/// The modules that hold the logic, relative to the crate root.
const PURE: &[&str] = &[
    "src/call/mod.rs",
    "src/call/machine.rs",
    "src/door/mod.rs",
    "src/door/machine.rs",
    "src/door/indication.rs",
    "src/station/mod.rs",
    "src/station/audit.rs",
    "src/station/status.rs",
    "src/sansio.rs",
    "src/bt/route.rs",
    "src/hub/state.rs",
    "src/hub/guard.rs",
    "src/hub/quiet.rs",
    "src/limits.rs",
];

/// What a clock or random read looks like in this code base.
const FORBIDDEN: &[&str] = &[
    "Instant::now(",
    "SystemTime::now(",
    "now_utc(",
    "now_local(",
    "rand::",
    "thread_rng(",
    "getrandom",
    "OsRng",
];

/// The source without its unit-test module (the tests make up a start
/// time with `Instant::now()`, which is theirs to do).
fn logic_of(text: &str) -> &str {
    text.find("\n#[cfg(test)]\nmod ")
        .or_else(|| text.find("\n#[cfg(test)]\n#[path"))
        .map_or(text, |at| &text[..at])
}

/// Lines of `text` (1-based) that contain a forbidden read, comments
/// skipped.
fn reads(text: &str) -> Vec<(usize, String)> {
    logic_of(text)
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| FORBIDDEN.iter().any(|f| l.contains(f)))
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .collect()
}

#[test]
fn call_door_route_and_hub_logic_read_no_clock_and_no_randomness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for file in PURE {
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e} (update the list in tests/pure_logic.rs)"));
        for (line, code) in reads(&text) {
            found.push(format!("{file}:{line}: {code}"));
        }
    }
    assert!(
        found.is_empty(),
        "clock or random reads in pure logic (take the value as an input instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_a_read_and_skips_comments_and_tests() {
    let text = "fn a() {\n    let t = Instant::now();\n}\n// Instant::now() in a comment\n\n#[cfg(test)]\nmod tests {\n    fn b() { let _ = rand::random::<u8>(); }\n}\n";
    assert_eq!(reads(text), vec![(2, "let t = Instant::now();".to_owned())]);
    assert!(reads("fn f(now: Instant) {}\n").is_empty());
}
