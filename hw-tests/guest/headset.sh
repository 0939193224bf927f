# What the two headset call tests (call-headset, call-headset-msbc) share:
# intercomd with the hil-vm board on gpio-sim, ALSA on snd-aloop, its own
# hub and Bluetooth on hci0 of btvirt; hci1 is the headset, paired through
# the daemon's pairing window; `hw_rig answer` is the resident and
# `hw_rig duplex` the sound around the door. Sourced after lib.sh.

T=${HW_WAIT:-60}
pid= duplex= resident= hf= btmon=

headset_cleanup() {
    for p in $hf $resident $duplex $pid $btmon; do
        kill "$p" 2>/dev/null
    done
    # The next test opens the same loopback PCMs: let these close first.
    for p in $hf $resident $duplex $pid $btmon; do
        wait "$p" 2>/dev/null
    done
    bt_down
    remove_chip "$tag"
    echo "--- headset"
    cat "$hsl" 2>/dev/null
    echo "--- resident"
    cat "$res" 2>/dev/null
    echo "--- daemon log"
    cat "$log" 2>/dev/null
}

# headset_setup TAG NAME READY BLUETOOTH_TOML: Bluetooth, the chip, the
# daemon (READY names its check; BLUETOOTH_TOML ends its [bluetooth]
# table), the room and the resident,
# then the headset paired and trusted (HS_VOICE, when set, is hci1's voice
# setting, as the headset's host sets it; NAME names the headset in the
# checks). Sets tag, log, hsl, conf, ag, hs. Exits the test (after its FAIL line) when what follows cannot run.
headset_setup() {
    tag=$1 hs_name=$2 what="$2 call"
    log=/tmp/intercomd-$tag.log hsl=/tmp/hfp-$tag.log conf=/tmp/$tag.toml
    trap headset_cleanup EXIT
    if ! command -v hfp-hf > /dev/null; then
        fail "$what" "no hfp-hf in the VM (cargo build --example hfp-hf)"
        exit 0
    fi
    if ! bt_up > /tmp/bt-up.log; then
        fail "Bluetooth up for the $what" "$(cat /tmp/bt-up.log)"
        exit 0
    fi
    ag=$bt_ag
    hs=$bt_hs
    if ! make_chip "$tag"; then
        fail "gpio-sim chip for the $what" "configfs refused it"
        exit 0
    fi
    {
        printf '[station]\ncontrol_socket = "/run/intercomd/control.sock"\n\n'
        station_toml
        printf '\n[bluetooth]\nenabled = true\nadapter = "hci0"\npairing_timeout_ms = 60000\n%s\n' "$4"
    } > "$conf"
    mkdir -p /run/intercomd
    RUST_LOG=info intercomd run \
        --config /etc/intercomd/hil-vm.toml --config "$conf" > "$log" 2>&1 &
    pid=$!
    if wait_for "$log" "intercomd ready" "$T" && wait_for "$log" "bluetooth ready; pairing closed" "$T"; then
        pass "$3"
    else
        fail "$3" "$(tail -n 3 "$log")"
        exit 0
    fi
    start_duplex "$tag" 240
    start_resident "$tag"
    wait_for "$res" "^ready id=flat-1" "$T" || echo "resident not ready: $(tail -n 3 "$res")"

    # The headset pairs through a pairing window.
    btmgmt --index 1 power on > /dev/null
    btmgmt --index 1 bondable on > /dev/null
    btmgmt --index 1 io-cap 3 > /dev/null
    if [ -n "${HS_VOICE:-}" ]; then
        hciconfig hci1 voice "$HS_VOICE" 2> /dev/null || echo "hciconfig hci1 voice $HS_VOICE refused"
    fi
    intercomd bt pair --config /etc/intercomd/hil-vm.toml --config "$conf" > /dev/null 2>&1
    out=$(timeout 30 btmgmt --index 1 pair -c 3 -t 0 "$ag" 2>&1)
    if echo "$out" | grep -q "Paired with" && wait_for "$log" "bluetooth device trusted.*device=$hs" 20; then
        pass "$hs_name paired and trusted"
    else
        fail "$hs_name paired and trusted" "$out"
    fi
}

# press_call: the call button pressed and released; true once the
# resident's phone rings.
press_call() {
    echo pull-down > "$call/pull"
    sleep 0.3
    echo pull-up > "$call/pull"
    wait_for "$res" "^ring " "$T" || { echo "no ring at the resident"; return 1; }
}

# tone_bytes HZ: bytes the headset received in the seconds whose dominant
# frequency is near HZ (it prints what it received each second).
tone_bytes() {
    t=0
    for b in $(grep '^heard' "$hsl" | while read -r _ b h; do
        near_hz "${h#hz=}" "$1" && echo "${b#bytes=}"
    done); do
        t=$((t + b))
    done
    echo "$t"
}

# headset_hears HZ BYTES: true once the headset has received BYTES in
# seconds near HZ (waits up to 15 s). Under TCG the resident's audio
# reaches the station with gaps of a second or two when the host is busy,
# and the bridge has nothing to send then.
headset_hears() {
    i=0
    while [ "$(tone_bytes "$1")" -lt "$2" ] && [ "$i" -lt 15 ]; do
        sleep 1
        i=$((i + 1))
    done
    [ "$(tone_bytes "$1")" -ge "$2" ]
}

# headset_end WHAT: no panic, the resident gone, the daemon stopped on
# SIGTERM, the room stopped.
headset_end() {
    if grep -q "panicked" "$log"; then
        fail "no panic in the daemon" "$(grep -m1 panicked "$log")"
    fi
    say quit
    exec 4>&-
    stop_daemon "$pid" "daemon ($1)"
    pid=
    stop_duplex
    duplex=
}
