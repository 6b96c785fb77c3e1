#!/usr/bin/env bash
# The bursts of issues #22/#23 alone (benches/compare.sh runs them too, after the paced
# scenarios), tagcast beside Node `ws`, each at its default config, by the same tool in the
# same run:
#   benches/bursts.sh [RUNS]           (default 3; prints a table of medians)
# The fanout burst (1,000 subscribers, 10 rooms, 4 publishers, 20,000 x 64 B, unpaced) and the
# broadcast burst (1,000 subscribers, 2,000 x 64 B, unpaced), each with the server's peak RSS
# and its RSS SETTLE seconds after the subscribers closed. Environment: TAGCAST, OUT, SETTLE
# (default 30), as in benches/lib.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=bursts
runs=${1:-3}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"

for run in $(seq "$runs"); do
  for name in tagcast node-ws; do
    echo "== run $run: $name" >&2
    start_server "$name"
    measure_bursts "$name" "$run"
    stop_server
  done
done
finish
