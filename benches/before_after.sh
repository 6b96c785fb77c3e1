#!/usr/bin/env bash
# Two tagcast builds measured by the same load tool in the same run, alternately (a change's
# before and after, PERFORMANCE.md):
#   benches/before_after.sh BEFORE AFTER [RUNS]   (default 3; prints a table of medians)
# Each run starts a fresh server of each build in turn (BEFORE first in odd runs, AFTER first in
# even ones, so that a drift of the machine's load weighs on both) and measures fanout and
# latency at the quick profile, then the unpaced bursts (`--window 0`, at the server's default
# config) of benches/lib.sh's measure_bursts. The lines are tagged server_name=before / after.
# Environment:
#   BENCH_TOOL  the binary whose `bench` drives the load (default: AFTER), the same for both
#   BENCH       extra `tagcast bench` arguments for the paced scenarios (e.g. "--profile full")
#   OUT         the JSON lines file (default benches/results/before-after-DATE.jsonl)
#   SETTLE      seconds after a burst before the server's RSS is sampled again (default 5 here)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=before-after
if [ $# -lt 2 ]; then
  echo "usage: $0 BEFORE AFTER [RUNS]" >&2
  exit 2
fi
before=$(realpath "$1")
after=$(realpath "$2")
runs=${3:-3}
export BENCH_TOOL=${BENCH_TOOL:-$after}
export SETTLE=${SETTLE:-5}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"

for run in $(seq "$runs"); do
  order="before after"
  [ $((run % 2)) -eq 0 ] && order="after before"
  for side in $order; do
    # lib.sh's start_server runs $tagcast.
    tagcast=${!side}
    echo "== run $run: $side ($tagcast)" >&2
    start_server tagcast
    # shellcheck disable=SC2086 # BENCH is a list of arguments
    measure "$side" "$run" fanout latency ${BENCH:-}
    measure_bursts "$side" "$run"
    stop_server
  done
done
finish
