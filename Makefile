# intercomd — the two commands are `make demo` and `make test`.
SHELL := /bin/sh
CARGO ?= cargo
BIN := target/debug/intercomd

.PHONY: all setup build demo test test-unit test-e2e lint bench bench-audio bench-audio-instructions clean

all: build

setup:
	@./scripts/setup.sh

build: setup
	$(CARGO) build --locked

# The standalone door station with simulated hardware, its hub and the
# answering page.
demo: build
	$(BIN) demo

lint: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test-unit: setup
	$(CARGO) test --locked

test-e2e: build
	cd tests/socketio && INTERCOMD_BIN=$(CURDIR)/$(BIN) node --test --test-timeout=120000
	cd tests/e2e && INTERCOMD_BIN=$(CURDIR)/$(BIN) node --test --test-concurrency=1 --test-timeout=300000 *.test.mjs

test: lint test-unit test-e2e

bench: setup bench-audio
	$(CARGO) build --locked --release
	cd tests/e2e && INTERCOMD_BIN=$(CURDIR)/target/release/intercomd node bench_call_setup.mjs

# Capture processing against the aec3 reference: ERLE, double talk, CPU;
# then the whole call chain: CPU, latency, loss and jitter.
bench-audio: setup
	$(CARGO) run --locked --release --example audio_bench

# Instructions per second of call audio for the whole chain (repeatable,
# unlike CPU time): 10 s under callgrind, minus preparing the input.
bench-audio-instructions: setup
	$(CARGO) build --locked --release --example audio_bench
	valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/audio_bench --chain 2>&1 | sed -n 's/.*Collected : *//p' > target/chain.ir
	valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/audio_bench --chain-input 2>&1 | sed -n 's/.*Collected : *//p' > target/chain-input.ir
	@echo "whole call chain: $$(( ($$(cat target/chain.ir) - $$(cat target/chain-input.ir)) / 10 )) instructions per second of call audio"

clean:
	$(CARGO) clean
