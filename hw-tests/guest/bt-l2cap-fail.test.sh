# Failed ACL connects under an open L2CAP socket: l2ping from hci1 to hci0
# while hci0 does not page-scan, so every try ends in a Page Timeout and
# l2ping closes its socket while the kernel deletes the failed link.
# Debian's 6.1 kernel frees the link's hci_chan twice on that path (once
# with the link, once with the last L2CAP reference), a list corruption
# oops in l2ping's context; the rig's kernel carries
# hw-tests/kernel-l2cap-hchan.patch. Checks: every try fails cleanly and
# the kernel logs no oops.
. /guest/lib.sh

cleanup() { bt_down; }
trap cleanup EXIT

if ! bt_up > /tmp/bt-up.log; then
    fail "Bluetooth up for the failed connects" "$(cat /tmp/bt-up.log)"
    exit 0
fi
btmgmt --index 0 power on > /dev/null
btmgmt --index 0 connectable off > /dev/null
btmgmt --index 1 power on > /dev/null
before=$(dmesg | grep -c 'general protection fault\|list_del corruption\|BUG:')
tries=${BT_L2CAP_FAIL_TRIES:-10}
failed=0
i=0
while [ "$i" -lt "$tries" ]; do
    i=$((i + 1))
    if l2ping -i hci1 -c 1 -t 2 "$bt_ag" > /tmp/l2ping-fail.log 2>&1; then
        echo "try $i: l2ping reached hci0 that does not page-scan: $(cat /tmp/l2ping-fail.log)"
    else
        failed=$((failed + 1))
    fi
done
after=$(dmesg | grep -c 'general protection fault\|list_del corruption\|BUG:')
if [ "$failed" -eq "$tries" ] && [ "$after" -eq "$before" ]; then
    pass "$tries failed ACL connects under an L2CAP socket, no kernel oops ($(tail -n1 /tmp/l2ping-fail.log))"
else
    fail "$tries failed ACL connects under an L2CAP socket, no kernel oops" \
        "$failed of $tries failed, $((after - before)) oops: $(dmesg | grep -m1 -A1 'general protection fault\|list_del corruption\|BUG:')"
fi
