#!/bin/sh
# Boots the hardware test VM and runs the guest tests in it.
#
#   hw-tests/run-vm.sh [BZIMAGE]
#
# BZIMAGE defaults to the one hw-tests/build-kernel.sh builds (or finds in
# its cache). The initramfs holds static busybox, the host-built
# target/debug/intercomd with its shared libraries, the hil-vm board file and
# hw-tests/guest/. qemu runs under TCG with no network device; hw-tests/ is
# shared over virtio-9p and the guest writes its logs and the summary line
# (`N passed, N failed`) to hw-tests/results/. Exits non-zero when a check
# failed, the summary is missing or the VM timed out (HW_TEST_TIMEOUT, s).
# HW_TESTS="name ..." runs only those guest tests (guest/<name>.test.sh).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bin=${INTERCOMD_BIN:-$repo/target/debug/intercomd}
rig=${HW_RIG_BIN:-$repo/target/debug/examples/hw_rig}
timeout_s=${HW_TEST_TIMEOUT:-300}

log() { echo "run-vm: $*" >&2; }

image=${1:-$("$here/build-kernel.sh")}
[ -x "$bin" ] || { log "no $bin; run cargo build first"; exit 1; }
[ -x "$rig" ] || { log "no $rig; run cargo build --example hw_rig first"; exit 1; }
for tool in qemu-system-x86_64 cpio gzip strip; do
    command -v "$tool" >/dev/null || { log "$tool missing (hw-tests/build-kernel.sh installs it)"; exit 1; }
done
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && ldd "$busybox" 2>&1 | grep -q 'not a dynamic executable' ||
    { log "no static busybox (install busybox-static)"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/etc/intercomd" \
    "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/run" "$root/guest"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
# Without debug information (a quarter of the size: a smaller initramfs
# boots faster); symbols stay for backtraces.
strip --strip-debug -o "$root/usr/bin/intercomd" "$bin"
# The binary's shared libraries and loader, at the paths ldd reports.
ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' |
    while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
# The far side of the station (resident, sound around the door): hw_rig
# and whatever libraries it needs beyond the daemon's.
strip --strip-debug -o "$root/usr/bin/hw_rig" "$rig"
ldd "$rig" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' |
    while read -r lib; do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
# alsa-lib's configuration (it resolves hw:CARD,DEV names through it).
if [ -d /usr/share/alsa ]; then
    mkdir -p "$root/usr/share"
    cp -r /usr/share/alsa "$root/usr/share/alsa"
    rm -rf "$root/usr/share/alsa/ucm" "$root/usr/share/alsa/ucm2"
fi
# --- Bluetooth (guest/bt*.test.sh) -------------------------------------
# BlueZ's bluetoothd, the controller emulator btvirt, btmgmt, btmon,
# hcitool, l2ping and hciconfig (Debian's bluez and bluez-test-tools), dbus-daemon for the system bus,
# each with the libraries ldd lists, BlueZ's D-Bus policy, and the
# headset-side tool (`cargo build --example hfp-hf`) when built. Installed
# with apt when missing. btvirt is the one hw-tests/build-btvirt.sh builds
# (Debian's bluez source with btvirt-sco.patch, or the BlueZ tree named by
# INTERCOMD_HW_BLUEZ_SRC), whose controllers carry SCO; Debian's packaged
# btvirt cannot. INTERCOMD_HW_BTVIRT names a btvirt binary to use instead.
"$repo/scripts/apt-install-missing.sh" run-vm bluez bluez-test-tools dbus-daemon
hfp_hf=$(dirname "$bin")/examples/hfp-hf
btvirt=${INTERCOMD_HW_BTVIRT:-$("$here/build-btvirt.sh")}
bt_progs="/usr/libexec/bluetooth/bluetoothd $btvirt /usr/bin/btmgmt /usr/bin/btmon /usr/bin/dbus-daemon /usr/bin/hcitool /usr/bin/l2ping /bin/hciconfig"
[ -x "$hfp_hf" ] && bt_progs="$bt_progs $hfp_hf"
for prog in $bt_progs; do
    mkdir -p "$root$(dirname "$prog")"
    cp "$prog" "$root$prog"
    ldd "$prog" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' |
        while read -r lib; do
            [ -e "$root$lib" ] && continue
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
done
[ "$btvirt" = /usr/bin/btvirt ] || mv "$root$btvirt" "$root/usr/bin/btvirt"
if [ -x "$hfp_hf" ]; then
    mv "$root$hfp_hf" "$root/usr/bin/hfp-hf"
    strip --strip-debug "$root/usr/bin/hfp-hf"
fi
# With these the unpacked initramfs no longer fits the VM's 512 MB beside
# a debug intercomd (240 MB, 200 MB of it DWARF): drop the copy's debug
# sections (symbols stay, so backtraces keep their function names).
strip --strip-debug "$root/usr/bin/intercomd"
mkdir -p "$root/etc/dbus-1/system.d"
cp /etc/dbus-1/system.d/bluetooth.conf "$root/etc/dbus-1/system.d/"
# --- end of Bluetooth ----------------------------------------------------
cp "$repo/config/boards/hil-vm.toml" "$root/etc/intercomd/hil-vm.toml"
cp "$here"/guest/* "$root/guest/"
mv "$root/guest/init" "$root/init"
chmod +x "$root/init"
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

results=$here/results
mkdir -p "$results"
rm -f "$results/summary"

log "booting $image (TCG, timeout ${timeout_s} s)"
start=$(date +%s)
rc=0
timeout "$timeout_s" qemu-system-x86_64 \
    -accel tcg -cpu max -smp 2 -m 512 \
    -nographic -no-reboot -nic none \
    -kernel "$image" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet${HW_TESTS:+ hw_tests=$(echo "$HW_TESTS" | tr ' ' ,)}" \
    -virtfs "local,path=$here,mount_tag=hw,security_model=none,id=hw" ||
    rc=$?
log "VM ran $(( $(date +%s) - start )) s (qemu exit $rc)"

if [ "$rc" -eq 124 ]; then
    log "timed out after ${timeout_s} s"
    exit 1
fi
if [ ! -s "$results/summary" ]; then
    log "no summary written (see the console output above)"
    exit 1
fi
summary=$(cat "$results/summary")
echo "$summary"
case "$summary" in
    *" 0 failed") exit 0 ;;
    *) exit 1 ;;
esac
