# A door call carried by a Bluetooth headset. intercomd runs with the
# hil-vm board on gpio-sim, ALSA on snd-aloop, its own hub and Bluetooth on
# hci0 of btvirt (with SCO); hci1 is the headset: paired through the
# daemon's pairing window, then `hfp-hf --headset` runs the Hands-Free SLC,
# listens for SCO and plays 500 Hz into the link once the gateway opens it.
# `hw_rig answer` is the resident (speaks 1000 Hz), `hw_rig duplex` plays a
# keyed 700 Hz tone into the station's capture PCM and records its
# playback PCM.
#
# Checks: the headset pairs and establishes the SLC; the answered call
# moves to the headset's SCO link; the headset hears the resident's
# 1000 Hz and the resident the headset's 500 Hz (by content, both ways);
# the station's speaker is silent meanwhile; the headset closing its link
# mid-call gives the call back to the speaker within 500 ms (the resident's
# tone starting again in the playback PCM's recording, measured from the
# moment the headset is told to close), the call goes on and the resident
# hears the station's microphone (700 Hz) again.
. /guest/lib.sh

T=${HW_WAIT:-60}
LOOP_PLAY=hw:CARD=Loopback,DEV=0,SUBDEV=0     # harness → daemon capture
LOOP_REC=hw:CARD=Loopback,DEV=1,SUBDEV=1      # daemon playback → harness
played=/tmp/hs-played.raw
recorded=/tmp/hs-recorded.raw
log=/tmp/intercomd-hs.log
res=/tmp/resident-hs.log
hsl=/tmp/hfp-hs.log
pid= duplex= resident= hf=

cleanup() {
    for p in $hf $resident $duplex $pid; do
        kill "$p" 2>/dev/null
    done
    # The next test opens the same loopback PCMs: let these close first.
    for p in $hf $resident $duplex $pid; do
        wait "$p" 2>/dev/null
    done
    bt_down
    remove_chip hs
    echo "--- headset"
    cat "$hsl" 2>/dev/null
    echo "--- resident"
    cat "$res" 2>/dev/null
    echo "--- daemon log"
    cat "$log" 2>/dev/null
}
trap cleanup EXIT

if ! command -v hfp-hf > /dev/null; then
    fail "headset call" "no hfp-hf in the VM (cargo build --example hfp-hf)"
    exit 0
fi
if ! bt_up > /tmp/bt-up.log; then
    fail "Bluetooth up for the headset call" "$(cat /tmp/bt-up.log)"
    exit 0
fi
ag=$bt_ag
hs=$bt_hs
if ! make_chip hs; then
    fail "gpio-sim chip for the headset call" "configfs refused it"
    exit 0
fi

(umask 077; echo "rig-flat-1-token-7d41c2e9a05b38f6" > /tmp/flat-1.token)
cat > /tmp/hs.toml <<'CONF'
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
CONF
mkdir -p /run/intercomd

RUST_LOG=info intercomd run \
    --config /etc/intercomd/hil-vm.toml --config /tmp/hs.toml > "$log" 2>&1 &
pid=$!
if wait_for "$log" "intercomd ready" "$T" && wait_for "$log" "bluetooth ready; pairing closed" "$T"; then
    pass "daemon ready with GPIO, ALSA, its hub and Bluetooth"
else
    fail "daemon ready with GPIO, ALSA, its hub and Bluetooth" "$(tail -n 3 "$log")"
    exit 0
fi

# The sound around the door and the resident, as in call.test.sh.
rm -f /tmp/hs-duplex.stop
hw_rig duplex --play "$LOOP_PLAY" --record "$LOOP_REC" --played "$played" \
    --recorded "$recorded" --stop-file /tmp/hs-duplex.stop --seconds 240 > /tmp/hs-duplex.log 2>&1 &
duplex=$!
mkfifo /tmp/resident-hs.in
hw_rig answer --hub ws://127.0.0.1:8080/ws --token-file /tmp/flat-1.token \
    < /tmp/resident-hs.in > "$res" 2>&1 &
resident=$!
exec 4> /tmp/resident-hs.in
say() { echo "$1" >&4; }
# listen: the resident's next `heard` line (what it received in the last
# second), empty after 10 s without one.
listen() {
    n=$(grep -c '^heard' "$res")
    say listen
    i=0
    while [ "$(grep -c '^heard' "$res")" -le "$n" ] && [ "$i" -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ "$(grep -c '^heard' "$res")" -gt "$n" ] && grep '^heard' "$res" | tail -n 1
}
wait_for "$res" "^ready id=flat-1" "$T" || echo "resident not ready: $(tail -n 3 "$res")"

# The headset pairs through a pairing window.
btmgmt --index 1 power on > /dev/null
btmgmt --index 1 bondable on > /dev/null
btmgmt --index 1 io-cap 3 > /dev/null
intercomd bt pair --config /etc/intercomd/hil-vm.toml --config /tmp/hs.toml > /dev/null 2>&1
out=$(timeout 30 btmgmt --index 1 pair -c 3 -t 0 "$ag" 2>&1)
if echo "$out" | grep -q "Paired with" && wait_for "$log" "bluetooth device trusted.*device=$hs" 20; then
    pass "headset paired and trusted"
else
    fail "headset paired and trusted" "$out"
fi

hfp-hf --headset "$hs" "$ag" 500 /tmp/hs.stop > "$hsl" 2>&1 &
hf=$!
if wait_for "$hsl" "^SLC established" "$T" &&
    wait_for "$log" "bluetooth hands-free service level connection established.*device=$hs" 10; then
    pass "headset establishes the Hands-Free SLC"
else
    fail "headset establishes the Hands-Free SLC" "$(tail -n 3 "$hsl")"
fi

echo pull-down > "$call/pull"
sleep 0.3
echo pull-up > "$call/pull"
wait_for "$res" "^ring " "$T" || echo "no ring at the resident"
say accept
if wait_for "$res" "^established" "$T" && wait_for "$log" "call audio route: headset" "$T" &&
    wait_for "$hsl" "^SCO accepted from $ag" 10; then
    pass "the answered call moves to the headset's SCO link ($(grep -m1 'SCO audio connected' "$log" | sed 's/.*connected//'))"
else
    fail "the answered call moves to the headset's SCO link" "$(grep 'SCO\|route\|established' "$log" "$res" | tail -n 4)"
fi

# Both ways by content. The headset prints what it received each second.
# Under TCG the resident's audio reaches the station with gaps of a second
# or two when the host is busy, and the bridge has nothing to send then:
# the check waits up to 15 s for 1 s worth (16000 bytes) of seconds whose
# dominant frequency is the resident's tone.
# tone_bytes: bytes received in the headset's seconds near 1000 Hz.
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
while [ "$(tone_bytes)" -lt 16000 ] && [ "$i" -lt 15 ]; do
    sleep 1
    i=$((i + 1))
done
got=$(tone_bytes)
secs=$(grep -c '^heard' "$hsl")
if [ "$got" -ge 16000 ]; then
    pass "headset hears the resident's 1000 Hz over SCO ($got bytes near 1000 Hz in $secs s)"
else
    fail "headset hears the resident's 1000 Hz over SCO" "$got bytes; $(grep '^heard' "$hsl" | tr '\n' ' ')"
fi
r=$(listen)
if near_hz "$(field "$r" hz)" 500; then
    pass "resident hears the headset's 500 Hz ($r)"
else
    fail "resident hears the headset's 500 Hz" "${r:-no answer to listen}"
fi
end=$(stat -c %s "$recorded")
s=$(hw_rig tone --file "$recorded" --from $((end - 48000)) --to "$end")
if [ "$(field "$s" hz)" = none ] || awk "BEGIN { exit !($(field "$s" level_db) < -50) }"; then
    pass "the speaker is silent while the headset has the call ($s)"
else
    fail "the speaker is silent while the headset has the call" "$s"
fi

# The headset leaves mid-call: the speaker must carry the resident again
# within 500 ms of the headset being told to close its link.
from=$(stat -c %s "$recorded")
touch /tmp/hs.stop
if wait_for "$hsl" "^SCO closed" 10 && wait_for "$log" "call audio route: speaker" 10; then
    sleep 2
    o=$(hw_rig onset --file "$recorded" --from "$from" --hz 1000)
    if in_range "$(field "$o" onset_ms)" 0 500; then
        pass "the speaker takes the call back within 500 ms ($o)"
    else
        fail "the speaker takes the call back within 500 ms" "$o"
    fi
else
    fail "the speaker takes the call back within 500 ms" "$(grep 'SCO\|route\|speaker' "$log" | tail -n 3)"
fi
sleep 1
r=$(listen)
if ! grep -q "call ended" "$log" && near_hz "$(field "$r" hz)" 700; then
    pass "the call goes on: the resident hears the station's microphone again ($r)"
else
    fail "the call goes on: the resident hears the station's microphone again" "$r $(grep -m1 'call ended' "$log")"
fi
echo "daemon: $(grep 'headset audio ended\|SCO audio ended\|call audio route\|SCO connect failed\|SCO not opened' "$log" | tail -n 5)"

say hangup
if wait_for "$log" "call ended" "$T"; then
    pass "hang-up after the headset left ends the call"
else
    fail "hang-up after the headset left ends the call" "no 'call ended' in the log"
fi
if grep -q "panicked" "$log"; then
    fail "no panic in the daemon" "$(grep -m1 panicked "$log")"
fi
say quit
exec 4>&-
stop_daemon "$pid" "daemon (headset call)"
pid=
touch /tmp/hs-duplex.stop
i=0
while kill -0 "$duplex" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
