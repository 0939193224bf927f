# The Bluetooth actor against BlueZ: a system bus (dbus-daemon), bluetoothd,
# and two emulated BR/EDR controllers (btvirt -B -l2 behind /dev/vhci).
# intercomd owns hci0 through bluer; hci1 plays the headset, driven with
# btmgmt straight over the kernel's management interface (NoInputNoOutput,
# like a headset). bluetoothd does not power adapters itself here
# (AutoEnable=false), so a powered hci0 is the daemon's doing.
#
# Checks: the daemon finds and powers hci0 and registers its agent; with
# pairing closed the headset cannot pair; `intercomd bt pair` opens pairing
# (hci0 bondable and discoverable, LED on medium_blink); the headset pairs;
# the daemon logs the pairing with the headset's address, trusts it (BlueZ
# stores Trusted=true) and closes pairing again; the headset tool runs the
# Hands-Free SLC and a SCO exchange; bluetoothd restarts and the daemon
# reopens; on a gpio-sim board the service button's long press opens
# pairing.
. /guest/lib.sh

T=${HW_WAIT:-60}
log=/tmp/intercomd-bt.log

cleanup() {
    for p in $daemon $sco_ag $btmon $bluetoothd $btvirt $bus; do
        kill "$p" 2>/dev/null && gone "$p" 5
    done
    # The next test's btvirt must not meet these controllers (lib.sh).
    no_controllers 10
    for f in /tmp/bluetoothd.log "$log" /tmp/intercomd-bt-gpio.log; do
        echo "--- $f"
        cat "$f" 2>/dev/null
    done
}
trap cleanup EXIT

mkdir -p /run/dbus /var/lib/bluetooth /etc/bluetooth /run/intercomd
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > /etc/machine-id
cat > /tmp/bus.conf <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
  <includedir>/etc/dbus-1/system.d</includedir>
</busconfig>
CONF
printf '[Policy]\nAutoEnable=false\n' > /etc/bluetooth/main.conf

dbus-daemon --config-file=/tmp/bus.conf --nofork --nopidfile > /tmp/bus.log 2>&1 &
bus=$!
if wait_exists /run/dbus/system_bus_socket 10; then
    pass "system bus up"
else
    fail "system bus up" "$(cat /tmp/bus.log)"
    exit 0
fi

# btmon records the HCI traffic of both controllers from their first
# command on (the SCO evidence at the end), until the SCO exchange starts
# (decoding 400 packets a second would starve the exchange under TCG).
btmon > /tmp/btmon.log 2>&1 &
btmon=$!
sleep 0.5
btvirt -B -l2 > /tmp/btvirt.log 2>&1 &
btvirt=$!
if wait_exists /sys/class/bluetooth/hci1 15; then
    pass "btvirt created hci0 and hci1"
else
    fail "btvirt created hci0 and hci1" "$(ls /sys/class/bluetooth 2>&1)"
    exit 0
fi

/usr/libexec/bluetooth/bluetoothd -n -d > /tmp/bluetoothd.log 2>&1 &
bluetoothd=$!
if wait_for /tmp/bluetoothd.log "Adapter /org/bluez/hci1 has been enabled\|hci1.*registered\|Adapter.*hci1" "$T"; then
    pass "bluetoothd manages both controllers"
else
    fail "bluetoothd manages both controllers" "no hci1 in its log"
fi

ag=$(btmgmt --index 0 info | sed -n 's/^[[:space:]]*addr \([0-9A-F:]\{17\}\).*/\1/p' | head -n1)
hs=$(btmgmt --index 1 info | sed -n 's/^[[:space:]]*addr \([0-9A-F:]\{17\}\).*/\1/p' | head -n1)
echo "station adapter hci0 = $ag, headset hci1 = $hs"

cat > /tmp/bt.toml <<CONF
[station]
control_socket = "/run/intercomd/control.sock"

[hardware]
backend = "sim"

[hardware.sim]
control_listen = "127.0.0.1:7081"
stdin = false

[bluetooth]
enabled = true
adapter = "hci0"
pairing_timeout_ms = 60000
CONF

intercomd run --config /tmp/bt.toml > "$log" 2>&1 &
daemon=$!

if wait_for "$log" "bluetooth adapter found.*adapter=hci0.*address=$ag" "$T"; then
    pass "daemon finds hci0 through BlueZ"
else
    fail "daemon finds hci0 through BlueZ" "no 'bluetooth adapter found' line for $ag"
    exit 0
fi
if wait_for "$log" "bluetooth ready; pairing closed" "$T" &&
    grep -q "bluetooth adapter powered" "$log" &&
    btmgmt --index 0 info | grep 'current settings' | grep -qw powered; then
    pass "daemon powers hci0"
else
    fail "daemon powers hci0" "$(btmgmt --index 0 info | grep 'current settings')"
fi
if grep -q "bluetooth pairing agent registered" "$log"; then
    pass "pairing agent registered"
else
    fail "pairing agent registered" "no log line"
fi
if btmgmt --index 0 info | grep 'current settings' | grep -qw bondable; then
    fail "pairing closed at start" "hci0 is bondable"
else
    pass "pairing closed at start"
fi

# The headset: powered, bondable, no input and no output.
btmgmt --index 1 power on > /dev/null
btmgmt --index 1 bondable on > /dev/null
btmgmt --index 1 io-cap 3 > /dev/null

echo "hci0 while closed: $(btmgmt --index 0 info | grep 'current settings')"
out=$(timeout 30 btmgmt --index 1 pair -c 3 -t 0 "$ag" 2>&1)
if echo "$out" | grep -q "Paired with"; then
    fail "headset refused while pairing is closed" "$out"
else
    pass "headset refused while pairing is closed"
fi
echo "$out"

out=$(intercomd bt pair --config /tmp/bt.toml 2>&1)
if echo "$out" | grep -q "Bluetooth pairing open on hci0 ($ag) for 60 s"; then
    pass "intercomd bt pair opens pairing"
else
    fail "intercomd bt pair opens pairing" "$out"
fi
settings=$(btmgmt --index 0 info | grep 'current settings')
if grep -q "bluetooth pairing open.*source=\"\?control_socket" "$log" &&
    echo "$settings" | grep -qw bondable && echo "$settings" | grep -qw discoverable; then
    pass "hci0 bondable and discoverable while open"
else
    fail "hci0 bondable and discoverable while open" "$settings"
fi
if wget -qO- http://127.0.0.1:7081/state | grep -q '"medium_blink"'; then
    pass "status LED blinks at 2 Hz while pairing"
else
    fail "status LED blinks at 2 Hz while pairing" "$(wget -qO- http://127.0.0.1:7081/state)"
fi

out=$(timeout 30 btmgmt --index 1 pair -c 3 -t 0 "$ag" 2>&1)
echo "$out"
if echo "$out" | grep -q "Paired with"; then
    pass "headset pairs while pairing is open"
else
    fail "headset pairs while pairing is open" "$out"
fi
if wait_for "$log" "bluetooth device paired.*device=$hs" 20; then
    pass "daemon logs the pairing with the headset's address"
else
    fail "daemon logs the pairing with the headset's address" "no 'bluetooth device paired' line for $hs"
fi
if wait_for "$log" "bluetooth device trusted.*device=$hs" 20 &&
    wait_for "/var/lib/bluetooth/$ag/$hs/info" "Trusted=true" 10; then
    pass "headset trusted, stored by BlueZ"
else
    fail "headset trusted, stored by BlueZ" "$(cat "/var/lib/bluetooth/$ag/$hs/info" 2>&1)"
fi
if wait_for "$log" "bluetooth pairing closed.*reason=\"\?paired" 20 &&
    ! btmgmt --index 0 info | grep 'current settings' | grep -qw bondable; then
    pass "pairing closes after one headset"
else
    fail "pairing closes after one headset" "$(btmgmt --index 0 info | grep 'current settings')"
fi

# The Hands-Free service level connection, from the headset's controller
# to the gateway's RFCOMM channel (13), then a SCO link with a tone each
# way: 1000 Hz from the headset, 400 Hz from the gateway's end (hfp-hf
# --sco-listen on hci0, intercomd's SCO socket layer).
if command -v hfp-hf > /dev/null; then
    kill "$btmon" 2>/dev/null
    hfp-hf --sco-listen "$ag" > /tmp/sco-ag.log 2>&1 &
    sco_ag=$!
    sleep 0.5
    out=$(hfp-hf "$hs" "$ag" 13 2>&1)
    echo "$out"
    if echo "$out" | grep -q "^SLC established" &&
        wait_for "$log" "bluetooth hands-free service level connection established.*device=$hs" 10; then
        pass "headset establishes the Hands-Free SLC with the gateway"
    else
        fail "headset establishes the Hands-Free SLC with the gateway" "$(echo "$out" | tail -n 3)"
    fi
    sleep 1
    kill "$sco_ag" 2>/dev/null
    cat /tmp/sco-ag.log
    echo "btvirt $(btvirt --version 2>/dev/null)"
    # in_band LINE LOW HIGH MIN: the dominant frequency in LINE is in
    # range and the amount received (bytes or frames) at least MIN.
    in_band() {
        hz=$(echo "$1" | sed -n 's/.*dominant \([0-9]*\) Hz.*/\1/p')
        got=$(echo "$1" | sed -n 's/.*received \([0-9]*\) .*/\1/p')
        [ -n "$hz" ] && [ "$hz" -ge "$2" ] && [ "$hz" -le "$3" ] &&
            [ -n "$got" ] && [ "$got" -ge "$4" ]
    }
    hs_line=$(echo "$out" | grep '^SCO headset:')
    ag_line=$(grep '^SCO gateway:' /tmp/sco-ag.log)
    # At least 1 s of the 2 s tone each way: 16000 bytes at 8 kHz.
    if in_band "$hs_line" 380 420 16000; then
        pass "SCO: the headset hears the gateway's 400 Hz"
    else
        fail "SCO: the headset hears the gateway's 400 Hz" "${hs_line:-$(echo "$out" | grep '^SCO')}"
    fi
    if in_band "$ag_line" 980 1020 16000; then
        pass "SCO: the gateway hears the headset's 1000 Hz"
    else
        fail "SCO: the gateway hears the headset's 1000 Hz" "${ag_line:-$(tail -n 2 /tmp/sco-ag.log)}"
    fi
    sleep 1
    # Full traces beside the test's log, for reading on the host.
    if [ -d /share/results ]; then
        cp /tmp/btmon.log /share/results/bt-pair.btmon.txt
    fi
    echo "--- btmon: synchronous connection traffic ($(wc -l < /tmp/btmon.log) lines)"
    grep -n -A8 'Setup Synchronous\|Synchronous Connect\|SCO Data\|Read Buffer Size' /tmp/btmon.log | head -n 60

    # The synchronous link's HCI traffic, recorded by btmon for a second
    # link from the headset (nobody reads it on the gateway's side; the
    # kernel accepts it all the same, then hfp-hf closes it after 3 s):
    # the headset's controller takes Enhanced Setup Synchronous
    # Connection, the gateway's host gets a Connection Request for eSCO and
    # accepts it, both hosts get Synchronous Connection Complete with
    # handle 257, SCO data flows, and the headset's Disconnect of handle
    # 257 ends the link on both controllers.
    btmon > /tmp/btmon-sco.log 2>&1 &
    btmon=$!
    sleep 0.5
    out=$(hfp-hf "$hs" "$ag" 13 2>&1)
    sleep 0.5
    # btmon's output reaches the file in blocks: read it once btmon is gone.
    kill "$btmon" 2>/dev/null
    wait "$btmon" 2>/dev/null
    btmon=
    echo "$out" | grep '^SCO'
    [ -d /share/results ] && cp /tmp/btmon-sco.log /share/results/bt-pair.btmon-sco.txt
    trace=/tmp/btmon-sco.log
    why=
    grep -q 'HCI Command: Enhanced Setup Sync.*\[hci1\]' "$trace" || why="$why no Enhanced Setup Synchronous Connection on hci1;"
    grep -A8 'HCI Event: Connect Request.*\[hci0\]' "$trace" | grep -q 'Link type: eSCO' || why="$why no eSCO Connect Request on hci0;"
    grep -q 'HCI Command: Accept Synchronous.*\[hci0\]' "$trace" || why="$why no Accept Synchronous Connection Request on hci0;"
    for c in hci0 hci1; do
        grep -A2 "Synchronous Connect Complete.*\[$c\]" "$trace" | grep -q 'Status: Success' ||
            why="$why no successful Synchronous Connect Complete on $c;"
    done
    if [ -z "$why" ]; then
        pass "btmon: the SCO link is set up on both controllers (eSCO Connect Request, Accept Synchronous, Synchronous Connect Complete on hci0 and hci1)"
    else
        fail "btmon: the SCO link is set up on both controllers" "$why"
    fi
    why=
    grep -q 'SCO Data RX: Handle 257.*\[hci0\]' "$trace" || why="$why no SCO data reached hci0;"
    for c in hci0 hci1; do
        grep -A3 "HCI Event: Disconnect Complete.*\[$c\]" "$trace" | grep -q 'Handle: 257' ||
            why="$why no Disconnect Complete for handle 257 on $c;"
    done
    if [ -z "$why" ]; then
        pass "btmon: SCO data forwarded ($(grep -c 'SCO Data RX: Handle 257.*\[hci0\]' "$trace") packets at hci0), the link torn down on both controllers"
    else
        fail "btmon: SCO data forwarded, the link torn down on both controllers" "$why"
    fi
    echo "--- btmon: the second SCO link's commands and events"
    grep -n -A7 'Enhanced Setup Sync\|Connect Request\|Accept Synchronous\|Synchronous Connect Complete\|Disconnect Complete' "$trace" |
        grep -v 'SCO Data' | tail -n 80
else
    fail "headset establishes the Hands-Free SLC with the gateway" "no hfp-hf in the VM (cargo build --example hfp-hf)"
fi

# bluetoothd restarting (an update, a crash): the daemon notices, reopens
# the adapter, registers its agent and gateway again, and finds the
# headset BlueZ stored.
kill "$bluetoothd"
wait "$bluetoothd" 2>/dev/null
/usr/libexec/bluetooth/bluetoothd -n -d >> /tmp/bluetoothd.log 2>&1 &
bluetoothd=$!
# ready_twice: a second "bluetooth ready" line within 30 s.
ready_twice() {
    i=0
    while [ "$i" -lt 300 ]; do
        [ "$(grep -c 'bluetooth ready; pairing closed' "$log")" -ge 2 ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
if wait_for "$log" "bluetooth adapter lost" 30 && ready_twice &&
    grep -q "bluetooth headset known.*device=$hs" "$log"; then
    pass "daemon reopens the adapter after bluetoothd restarts"
else
    fail "daemon reopens the adapter after bluetoothd restarts" "$(grep 'bluetooth adapter\|bluetooth ready' "$log" | tail -n 4)"
fi

kill "$daemon"
if wait_for "$log" "stopped" 20; then
    pass "daemon stops on SIGTERM"
else
    fail "daemon stops on SIGTERM" "no 'stopped' line"
fi
daemon=

# The service button on a real GPIO board (gpio-sim): held for the long
# press, it opens pairing; the status LED line blinks.
sim=/sys/kernel/config/gpio-sim/bt
mkdir "$sim" "$sim/bank0"
echo 4 > "$sim/bank0/num_lines"
n=0
for name in BT_RELAY BT_LED BT_CALL BT_SERVICE; do
    mkdir "$sim/bank0/line$n"
    echo "$name" > "$sim/bank0/line$n/name"
    n=$((n + 1))
done
echo 1 > "$sim/live"
lines=/sys/devices/platform/$(cat "$sim/dev_name")/$(cat "$sim/bank0/chip_name")
echo pull-up > "$lines/sim_gpio2/pull"
echo pull-up > "$lines/sim_gpio3/pull"
cat > /tmp/bt-gpio.toml <<CONF
[station]
control_socket = "/run/intercomd/control.sock"

[hardware]
backend = "gpio"

[hardware.sim]
control_listen = ""
stdin = false

[gpio.relay]
line = "BT_RELAY"

[[inputs]]
kind = "button"
button = "call"
line = "BT_CALL"
active_low = true
bias = "pull_up"

[[inputs]]
kind = "service"
line = "BT_SERVICE"
active_low = true
bias = "pull_up"

[[leds]]
name = "status"
line = "BT_LED"

[bluetooth]
enabled = true
adapter = "hci0"
pairing_timeout_ms = 60000
CONF
glog=/tmp/intercomd-bt-gpio.log
intercomd run --config /tmp/bt-gpio.toml > "$glog" 2>&1 &
daemon=$!
if wait_for "$glog" "bluetooth ready; pairing closed" "$T"; then
    echo pull-down > "$lines/sim_gpio3/pull"
    sleep 3
    echo pull-up > "$lines/sim_gpio3/pull"
    # Sample the LED line for a second: 2 Hz shows both levels.
    seen=
    i=0
    while [ "$i" -lt 20 ]; do
        seen="$seen$(cat "$lines/sim_gpio1/value")"
        sleep 0.05
        i=$((i + 1))
    done
    if grep -q "service button held: opening Bluetooth pairing" "$glog" &&
        wait_for "$glog" "bluetooth pairing open.*source=\"\?service_button" 10 &&
        btmgmt --index 0 info | grep 'current settings' | grep -qw bondable; then
        pass "service button long press opens pairing"
    else
        fail "service button long press opens pairing" "$(grep -i 'service\|pairing' "$glog" | tail -n 3)"
    fi
    case "$seen" in
        *0*1*|*1*0*) pass "status LED line blinks while pairing" ;;
        *) fail "status LED line blinks while pairing" "LED line read $seen" ;;
    esac
else
    fail "service button long press opens pairing" "daemon on GPIO not ready: $(tail -n 3 "$glog")"
fi
kill "$daemon"
wait_for "$glog" "stopped" 20
daemon=
echo 0 > "$sim/live"
for n in 0 1 2 3; do rmdir "$sim/bank0/line$n"; done
rmdir "$sim/bank0" "$sim"
