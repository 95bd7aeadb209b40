#!/usr/bin/env bash
# install-test-deps.sh: install what the test suites need, only when missing.
#
#   - Debian redis-server  (storage and cluster tests)            via scripts/ensure-redis.sh
#   - Debian redis-tools   (redis-cli: creates the test Redis Cluster in internal/redistest)
#   - Debian haproxy       (deploy/ config check, e2e load-balancer tests)
#   - Debian prometheus, systemd, strace (deploy/: promtool checks the rules
#     and dashboard queries, systemd-analyze verifies the unit, strace traces
#     the server against the unit's sandbox)
#   - Debian chromium      (e2e TestScenario1Browser, headless)   at /usr/bin/chromium
#   - Node packages ws and playwright-core, pinned by
#     e2e/node/package-lock.json, into e2e/node/node_modules      via npm ci
#
# Idempotent and quiet when everything is there. Needs only the package
# registries (Debian apt and npm); Go modules come through `go` itself.
# playwright-core never downloads a browser: the tests drive Debian's chromium.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf 'install-test-deps: %s\n' "$*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
	SUDO=(sudo)
fi

apt_updated=0
apt_install() { # apt_install REASON PACKAGE...
	local reason="$1"
	shift
	if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
		log "need Debian package(s) $* ($reason) but not root and no sudo: install them by hand"
		exit 1
	fi
	if [ "$apt_updated" = 0 ]; then
		log "running apt-get update once (package lists are needed to install $*)"
		"${SUDO[@]}" apt-get update
		apt_updated=1
	fi
	log "installing Debian package(s) $*: $reason"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# --- Debian packages --------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
	apt_install "Redis for storage=redis and cluster tests" redis-server
fi
# ensure-redis.sh is the single owner of the Redis check; after the install
# above it only confirms (and installs by itself when called alone).
ARQONBUS_APT_UPDATED=$apt_updated "$ROOT/scripts/ensure-redis.sh"

# redis-server normally pulls in redis-tools; a minimal install may not have it.
if ! command -v redis-cli >/dev/null 2>&1; then
	apt_install "redis-cli, which builds the 3-shard Redis Cluster of the cluster tests" redis-tools
	command -v redis-cli >/dev/null 2>&1 || { log "redis-cli still missing after install"; exit 1; }
else
	log "redis-cli already installed ($(command -v redis-cli)); nothing to do"
fi

# The e2e tests run haproxy in the foreground on loopback ports; the Debian
# package also installs (and may start) a system-wide haproxy on its own
# config, which the tests never use.
if ! command -v haproxy >/dev/null 2>&1; then
	apt_install "load balancer for deploy/haproxy (config check) and the e2e several-node tests" haproxy
	command -v haproxy >/dev/null 2>&1 || { log "haproxy still missing after install"; exit 1; }
else
	log "haproxy already installed ($(command -v haproxy)); nothing to do"
fi

# deploy/ checks: promtool (Debian ships it only in the prometheus package;
# where systemd runs, that package also starts a Prometheus on :9090, which
# the tests never use), systemd-analyze (verify and security work without
# systemd running) and strace.
for tool in promtool:prometheus systemd-analyze:systemd strace:strace; do
	if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
		apt_install "${tool%%:*} for the deploy/ checks" "${tool#*:}"
		command -v "${tool%%:*}" >/dev/null 2>&1 || { log "${tool%%:*} still missing after install"; exit 1; }
	else
		log "${tool%%:*} already installed ($(command -v "${tool%%:*}")); nothing to do"
	fi
done

if [ ! -x /usr/bin/chromium ]; then
	apt_install "headless browser for the e2e browser test (Scenario 1 JavaScript)" chromium
	[ -x /usr/bin/chromium ] || { log "/usr/bin/chromium still missing after install"; exit 1; }
else
	log "chromium already installed (/usr/bin/chromium); nothing to do"
fi

# The Python SDK (sdk/python) and its e2e tests run on Debian's python3 with
# Debian's websockets 10.x; always /usr/bin/python3, never a pyenv one.
if ! /usr/bin/python3 -c 'import websockets' >/dev/null 2>&1; then
	apt_install "websockets for the Python SDK (sdk/python) and its e2e tests" python3-websockets
	/usr/bin/python3 -c 'import websockets' >/dev/null 2>&1 || { log "python3-websockets still missing after install"; exit 1; }
else
	log "python3-websockets already installed ($(/usr/bin/python3 -c 'import websockets; print(websockets.__version__)')); nothing to do"
fi

# --- Node packages for e2e/node ---------------------------------------------
NODE_DIR="$ROOT/e2e/node"
for tool in node npm; do
	command -v "$tool" >/dev/null 2>&1 || { log "$tool is required for e2e/node but not on PATH"; exit 1; }
done
# npm ci writes node_modules/.package-lock.json; when it matches the committed
# lock file the install is current. Otherwise (missing, or lock changed) reinstall.
if [ -f "$NODE_DIR/node_modules/.package-lock.json" ] &&
	node -e '
		const fs = require("fs");
		const want = JSON.parse(fs.readFileSync(process.argv[1])).packages;
		const have = JSON.parse(fs.readFileSync(process.argv[2])).packages;
		for (const [k, v] of Object.entries(want)) {
			if (k === "") continue;
			if (!have[k] || have[k].version !== v.version) process.exit(1);
		}
	' "$NODE_DIR/package-lock.json" "$NODE_DIR/node_modules/.package-lock.json"; then
	log "e2e/node/node_modules is current; nothing to do"
else
	log "installing Node packages ws and playwright-core into e2e/node/node_modules (npm ci, pinned by package-lock.json) for the e2e tests"
	# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core has no install hook, but be explicit: we use Debian's chromium.
	(cd "$NODE_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
log "all test dependencies present"
