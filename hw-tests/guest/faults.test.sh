# Hardware that goes away under the running daemon and comes back: the
# gpio-sim chip taken down (configfs `live` 0) and the snd-aloop card's
# platform device unbound from its driver, then both restored. The daemon
# must say so in one clear log line naming the device, keep running, and
# use the lines and the card again once they return.
. /guest/lib.sh

T=${HW_WAIT:-60}
log=/tmp/intercomd-faults.log

if make_chip faults; then
    pass "gpio-sim chip created"
else
    fail "gpio-sim chip created" "configfs refused it"
    exit 0
fi
sim=/sys/kernel/config/gpio-sim/faults
drv=/sys/bus/platform/drivers/snd_aloop
card_dev=$(basename "$(ls -d "$drv"/snd_aloop.* 2>/dev/null | head -n1)")
if [ -z "$card_dev" ]; then
    fail "snd-aloop platform device found" "nothing under $drv"
    remove_chip faults
    exit 0
fi

cat > /tmp/faults.toml <<'CONF'
[audio]
backend = "alsa"

[audio.alsa]
capture_device = "hw:CARD=Loopback,DEV=1,SUBDEV=0"
playback_device = "hw:CARD=Loopback,DEV=0,SUBDEV=1"
mixer_device = "hw:CARD=Loopback"
CONF

intercomd run --config /etc/intercomd/hil-vm.toml --config /tmp/faults.toml > "$log" 2>&1 &
pid=$!
if wait_for "$log" "intercomd ready" "$T" && wait_for "$log" "Socket connected" "$T"; then
    pass "daemon ready"
else
    fail "daemon ready" "no 'intercomd ready' and 'Socket connected' in the log"
fi
# Idle with signaling up: the status LED is on (the board's default).
if wait_value "$led/value" 1 "$T"; then
    pass "LED on before the fault"
else
    fail "LED on before the fault" "value $(cat "$led/value")"
fi
old_chip=$chip

# --- GPIO chip removed, then back.
echo 0 > "$sim/live"
if wait_for "$log" "GPIO lines lost" 15; then
    line=$(grep -m1 "GPIO lines lost" "$log")
    case "$line" in
        *"/dev/$old_chip"*) pass "chip removal logged, naming /dev/$old_chip" ;;
        *) fail "chip removal logged, naming /dev/$old_chip" "$line" ;;
    esac
else
    fail "chip removal logged, naming /dev/$old_chip" "no 'GPIO lines lost' in the log"
fi
sleep 1
if kill -0 "$pid" 2>/dev/null; then
    pass "daemon keeps running without its GPIO chip"
else
    fail "daemon keeps running without its GPIO chip" "exited"
fi
echo 1 > "$sim/live"
chip_lines faults
echo "chip back as $chip"
if wait_for "$log" "GPIO lines back" 15; then
    pass "lines requested again when the chip returns ($(grep -m1 'GPIO lines back' "$log" | sed 's/.*GPIO lines back/GPIO lines back/'))"
else
    fail "lines requested again when the chip returns" "no 'GPIO lines back' in the log"
fi
# The returned chip gets the outputs' levels again.
if wait_value "$led/value" 1 10 && [ "$(cat "$relay/value")" = 0 ]; then
    pass "LED and relay levels restored on the returned chip"
else
    fail "LED and relay levels restored on the returned chip" "LED $(cat "$led/value"), relay $(cat "$relay/value")"
fi
echo pull-down > "$call/pull"
if wait_for "$log" "call button pressed" 15; then
    pass "call button works after the chip returned"
else
    fail "call button works after the chip returned" "no 'call button pressed' in the log"
fi
echo pull-up > "$call/pull"
echo pull-down > "$exit_btn/pull"
sleep 0.2
echo pull-up > "$exit_btn/pull"
if wait_value "$relay/value" 1 10; then
    pass "exit button drives the relay after the chip returned"
else
    fail "exit button drives the relay after the chip returned" "relay stays $(cat "$relay/value")"
fi

# --- Sound card unbound, then bound again.
echo "$card_dev" > "$drv/unbind"
if wait_for "$log" "audio device vanished" 15; then
    pass "sound card removal logged ($(grep -m1 'audio device vanished' "$log" | grep -o 'device=.*playback "[^"]*"'))"
else
    fail "sound card removal logged" "no 'audio device vanished' in the log"
fi
sleep 1
if kill -0 "$pid" 2>/dev/null; then
    pass "daemon keeps running without its sound card"
else
    fail "daemon keeps running without its sound card" "exited"
fi
echo "$card_dev" > "$drv/bind"
if wait_for "$log" "audio device reopened" 20; then
    pass "sound card opened again when it returns"
else
    fail "sound card opened again when it returns" "no 'audio device reopened' in the log"
fi
cdir=$(dirname "$(grep -l '^Loopback' /proc/asound/card*/id | head -n1)")
if wait_for "$cdir/pcm0p/sub1/status" RUNNING 10 && wait_for "$cdir/pcm1c/sub0/status" RUNNING 10; then
    pass "playback and capture running again"
else
    fail "playback and capture running again" "$(head -n1 "$cdir/pcm0p/sub1/status" 2>&1)"
fi

if grep -q "panicked" "$log"; then
    fail "no panic in the daemon" "$(grep -m1 panicked "$log")"
else
    pass "no panic in the daemon"
fi
stop_daemon "$pid" "daemon"
remove_chip faults

echo "--- daemon log"
cat "$log"
