#!/usr/bin/env bash
# ArqonBus standard benchmark (make bench).
#
# Builds the server and the load generator into bin/, then for every scenario and run starts a
# fresh server on free ports (so no run inherits another's channels, memory or TIME_WAIT
# sockets), waits for it to accept, drives it with bin/arqonbus-load, stops it, and at the end
# prints one table. Everything has a timeout, and the server is killed on any exit.
#
# Environment:
#   BENCH_RUNS=3       run each scenario 3 times and report the median of each column (default 1)
#   BENCH_QUICK=1      short runs (1 s warm-up, 3 s measured) for a smoke test
#   BENCH_ONLY="..."   only the named scenarios: fanout-100x10 channels-1000 fanout-1000x1 idle-10k
#   ARQONBUS_*         passed to the server as usual (log level defaults to warn here)
#
# Results (one JSON line per run) and server logs go to perf/results/bench-<time>/.
# The load generator shares the two cores with the server: compare runs made side by side.
set -euo pipefail

cd "$(dirname "$0")/.."

RUNS="${BENCH_RUNS:-1}"
QUICK="${BENCH_QUICK:-0}"
ONLY="${BENCH_ONLY:-}"
if ! [[ "$RUNS" =~ ^[1-9][0-9]*$ ]]; then
	echo "bench: BENCH_RUNS must be a positive integer, not '$RUNS'" >&2
	exit 2
fi

if [[ "$QUICK" == 1 ]]; then
	TIMING=(-warmup 1s -duration 3s -drain 1s -hold 2s)
	LOAD_TIMEOUT=90
else
	TIMING=(-warmup 2s -duration 10s -drain 2s -hold 3s)
	LOAD_TIMEOUT=150
fi

# name|arguments of arqonbus-load
SCENARIOS=(
	"fanout-100x10|-scenario fanout -subs 100 -pubs 10 -rate 10000"
	"channels-1000|-scenario channels -channels 1000 -subs 1 -pubs 1 -rate 10000"
	"fanout-1000x1|-scenario fanout -subs 1000 -pubs 1 -rate 1000"
	"idle-10k|-scenario idle -conns 10000"
)

OUT="perf/results/bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p bin "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

SERVER_PID=""

stop_server() {
	if [[ -z "$SERVER_PID" ]]; then
		return 0
	fi
	local pid="$SERVER_PID"
	SERVER_PID=""
	kill -TERM "$pid" 2>/dev/null || true
	# Graceful shutdown is bounded by --shutdown-timeout; give it a little longer, then kill.
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "bench: server $pid did not stop within 5 s after SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}
trap stop_server EXIT
trap 'echo "bench: interrupted"; exit 130' INT TERM

echo "==> building the server: go build -o bin/arqonbus ./cmd/arqonbus"
timeout 300 go build -o bin/arqonbus ./cmd/arqonbus
echo "==> building the load generator: go build -o bin/arqonbus-load ./perf/cmd/arqonbus-load"
timeout 300 go build -o bin/arqonbus-load ./perf/cmd/arqonbus-load

# start_server LOG: starts bin/arqonbus on fresh free ports and waits until it accepts.
start_server() {
	local log="$1" ports
	mapfile -t ports < <(bin/arqonbus-load -free-ports 3)
	PORT="${ports[0]}"
	echo "    starting bin/arqonbus on 127.0.0.1:$PORT (http ${ports[1]}, telemetry ${ports[2]}), log $log"
	ARQONBUS_LOG_LEVEL="${ARQONBUS_LOG_LEVEL:-warn}" bin/arqonbus --host 127.0.0.1 --port "$PORT" \
		--http-port "${ports[1]}" --telemetry-port "${ports[2]}" --shutdown-timeout 3s >"$log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 150); do
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			echo "bench: the server exited during start-up; last lines of $log:"
			tail -n 20 "$log"
			SERVER_PID=""
			return 1
		fi
		if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "bench: the server did not accept on port $PORT within 15 s"
	stop_server
	return 1
}

FAILED=0
for entry in "${SCENARIOS[@]}"; do
	name="${entry%%|*}"
	read -r -a args <<<"${entry#*|}"
	if [[ -n "$ONLY" && " $ONLY " != *" $name "* ]]; then
		continue
	fi
	for run in $(seq 1 "$RUNS"); do
		echo "==> $name, run $run of $RUNS: arqonbus-load ${args[*]} ${TIMING[*]}"
		if ! start_server "$OUT/server-$name-$run.log"; then
			FAILED=1
			continue
		fi
		extra=()
		if [[ "$name" == idle-* ]]; then
			extra=(-server-pid "$SERVER_PID")
		fi
		one="$OUT/$name-$run.json"
		if timeout -k 5 "$LOAD_TIMEOUT" bin/arqonbus-load -addr "127.0.0.1:$PORT" "${args[@]}" \
			"${TIMING[@]}" "${extra[@]}" -json >"$one"; then
			cat "$one" >>"$RESULTS"
			bin/arqonbus-load -summarize "$one" | sed 's/^/    /'
		else
			echo "bench: $name run $run FAILED (exit $?); server log: $OUT/server-$name-$run.log"
			FAILED=1
		fi
		echo "    stopping the server"
		stop_server
	done
done

echo
if [[ -s "$RESULTS" ]]; then
	if [[ "$RUNS" -gt 1 ]]; then
		echo "==> results (median of $RUNS runs per column), also in $RESULTS"
	else
		echo "==> results, also in $RESULTS"
	fi
	bin/arqonbus-load -summarize "$RESULTS"
else
	echo "==> no results"
fi
if [[ "$FAILED" != 0 ]]; then
	echo "bench: some runs failed (see above)"
	exit 1
fi
