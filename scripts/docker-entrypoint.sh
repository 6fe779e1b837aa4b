#!/bin/sh
# Entry point of the byok image: checks that the secrets are mounted, turns on
# the keepalive upstream blocks when provider host names resolve, runs CMD.
set -eu

for f in master.keys admin.tokens openrouter.key; do
    if [ ! -r "/etc/byok/$f" ]; then
        echo "byok: /etc/byok/$f is missing; mount it (see the Dockerfile header)" >&2
        exit 1
    fi
done

# nginx resolves upstream server names once at start and refuses to start
# when that fails, so the upstream blocks are only installed with working DNS.
if getent hosts api.openai.com >/dev/null 2>&1; then
    cp /usr/share/byok/provider_upstreams.conf /etc/byok/upstreams.d/
else
    rm -f /etc/byok/upstreams.d/provider_upstreams.conf
    echo "byok: no DNS for provider hosts; keepalive upstream blocks disabled" >&2
fi

exec "$@"
