#!/usr/bin/env bash
# ldflags.sh: print the -ldflags that stamp the build's commit and time into
# bin/arqonbus (GET /version, arqonbus_build_info). Used by the Makefile,
# scripts/run.sh and the e2e tests, so every build reports the same way.
#   commit: `git rev-parse --short=12 HEAD`, "-dirty" when the tree has
#           uncommitted changes; "unknown" outside a git checkout.
#   date:   now, UTC, RFC 3339.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=unknown
if git rev-parse --git-dir >/dev/null 2>&1; then
	commit=$(git rev-parse --short=12 HEAD)
	if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		commit="$commit-dirty"
	fi
fi
printf -- '-X main.commit=%s -X main.buildDate=%s\n' "$commit" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
