#!/usr/bin/env bash
# Install the Debian packages ByteLocker needs when they are missing.
#   scripts/system-packages.sh        for the tests: mosquitto (tests start their
#                                     own broker), postgresql (their own cluster in
#                                     a temp dir), systemd (systemd-analyze) and
#                                     chromium (the dashboard's browser test)
#   scripts/system-packages.sh demo   for `make demo`: mosquitto only
# Run as root or with sudo available.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ "${1:-test}" != demo ]; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
    command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
    # The dashboard's browser test drives Debian's Chromium (never a downloaded build).
    [ -x /usr/bin/chromium ] || need+=(chromium)
fi

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "Installing Debian packages: ${need[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
