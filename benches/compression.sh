#!/usr/bin/env bash
# permessage-deflate (issue 20): what compression saves on the wire and what it costs the
# server, tagcast with `[messages] compression = "off"` and `"shared"` beside Node `ws` with a
# zlib context per connection, measured by the same tool in the same run:
#   benches/compression.sh [RUNS]        (default 3; prints a table of medians)
# Every connection offers permessage-deflate as browsers do (`tagcast bench --compression
# offer`), and every message is a ~600-byte JSON notification (`--content notification`). Each
# run starts each server fresh and measures: `conns` first (10,000 idle connections: RSS per
# connection), then fanout at 1,000 subscribers (10 rooms) and at 10,000 (100 rooms), 5,000
# messages each (100 recipients per message), paced (the default window) and unpaced
# (`--window 0`). The table's `wire B/deliv` is the frame bytes per delivery. Node `ws` runs
# with its perMessageDeflate defaults except the threshold, lowered from 1024 to tagcast's
# compression_min_size (256) so that the 600-byte message is compressed at all.
# Environment: TAGCAST, OUT (as in benches/lib.sh); SERVERS (default "tagcast-off
# tagcast-shared node-ws-deflate"; node-ws-off is the Node peer without compression);
# CONNS (default 10000). Every scenario waits up to 60 s for a delivery (`--timeout 60`): Node
# takes long to warm 10,000 connections up on a loaded machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=compression
runs=${1:-3}
conns=${CONNS:-10000}
# shellcheck source=benches/lib.sh
. "$here/lib.sh"

# start NAME: the server under test, configured as NAME says.
start() {
  case $1 in
    tagcast-off) EXTRA_TOML=$'[messages]\ncompression = "off"\n' start_server tagcast ;;
    tagcast-shared) EXTRA_TOML=$'[messages]\ncompression = "shared"\n' start_server tagcast ;;
    node-ws-deflate) PERMESSAGE_DEFLATE=256 start_server node-ws ;;
    node-ws-off) PERMESSAGE_DEFLATE=off start_server node-ws ;;
    *) echo "unknown server $1" >&2; exit 2 ;;
  esac
}

for run in $(seq "$runs"); do
  for name in ${SERVERS:-tagcast-off tagcast-shared node-ws-deflate}; do
    echo "== run $run: $name ($(uptime))" >&2
    start "$name"
    # A scenario that fails (Node may not warm 10,000 compressing connections up in time)
    # leaves its JSON line with the loss when it printed one, and the run goes on.
    measure "$name" "$run" conns --subscribers "$conns" --compression offer --timeout 60 ||
      echo "$name: conns failed" >&2
    for size in "1000 10" "10000 100"; do
      read -r subscribers rooms <<<"$size"
      for window in 256 0; do
        measure "$name" "$run" fanout --compression offer --content notification --timeout 60 \
          --subscribers "$subscribers" --rooms "$rooms" --messages 5000 --window "$window" ||
          echo "$name: fanout of $subscribers subscribers, window $window, failed" >&2
      done
    done
    stop_server
  done
done
finish
