# The ALSA backend against snd-aloop: the daemon opens a loopback card's
# PCMs with hw: names (48 kHz mono S16 set on the hardware, no plug layer)
# and keeps both streams running while idle.
. /guest/lib.sh

T=${HW_WAIT:-60}

card=$(grep -l '^Loopback' /proc/asound/card*/id 2>/dev/null | head -n1)
if [ -n "$card" ]; then
    pass "snd-aloop card present"
else
    fail "snd-aloop card present" "no Loopback card in /proc/asound"
    exit 0
fi
cdir=$(dirname "$card")

# Playback on device 0 subdevice 0; capture on device 1 subdevice 1 (the
# other end of an idle cable, which delivers silence).
cat > /tmp/alsa.toml <<'CONF'
[hardware]
backend = "sim"

[hardware.sim]
control_listen = ""
stdin = false

[audio]
backend = "alsa"

[audio.alsa]
capture_device = "hw:CARD=Loopback,DEV=1,SUBDEV=1"
playback_device = "hw:CARD=Loopback,DEV=0,SUBDEV=0"
mixer_device = "hw:CARD=Loopback"
CONF

log=/tmp/intercomd-alsa.log
intercomd run --config /tmp/alsa.toml > "$log" 2>&1 &
pid=$!

if wait_for "$log" "ALSA audio devices open" "$T"; then
    pass "daemon opens the loopback PCMs"
else
    fail "daemon opens the loopback PCMs" "no 'ALSA audio devices open' in the log"
fi

for s in "$cdir/pcm0p/sub0" "$cdir/pcm1c/sub1"; do
    what="${s#"$cdir"/} running"
    if wait_for "$s/status" "RUNNING" 10; then
        pass "$what"
    else
        fail "$what" "$(head -n1 "$s/status" 2>/dev/null)"
    fi
done
for s in "$cdir/pcm0p/sub0" "$cdir/pcm1c/sub1"; do
    echo "--- $s/hw_params"
    cat "$s/hw_params"
done
if grep -q '^rate: 48000' "$cdir/pcm0p/sub0/hw_params" && grep -q '^channels: 1' "$cdir/pcm0p/sub0/hw_params"; then
    pass "playback at 48 kHz mono"
else
    fail "playback at 48 kHz mono" "$(tr '\n' ' ' < "$cdir/pcm0p/sub0/hw_params")"
fi

if kill -0 "$pid" 2>/dev/null; then
    pass "daemon running with ALSA"
else
    fail "daemon running with ALSA" "exited"
fi
kill "$pid" 2>/dev/null
i=0
while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
kill -0 "$pid" 2>/dev/null && kill -9 "$pid"

echo "--- daemon log"
cat "$log"
