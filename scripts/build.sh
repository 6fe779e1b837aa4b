#!/bin/bash
# Builds build/ngx_http_byok_module.so against the distribution's nginx-dev
# tree. Used by `make build` and by the Dockerfile, so both build the same way.
#
#   NGX_SRC     configured nginx source tree to copy (default /usr/share/nginx/src)
#   BUILD_DIR   output directory (default <repo>/build)
#   BYOK_CFLAGS extra compiler flags for lib/ and the glue (e.g. sanitizers)
set -eu
. "$(dirname "$0")/progress.sh"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NGX_SRC=${NGX_SRC:-/usr/share/nginx/src}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BYOK_CFLAGS=${BYOK_CFLAGS:-}
JOBS=$(nproc 2>/dev/null || echo 2)

[ -f "$NGX_SRC/conf_flags" ] || {
    echo "build.sh: $NGX_SRC/conf_flags not found; install nginx-dev" >&2
    exit 1
}

# lib/ (libbyok.a, with the embedded catalog) and the console's assets are
# built by the rules config.make adds to nginx's objs/Makefile (step 3).

# 2. A private copy of the nginx tree, configured once. Re-configured only
#    when the module's file list, `config` or the flags change.
NGX_TREE=$BUILD_DIR/nginx
stamp=$( (cat "$ROOT/config" "$ROOT/config.make" "$NGX_SRC/conf_flags" "$0"; ls "$ROOT"/ngx_byok_module;
          echo "$BUILD_DIR";
          echo "$BYOK_CFLAGS") | sha256sum | cut -c1-16)
if [ ! -f "$NGX_TREE/.byok-stamp" ] || [ "$(cat "$NGX_TREE/.byok-stamp")" != "$stamp" ]; then
    rm -rf "$NGX_TREE"
    mkdir -p "$NGX_TREE"
    cp -a "$NGX_SRC"/. "$NGX_TREE"/
    # shellcheck disable=SC1091
    . "$NGX_TREE/conf_flags"
    cd "$NGX_TREE"
    # conf_flags has no --with-cc-opt; the distro's nginx was built with
    # -fPIC, which a shared module needs anyway.
    step build.sh "configuring a private nginx tree (once)" \
        env BYOK_BUILD_DIR="$BUILD_DIR" BYOK_CFLAGS="$BYOK_CFLAGS" ./configure "${NGX_CONF_FLAGS[@]}" \
        --with-cc-opt="-fPIC $BYOK_CFLAGS" \
        --with-ld-opt="$BYOK_CFLAGS" \
        --add-dynamic-module="$ROOT"
    echo "$stamp" >"$NGX_TREE/.byok-stamp"
fi

# 3. The module itself (incremental).
cd "$NGX_TREE"
step build.sh "compiling lib/, the module glue and linking" make -s -j"$JOBS" -f objs/Makefile modules
# A shared module may leave symbols undefined (nginx's own are resolved at
# load time), so a missing lib/ definition would only show up at dlopen().
undefined=$(nm -u --demangle objs/ngx_http_byok_module.so | grep 'byok::' || true)
if [ -n "$undefined" ]; then
    echo "build.sh: the module references undefined lib/ symbols:" >&2
    echo "$undefined" >&2
    exit 1
fi
# Replace by rename, never by overwriting in place: a running nginx (`make
# run`, a test) has the old file mapped, and rewriting it under the master
# crashes it on the next reload.
cp objs/ngx_http_byok_module.so "$BUILD_DIR/.ngx_http_byok_module.so.tmp"
mv -f "$BUILD_DIR/.ngx_http_byok_module.so.tmp" "$BUILD_DIR/ngx_http_byok_module.so"
echo "built $BUILD_DIR/ngx_http_byok_module.so"
