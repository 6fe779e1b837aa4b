# bench/lib.sh — the plumbing shared by scripts/bench.sh and bench/probe.sh,
# sourced by both (one copy of each: work directory and cleanup, processes,
# ports, the nginx configurations, secrets, Redis, provisioning).
#
# The sourcing script sets ROOT and BL_NAME (bench|probe) first, then calls
# bl_init; everything else reads $W.
# shellcheck shell=bash

MODULE=${BYOK_MODULE:-$ROOT/build/ngx_http_byok_module.so}
NGINX=${NGINX:-/usr/sbin/nginx}
PY=/usr/bin/python3
UPSTREAM_KEY="sk-bench-0000000000000000000000000000000000000000"
PIDS=()

log() { printf '[%s %s] %s\n' "$BL_NAME" "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "$BL_NAME: $*" >&2; exit 1; }

bl_need() {  # tool... — each must be on PATH; the module must be built
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found (make bench installs it)"
    done
    [ -f "$MODULE" ] || die "$MODULE missing; run make build"
}

bl_cleanup() {
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
        echo "$BL_NAME: work directory kept: $W" >&2
    else
        rm -rf "$W"
    fi
    exit $rc
}

# Work directory (removed on exit unless BENCH_KEEP=1 or on failure), its
# secrets (master keys, an admin token, a system key) and the providers.
bl_init() {
    W=$(mktemp -d "/tmp/byok-$BL_NAME.XXXXXX")
    chmod 755 "$W"
    mkdir -p "$W/logs" "$W/secrets"
    chmod 700 "$W/secrets"
    trap bl_cleanup EXIT
    trap 'exit 130' INT TERM
    # byok_gateway.conf includes byok_proxy.conf next to the main config.
    cp "$ROOT/conf/byok_proxy.conf" "$W/"
    head -c 32 /dev/urandom | base64 | sed 's/^/k1 /' >"$W/secrets/master.keys"
    echo "adm_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$W/secrets/admin.tokens"
    echo "sk-or-bench-system-key" >"$W/secrets/openrouter.key"
    chmod 600 "$W"/secrets/*
}

start() {  # name cmd... — background, logged, remembered for cleanup; sets PID_<name>
    local name=$1
    shift
    "$@" >"$W/logs/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
}

wait_http() {  # url seconds
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    return 1
}

worker_of() { pgrep -P "$1" | head -1; }

bl_ports() {  # n — prints n free loopback ports, all held at once so they are distinct
    $PY - "$1" <<'EOF'
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
}

# --- configurations (ports: P_UP fast upstream, P_SSE SSE fake, P_REDIS)

bl_upstream_conf() {  # the fast fake upstream: nginx `return 200 <json>`
    cat >"$W/upstream.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 16384;
error_log $W/logs/upstream.error.log warn;
pid $W/upstream.pid;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$P_UP backlog=4096;
        location = /openai/chat/completions {
            default_type application/json;
            return 200 '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}';
        }
        location = /stub { stub_status; }
    }
}
EOF
}

# The start both proxies share (one worker, logs, pid, the keepalive upstream
# block "fakeup"), up to the open http block.
bl_proxy_head() {  # name master_process(on|off)
    cat <<EOF
worker_processes 1;
master_process $2;
worker_rlimit_nofile 16384;
error_log $W/logs/$1.error.log warn;
pid $W/$1.pid;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream fakeup { server 127.0.0.1:$P_UP; keepalive 512; keepalive_requests 1000000; }
EOF
}

# Bare nginx: the gateway's proxy settings (byok_gateway.conf) with a fixed
# Authorization header instead of auth + Redis + decrypt. Both proxies keep up
# to 512 idle upstream connections (more than the highest concurrency), so
# the c=256 runs measure proxying, not upstream connection churn.
bl_bare_conf() {  # name port [master_process on|off]
    {
        bl_proxy_head "$1" "${3:-on}"
        cat <<EOF
    server {
        listen 127.0.0.1:$2 backlog=4096;
        client_max_body_size    16m;
        client_body_buffer_size 1m;
        proxy_http_version      1.1;
        proxy_set_header        Connection "";
        proxy_set_header        Authorization "Bearer $UPSTREAM_KEY";
        proxy_buffering         off;
        proxy_connect_timeout   10s;
        proxy_read_timeout      300s;
        location = /v1/chat/completions {
            proxy_pass http://fakeup/openai/chat/completions;
        }
        location /openai/ {
            proxy_pass http://127.0.0.1:$P_SSE/sse/;
        }
    }
}
EOF
    } >"$W/$1.conf"
}

# openai: unified /v1 -> the fast fake upstream through the keepalive upstream
# block "fakeup" (nginx matches the variable proxy_pass host against upstream
# names); native /openai/... -> the SSE fake.
bl_providers() {
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
  openrouter:
    name: OpenRouter
    base_url: http://127.0.0.1:$P_UP/openrouter
    openai_base: http://127.0.0.1:$P_UP/openrouter
    auth: bearer
    key_prefix: "sk-or-"
    test: { method: GET, path: /key }
EOF
}

# BL_EXTRA_HTTP: more http-level directives (bench.sh: byok_usage_events off).
# BL_SYSTEM_KEY=0 leaves out the OpenRouter system key (bench/probe.sh: its
# counts stay comparable with runs before this file existed).
bl_byok_conf() {  # name port cache-directive-args [master_process on|off]
    {
        echo "load_module $MODULE;"
        bl_proxy_head "$1" "${4:-on}"
        cat <<EOF
    byok_redis 127.0.0.1:$P_REDIS;
    byok_master_keys $W/secrets/master.keys;
    byok_providers $W/providers.yaml;
    byok_cache $3;
    ${BL_EXTRA_HTTP:-}
$( [ "${BL_SYSTEM_KEY:-1}" = 1 ] && echo "    byok_system_key openrouter $W/secrets/openrouter.key;")
    byok_admin_token_file $W/secrets/admin.tokens;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        include $ROOT/conf/byok_gateway.conf;
        include $ROOT/conf/byok_admin.conf;
        location /admin/v1/ { byok_admin; }
        location = /metrics { byok_metrics; }
    }
}
EOF
    } >"$W/$1.conf"
}

bl_check_confs() {  # name... — nginx -t each
    local c
    for c in "$@"; do
        "$NGINX" -t -q -p "$W" -c "$W/$c.conf" -g 'daemon off;' || die "nginx -t failed for $c"
    done
}

bl_start_redis() {  # [prefix command (taskset ...)] — Redis with DEBUG allowed locally, waits for PING
    start redis "$@" redis-server --bind 127.0.0.1 --port "$P_REDIS" --save '' --appendonly no \
        --enable-debug-command local --dir "$W" --logfile "$W/logs/redis.server.log"
    for _ in $(seq 100); do redis-cli -p "$P_REDIS" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "redis-server did not answer PING"
}

bl_provision() {  # admin-port projects keys — hot project (DIR/hot.key) + cold keys; prints JSON
    $PY "$ROOT/bench/provision.py" --admin "http://127.0.0.1:$1/admin/v1" \
        --token-file "$W/secrets/admin.tokens" --redis-port "$P_REDIS" \
        --projects "$2" --keys "$3" --out "$W"
}
