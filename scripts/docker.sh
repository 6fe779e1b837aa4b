#!/bin/bash
# Builds the image localhost/byok:dev from the Dockerfile (used by
# `make docker`) and checks that nginx accepts the shipped configuration in it.
#
#   OCI_BUILD  builder to use (default ../shared/tools/oci-build beside the
#              repo: buildah with the vfs driver, no Docker engine needed)
#   IMAGE      tag (default localhost/byok:dev)
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${IMAGE:-localhost/byok:dev}
OCI_BUILD=${OCI_BUILD:-$ROOT/../shared/tools/oci-build}

if [ ! -x "$OCI_BUILD" ]; then
    echo "docker.sh: image builder not found at $OCI_BUILD" >&2
    echo "docker.sh: set OCI_BUILD=/path/to/oci-build, or build with" \
         "'docker build -t $IMAGE .' where a Docker engine exists" >&2
    exit 1
fi

start=$(date +%s)
"$OCI_BUILD" "$ROOT" "$IMAGE"
echo "docker.sh: built $IMAGE in $(( $(date +%s) - start ))s"

# `nginx -t` inside the image, with throwaway secrets standing in for the
# files an operator mounts (never a real key: they die with the container).
B=(buildah --storage-driver vfs)
ctr=$("${B[@]}" from -q "$IMAGE")
trap '"${B[@]}" rm "$ctr" >/dev/null' EXIT
"${B[@]}" run --isolation chroot "$ctr" -- sh -ec '
    umask 077
    echo "k$(date +%Y%m%d) $(head -c 32 /dev/urandom | base64)" >/etc/byok/master.keys
    echo "adm_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n")" >/etc/byok/admin.tokens
    echo "sk-or-throwaway" >/etc/byok/openrouter.key
    nginx -t'
echo "docker.sh: nginx -t passed in $IMAGE"
