# The synchronous link commands of btvirt (hw-tests/btvirt-sco.patch) that
# the kernel does not send to these controllers by itself (it uses
# Enhanced Setup Synchronous Connection, and accepts every link), sent raw
# with hcitool on an ACL link from hci1 to hci0 (held by l2ping), with
# btmon recording:
#
# - Setup Synchronous Connection with SCO packet types only (HV1-HV3):
#   hci0's host gets a Connect Request of link type SCO, accepts it, and
#   both controllers report a successful Synchronous Connect Complete.
# - Add SCO Connection (the legacy command): hci0 gets a Connect Request of
#   link type SCO; hci1 answers the legacy command with Connect Complete.
# - with hci0's link mode cleared (`hciconfig hci0 lm NONE`, no SCO
#   listener) hci0's host rejects the request (Reject Connection Request)
#   and both controllers report the rejection's reason.
. /guest/lib.sh

trace=/tmp/btmon-hci.log
cleanup() {
    kill "$l2p" "$btmon" 2>/dev/null
    bt_down
    [ -d /share/results ] && cp "$trace" /share/results/bt-sco-hci.btmon.txt
}
trap cleanup EXIT

if ! bt_up > /tmp/bt-up.log; then
    fail "Bluetooth up for the raw SCO commands" "$(cat /tmp/bt-up.log)"
    exit 0
fi
btmon > "$trace" 2>&1 &
btmon=$!
btmgmt --index 0 power on > /dev/null
btmgmt --index 0 connectable on > /dev/null
btmgmt --index 1 power on > /dev/null
sleep 0.5

# l2ping holds an ACL link from hci1 to hci0 open (the kernel's own,
# so that it stays up) while the raw commands run on it.
l2ping -i hci1 -c 20 -d 1 "$bt_ag" > /tmp/l2ping.log 2>&1 &
l2p=$!
handle=
i=0
while [ -z "$handle" ] && [ "$i" -lt 50 ]; do
    # Connected (state 1): before that the kernel lists a placeholder.
    handle=$(hcitool -i hci1 con | sed -n "s/.*ACL $bt_ag handle \([0-9]*\) state 1 .*/\1/p")
    [ -n "$handle" ] || sleep 0.1
    i=$((i + 1))
done
if [ -z "$handle" ]; then
    fail "ACL link from hci1 to hci0" "$(hcitool -i hci1 con)"
    exit 0
fi
pass "ACL link from hci1 to hci0 (handle $handle)"
h=$(printf '%02x %02x' $((handle & 255)) $((handle >> 8)))

# count PATTERN: lines of the trace matching PATTERN.
count() { grep -c "$1" "$trace"; }
# status_after PATTERN: the status lines after every event matching PATTERN.
status_after() { grep -A2 "$1" "$trace" | grep 'Status:'; }

# Setup Synchronous Connection: 8 kHz each way, any latency, CVSD (voice
# setting 0x0060), any retransmission, packet types HV1-HV3 with the EDR
# eSCO types excluded (0x03c7).
hcitool -i hci1 cmd 0x01 0x0028 $h 40 1f 00 00 40 1f 00 00 ff ff 60 00 ff c7 03 > /dev/null
sleep 1
why=
grep -A8 'HCI Event: Connect Request.*\[hci0\]' "$trace" | grep -q 'Link type: SCO (0x00)' ||
    why="$why no SCO Connect Request on hci0;"
for c in hci0 hci1; do
    grep -A5 "Synchronous Connect Complete.*\[$c\]" "$trace" | grep -q 'Link type: SCO (0x00)' &&
        status_after "Synchronous Connect Complete.*\[$c\]" | head -n1 | grep -q Success ||
        why="$why no successful SCO Synchronous Connect Complete on $c;"
done
if [ -z "$why" ]; then
    pass "Setup Synchronous Connection with SCO packet types: SCO link on both controllers"
else
    fail "Setup Synchronous Connection with SCO packet types: SCO link on both controllers" "$why"
fi

# Add SCO Connection, packet types HV1-HV3 (0x00e0).
before=$(count 'HCI Event: Connect Request.*\[hci0\]')
hcitool -i hci1 cmd 0x01 0x0007 $h e0 00 > /dev/null
sleep 1
why=
[ "$(count 'HCI Event: Connect Request.*\[hci0\]')" -gt "$before" ] || why="$why no Connect Request on hci0;"
grep -A6 'HCI Event: Connect Complete.*\[hci1\]' "$trace" | grep -q 'Link type: SCO (0x00)' ||
    why="$why no SCO Connect Complete on hci1;"
[ "$(count 'Synchronous Connect Complete.*\[hci0\]')" -ge 2 ] || why="$why no second Synchronous Connect Complete on hci0;"
if [ -z "$why" ]; then
    pass "Add SCO Connection: Connect Request on hci0, Connect Complete (SCO) on hci1"
else
    fail "Add SCO Connection: Connect Request on hci0, Connect Complete (SCO) on hci1" "$why"
fi

# Rejected: hci0's host no longer accepts links nobody listens for.
hciconfig hci0 lm NONE
hcitool -i hci1 cmd 0x01 0x0028 $h 40 1f 00 00 40 1f 00 00 ff ff 60 00 ff c7 03 > /dev/null
sleep 1
why=
grep -q 'HCI Command: Reject Connection.*\[hci0\]' "$trace" || why="$why hci0's host did not reject;"
grep -A2 'Synchronous Connect Complete.*\[hci1\]' "$trace" | grep 'Status:' | grep -vq 'Success' ||
    why="$why no failed Synchronous Connect Complete on hci1;"
grep -A2 'HCI Event: Connect Complete.*\[hci0\]' "$trace" | grep 'Status:' | grep -vq 'Success' ||
    why="$why no failed Connect Complete on hci0;"
if [ -z "$why" ]; then
    pass "a rejected request fails on both controllers ($(grep -A2 'Synchronous Connect Complete.*\[hci1\]' "$trace" | grep 'Status:' | tail -n1 | sed 's/^ *//'))"
else
    fail "a rejected request fails on both controllers" "$why"
fi

echo "--- btmon: the synchronous link commands and events"
grep -n -A8 'Setup Synchronous\|Add SCO\|Connect Request\|Accept Synchronous\|Reject Connection\|Synchronous Connect Complete\|HCI Event: Connect Complete' "$trace" |
    tail -n 150
