#!/usr/bin/env bash
# permessage-deflate (issue 20): what compression saves on the wire and what it costs the
# server, tagcast with `[messages] compression = "off"` and `"shared"` beside Node `ws` with a
# zlib context per connection, measured by the same tool in the same run:
#   benches/compression.sh [RUNS]        (default 3; prints a table of medians, then the
#                                         server CPU per delivery of shared ÷ off, per run)
# Every connection offers permessage-deflate as browsers do (`tagcast bench --compression
# offer`), and every message is a ~600-byte JSON notification (`--content notification`). Each
# run measures `conns` first (10,000 idle connections on a fresh server: RSS per connection),
# then fanout at 1,000 subscribers (10 rooms) and at 10,000 (100 rooms), MESSAGES messages each
# (100 recipients per message), paced (the default window) and unpaced (`--window 0`). Each
# fanout runs REPS times per run, the servers alternating (off, shared, off, ...), each time on
# a fresh server: one fanout's CPU per delivery swings by ±25 % with how the server's writes and
# the tool's reads interleave on the 2 cores (PERFORMANCE.md § Compression), and the run's
# figure, its repetitions summed, is what `benches/ratio.js` compares. The table's
# `wire B/deliv` is the frame bytes per delivery. Node `ws` runs with its perMessageDeflate
# defaults except the threshold, lowered from 1024 to tagcast's compression_min_size (256) so
# that the 600-byte message is compressed at all; it is 100 times slower (20 s to over a
# minute per fanout of 5,000 messages), so it runs NODE_MESSAGES messages, once per run.
# Environment: TAGCAST, OUT (as in benches/lib.sh); SERVERS (default "tagcast-off
# tagcast-shared node-ws-deflate"; node-ws-off is the Node peer without compression);
# CONNS (default 10000); MESSAGES (default 20000); REPS (default 5); NODE_MESSAGES (default
# 5000). Every scenario waits up to 60 s for a delivery (`--timeout 60`): Node takes long to
# warm 10,000 connections up on a loaded machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=compression
runs=${1:-3}
conns=${CONNS:-10000}
messages=${MESSAGES:-20000}
node_messages=${NODE_MESSAGES:-5000}
reps=${REPS:-5}
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

# fanout NAME RUN SUBSCRIBERS ROOMS WINDOW: one fanout on a fresh NAME server. A fanout that
# fails (Node may not warm 10,000 compressing connections up in time) leaves its JSON line
# with the loss when it printed one, and the run goes on.
fanout() {
  local name=$1 run=$2 subscribers=$3 rooms=$4 window=$5 count=$messages
  [[ $name == node-* ]] && count=$node_messages
  start "$name"
  measure "$name" "$run" fanout --compression offer --content notification --timeout 60 \
    --subscribers "$subscribers" --rooms "$rooms" --messages "$count" --window "$window" ||
    echo "$name: fanout of $subscribers subscribers, window $window, failed" >&2
  stop_server
}

servers=${SERVERS:-tagcast-off tagcast-shared node-ws-deflate}
for run in $(seq "$runs"); do
  for name in $servers; do
    echo "== run $run: $name, idle connections ($(uptime))" >&2
    start "$name"
    measure "$name" "$run" conns --subscribers "$conns" --compression offer --timeout 60 ||
      echo "$name: conns failed" >&2
    stop_server
  done
  for size in "1000 10" "10000 100"; do
    read -r subscribers rooms <<<"$size"
    for window in 256 0; do
      echo "== run $run: fanout to $subscribers, window $window ($(uptime))" >&2
      for rep in $(seq "$reps"); do
        for name in $servers; do
          [[ $name == node-* && $rep -gt 1 ]] && continue
          fanout "$name" "$run" "$subscribers" "$rooms" "$window"
        done
      done
    done
  done
done
finish
node "$here/ratio.js" "$out" tagcast-off tagcast-shared
