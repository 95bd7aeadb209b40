#!/usr/bin/env bash
# fuzz-long.sh (make fuzz-long): run every fuzz target of `make fuzz-short` for FUZZ_DURATION each
# (default 1h), one after the other, then keep what the fuzzer found interesting as seed corpus under
# each package's testdata/fuzz/<Target>/, where `go test` replays it on every run. A crasher fails the
# run and is left in testdata/ by the fuzzer itself, with the command to reproduce it.
#
#   make fuzz-long                              # every target, an hour each
#   FUZZ_DURATION=10m FUZZ_TARGETS=FuzzDecode make fuzz-long
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf 'fuzz-long: %s\n' "$*" >&2; }
duration="${FUZZ_DURATION:-1h}"
workers="${FUZZ_WORKERS:-$(nproc)}"
cache="$(go env GOCACHE)/fuzz"
module="$(go list -m)"

# The targets are the ones `make fuzz-short` runs: "-fuzz='^FuzzX$$' ... ./pkg/".
mapfile -t lines < <(grep -o "\-fuzz='^Fuzz[A-Za-z0-9]*\\$\\$'.* \./[a-z0-9/]*/" Makefile)
[ "${#lines[@]}" -gt 0 ] || { log "no fuzz targets found in the Makefile"; exit 1; }
for line in "${lines[@]}"; do
	target="$(sed -E "s/-fuzz='\^(Fuzz[A-Za-z0-9]*).*/\1/" <<<"$line")"
	pkg="$(grep -o '\./[a-z0-9/]*/$' <<<"$line")"
	if [ -n "${FUZZ_TARGETS:-}" ] && ! grep -qw "$target" <<<"$FUZZ_TARGETS"; then
		continue
	fi
	log "$target in $pkg for $duration on $workers workers"
	out="$(mktemp)"
	# -fuzztime as a duration can end with a spurious "context deadline exceeded" failure in Go 1.26
	# (go.dev/issue/75804): that ending is not a finding, anything else is.
	if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$duration" -parallel="$workers" "$pkg" 2>&1 | tee "$out"; then
		if grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written to' "$out"; then
			log "$target: ended with Go's fuzz-deadline race, no failing input"
		else
			log "$target FAILED: see the failing input under $pkg/testdata/fuzz/$target/"
			rm -f "$out"
			exit 1
		fi
	fi
	tail -n 3 "$out" | grep -o 'execs: [0-9]*' | tail -1 | sed "s/^/fuzz-long: $target: /" >&2 || true
	rm -f "$out"
	src="$cache/$module/${pkg#./}"; src="${src%/}/$target"
	dst="${pkg%/}/testdata/fuzz/$target"
	if [ -d "$src" ]; then
		mkdir -p "$dst"
		cp -n "$src"/* "$dst"/ 2>/dev/null || true
		# The cache keeps inputs of the target's earlier signatures too: drop what it no longer takes.
		go test -run="^${target}\$" "$pkg" 2>&1 | grep -o "testdata/fuzz/$target/[0-9a-f]*\": mismatched types" |
			cut -d'"' -f1 | while read -r bad; do rm -f "${pkg%/}/$bad"; done || true
		log "$target: corpus in $dst ($(ls "$dst" | wc -l) inputs)"
	fi
done
