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
work=$(mktemp -d)
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=benches/lib.sh
. "$here/lib.sh"

echo "machine: $(nproc) cores, $(uptime)" >&2
for run in $(seq "$runs"); do
  for name in tagcast node-ws; do
    echo "== run $run: $name" >&2
    start_server "$name"
    measure "$name" "$run" conns --subscribers "$conns"
    # shellcheck disable=SC2086 # BENCH is a list of arguments
    measure "$name" "$run" fanout broadcast latency ${BENCH:-}
    stop_server
  done
done
echo "load after: $(uptime)" >&2
echo "results: $out" >&2
node "$here/medians.js" "$out"
