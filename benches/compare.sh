#!/usr/bin/env bash
# tagcast beside its peers, measured by the same tool in the same run (PERFORMANCE.md):
#   benches/compare.sh [RUNS]            (default 3; prints a table of medians)
# Each run starts a fresh tagcast and a fresh Node `ws` peer, one after the other, and
# measures each with: `conns` first (fresh process, so its RSS growth is per connection), then
# fanout, broadcast and latency at the quick profile. Environment:
#   TAGCAST   the tagcast binary (default: the release build)
#   CONNS     connections for `conns` (default 19000: two worker processes)
#   BENCH     extra `tagcast bench` arguments for the throughput scenarios (e.g. "--profile full")
#   OUT       the JSON lines file (default benches/results/compare-DATE.jsonl)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
runs=${1:-3}
tagcast=${TAGCAST:-${CARGO_TARGET_DIR:-$root/target}/release/tagcast}
conns=${CONNS:-19000}
mkdir -p "$root/benches/results"
out=${OUT:-$root/benches/results/compare-$(date -u +%Y%m%dT%H%M%S).jsonl}
node_peer=$here/peers/node-ws
[ -d "$node_peer/node_modules/ws" ] || (cd "$node_peer" && npm ci --no-audit --no-fund --silent)
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

# start_server NAME: starts it on a free port of 127.0.0.1; sets pid and port.
start_server() {
  : >"$work/log"
  case $1 in
    tagcast)
      printf '[server]\naddress = "127.0.0.1"\nport = 0\n[log]\nlevel = "info"\n' >"$work/tagcast.toml"
      NO_COLOR=1 "$tagcast" serve --config "$work/tagcast.toml" >"$work/log" 2>&1 &
      pattern='s/.*listening for ws address=127\.0\.0\.1:\([0-9]*\).*/\1/p' ;;
    node-ws)
      PORT=0 node "$node_peer/server.js" >"$work/log" 2>&1 &
      pattern='s/^listening on \([0-9]*\)$/\1/p' ;;
  esac
  pid=$!
  port=
  for _ in $(seq 200); do
    port=$(sed -n "$pattern" "$work/log" | head -1)
    [ -n "$port" ] && return 0
    sleep 0.05
  done
  echo "$1 did not start:" >&2; cat "$work/log" >&2; exit 1
}

# measure NAME RUN ARGS...: one `tagcast bench`, its JSON lines tagged and appended to $out.
measure() {
  local name=$1 run=$2; shift 2
  "$tagcast" bench --url "ws://127.0.0.1:$port" --pid "$pid" "$@" | tee "$work/bench" | grep -v '^{' >&2 || true
  grep '^{' "$work/bench" | sed "s/^{/{\"server_name\":\"$name\",\"run\":$run,/" >>"$out"
}

echo "machine: $(nproc) cores, $(uptime)" >&2
for run in $(seq "$runs"); do
  for name in tagcast node-ws; do
    echo "== run $run: $name" >&2
    start_server "$name"
    measure "$name" "$run" conns --subscribers "$conns"
    # shellcheck disable=SC2086 # BENCH is a list of arguments
    measure "$name" "$run" fanout broadcast latency ${BENCH:-}
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  done
done
echo "load after: $(uptime)" >&2
echo "results: $out" >&2
node "$here/medians.js" "$out"
