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
# so that it stays up) while the raw commands run on it. bluetoothd sets
# up its adapters at the same time as the commands above and can leave
# hci0 without page scan for a moment, so hci0 is made connectable again
# and its page scan awaited before each try; a try that still fails (a
# Page Timeout) is said, and the next one follows on the same controllers
# (the rig's kernel carries hw-tests/kernel-l2cap-hchan.patch: without it
# the failed connect oopses in l2ping's context, see bt-l2cap-fail).
handle=
try=0
while [ -z "$handle" ] && [ "$try" -lt 4 ]; do
    try=$((try + 1))
    btmgmt --index 0 connectable on > /dev/null
    i=0
    until hciconfig hci0 | grep -q PSCAN || [ "$i" -ge 30 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    l2ping -i hci1 -c 20 -d 1 "$bt_ag" > /tmp/l2ping.log 2>&1 &
    l2p=$!
    i=0
    while [ -z "$handle" ] && [ "$i" -lt 50 ]; do
        # Connected (state 1): before that the kernel lists a placeholder.
        handle=$(hcitool -i hci1 con | sed -n "s/.*ACL $bt_ag handle \([0-9]*\) state 1 .*/\1/p")
        [ -n "$handle" ] || sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$handle" ]; then
        echo "ACL link try $try failed: l2ping $(kill -0 "$l2p" 2>/dev/null && echo running || echo gone): $(cat /tmp/l2ping.log); hci0: $(hciconfig hci0 | tr -s ' \n' ' '); hci1 links: $(hcitool -i hci1 con | tr '\n' ' ')"
        kill "$l2p" 2>/dev/null
        wait "$l2p" 2>/dev/null
    fi
done
if [ -z "$handle" ]; then
    fail "ACL link from hci1 to hci0" "$(hcitool -i hci1 con)"
    exit 0
fi
pass "ACL link from hci1 to hci0 (handle $handle, try $try)"
h=$(printf '%02x %02x' $((handle & 255)) $((handle >> 8)))

# Setup Synchronous Connection: 8 kHz each way, any latency, CVSD (voice
# setting 0x0060), any retransmission, packet types HV1-HV3 with the EDR
# eSCO types excluded (0x03c7).
setup_sync="0x01 0x0028 $h 40 1f 00 00 40 1f 00 00 ff ff 60 00 ff c7 03"
# shellcheck disable=SC2086
hcitool -i hci1 cmd $setup_sync > /dev/null
sleep 1
# Add SCO Connection, packet types HV1-HV3 (0x00e0).
hcitool -i hci1 cmd 0x01 0x0007 $h e0 00 > /dev/null
sleep 1
# Rejected: hci0's host no longer accepts links nobody listens for.
hciconfig hci0 lm NONE
# shellcheck disable=SC2086
hcitool -i hci1 cmd $setup_sync > /dev/null
sleep 1
# btmon's output reaches the file in blocks: read it once btmon is gone.
kill "$l2p" "$btmon" 2>/dev/null
wait "$btmon" 2>/dev/null
btmon=

# events PATTERN N FIELD: the FIELD lines within N lines after each line of
# the trace matching PATTERN.
events() { grep -A"$2" "$1" "$trace" | grep "$3"; }

why=
[ "$(events 'HCI Event: Connect Request.*\[hci0\]' 8 'Link type:' | grep -c 'SCO (0x00)')" -ge 3 ] ||
    why="$why not three SCO Connect Requests on hci0;"
for c in hci0 hci1; do
    events "Synchronous Connect Complete.*\[$c\]" 5 'Link type:' | head -n1 | grep -q 'SCO (0x00)' &&
        events "Synchronous Connect Complete.*\[$c\]" 2 'Status:' | head -n1 | grep -q Success ||
        why="$why no successful SCO Synchronous Connect Complete on $c first;"
done
if [ -z "$why" ]; then
    pass "Setup Synchronous Connection with SCO packet types: SCO link on both controllers"
else
    fail "Setup Synchronous Connection with SCO packet types: SCO link on both controllers" "$why"
fi

why=
events 'HCI Event: Connect Complete.*\[hci1\]' 6 'Link type:' | grep -q 'SCO (0x00)' ||
    why="$why no SCO Connect Complete on hci1;"
[ "$(events 'Synchronous Connect Complete.*\[hci0\]' 2 'Status:' | grep -c Success)" -ge 2 ] ||
    why="$why no second successful Synchronous Connect Complete on hci0;"
if [ -z "$why" ]; then
    pass "Add SCO Connection: Connect Request on hci0, Connect Complete (SCO) on hci1"
else
    fail "Add SCO Connection: Connect Request on hci0, Connect Complete (SCO) on hci1" "$why"
fi

why=
grep -q 'HCI Command: Reject Connection.*\[hci0\]' "$trace" || why="$why hci0's host did not reject;"
rejected=$(events 'Synchronous Connect Complete.*\[hci1\]' 2 'Status:' | grep -v Success | head -n1 | sed 's/^ *//')
[ -n "$rejected" ] || why="$why no failed Synchronous Connect Complete on hci1;"
events 'HCI Event: Connect Complete.*\[hci0\]' 2 'Status:' | grep -vq 'Success' ||
    why="$why no failed Connect Complete on hci0;"
if [ -z "$why" ]; then
    pass "a rejected request fails on both controllers ($rejected)"
else
    fail "a rejected request fails on both controllers" "$why"
fi

echo "--- btmon: the synchronous link commands and events"
grep -n -A8 'Setup Synchronous\|Add SCO\|Connect Request\|Accept Synchronous\|Reject Connection\|Synchronous Connect Complete\|HCI Event: Connect Complete' "$trace" |
    tail -n 150
