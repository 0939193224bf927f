# A door call carried by a wide-band (mSBC) Bluetooth headset. As in
# call-headset.test.sh: intercomd runs with the hil-vm board on gpio-sim,
# ALSA on snd-aloop, its own hub and Bluetooth on hci0 of btvirt; hci1 is
# the headset, paired through the daemon's pairing window. Here
# `hfp-hf --headset --msbc` offers CVSD and mSBC (AT+BAC=1,2), answers the
# gateway's +BCS, listens with a transparent voice setting and codes mSBC
# itself (intercomd's H2 framing and libsbc). `hw_rig answer` is the
# resident (speaks 1000 Hz).
#
# Checks: the gateway agrees mSBC and opens a transparent eSCO link
# (btmon: Enhanced Setup Synchronous Connection on hci0, Accept
# Synchronous Connection Request with setting 0x0063 on hci1, link type
# eSCO and air mode Transparent in both controllers' Synchronous Connect
# Complete); the
# daemon's bridge runs at 16 kHz; the headset hears the resident's
# 1000 Hz (decoded mSBC) and the resident hears the headset's 5000 Hz, a
# tone CVSD's 8 kHz sampling cannot carry; hang-up ends the call.
. /guest/lib.sh

T=${HW_WAIT:-60}
HS_HZ=5000
LOOP_PLAY=hw:CARD=Loopback,DEV=0,SUBDEV=0     # harness → daemon capture
LOOP_REC=hw:CARD=Loopback,DEV=1,SUBDEV=1      # daemon playback → harness
log=/tmp/intercomd-wb.log
res=/tmp/resident-wb.log
hsl=/tmp/hfp-wb.log
trace=/tmp/btmon-wb.snoop
pid= duplex= resident= hf= btmon=

cleanup() {
    for p in $hf $resident $duplex $pid $btmon; do
        kill "$p" 2>/dev/null
    done
    for p in $hf $resident $duplex $pid $btmon; do
        wait "$p" 2>/dev/null
    done
    bt_down
    remove_chip wb
    echo "--- headset"
    cat "$hsl" 2>/dev/null
    echo "--- resident"
    cat "$res" 2>/dev/null
    echo "--- daemon log"
    cat "$log" 2>/dev/null
}
trap cleanup EXIT

if ! command -v hfp-hf > /dev/null; then
    fail "mSBC headset call" "no hfp-hf in the VM (cargo build --example hfp-hf)"
    exit 0
fi
if ! bt_up > /tmp/bt-up.log; then
    fail "Bluetooth up for the mSBC headset call" "$(cat /tmp/bt-up.log)"
    exit 0
fi
ag=$bt_ag
hs=$bt_hs
if ! make_chip wb; then
    fail "gpio-sim chip for the mSBC headset call" "configfs refused it"
    exit 0
fi

(umask 077; echo "rig-flat-1-token-7d41c2e9a05b38f6" > /tmp/flat-1.token)
cat > /tmp/wb.toml <<'CONF'
[station]
control_socket = "/run/intercomd/control.sock"

[hub]
listen = "127.0.0.1:8080"
[hub.tls]
mode = "off"

[[hub.answerers]]
id = "flat-1"
name = "Flat 1"
token_file = "/tmp/flat-1.token"
groups = ["residents"]

[call]
connect_timeout_ms = 60000

[ice]
bind_ips = ["127.0.0.1"]
offer_dtls_client = false

[gpio]
debounce_ms = 50

[audio]
backend = "alsa"
echo_cancellation = false
auto_gain_control = false
high_pass_filter = false
noise_suppression = false

[audio.opus]
complexity = 0

[audio.alsa]
capture_device = "hw:CARD=Loopback,DEV=1,SUBDEV=0"
playback_device = "hw:CARD=Loopback,DEV=0,SUBDEV=1"
mixer_device = "hw:CARD=Loopback"

[bluetooth]
enabled = true
adapter = "hci0"
pairing_timeout_ms = 60000
prefer_msbc = true
CONF
mkdir -p /run/intercomd

RUST_LOG=info intercomd run \
    --config /etc/intercomd/hil-vm.toml --config /tmp/wb.toml > "$log" 2>&1 &
pid=$!
if wait_for "$log" "intercomd ready" "$T" && wait_for "$log" "bluetooth ready; pairing closed" "$T"; then
    pass "daemon ready for the mSBC headset call"
else
    fail "daemon ready for the mSBC headset call" "$(tail -n 3 "$log")"
    exit 0
fi

rm -f /tmp/wb-duplex.stop
hw_rig duplex --play "$LOOP_PLAY" --record "$LOOP_REC" --played /tmp/wb-played.raw \
    --recorded /tmp/wb-recorded.raw --stop-file /tmp/wb-duplex.stop --seconds 240 > /tmp/wb-duplex.log 2>&1 &
duplex=$!
mkfifo /tmp/resident-wb.in
hw_rig answer --hub ws://127.0.0.1:8080/ws --token-file /tmp/flat-1.token \
    < /tmp/resident-wb.in > "$res" 2>&1 &
resident=$!
exec 4> /tmp/resident-wb.in
say() { echo "$1" >&4; }
# listen [max Hz]: the resident's next `heard` line, empty after 10 s.
listen() {
    n=$(grep -c '^heard' "$res")
    say "listen $1"
    i=0
    while [ "$(grep -c '^heard' "$res")" -le "$n" ] && [ "$i" -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ "$(grep -c '^heard' "$res")" -gt "$n" ] && grep '^heard' "$res" | tail -n 1
}
wait_for "$res" "^ready id=flat-1" "$T" || echo "resident not ready: $(tail -n 3 "$res")"

btmgmt --index 1 power on > /dev/null
btmgmt --index 1 bondable on > /dev/null
btmgmt --index 1 io-cap 3 > /dev/null
# The headset's controller answers synchronous links with a transparent
# voice setting, as a wide-band headset's host sets it.
hciconfig hci1 voice 0x0063 2> /dev/null || echo "hciconfig hci1 voice 0x0063 refused"
intercomd bt pair --config /etc/intercomd/hil-vm.toml --config /tmp/wb.toml > /dev/null 2>&1
out=$(timeout 30 btmgmt --index 1 pair -c 3 -t 0 "$ag" 2>&1)
if echo "$out" | grep -q "Paired with" && wait_for "$log" "bluetooth device trusted.*device=$hs" 20; then
    pass "mSBC headset paired and trusted"
else
    fail "mSBC headset paired and trusted" "$out"
fi

hfp-hf --headset --msbc "$hs" "$ag" "$HS_HZ" /tmp/wb.stop > "$hsl" 2>&1 &
hf=$!
if wait_for "$hsl" "^SLC established" "$T" && grep -q "^> AT+BAC=1,2" "$hsl" &&
    wait_for "$log" "bluetooth hands-free service level connection established.*device=$hs" 10; then
    pass "mSBC headset establishes the SLC offering CVSD and mSBC (AT+BAC=1,2)"
else
    fail "mSBC headset establishes the SLC offering CVSD and mSBC" "$(tail -n 3 "$hsl")"
fi

# btmon records the HCI traffic (btsnoop, not decoded while the call runs)
# until the link is up; it is decoded afterwards.
btmon -w "$trace" > /dev/null 2>&1 &
btmon=$!
sleep 0.5

echo pull-down > "$call/pull"
sleep 0.3
echo pull-up > "$call/pull"
wait_for "$res" "^ring " "$T" || echo "no ring at the resident"
say accept
if wait_for "$res" "^established" "$T" && wait_for "$log" "call audio route: headset.*codec=mSBC" "$T" &&
    wait_for "$hsl" "^SCO accepted from $ag .*codec mSBC" 10 &&
    wait_for "$log" "bluetooth SCO audio connected.*codec=mSBC rate=16000" 5; then
    pass "the gateway agrees mSBC (+BCS: 2, AT+BCS=2) and the call moves to the headset at 16 kHz ($(grep -m1 'SCO audio connected' "$log" | sed 's/.*connected//'))"
else
    fail "the gateway agrees mSBC and the call moves to the headset at 16 kHz" "$(grep 'BCS\|SCO\|route\|established' "$log" "$hsl" "$res" | tail -n 6)"
fi
sleep 1
kill "$btmon" 2>/dev/null
wait "$btmon" 2>/dev/null
btmon=
btmon -r "$trace" > /tmp/btmon-wb.txt 2>&1
cp /tmp/btmon-wb.txt /share/results/call-headset-msbc.btmon.txt 2>/dev/null
esco=$(grep -c "Enhanced Setup Synchronous Connection" /tmp/btmon-wb.txt)
transp=$(grep -c "Air mode: Transparent" /tmp/btmon-wb.txt)
if [ "$esco" -ge 1 ] && [ "$transp" -ge 2 ] && grep -q "Link type: eSCO" /tmp/btmon-wb.txt &&
    grep -q "Air Coding Format: Transparent Data" /tmp/btmon-wb.txt; then
    pass "the link is eSCO with air mode Transparent on both controllers, accepted with voice setting 0x0063 (btmon)"
else
    fail "the link is eSCO with air mode Transparent on both controllers" "enhanced setup=$esco transparent=$transp $(grep -m1 'Air Coding Format' /tmp/btmon-wb.txt)"
fi
echo "btmon: enhanced setup $(grep -A12 'HCI Command: Enhanced Setup Sync' /tmp/btmon-wb.txt | grep 'Max latency\|Packet type\|Retransmission effort' | head -n 3 | tr -s ' ' | tr '\n' ';')"

# The headset hears the resident's 1000 Hz: 1 s worth of decoded 16 kHz
# PCM (32000 bytes) in seconds whose dominant frequency is 1000 Hz.
tone_bytes() {
    t=0
    for b in $(grep '^heard' "$hsl" | while read -r _ b h; do
        near_hz "${h#hz=}" 1000 && echo "${b#bytes=}"
    done); do
        t=$((t + b))
    done
    echo "$t"
}
i=0
while [ "$(tone_bytes)" -lt 32000 ] && [ "$i" -lt 15 ]; do
    sleep 1
    i=$((i + 1))
done
got=$(tone_bytes)
secs=$(grep -c '^heard' "$hsl")
if [ "$got" -ge 32000 ]; then
    pass "headset hears the resident's 1000 Hz over mSBC ($got bytes of 16 kHz PCM near 1000 Hz in $secs s)"
else
    fail "headset hears the resident's 1000 Hz over mSBC" "$got bytes; $(grep '^heard' "$hsl" | tr '\n' ' ')"
fi
# The headset's 5000 Hz: above CVSD's 4 kHz band edge, so only a
# wide-band link brings it to the resident.
r=$(listen 6000)
if near_hz "$(field "$r" hz)" "$HS_HZ"; then
    pass "resident hears the headset's $HS_HZ Hz, wide band ($r)"
else
    fail "resident hears the headset's $HS_HZ Hz, wide band" "${r:-no answer to listen}"
fi

touch /tmp/wb.stop
wait_for "$hsl" "^mSBC received" 10 && echo "headset: $(grep '^mSBC received' "$hsl")"
say hangup
if wait_for "$log" "call ended" "$T"; then
    pass "hang-up ends the mSBC headset call"
else
    fail "hang-up ends the mSBC headset call" "no 'call ended' in the log"
fi
echo "daemon: $(grep 'SCO audio ended\|call audio route\|SCO connect failed\|SCO not opened\|msbc\|mSBC' "$log" | tail -n 6)"
if grep -q "panicked" "$log"; then
    fail "no panic in the daemon" "$(grep -m1 panicked "$log")"
fi
say quit
exec 4>&-
stop_daemon "$pid" "daemon (mSBC headset call)"
pid=
touch /tmp/wb-duplex.stop
i=0
while kill -0 "$duplex" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
