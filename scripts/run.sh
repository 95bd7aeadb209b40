#!/usr/bin/env bash
# run.sh (make run): build and start arqonbus on its defaults, or on the
# ARQONBUS_* settings in the environment. With ARQONBUS_STORAGE=redis and a
# Redis URL on this machine that nothing answers, it installs redis-server when
# missing and starts one for you (data in .cache/redis), so the quickstart's
# Redis scenario runs with the same one command.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf 'run: %s\n' "$*" >&2; }

log "building bin/arqonbus"
go build -ldflags "$(bash scripts/ldflags.sh)" -o bin/arqonbus ./cmd/arqonbus

if [ "${ARQONBUS_STORAGE:-memory}" = redis ]; then
	url="${ARQONBUS_REDIS_URL:-redis://127.0.0.1:6379}"
	hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
	host="${hostport%:*}"; port="${hostport##*:}"
	[ "$port" = "$hostport" ] && port=6379
	if [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; then
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			bash scripts/ensure-redis.sh
			mkdir -p .cache/redis
			log "starting redis-server on 127.0.0.1:$port (data and log in .cache/redis)"
			redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/.cache/redis" --appendonly yes \
				--daemonize yes --logfile "$PWD/.cache/redis/redis.log" --pidfile "$PWD/.cache/redis/redis.pid"
		else
			log "using the Redis already listening on 127.0.0.1:$port"
		fi
	fi
fi

log "starting arqonbus: clients ws://${ARQONBUS_HOST:-127.0.0.1}:${ARQONBUS_PORT:-9100}, telemetry ws://${ARQONBUS_HOST:-127.0.0.1}:${ARQONBUS_TELEMETRY_PORT:-9101}, dashboard and health http://${ARQONBUS_HOST:-127.0.0.1}:${ARQONBUS_HTTP_PORT:-8080}/ (Ctrl-C stops it)"
exec ./bin/arqonbus "$@"
