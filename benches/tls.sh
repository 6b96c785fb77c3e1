#!/usr/bin/env bash
# ws against wss on the same tagcast (PERFORMANCE.md): benches/tls.sh [RUNS] (default 3).
# Each run starts a fresh tagcast with a [tls] listener on a test certificate and measures
# fanout and broadcast at the quick profile over ws, then over wss. TAGCAST, OUT, BENCH as in
# compare.sh; BENCH_TOOL names another binary to run `bench` with (when TAGCAST is a build
# without it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=tls
runs=${1:-3}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"

for run in $(seq "$runs"); do
  echo "== run $run" >&2
  start_server tagcast-tls
  # shellcheck disable=SC2086 # BENCH is a list of arguments
  measure "tagcast ws" "$run" fanout broadcast ${BENCH:-}
  # shellcheck disable=SC2086
  URL="wss://127.0.0.1:$tls_port" measure "tagcast wss" "$run" fanout broadcast --ca "$work/cert.pem" ${BENCH:-}
  stop_server
done
finish
