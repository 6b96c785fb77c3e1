#!/usr/bin/env bash
# How tagcast's cost grows with subscribers, rooms and message size (PERFORMANCE.md):
#   benches/scaling.sh [RUNS]     (default 3; prints a table of medians)
# Every point is a fanout of about 2 million deliveries (messages = 2 000 000 / subscribers
# per room), on a fresh tagcast per run. TAGCAST, OUT as in compare.sh; SERVERS="tagcast
# node-ws" adds the Node peer (slow: about 30 s per point).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=scaling
runs=${1:-3}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"

# point LABEL RUN SUBSCRIBERS ROOMS SIZE
point() {
  local messages=$((2000000 * $4 / $3))
  measure "$1 subs=$3 rooms=$4 size=$5" "$2" fanout --subscribers "$3" --rooms "$4" --size "$5" --messages "$messages"
}

for run in $(seq "$runs"); do
  for name in ${SERVERS:-tagcast}; do
    echo "== run $run: $name" >&2
    start_server "$name"
    for subscribers in 100 1000 5000 10000; do point "$name" "$run" "$subscribers" 10 64; done
    for rooms in 1 100 1000; do point "$name" "$run" 1000 "$rooms" 64; done
    for size in 16 512 4096; do point "$name" "$run" 1000 10 "$size"; done
    stop_server
  done
done
finish
