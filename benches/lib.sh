# Sourced by the scripts in benches/ after they set `here` (their directory) and `kind` (the
# name of their results): the tagcast binary, a results file, a temporary directory, and
# helpers to start a server under test on a free port of 127.0.0.1 and run `tagcast bench`
# against it. Environment: TAGCAST (the tagcast binary, default the release build), OUT (the
# JSON lines file, default benches/results/KIND-DATE.jsonl).

root=$(cd "$here/.." && pwd)
tagcast=${TAGCAST:-${CARGO_TARGET_DIR:-$root/target}/release/tagcast}
mkdir -p "$root/benches/results"
out=${OUT:-$root/benches/results/$kind-$(date -u +%Y%m%dT%H%M%S).jsonl}
node_peer=$root/benches/peers/node-ws
pid=
work=$(mktemp -d)
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(uptime)" >&2

# finish: the load at the end, where the results are, and the table of medians.
finish() {
  echo "load after: $(uptime)" >&2
  echo "results: $out" >&2
  node "$here/medians.js" "$out"
}

# start_server NAME: starts tagcast, tagcast-tls (ws and wss; sets tls_port too, and
# $work/cert.pem) or node-ws; sets pid and port.
start_server() {
  : >"$work/log"
  case $1 in
    tagcast | tagcast-tls)
      # admin_address = "": /metrics and /healthz on the main listener, not on a fixed port.
      printf '[server]\naddress = "127.0.0.1"\nport = 0\n[http]\nadmin_address = ""\n[log]\nlevel = "info"\n' \
        >"$work/tagcast.toml"
      # EXTRA_TOML: more config, e.g. a [cluster] section (benches/cluster.sh).
      printf '%s' "${EXTRA_TOML:-}" >>"$work/tagcast.toml"
      if [ "$1" = tagcast-tls ]; then
        [ -f "$work/cert.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
          -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 2 -subj /CN=localhost \
          -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
          -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
        printf '[tls]\nport = 0\ncert = "%s"\nkey = "%s"\n' "$work/cert.pem" "$work/key.pem" >>"$work/tagcast.toml"
      fi
      NO_COLOR=1 "$tagcast" serve --config "$work/tagcast.toml" >"$work/log" 2>&1 &
      pattern='s/.*listening for ws .*address=127\.0\.0\.1:\([0-9]*\).*/\1/p' ;;
    node-ws)
      [ -d "$node_peer/node_modules/ws" ] || (cd "$node_peer" && npm ci --no-audit --no-fund --silent)
      PORT=0 node "$node_peer/server.js" >"$work/log" 2>&1 &
      pattern='s/^listening on \([0-9]*\)$/\1/p' ;;
  esac
  pid=$!
  port=
  for _ in $(seq 200); do
    port=$(sed -n "$pattern" "$work/log" | head -1)
    tls_port=$(sed -n 's/.*listening for wss .*address=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/log" | head -1)
    [ -n "$port" ] && { [ "$1" != tagcast-tls ] || [ -n "$tls_port" ]; } && return 0
    sleep 0.05
  done
  echo "$1 did not start:" >&2; cat "$work/log" >&2; exit 1
}

# start_redis: a redis-server of this run on a free port of 127.0.0.1, without persistence,
# stopped at exit; sets redis_port.
start_redis() {
  command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
  redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$work/redis.pid" >/dev/null
  trap 'kill "$(cat "$work/redis.pid")" 2>/dev/null; [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
}

stop_server() {
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

# measure LABEL RUN ARGS...: one `tagcast bench`; table to stderr, JSON lines tagged with
# server_name=LABEL, run=RUN and load1 (the machine's 1-minute load average before it)
# appended to $out. URL overrides the server's ws URL.
measure() {
  local label=$1 run=$2 load; shift 2
  load=$(cut -d' ' -f1 /proc/loadavg)
  "${BENCH_TOOL:-$tagcast}" bench --url "${URL:-ws://127.0.0.1:$port}" --pid "$pid" "$@" | tee "$work/bench" | grep -v '^{' >&2 || true
  grep '^{' "$work/bench" | sed "s/^{/{\"server_name\":\"$label\",\"run\":$run,\"load1\":$load,/" >>"$out"
}

# measure_bursts LABEL RUN: the unpaced bursts of issues #22/#23 at the server's default config,
# each after its paced twin (the same load with the tool's default window), so that "burst
# deliveries/s >= paced x 0.9" is judged within one run: fanout (1,000 subscribers, 10 rooms,
# 4 publishers, 20,000 x 64 B) and broadcast (1,000 subscribers, 2,000 x 64 B: one room, as
# broadcast sends messages/rooms), the server's RSS sampled again SETTLE (30) seconds after
# each burst.
measure_bursts() {
  local fanout=(fanout --subscribers 1000 --rooms 10 --publishers 4 --messages 20000 --size 64)
  local broadcast=(broadcast --subscribers 1000 --rooms 1 --messages 2000 --size 64)
  measure "$1" "$2" "${fanout[@]}"
  measure "$1" "$2" "${fanout[@]}" --window 0 --settle "${SETTLE:-30}"
  measure "$1" "$2" "${broadcast[@]}"
  measure "$1" "$2" "${broadcast[@]}" --window 0 --settle "${SETTLE:-30}"
}
