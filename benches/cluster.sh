#!/usr/bin/env bash
# One node against two nodes sharing a Redis (PERFORMANCE.md): benches/cluster.sh [RUNS]
# (default 3). Each run measures fanout and broadcast at the quick profile on a single tagcast,
# then on node A of a two-node cluster (a local redis-server on a free port; node B subscribes
# to the same channel): node A delivers locally and publishes every request to Redis, node B
# receives them all. It shows what sharing costs the accepting node. Needs redis-server.
# TAGCAST, OUT, BENCH as in compare.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=cluster
runs=${1:-3}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"
start_redis
cluster=$(printf '[cluster]\nredis = "redis://127.0.0.1:%s/"\n' "$redis_port")

for run in $(seq "$runs"); do
  echo "== run $run" >&2
  start_server tagcast
  # shellcheck disable=SC2086 # BENCH is a list of arguments
  measure "1 node" "$run" fanout broadcast ${BENCH:-}
  stop_server

  EXTRA_TOML=$cluster start_server tagcast
  node_b=$pid
  EXTRA_TOML=$cluster start_server tagcast
  # shellcheck disable=SC2086
  measure "2 nodes + redis (on node A)" "$run" fanout broadcast ${BENCH:-}
  stop_server
  kill "$node_b"; wait "$node_b" 2>/dev/null || true
done
finish
