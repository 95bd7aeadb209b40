#!/usr/bin/env bash
# examples/cluster/run.sh: quickstart Scenario 5 on one machine. A Redis,
# three ArqonBus nodes sharing it (one bus), and HAProxy in front of them,
# all on loopback; prints the endpoints and runs the quickstart's health
# checks.
#
#   examples/cluster/run.sh           run until Ctrl-C, then stop everything
#   examples/cluster/run.sh --check   self-test through the balancer, stop, exit 0/1
#
# Ports (environment, defaults in brackets): LB_PORT [9100] for clients,
# STATS_PORT [8404] HAProxy's stats, REDIS_PORT [6390], and per node
# NODE_PORTS ["9111 9112 9113"], NODE_HTTP_PORTS ["8081 8082 8083"],
# NODE_TELEMETRY_PORTS ["9121 9122 9123"]. REDIS_URL=redis://... uses a
# Redis of yours instead of starting one. ARQONBUS_BIN=path skips the build.
# Needs go (to build), redis-server and haproxy (scripts/install-test-deps.sh
# installs both), curl.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
log() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

CHECK=0
case "${1:-}" in
"") ;;
--check) CHECK=1 ;;
-h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) die "unknown argument $1 (see --help)" ;;
esac

LB_PORT="${LB_PORT:-9100}"
STATS_PORT="${STATS_PORT:-8404}"
REDIS_PORT="${REDIS_PORT:-6390}"
read -r -a PORTS <<<"${NODE_PORTS:-9111 9112 9113}"
read -r -a HTTP_PORTS <<<"${NODE_HTTP_PORTS:-8081 8082 8083}"
read -r -a TEL_PORTS <<<"${NODE_TELEMETRY_PORTS:-9121 9122 9123}"
N=${#PORTS[@]}
[ "${#HTTP_PORTS[@]}" = "$N" ] && [ "${#TEL_PORTS[@]}" = "$N" ] ||
	die "NODE_PORTS, NODE_HTTP_PORTS and NODE_TELEMETRY_PORTS need one port per node each"

HAPROXY="$(command -v haproxy || true)"
[ -n "$HAPROXY" ] || { [ -x /usr/sbin/haproxy ] && HAPROXY=/usr/sbin/haproxy; } ||
	die "haproxy not found (apt-get install haproxy, or scripts/install-test-deps.sh)"
command -v curl >/dev/null || die "curl not found"
if [ -z "${REDIS_URL:-}" ]; then
	command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server), or set REDIS_URL"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/arqonbus-cluster.XXXXXX")"
PIDS=()
NAMES=()
# Every process started here dies with this script, even when it is killed
# outright (setpriv sets the parent-death signal; util-linux, Linux only).
DIE_WITH_US=()
command -v setpriv >/dev/null && DIE_WITH_US=(setpriv --pdeathsig TERM)

stop_pids() { # stop_pids PID...: SIGTERM, up to 15 s, then SIGKILL
	[ $# -gt 0 ] || return 0
	kill -TERM "$@" 2>/dev/null || true
	for _ in $(seq 1 150); do
		local alive=0 p
		for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && return 0
		sleep 0.1
	done
	kill -KILL "$@" 2>/dev/null || true
}

cleanup() {
	local code=$?
	trap - EXIT INT TERM
	if [ ${#PIDS[@]} -gt 0 ]; then
		log "stopping (SIGTERM: the nodes drain, then close their clients with 1001)"
		# Redis last: the nodes flush their history to it and leave the cluster.
		local first=() i
		for i in "${!PIDS[@]}"; do
			[ "${NAMES[$i]}" = redis ] || first+=("${PIDS[$i]}")
		done
		stop_pids "${first[@]}"
		stop_pids "${PIDS[@]}"
		wait 2>/dev/null || true
	fi
	if [ "$code" != 0 ] && [ "$code" != 130 ]; then
		for f in "$WORK"/*.log; do
			[ -f "$f" ] || continue
			printf '\n--- %s (last lines) ---\n' "$(basename "$f")" >&2
			tail -n 20 "$f" >&2
		done
	fi
	if [ -n "${KEEP_WORK:-}" ]; then
		log "logs kept in $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # start NAME COMMAND...: in the background, output to $WORK/NAME.log
	local name="$1"
	shift
	"${DIE_WITH_US[@]}" "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	NAMES+=("$name")
}

all_alive() { # fails, naming it, when a process started here has exited
	local i
	for i in "${!PIDS[@]}"; do
		kill -0 "${PIDS[$i]}" 2>/dev/null || die "${NAMES[$i]} exited (see its log below)"
	done
}

wait_until() { # wait_until SECONDS WHAT COMMAND...
	local secs="$1" what="$2"
	shift 2
	for _ in $(seq 1 $((secs * 10))); do
		all_alive
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "$what: not after ${secs}s"
}

# --- binaries --------------------------------------------------------------
BIN="${ARQONBUS_BIN:-}"
if [ -z "$BIN" ]; then
	log "building arqonbus (go build ./cmd/arqonbus)"
	(cd "$ROOT" && go build -o "$WORK/arqonbus" ./cmd/arqonbus)
	BIN="$WORK/arqonbus"
fi

# --- Redis -----------------------------------------------------------------
if [ -z "${REDIS_URL:-}" ]; then
	REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
	start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK"
	wait_until 10 "redis-server on $REDIS_PORT" bash -c "exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT"
fi

# --- three nodes, one bus (quickstart Scenario 5's Redis configuration) -----
NODE_URLS=()
NODE_PIDS=()
for i in $(seq 0 $((N - 1))); do
	id="node$((i + 1))"
	start "$id" env \
		ARQONBUS_HOST=127.0.0.1 \
		ARQONBUS_PORT="${PORTS[$i]}" \
		ARQONBUS_HTTP_PORT="${HTTP_PORTS[$i]}" \
		ARQONBUS_TELEMETRY_PORT="${TEL_PORTS[$i]}" \
		ARQONBUS_NODE_ID="$id" \
		ARQONBUS_STORAGE=redis \
		ARQONBUS_REDIS_URL="$REDIS_URL" \
		ARQONBUS_HISTORY_SIZE=1000 \
		ARQONBUS_DRAIN_GRACE="${ARQONBUS_DRAIN_GRACE:-3s}" \
		"$BIN"
	NODE_PIDS+=("${PIDS[-1]}")
	NODE_URLS+=("http://127.0.0.1:${HTTP_PORTS[$i]}")
done
for i in $(seq 0 $((N - 1))); do
	wait_until 30 "node$((i + 1)) /ready on ${HTTP_PORTS[$i]}" curl -sf "${NODE_URLS[$i]}/ready"
done
for u in "${NODE_URLS[@]}"; do
	wait_until 15 "$u sees $N cluster nodes" bash -c "curl -sf '$u/health' | grep -q '\"nodes\":$N[,}]'"
done

# --- HAProxy: deploy/haproxy/arqonbus.cfg on loopback ----------------------
# Same defaults, balance, health check and server options as the shipped
# file; only global (no chroot, user or syslog: logs to stderr), the bind
# addresses and the server addresses change.
SERVERS=""
for i in $(seq 0 $((N - 1))); do
	SERVERS+="node$((i + 1)) 127.0.0.1:${PORTS[$i]} ${HTTP_PORTS[$i]};"
done
awk -v lb="127.0.0.1:$LB_PORT" -v stats="127.0.0.1:$STATS_PORT" -v servers="$SERVERS" '
	BEGIN { print "# Generated by examples/cluster/run.sh from deploy/haproxy/arqonbus.cfg." }
	/^[a-z]/ { section = $1; name = $2 }
	section == "global" {
		if ($1 == "global") print "global\n    log stderr format raw local0 info\n    maxconn 4000\n"
		next
	}
	$1 == "bind" { print "    bind " (name == "stats" ? stats : lb); next }
	$1 == "server" {
		if (done++) next
		# The first server line gives the options after "check port 8080".
		opts = $0; sub(/.*check port [0-9]+/, "", opts)
		n = split(servers, s, ";")
		for (j = 1; j < n; j++) {
			split(s[j], f, " ")
			print "    server " f[1] " " f[2] " check port " f[3] opts
		}
		next
	}
	{ print }
' "$ROOT/deploy/haproxy/arqonbus.cfg" >"$WORK/haproxy.cfg"
"$HAPROXY" -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejects $WORK/haproxy.cfg"
start haproxy "$HAPROXY" -db -f "$WORK/haproxy.cfg"
backends_up() {
	[ "$(curl -sf "http://127.0.0.1:$STATS_PORT/stats;csv" |
		awk -F, '$1 == "arqonbus_nodes" && $2 != "BACKEND" && $18 ~ /^UP/' | wc -l)" = "$N" ]
}
wait_until 15 "HAProxy sees all $N nodes UP" backends_up

# --- endpoints and the quickstart's health checks --------------------------
echo
log "up: Redis, $N ArqonBus nodes, HAProxy"
log "  clients:        ws://127.0.0.1:$LB_PORT/   (HAProxy, leastconn over the nodes)"
for i in $(seq 0 $((N - 1))); do
	log "  node$((i + 1)) (pid ${NODE_PIDS[$i]}): ws://127.0.0.1:${PORTS[$i]}/  health, metrics, dashboard: ${NODE_URLS[$i]}/"
done
log "  Redis:          $REDIS_URL"
log "  HAProxy stats:  http://127.0.0.1:$STATS_PORT/stats"
log "  logs:           $WORK/*.log"
echo
for u in "${NODE_URLS[@]}"; do
	log "\$ curl -f $u/health"
	curl -f -sS "$u/health"
	echo
	log "\$ curl $u/metrics | grep arqonbus_active_clients"
	curl -sS "$u/metrics" | grep arqonbus_active_clients
done
echo

if [ "$CHECK" = 1 ]; then
	CHECK_BIN="${CHECK_BIN:-}"
	if [ -z "$CHECK_BIN" ]; then
		(cd "$ROOT" && go build -o "$WORK/check" ./examples/cluster/check)
		CHECK_BIN="$WORK/check"
	fi
	nodes="$(
		IFS=,
		echo "${NODE_URLS[*]}"
	)"
	"$CHECK_BIN" -url "ws://127.0.0.1:$LB_PORT/" -nodes "$nodes" -timeout 30s
	exit 0
fi

log "running; Ctrl-C stops everything. Try a rolling restart by hand: kill -TERM ${NODE_PIDS[0]}"
log "(node1 drains: /ready 503, HAProxy takes it out, its clients reconnect to the others)."
while true; do
	sleep 1 &
	wait $! || true
done
