#!/bin/bash
# Runs each libFuzzer target (built by `make fuzz-build` into build-fuzz/)
# for SECONDS seconds over its seed corpus (fuzz/corpus/<target>/) plus the
# known crash inputs (fuzz/regressions/<target>/). New corpus entries go to
# build-fuzz/corpus/<target>/, crashes to build-fuzz/crashes/<target>/.
#
#   scripts/fuzz.sh SECONDS TARGET...
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/build-fuzz
secs=$1
shift
failed=()
for t in "$@"; do
    name=${t#fuzz_}
    seeds=$ROOT/fuzz/corpus/$name
    regress=$ROOT/fuzz/regressions/$name
    work=$OUT/corpus/$name
    crashes=$OUT/crashes/$name
    mkdir -p "$work" "$crashes"
    # Known crash inputs first: each must now run clean.
    if compgen -G "$regress/*" >/dev/null; then
        if ! "$OUT/$t" -runs=0 "$regress"/* >"$OUT/$t.regress.log" 2>&1; then
            echo "fuzz: $t: a regression input fails again (see $OUT/$t.regress.log)" >&2
            failed+=("$t")
            continue
        fi
    fi
    dict=()
    [ -f "$ROOT/fuzz/$name.dict" ] && dict=(-dict="$ROOT/fuzz/$name.dict")
    echo "fuzz: $t for ${secs}s"
    if ! "$OUT/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
            -print_final_stats=1 "${dict[@]}" -artifact_prefix="$crashes/" \
            "$work" "$seeds" >"$OUT/$t.log" 2>&1; then
        echo "fuzz: $t FAILED; last lines of $OUT/$t.log:" >&2
        tail -40 "$OUT/$t.log" >&2
        failed+=("$t")
    else
        grep -E '^stat::number_of_executed_units' "$OUT/$t.log" | sed "s/^/fuzz: $t: /"
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all targets ran clean"
