#!/bin/sh
# Installs the Debian packages named as arguments that are not installed
# yet; packages already present are not touched. With sudo when not root.
#   scripts/apt-install-missing.sh LABEL PKG...
# LABEL prefixes the one progress line (on stderr).
set -eu
label=$1
shift
missing=
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing="$missing $p"
done
[ -n "$missing" ] || exit 0
echo "$label: installing$missing" >&2
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
# The package lists of a fresh machine may be missing or stale: update
# only when the install fails without it.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2 ||
    { $sudo apt-get update -qq >&2 &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2; }
