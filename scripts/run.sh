#!/bin/bash
# Local instance for trying the gateway: `make run` / `make stop`.
#
#   run.sh start    install runtime packages, create .run/ (secrets on first
#                   start only), render .run/nginx.conf from conf/nginx.conf,
#                   start Redis and nginx on 127.0.0.1 (reload nginx when it
#                   is already running)
#   run.sh stop     stop the nginx and Redis that `start` started
#   run.sh status   show what is running, and where (read from the processes)
#
#   BYOK_PORT        gateway port (default 8080)
#   BYOK_ADMIN_PORT  admin API and metrics listener (default 8081, loopback)
#   BYOK_DEMO_PORT   the offline demo provider (default 8090, loopback)
#   BYOK_REDIS_PORT  Redis port (default 6380, so a system Redis on 6379 does not clash)
#   BYOK_MODULE      module to load (default build/ngx_http_byok_module.so)
#   BYOK_RUN_DIR     state directory (default .run; tests use their own)
#
# Everything lives in .run/ (git-ignored). Only processes whose pid files are
# in .run/ are ever stopped.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${BYOK_RUN_DIR:-$ROOT/.run}
MODULE=${BYOK_MODULE:-$ROOT/build/ngx_http_byok_module.so}
PORT=${BYOK_PORT:-8080}
ADMIN_PORT=${BYOK_ADMIN_PORT:-8081}
DEMO_PORT=${BYOK_DEMO_PORT:-8090}
REDIS_PORT=${BYOK_REDIS_PORT:-6380}
NGINX_PID=$RUN/nginx.pid
REDIS_PID=$RUN/redis.pid
DEMO_PID=$RUN/demo.pid
NGINX=(nginx -p "$RUN/" -c "$RUN/nginx.conf")
# nginx workers drop root for this user (Debian's nginx default).
WORKER_USER=www-data

say() { echo "run.sh: $*"; }
die() { echo "run.sh: $*" >&2; exit 1; }

# True when the pid file names a live process whose command is $2, so a
# stale pid file never makes us signal an unrelated process.
alive() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# Sends $3 to the process in pid file $1 (command $2) and waits up to $4
# seconds for it to exit.
signal_and_wait() {
    local pid i
    alive "$1" "$2" || return 0
    pid=$(cat "$1")
    kill "-$3" "$pid" 2>/dev/null || true
    for ((i = 0; i < $4 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

sed_escape() { printf '%s' "$1" | sed 's/[\\&#]/\\&/g'; }

# --- ports -----------------------------------------------------------------------

# Pids of the processes listening on TCP port $1.
port_pids() {
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

# TCP ports process $1 and its children listen on, one per line.
ports_of() {
    local pids line p
    pids=$(echo "$1"; pgrep -P "$1" 2>/dev/null || true)
    ss -Hltnp 2>/dev/null | while read -r line; do
        for p in $pids; do
            case "$line" in *"pid=$p,"*)
                echo "$line" | awk '{print $4}' | sed 's/.*://'; break ;;
            esac
        done
    done | sort -un
}

# True when pid $1 is the process of pid file $2 or one of its children.
owned_by() {
    local master
    [ -f "$2" ] || return 1
    master=$(cat "$2")
    [ "$1" = "$master" ] || [ "$(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ')" = "$master" ]
}

# Dies with one line naming the variable when port $2 is taken by anything
# but the process of pid file $3 (our own instance, which is reused).
check_port() {
    local var=$1 port=$2 pidfile=$3 pid
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
        || die "$var=$port is not a port number"
    for pid in $(port_pids "$port"); do
        owned_by "$pid" "$pidfile" && continue
        die "127.0.0.1:$port is already in use by $(cat "/proc/$pid/comm" 2>/dev/null || echo "another program") (pid $pid); choose another port with $var=<port> make run"
    done
    # A listener whose pid we cannot see still makes the port busy.
    if [ -z "$(port_pids "$port")" ] && ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
        die "127.0.0.1:$port is already in use; choose another port with $var=<port> make run"
    fi
}

# Everything is checked before anything starts, so a busy port leaves
# nothing new running.
check_ports() {
    local seen="" v p now
    for v in BYOK_PORT:$PORT BYOK_ADMIN_PORT:$ADMIN_PORT BYOK_DEMO_PORT:$DEMO_PORT \
             BYOK_REDIS_PORT:$REDIS_PORT; do
        p=${v#*:}
        case " $seen " in *" $p "*) die "${v%%:*}=$p is already used by another BYOK_*_PORT; the four ports must differ" ;; esac
        seen="$seen $p"
    done
    check_port BYOK_PORT "$PORT" "$NGINX_PID"
    check_port BYOK_ADMIN_PORT "$ADMIN_PORT" "$NGINX_PID"
    check_port BYOK_DEMO_PORT "$DEMO_PORT" "$DEMO_PID"
    check_port BYOK_REDIS_PORT "$REDIS_PORT" "$REDIS_PID"
    # Redis holds the data: moving it under a running gateway is refused
    # rather than guessed at. (nginx and the demo provider just follow.)
    if alive "$REDIS_PID" redis-server; then
        now=$(ports_of "$(cat "$REDIS_PID")" | head -1)
        [ -z "$now" ] || [ "$now" = "$REDIS_PORT" ] \
            || die "redis of the running instance listens on $now, not BYOK_REDIS_PORT=$REDIS_PORT; run 'make stop' first, or BYOK_REDIS_PORT=$now make run"
    fi
}

# --- .run/ and its secrets ---------------------------------------------------

make_run_dir() {
    # nginx does not quote paths it reads from the config.
    [[ "$ROOT" =~ ^[A-Za-z0-9_./-]+$ && "$RUN" =~ ^[A-Za-z0-9_./-]+$ ]] \
        || die "the paths '$ROOT' and '$RUN' must not contain spaces or special characters"

    # 0711, not 0700: nginx workers (uid $WORKER_USER) must be able to
    # traverse .run/ to reach their temp directory .run/tmp. Listing stays
    # denied and every secret file inside is 0600 root, read by the master
    # process at configuration time, so the workers can open none of them.
    mkdir -p "$RUN"
    chmod 0711 "$RUN"
    mkdir -p -m 0700 "$RUN/logs" "$RUN/redis"
    mkdir -p "$RUN/upstreams.d"

    umask 077
    if [ ! -f "$RUN/master.keys" ]; then
        echo "k$(date +%Y%m%d) $(openssl rand -base64 32)" >"$RUN/master.keys"
        say "created master key ring $RUN/master.keys"
    fi
    if [ ! -f "$RUN/admin.tokens" ]; then
        echo "adm_$(openssl rand -hex 24)" >"$RUN/admin.tokens"
        say "created admin token in $RUN/admin.tokens"
    fi
    if [ ! -f "$RUN/openrouter.key" ]; then
        echo "sk-or-REPLACE-ME" >"$RUN/openrouter.key"
        say "created $RUN/openrouter.key with a placeholder:" \
            "put your real OpenRouter key there to enable fallback, then 'make run' again"
    fi
    if [ ! -f "$RUN/demo.key" ]; then
        echo "demo-$(openssl rand -hex 16)" >"$RUN/demo.key"
        say "created the DEMO provider's key in $RUN/demo.key"
    fi
    chown root: "$RUN/master.keys" "$RUN/admin.tokens" "$RUN/openrouter.key" "$RUN/demo.key"
    chmod 0600 "$RUN/master.keys" "$RUN/admin.tokens" "$RUN/openrouter.key" "$RUN/demo.key"
    umask 022
}

# Temp files (request bodies over client_body_buffer_size, proxy buffers) are
# written by the workers, so the directory belongs to $WORKER_USER. When the
# checkout sits under a directory the workers cannot traverse (e.g. /root),
# a per-instance directory in /var/tmp is used instead.
temp_dir() {
    local tmp=$RUN/tmp
    mkdir -p "$tmp"
    chown "$WORKER_USER:" "$tmp"
    chmod 0700 "$tmp"
    if ! runuser -u "$WORKER_USER" -- test -w "$tmp" 2>/dev/null; then
        tmp=/var/tmp/byok-$(printf '%s' "$RUN" | sha256sum | cut -c1-12)
        mkdir -p "$tmp"
        chown "$WORKER_USER:" "$tmp"
        chmod 0700 "$tmp"
        say "$WORKER_USER cannot reach $RUN/tmp (a parent directory is closed); temp files go to $tmp" >&2
    fi
    echo "$tmp"
}

# --- configuration -------------------------------------------------------------

# conf/providers.yaml plus the local DEMO provider, which exists only in the
# instance `make run` renders (never in the shipped catalog).
render_catalog() {
    [ -f "$ROOT/conf/providers.yaml" ] || die "$ROOT/conf/providers.yaml not found"
    {
        cat "$ROOT/conf/providers.yaml"
        echo "  # Added by scripts/run.sh: the offline DEMO provider (scripts/demo_provider.py),"
        echo "  # so the walkthrough answers without internet. Not a real model."
        echo "  demo:"
        echo "    name: DEMO provider (local, offline, not a real model)"
        echo "    base_url: http://127.0.0.1:$DEMO_PORT"
        echo "    openai_base: http://127.0.0.1:$DEMO_PORT/v1"
        echo "    auth: bearer"
        echo "    key_prefix: \"demo-\""
        echo "    test: { method: GET, path: /models }"
        echo "    models: [\"demo-*\"]"
    } >"$RUN/providers.yaml"
}

render_config() {
    local tmp r m f src=$ROOT/conf/nginx.conf
    [ -f "$src" ] || die "$src not found"
    for f in byok_gateway.conf byok_proxy.conf byok_admin.conf; do
        if [ -f "$ROOT/conf/$f" ]; then cp "$ROOT/conf/$f" "$RUN/$f"; fi
    done
    render_catalog

    # Keepalive upstream blocks name the providers' hosts; nginx resolves them
    # at start and refuses to start when that fails.
    if getent hosts api.openai.com >/dev/null 2>&1; then
        cp "$ROOT/conf/provider_upstreams.conf" "$RUN/upstreams.d/provider_upstreams.conf"
        say "provider host names resolve: keepalive upstream blocks enabled ($RUN/upstreams.d/)"
    else
        rm -f "$RUN/upstreams.d/provider_upstreams.conf"
        say "provider host names do not resolve (no DNS): keepalive upstream blocks not installed"
    fi

    tmp=$(sed_escape "$(temp_dir)")
    r=$(sed_escape "$RUN")
    m=$(sed_escape "$MODULE")
    local edits=(
        -e "s#^load_module .*;#load_module $m;#"
        -e "s#/etc/byok/#$r/#g"
        -e "s#^error_log [^ ;]*#error_log $r/logs/error.log#"
        -e "s#^pid .*;#pid $r/nginx.pid;#"
        -e "s#^\([[:space:]]*access_log[[:space:]]\{1,\}\)/[^ ;]*#\1$r/logs/access.log#"
        -e "s#\(byok_redis[[:space:]]\{1,\}127\.0\.0\.1:\)6379#\1$REDIS_PORT#"
        -e "s#\(listen[[:space:]]\{1,\}127\.0\.0\.1:\)8080;#\1$PORT;#"
        -e "s#\(listen[[:space:]]\{1,\}127\.0\.0\.1:\)8081;#\1$ADMIN_PORT;#"
        -e "s#^user .*;#user $WORKER_USER;#"
        -e "/^http[[:space:]]*{/a\\
    client_body_temp_path $tmp/body;\\
    proxy_temp_path       $tmp/proxy;\\
    fastcgi_temp_path     $tmp/fastcgi;\\
    uwsgi_temp_path       $tmp/uwsgi;\\
    scgi_temp_path        $tmp/scgi;"
    )
    # Never send traffic with the placeholder: without a real operator key
    # there is no fallback (and no byok_system_key line).
    if grep -q "REPLACE-ME" "$RUN/openrouter.key"; then
        edits+=(-e '/^[[:space:]]*byok_system_key[[:space:]]\{1,\}openrouter[[:space:]]/d')
        edits+=(-e 's#^\([[:space:]]*byok_fallback[[:space:]]\{1,\}\)openrouter;#\1off;#')
        say "no OpenRouter key yet ($RUN/openrouter.key holds a placeholder): fallback is off"
    fi
    {
        echo "# Generated by scripts/run.sh from conf/nginx.conf; edit that file and"
        echo "# run 'make run' again (it re-renders this file and reloads nginx)."
        sed "${edits[@]}" "$src"
    } >"$RUN/nginx.conf.new"

    grep -q '^user ' "$RUN/nginx.conf.new" || die "conf/nginx.conf has no 'user' line"
    grep -q 'client_body_temp_path' "$RUN/nginx.conf.new" || die "conf/nginx.conf has no 'http {' line"
    grep -q "listen 127.0.0.1:$PORT;" "$RUN/nginx.conf.new" \
        || die "conf/nginx.conf has no 'listen 127.0.0.1:8080;' line for BYOK_PORT"
    grep -q "listen 127.0.0.1:$ADMIN_PORT;" "$RUN/nginx.conf.new" \
        || die "conf/nginx.conf has no 'listen 127.0.0.1:8081;' line for BYOK_ADMIN_PORT"
    if grep -n -E '/etc/byok/|/var/log/nginx|[[:space:]]/run/nginx' "$RUN/nginx.conf.new" >&2; then
        die "could not point every path of conf/nginx.conf into $RUN/ (lines above)"
    fi
    mv "$RUN/nginx.conf.new" "$RUN/nginx.conf"
}

# --- Redis -------------------------------------------------------------------------

start_redis() {
    local i dir
    if alive "$REDIS_PID" redis-server; then
        say "redis already running (pid $(cat "$REDIS_PID")) on 127.0.0.1:$REDIS_PORT, reusing it"
        return
    fi
    if dir=$(timeout 3 redis-cli -p "$REDIS_PORT" --raw config get dir 2>/dev/null | sed -n 2p) \
        && [ -n "$dir" ]; then
        # Something answers on the port: fine only if it is our own Redis
        # that lost its pid file.
        if [ "$dir" = "$RUN/redis" ]; then
            redis-cli -p "$REDIS_PORT" --raw info server \
                | sed -n 's/^process_id:\([0-9]*\).*/\1/p' >"$REDIS_PID"
            say "redis on port $REDIS_PORT is ours (pid $(cat "$REDIS_PID")), reusing it"
            return
        fi
    fi
    rm -f "$REDIS_PID"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
        --appendonly yes --dir "$RUN/redis" --pidfile "$REDIS_PID" \
        --logfile "$RUN/logs/redis.log" \
        || die "redis-server failed to start; see $RUN/logs/redis.log"
    for ((i = 0; i < 50; i++)); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && {
            say "redis started on 127.0.0.1:$REDIS_PORT (AOF on, data in $RUN/redis)"
            return
        }
        sleep 0.1
    done
    tail -5 "$RUN/logs/redis.log" >&2 || true
    die "redis did not answer on 127.0.0.1:$REDIS_PORT"
}

# --- the DEMO provider ---------------------------------------------------------------

start_demo() {
    local i
    if alive "$DEMO_PID" python3; then
        if [ "$(ports_of "$(cat "$DEMO_PID")" | head -1)" = "$DEMO_PORT" ]; then
            say "DEMO provider already running on 127.0.0.1:$DEMO_PORT"
            return
        fi
        signal_and_wait "$DEMO_PID" python3 TERM 5 || die "the old demo provider did not stop"
    fi
    rm -f "$DEMO_PID"
    setsid python3 "$ROOT/scripts/demo_provider.py" --port "$DEMO_PORT" \
        --key-file "$RUN/demo.key" --pid-file "$DEMO_PID" \
        </dev/null >>"$RUN/logs/demo.log" 2>&1 &
    for ((i = 0; i < 50; i++)); do
        if alive "$DEMO_PID" python3 && [ -n "$(port_pids "$DEMO_PORT")" ]; then
            say "DEMO provider started on 127.0.0.1:$DEMO_PORT (offline stand-in, not a real model)"
            return
        fi
        sleep 0.1
    done
    tail -5 "$RUN/logs/demo.log" >&2 || true
    die "the demo provider did not start on 127.0.0.1:$DEMO_PORT"
}

# --- nginx -------------------------------------------------------------------------

workers_of() { pgrep -P "$1" 2>/dev/null | sort || true; }

# A reload has finished when every worker of the old generation is gone and
# the new ones listen on both ports: only then does the next admin call see
# the new configuration.
reload_nginx() {
    local master old left="" i
    master=$(cat "$NGINX_PID")
    old=$(workers_of "$master")
    "${NGINX[@]}" -s reload
    for ((i = 0; i < 300; i++)); do
        left=$(comm -12 <(echo "$old") <(workers_of "$master"))
        if [ -z "$left" ] && [ -n "$(workers_of "$master")" ] \
            && [ "$(ports_of "$master" | grep -cx -e "$PORT" -e "$ADMIN_PORT")" = 2 ]; then
            say "nginx (pid $master) reloaded: new workers serve 127.0.0.1:$PORT (gateway) and 127.0.0.1:$ADMIN_PORT (admin)"
            return
        fi
        sleep 0.1
    done
    die "nginx reload did not finish in 30 s (old workers $(echo $left) still finishing requests); see $RUN/logs/error.log"
}

start_nginx() {
    local i
    [ -f "$MODULE" ] || die "$MODULE not found; run 'make build' first"
    "${NGINX[@]}" -t -q || die "nginx rejected $RUN/nginx.conf (errors above)"
    if alive "$NGINX_PID" nginx; then
        reload_nginx
        return
    fi
    rm -f "$NGINX_PID"
    "${NGINX[@]}" || die "nginx failed to start; see $RUN/logs/error.log"
    for ((i = 0; i < 50; i++)); do
        if alive "$NGINX_PID" nginx \
            && [ "$(ports_of "$(cat "$NGINX_PID")" | grep -cx -e "$PORT" -e "$ADMIN_PORT")" = 2 ]; then
            say "nginx started (pid $(cat "$NGINX_PID")): gateway 127.0.0.1:$PORT, admin API and metrics 127.0.0.1:$ADMIN_PORT"
            return
        fi
        sleep 0.1
    done
    die "nginx did not start listening; see $RUN/logs/error.log"
}

next_steps() {
    # The admin token is not printed; the examples read it from its file.
    local gw=http://127.0.0.1:$PORT adm=http://127.0.0.1:$ADMIN_PORT/admin/v1
    cat <<EOF

Gateway:  $gw      Admin API and metrics: http://127.0.0.1:$ADMIN_PORT (loopback only)
Console:  http://127.0.0.1:$ADMIN_PORT/console/ (sign in with the admin token or a gateway key)
Logs:     $RUN/logs/      config: $RUN/nginx.conf
Secrets:  $RUN/master.keys (master key ring), $RUN/admin.tokens (admin token),
          $RUN/openrouter.key (put your real OpenRouter key there for fallback)
DEMO:     provider "demo" is a local, offline stand-in on 127.0.0.1:$DEMO_PORT for
          models "demo-*" (not a real model); its key is in $RUN/demo.key

Try it (copy line by line; works without internet):
  ADMIN=\$(cat $RUN/admin.tokens); JSON='Content-Type: application/json'
  # 1. a project (tier starter or above may store its own provider keys)
  curl -s -w '\n' -H "Authorization: Bearer \$ADMIN" -H "\$JSON" -d '{"id":"acme","name":"Acme","tier":"starter"}' $adm/projects
  # 2. a gateway key for it: the byok_... key is shown in this response only
  GW=\$(curl -s -H "Authorization: Bearer \$ADMIN" -H "\$JSON" -d '{"label":"dev"}' $adm/projects/acme/api-keys | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'); echo "\$GW"
  # 3. the project's key for the DEMO provider (stored encrypted with the master key)
  curl -s -w '\n' -X PUT -H "Authorization: Bearer \$ADMIN" -H "\$JSON" -d "{\"key\":\"\$(cat $RUN/demo.key)\"}" $adm/projects/acme/keys/demo
  # 4. a live key test, through the same header builder as real traffic
  curl -s -w '\n' -X POST -H "Authorization: Bearer \$ADMIN" $adm/projects/acme/keys/demo/test
  # 5. a chat answer with the gateway key (see x-byok-route: byok)
  curl -s -i -w '\n' -H "Authorization: Bearer \$GW" -H "\$JSON" -d '{"model":"demo-chat","messages":[{"role":"user","content":"hello"}]}' $gw/v1/chat/completions
  # 6. the same, streamed word by word
  curl -s -N -H "Authorization: Bearer \$GW" -H "\$JSON" -d '{"model":"demo-chat","stream":true,"messages":[{"role":"user","content":"hello"}]}' $gw/v1/chat/completions
  # 7. usage per provider and route (counters reach Redis within a second)
  curl -s -w '\n' -H "Authorization: Bearer \$ADMIN" $adm/projects/acme/stats
Real providers work the same way: PUT .../keys/openai with your own sk-... key.
Stop with: make stop      What runs where: make status
EOF
}

cmd_start() {
    "$ROOT/scripts/deps.sh" run
    [ "$(id -u)" = 0 ] || die "run as root (nginx drops to $WORKER_USER for its workers)"
    check_ports
    make_run_dir
    render_config
    start_redis
    start_demo
    start_nginx
    next_steps
}

cmd_stop() {
    if alive "$NGINX_PID" nginx; then
        # Graceful: in-flight requests (streams) get 10 s to finish.
        signal_and_wait "$NGINX_PID" nginx QUIT 10 \
            || signal_and_wait "$NGINX_PID" nginx TERM 5 \
            || die "nginx (pid $(cat "$NGINX_PID")) did not stop"
        say "nginx stopped"
    else
        say "nginx not running"
    fi
    rm -f "$NGINX_PID"
    if alive "$DEMO_PID" python3; then
        signal_and_wait "$DEMO_PID" python3 TERM 5 || die "the demo provider did not stop"
        say "demo provider stopped"
    else
        say "demo provider not running"
    fi
    rm -f "$DEMO_PID"
    if alive "$REDIS_PID" redis-server; then
        # SIGTERM makes Redis flush the AOF and exit cleanly.
        signal_and_wait "$REDIS_PID" redis-server TERM 10 \
            || die "redis (pid $(cat "$REDIS_PID")) did not stop"
        say "redis stopped"
    else
        say "redis not running"
    fi
    rm -f "$REDIS_PID"
}

# What runs and the ports each process really listens on (read from the
# processes, not from the environment of this call).
status_line() {
    local what=$1 pidfile=$2 comm=$3 ports
    if alive "$pidfile" "$comm"; then
        ports=$(ports_of "$(cat "$pidfile")" | sed 's/^/127.0.0.1:/' | paste -sd' ' -)
        say "$what running (pid $(cat "$pidfile")) listening on ${ports:-nothing}"
        return 0
    fi
    say "$what not running"
    return 3
}

cmd_status() {
    local rc=0
    status_line nginx "$NGINX_PID" nginx || rc=3
    status_line redis "$REDIS_PID" redis-server || rc=3
    status_line "demo provider" "$DEMO_PID" python3 || rc=3
    return $rc
}

case "${1:-}" in
    start)  cmd_start ;;
    stop)   cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
