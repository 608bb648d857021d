#!/usr/bin/env bash
# Debian packages the tests need, installed once (idempotent): chromium drives the browser-call
# and dashboard tests through Python playwright (never `playwright install`: no downloads of its own);
# redis-server is started by the scale-out tests themselves (tests/support/redis_server.py), never as a service.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # the scale-out tests start their own
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
    command -v sudo >/dev/null 2>&1 || { echo "system-deps: need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1; }
else
    SUDO=
fi
echo "system-deps: installing ${need[*]} (Debian packages)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
