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
