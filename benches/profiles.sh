#!/usr/bin/env bash
# The quick profile against the full one on the same tagcast (PERFORMANCE.md):
#   benches/profiles.sh [RUNS]    (default 3; prints a table of medians)
# Each run starts a fresh tagcast and measures fanout and broadcast at the quick profile
# (1 000 subscribers, 10 rooms, 20 000 messages), then at the full one (10 000 subscribers,
# 100 rooms, 200 000 messages). TAGCAST, OUT as in compare.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=profiles
runs=${1:-3}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"

for run in $(seq "$runs"); do
  echo "== run $run" >&2
  start_server tagcast
  measure "tagcast quick" "$run" fanout broadcast --profile quick
  measure "tagcast full" "$run" fanout broadcast --profile full
  stop_server
done
finish
