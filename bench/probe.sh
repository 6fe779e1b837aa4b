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
MODULE=${BYOK_MODULE:-$ROOT/build/ngx_http_byok_module.so}
NGINX=${NGINX:-/usr/sbin/nginx}
PY=/usr/bin/python3
N=${BENCH_PROBE_N:-2000}
CG=${BENCH_PROBE_CALLGRIND:-1}
CG_N=${BENCH_PROBE_CALLGRIND_N:-300}
UPSTREAM_KEY="sk-bench-0000000000000000000000000000000000000000"

for tool in redis-server redis-cli curl cc "$NGINX" $PY; do
    command -v "$tool" >/dev/null || { echo "probe: $tool not found" >&2; exit 1; }
done
[ -f "$MODULE" ] || { echo "probe: $MODULE missing; run make build" >&2; exit 1; }

W=$(mktemp -d /tmp/byok-probe.XXXXXX)
chmod 755 "$W"
mkdir -p "$W/logs" "$W/secrets" "$W/mc" "$W/cg"
chmod 700 "$W/secrets"
OUT=${BENCH_PROBE_OUT:-$W}
PIDS=()
cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
        echo "probe: work directory kept: $W" >&2
    else
        rm -rf "$W"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[probe %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start() {  # name cmd...
    local name=$1
    shift
    "$@" >"$W/logs/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
}
wait_http() {
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    return 1
}

cp "$ROOT/conf/byok_proxy.conf" "$W/byok_proxy.conf"  # byok_gateway.conf includes it next to the configuration
cc -O2 -shared -fPIC -o "$W/malloc_count.so" "$ROOT/bench/malloc_count.c" -ldl -lpthread

read -r P_UP P_SSE P_REDIS P_BARE P_BYOK P_CGBARE P_CGBYOK < <($PY - <<'EOF'
import socket
ss = [socket.socket() for _ in range(7)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
)

cat >"$W/upstream.conf" <<EOF
worker_processes 1;
error_log $W/logs/upstream.error.log warn;
pid $W/upstream.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$P_UP;
        location = /openai/chat/completions {
            default_type application/json;
            return 200 '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}';
        }
    }
}
EOF

bare_conf() {  # name port master(on|off)
    cat >"$W/$1.conf" <<EOF
worker_processes 1;
master_process $3;
error_log $W/logs/$1.error.log warn;
pid $W/$1.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream fakeup { server 127.0.0.1:$P_UP; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$2;
        client_max_body_size    16m;
        client_body_buffer_size 1m;
        proxy_http_version      1.1;
        proxy_set_header        Connection "";
        proxy_set_header        Authorization "Bearer $UPSTREAM_KEY";
        proxy_buffering         off;
        location = /v1/chat/completions { proxy_pass http://fakeup/openai/chat/completions; }
        location /openai/ { proxy_pass http://127.0.0.1:$P_SSE/sse/; }
    }
}
EOF
}

head -c 32 /dev/urandom | base64 | sed 's/^/k1 /' >"$W/secrets/master.keys"
echo "adm_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$W/secrets/admin.tokens"
chmod 600 "$W"/secrets/*
cat >"$W/providers.yaml" <<EOF
providers:
  openai:
    name: OpenAI
    base_url: http://127.0.0.1:$P_SSE/sse
    openai_base: http://fakeup/openai
    auth: bearer
    key_prefix: "sk-"
    test: { method: GET, path: /models }
    models: ["gpt-*"]
EOF

byok_conf() {  # name port master(on|off)
    cat >"$W/$1.conf" <<EOF
load_module $MODULE;
worker_processes 1;
master_process $3;
error_log $W/logs/$1.error.log warn;
pid $W/$1.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream fakeup { server 127.0.0.1:$P_UP; keepalive 64; keepalive_requests 1000000; }
    byok_redis 127.0.0.1:$P_REDIS;
    byok_master_keys $W/secrets/master.keys;
    byok_providers $W/providers.yaml;
    byok_cache zone=byok:16m ttl=1h;
    byok_admin_token_file $W/secrets/admin.tokens;
    server {
        listen 127.0.0.1:$2;
        include $ROOT/conf/byok_gateway.conf;
        include $ROOT/conf/byok_admin.conf;
        location /admin/v1/ { byok_admin; }
        location = /metrics { byok_metrics; }
    }
}
EOF
}
bare_conf bare "$P_BARE" on
byok_conf byok "$P_BYOK" on
bare_conf cgbare "$P_CGBARE" off
byok_conf cgbyok "$P_CGBYOK" off

MC=(env LD_PRELOAD="$W/malloc_count.so" MALLOC_COUNT_DIR="$W/mc")
start redis redis-server --bind 127.0.0.1 --port "$P_REDIS" --save '' --appendonly no --dir "$W" \
    --logfile "$W/logs/redis.log"
start sse $PY "$ROOT/bench/fake_sse.py" "$P_SSE"
start upstream "$NGINX" -p "$W" -c "$W/upstream.conf" -g 'daemon off;'
for _ in $(seq 100); do redis-cli -p "$P_REDIS" ping >/dev/null 2>&1 && break; sleep 0.1; done
start bare "${MC[@]}" "$NGINX" -p "$W" -c "$W/bare.conf" -g 'daemon off;'
start byok "${MC[@]}" "$NGINX" -p "$W" -c "$W/byok.conf" -g 'daemon off;'
wait_http "http://127.0.0.1:$P_BYOK/metrics" 15 || { echo "probe: byok did not come up" >&2; exit 1; }
wait_http "http://127.0.0.1:$P_BARE/" 15 || { echo "probe: bare did not come up" >&2; exit 1; }
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$P_SSE/" && break; sleep 0.1; done

$PY "$ROOT/bench/provision.py" --admin "http://127.0.0.1:$P_BYOK/admin/v1" \
    --token-file "$W/secrets/admin.tokens" --redis-port "$P_REDIS" --projects 0 --keys 0 \
    --out "$W" >/dev/null
HOT=$(cat "$W/hot.key")

declare -A PORT=([bare]=$P_BARE [byok]=$P_BYOK [cgbare]=$P_CGBARE [cgbyok]=$P_CGBYOK)
worker_of() { pgrep -P "$1" | head -1; }
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
