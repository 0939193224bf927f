# The virtual HCI driver the Bluetooth tests build on: opening /dev/vhci
# creates a controller (hci_vhci registers it about a second after the open
# when no vendor packet chooses its type). Nothing answers the controller's
# HCI commands here, so the kernel's own init of hci0 times out (logged on
# the console); an emulator behind /dev/vhci (BlueZ's btvirt) is what the
# tests of the Bluetooth paths will need.
. /guest/lib.sh

if [ -c /dev/vhci ]; then
    pass "/dev/vhci present"
else
    fail "/dev/vhci present" "no character device"
    exit 0
fi

exec 3<>/dev/vhci
if wait_exists /sys/class/bluetooth/hci0 10; then
    pass "controller hci0 created"
else
    fail "controller hci0 created" "$(ls /sys/class/bluetooth 2>&1)"
fi
ls -l /sys/class/bluetooth/
exec 3>&-
no_controllers 10
