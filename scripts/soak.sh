#!/usr/bin/env bash
# ArqonBus soak (make soak): a long, mixed, realistic load against a fresh server, with one line
# a minute of the server's RSS, goroutines, open descriptors, channels and connections and of the
# latency clients see, and at the end a verdict: flat, or what grew (exit 1).
#
# Builds bin/arqonbus and bin/arqonbus-soak, starts the server on free loopback ports (and, with
# SOAK_STORAGE=redis, a private redis-server on a free port in a temp dir), runs the soak driver
# (perf/soak) for SOAK_DURATION, then stops everything. Every step has a timeout, and every
# process the script started is stopped on exit, also on Ctrl-C or an error.
#
# The load (see perf/soak/doc.go and `bin/arqonbus-soak -h` for every knob): chat fan-out with
# end-to-end latency and per-publisher sequence checks, a bulk feed, commands to handlers,
# history reads, leave/rejoin and reconnect with `since` (no gap, no duplicate across the seam),
# channel churn, connection churn, clients that stop reading (the server must cut them as slow
# consumers) and clients that send garbage. About 2,500 deliveries a second by default: a
# realistic rate that leaves the 2-core machine headroom.
#
# Environment:
#   SOAK_DURATION=30m    how long the load runs (Go duration: 90s, 3m, 1h)
#   SOAK_INTERVAL=1m     one report line per interval
#   SOAK_STORAGE=memory  or redis: the server runs with --storage redis against its own fresh
#                        redis-server (the server's --cluster default, auto, then makes it a
#                        one-node cluster; ARQONBUS_CLUSTER=false for Redis as history only)
#   SOAK_ARGS="..."      more arguments for bin/arqonbus-soak (rates, counts, tolerances), e.g.
#                        SOAK_ARGS="-chat-rate 20 -stalled 5"
#   ARQONBUS_*           passed to the server as usual (log level defaults to warn here, and
#                        ARQONBUS_CHANNEL_IDLE_TTL to 1m, so churned channels reach a steady count)
#
# Lines, summary.json and the server's log go to perf/results/soak-<time>/.
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION="${SOAK_DURATION:-30m}"
INTERVAL="${SOAK_INTERVAL:-1m}"
STORAGE="${SOAK_STORAGE:-memory}"
read -r -a EXTRA <<<"${SOAK_ARGS:-}"

# seconds DURATION: a Go duration made of h, m and s parts, in whole seconds (fails otherwise).
seconds() {
	local d="$1" total=0
	[[ "$d" =~ ^([0-9]+[hms])+$ ]] || return 1
	while [[ "$d" =~ ^([0-9]+)([hms])(.*)$ ]]; do
		case "${BASH_REMATCH[2]}" in
		h) total=$((total + BASH_REMATCH[1] * 3600)) ;;
		m) total=$((total + BASH_REMATCH[1] * 60)) ;;
		s) total=$((total + BASH_REMATCH[1])) ;;
		esac
		d="${BASH_REMATCH[3]}"
	done
	echo "$total"
}
if ! DURATION_S="$(seconds "$DURATION")" || [[ "$DURATION_S" -le 0 ]]; then
	echo "soak: SOAK_DURATION must be a duration like 30m, 90s or 1h30m, not '$DURATION'" >&2
	exit 2
fi
if ! INTERVAL_S="$(seconds "$INTERVAL")" || [[ "$INTERVAL_S" -le 0 || "$INTERVAL_S" -gt "$DURATION_S" ]]; then
	echo "soak: SOAK_INTERVAL must be a duration like 1m, at most SOAK_DURATION, not '$INTERVAL'" >&2
	exit 2
fi
case "$STORAGE" in
memory | redis) ;;
*)
	echo "soak: SOAK_STORAGE must be memory or redis, not '$STORAGE'" >&2
	exit 2
	;;
esac
# Connecting the clients (up to 2 min), the run, stopping the clients (up to 30 s), and slack.
DRIVER_TIMEOUT=$((DURATION_S + 240))

OUT="perf/results/soak-$(date +%Y%m%d-%H%M%S)"
mkdir -p bin "$OUT"
TMPROOT="$(mktemp -d "${TMPDIR:-/tmp}/arqonbus-soak.XXXXXX")"
SERVER_PID=""
REDIS_PID=""
DRIVER_PID=""

# stop_pid PID: SIGTERM, up to 5 s, then SIGKILL, and reap.
stop_pid() {
	local pid="$1"
	[[ -n "$pid" ]] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "soak: process $pid did not stop within 5 s after SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	trap '' INT TERM # a second Ctrl-C must not cut the clean-up short
	if [[ -n "$DRIVER_PID" ]]; then
		echo "==> stopping the soak driver (pid $DRIVER_PID)"
		stop_pid "$DRIVER_PID"
		DRIVER_PID=""
	fi
	if [[ -n "$SERVER_PID" ]]; then
		echo "==> stopping the server (pid $SERVER_PID)"
		stop_pid "$SERVER_PID"
		SERVER_PID=""
	fi
	if [[ -n "$REDIS_PID" ]]; then
		echo "==> stopping redis-server (pid $REDIS_PID)"
		stop_pid "$REDIS_PID"
		REDIS_PID=""
	fi
	rm -rf "$TMPROOT"
}
trap cleanup EXIT
trap 'echo "soak: interrupted"; exit 130' INT TERM

echo "==> building the server: go build -o bin/arqonbus ./cmd/arqonbus"
timeout 300 go build -o bin/arqonbus ./cmd/arqonbus
echo "==> building the soak driver: go build -o bin/arqonbus-soak ./perf/cmd/arqonbus-soak"
timeout 300 go build -o bin/arqonbus-soak ./perf/cmd/arqonbus-soak

mapfile -t PORTS < <(bin/arqonbus-soak -free-ports 4)
SERVER_FLAGS=()
DRIVER_FLAGS=()
if [[ "$STORAGE" == redis ]]; then
	if ! command -v redis-server >/dev/null; then
		echo "==> redis-server is missing: scripts/ensure-redis.sh installs it"
		bash scripts/ensure-redis.sh
	fi
	REDIS_PORT="${PORTS[3]}"
	mkdir -p "$TMPROOT/redis"
	echo "==> starting redis-server on 127.0.0.1:$REDIS_PORT (no persistence, dir $TMPROOT/redis), log $OUT/redis.log"
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMPROOT/redis" \
		--daemonize no --loglevel warning >"$OUT/redis.log" 2>&1 &
	REDIS_PID=$!
	for i in $(seq 1 100); do
		if ! kill -0 "$REDIS_PID" 2>/dev/null; then
			echo "soak: redis-server exited during start-up:"
			tail -n 20 "$OUT/redis.log"
			REDIS_PID=""
			exit 1
		fi
		[[ "$(timeout 1 redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && break
		if [[ "$i" == 100 ]]; then
			echo "soak: redis-server did not answer on port $REDIS_PORT within 10 s"
			exit 1
		fi
		sleep 0.1
	done
	SERVER_FLAGS+=(--storage redis --redis-url "redis://127.0.0.1:$REDIS_PORT")
	DRIVER_FLAGS+=(-redis-pid "$REDIS_PID")
fi

echo "==> starting the server on 127.0.0.1:${PORTS[0]} (http ${PORTS[1]}, telemetry ${PORTS[2]}) ${SERVER_FLAGS[*]}, log $OUT/server.log"
# Churned channels are evicted after --channel-idle-ttl (10m by default): a shorter one lets the
# soak reach its steady channel count within the warm-up, so that "flat" judges a steady state.
ARQONBUS_CHANNEL_IDLE_TTL="${ARQONBUS_CHANNEL_IDLE_TTL:-1m}" \
	ARQONBUS_LOG_LEVEL="${ARQONBUS_LOG_LEVEL:-warn}" bin/arqonbus --host 127.0.0.1 --port "${PORTS[0]}" \
	--http-port "${PORTS[1]}" --telemetry-port "${PORTS[2]}" --shutdown-timeout 3s \
	"${SERVER_FLAGS[@]}" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
deadline=$((SECONDS + 15))
until timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/${PORTS[0]}" 2>/dev/null; do
	if ! kill -0 "$SERVER_PID" 2>/dev/null; then
		echo "soak: the server exited during start-up; last lines of $OUT/server.log:"
		tail -n 20 "$OUT/server.log"
		SERVER_PID=""
		exit 1
	fi
	if ((SECONDS >= deadline)); then
		echo "soak: the server did not accept on port ${PORTS[0]} within 15 s"
		exit 1
	fi
	sleep 0.1
done

echo "==> soaking for $DURATION ($(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)); the driver stops by itself, at the latest after $((DRIVER_TIMEOUT / 60)) min"
# In the background, so that Ctrl-C reaches the trap at once (and it stops the run).
timeout -k 10 "$DRIVER_TIMEOUT" bin/arqonbus-soak -addr "127.0.0.1:${PORTS[0]}" \
	-metrics-url "http://127.0.0.1:${PORTS[1]}/metrics" -server-pid "$SERVER_PID" \
	-duration "$DURATION" -interval "$INTERVAL" -out "$OUT" "${DRIVER_FLAGS[@]}" "${EXTRA[@]}" &
DRIVER_PID=$!
rc=0
wait "$DRIVER_PID" || rc=$?
DRIVER_PID=""

echo "==> load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n "$REDIS_PID" ]]; then
	echo "    redis: $(timeout 2 redis-cli -p "$REDIS_PORT" dbsize) keys, $(timeout 2 redis-cli -p "$REDIS_PORT" info memory | tr -d '\r' | grep '^used_memory_human:' | cut -d: -f2) used"
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
	echo "soak: the server is no longer running; last lines of $OUT/server.log:"
	tail -n 20 "$OUT/server.log"
fi
lines="$(wc -l <"$OUT/server.log")"
if [[ "$lines" -gt 0 ]]; then
	echo "    the server logged $lines line(s) at ${ARQONBUS_LOG_LEVEL:-warn} and above; first ones:"
	head -n 5 "$OUT/server.log" | cut -c1-300 | sed 's/^/      /'
fi
case "$rc" in
0) echo "==> soak passed; results in $OUT" ;;
1) echo "==> soak FAILED: not flat, or violations (see above); results in $OUT" ;;
124 | 137) echo "==> soak FAILED: the driver did not finish within $DRIVER_TIMEOUT s; results in $OUT" ;;
*) echo "==> soak FAILED: the driver could not run (exit $rc); results in $OUT" ;;
esac
exit "$rc"
