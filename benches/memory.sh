#!/usr/bin/env bash
# The figures of issue #22's targets (PERFORMANCE.md § Memory), tagcast beside Node `ws`,
# each at its default config, alternately, by the same tool in the same run:
#   benches/memory.sh [RUNS]           (default 3; prints a table of medians)
# Per run and server, two fresh processes:
# - the #22 burst: 10,000 subscribers in 100 rooms, 4 publishers, 200,000 x 64 B, unpaced
#   (`--window 0`): loss, deliveries/s, the server's peak RSS and its RSS SETTLE (30) seconds
#   after the subscribers closed, both above its RSS before they connected;
# - `conns`: RSS per idle connection at CONNS (19,000) connections.
# Environment: TAGCAST, OUT, SETTLE, CONNS, as in benches/lib.sh and benches/compare.sh;
# SERVERS, the servers to run (default "tagcast node-ws": Node's burst takes minutes), in this
# order in odd runs and the reverse in even ones, so that a drift of the machine's load weighs
# on all; BEFORE, needed when SERVERS names `before-huge-queue`: a tagcast binary from before
# issue #22 (851ff98), run as that server with `[limits] send_queue = 1000000` (nothing
# dropped): the "today's figure with a huge queue" #22's throughput target is judged against,
# in the same run. To build it:
#   git worktree add /tmp/tagcast-851ff98 851ff98 &&
#     (cd /tmp/tagcast-851ff98 && cargo build --release --bin tagcast)
# then BEFORE=/tmp/tagcast-851ff98/target/release/tagcast.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=memory
runs=${1:-3}
conns=${CONNS:-19000}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"

servers=${SERVERS:-tagcast node-ws}
case " $servers " in
  *" before-huge-queue "*) [ -x "${BEFORE:-}" ] || { echo "BEFORE must name the tagcast binary of before-huge-queue" >&2; exit 2; } ;;
esac

# start NAME: the server under test (bash keeps a function's prefix assignments to its call).
start() {
  case $1 in
    before-huge-queue) tagcast=$BEFORE EXTRA_TOML=$'[limits]\nsend_queue = 1000000\n' start_server tagcast ;;
    *) start_server "$1" ;;
  esac
}

for run in $(seq "$runs"); do
  order=$servers
  # shellcheck disable=SC2086 # $servers is a list of names
  [ $((run % 2)) -eq 0 ] && order=$(printf '%s\n' $servers | tac | xargs)
  for name in $order; do
    echo "== run $run: $name, the #22 burst" >&2
    start "$name"
    measure "$name" "$run" fanout --window 0 --profile full --publishers 4 --size 64 \
      --settle "${SETTLE:-30}"
    stop_server
    echo "== run $run: $name, idle connections" >&2
    start "$name"
    measure "$name" "$run" conns --subscribers "$conns"
    stop_server
  done
done
finish
