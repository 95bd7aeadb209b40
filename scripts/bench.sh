#!/usr/bin/env bash
# ArqonBus standard benchmark (make bench).
#
# Builds the server and the load generator into bin/, then for every scenario and run starts a
# fresh server (or several nodes) on free ports, and a fresh redis-server when the variant needs
# one (so no run inherits another's channels, memory or TIME_WAIT sockets), waits for every node
# to accept, drives them with bin/arqonbus-load, stops them, and at the end prints one table.
# Everything has a timeout, and every process the script started (servers, Redis, the load
# generator) is stopped on exit, also on Ctrl-C or an error.
#
# Every run reports CPU: the script gives the generator the pid of every server it started
# (-server-pids) and of Redis (-redis-pid), and the table shows the CPU seconds the servers spent
# in the measured window (summed, and per node when there are several), the servers' CPU per
# delivery and per message in microseconds, the generator's own CPU and Redis's.
#
# Environment:
#   BENCH_RUNS=3       run each scenario 3 times and report the median of each column (default 1)
#   BENCH_QUICK=1      short runs (1 s warm-up, 3 s measured) for a smoke test
#   BENCH_DURATION=5s  measured window of each run (default 10s; 3s with BENCH_QUICK)
#   BENCH_ONLY="..."   only the named scenarios, in that order. The standard set is
#                      fanout-100x10 channels-1000 fanout-1000x1 command-1000 idle-10k; besides,
#                      channels-<C>-<R>k (C channels with 1 publisher and 1 subscriber each,
#                      R thousand msg/s in total, e.g. channels-1000-50k), fanout-<S>x<P>-<R>k
#                      (S subscribers of one channel, P publishers, R thousand msg/s in total,
#                      e.g. fanout-100x10-3k: 300k deliveries/s) and command-<R>
#                      (1 handler, 10 requesters, R requests/s) may be named.
#   BENCH_STORAGE=redis  run the server with --storage redis against a fresh redis-server of its
#                      own for every run (free port, temp dir, no persistence to disk). The server's
#                      own --cluster default applies (auto: a one-node cluster); see cluster-1 and
#                      standalone-redis below to choose.
#   BENCH_COMPARE_STORAGE=1  run every scenario in memory and in redis mode, interleaved in the
#                      same run; rows are labelled memory / redis
#   BENCH_TOPOLOGIES="memory cluster-1 cluster-3"  instead of BENCH_STORAGE/BENCH_COMPARE_STORAGE
#                      (setting both is refused): the variants to interleave in each round, rows
#                      labelled by their name:
#                        memory            one node, memory storage (the default topology)
#                        standalone-redis  one node, --storage redis --cluster false (Redis for
#                                          history only)
#                        cluster-1         one node, --storage redis --cluster true (every event
#                                          goes through Redis and back)
#                        cluster-3         three nodes on one redis-server, all --cluster true,
#                                          --node-id bench-n0..n2; subscribers (and idle
#                                          connections) spread over the three round robin
#                                          (-sub-addrs), command handlers on nodes 1 and 2,
#                                          publishers and requesters on node 0 (every event and
#                                          command crosses nodes). The run starts once node 0's /health shows
#                                          checks.cluster.nodes == 3 (waited for up to 15 s).
#                      Every variant gets a fresh redis-server when it needs one, and fresh nodes.
#                      Server CPU is summed over the nodes; /metrics (storage columns) is node 0's.
#   BENCH_BASELINE=<git rev>  also build the server at that revision (git worktree in a temp dir)
#                      and run every scenario alternately on the baseline and on HEAD's binary;
#                      rows are labelled base / head (base/cluster-3 ... with BENCH_TOPOLOGIES)
#   BENCH_PIN=1        pin the server(s) to CPU 0 and the load generator to CPU 1 (taskset), so
#                      that each side's CPU shows which one ran out; a pinned server sees one
#                      CPU (one event loop). Unpinned, both share the two cores.
#   BENCH_RATE_LIMIT=1000000, BENCH_COMMAND_RATE=1000000  per-client message and command rates
#                      given to servers that have those limits (--rate-limit, --command-rate). The
#                      default keeps the token buckets running on every message but far above any
#                      scenario's per-client rate; 0 turns them off; "default" leaves the server's
#                      own defaults (2000 and 100/s), e.g. to see whether they bite.
#   BENCH_METRICS=1    read the server's /metrics during each run for storage writes, errors and
#                      persistence queue depth (default: on when redis is involved, else off); in
#                      a cluster the publish script stores each event, and those count as stored
#   ARQONBUS_*         passed to the server as usual (log level defaults to warn here)
#
# Examples:
#   BENCH_QUICK=1 BENCH_ONLY="fanout-100x10" BENCH_TOPOLOGIES="memory cluster-1 cluster-3" make bench
#   BENCH_RUNS=3 BENCH_ONLY="channels-1000-10k channels-1000-20k channels-1000-40k" \
#       BENCH_TOPOLOGIES="cluster-3" make bench        # how far one Redis carries the cluster
#   BENCH_RUNS=3 BENCH_TOPOLOGIES="memory standalone-redis cluster-1" make bench
#
# Results (one JSON line per run) and server logs (one per node, at warn and above) go to
# perf/results/bench-<time>/; after each run the script says how many lines each node logged.
# The load generator shares the two cores with the server: compare runs made side by side, and
# mind the load average printed before each run (other work on the machine shows there).
set -euo pipefail

cd "$(dirname "$0")/.."

RUNS="${BENCH_RUNS:-1}"
PIN_SERVER=(env)
PIN_LOAD=(env)
if [[ "${BENCH_PIN:-0}" == 1 ]]; then
	command -v taskset >/dev/null || { echo "bench: BENCH_PIN=1 needs taskset (util-linux)" >&2; exit 2; }
	PIN_SERVER=(taskset -c 0)
	PIN_LOAD=(taskset -c 1)
	echo "==> pinned: servers on CPU 0, the load generator on CPU 1"
fi
QUICK="${BENCH_QUICK:-0}"
ONLY="${BENCH_ONLY:-}"
STORAGE="${BENCH_STORAGE:-}"
COMPARE_STORAGE="${BENCH_COMPARE_STORAGE:-0}"
TOPOLOGIES="${BENCH_TOPOLOGIES:-}"
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
for t in $TOPOLOGIES; do
	case "$t" in
	memory | standalone-redis | cluster-1 | cluster-3) ;;
	*)
		echo "bench: unknown topology '$t' in BENCH_TOPOLOGIES (memory, standalone-redis, cluster-1, cluster-3)" >&2
		exit 2
		;;
	esac
done
if [[ -n "${TOPOLOGIES// /}" && (-n "$STORAGE" || "$COMPARE_STORAGE" == 1) ]]; then
	echo "bench: BENCH_TOPOLOGIES replaces BENCH_STORAGE and BENCH_COMPARE_STORAGE: use one or the other" >&2
	exit 2
fi
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
	if [[ "$name" =~ ^fanout-([1-9][0-9]*)x([1-9][0-9]*)-([1-9][0-9]*)k$ ]]; then
		echo "-scenario fanout -subs ${BASH_REMATCH[1]} -pubs ${BASH_REMATCH[2]} -rate ${BASH_REMATCH[3]}000"
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

SERVER_PIDS=() # the nodes of the current run, node 0 first
PORTS=()       # their client WebSocket ports
HTTP_PORTS=()  # their HTTP ports (health, metrics)
REDIS_PID=""
REDIS_PORT=""
LOAD_PID=""

# stop_pids GRACE_TENTHS PID...: SIGTERM to all, wait up to GRACE_TENTHS tenths of a second for
# all of them together, then SIGKILL what is left, and reap.
stop_pids() {
	local grace="$1" pid left
	shift
	[[ $# -gt 0 ]] || return 0
	kill -TERM "$@" 2>/dev/null || true
	for _ in $(seq 1 "$grace"); do
		left=0
		for pid in "$@"; do
			kill -0 "$pid" 2>/dev/null && left=1
		done
		[[ "$left" == 1 ]] || break
		sleep 0.1
	done
	for pid in "$@"; do
		if kill -0 "$pid" 2>/dev/null; then
			echo "bench: process $pid did not stop within $((grace / 10)) s after SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for pid in "$@"; do
		wait "$pid" 2>/dev/null || true
	done
}

stop_servers() {
	local pids=("${SERVER_PIDS[@]}")
	SERVER_PIDS=()
	# Graceful shutdown is bounded by --shutdown-timeout; give it a little longer, then kill.
	stop_pids 50 "${pids[@]}"
}

stop_redis() {
	local pid="$REDIS_PID"
	REDIS_PID=""
	[[ -n "$pid" ]] && stop_pids 50 "$pid"
	return 0
}

stop_load() {
	local pid="$LOAD_PID"
	LOAD_PID=""
	[[ -n "$pid" ]] && stop_pids 50 "$pid"
	return 0
}

cleanup() {
	trap '' INT TERM # a second Ctrl-C must not cut the clean-up short
	stop_load
	stop_servers
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
# Topologies: memory, redis (BENCH_STORAGE=redis: --storage redis, the server's own --cluster
# default), standalone-redis, cluster-1, cluster-3.
if [[ -n "${TOPOLOGIES// /}" ]]; then
	read -r -a TOPOS <<<"$TOPOLOGIES"
	TOPO_LABELS=("${TOPOS[@]}")
elif [[ "$COMPARE_STORAGE" == 1 ]]; then
	TOPOS=(memory redis)
	TOPO_LABELS=(memory redis)
elif [[ -n "$STORAGE" ]]; then
	TOPOS=("$STORAGE")
	TOPO_LABELS=("$STORAGE")
else
	TOPOS=(memory)
	TOPO_LABELS=("")
fi
V_TOPO=()
for b in "${!BINS[@]}"; do
	for t in "${!TOPOS[@]}"; do
		label="${BIN_LABELS[$b]}"
		if [[ -n "${TOPO_LABELS[$t]}" ]]; then
			label="${label:+$label/}${TOPO_LABELS[$t]}"
		fi
		V_LABEL+=("$label")
		V_BIN+=("${BINS[$b]}")
		V_TOPO+=("${TOPOS[$t]}")
	done
done

topo_nodes() { [[ "$1" == cluster-3 ]] && echo 3 || echo 1; }
topo_redis() { [[ "$1" != memory ]]; }
topo_clustered() { [[ "$1" == cluster-* ]]; }

# has_flag BIN FLAG: the binary knows --FLAG (an old binary rejects flags it does not know).
# The help is read whole first: with pipefail, grep -q closing the pipe early could fail it.
has_flag() {
	local help
	help="$("$1" --help 2>&1 || true)"
	[[ "$help" == *" -$2 "* ]]
}

USES_REDIS=0
USES_CLUSTER=0
for t in "${TOPOS[@]}"; do
	topo_redis "$t" && USES_REDIS=1
	topo_clustered "$t" && USES_CLUSTER=1
	for b in "${BINS[@]}"; do
		for f in $(case "$t" in
			redis) echo redis-url ;;
			standalone-redis) echo redis-url cluster ;;
			cluster-*) echo redis-url cluster node-id ;;
			esac); do
			if ! has_flag "$b" "$f"; then
				echo "bench: $b has no --$f: it cannot run the $t variant" >&2
				exit 2
			fi
		done
	done
done
if [[ "$USES_REDIS" == 1 ]] && ! command -v redis-server >/dev/null; then
	echo "bench: redis mode needs redis-server (scripts/ensure-redis.sh installs it)" >&2
	exit 2
fi
if [[ "$USES_CLUSTER" == 1 ]] && ! command -v curl >/dev/null; then
	echo "bench: the cluster variants need curl (to read /health)" >&2
	exit 2
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

# health_nodes HTTP_PORT: checks.cluster.nodes of that node's /health (0 when absent).
health_nodes() {
	local body
	body="$(curl -s --max-time 1 "http://127.0.0.1:$1/health" 2>/dev/null)" || return 1
	if command -v jq >/dev/null; then
		jq -r '.checks.cluster.nodes // 0' <<<"$body" 2>/dev/null
	else
		# /health has one "nodes" key, under checks.cluster.
		grep -o '"nodes": *[0-9]*' <<<"$body" | grep -o '[0-9]*$' || echo 0
	fi
}

# start_nodes BIN TOPOLOGY LOGPREFIX: starts the topology's nodes on fresh free ports (logs
# LOGPREFIX.log, or LOGPREFIX-nK.log for several), waits until every one accepts, and for a
# cluster until node 0 counts every node in /health. Fills SERVER_PIDS, PORTS and HTTP_PORTS.
start_nodes() {
	local bin="$1" topo="$2" logp="$3" n ports flags=() i log pid deadline nodes
	n="$(topo_nodes "$topo")"
	mapfile -t ports < <(bin/arqonbus-load -free-ports $((3 * n)))
	if [[ "$RATE_LIMIT" != default ]] && has_flag "$bin" rate-limit; then
		flags+=(--rate-limit "$RATE_LIMIT")
	fi
	if [[ "$COMMAND_RATE" != default ]] && has_flag "$bin" command-rate; then
		flags+=(--command-rate "$COMMAND_RATE")
	fi
	if topo_redis "$topo"; then
		flags+=(--storage redis --redis-url "redis://127.0.0.1:$REDIS_PORT")
	fi
	case "$topo" in
	standalone-redis) flags+=(--cluster false) ;;
	cluster-*) flags+=(--cluster true) ;;
	esac
	SERVER_PIDS=() PORTS=() HTTP_PORTS=()
	for ((i = 0; i < n; i++)); do
		PORTS+=("${ports[3 * i]}")
		HTTP_PORTS+=("${ports[3 * i + 1]}")
		local node=()
		if topo_clustered "$topo"; then
			node=(--node-id "bench-n$i")
		fi
		log="$logp.log"
		[[ "$n" -gt 1 ]] && log="$logp-n$i.log"
		echo "    starting $bin on 127.0.0.1:${PORTS[i]} (http ${HTTP_PORTS[i]}, telemetry ${ports[3 * i + 2]}) ${flags[*]} ${node[*]}, log $log"
		ARQONBUS_LOG_LEVEL="${ARQONBUS_LOG_LEVEL:-warn}" "${PIN_SERVER[@]}" "$bin" --host 127.0.0.1 --port "${PORTS[i]}" \
			--http-port "${HTTP_PORTS[i]}" --telemetry-port "${ports[3 * i + 2]}" --shutdown-timeout 3s \
			"${flags[@]}" "${node[@]}" >"$log" 2>&1 &
		SERVER_PIDS+=($!)
	done
	deadline=$((SECONDS + 15))
	for ((i = 0; i < n; i++)); do
		pid="${SERVER_PIDS[i]}"
		log="$logp.log"
		[[ "$n" -gt 1 ]] && log="$logp-n$i.log"
		while :; do
			if ! kill -0 "$pid" 2>/dev/null; then
				echo "bench: node $i exited during start-up; last lines of $log:"
				tail -n 20 "$log"
				stop_servers
				return 1
			fi
			if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/${PORTS[i]}" 2>/dev/null; then
				break
			fi
			if ((SECONDS >= deadline)); then
				echo "bench: node $i did not accept on port ${PORTS[i]} within 15 s"
				stop_servers
				return 1
			fi
			sleep 0.1
		done
	done
	if topo_clustered "$topo"; then
		deadline=$((SECONDS + 15))
		while :; do
			nodes="$(health_nodes "${HTTP_PORTS[0]}" || true)"
			[[ "$nodes" == "$n" ]] && break
			if ((SECONDS >= deadline)); then
				echo "bench: node 0's /health counted ${nodes:-no} cluster nodes after 15 s, not $n:"
				curl -s --max-time 1 "http://127.0.0.1:${HTTP_PORTS[0]}/health" | sed 's/^/    /' || true
				echo
				stop_servers
				return 1
			fi
			sleep 0.1
		done
		echo "    node 0 sees $n cluster node(s)"
	fi
	return 0
}

# report_logs LOGPREFIX: how much each node logged (warn and above by default), with a sample.
report_logs() {
	local f lines
	for f in "$1".log "$1"-n*.log; do
		[[ -f "$f" ]] || continue
		lines="$(wc -l <"$f")"
		if [[ "$lines" -gt 0 ]]; then
			echo "    $(basename "$f"): $lines log line(s), first ones:"
			head -n 3 "$f" | cut -c1-300 | sed 's/^/      /'
		fi
	done
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
			topo="${V_TOPO[$v]}"
			tag="$name${label:+-${label//\//-}}-$run"
			echo "==> $name${label:+ [$label]}, run $run of $RUNS (load average $(load1)): arqonbus-load ${args[*]} ${TIMING[*]}"
			echo "$tag $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
			if topo_redis "$topo" && ! start_redis "$OUT/redis-$tag.log"; then
				FAILED=1
				continue
			fi
			if ! start_nodes "${V_BIN[$v]}" "$topo" "$OUT/server-$tag"; then
				FAILED=1
				stop_redis
				continue
			fi
			extra=(-server-pids "$(
				IFS=,
				echo "${SERVER_PIDS[*]}"
			)")
			if [[ -n "$REDIS_PID" ]]; then
				extra+=(-redis-pid "$REDIS_PID")
			fi
			if [[ "${#PORTS[@]}" -gt 1 ]]; then
				extra+=(-sub-addrs "$(printf '127.0.0.1:%s,' "${PORTS[@]}" | sed 's/,$//')")
			fi
			if [[ -n "$label" ]]; then
				extra+=(-label "$label")
			fi
			if [[ "$METRICS" == 1 ]]; then
				extra+=(-metrics-url "http://127.0.0.1:${HTTP_PORTS[0]}/metrics")
			fi
			one="$OUT/$tag.json"
			# In the background, so that Ctrl-C reaches the trap at once (and it stops the run).
			timeout -k 5 "$LOAD_TIMEOUT" "${PIN_LOAD[@]}" bin/arqonbus-load -addr "127.0.0.1:${PORTS[0]}" "${args[@]}" \
				"${TIMING[@]}" "${extra[@]}" -json >"$one" 2>"$OUT/load-$tag.log" &
			LOAD_PID=$!
			rc=0
			wait "$LOAD_PID" || rc=$?
			LOAD_PID=""
			if [[ "$rc" == 0 ]]; then
				cat "$one" >>"$RESULTS"
				bin/arqonbus-load -summarize "$one" | sed 's/^/    /'
			else
				echo "bench: $name run $run${label:+ [$label]} FAILED (exit $rc); logs: $OUT/load-$tag.log, $OUT/server-$tag*.log"
				tail -n 5 "$OUT/load-$tag.log" | sed 's/^/    /'
				FAILED=1
			fi
			echo "    stopping ${#SERVER_PIDS[@]} node(s)"
			stop_servers
			report_logs "$OUT/server-$tag"
			if [[ -n "$REDIS_PID" ]]; then
				echo "    redis: $(timeout 2 redis-cli -p "$REDIS_PORT" dbsize) keys, $(timeout 2 redis-cli -p "$REDIS_PORT" info memory | tr -d '\r' | grep '^used_memory_human:' | cut -d: -f2) used; stopping it"
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
