# A whole call through the real backends. intercomd runs as the daemon
# with the gpiocdev backend on a gpio-sim chip (the lines of
# config/boards/hil-vm.toml), the ALSA backend on snd-aloop and its own hub
# on loopback. `hw_rig duplex` is the sound around the door: it plays a
# keyed 700 Hz tone into the loopback cable the daemon captures from and
# records the one it plays to. `hw_rig answer` is the resident: it answers
# over the hub with WebRTC on 127.0.0.1 (the VM has no other interface) and
# speaks 1000 Hz, takes commands on a FIFO. The test presses the call
# button with a bouncing edge sequence and follows the call through the
# LED and relay lines (read from gpio-sim's `value`), the audio content both
# ways, a door opening from the resident, an echo for the round-trip
# latency, and the hang-up.
. /guest/lib.sh

T=${HW_WAIT:-60}
log=/tmp/intercomd-call.log
rm -f /share/results/call-played.raw /share/results/call-recorded.raw /share/results/latency-window

if make_chip call; then
    pass "gpio-sim chip created"
else
    fail "gpio-sim chip created" "configfs refused it"
    exit 0
fi
if ! grep -q '^Loopback' /proc/asound/card*/id 2>/dev/null; then
    fail "snd-aloop card present" "no Loopback card in /proc/asound"
    remove_chip call
    exit 0
fi

# On top of the board file: what every call test shares (lib.sh), an LED
# pattern for each state that tells the states apart, a short door pulse.
{
    station_toml
    cat <<'CONF'

[door]
pulse_ms = 1500

[[leds]]
name = "status"
line = "HIL_LED_STATUS"
idle = "off"
ringing = "slow_blink"
in_call = "on"
door_open = "fast_blink"
CONF
} > /tmp/call.toml

RUST_LOG=info,intercomd::hw=debug intercomd run \
    --config /etc/intercomd/hil-vm.toml --config /tmp/call.toml > "$log" 2>&1 &
pid=$!
if wait_for "$log" "intercomd ready" "$T" && wait_for "$log" "Socket connected" "$T"; then
    pass "daemon ready with GPIO, ALSA and its hub"
else
    fail "daemon ready with GPIO, ALSA and its hub" "no 'intercomd ready' and 'Socket connected' in the log"
fi

echo "CPUs: $(grep -c ^processor /proc/cpuinfo)"
# What the emulated CPUs are busy with, every 5 s, for the log: under TCG
# a slow call is a busy CPU.
( i=0; while [ "$i" -lt 40 ] && [ ! -e /tmp/call-duplex.stop ]; do
    echo "== $(cut -d' ' -f1 /proc/uptime) s"; top -b -n1 | sed -n '2p;5,9p'
    sleep 5; i=$((i + 1)); done ) > /tmp/load.log 2>&1 &
start_duplex call 240
start_resident call

if wait_for "$res" "^ready id=flat-1" "$T"; then
    pass "resident connected to the station's hub"
else
    fail "resident connected to the station's hub" "$(tail -n3 "$res")"
fi

# Idle: LED off (the idle pattern here), relay de-energised.
w=$(hw_rig watch --file "$led/value" --ms 1000)
if [ "$(field "$w" transitions)" = 0 ] && [ "$(field "$w" last)" = 0 ]; then
    pass "LED shows idle (off)"
else
    fail "LED shows idle (off)" "$w"
fi

# A bouncing press: four fast toggles, then held down, then released.
t0=$(cut -d' ' -f1 /proc/uptime)
echo pull-down > "$call/pull"
echo pull-up > "$call/pull"
echo pull-down > "$call/pull"
echo pull-up > "$call/pull"
echo pull-down > "$call/pull"
t1=$(cut -d' ' -f1 /proc/uptime)
echo "bounce: 5 writes from ${t0} s to ${t1} s uptime"
sleep 0.3
echo pull-up > "$call/pull"
if wait_for "$res" "^ring " "$T"; then
    pass "call button press rings the resident"
else
    fail "call button press rings the resident" "no ring at the resident"
fi

# Ringing: the LED blinks slowly (500 ms half period), the relay stays off.
w=$(hw_rig watch --file "$led/value" --ms 2500)
echo "LED while ringing: $w"
if [ "$(field "$w" transitions)" -ge 3 ] && in_range "$(field "$w" median_run_ms)" 350 700; then
    pass "LED blinks slowly while ringing"
else
    fail "LED blinks slowly while ringing" "$w"
fi
presses=$(grep -c "call button pressed" "$log")
edges=$(grep "input edge" "$log" | grep "HIL_CALL_BTN" | grep -c "active=true")
rings=$(grep -c "^ring " "$res")
if [ "$presses" = 1 ] && [ "$edges" = 1 ] && [ "$rings" = 1 ]; then
    pass "bouncing press gives one press, one call"
else
    fail "bouncing press gives one press, one call" "presses=$presses edges=$edges rings=$rings"
fi
if [ "$(cat "$relay/value")" = 0 ]; then
    pass "relay off while ringing"
else
    fail "relay off while ringing" "value $(cat "$relay/value")"
fi

say accept
if wait_for "$res" "^established" "$T"; then
    pass "resident answers, audio established over loopback ($(grep -m1 '^established' "$res"))"
else
    fail "resident answers, audio established over loopback" "$(tail -n5 "$res")"
fi
if wait_for "$log" "AUDIO CONNECTION ESTABLISHED" "$T"; then
    pass "daemon logs AUDIO CONNECTION ESTABLISHED"
else
    fail "daemon logs AUDIO CONNECTION ESTABLISHED" "missing"
fi

w=$(hw_rig watch --file "$led/value" --ms 1000)
if [ "$(field "$w" transitions)" = 0 ] && [ "$(field "$w" last)" = 1 ]; then
    pass "LED steady on in the call"
else
    fail "LED steady on in the call" "$w"
fi

# Audio by content, both ways, after two seconds of talking.
sleep 2
if h=$(listen); then
    if near_hz "$(field "$h" hz)" 700; then
        pass "resident hears the tone played into the station's capture PCM ($h)"
    else
        fail "resident hears the tone played into the station's capture PCM" "$h"
    fi
else
    fail "resident hears the tone played into the station's capture PCM" "no answer to listen"
fi
end=$(stat -c %s "$recorded")
r=$(hw_rig tone --file "$recorded" --from $((end - 96000)) --to "$end")
if near_hz "$(field "$r" hz)" 1000; then
    pass "station plays the resident's tone to its playback PCM ($r)"
else
    fail "station plays the resident's tone to its playback PCM" "$r"
fi

# The resident opens the door: the relay pulses for door.pulse_ms and the
# LED blinks fast meanwhile. The relay is watched from before the request
# until 1 s after it fell again.
hw_rig watch --file "$relay/value" --ms $((T * 1000)) --settle-ms 1000 \
    > /tmp/relay.watch 2> /tmp/relay.watching &
rw=$!
wait_for /tmp/relay.watching "^watching" "$T"
say open
if wait_value "$relay/value" 1 "$T"; then
    w=$(hw_rig watch --file "$led/value" --ms 1000)
    echo "LED during the pulse: $w"
    if in_range "$(field "$w" median_run_ms)" 60 250; then
        pass "LED blinks fast while the door is open"
    else
        fail "LED blinks fast while the door is open" "$w"
    fi
else
    fail "LED blinks fast while the door is open" "the relay never went high"
fi
wait "$rw"
w=$(cat /tmp/relay.watch)
echo "relay: $w"
if [ "$(field "$w" transitions)" = 2 ] && in_range "$(field "$w" high_ms)" 1300 2200; then
    pass "resident's open pulses the relay for door.pulse_ms ($(field "$w" high_ms) ms of 1500)"
else
    fail "resident's open pulses the relay for door.pulse_ms" "$w"
fi
wait_for "$res" '"granted"' "$T"
if grep -q '"granted":true' "$res" && grep -q "door opened by the resident" "$log"; then
    pass "open granted and audited"
else
    fail "open granted and audited" "$(grep '^door ' "$res")"
fi

# Faults in the call. First an xrun: the daemon stopped for half a second,
# so its capture overruns and its playback underruns. Then the sound card
# gone for 1.5 s (snd-aloop's device unbound from its driver, then bound
# again). Neither may end the call: the log says what happened and when the
# device came back, and the audio comes back both ways.
# (An emulated CPU can cause xruns of its own: count only new ones.)
xruns_before=$(grep -c "audio xrun; device prepared again" "$log")
kill -STOP "$pid"
sleep 0.5
kill -CONT "$pid"
i=0
while [ "$(grep -c "audio xrun; device prepared again" "$log")" -le "$xruns_before" ] && [ "$i" -lt 100 ]; do
    sleep 0.1; i=$((i + 1))
done
if [ "$(grep -c "audio xrun; device prepared again" "$log")" -gt "$xruns_before" ]; then
    pass "an xrun in the call is logged and recovered ($(grep "audio xrun" "$log" | tail -n1 | grep -o 'direction="[a-z]*"'))"
else
    fail "an xrun in the call is logged and recovered" "no new 'audio xrun' line after the daemon was stopped for 0.5 s"
fi
drv=/sys/bus/platform/drivers/snd_aloop
card_dev=$(basename "$(ls -d "$drv"/snd_aloop.* 2>/dev/null | head -n1)")
# The far side's PCMs go with the card: stop it first, start it again after.
stop_duplex
echo "$card_dev" > "$drv/unbind"
if wait_for "$log" "audio device vanished" 10; then
    pass "the sound card leaving in the call is logged"
else
    fail "the sound card leaving in the call is logged" "no 'audio device vanished' line"
fi
sleep 1.5
echo "$card_dev" > "$drv/bind"
if wait_for "$log" "audio device reopened" 20; then
    pass "the sound card coming back is logged ($(grep -m1 'audio device reopened' "$log" | grep -o 'down_ms=[0-9]*'))"
else
    fail "the sound card coming back is logged" "no 'audio device reopened' line"
fi
start_duplex call 200
if grep -q "call ended" "$log"; then
    fail "the call goes on through the xrun and the missing card" "$(grep -m1 'call ended' "$log")"
else
    pass "the call goes on through the xrun and the missing card"
fi
sleep 3
h=$(listen)
end=$(stat -c %s "$recorded")
r=$(hw_rig tone --file "$recorded" --from $((end - 96000)) --to "$end")
if [ -n "$h" ] && near_hz "$(field "$h" hz)" 700 &&
    near_hz "$(field "$r" hz)" 1000; then
    pass "audio back both ways after the faults (resident $h; playback $r)"
else
    fail "audio back both ways after the faults" "resident: $h; playback: $r"
fi

# Round trip: the resident sends back what it hears; the keying of the
# played tone comes back in the recording, later by the latency through
# the daemon (capture, Opus, WebRTC, the resident, back, playback).
say echo
sleep 3
from=$(stat -c %s "$recorded")
sleep 8
to=$(stat -c %s "$recorded")
if l=$(hw_rig latency --played "$played" --recorded "$recorded" --from "$from" --to "$to" 2>&1); then
    pass "the station's capture comes back through the call ($l)"
else
    fail "the station's capture comes back through the call" "$l"
    # For a look on the host: both files, and the window that was measured.
    cp "$played" "$recorded" /share/results/
    echo "window: bytes $from to $to" > /share/results/latency-window
fi
echo "LATENCY $l"

say hangup
if wait_for "$log" "call ended" "$T"; then
    pass "hang-up from the resident ends the call"
else
    fail "hang-up from the resident ends the call" "no 'call ended' in the log"
fi
sleep 0.5
w=$(hw_rig watch --file "$led/value" --ms 1000)
if [ "$(field "$w" transitions)" = 0 ] && [ "$(field "$w" last)" = 0 ] && [ "$(cat "$relay/value")" = 0 ]; then
    pass "back to idle: LED off, relay off"
else
    fail "back to idle: LED off, relay off" "LED $w, relay $(cat "$relay/value")"
fi

if grep -q "panicked" "$log"; then
    fail "no panic in the daemon" "$(grep -m1 panicked "$log")"
fi
say quit
exec 4>&-
stop_daemon "$pid" "daemon"
stop_duplex
kill "$resident" 2>/dev/null
remove_chip call

echo "--- load"
cat /tmp/load.log
echo "--- duplex"
cat /tmp/call-duplex.log
echo "--- resident"
cat "$res"
echo "--- daemon log"
cat "$log"
