#!/usr/bin/env bash
# tagcast beside its peers, measured by the same tool in the same run (PERFORMANCE.md):
#   benches/compare.sh [RUNS]            (default 3; prints a table of medians)
# Each run starts a fresh tagcast and a fresh Node `ws` peer, one after the other, and
# measures each with: `conns` first (fresh process, so its RSS growth is per connection), then
# fanout, broadcast and latency at the quick profile, then their unpaced twins (`--window 0`,
# publishers as fast as their sockets take frames, at the server's default config): the fanout
# burst (1,000 subscribers, 10 rooms, 4 publishers, 20,000 x 64 B) and the broadcast burst
# (1,000 subscribers, 2,000 x 64 B), each with its peak RSS and its RSS 30 s after. Environment:
#   TAGCAST   the tagcast binary (default: the release build)
#   CONNS     connections for `conns` (default 19000: two worker processes)
#   BENCH     extra `tagcast bench` arguments for the throughput scenarios (e.g. "--profile full")
#   OUT       the JSON lines file (default benches/results/compare-DATE.jsonl)
#   SETTLE    seconds after a burst before the server's RSS is sampled again (default 30)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=compare
runs=${1:-3}
conns=${CONNS:-19000}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"

for run in $(seq "$runs"); do
  for name in tagcast node-ws; do
    echo "== run $run: $name" >&2
    start_server "$name"
    measure "$name" "$run" conns --subscribers "$conns"
    # shellcheck disable=SC2086 # BENCH is a list of arguments
    measure "$name" "$run" fanout broadcast latency ${BENCH:-}
    measure_bursts "$name" "$run"
    stop_server
  done
done
finish
