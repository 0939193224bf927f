#!/bin/sh
# Checks the systemd integration files in dist/ with systemd's own tools:
#   unit      systemd-analyze verify, and security exposure <= 2.0 (offline)
#   sysusers  systemd-sysusers into a scratch root
#   tmpfiles  systemd-tmpfiles --create into that root
#   catalog   journalctl --update-catalog / --list-catalog in a scratch root
#   udev      udevadm verify, when this systemd has it (>= 254)
# Usage: tests/dist/check.sh [path/to/intercomd]
# The binary is only used so `verify` finds an executable ExecStart=.
set -eu
cd "$(dirname "$0")/../.."
BIN=$(readlink -f "${1:-target/debug/intercomd}")
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
[ -x "$BIN" ] || { echo "check-dist: $BIN not built" >&2; exit 1; }
for t in systemd-analyze systemd-sysusers systemd-tmpfiles journalctl; do
    command -v "$t" >/dev/null || { echo "check-dist: $t missing (Debian package systemd)" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# The unit names /usr/bin/intercomd (its path on the device). Point a copy
# at the built binary so verify can check that ExecStart= is executable.
sed "s#^ExecStart=/usr/bin/intercomd#ExecStart=$BIN#" dist/intercomd.service > "$tmp/intercomd.service"
grep -q "^ExecStart=$BIN " "$tmp/intercomd.service" || { echo "check-dist: ExecStart= not found" >&2; exit 1; }
if out=$(systemd-analyze verify "$tmp/intercomd.service" 2>&1) && [ -z "$out" ]; then
    echo "ok   unit: systemd-analyze verify"
else
    echo "FAIL unit: systemd-analyze verify"; echo "$out"; fail=1
fi

exposure=$(systemd-analyze security --offline=yes "$tmp/intercomd.service" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for intercomd.service: \([0-9.]*\).*/\1/p')
if [ -n "$exposure" ] && awk "BEGIN{exit !($exposure <= $MAX_EXPOSURE)}"; then
    echo "ok   unit: systemd-analyze security --offline: exposure $exposure (limit $MAX_EXPOSURE)"
else
    echo "FAIL unit: exposure '${exposure:-unknown}' above $MAX_EXPOSURE"
    systemd-analyze security --offline=yes "$tmp/intercomd.service" | grep '✗' || true
    fail=1
fi

root="$tmp/root"
mkdir -p "$root/etc"
in_groups() {
    for g in gpio audio bluetooth; do
        grep -q "^$g:x:[0-9]*:.*intercomd" "$root/etc/group" || return 1
    done
}
# Absolute paths: with --root, relative ones are taken inside the root.
if systemd-sysusers --root="$root" "$PWD/dist/intercomd.sysusers" >/dev/null 2>&1 \
    && grep -q '^intercomd:' "$root/etc/passwd" && in_groups; then
    echo "ok   sysusers: user intercomd in groups gpio, audio, bluetooth"
else
    echo "FAIL sysusers"; cat "$root/etc/passwd" "$root/etc/group" 2>/dev/null; fail=1
fi

if systemd-tmpfiles --root="$root" --create "$PWD/dist/intercomd.tmpfiles" \
    && [ -d "$root/etc/intercomd/config.d" ] && [ -d "$root/etc/intercomd/secrets" ] && [ -d "$root/etc/credstore" ]; then
    echo "ok   tmpfiles: directories created"
else
    echo "FAIL tmpfiles"; fail=1
fi

mkdir -p "$root/usr/lib/systemd/catalog"
cp dist/intercomd.catalog "$root/usr/lib/systemd/catalog/"
if journalctl --root="$root" --update-catalog 2>"$tmp/cat.err" && [ ! -s "$tmp/cat.err" ]; then
    n=$(journalctl --root="$root" --list-catalog | grep -c 'intercomd:' || true)
    want=$(grep -c '^-- [0-9a-f]\{32\}$' dist/intercomd.catalog)
    if [ "$n" -eq "$want" ] && [ "$n" -gt 0 ]; then
        echo "ok   catalog: $n entries"
    else
        echo "FAIL catalog: $n entries listed, $want in the file"; fail=1
    fi
else
    echo "FAIL catalog"; cat "$tmp/cat.err"; fail=1
fi

if udevadm verify --help >/dev/null 2>&1; then
    if udevadm verify "$PWD/dist/60-intercomd-gpio.rules" >/dev/null; then
        echo "ok   udev: udevadm verify"
    else
        echo "FAIL udev: udevadm verify"; fail=1
    fi
else
    echo "skip udev: this udevadm has no 'verify' (systemd < 254)"
fi

exit $fail
