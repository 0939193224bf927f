# intercomd — the two commands are `make demo` and `make test`.
SHELL := /bin/sh
CARGO ?= cargo
BIN := target/debug/intercomd

.PHONY: all setup build demo test test-unit test-fault test-web test-e2e test-fuzz fuzz soak check-dist check-yocto lint-yocto lint bench bench-audio bench-audio-instructions arm64 clean hw-test

all: build

setup:
	@./scripts/setup.sh

build: setup
	$(CARGO) build --locked

# The standalone door station with simulated hardware, its hub and the
# answering page. Options go through ARGS, e.g.
# make demo ARGS="--listen 0.0.0.0:9443 --http 127.0.0.1:9080"
ARGS ?=
demo: build
	$(BIN) demo $(ARGS)

# No function in src/ longer than 100 lines (scripts/fn-length.py lists
# the ones that are).
lint: setup
	python3 scripts/fn-length.py
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --all-targets --features fault-injection -- -D warnings
	cd fuzz && $(CARGO) fmt --check

test-unit: setup
	$(CARGO) test --locked

# The answering page's call state machine (web/call.js), without a browser.
test-web: setup
	node --test web/*.test.mjs

test-e2e: build
	cd tests/socketio && INTERCOMD_BIN=$(CURDIR)/$(BIN) node --test --test-concurrency=1 --test-timeout=180000
	cd tests/e2e && INTERCOMD_BIN=$(CURDIR)/$(BIN) node --test --test-concurrency=1 --test-timeout=300000 *.test.mjs

# The watchdog test with a wedged controller: needs the test-only
# `fault-injection` feature (never in a shipped build).
test-fault: setup
	$(CARGO) test --locked --features fault-injection --test it -- systemd_notify::

# The systemd unit, sysusers, tmpfiles, catalog and udev rule in dist/,
# checked with systemd's own tools (verify, security exposure <= 2.0).
check-dist: build
	tests/dist/check.sh $(BIN)

# The Yocto layer: the crate list matches Cargo.lock.
check-yocto:
	yocto/scripts/gen-crates-inc.py --check

# The Yocto layer through oelint-adv (PyPI: pip install oelint-adv).
lint-yocto: check-yocto
	cd yocto/meta-intercom && oelint-adv --quiet --exit-zero $$(find . -name '*.bb' -o -name '*.bbappend' -o -name '*.inc' -o -name '*.conf') | tee /dev/stderr | { ! grep -q ':error:'; }

# Coverage-guided fuzzing of the parsers of peer and operator input
# (fuzz/, docs/testing.md "Fuzzing"): cargo-fuzz on the stable toolchain,
# FUZZ_SECONDS per target. `make test` runs each for FUZZ_SMOKE_SECONDS.
FUZZ_SECONDS ?= 180
FUZZ_SMOKE_SECONDS ?= 4
# The fuzz crate's clippy runs here, not in `make lint`: it checks every
# dependency again in fuzz/target (minutes), for a few hundred lines.
fuzz: setup
	cd fuzz && $(CARGO) clippy --locked --all-targets -- -D warnings
	scripts/fuzz.sh $(FUZZ_SECONDS)

test-fuzz: setup
	scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

# 1,000 calls back to back through the built-in hub, the daemon's memory,
# descriptors, threads and tasks sampled (tests/it/soak.rs; BENCHMARKS.md
# "Soak"). SOAK_CALLS and SOAK_EVERY change the count and the sampling.
soak: build
	$(CARGO) test --locked --test it -- --ignored --nocapture soak::

test: lint test-unit test-fault test-fuzz check-dist check-yocto test-web test-e2e hw-test

# The GPIO, ALSA and Bluetooth code paths against kernel drivers (gpio-sim,
# snd-aloop, hci_vhci) inside a qemu VM under TCG, with hw_rig as the
# resident and the sound around the door, and hfp-hf as the headset;
# installs what it needs and builds and caches the VM's kernel on first use.
# Release builds: the checks time LED patterns, the relay pulse and audio on
# an emulated CPU, where a debug build of the daemon falls behind. See
# hw-tests/README.md.
hw-test: setup
	$(CARGO) build --locked --release --bin intercomd --example hw_rig --example hfp-hf
	INTERCOMD_BIN=$(CURDIR)/target/release/intercomd \
	HW_RIG_BIN=$(CURDIR)/target/release/examples/hw_rig \
	hw-tests/run-vm.sh

bench: setup bench-audio
	$(CARGO) build --locked --release
	cd tests/e2e && INTERCOMD_BIN=$(CURDIR)/target/release/intercomd node bench_call_setup.mjs
	cd tests/e2e && INTERCOMD_BIN=$(CURDIR)/target/release/intercomd node bench_https.mjs
	cd tests/e2e && INTERCOMD_BIN=$(CURDIR)/target/release/intercomd node bench_push_notify.mjs
	cd tests/e2e && INTERCOMD_BIN=$(CURDIR)/target/release/intercomd node bench_push.mjs --calls 20

# Capture processing against the aec3 and speexdsp references: ERLE,
# double talk, CPU;
# then the whole call chain: CPU, latency, loss and jitter.
bench-audio: setup
	$(CARGO) run --locked --release --example audio_bench

# ARM64 (aarch64-unknown-linux-gnu) release build with Debian packages only:
# Debian's Rust 1.96 (rustc-web; called by path, since rustup's cargo comes
# first in PATH), the aarch64 GNU cross-toolchain, and qemu-user to run the
# result. Its own target directory keeps it apart from the host builds.
ARM64_TRIPLE := aarch64-unknown-linux-gnu
ARM64_DIR := target/arm64
ARM64_BIN := $(ARM64_DIR)/$(ARM64_TRIPLE)/release/intercomd
# Fat LTO in one codegen unit: 8.2 MB instead of 10.1 MB stripped (see
# BENCHMARKS.md); the host release profile keeps thin LTO for build speed.
ARM64_ENV := RUSTC=/usr/bin/rustc \
	CARGO_TARGET_DIR=$(ARM64_DIR) \
	CARGO_PROFILE_RELEASE_LTO=fat \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
	CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
	AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
	PKG_CONFIG_ALLOW_CROSS=1 \
	PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig

arm64:
	@./scripts/setup-arm64.sh
	env $(ARM64_ENV) /usr/bin/cargo build --locked --release --target $(ARM64_TRIPLE)
	file $(ARM64_BIN) | grep -q 'ARM aarch64'
	@echo "arm64: $(ARM64_BIN): $$(stat -c %s $(ARM64_BIN)) bytes"
	# Plain qemu-aarch64-static: -L or QEMU_LD_PREFIX hang threaded programs.
	qemu-aarch64-static $(ARM64_BIN) --version
	qemu-aarch64-static $(ARM64_BIN) config check --config config/boards/raspberrypi4-64.toml

# Instructions per second of call audio for the whole chain (repeatable,
# unlike CPU time): 10 s under callgrind, minus preparing the input.
bench-audio-instructions: setup
	$(CARGO) build --locked --release --example audio_bench
	valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/audio_bench --chain 2>&1 | sed -n 's/.*Collected : *//p' > target/chain.ir
	valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/audio_bench --chain-input 2>&1 | sed -n 's/.*Collected : *//p' > target/chain-input.ir
	@echo "whole call chain: $$(( ($$(cat target/chain.ir) - $$(cat target/chain-input.ir)) / 10 )) instructions per second of call audio"

clean:
	$(CARGO) clean
