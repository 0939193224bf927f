#!/bin/sh
# Install what `make arm64` needs on Debian 12, once: Debian's Rust 1.96
# (rustc-web) with the aarch64 standard library, the aarch64 GNU
# cross-toolchain, arm64 -dev packages for pkg-config, and qemu-user to run
# the result. Idempotent: packages already present are not touched.
# Note: installing the :arm64 packages may upgrade a few host libraries
# (their amd64 and arm64 versions must match).
set -eu

PKGS="rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static libasound2-dev:arm64 libdbus-1-dev:arm64 libsbc-dev:arm64 file"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "setup-arm64: adding the arm64 architecture"
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
missing=$(echo "$missing" | xargs)
if [ -n "$missing" ]; then
    echo "setup-arm64: installing $missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
