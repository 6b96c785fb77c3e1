#!/usr/bin/env bash
# The container image (Containerfile) under podman, as a Kubernetes user would run it: builds
# the image on a Debian 12 base made locally (mmdebstrap, no registry needed), runs it with a
# config directory mounted the way a ConfigMap/Secret volume is (files behind a `..data`
# symlink), connects, swaps the auth file's `..data` link and sees the reload, stops it.
#
# Needs root, podman, runc and mmdebstrap (.ci/run installs them). Uses 127.0.0.1:18080.
# Every check is run and reported; the exit status is 1 when any failed.
#
#   bash tests/container/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE=localhost/debian:bookworm-slim
IMAGE=localhost/tagcast:test
NAME=tagcast-container-test-$$
PORT=18080
WAIT_S=15
export CARGO_TERM_COLOR=never

# shellcheck source=tests/checks.sh
. tests/checks.sh

for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null || die "$tool is missing (see .ci/run: container)"
done
[ "$(id -u)" = 0 ] || die "run as root"
if ss -Hltn "sport = :$PORT" | grep -q .; then die "port $PORT is in use on this machine"; fi

# This machine's limits (tools README): runc, cgroupfs, no default ulimits above the hard ones.
WORK=$(mktemp -d)
printf '[containers]\ndefault_ulimits = []\n' >"$WORK/containers.conf"
export CONTAINERS_CONF_OVERRIDE=$WORK/containers.conf
P=(podman --runtime runc --cgroup-manager cgroupfs)
cleanup() {
    "${P[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "=== base image and build"
if ! "${P[@]}" image exists "$BASE"; then
    mmdebstrap --variant=minbase bookworm "$WORK/base.tar"
    "${P[@]}" import "$WORK/base.tar" "$BASE"
    rm "$WORK/base.tar"
fi
cargo build --release --bin tagcast
check "podman build" "${P[@]}" build -q -t "$IMAGE" --build-arg "BASE=$BASE" -f Containerfile .
size=$("${P[@]}" image inspect "$IMAGE" --format '{{.Size}}')
echo "image size: $((size / 1000000)) MB"

echo "=== run with /etc/tagcast mounted the way a ConfigMap volume is"
ETC=$WORK/etc
mkdir -p "$ETC/..v1"
auth_yml() { printf 'applications:\n  - key: app\n    secret: %s\n    authorizeOpen: true\n' "$1"; }
auth_yml first-secret >"$ETC/..v1/auth.yml"
sed 's|^# file = "/etc/tagcast/auth.yml"|file = "/etc/tagcast/auth.yml"|' \
    packaging/container/tagcast.toml >"$ETC/..v1/tagcast.toml"
grep -q '^file = ' "$ETC/..v1/tagcast.toml" || die "packaging/container/tagcast.toml has no auth.file line"
chmod -R a+rX "$ETC"
ln -s ..v1 "$ETC/..data"
ln -s ..data/auth.yml "$ETC/auth.yml"
ln -s ..data/tagcast.toml "$ETC/tagcast.toml"
"${P[@]}" run -d --name "$NAME" --ulimit nofile=20000:20000 --ulimit nproc=1000:1000 \
    -p "127.0.0.1:$PORT:8080" -v "$ETC:/etc/tagcast:ro" "$IMAGE" >/dev/null
logs() { "${P[@]}" logs "$NAME" 2>&1; }
logged() { logs | grep -qF -- "$1"; }
check "the server is ready" eventually logged "tagcast: ready"
check "it runs as uid 10001, not root" test "$("${P[@]}" exec "$NAME" cat /proc/1/status | awk '/^Uid:/ { print $2 }')" = 10001

TAGCAST=${CARGO_TARGET_DIR:-target}/release/tagcast
send() { "$TAGCAST" send --url "ws://127.0.0.1:$PORT/" --tag room=c --key app "$@"; }
check "a client connects and sends with the mounted auth file's secret" \
    eventually env TAGCAST_SECRET=first-secret "$TAGCAST" send --url "ws://127.0.0.1:$PORT/" --tag room=c --key app hello

echo "=== edit the mounted auth file: the ..data symlink swap of a ConfigMap update"
mkdir "$ETC/..v2"
auth_yml second-secret >"$ETC/..v2/auth.yml"
cp "$ETC/..v1/tagcast.toml" "$ETC/..v2/tagcast.toml"
chmod -R a+rX "$ETC/..v2"
ln -s ..v2 "$ETC/..data_tmp"
mv -T "$ETC/..data_tmp" "$ETC/..data"
rm -r "$ETC/..v1"
check "the log says the auth file was reloaded" eventually logged "auth file reloaded"
check "the new secret is accepted" send --secret second-secret hello-2
refused=$(send --secret first-secret hello-3 2>&1 || true)
check "the old secret is refused with 4401" grep -q 4401 <<<"$refused"

echo "=== podman stop: SIGTERM, a clean exit"
check "podman stop" "${P[@]}" stop -t 20 "$NAME"
check "exit status 0" test "$("${P[@]}" inspect "$NAME" --format '{{.State.ExitCode}}')" = 0
check "the log shows the shutdown" eventually logged "SIGTERM received: shutting down"

report container
