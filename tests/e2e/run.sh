#!/bin/sh
# Runs the end-to-end suite: network namespaces, the daemon, headless Chromium.
# Needs root, iproute2, /usr/bin/chromium and a built intercomd
# (target/debug/intercomd, or INTERCOMD_BIN). Extra arguments go to node --test
# (for example a single file: ./run.sh first_call.test.mjs).
set -eu
cd "$(dirname "$0")"
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/ws ]; then
  npm ci --no-audit --no-fund
fi
if [ "$#" -eq 0 ]; then
  set -- plumbing.test.mjs first_call.test.mjs ring_group.test.mjs signaling_drop.test.mjs bad_input.test.mjs door_open.test.mjs alsa_call.test.mjs nat_paths.test.mjs nat_outage.test.mjs nat_dscp.test.mjs nat_impaired.test.mjs nat_dtls_loss.test.mjs
fi
exec node --test --test-concurrency=1 --test-timeout=600000 "$@"
