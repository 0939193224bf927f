#!/bin/sh
# Builds the fuzz targets of fuzz/ with cargo-fuzz on the stable toolchain
# and runs each for SECONDS (libFuzzer's -max_total_time), starting from
# its committed seeds (fuzz/seeds/<target>) and the corpus kept from
# earlier runs (fuzz/corpus/<target>, not committed).
#   scripts/fuzz.sh SECONDS [TARGET...]
# Prints one summary line per target (executions, exec/s, corpus entries)
# and fails on the first target that finds a crash, a timeout or an
# out-of-memory input; the input is left in fuzz/artifacts/<target>/.
# `cargo fuzz run <target> fuzz/artifacts/<target>/crash-…` reproduces it
# (with the flags below).
set -eu
cd "$(dirname "$0")/../fuzz"

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=$*

# No sanitizer: cargo-fuzz then passes only stable code generation flags
# (SanitizerCoverage through -Cpasses and -Cllvm-args), so no nightly is
# needed. Rust code is memory safe without ASan; the C inside (libsbc,
# Opus) is what ASan would add, and it is fuzzed only through libsbc here.
FLAGS="--sanitizer none --release --debug-assertions"

# Without names: every target, built in one cargo run.
if [ -z "$targets" ]; then
    cargo fuzz build $FLAGS
    targets=$(cargo fuzz list)
else
    for t in $targets; do cargo fuzz build $FLAGS "$t"; done
fi

summary=
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log=target/fuzz-$t.log
    mkdir -p target
    start=$(date +%s)
    # -timeout: one input taking over 10 s is a finding (a hang);
    # -rss_limit_mb: so is one needing over 2 GiB.
    if ! cargo fuzz run $FLAGS "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $t failed; input in fuzz/artifacts/$t/, log in fuzz/$log" >&2
        exit 1
    fi
    secs=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    # libFuzzer's last status line: coverage (edges) and the corpus in
    # memory (seeds and kept inputs, after its own reduction).
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    corpus=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
    line=$(printf '%-14s %5ss %12s execs %7s exec/s cov %6s corpus %s' "$t" "$secs" "$execs" "$rate" "$cov" "$corpus")
    echo "fuzz: $line"
    summary="$summary$line
"
done
printf '\nfuzz summary (%s s per target):\n%s' "$seconds" "$summary"
