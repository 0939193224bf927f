SUMMARY = "intercomd and what a door station needs beside it"
DESCRIPTION = "The door station daemon, ALSA utilities and GPIO tools for \
               commissioning, and BlueZ for headsets."
HOMEPAGE = "https://example.invalid/intercomd"
BUGTRACKER = "https://example.invalid/intercomd/issues"
SECTION = "net"
LICENSE = "MIT"

inherit packagegroup

RDEPENDS:${PN} = "alsa-utils-alsamixer \
                  alsa-utils-amixer \
                  alsa-utils-aplay \
                  bluez5 \
                  intercomd \
                  libgpiod-tools \
"
