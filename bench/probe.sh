#!/bin/bash
# bench/probe.sh — counts per cache-hit request that do not depend on how
# busy the machine is, for the gateway beside bare nginx proxy_pass (issue
# 18). `make bench` runs it after the throughput phases; it also runs alone:
#
#     bench/probe.sh            (BYOK_MODULE, BENCH_PROBE_N, BENCH_PROBE_CALLGRIND)
#
# Per target (bare, byok), over N requests on one keep-alive connection
# after a warm-up (the hot key is cached, the upstream connection open):
#   allocations/request  malloc-family calls of the worker, counted by
#                        bench/malloc_count.so (LD_PRELOAD; nginx's own pool
#                        allocations are included: they call malloc too)
#   syscalls/request     strace -c -f -p <worker> over the N requests
#   instructions/request callgrind (valgrind) on a second pair of instances,
#                        with the top symbols by exclusive instructions and
#                        the metering overhead: instructions inside the
#                        metering glue (log phase + response filters) per
#                        hit request and per relayed SSE chunk
# Prints a table and writes probe.json into $BENCH_PROBE_OUT (default: the
# work directory). Never fails on a number; exits non-zero only when the
# setup is broken.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BL_NAME=probe
BL_SYSTEM_KEY=0
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"
N=${BENCH_PROBE_N:-2000}
CG=${BENCH_PROBE_CALLGRIND:-1}
CG_N=${BENCH_PROBE_CALLGRIND_N:-300}

bl_need redis-server redis-cli curl cc "$NGINX" $PY
bl_init
mkdir -p "$W/mc" "$W/cg"
OUT=${BENCH_PROBE_OUT:-$W}
cc -O2 -shared -fPIC -o "$W/malloc_count.so" "$ROOT/bench/malloc_count.c" -ldl -lpthread

read -r P_UP P_SSE P_REDIS P_BARE P_BYOK P_CGBARE P_CGBYOK < <(bl_ports 7)
bl_upstream_conf
bl_providers
bl_bare_conf bare "$P_BARE" on
bl_byok_conf byok "$P_BYOK" "zone=byok:16m ttl=1h" on
# callgrind instances: no master, valgrind runs the worker itself
bl_bare_conf cgbare "$P_CGBARE" off
bl_byok_conf cgbyok "$P_CGBYOK" "zone=byok:16m ttl=1h" off

MC=(env LD_PRELOAD="$W/malloc_count.so" MALLOC_COUNT_DIR="$W/mc")
bl_start_redis
start sse $PY "$ROOT/bench/fake_sse.py" "$P_SSE"
start upstream "$NGINX" -p "$W" -c "$W/upstream.conf" -g 'daemon off;'
start bare "${MC[@]}" "$NGINX" -p "$W" -c "$W/bare.conf" -g 'daemon off;'
start byok "${MC[@]}" "$NGINX" -p "$W" -c "$W/byok.conf" -g 'daemon off;'
wait_http "http://127.0.0.1:$P_BYOK/metrics" 15 || { echo "probe: byok did not come up" >&2; exit 1; }
wait_http "http://127.0.0.1:$P_BARE/" 15 || { echo "probe: bare did not come up" >&2; exit 1; }
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$P_SSE/" && break; sleep 0.1; done

bl_provision "$P_BYOK" 0 0 >/dev/null
HOT=$(cat "$W/hot.key")

declare -A PORT=([bare]=$P_BARE [byok]=$P_BYOK [cgbare]=$P_CGBARE [cgbyok]=$P_CGBYOK)
hits() {  # port n [stream]
    local path=/v1/chat/completions
    [ "${3:-}" = stream ] && path=/openai/chat/completions
    $PY "$ROOT/bench/hit_client.py" "$2" "$1" "$path" "$HOT" ${3:-}
}
mc_calls() { od -An -t u8 -N 8 "$W/mc/$1" | tr -d ' '; }

RES=$W/probe.tsv
: >"$RES"
res() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }

for t in bare byok; do
    pid=$(eval echo "\$PID_$t")
    wpid=$(worker_of "$pid")
    hits "${PORT[$t]}" 200 >/dev/null || { echo "probe: $t does not answer 200" >&2; exit 1; }
    # allocations
    a0=$(mc_calls "$wpid")
    hits "${PORT[$t]}" "$N" >/dev/null
    a1=$(mc_calls "$wpid")
    res "$t" allocs_per_req "$($PY -c "print(round(($a1 - $a0) / $N, 2))")"
    # syscalls
    if command -v strace >/dev/null; then
        strace -q -c -f -p "$wpid" -o "$W/strace.$t" 2>/dev/null &
        spid=$!
        sleep 0.5
        hits "${PORT[$t]}" "$N" >/dev/null
        sleep 0.2
        kill -INT "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        total=$(awk '$NF == "total" {print $4}' "$W/strace.$t")
        res "$t" syscalls_per_req "$($PY -c "print(round(${total:-0} / $N, 2))")"
        res "$t" syscalls "$(awk 'NR > 2 && $NF != "total" && $1 !~ /^-/ {printf "%s:%s ", $NF, $4}' "$W/strace.$t")"
    fi
done

if [ "$CG" = 1 ] && command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
    log "callgrind: $CG_N hit requests per target (and $CG_N SSE streams for byok)"
    for t in cgbare cgbyok; do
        start "$t" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/cg/$t.%p" \
            "$NGINX" -p "$W" -c "$W/$t.conf" -g 'daemon off;'
        wait_http "http://127.0.0.1:${PORT[$t]}/" 60 || { echo "probe: $t under valgrind did not come up" >&2; exit 1; }
        pid=$(eval echo "\$PID_$t")
        hits "${PORT[$t]}" 50 >/dev/null
        callgrind_control -i on "$pid" >/dev/null
        hits "${PORT[$t]}" "$CG_N" >/dev/null
        callgrind_control -d hit "$pid" >/dev/null
        callgrind_control -i off "$pid" >/dev/null
        if [ "$t" = cgbyok ]; then
            hits "${PORT[$t]}" 5 stream >/dev/null
            callgrind_control -z "$pid" >/dev/null
            callgrind_control -i on "$pid" >/dev/null
            hits "${PORT[$t]}" "$CG_N" stream >"$W/cg/sse.json"
            callgrind_control -d sse "$pid" >/dev/null
            callgrind_control -i off "$pid" >/dev/null
        fi
    done
    $PY "$ROOT/bench/probe_cg.py" "$W/cg" "$CG_N" >>"$RES"
fi

$PY - "$RES" "$OUT/probe.json" "$N" <<'EOF'
import json, sys
rows = [l.rstrip("\n").split("\t", 2) for l in open(sys.argv[1]) if l.strip()]
out = {}
for target, name, value in rows:
    out.setdefault(target, {})[name] = value
json.dump(out, open(sys.argv[2], "w"), indent=1)
def num(t, k):
    return out.get(t, {}).get(k, "-")
print("[probe] cache-hit path, per request (N=%s; load-independent counts)" % sys.argv[3])
print("[probe]   %-26s %12s %12s" % ("", "bare", "byok"))
for k in ("allocs_per_req", "syscalls_per_req"):
    print("[probe]   %-26s %12s %12s" % (k, num("bare", k), num("byok", k)))
for t in ("bare", "byok"):
    print("[probe]   syscalls %s: %s" % (t, num(t, "syscalls")))
if "cgbare" in out:
    print("[probe]   %-26s %12s %12s" % ("instructions_per_req", num("cgbare", "ir_per_req"), num("cgbyok", "ir_per_req")))
    print("[probe]   metering (usage scanner, filters, log phase): %s instructions per hit request;"
          " %s per relayed SSE chunk (filters only; %s per chunk in all)" % (
        num("cgbyok", "meter_ir_per_req"), num("cgbyok", "meter_ir_per_chunk"),
        num("cgbyok", "sse_ir_per_chunk")))
    for t in ("cgbare", "cgbyok"):
        print("[probe]   top symbols %s (exclusive instructions per request):" % t[2:])
        for s in json.loads(out[t].get("top", "[]")):
            print("[probe]     %8.0f  %s" % (s[1], s[0]))
EOF
