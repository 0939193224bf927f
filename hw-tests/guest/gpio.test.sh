# The GPIO backend against gpio-sim: a simulated chip whose line names match
# config/boards/hil-vm.toml, the daemon requests the lines through the
# character device, and the test drives inputs through gpio-sim's `pull`
# attribute and reads outputs through its `value` attribute.
. /guest/lib.sh

# Timeouts are generous: the VM runs under TCG (no KVM), a debug build.
T=${HW_WAIT:-60}

sim=/sys/kernel/config/gpio-sim/hil
mkdir "$sim" "$sim/bank0"
echo 4 > "$sim/bank0/num_lines"
n=0
for name in HIL_RELAY HIL_LED_STATUS HIL_CALL_BTN HIL_EXIT_BTN; do
    mkdir "$sim/bank0/line$n"
    echo "$name" > "$sim/bank0/line$n/name"
    n=$((n + 1))
done
if echo 1 > "$sim/live"; then
    pass "gpio-sim chip created"
else
    fail "gpio-sim chip created" "writing live failed"
    exit 0
fi
dev=$(cat "$sim/dev_name")
chip=$(cat "$sim/bank0/chip_name")
lines=/sys/devices/platform/$dev/$chip
echo "chip $chip ($dev), lines under $lines"
relay=$lines/sim_gpio0
led=$lines/sim_gpio1
call=$lines/sim_gpio2
exit_btn=$lines/sim_gpio3

# Buttons idle high (pull-up, active low), as on the board.
echo pull-up > "$call/pull"
echo pull-up > "$exit_btn/pull"

log=/tmp/intercomd.log
intercomd run --config /etc/intercomd/hil-vm.toml > "$log" 2>&1 &
pid=$!

if wait_for "$log" "door relay line requested" "$T"; then
    pass "daemon requests the GPIO lines"
else
    fail "daemon requests the GPIO lines" "no 'door relay line requested' in the log"
fi
# Inputs are requested after the outputs, with their bias (which resets
# gpio-sim's pull): press nothing before the daemon is ready.
if wait_for "$log" "intercomd ready" "$T"; then
    pass "daemon ready"
else
    fail "daemon ready" "no 'intercomd ready' in the log"
fi

if [ "$(cat "$relay/value")" = 0 ]; then
    pass "relay line de-energised at start"
else
    fail "relay line de-energised at start" "value is $(cat "$relay/value")"
fi

if kill -0 "$pid" 2>/dev/null; then
    pass "daemon running"
else
    fail "daemon running" "exited"
fi

# Press the call button: pull the line low.
echo pull-down > "$call/pull"
if wait_for "$log" "call button pressed" "$T"; then
    pass "call button press logged"
else
    fail "call button press logged" "no 'call button pressed' in the log"
fi
echo pull-up > "$call/pull"

# The exit button opens the door: the relay line goes high.
echo pull-down > "$exit_btn/pull"
sleep 0.2
echo pull-up > "$exit_btn/pull"
if wait_value "$relay/value" 1 "$T"; then
    pass "exit button energises the relay"
else
    fail "exit button energises the relay" "relay value stays $(cat "$relay/value")"
fi

stop_daemon "$pid" "daemon"

# No debounce at all (gpio.debounce_ms = 0, a sensor with clean edges): the
# lines are requested without a kernel debounce period and still give
# edges.
printf '[gpio]\ndebounce_ms = 0\n' > /tmp/no-debounce.toml
log0=/tmp/intercomd-no-debounce.log
intercomd run --config /etc/intercomd/hil-vm.toml --config /tmp/no-debounce.toml > "$log0" 2>&1 &
pid=$!
wait_for "$log0" "intercomd ready" "$T" || echo "daemon without debounce not ready: $(tail -n 3 "$log0")"
echo pull-down > "$call/pull"
if wait_for "$log0" "call button pressed" "$T"; then
    pass "call button press logged with gpio.debounce_ms = 0"
else
    fail "call button press logged with gpio.debounce_ms = 0" "no 'call button pressed' in the log"
fi
echo pull-up > "$call/pull"
stop_daemon "$pid" "daemon without debounce"

echo "--- daemon log"
cat "$log"
echo "--- daemon log, no debounce"
cat "$log0"
