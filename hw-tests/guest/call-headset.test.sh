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
. /guest/headset.sh

headset_setup hs headset "daemon ready with GPIO, ALSA, its hub and Bluetooth" ""

hfp-hf --headset "$hs" "$ag" 500 /tmp/hs.stop > "$hsl" 2>&1 &
hf=$!
if wait_for "$hsl" "^SLC established" "$T" &&
    wait_for "$log" "bluetooth hands-free service level connection established.*device=$hs" 10; then
    pass "headset establishes the Hands-Free SLC"
else
    fail "headset establishes the Hands-Free SLC" "$(tail -n 3 "$hsl")"
fi

press_call
say accept
if wait_for "$res" "^established" "$T" && wait_for "$log" "call audio route: headset" "$T" &&
    wait_for "$hsl" "^SCO accepted from $ag" 10; then
    pass "the answered call moves to the headset's SCO link ($(grep -m1 'SCO audio connected' "$log" | sed 's/.*connected//'))"
else
    fail "the answered call moves to the headset's SCO link" "$(grep 'SCO\|route\|established' "$log" "$res" | tail -n 4)"
fi

# Both ways by content: 1 s worth (16000 bytes) of the resident's tone at
# the headset.
headset_hears 1000 16000
got=$(tone_bytes 1000)
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
headset_end "headset call"
