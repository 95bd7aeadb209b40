#!/usr/bin/env bash
# ensure-redis.sh: make sure redis-server is installed (Debian package).
#
# Used by install-test-deps.sh and, on its own, by tests and benchmarks that
# need a local Redis (storage=redis, clustering). Idempotent: does nothing when
# redis-server is already on PATH. It only installs; it does not start Redis,
# because each test starts its own instance on a free loopback port.
set -euo pipefail

log() { printf 'ensure-redis: %s\n' "$*" >&2; }

if command -v redis-server >/dev/null 2>&1; then
	log "redis-server already installed ($(command -v redis-server)); nothing to do"
	exit 0
fi

# Root runs apt-get directly; otherwise use sudo when there is one.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo)
	else
		log "redis-server is missing and we are not root and have no sudo: install the Debian package redis-server by hand"
		exit 1
	fi
fi

# install-test-deps.sh sets ARQONBUS_APT_UPDATED=1 after its single apt-get update.
if [ "${ARQONBUS_APT_UPDATED:-0}" != 1 ]; then
	log "running apt-get update (package lists are needed to install redis-server)"
	"${SUDO[@]}" apt-get update
fi
log "installing Debian package redis-server: Redis for storage=redis and cluster tests"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
# The Debian package may start a system-wide redis on 6379; tests never rely on it.
command -v redis-server >/dev/null 2>&1 || { log "redis-server still not on PATH after install"; exit 1; }
log "installed $(redis-server --version)"
