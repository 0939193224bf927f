#!/bin/sh
# Builds BlueZ's controller emulator (btvirt) from a BlueZ source tree, for
# the Bluetooth checks that need SCO between two emulated controllers.
#
#   INTERCOMD_HW_BLUEZ_SRC=/path/to/bluez-5.86 hw-tests/build-btvirt.sh
#
# Debian 12's btvirt (BlueZ 5.66) cannot carry SCO: its controllers report
# 0 SCO buffers, so the kernel refuses every SCO link (ECONNREFUSED, no HCI
# command sent); it never tells the remote controller about a synchronous
# link and drops SCO data packets. BlueZ 5.74 gives the buffers, 5.80
# forwards SCO data, 5.86 runs the remote side's Connection Request flow:
# use a 5.86 or later tree. Only the emulator's sources are compiled (gcc
# and glib's headers; libglib2.0-dev is installed when missing). The binary
# is cached as ${XDG_CACHE_HOME:-/var/cache}/intercomd-hw/btvirt-<version>
# (INTERCOMD_HW_CACHE moves the cache) and its path printed.
set -eu

src=${INTERCOMD_HW_BLUEZ_SRC:?set INTERCOMD_HW_BLUEZ_SRC to a BlueZ (>= 5.86) source tree}
cache=${INTERCOMD_HW_CACHE:-${XDG_CACHE_HOME:-/var/cache}/intercomd-hw}

log() { echo "build-btvirt: $*" >&2; }

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

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
for p in gcc libglib2.0-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        $sudo apt-get install -y --no-install-recommends "$p" >&2
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '#define VERSION "%s"\n#define PACKAGE "bluez"\n' "$version" > "$work/config.h"
mkdir -p "$cache"
cd "$src"
# The sources of Makefile.tools' emulator_btvirt_SOURCES and the parts of
# lib/ and src/shared/ they use.
gcc -O2 -DHAVE_CONFIG_H -I"$work" -I. -Ilib -Ilib/bluetooth \
    $(pkg-config --cflags glib-2.0) -o "$out.tmp" \
    emulator/main.c emulator/serial.c emulator/server.c emulator/vhci.c \
    emulator/btdev.c emulator/bthost.c emulator/smp.c emulator/phy.c emulator/le.c \
    lib/bluetooth/bluetooth.c lib/bluetooth/hci.c lib/bluetooth/uuid.c \
    src/shared/io-mainloop.c src/shared/timeout-mainloop.c src/shared/mainloop.c \
    src/shared/mainloop-notify.c src/shared/queue.c src/shared/util.c \
    src/shared/crypto.c src/shared/ecc.c src/shared/ad.c \
    $(pkg-config --libs glib-2.0)
mv "$out.tmp" "$out"
log "built $out"
echo "$out"
