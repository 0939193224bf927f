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
. /guest/headset.sh

HS_HZ=5000
trace=/tmp/btmon-wb.snoop
# The headset's controller answers synchronous links with a transparent
# voice setting, as a wide-band headset's host sets it.
HS_VOICE=0x0063
headset_setup wb "mSBC headset" "daemon ready for the mSBC headset call" "prefer_msbc = true"

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

press_call
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
headset_hears 1000 32000
got=$(tone_bytes 1000)
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
headset_end "mSBC headset call"
