#!/usr/bin/env bash
# Measures the Node `ws` peer with tagcast bench, like tagcast itself:
#   benches/peers/node-ws/run.sh [tagcast bench arguments...]     e.g.  fanout --profile full
# Installs `ws` on first use (npm ci), starts the peer on a free port of 127.0.0.1, runs
# `tagcast bench --url ws://127.0.0.1:PORT --pid PID ARGS`, stops the peer.
# TAGCAST names the tagcast binary (default: the release build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
tagcast=${TAGCAST:-${CARGO_TARGET_DIR:-$root/target}/release/tagcast}
[ -d "$here/node_modules/ws" ] || (cd "$here" && npm ci --no-audit --no-fund --silent)
log=$(mktemp)
PORT=0 node "$here/server.js" >"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
port=
for _ in $(seq 200); do
  port=$(sed -n 's/^listening on //p' "$log")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "the Node peer did not start" >&2; exit 1; }
"$tagcast" bench --url "ws://127.0.0.1:$port" --pid "$pid" "$@"
