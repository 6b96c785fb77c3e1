#!/usr/bin/env bash
# What the history costs (PERFORMANCE.md, issue 17): benches/history.sh [RUNS] (default 3). Each
# run measures fanout and latency at the quick profile on four servers in turn, fresh processes:
# one node with [history] off and on (size 10000), then node A of two nodes sharing a Redis
# (a local redis-server on a free port), history off (pub/sub) and on (the Redis stream; node B
# follows it too). Subscribers open without `since` (the bench tool reads bare frames): with the
# history on every message still gets its id, is kept and is routed under the history's lock.
# Needs redis-server. TAGCAST, OUT, BENCH as in compare.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=history
runs=${1:-3}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"
start_redis
history=$'[history]\nsize = 10000\n'
cluster=$(printf '[cluster]\nredis = "redis://127.0.0.1:%s/"\n' "$redis_port")

for run in $(seq "$runs"); do
  echo "== run $run" >&2
  for setting in off on; do
    extra=
    [ "$setting" = on ] && extra=$history
    EXTRA_TOML=$extra start_server tagcast
    # shellcheck disable=SC2086 # BENCH is a list of arguments
    measure "1 node, history $setting" "$run" fanout latency ${BENCH:-}
    stop_server

    EXTRA_TOML="$cluster"$'\n'"$extra" start_server tagcast
    node_b=$pid
    EXTRA_TOML="$cluster"$'\n'"$extra" start_server tagcast
    # shellcheck disable=SC2086
    measure "2 nodes + redis (on node A), history $setting" "$run" fanout latency ${BENCH:-}
    stop_server
    kill "$node_b"; wait "$node_b" 2>/dev/null || true
  done
done
finish
