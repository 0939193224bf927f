#!/bin/sh
# Builds the kernel for the hardware test VM from Debian's linux-source-6.1:
# tinyconfig plus hw-tests/kernel.config (gpio-sim, snd-aloop, hci_vhci,
# virtio 9p, devtmpfs, configfs), everything built in, with the source
# patches hw-tests/kernel-*.patch applied (fixes the rig needs that Debian's
# 6.1 does not carry). The image is cached outside the repository and reused:
#   ${XDG_CACHE_HOME:-/var/cache}/intercomd-hw/bzImage-<hash>
# where <hash> covers kernel.config, the patches and the source package
# version.
# Prints the image's path on stdout; progress goes to stderr. The source
# and object trees are removed after a successful build unless
# INTERCOMD_HW_KEEP_TREE=1.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${INTERCOMD_HW_CACHE:-${XDG_CACHE_HOME:-/var/cache}/intercomd-hw}
fragment="$here/kernel.config"
jobs=${JOBS:-$(nproc)}

log() { echo "build-kernel: $*" >&2; }

# Build dependencies, installed only when missing.
pkgs="linux-source-6.1 patch bc bison flex libelf-dev libssl-dev cpio busybox-static qemu-system-x86 kmod make gcc binutils"
"$here/../scripts/apt-install-missing.sh" build-kernel $pkgs

srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
hash=$( { cat "$fragment" "$here"/kernel-*.patch; echo "$srcver"; } | sha256sum | cut -c1-16)
image="$cache/bzImage-$hash"
if [ -s "$image" ]; then
    log "cached: $image"
    echo "$image"
    exit 0
fi

mkdir -p "$cache"
src="$cache/linux-source-6.1"
# The marker names the patched tree: other patches mean a fresh extract.
if [ ! -f "$src/.prepared-$hash" ]; then
    log "extracting linux-source-6.1 $srcver"
    rm -rf "$src"
    mkdir -p "$src"
    tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$src" --strip-components=1
    for p in "$here"/kernel-*.patch; do
        log "applying $(basename "$p")"
        patch -s -p1 -d "$src" < "$p"
    done
    touch "$src/.prepared-$hash"
fi

build="$cache/build-$hash"
mkdir -p "$build"
start=$(date +%s)
log "configuring in $build"
nice -n 19 make -s -C "$src" O="$build" ARCH=x86_64 tinyconfig >&2
cat "$fragment" >> "$build/.config"
nice -n 19 make -s -C "$src" O="$build" ARCH=x86_64 olddefconfig >&2

# Every option asked for must have survived olddefconfig (a missing
# dependency silently drops it).
bad=0
grep '^CONFIG_' "$fragment" | while IFS= read -r opt; do
    grep -qx "$opt" "$build/.config" || { log "option not set: $opt"; echo x; }
done | grep -q x && bad=1
[ "$bad" -eq 0 ] || { log "kernel config incomplete"; exit 1; }

log "building bzImage with $jobs jobs (nice 19)"
nice -n 19 make -s -C "$src" O="$build" ARCH=x86_64 -j"$jobs" bzImage >&2
cp "$build/arch/x86/boot/bzImage" "$image.tmp"
mv "$image.tmp" "$image"
log "built $image in $(( $(date +%s) - start )) s"
# The source and object trees take 1.6 GB and serve no other image: drop
# them unless asked to keep them (INTERCOMD_HW_KEEP_TREE=1).
if [ "${INTERCOMD_HW_KEEP_TREE:-0}" != 1 ]; then
    rm -rf "$build" "$src"
fi
echo "$image"
