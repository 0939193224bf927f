#!/bin/sh
# Builds BlueZ's controller emulator (btvirt) with SCO support for the
# Bluetooth checks in the VM, caches it and prints its path.
#
#   hw-tests/build-btvirt.sh
#
# Debian 12's btvirt (BlueZ 5.66) cannot carry SCO: its controllers report
# 0 SCO buffers, so the kernel refuses every SCO link (ECONNREFUSED, no HCI
# command sent); it never tells the remote controller about a synchronous
# link and drops SCO data packets. By default this script takes Debian's
# own bluez source package (`apt-get source bluez`, from a deb-src entry
# for the release's main archive that it adds when none is configured:
# /etc/apt/sources.list.d/intercomd-hw-deb-src.sources) and applies
# hw-tests/btvirt-sco.patch, which gives the emulated BR/EDR controllers
# SCO buffers, the Connection Request / Synchronous Connection Complete
# handshake on both controllers, SCO data forwarding and the teardown of
# SCO links. The binary is cached as
#   ${XDG_CACHE_HOME:-/var/cache}/intercomd-hw/btvirt-<hash>
# (hash of the patch and the source package version; INTERCOMD_HW_CACHE
# moves the cache).
#
# With INTERCOMD_HW_BLUEZ_SRC=/path/to/bluez (a BlueZ >= 5.86 tree, whose
# emulator carries SCO as it is) that tree is built unpatched instead and
# cached as …/btvirt-<version>.
#
# Only the emulator's sources are compiled, with gcc alone (no configure
# run: BlueZ's configure wants D-Bus, udev, ell and more development
# packages that btvirt does not use). Progress goes to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${INTERCOMD_HW_CACHE:-${XDG_CACHE_HOME:-/var/cache}/intercomd-hw}
patch_file=$here/btvirt-sco.patch

log() { echo "build-btvirt: $*" >&2; }

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo

# compile SRC OUT VERSION [glib]: btvirt from the BlueZ tree SRC into
# OUT. The emulator's files come from Makefile.tools
# (emulator_btvirt_SOURCES); the parts of lib/ and src/shared/ it links are
# the ones present in this release (lib/ moved to lib/bluetooth/ in 5.8x,
# whose emulator also links src/shared/ad.c and with it glib's headers:
# `glib` as the fourth argument).
compile() {
    src=$1 out=$2 version=$3 glib=${4:-}
    cd "$src"
    emu=$(sed -n '/^emulator_btvirt_SOURCES/,/[^\\]$/p' Makefile.tools |
        tr ' \t\\' '\n\n\n' | grep '\.c$')
    support=
    for f in lib/bluetooth.c lib/hci.c lib/uuid.c \
        lib/bluetooth/bluetooth.c lib/bluetooth/hci.c lib/bluetooth/uuid.c \
        src/shared/io-mainloop.c src/shared/timeout-mainloop.c \
        src/shared/mainloop.c src/shared/mainloop-notify.c \
        src/shared/queue.c src/shared/util.c src/shared/crypto.c \
        src/shared/ecc.c; do
        [ -f "$f" ] && support="$support $f"
    done
    glib_cflags= glib_libs=
    if [ -n "$glib" ]; then
        support="$support src/shared/ad.c"
        "$repo/scripts/apt-install-missing.sh" build-btvirt libglib2.0-dev pkg-config
        glib_cflags=$(pkg-config --cflags glib-2.0)
        glib_libs=$(pkg-config --libs glib-2.0)
    fi
    cfg=$(mktemp -d)
    printf '#define VERSION "%s"\n#define PACKAGE "bluez"\n' "$version" > "$cfg/config.h"
    mkdir -p "$(dirname "$out")"
    # shellcheck disable=SC2086
    nice -n 19 gcc -O2 -DHAVE_CONFIG_H -I"$cfg" -I. -Ilib -Ilib/bluetooth \
        $glib_cflags -o "$out.tmp" $emu $support $glib_libs
    rm -rf "$cfg"
    mv "$out.tmp" "$out"
}

# --- a BlueZ tree given by hand ------------------------------------------
if [ -n "${INTERCOMD_HW_BLUEZ_SRC:-}" ]; then
    src=$INTERCOMD_HW_BLUEZ_SRC
    [ -f "$src/emulator/btdev.c" ] || { log "$src is not a BlueZ source tree"; exit 1; }
    version=$(sed -n 's/^AC_INIT(bluez, \([0-9.]*\)).*/\1/p' "$src/configure.ac" 2>/dev/null | head -n1)
    [ -n "$version" ] || { log "no version in $src/configure.ac"; exit 1; }
    if ! grep -q 'case BT_H4_SCO_PKT' "$src/emulator/btdev.c"; then
        log "BlueZ $version's emulator does not forward SCO data; use 5.86 or later"
        exit 1
    fi
    out="$cache/btvirt-$version"
    if [ -x "$out" ]; then
        log "cached: $out"
        echo "$out"
        exit 0
    fi
    "$repo/scripts/apt-install-missing.sh" build-btvirt gcc libc6-dev
    compile "$src" "$out" "$version" glib
    log "built $out"
    echo "$out"
    exit 0
fi

# --- Debian's bluez source package with the SCO patch ---------------------
"$repo/scripts/apt-install-missing.sh" build-btvirt gcc libc6-dev dpkg-dev patch xz-utils

# The source version apt would fetch; without a deb-src entry (Debian's
# images ship deb lines only) add one for this release and read its index.
srcver() {
    apt-get source --print-uris -qq bluez 2>/dev/null |
        sed -n "s/^'[^']*' bluez_\([^ ]*\)\.dsc .*/\1/p" | head -n1
}
ver=$(srcver)
if [ -z "$ver" ]; then
    list=/etc/apt/sources.list.d/intercomd-hw-deb-src.sources
    codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
    [ -n "$codename" ] || { log "no VERSION_CODENAME in /etc/os-release"; exit 1; }
    if [ ! -f "$list" ]; then
        log "adding deb-src entries for $codename ($list)"
        $sudo tee "$list" > /dev/null <<EOF
# Source packages for hw-tests/build-btvirt.sh (bluez). Written by that
# script; remove it together with this file's lists if unwanted.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $codename-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    # Refresh this list alone; the machine's other lists are left as they are.
    log "reading the source index ($list)"
    $sudo apt-get update -qq -o Dir::Etc::sourcelist="$list" \
        -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 >&2
    ver=$(srcver)
    [ -n "$ver" ] || { log "apt finds no bluez source package"; exit 1; }
fi

hash=$( { cat "$patch_file"; echo "$ver"; } | sha256sum | cut -c1-16)
out="$cache/btvirt-$hash"
if [ -x "$out" ]; then
    log "cached: $out (bluez $ver + btvirt-sco.patch)"
    echo "$out"
    exit 0
fi

start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt downloads as _apt when it can write there (no "unsandboxed" warning).
[ -n "$sudo" ] || ! id _apt > /dev/null 2>&1 || chown _apt "$work"
log "fetching bluez $ver source"
(cd "$work" && apt-get source -qq "bluez=$ver" > /dev/null)
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'bluez-*' | head -n1)
[ -n "$src" ] || { log "apt-get source left no bluez-* tree"; exit 1; }
log "applying btvirt-sco.patch"
patch -d "$src" -p1 --batch --quiet < "$patch_file" >&2
compile "$src" "$out" "$ver+sco"
log "built $out in $(( $(date +%s) - start )) s"
echo "$out"
