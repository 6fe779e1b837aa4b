#!/bin/bash
# Installs the Debian packages a target needs, only when something is missing.
#   deps.sh build | test | bench | run
set -eu
. "$(dirname "$0")/progress.sh"

build_pkgs="build-essential nginx nginx-dev libhiredis-dev libyaml-cpp-dev libssl-dev
            libssh-dev nlohmann-json3-dev pkg-config ca-certificates python3"
run_pkgs="redis-server openssl python3 curl"
test_pkgs="libcriterion-dev redis-server openssl python3-pytest python3-redis python3-requests
           python3-cryptography openssh-server chromium"
bench_pkgs="wrk redis-server python3 curl"

case "${1:-build}" in
    build) want="$build_pkgs" ;;
    run)   want="$build_pkgs $run_pkgs" ;;
    test)  want="$build_pkgs $test_pkgs" ;;
    bench) want="$build_pkgs $bench_pkgs" ;;
    *) echo "deps.sh: unknown set '$1'" >&2; exit 2 ;;
esac

missing=""
# The SDK test needs node + npm; take Debian's only when no node is installed
# (a NodeSource nodejs already bundles npm and conflicts with Debian's npm).
if [ "${1:-build}" = test ] && ! command -v npm >/dev/null 2>&1; then
    want="$want nodejs npm"
fi
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "deps.sh: missing packages:$missing (run as root or install them)" >&2
    exit 1
fi
echo "deps.sh: missing packages:$missing"
export DEBIAN_FRONTEND=noninteractive
step deps.sh "apt-get update" apt-get update -q || echo "deps.sh: apt-get update failed; trying the cached lists"
# shellcheck disable=SC2086
step deps.sh "installing $(echo $missing | wc -w) packages" \
    apt-get install -y -q --no-install-recommends $missing
