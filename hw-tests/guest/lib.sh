# Helpers for the guest tests: one `PASS name` or `FAIL name: why` line per
# check (the init counts them).

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

# wait_for FILE PATTERN SECONDS: true once FILE has a line matching PATTERN.
wait_for() {
    i=0
    while [ "$i" -lt $(($3 * 10)) ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# wait_value FILE VALUE SECONDS: true once FILE holds VALUE.
wait_value() {
    i=0
    while [ "$i" -lt $(($3 * 10)) ]; do
        [ "$(cat "$1" 2>/dev/null)" = "$2" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# wait_exists PATH SECONDS: true once PATH exists.
wait_exists() {
    i=0
    while [ "$i" -lt $(($2 * 10)) ]; do
        [ -e "$1" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# make_chip NAME: a gpio-sim chip NAME with the lines of
# config/boards/hil-vm.toml, the buttons pulled up (idle). Sets relay, led,
# call, exit_btn to the lines' sysfs directories (their `value` and `pull`
# attributes) and chip to the character device's name. False on failure.
make_chip() {
    sim=/sys/kernel/config/gpio-sim/$1
    mkdir "$sim" "$sim/bank0" || return 1
    echo 4 > "$sim/bank0/num_lines"
    n=0
    for name in HIL_RELAY HIL_LED_STATUS HIL_CALL_BTN HIL_EXIT_BTN; do
        mkdir "$sim/bank0/line$n"
        echo "$name" > "$sim/bank0/line$n/name"
        n=$((n + 1))
    done
    echo 1 > "$sim/live" || return 1
    chip_lines "$1"
    echo pull-up > "$call/pull"
    echo pull-up > "$exit_btn/pull"
}

# chip_lines NAME: set relay, led, call, exit_btn and chip for the live
# chip NAME (again after it was taken down and brought back: the kernel may
# give it another number).
chip_lines() {
    sim=/sys/kernel/config/gpio-sim/$1
    chip=$(cat "$sim/bank0/chip_name")
    lines=/sys/devices/platform/$(cat "$sim/dev_name")/$chip
    relay=$lines/sim_gpio0
    led=$lines/sim_gpio1
    call=$lines/sim_gpio2
    exit_btn=$lines/sim_gpio3
}

# remove_chip NAME: take the chip down and delete it, so that the next
# test can create lines with the same names.
remove_chip() {
    sim=/sys/kernel/config/gpio-sim/$1
    [ -d "$sim" ] || return 0
    echo 0 > "$sim/live" 2>/dev/null
    for l in "$sim"/bank0/line*; do rmdir "$l"; done
    rmdir "$sim/bank0" "$sim"
}

# stop_daemon PID NAME: SIGTERM, then wait up to 10 s; one check.
stop_daemon() {
    kill "$1" 2>/dev/null
    i=0
    while kill -0 "$1" 2>/dev/null && [ "$i" -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$1" 2>/dev/null; then
        fail "$2 stops on SIGTERM" "still running after 10 s"
        kill -9 "$1"
    else
        pass "$2 stops on SIGTERM"
    fi
}

# field LINE KEY: the value of `KEY=value` in LINE.
field() {
    echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1
}

# in_range VALUE LOW HIGH: true when LOW <= VALUE <= HIGH (integers).
in_range() {
    case "$1" in '' | *[!0-9-]*) return 1 ;; esac
    [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]
}

# near_hz VALUE HZ: true when the measured frequency VALUE is within 40 Hz
# of HZ. A dropout or a concealed packet in the measured second moves the
# dominant frequency by a step or three of 10 Hz under TCG; the tones the
# tests tell apart (500, 700, 1000 Hz) stay far apart.
near_hz() {
    in_range "$1" $(($2 - 40)) $(($2 + 40))
}

# bt_up: a system bus, btvirt's two BR/EDR controllers (hci0 the station,
# hci1 the headset) and bluetoothd (AutoEnable=false), each from scratch
# with no stored pairings. Sets bus, btvirt and bluetoothd to their PIDs
# (bt_down stops them). False with a reason on stdout when one did not
# come up.
bt_up() {
    mkdir -p /run/dbus /var/lib/bluetooth /etc/bluetooth
    rm -rf /var/lib/bluetooth/* /run/dbus/system_bus_socket
    [ -s /etc/machine-id ] ||
        head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > /etc/machine-id
    cat > /tmp/bt-bus.conf <<'CONF'
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
    dbus-daemon --config-file=/tmp/bt-bus.conf --nofork --nopidfile > /tmp/bt-bus.log 2>&1 &
    bus=$!
    wait_exists /run/dbus/system_bus_socket 10 || { echo "no system bus: $(cat /tmp/bt-bus.log)"; return 1; }
    no_controllers 10 || { echo "controllers of an earlier btvirt still registered: $(ls /sys/class/bluetooth)"; return 1; }
    btvirt -B -l2 > /tmp/btvirt-up.log 2>&1 &
    btvirt=$!
    wait_exists /sys/class/bluetooth/hci1 15 || { echo "btvirt made no hci1: $(ls /sys/class/bluetooth 2>&1)"; return 1; }
    /usr/libexec/bluetooth/bluetoothd -n > /tmp/bt-bluetoothd.log 2>&1 &
    bluetoothd=$!
    # Both controllers answer management commands once the kernel has
    # initialised them (an HCI reset each, slow under load).
    i=0
    bt_ag= bt_hs=
    while { [ -z "$bt_ag" ] || [ -z "$bt_hs" ]; } && [ "$i" -lt 100 ]; do
        [ -n "$bt_ag" ] || bt_ag=$(bt_addr 0)
        [ -n "$bt_hs" ] || bt_hs=$(bt_addr 1)
        [ -n "$bt_ag" ] && [ -n "$bt_hs" ] || sleep 0.1
        i=$((i + 1))
    done
    [ -n "$bt_ag" ] && [ -n "$bt_hs" ] || {
        echo "no controller addresses from btmgmt after 10 s: $(ls /sys/class/bluetooth); index 0: $(btmgmt --index 0 info 2>&1 | head -n3); index 1: $(btmgmt --index 1 info 2>&1 | head -n3)"
        return 1
    }
}

# bt_addr INDEX: the controller's address from btmgmt, or nothing.
bt_addr() {
    btmgmt --index "$1" info 2>/dev/null | sed -n 's/^[[:space:]]*addr \([0-9A-F:]\{17\}\).*/\1/p' | head -n1
}

# no_controllers SECONDS: true once no hci device is registered (waits up
# to SECONDS). btvirt's controllers go away when it closes /dev/vhci, and
# the kernel tears them down after btvirt has exited: a bt_up that starts
# the next btvirt before then finds the old hci1 (so it waits for nothing),
# its controllers get other indexes, and under load the old and new
# controllers' teardown and setup race in the kernel (an HCI_Reset timeout,
# once a list corruption oops).
no_controllers() {
    i=0
    while ls /sys/class/bluetooth/hci* > /dev/null 2>&1; do
        [ "$i" -lt $(($1 * 10)) ] || return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# gone PID SECONDS: true once PID has exited (a zombie counts as exited;
# waits up to SECONDS, then kills it).
gone() {
    i=0
    while [ -e "/proc/$1" ] && ! grep -q ') Z ' "/proc/$1/stat" 2> /dev/null; do
        if [ "$i" -ge $(($2 * 10)) ]; then
            kill -9 "$1" 2>/dev/null
            return 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
}

# bt_down: stops what bt_up started, bluetoothd before the controllers it
# manages, and returns once the controllers are unregistered.
bt_down() {
    for p in $bluetoothd $btvirt $bus; do
        kill "$p" 2>/dev/null && gone "$p" 5
        wait "$p" 2>/dev/null
    done
    bluetoothd= btvirt= bus=
    no_controllers 10 || echo "bt_down: controllers still registered: $(ls /sys/class/bluetooth)" >&2
}

# --- the call tests (call, call-headset, call-headset-msbc) ----------------

LOOP_PLAY=hw:CARD=Loopback,DEV=0,SUBDEV=0     # harness → daemon capture
LOOP_REC=hw:CARD=Loopback,DEV=1,SUBDEV=1      # daemon playback → harness

# station_toml: the configuration every call test puts on top of the board
# file (the test appends its own tables): the hub with one resident
# (flat-1, whose token this writes to /tmp/flat-1.token), ICE on loopback,
# the sound card with capture processing off (the loopback cable has no
# room, and the checks compare what went in with what came out).
station_toml() {
    (umask 077; echo "rig-flat-1-token-7d41c2e9a05b38f6" > /tmp/flat-1.token)
    cat <<'CONF'
[hub]
listen = "127.0.0.1:8080"
[hub.tls]
mode = "off"

[[hub.answerers]]
id = "flat-1"
name = "Flat 1"
token_file = "/tmp/flat-1.token"
groups = ["residents"]

# Call setup through two WebRTC stacks on an emulated CPU takes seconds,
# not the milliseconds the default timeout is sized for.
[call]
connect_timeout_ms = 60000

[ice]
bind_ips = ["127.0.0.1"]
# The resident here is intercomd's own media engine, which answers an
# `a=setup:active` offer with `active` too (two DTLS clients, no
# handshake); browsers answer `passive`. The integration tests with this
# answerer run the same way.
offer_dtls_client = false

[gpio]
debounce_ms = 50

[audio]
backend = "alsa"
echo_cancellation = false
auto_gain_control = false
high_pass_filter = false
noise_suppression = false

# The VM's CPU is emulated, floating point in software: the encoder's
# effort is what decides whether the call keeps up.
[audio.opus]
complexity = 0

[audio.alsa]
capture_device = "hw:CARD=Loopback,DEV=1,SUBDEV=0"
playback_device = "hw:CARD=Loopback,DEV=0,SUBDEV=1"
mixer_device = "hw:CARD=Loopback"
CONF
}

# start_duplex TAG SECONDS: `hw_rig duplex`, the sound around the door: a
# keyed 700 Hz tone into the station's capture PCM, its playback PCM
# recorded. Sets played, recorded (the raw files), duplex (the PID) and
# duplex_stop (the file that ends it).
start_duplex() {
    played=/tmp/$1-played.raw recorded=/tmp/$1-recorded.raw duplex_stop=/tmp/$1-duplex.stop
    rm -f "$duplex_stop"
    hw_rig duplex --play "$LOOP_PLAY" --record "$LOOP_REC" --played "$played" \
        --recorded "$recorded" --stop-file "$duplex_stop" --seconds "$2" > "/tmp/$1-duplex.log" 2>&1 &
    duplex=$!
}

# stop_duplex: ends `hw_rig duplex` (up to 5 s) and reaps it.
stop_duplex() {
    touch "$duplex_stop"
    i=0
    while kill -0 "$duplex" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill "$duplex" 2>/dev/null
    wait "$duplex" 2>/dev/null
}

# start_resident TAG: `hw_rig answer`, the resident flat-1 on the station's
# hub (it speaks 1000 Hz), taking commands from a FIFO held open on fd 4
# (`say`). Sets res (its output) and resident (the PID).
start_resident() {
    res=/tmp/$1-resident.log
    rm -f "/tmp/$1-resident.in"
    mkfifo "/tmp/$1-resident.in"
    hw_rig answer --hub ws://127.0.0.1:8080/ws --token-file /tmp/flat-1.token \
        < "/tmp/$1-resident.in" > "$res" 2>&1 &
    resident=$!
    exec 4> "/tmp/$1-resident.in"
}

# say COMMAND: one command to the resident.
say() { echo "$1" >&4; }

# listen [MAX_HZ]: the resident's next `heard` line (what it received in
# the last second, analysed up to MAX_HZ), empty after 10 s without one.
listen() {
    n=$(grep -c '^heard' "$res")
    say "listen${1:+ $1}"
    i=0
    while [ "$(grep -c '^heard' "$res")" -le "$n" ] && [ "$i" -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ "$(grep -c '^heard' "$res")" -gt "$n" ] && grep '^heard' "$res" | tail -n 1
}
