//! Links BlueZ's SBC library (Debian: libsbc-dev; Yocto: sbc), the codec of
//! wide band (mSBC) Bluetooth voice links, found with pkg-config so cross
//! builds take the target's copy.

fn main() {
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("1.0")
        .probe("sbc")
    {
        panic!(
            "libsbc not found through pkg-config ({e}); install it: \
             `apt-get install libsbc-dev` (scripts/setup.sh does)"
        );
    }
}
