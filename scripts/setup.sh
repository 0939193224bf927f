#!/bin/sh
# Install what building and testing intercomd needs on Debian 12, once.
# Idempotent: packages already present are not touched.
set -eu

PKGS="build-essential cmake pkg-config libasound2-dev libdbus-1-dev libsbc-dev libspeexdsp-dev iproute2 iptables nftables chromium nodejs npm curl ca-certificates coturn openssl systemd python3 python3-venv pebble libnss3-tools"

# A node from elsewhere (nodesource, nvm) is fine too.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    PKGS=$(echo "$PKGS" | tr ' ' '\n' | grep -v -x -e nodejs -e npm | tr '\n' ' ')
fi
"$(dirname "$0")/apt-install-missing.sh" setup $PKGS

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install a Rust toolchain (rustup or Debian's rustc-web cargo-web)" >&2
    exit 1
fi
for c in rustfmt clippy; do
    if ! cargo $( [ "$c" = rustfmt ] && echo fmt || echo clippy ) --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 && rustup component add "$c"
    fi
done

# The fuzz targets of fuzz/ (make fuzz, make test-fuzz): cargo-fuzz from
# crates.io, pinned; it builds libFuzzer with the C++ compiler of
# build-essential and runs on the stable toolchain (no sanitizer).
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "setup: cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# The end-to-end harness: playwright-core only (it drives Debian's
# Chromium; no browser is ever downloaded).
if [ ! -d tests/e2e/node_modules/playwright-core ] || [ tests/e2e/package-lock.json -nt tests/e2e/node_modules/.package-lock.json ]; then
    echo "setup: npm ci in tests/e2e"
    (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

# A real socket.io server and its browser client, for the Socket.IO tests
# (the whole-call test also uses the harness of tests/e2e).
if [ ! -d tests/socketio/node_modules/socket.io ] || [ ! -d tests/socketio/node_modules/socket.io-client ] || [ tests/socketio/package-lock.json -nt tests/socketio/node_modules/.package-lock.json ]; then
    echo "setup: npm ci in tests/socketio"
    (cd tests/socketio && npm ci --no-audit --no-fund --loglevel=error)
fi

# The test push service of tests/it/web_push.rs: Python's http_ece and
# py_vapid (PyPI only, not in Debian 12), pinned, in their own venv.
PUSH_VENV=tests/push/.venv
PUSH_PKGS="http-ece==1.2.1 py-vapid==1.9.6 cryptography==51.0.1"
if [ "$(cat "$PUSH_VENV/.pinned" 2>/dev/null)" != "$PUSH_PKGS" ] || ! "$PUSH_VENV/bin/python" -c 'import http_ece, py_vapid' >/dev/null 2>&1; then
    echo "setup: Python venv for the push service in $PUSH_VENV"
    python3 -m venv "$PUSH_VENV"
    "$PUSH_VENV/bin/pip" install --quiet --disable-pip-version-check $PUSH_PKGS
    echo "$PUSH_PKGS" > "$PUSH_VENV/.pinned"
fi
