# intercomd — the two commands are `make demo` and `make test`.
SHELL := /bin/sh
CARGO ?= cargo
BIN := target/debug/intercomd

.PHONY: all setup build demo test test-unit test-e2e lint bench bench-audio clean

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

# Capture processing against the aec3 reference: ERLE, double talk, CPU.
bench-audio: setup
	$(CARGO) run --locked --release --example audio_bench

clean:
	$(CARGO) clean
