# Sourced by the scripts that run long steps (deps.sh, build.sh, run.sh):
# one line when a step starts, one every 10 s while it runs, one with its
# elapsed time when it ends; a failing step prints the tail of its output.
#
#   step <name> <label> <command...>    name prefixes every line ("build.sh")

step() {
    local name=$1 label=$2 log rc start ticker
    shift 2
    log=$(mktemp "${TMPDIR:-/tmp}/byok-step.XXXXXX")
    start=$(date +%s)
    echo "$name: $label ..."
    (
        while sleep 10; do
            echo "$name: $label ... $(($(date +%s) - start)) s"
        done
    ) &
    ticker=$!
    rc=0
    "$@" >"$log" 2>&1 || rc=$?
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        echo "$name: $label failed after $(($(date +%s) - start)) s:" >&2
        tail -30 "$log" >&2
        rm -f "$log"
        return "$rc"
    fi
    echo "$name: $label done in $(($(date +%s) - start)) s"
    rm -f "$log"
}
