#!/bin/bash
# Installs the pinned npm packages of each DIR (package.json + package-lock.json)
# with `npm ci`, only when node_modules is missing or was installed from
# another lock file. Used by `make test-deps` for the official SDKs (tests/sdk).
#   node_deps.sh DIR...
set -eu
. "$(dirname "$0")/progress.sh"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v npm >/dev/null 2>&1 || { echo "node_deps.sh: npm is missing (scripts/deps.sh test)" >&2; exit 1; }
for dir in "$@"; do
    d=$ROOT/$dir
    want=$(sha256sum "$d/package-lock.json" | cut -c1-64)
    stamp=$d/node_modules/.byok-lock-sha256
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && continue
    step node_deps.sh "npm ci in $dir" \
        npm ci --prefix "$d" --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
done
