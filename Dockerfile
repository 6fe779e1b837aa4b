# ngx_byok_module image: Debian 12 nginx + the BYOK module + example config.
#
#   make docker       # builds localhost/byok:dev (docker, podman, buildah or
#                     # ../shared/tools/oci-build) and runs `nginx -t` in it
#   docker run -d --name byok -p 8080:8080 \
#     -v /srv/byok/master.keys:/etc/byok/master.keys:ro \
#     -v /srv/byok/admin.tokens:/etc/byok/admin.tokens:ro \
#     -v /srv/byok/openrouter.key:/etc/byok/openrouter.key:ro \
#     -v /srv/byok/nginx.conf:/etc/nginx/nginx.conf:ro \
#     localhost/byok:dev
#   docker inspect --format '{{.State.Health.Status}}' byok    # healthy
#
# Secrets are never baked into the image; mount them, owned by root with
# mode 0600 or 0400 (nginx refuses group/other bits and other owners):
#   /etc/byok/master.keys    `<kid> <base64 of 32 random bytes>` per line
#   /etc/byok/admin.tokens   admin bearer tokens, one per line
#   /etc/byok/openrouter.key the operator's OpenRouter key (fallback)
# The shipped nginx.conf expects Redis on 127.0.0.1:6379; in the image the
# gateway listens on *:8080 (published with -p) and the admin API and
# metrics on 127.0.0.1:8081 inside the container only. Mount your own
# /etc/nginx/nginx.conf (as above) for `byok_redis <redis-ip>:6379;` and an
# admin listener on a private address. HEALTHCHECK asks GET /healthz.

# ---- build stage: the same scripts `make build` runs ----------------------
FROM debian:bookworm AS build

# Keep package postinst scripts from starting services during the build.
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d

COPY scripts/deps.sh scripts/progress.sh /src/scripts/
RUN /src/scripts/deps.sh build

COPY . /src
RUN /src/scripts/build.sh \
 && mkdir -p /out/etc/byok/upstreams.d /out/usr/share/byok \
 && cp /src/conf/byok_gateway.conf /src/conf/byok_admin.conf /out/etc/byok/ \
 && cp /src/conf/byok_proxy.conf /out/byok_proxy.conf \
 && cp /src/conf/provider_upstreams.conf /out/usr/share/byok/ \
 && sed 's/^\( *listen \)127\.0\.0\.1:8080;/\18080;/' /src/conf/nginx.conf >/out/nginx.conf \
 && grep -q '^ *listen 8080;' /out/nginx.conf \
 && if [ -f /src/conf/providers.yaml ]; then \
        cp /src/conf/providers.yaml /out/etc/byok/; \
    else \
        sed -i '/^[[:space:]]*byok_providers[[:space:]]/d' /out/nginx.conf; \
    fi

# ---- runtime stage ---------------------------------------------------------
FROM debian:bookworm

RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nginx libhiredis0.14 libyaml-cpp0.7 libssh-4 libssl3 ca-certificates curl >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stderr /var/log/nginx/byok-error.log \
 && ln -sf /dev/stdout /var/log/nginx/byok-access.log

COPY --from=build /src/build/ngx_http_byok_module.so /usr/lib/nginx/modules/ngx_http_byok_module.so
COPY --from=build /out/etc/byok/ /etc/byok/
COPY --from=build /out/usr/share/byok/ /usr/share/byok/
COPY --from=build /out/nginx.conf /etc/nginx/nginx.conf
# Included by byok_gateway.conf relative to nginx.conf's directory.
COPY --from=build /out/byok_proxy.conf /etc/nginx/byok_proxy.conf
COPY scripts/docker-entrypoint.sh /usr/local/bin/byok-entrypoint

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s \
    CMD curl -fsS http://127.0.0.1:8080/healthz >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/byok-entrypoint"]
CMD ["nginx", "-g", "daemon off;"]
