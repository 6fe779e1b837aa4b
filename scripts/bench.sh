#!/bin/bash
# make bench — SPEC §11: the gateway against bare nginx proxy_pass and a peer
# (Portkey AI gateway), on loopback, in one run. Reports, never fails on a
# missed target; exits non-zero only when the setup itself is broken.
#
# Everything runs from a temporary directory (removed on exit; keep it with
# BENCH_KEEP=1): a fake upstream (system nginx, `return 200 <json>`), a fake
# SSE provider (bench/fake_sse.py), redis-server, bare nginx, three nginx
# instances with the module (hot cache, cold path, 8 MiB zone for the
# capacity fill; a fourth, noev, is the hot one with byok_usage_events off
# and runs in the throughput phase only) and Portkey. wrk drives each target, interleaved, for
# BENCH_ROUNDS rounds of BENCH_DURATION seconds; medians are printed and
# written to bench/results/<UTC timestamp>.json.
#
# Phases: warm-up + upstream keepalive check; throughput c32 and c256; latency
# c1 (back to back); cold path c1 (every request a cache miss); Redis stall
# (DEBUG SLEEP 0.5 loop) with bare as control; SSE time to first chunk; sparse
# c1 (10 ms between requests); shared-memory capacity; worker RSS.
#
# Knobs (environment):
#   BYOK_MODULE          module to load (build/ngx_http_byok_module.so)
#   BENCH_DURATION (5)   seconds per wrk run     BENCH_ROUNDS (3)
#   BENCH_PROJECTS (2000) projects made through the admin API (cold path)
#   BENCH_KEYS (80000)   gateway keys written to Redis (cold path, capacity)
#   BENCH_SSE_SAMPLES (50)  BENCH_PACED_SAMPLES (300)  BENCH_SHM_SECONDS (8)
#   BENCH_PIN (1)        proxies on CPU 1; wrk, fake upstreams, Redis on CPU 0
#   BENCH_RETRY_NOISY (2) repeat a run (at most this often) when other
#                        processes took >10% of the proxies' CPU during it
#   BENCH_PEER (1)       install (npm) and run Portkey
#   BENCH_PERF (0)       perf-record the bare and byok workers during one extra
#                        c32 run each; prints both top-symbol lists
#   BENCH_PROBE (1)      bench/probe.sh: allocations, syscalls and instructions
#                        (callgrind) per cache-hit request, top symbols and
#                        the metering overhead, byok beside bare
#   BENCH_PHASES         the phases to run, of "tput lat cold stall sse paced
#                        shm" (default: all); e.g. BENCH_PHASES=cold
#   BENCH_KEEP (0)       keep the temporary directory
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BL_NAME=bench
# shellcheck source=../bench/lib.sh
. "$ROOT/bench/lib.sh"
DUR=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
PROJECTS=${BENCH_PROJECTS:-2000}
NKEYS=${BENCH_KEYS:-80000}
SSE_SAMPLES=${BENCH_SSE_SAMPLES:-50}
PACED_SAMPLES=${BENCH_PACED_SAMPLES:-300}
SHM_SECONDS=${BENCH_SHM_SECONDS:-8}
SHM_ZONE_MB=8
PIN=${BENCH_PIN:-1}
PEER=${BENCH_PEER:-1}
PERF=${BENCH_PERF:-0}
PROBE=${BENCH_PROBE:-1}
PHASES=" ${BENCH_PHASES:-tput lat cold stall sse paced shm} "
RETRY_NOISY=${BENCH_RETRY_NOISY:-2}
CLK_TCK=$(getconf CLK_TCK)
PORTKEY_VERSION=1.15.2
want() { [[ "$PHASES" == *" $1 "* ]]; }

# scripts/deps.sh bench installs wrk and redis-server; python3 and curl are
# on any usual Debian install, but not in every minimal image.
if { [ ! -x $PY ] || ! command -v curl >/dev/null; } && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 curl >/dev/null || true
fi
bl_need wrk redis-server redis-cli curl "$NGINX" $PY

bl_init
mkdir -p "$W/metrics" "$ROOT/bench/results"
RAW=$W/raw.jsonl
FACTS=$W/facts.tsv
: >"$RAW"
: >"$FACTS"

fact() { printf '%s\t%s\n' "$1" "$2" >>"$FACTS"; }
fact loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
fact module "$MODULE"
fact phases "$(echo $PHASES)"

# CPU placement: the proxy being measured gets CPU 1 to itself; the load
# generator, the fake upstreams and Redis share CPU 0.
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    SUT=(taskset -c 1)
    AUX=(taskset -c 0)
    fact pinning "proxies on CPU 1; wrk, fake upstreams, redis on CPU 0"
else
    SUT=()
    AUX=()
    fact pinning "none"
fi

read -r P_UP P_SSE P_REDIS P_BARE P_BYOK P_COLD P_SHM P_PK P_NOEV < <(bl_ports 9)

cpu_ticks() {  # pid -> utime+stime of the process (all threads), clock ticks
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# Busy clock ticks of the CPU the proxies run on (user+nice+system+irq+softirq
# +steal), to tell how much of it other processes took during a run.
SUT_CPU=1
AUX_CPU=0
sut_cpu_busy() { awk -v c="cpu$SUT_CPU" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# The same for the load CPU (wrk, fake upstreams, Redis): when it is saturated
# too, the Redis work a proxy causes (usage events) costs the load generator
# CPU, and throughput stops following the proxy's own CPU per request.
aux_cpu_busy() { awk -v c="cpu$AUX_CPU" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# ------------------------------------------------------------------ configs
bl_upstream_conf
bl_bare_conf bare "$P_BARE"
bl_providers
# hot: ttl long enough that the bench key stays fresh for the whole run.
bl_byok_conf byok "$P_BYOK" "zone=byok:16m ttl=1h"
# cold: entries expire after 1 s and are never served stale, and wrk rotates
# through BENCH_KEYS distinct gateway keys, so (nearly) every request misses.
bl_byok_conf cold "$P_COLD" "zone=byok:64m ttl=1s stale=0s"
# capacity: a deliberately small zone, filled until it evicts.
bl_byok_conf shm "$P_SHM" "zone=byok:${SHM_ZONE_MB}m ttl=1h"
# noev: hot like byok, with byok_usage_events off (throughput phase only): how
# much of the gap the usage event stream makes (its Redis work shares the load CPU).
BL_EXTRA_HTTP="byok_usage_events off;" bl_byok_conf noev "$P_NOEV" "zone=byok:16m ttl=1h"
bl_check_confs upstream bare byok cold shm noev

# ------------------------------------------------------------------ start
log "work dir $W; ports up=$P_UP sse=$P_SSE redis=$P_REDIS bare=$P_BARE byok=$P_BYOK cold=$P_COLD shm=$P_SHM noev=$P_NOEV portkey=$P_PK"
bl_start_redis "${AUX[@]}"
start sse "${AUX[@]}" $PY "$ROOT/bench/fake_sse.py" "$P_SSE"
start upstream "${AUX[@]}" "$NGINX" -p "$W" -c "$W/upstream.conf" -g 'daemon off;'
start bare "${SUT[@]}" "$NGINX" -p "$W" -c "$W/bare.conf" -g 'daemon off;'
start byok "${SUT[@]}" "$NGINX" -p "$W" -c "$W/byok.conf" -g 'daemon off;'
start cold "${SUT[@]}" "$NGINX" -p "$W" -c "$W/cold.conf" -g 'daemon off;'
start shm "${SUT[@]}" "$NGINX" -p "$W" -c "$W/shm.conf" -g 'daemon off;'
start noev "${SUT[@]}" "$NGINX" -p "$W" -c "$W/noev.conf" -g 'daemon off;'
for p in "$P_UP/stub" "$P_BYOK/metrics" "$P_COLD/metrics" "$P_SHM/metrics" "$P_NOEV/metrics"; do
    wait_http "http://127.0.0.1:$p" 15 || { echo "bench: 127.0.0.1:$p did not come up" >&2; exit 1; }
done
wait_http "http://127.0.0.1:$P_BARE/" 15 || { echo "bench: bare nginx did not come up" >&2; exit 1; }

# Peer: Portkey AI gateway (npm), single node process on the proxies' CPU.
PK_STATUS="not run (BENCH_PEER=0)"
if [ "$PEER" = 1 ]; then
    PK_JS=$ROOT/bench/node_modules/@portkey-ai/gateway/build/start-server.js
    if [ ! -f "$PK_JS" ] && command -v npm >/dev/null; then
        log "installing @portkey-ai/gateway@$PORTKEY_VERSION into bench/node_modules"
        (cd "$ROOT/bench" && timeout 300 npm install --no-audit --no-fund --loglevel=error) \
            >"$W/logs/npm.log" 2>&1 || true
    fi
    if ! command -v node >/dev/null; then
        PK_STATUS="not run: node not found"
    elif [ ! -f "$PK_JS" ]; then
        PK_STATUS="not run: npm install of @portkey-ai/gateway failed (see npm log)"
    else
        start portkey env NODE_ENV=production "${SUT[@]}" node "$PK_JS" --port="$P_PK" --headless
        if wait_http "http://127.0.0.1:$P_PK/" 30; then
            PK_STATUS=ok
        else
            PK_STATUS="not run: portkey did not start: $(tail -c 300 "$W/logs/portkey.log" | tr '\n\t' '  ')"
        fi
    fi
fi

# ------------------------------------------------------------------ provision
log "provisioning: 1 hot project + $PROJECTS projects (admin API), $NKEYS gateway keys (Redis)"
bl_provision "$P_BYOK" "$PROJECTS" "$NKEYS" >"$W/provision.json"
fact provision "$(cat "$W/provision.json")"
HOT=$(cat "$W/hot.key")

BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
PK_H=(-H "x-portkey-provider: openai" -H "x-portkey-custom-host: http://127.0.0.1:$P_UP/openai"
      -H "Authorization: Bearer $UPSTREAM_KEY")

check() {  # name expect-substring curl-args... — one request, must be 200
    local out
    out=$(curl -s -i --max-time 5 -X POST -H 'Content-Type: application/json' -d "$BODY" "${@:3}") || true
    if ! grep -q '^HTTP/1.1 200' <<<"$out" || ! grep -qi -- "$2" <<<"$out"; then
        echo "$out" | head -20 >&2
        return 1
    fi
}
check bare chatcmpl-bench -H "Authorization: Bearer $HOT" "http://127.0.0.1:$P_BARE/v1/chat/completions" \
    || { echo "bench: bare nginx does not proxy" >&2; exit 1; }
check byok 'x-byok-route: byok' -H "Authorization: Bearer $HOT" "http://127.0.0.1:$P_BYOK/v1/chat/completions" \
    || { echo "bench: the gateway does not route the hot key (byok)" >&2; exit 1; }
check cold 'x-byok-route: byok' -H "Authorization: Bearer $(head -1 "$W/cold.keys")" \
    "http://127.0.0.1:$P_COLD/v1/chat/completions" \
    || { echo "bench: the gateway does not route a cold key (byok)" >&2; exit 1; }
if [ "$PK_STATUS" = ok ] && ! check portkey chatcmpl-bench "${PK_H[@]}" "http://127.0.0.1:$P_PK/v1/chat/completions"; then
    PK_STATUS="not run: portkey did not proxy to the fake upstream"
fi
fact portkey_status "$PK_STATUS"
[ "$PK_STATUS" = ok ] && fact portkey_version "$PORTKEY_VERSION"
log "portkey: $PK_STATUS"

TARGETS=(bare byok)
[ "$PK_STATUS" = ok ] && TARGETS+=(portkey)
declare -A URL=(
    [bare]="http://127.0.0.1:$P_BARE/v1/chat/completions"
    [byok]="http://127.0.0.1:$P_BYOK/v1/chat/completions"
    [cold]="http://127.0.0.1:$P_COLD/v1/chat/completions"
    [shm]="http://127.0.0.1:$P_SHM/v1/chat/completions"
    [noev]="http://127.0.0.1:$P_NOEV/v1/chat/completions"
    [portkey]="http://127.0.0.1:$P_PK/v1/chat/completions"
)
declare -A CPUPID=(
    [bare]=$(worker_of "$PID_bare") [byok]=$(worker_of "$PID_byok")
    [cold]=$(worker_of "$PID_cold") [shm]=$(worker_of "$PID_shm") [noev]=$(worker_of "$PID_noev")
    [portkey]=${PID_portkey:-}
)
hdrs() {  # target -> wrk -H args (bare gets the same Authorization bytes as byok)
    case $1 in
        portkey) printf '%s\n' "${PK_H[@]}" ;;
        *) printf '%s\n' -H "Authorization: Bearer $HOT" ;;
    esac
}

stub_accepts() { curl -s --max-time 2 "http://127.0.0.1:$P_UP/stub" | awk 'NR==3 {print $1}'; }

run_wrk() {  # phase target conc round seconds [env...] — appends one JSON line to $RAW
    # When pinned, a run during which other processes took more than 10% of
    # the proxies' CPU is repeated (BENCH_RETRY_NOISY extra attempts, default
    # 2); the quietest attempt is kept and the attempt count recorded.
    local phase=$1 target=$2 conc=$3 round=$4 secs=$5
    shift 5
    local -a H
    mapfile -t H < <(hdrs "$target")
    local c0 c1 a0 a1 b0 b1 x0 x1 r0 r1 out line others best_line="" best_others=-1 attempt=0 max_attempts=1
    [ ${#SUT[@]} -gt 0 ] && [ "$phase" != warm ] && max_attempts=$((1 + RETRY_NOISY))
    while [ $attempt -lt $max_attempts ]; do
        attempt=$((attempt + 1))
        a0=$(stub_accepts)
        b0=$(sut_cpu_busy)
        x0=$(aux_cpu_busy)
        r0=$(cpu_ticks "$PID_redis")
        c0=$(cpu_ticks "${CPUPID[$target]}")
        out=$(env "$@" timeout $((secs + 30)) "${AUX[@]}" wrk -t1 -c"$conc" -d"${secs}s" --timeout 5s \
            -s "$ROOT/bench/wrk.lua" "${H[@]}" "${URL[$target]}" 2>&1) || true
        c1=$(cpu_ticks "${CPUPID[$target]}")
        r1=$(cpu_ticks "$PID_redis")
        x1=$(aux_cpu_busy)
        b1=$(sut_cpu_busy)
        a1=$(stub_accepts)
        line=$(sed -n 's/^BENCHJSON //p' <<<"$out")
        if [ -z "$line" ]; then
            log "wrk failed for $phase/$target: $(tail -3 <<<"$out" | tr '\n' ' ')"
            line=null
        fi
        others=$(( (${b1:-0} - ${b0:-0}) - (c1 - c0) ))
        [ $others -lt 0 ] && others=0
        if [ $best_others -lt 0 ] || [ $others -lt $best_others ]; then
            best_others=$others
            best_line=$(printf '{"phase":"%s","target":"%s","conc":%d,"round":%d,"attempt":%d,"cpu_ticks":%d,"sut_cpu_busy_ticks":%d,"aux_cpu_busy_ticks":%d,"redis_cpu_ticks":%d,"upstream_accepts":%d,"wrk":%s}' \
                "$phase" "$target" "$conc" "$round" "$attempt" "$((c1 - c0))" "$((${b1:-0} - ${b0:-0}))" \
                "$((${x1:-0} - ${x0:-0}))" "$((r1 - r0))" \
                "$((${a1:-0} - ${a0:-0}))" "$line")
        fi
        # quiet enough: others used < 10% of the proxy CPU over the run
        [ $((others * 10)) -lt $((secs * CLK_TCK)) ] && break
        [ $attempt -lt $max_attempts ] && log "  $phase/$target r$round: other processes took $((others * 100 / (secs * CLK_TCK)))% of the proxy CPU; repeating"
    done
    echo "$best_line" >>"$RAW"
    line=$($PY -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["wrk"]))' "$best_line")
    if [ "$line" != null ]; then
        $PY -c 'import json,sys; w=json.loads(sys.argv[1]); print("[bench]   %-8s %-8s c=%-4s r%s %9.0f req/s  p50 %6d us  p99 %6d us  non2xx %d" % (sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], w["rps"], w["p50_us"], w["p99_us"], w["err_status"]))' \
            "$line" "$phase" "$target" "$conc" "$round" >&2
    fi
}

# ------------------------------------------------------------------ warm-up + keepalive check
log "warm-up (2 s each) and upstream keepalive check"
for t in "${TARGETS[@]}" noev; do
    a0=$(stub_accepts)
    run_wrk warm "$t" 32 0 2
    fact "upstream_accepts.$t" "$(($(stub_accepts) - a0))"
done

# ------------------------------------------------------------------ throughput + latency
for conc in 32 256 1; do
    phase="tput"
    [ "$conc" = 1 ] && phase="lat"
    want $phase || continue
    log "phase $phase c=$conc: $ROUNDS rounds x ${DUR}s, interleaved ${TARGETS[*]}"
    for r in $(seq "$ROUNDS"); do
        for t in "${TARGETS[@]}" $([ "$phase" = tput ] && echo noev); do
            run_wrk "$phase" "$t" "$conc" "$r" "$DUR"
        done
    done
done

# ------------------------------------------------------------------ cold path
if want cold; then
log "phase cold c=1: wrk rotates through $NKEYS gateway keys; bare runs the same script"
curl -s "http://127.0.0.1:$P_COLD/metrics" >"$W/metrics/cold.before"
for r in $(seq "$ROUNDS"); do
    off=$(( (r - 1) * NKEYS / ROUNDS ))
    run_wrk cold bare 1 "$r" "$DUR" BENCH_KEYS_FILE="$W/cold.keys" BENCH_KEYS_OFFSET=$off
    curl -s "http://127.0.0.1:$P_COLD/metrics" >"$W/metrics/cold.r$r.before"
    run_wrk cold cold 1 "$r" "$DUR" BENCH_KEYS_FILE="$W/cold.keys" BENCH_KEYS_OFFSET=$off
    curl -s "http://127.0.0.1:$P_COLD/metrics" >"$W/metrics/cold.r$r.after"
done
fi

# ------------------------------------------------------------------ Redis stall
if want stall; then
log "phase stall c=32: hot key, with and without DEBUG SLEEP 0.5 in a loop; bare as control"
curl -s "http://127.0.0.1:$P_BYOK/metrics" >"$W/metrics/stall.before"
stalls=0
stall_loop() {  # DEBUG SLEEP 0.5 back to back while $W/stalling exists (at most 120 s)
    local end=$((SECONDS + 120))
    while [ -f "$W/stalling" ] && [ $SECONDS -lt $end ]; do
        timeout 5 "${AUX[@]}" redis-cli -p "$P_REDIS" DEBUG SLEEP 0.5 >/dev/null 2>&1 || true
        echo x
    done
}
for r in $(seq "$ROUNDS"); do
    for t in byok bare; do
        run_wrk nostall "$t" 32 "$r" "$DUR"
        touch "$W/stalling"
        stall_loop >"$W/stall.$t.r$r.count" &
        stall_pid=$!
        sleep 0.2
        run_wrk stall "$t" 32 "$r" "$DUR"
        rm -f "$W/stalling"
        wait "$stall_pid" || true
        if [ "$t" = byok ]; then stalls=$((stalls + $(wc -l <"$W/stall.$t.r$r.count"))); fi
    done
done
fact stall_commands "$stalls"
curl -s "http://127.0.0.1:$P_BYOK/metrics" >"$W/metrics/stall.after"
fi

# ------------------------------------------------------------------ SSE
if want sse; then
log "phase sse: time to first chunk, $SSE_SAMPLES samples per target, interleaved"
sse_targets="[{\"name\":\"bare\",\"port\":$P_BARE,\"path\":\"/openai/chat/completions\",\"headers\":{\"Authorization\":\"Bearer $HOT\"}},"
sse_targets+="{\"name\":\"byok\",\"port\":$P_BYOK,\"path\":\"/openai/chat/completions\",\"headers\":{\"Authorization\":\"Bearer $HOT\"}}"
if [ "$PK_STATUS" = ok ]; then
    sse_targets+=",{\"name\":\"portkey\",\"port\":$P_PK,\"path\":\"/v1/chat/completions\",\"headers\":{\"x-portkey-provider\":\"openai\",\"x-portkey-custom-host\":\"http://127.0.0.1:$P_SSE/sse\",\"Authorization\":\"Bearer $UPSTREAM_KEY\"}}"
fi
sse_targets+="]"
"${AUX[@]}" timeout 300 $PY "$ROOT/bench/sse_ttfb.py" "$SSE_SAMPLES" "$sse_targets" >"$W/sse.json" \
    || echo '{}' >"$W/sse.json"
fi

# ------------------------------------------------------------------ sparse traffic
if want paced; then
log "phase paced: $PACED_SAMPLES requests per target, one at a time, 10 ms apart, keep-alive"
paced_targets="[{\"name\":\"bare\",\"port\":$P_BARE,\"path\":\"/v1/chat/completions\",\"headers\":{\"Authorization\":\"Bearer $HOT\"}},"
paced_targets+="{\"name\":\"byok\",\"port\":$P_BYOK,\"path\":\"/v1/chat/completions\",\"headers\":{\"Authorization\":\"Bearer $HOT\"}}"
if [ "$PK_STATUS" = ok ]; then
    paced_targets+=",{\"name\":\"portkey\",\"port\":$P_PK,\"path\":\"/v1/chat/completions\",\"headers\":{\"x-portkey-provider\":\"openai\",\"x-portkey-custom-host\":\"http://127.0.0.1:$P_UP/openai\",\"Authorization\":\"Bearer $UPSTREAM_KEY\"}}"
fi
paced_targets+="]"
"${AUX[@]}" timeout 300 $PY "$ROOT/bench/paced_latency.py" "$PACED_SAMPLES" 0.01 "$paced_targets" >"$W/paced.json" \
    || echo '{}' >"$W/paced.json"
fi

# ------------------------------------------------------------------ shm capacity
if want shm; then
log "phase shm: fill a ${SHM_ZONE_MB} MiB zone with up to $NKEYS distinct gateway keys (${SHM_SECONDS}s, c=32)"
run_wrk shmfill shm 32 1 "$SHM_SECONDS" BENCH_KEYS_FILE="$W/cold.keys" BENCH_KEYS_OFFSET=0
curl -s "http://127.0.0.1:$P_SHM/metrics" >"$W/metrics/shm.after"
fact shm_zone_mb "$SHM_ZONE_MB"
fi

# ------------------------------------------------------------------ optional profile
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
    : >"$W/perf.txt"
    for t in bare byok; do
        log "perf: recording the $t worker during one c=32 run"
        perf record -F 1999 -p "${CPUPID[$t]}" -o "$W/perf.$t.data" -- sleep "$DUR" >/dev/null 2>&1 &
        perf_pid=$!
        run_wrk perf "$t" 32 1 "$DUR"
        wait "$perf_pid" || true
        {
            echo "# $t worker, c=32 hot key, $DUR s: share of samples by DSO, then top symbols"
            perf report -i "$W/perf.$t.data" --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
            echo
            perf report -i "$W/perf.$t.data" --sort dso,sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
            echo
        } >>"$W/perf.txt" || true
    done
    # top symbols of each worker, for the report (printed side by side at the end)
    for t in bare byok; do
        perf report -i "$W/perf.$t.data" --sort sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' \
            | head -15 >"$W/perf.$t.top" || true
    done
fi

# ------------------------------------------------------------------ memory
for t in bare byok cold shm portkey; do
    pid=${CPUPID[$t]:-}
    [ -n "$pid" ] && [ -r "/proc/$pid/status" ] && fact "rss_kb.$t" "$(ps -o rss= -p "$pid" | tr -d ' ')"
done


# ------------------------------------------------------------------ per-request counts
# Load-independent (issue 18): allocations, syscalls and instructions per
# cache-hit request, top symbols and the metering overhead, byok beside bare,
# from instances of their own (bench/probe.sh).
if [ "$PROBE" = 1 ]; then
    log "probe: allocations, syscalls and instructions per cache-hit request (bench/probe.sh)"
    BENCH_PROBE_OUT="$W" "$ROOT/bench/probe.sh" || log "probe failed (see above)"
fi

# ------------------------------------------------------------------ report
# The table, then the probe's per-request counts and the perf top symbols
# (BENCH_PERF=1), byok beside bare; all of it also in the results JSON.
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$TS.json
$PY "$ROOT/bench/report.py" --work "$W" --out "$OUT" --duration "$DUR" --rounds "$ROUNDS" \
    --projects "$PROJECTS" --keys "$NKEYS"
[ -f "$W/perf.txt" ] && cp "$W/perf.txt" "${OUT%.json}.perf.txt"
[ -f "$W/probe.json" ] && cp "$W/probe.json" "${OUT%.json}.probe.json"
log "results: $OUT"
