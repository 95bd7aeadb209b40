#!/usr/bin/env bash
# ArqonBus standard benchmark (make bench).
#
# Builds the server and the load generator into bin/, then for every scenario and run starts a
# fresh server on free ports (so no run inherits another's channels, memory or TIME_WAIT
# sockets), waits for it to accept, drives it with bin/arqonbus-load, stops it, and at the end
# prints one table. Everything has a timeout, and the server (and any Redis) is killed on exit.
#
# Environment:
#   BENCH_RUNS=3       run each scenario 3 times and report the median of each column (default 1)
#   BENCH_QUICK=1      short runs (1 s warm-up, 3 s measured) for a smoke test
#   BENCH_DURATION=5s  measured window of each run (default 10s; 3s with BENCH_QUICK)
#   BENCH_ONLY="..."   only the named scenarios, in that order. The standard set is
#                      fanout-100x10 channels-1000 fanout-1000x1 command-1000 idle-10k; besides,
#                      channels-<C>-<R>k (C channels with 1 publisher and 1 subscriber each,
#                      R thousand msg/s in total, e.g. channels-1000-50k) and command-<R>
#                      (1 handler, 10 requesters, R requests/s) may be named.
#   BENCH_STORAGE=redis  run the server with --storage redis against a fresh redis-server of its
#                      own for every run (free port, temp dir, no persistence to disk)
#   BENCH_COMPARE_STORAGE=1  run every scenario in memory and in redis mode, interleaved in the
#                      same run; rows are labelled memory / redis
#   BENCH_BASELINE=<git rev>  also build the server at that revision (git worktree in a temp dir)
#                      and run every scenario alternately on the baseline and on HEAD's binary;
#                      rows are labelled base / head
#   BENCH_RATE_LIMIT=1000000, BENCH_COMMAND_RATE=1000000  per-client message and command rates
#                      given to servers that have those limits (--rate-limit, --command-rate). The
#                      default keeps the token buckets running on every message but far above any
#                      scenario's per-client rate; 0 turns them off; "default" leaves the server's
#                      own defaults (2000 and 100/s), e.g. to see whether they bite.
#   BENCH_METRICS=1    read the server's /metrics during each run for storage writes, errors and
#                      persistence queue depth (default: on when redis is involved, else off)
#   ARQONBUS_*         passed to the server as usual (log level defaults to warn here)
#
# Results (one JSON line per run) and server logs go to perf/results/bench-<time>/.
# The load generator shares the two cores with the server: compare runs made side by side, and
# mind the load average printed before each run (other work on the machine shows there).
set -euo pipefail

cd "$(dirname "$0")/.."

RUNS="${BENCH_RUNS:-1}"
QUICK="${BENCH_QUICK:-0}"
ONLY="${BENCH_ONLY:-}"
STORAGE="${BENCH_STORAGE:-}"
COMPARE_STORAGE="${BENCH_COMPARE_STORAGE:-0}"
BASELINE="${BENCH_BASELINE:-}"
RATE_LIMIT="${BENCH_RATE_LIMIT:-1000000}"
COMMAND_RATE="${BENCH_COMMAND_RATE:-1000000}"
if ! [[ "$RUNS" =~ ^[1-9][0-9]*$ ]]; then
	echo "bench: BENCH_RUNS must be a positive integer, not '$RUNS'" >&2
	exit 2
fi
case "$STORAGE" in
"" | memory | redis) ;;
*)
	echo "bench: BENCH_STORAGE must be memory or redis, not '$STORAGE'" >&2
	exit 2
	;;
esac
for v in "$RATE_LIMIT" "$COMMAND_RATE"; do
	if ! [[ "$v" =~ ^[0-9]+$ || "$v" == default ]]; then
		echo "bench: BENCH_RATE_LIMIT and BENCH_COMMAND_RATE take a number or 'default', not '$v'" >&2
		exit 2
	fi
done

if [[ "$QUICK" == 1 ]]; then
	WARMUP=1s DURATION=3s DRAIN=1s HOLD=2s
else
	WARMUP=2s DURATION=10s DRAIN=2s HOLD=3s
fi
DURATION="${BENCH_DURATION:-$DURATION}"
if ! [[ "$DURATION" =~ ^[1-9][0-9]*s$ ]]; then
	echo "bench: BENCH_DURATION must be whole seconds like 5s, not '$DURATION'" >&2
	exit 2
fi
TIMING=(-warmup "$WARMUP" -duration "$DURATION" -drain "$DRAIN" -hold "$HOLD")
# Set-up of 11,000 connections, warm-up, window, drain, and slack.
LOAD_TIMEOUT=$((${DURATION%s} + 140))

# The standard set, in order: name|arguments of arqonbus-load
SCENARIOS=(
	"fanout-100x10|-scenario fanout -subs 100 -pubs 10 -rate 10000"
	"channels-1000|-scenario channels -channels 1000 -subs 1 -pubs 1 -rate 10000"
	"fanout-1000x1|-scenario fanout -subs 1000 -pubs 1 -rate 1000"
	"command-1000|-scenario command -handlers 1 -requesters 10 -rate 1000"
	"idle-10k|-scenario idle -conns 10000"
)

# scenario_args NAME prints the generator's arguments for NAME, or fails.
scenario_args() {
	local name="$1" entry
	for entry in "${SCENARIOS[@]}"; do
		if [[ "${entry%%|*}" == "$name" ]]; then
			echo "${entry#*|}"
			return 0
		fi
	done
	if [[ "$name" =~ ^channels-([1-9][0-9]*)-([1-9][0-9]*)k$ ]]; then
		echo "-scenario channels -channels ${BASH_REMATCH[1]} -subs 1 -pubs 1 -rate ${BASH_REMATCH[2]}000"
		return 0
	fi
	if [[ "$name" =~ ^command-([1-9][0-9]*)$ ]]; then
		echo "-scenario command -handlers 1 -requesters 10 -rate ${BASH_REMATCH[1]}"
		return 0
	fi
	return 1
}

SELECTED=()
if [[ -n "$ONLY" ]]; then
	for name in $ONLY; do
		if ! scenario_args "$name" >/dev/null; then
			echo "bench: unknown scenario '$name' in BENCH_ONLY" >&2
			exit 2
		fi
		SELECTED+=("$name")
	done
else
	for entry in "${SCENARIOS[@]}"; do
		SELECTED+=("${entry%%|*}")
	done
fi

OUT="perf/results/bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p bin "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
TMPROOT="$(mktemp -d "${TMPDIR:-/tmp}/arqonbus-bench.XXXXXX")"
WORKTREE=""

SERVER_PID=""
REDIS_PID=""
REDIS_PORT=""

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

stop_redis() {
	if [[ -z "$REDIS_PID" ]]; then
		return 0
	fi
	local pid="$REDIS_PID"
	REDIS_PID=""
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	stop_server
	stop_redis
	if [[ -n "$WORKTREE" ]]; then
		git worktree remove --force "$WORKTREE" 2>/dev/null || true
		WORKTREE=""
		git worktree prune 2>/dev/null || true
	fi
	rm -rf "$TMPROOT"
}
trap cleanup EXIT
trap 'echo "bench: interrupted"; exit 130' INT TERM

echo "==> building the server: go build -o bin/arqonbus ./cmd/arqonbus"
timeout 300 go build -o bin/arqonbus ./cmd/arqonbus
echo "==> building the load generator: go build -o bin/arqonbus-load ./perf/cmd/arqonbus-load"
timeout 300 go build -o bin/arqonbus-load ./perf/cmd/arqonbus-load

# Variants: every selected scenario runs once per variant in each round, interleaved.
V_LABEL=()
V_BIN=()
V_STORE=()
BINS=()
BIN_LABELS=()
if [[ -n "$BASELINE" ]]; then
	rev="$(git rev-parse --verify --quiet "$BASELINE^{commit}")" || {
		echo "bench: BENCH_BASELINE '$BASELINE' is not a commit here" >&2
		exit 2
	}
	WORKTREE="$TMPROOT/baseline-src"
	echo "==> building the baseline server at $BASELINE ($rev) in a temporary worktree"
	git worktree add --detach --quiet "$WORKTREE" "$rev"
	(cd "$WORKTREE" && timeout 300 go build -o "$TMPROOT/arqonbus-base" ./cmd/arqonbus)
	git worktree remove --force "$WORKTREE"
	WORKTREE=""
	git worktree prune
	BINS=("$TMPROOT/arqonbus-base" bin/arqonbus)
	BIN_LABELS=(base head)
	echo "    baseline: $(git log -1 --format='%h %s' "$rev")"
	echo "    head:     $(git log -1 --format='%h %s' HEAD)$(git diff --quiet HEAD -- . ':!perf/results' || echo ' (plus uncommitted changes)')"
else
	BINS=(bin/arqonbus)
	BIN_LABELS=("")
fi
if [[ "$COMPARE_STORAGE" == 1 ]]; then
	STORES=(memory redis)
	STORE_LABELS=(memory redis)
elif [[ -n "$STORAGE" ]]; then
	STORES=("$STORAGE")
	STORE_LABELS=("$STORAGE")
else
	STORES=(memory)
	STORE_LABELS=("")
fi
for b in "${!BINS[@]}"; do
	for s in "${!STORES[@]}"; do
		label="${BIN_LABELS[$b]}"
		if [[ -n "${STORE_LABELS[$s]}" ]]; then
			label="${label:+$label/}${STORE_LABELS[$s]}"
		fi
		V_LABEL+=("$label")
		V_BIN+=("${BINS[$b]}")
		V_STORE+=("${STORES[$s]}")
	done
done

# has_flag BIN FLAG: the binary knows --FLAG (an old binary rejects flags it does not know).
# The help is read whole first: with pipefail, grep -q closing the pipe early could fail it.
has_flag() {
	local help
	help="$("$1" --help 2>&1 || true)"
	[[ "$help" == *" -$2 "* ]]
}

USES_REDIS=0
for s in "${STORES[@]}"; do
	[[ "$s" == redis ]] && USES_REDIS=1
done
if [[ "$USES_REDIS" == 1 ]]; then
	if ! command -v redis-server >/dev/null; then
		echo "bench: redis mode needs redis-server (scripts/ensure-redis.sh installs it)" >&2
		exit 2
	fi
	for b in "${BINS[@]}"; do
		if ! has_flag "$b" redis-url; then
			echo "bench: $b has no --redis-url: it cannot run in redis mode" >&2
			exit 2
		fi
	done
fi
METRICS="${BENCH_METRICS:-$USES_REDIS}"

# start_redis LOGDIR: a fresh redis-server on a free port, no snapshots, no AOF, in a temp dir.
start_redis() {
	local dir
	dir="$(mktemp -d "$TMPROOT/redis.XXXXXX")"
	REDIS_PORT="$(bin/arqonbus-load -free-ports 1)"
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
		--daemonize no --loglevel warning >"$1" 2>&1 &
	REDIS_PID=$!
	for _ in $(seq 1 100); do
		if ! kill -0 "$REDIS_PID" 2>/dev/null; then
			echo "bench: redis-server exited during start-up:"
			tail -n 20 "$1"
			REDIS_PID=""
			return 1
		fi
		if [[ "$(timeout 1 redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; then
			return 0
		fi
		sleep 0.1
	done
	echo "bench: redis-server did not answer on port $REDIS_PORT within 10 s"
	stop_redis
	return 1
}

# start_server BIN STORAGE LOG: starts BIN on fresh free ports and waits until it accepts.
start_server() {
	local bin="$1" storage="$2" log="$3" ports flags=()
	mapfile -t ports < <(bin/arqonbus-load -free-ports 3)
	PORT="${ports[0]}"
	HTTP_PORT="${ports[1]}"
	if [[ "$RATE_LIMIT" != default ]] && has_flag "$bin" rate-limit; then
		flags+=(--rate-limit "$RATE_LIMIT")
	fi
	if [[ "$COMMAND_RATE" != default ]] && has_flag "$bin" command-rate; then
		flags+=(--command-rate "$COMMAND_RATE")
	fi
	if [[ "$storage" == redis ]]; then
		flags+=(--storage redis --redis-url "redis://127.0.0.1:$REDIS_PORT")
	fi
	echo "    starting $bin on 127.0.0.1:$PORT (http $HTTP_PORT, telemetry ${ports[2]}) ${flags[*]}, log $log"
	ARQONBUS_LOG_LEVEL="${ARQONBUS_LOG_LEVEL:-warn}" "$bin" --host 127.0.0.1 --port "$PORT" \
		--http-port "$HTTP_PORT" --telemetry-port "${ports[2]}" --shutdown-timeout 3s "${flags[@]}" >"$log" 2>&1 &
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

load1() { cut -d' ' -f1 /proc/loadavg; }

echo "==> scenarios: ${SELECTED[*]}; variants: ${V_LABEL[*]:-(one)}; $RUNS run(s) each;" \
	"rate limit $RATE_LIMIT, command rate $COMMAND_RATE; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
FAILED=0
for name in "${SELECTED[@]}"; do
	read -r -a args <<<"$(scenario_args "$name")"
	for run in $(seq 1 "$RUNS"); do
		for v in "${!V_BIN[@]}"; do
			label="${V_LABEL[$v]}"
			store="${V_STORE[$v]}"
			tag="$name${label:+-${label//\//-}}-$run"
			echo "==> $name${label:+ [$label]}, run $run of $RUNS (load average $(load1)): arqonbus-load ${args[*]} ${TIMING[*]}"
			echo "$tag $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
			if [[ "$store" == redis ]] && ! start_redis "$OUT/redis-$tag.log"; then
				FAILED=1
				continue
			fi
			if ! start_server "${V_BIN[$v]}" "$store" "$OUT/server-$tag.log"; then
				FAILED=1
				stop_redis
				continue
			fi
			extra=()
			if [[ "$name" == idle-* ]]; then
				extra+=(-server-pid "$SERVER_PID")
			fi
			if [[ -n "$label" ]]; then
				extra+=(-label "$label")
			fi
			if [[ "$METRICS" == 1 ]]; then
				extra+=(-metrics-url "http://127.0.0.1:$HTTP_PORT/metrics")
			fi
			one="$OUT/$tag.json"
			if timeout -k 5 "$LOAD_TIMEOUT" bin/arqonbus-load -addr "127.0.0.1:$PORT" "${args[@]}" \
				"${TIMING[@]}" "${extra[@]}" -json >"$one" 2>"$OUT/load-$tag.log"; then
				cat "$one" >>"$RESULTS"
				bin/arqonbus-load -summarize "$one" | sed 's/^/    /'
			else
				echo "bench: $name run $run${label:+ [$label]} FAILED (exit $?); logs: $OUT/load-$tag.log, $OUT/server-$tag.log"
				tail -n 5 "$OUT/load-$tag.log" | sed 's/^/    /'
				FAILED=1
			fi
			echo "    stopping the server"
			stop_server
			if [[ -n "$REDIS_PID" ]]; then
				echo "    redis: $(redis-cli -p "$REDIS_PORT" dbsize) keys, $(redis-cli -p "$REDIS_PORT" info memory | tr -d '\r' | grep '^used_memory_human:' | cut -d: -f2) used; stopping it"
				stop_redis
			fi
		done
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
	echo "load average before each run: $OUT/loadavg.txt"
else
	echo "==> no results"
fi
if [[ "$FAILED" != 0 ]]; then
	echo "bench: some runs failed (see above)"
	exit 1
fi
