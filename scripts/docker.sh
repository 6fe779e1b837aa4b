#!/bin/bash
# Builds the image localhost/byok:dev from the Dockerfile (used by
# `make docker`) and checks that nginx accepts the shipped configuration in it.
#
# The builder is the first that works of: `docker build` (a running Docker
# engine), `podman build`, `buildah bud`, and last ../shared/tools/oci-build
# beside the repo (buildah with the vfs driver and a locally bootstrapped
# Debian base, for machines with no engine and no registry).
#
#   BYOK_BUILDER  force one: docker | podman | buildah | oci-build
#   OCI_BUILD     path of oci-build (default ../shared/tools/oci-build)
#   IMAGE         tag (default localhost/byok:dev)
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${IMAGE:-localhost/byok:dev}
OCI_BUILD=${OCI_BUILD:-$ROOT/../shared/tools/oci-build}

pick_builder() {
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker
    elif command -v podman >/dev/null 2>&1; then echo podman
    elif command -v buildah >/dev/null 2>&1 && buildah images >/dev/null 2>&1 \
        && buildah inspect --type image docker.io/library/debian:bookworm >/dev/null 2>&1; then echo buildah
    elif [ -x "$OCI_BUILD" ]; then echo oci-build
    else
        echo "docker.sh: no image builder: install docker, podman or buildah," \
             "or set OCI_BUILD=/path/to/oci-build" >&2
        exit 1
    fi
}
BUILDER=${BYOK_BUILDER:-$(pick_builder)}

# `nginx -t` inside the image, with throwaway secrets standing in for the
# files an operator mounts (never a real key: they die with the container).
CHECK='umask 077
    echo "k$(date +%Y%m%d) $(head -c 32 /dev/urandom | base64)" >/etc/byok/master.keys
    echo "adm_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n")" >/etc/byok/admin.tokens
    echo "sk-or-throwaway" >/etc/byok/openrouter.key
    nginx -t'

start=$(date +%s)
echo "docker.sh: building $IMAGE with $BUILDER"
case "$BUILDER" in
    docker|podman)
        "$BUILDER" build -t "$IMAGE" "$ROOT"
        "$BUILDER" run --rm --entrypoint sh "$IMAGE" -ec "$CHECK"
        ;;
    buildah|oci-build)
        if [ "$BUILDER" = buildah ]; then
            B=(buildah)
            "${B[@]}" bud -t "$IMAGE" "$ROOT"
        else
            B=(buildah --storage-driver vfs)
            "$OCI_BUILD" "$ROOT" "$IMAGE"
        fi
        ctr=$("${B[@]}" from -q "$IMAGE")
        trap '"${B[@]}" rm "$ctr" >/dev/null' EXIT
        "${B[@]}" run --isolation chroot "$ctr" -- sh -ec "$CHECK"
        ;;
    *) echo "docker.sh: unknown BYOK_BUILDER '$BUILDER'" >&2; exit 2 ;;
esac
echo "docker.sh: built $IMAGE in $(( $(date +%s) - start ))s; nginx -t passed in it"
