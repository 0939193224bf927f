SUMMARY = "Door station daemon: call buttons, door relay, WebRTC audio to residents"
DESCRIPTION = "intercomd runs an IP door station: it reads the call buttons, \
               drives the LEDs and the door relay over GPIO, and carries two-way \
               audio (ALSA, Opus over WebRTC) to residents' answering pages. It \
               can run its own signaling hub, so a station works on a LAN with \
               no internet."
HOMEPAGE = "https://example.invalid/intercomd"
BUGTRACKER = "https://example.invalid/intercomd/issues"
SECTION = "net"
CVE_PRODUCT = "intercomd"
LICENSE = "MIT | Apache-2.0"
# Cargo.toml line 6: license = "MIT OR Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=6;endline=6;md5=86b31c7756a1a7962f28b62856ed4f05"

# libopus is built from the opusic-sys crate's bundled sources with CMake.
DEPENDS += "cmake-native"
# bluer talks to BlueZ over D-Bus through libdbus-1 (the libdbus-sys crate
# finds it with pkg-config).
DEPENDS += "dbus"
# Wide band (mSBC) Bluetooth voice uses BlueZ's SBC library (build.rs finds
# it with pkg-config); oe-core's sbc recipe.
DEPENDS += "sbc"

PV = "0.1.0+git"

SRC_URI = "git://example.invalid/intercomd.git;protocol=https;branch=main;destsuffix=git \
           file://intercomd.service \
           file://intercomd.sysusers \
           file://intercomd.tmpfiles \
           file://60-intercomd-gpio.rules \
           file://intercomd.catalog \
           "
SRCREV = "60e9cca59df5b225ab276aef23160166c9d21676"

# Releases before styhead unpack into WORKDIR and have no UNPACKDIR.
UNPACKDIR ??= "${WORKDIR}"
S = "${UNPACKDIR}/git"

# Every crate of Cargo.lock, fetched by BitBake (crate://) so that cargo
# builds offline. Regenerate with yocto/scripts/gen-crates-inc.py.
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

# The release profile of Cargo.toml, with fat LTO in one codegen unit as in
# `make arm64` (a fifth smaller binary). Cargo must not strip: OE splits the
# debug symbols into -dbg itself (QA check already-stripped).
CARGO_BUILD_FLAGS:append = " --locked"
export CARGO_PROFILE_RELEASE_LTO = "fat"
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS = "1"
export CARGO_PROFILE_RELEASE_STRIP = "false"

# The board file installed as /usr/lib/intercomd/config.d/20-board.toml:
# "sim" for a test bench, or a real board from config/boards/.
INTERCOMD_BOARD ??= "sim"

SYSTEMD_SERVICE:${PN} = "intercomd.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system gpio; --system bluetooth"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/intercomd --no-create-home \
                       --shell /sbin/nologin --user-group \
                       --groups gpio,audio,bluetooth intercomd"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${UNPACKDIR}/intercomd.service ${D}${systemd_system_unitdir}/intercomd.service

    install -d ${D}${nonarch_libdir}/sysusers.d
    install -m 0644 ${UNPACKDIR}/intercomd.sysusers ${D}${nonarch_libdir}/sysusers.d/intercomd.conf

    install -d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${UNPACKDIR}/intercomd.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/intercomd.conf

    install -d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${UNPACKDIR}/60-intercomd-gpio.rules ${D}${nonarch_base_libdir}/udev/rules.d/60-intercomd-gpio.rules

    install -d ${D}${nonarch_libdir}/systemd/catalog
    install -m 0644 ${UNPACKDIR}/intercomd.catalog ${D}${nonarch_libdir}/systemd/catalog/intercomd.catalog

    # Shipped configuration: the defaults are compiled in; the board file
    # and the site example are installed as files.
    install -d ${D}${nonarch_libdir}/intercomd/config.d
    install -m 0644 ${S}/config/boards/${INTERCOMD_BOARD}.toml ${D}${nonarch_libdir}/intercomd/config.d/20-board.toml
    install -d ${D}${sysconfdir}/intercomd/config.d
    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/config/site.example.toml ${D}${docdir}/${BPN}/site.example.toml
    install -m 0644 ${S}/docs/configuration.md ${S}/docs/technicians.md ${D}${docdir}/${BPN}/
}

FILES:${PN} += "${systemd_system_unitdir}/intercomd.service \
                ${nonarch_libdir}/sysusers.d/intercomd.conf \
                ${nonarch_libdir}/tmpfiles.d/intercomd.conf \
                ${nonarch_base_libdir}/udev/rules.d/60-intercomd-gpio.rules \
                ${nonarch_libdir}/systemd/catalog/intercomd.catalog \
                ${nonarch_libdir}/intercomd \
                ${sysconfdir}/intercomd \
                "

RDEPENDS:${PN} = "alsa-lib"
RRECOMMENDS:${PN} = "bluez5"
