#!/bin/bash
# Local instance for trying the gateway: `make run` / `make stop`.
#
#   run.sh start    install runtime packages, create .run/ (secrets on first
#                   start only), render .run/nginx.conf from conf/nginx.conf,
#                   start Redis and nginx on 127.0.0.1 (reload nginx when it
#                   is already running)
#   run.sh stop     stop the nginx and Redis that `start` started
#   run.sh status   show what is running
#
#   BYOK_MODULE      module to load (default build/ngx_http_byok_module.so)
#   BYOK_REDIS_PORT  Redis port (default 6380, so a system Redis on 6379 does not clash)
#
# Everything lives in .run/ (git-ignored). Only processes whose pid files are
# in .run/ are ever stopped.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=$ROOT/.run
MODULE=${BYOK_MODULE:-$ROOT/build/ngx_http_byok_module.so}
REDIS_PORT=${BYOK_REDIS_PORT:-6380}
NGINX_PID=$RUN/nginx.pid
REDIS_PID=$RUN/redis.pid
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

# --- .run/ and its secrets ---------------------------------------------------

make_run_dir() {
    # nginx does not quote paths it reads from the config.
    [[ "$ROOT" =~ ^[A-Za-z0-9_./-]+$ ]] \
        || die "the repository path '$ROOT' must not contain spaces or special characters"

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
    chmod 0600 "$RUN/master.keys" "$RUN/admin.tokens" "$RUN/openrouter.key"
    umask 022
}

# Temp files (request bodies over client_body_buffer_size, proxy buffers) are
# written by the workers, so the directory belongs to $WORKER_USER. When the
# checkout sits under a directory the workers cannot traverse (e.g. /root),
# a per-checkout directory in /var/tmp is used instead.
temp_dir() {
    local tmp=$RUN/tmp
    mkdir -p "$tmp"
    chown "$WORKER_USER:" "$tmp"
    chmod 0700 "$tmp"
    if ! runuser -u "$WORKER_USER" -- test -w "$tmp" 2>/dev/null; then
        tmp=/var/tmp/byok-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
        mkdir -p "$tmp"
        chown "$WORKER_USER:" "$tmp"
        chmod 0700 "$tmp"
        say "$WORKER_USER cannot reach $RUN/tmp (a parent directory is closed); temp files go to $tmp" >&2
    fi
    echo "$tmp"
}

# --- configuration -------------------------------------------------------------

render_config() {
    local tmp r m src=$ROOT/conf/nginx.conf
    [ -f "$src" ] || die "$src not found"
    cp "$ROOT/conf/byok_gateway.conf" "$RUN/byok_gateway.conf"

    local drop_providers=""
    if [ -f "$ROOT/conf/providers.yaml" ]; then
        cp "$ROOT/conf/providers.yaml" "$RUN/providers.yaml"
    else
        rm -f "$RUN/providers.yaml"
        drop_providers='/^[[:space:]]*byok_providers[[:space:]]/d'
        say "conf/providers.yaml not found: using the module's built-in catalog"
    fi

    # Keepalive upstream blocks name the providers' hosts; nginx resolves them
    # at start and refuses to start when that fails.
    if getent hosts api.openai.com >/dev/null 2>&1; then
        cp "$ROOT/conf/provider_upstreams.conf" "$RUN/upstreams.d/provider_upstreams.conf"
        say "provider host names resolve: keepalive upstream blocks enabled (.run/upstreams.d/)"
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
        -e "s#^user .*;#user $WORKER_USER;#"
        -e "/^http[[:space:]]*{/a\\
    client_body_temp_path $tmp/body;\\
    proxy_temp_path       $tmp/proxy;\\
    fastcgi_temp_path     $tmp/fastcgi;\\
    uwsgi_temp_path       $tmp/uwsgi;\\
    scgi_temp_path        $tmp/scgi;"
    )
    [ -n "$drop_providers" ] && edits+=(-e "$drop_providers")
    # Never send traffic with the placeholder: without a real operator key
    # there is no fallback (and no byok_system_key line).
    if grep -q "REPLACE-ME" "$RUN/openrouter.key"; then
        edits+=(-e '/^[[:space:]]*byok_system_key[[:space:]]\{1,\}openrouter[[:space:]]/d')
        edits+=(-e 's#^\([[:space:]]*byok_fallback[[:space:]]\{1,\}\)openrouter;#\1off;#')
        say "no OpenRouter key yet (.run/openrouter.key holds a placeholder): fallback is off"
    fi
    {
        echo "# Generated by scripts/run.sh from conf/nginx.conf; edit that file and"
        echo "# run 'make run' again (it re-renders this file and reloads nginx)."
        sed "${edits[@]}" "$src"
    } >"$RUN/nginx.conf.new"

    grep -q '^user ' "$RUN/nginx.conf.new" || die "conf/nginx.conf has no worker_processes line to anchor 'user'"
    grep -q 'client_body_temp_path' "$RUN/nginx.conf.new" || die "conf/nginx.conf has no 'http {' line"
    if grep -n -E '/etc/byok/|/var/log/nginx|/run/nginx' "$RUN/nginx.conf.new" >&2; then
        die "could not point every path of conf/nginx.conf into .run/ (lines above)"
    fi
    mv "$RUN/nginx.conf.new" "$RUN/nginx.conf"
}

# --- Redis -------------------------------------------------------------------------

start_redis() {
    local i dir
    if alive "$REDIS_PID" redis-server; then
        say "redis already running (pid $(cat "$REDIS_PID")), reusing it"
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
    if ss -Hltn "sport = :$REDIS_PORT" 2>/dev/null | grep -q .; then
        die "127.0.0.1:$REDIS_PORT is in use by a process this script did not start.
  If it is Debian's redis-server service: systemctl disable --now redis-server
  or use another port: BYOK_REDIS_PORT=6380 make run"
    fi
    rm -f "$REDIS_PID"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
        --appendonly yes --dir "$RUN/redis" --pidfile "$REDIS_PID" \
        --logfile "$RUN/logs/redis.log" \
        || die "redis-server failed to start; see $RUN/logs/redis.log"
    for ((i = 0; i < 50; i++)); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && {
            say "redis started on 127.0.0.1:$REDIS_PORT (AOF on, data in .run/redis)"
            return
        }
        sleep 0.1
    done
    tail -5 "$RUN/logs/redis.log" >&2 || true
    die "redis did not answer on 127.0.0.1:$REDIS_PORT"
}

# --- nginx -------------------------------------------------------------------------

start_nginx() {
    local i
    [ -f "$MODULE" ] || die "$MODULE not found; run 'make build' first"
    "${NGINX[@]}" -t -q || die "nginx rejected $RUN/nginx.conf (errors above)"
    if alive "$NGINX_PID" nginx; then
        "${NGINX[@]}" -s reload
        say "nginx already running (pid $(cat "$NGINX_PID")): configuration reloaded"
        return
    fi
    rm -f "$NGINX_PID"
    "${NGINX[@]}" || die "nginx failed to start; see $RUN/logs/error.log"
    for ((i = 0; i < 50; i++)); do
        alive "$NGINX_PID" nginx && { say "nginx started on 127.0.0.1:8080 (pid $(cat "$NGINX_PID"))"; return; }
        sleep 0.1
    done
    die "nginx did not write $NGINX_PID; see $RUN/logs/error.log"
}

next_steps() {
    # The admin token is not printed; the examples read it from its file.
    cat <<EOF

Gateway:   http://127.0.0.1:8080      logs: .run/logs/   config: .run/nginx.conf
Secrets:   .run/master.keys (master key ring), .run/admin.tokens (admin token),
           .run/openrouter.key (put your real OpenRouter key there for fallback)

Try it:
  ADMIN=\$(cat $RUN/admin.tokens); JSON='Content-Type: application/json'
  # create a project (tier starter or above may store its own provider keys)
  curl -s -w '\n' -H "Authorization: Bearer \$ADMIN" -H "\$JSON" -d '{"id":"demo","name":"Demo","tier":"starter"}' \\
       http://127.0.0.1:8080/admin/v1/projects
  # mint a gateway key: the byok_... key is shown in this response only
  curl -s -w '\n' -H "Authorization: Bearer \$ADMIN" -H "\$JSON" -d '{"label":"dev"}' \\
       http://127.0.0.1:8080/admin/v1/projects/demo/api-keys
  GW=byok_...   # the key from the response above
  # store the project's OpenAI key (encrypted with the master key)
  curl -s -w '\n' -X PUT -H "Authorization: Bearer \$ADMIN" -H "\$JSON" -d '{"key":"sk-..."}' \\
       http://127.0.0.1:8080/admin/v1/projects/demo/keys/openai
  # call a model with the gateway key
  curl -s -w '\n' -H "Authorization: Bearer \$GW" -H "\$JSON" \\
       -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' \\
       http://127.0.0.1:8080/v1/chat/completions

Stop with: make stop
EOF
}

cmd_start() {
    "$ROOT/scripts/deps.sh" run
    [ "$(id -u)" = 0 ] || die "run as root (nginx drops to $WORKER_USER for its workers)"
    make_run_dir
    render_config
    start_redis
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

cmd_status() {
    local rc=0
    if alive "$NGINX_PID" nginx; then
        say "nginx running (pid $(cat "$NGINX_PID")) on 127.0.0.1:8080"
    else
        say "nginx not running"; rc=3
    fi
    if alive "$REDIS_PID" redis-server; then
        say "redis running (pid $(cat "$REDIS_PID")) on 127.0.0.1:$REDIS_PORT"
    else
        say "redis not running"; rc=3
    fi
    return $rc
}

case "${1:-}" in
    start)  cmd_start ;;
    stop)   cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
