#!/usr/bin/env bash
# Recovery in a browser (issue 17): headless Chromium runs the shipped module (web/tagcast.js)
# against a real `tagcast serve` with [history], through a proxy that cuts every connection
# mid-stream (the server's side of the socket closes under it) while messages keep coming; the
# page must see every message once, in order, and no gap.
#
# Usage: tests/browser_recovery/run.sh PATH/TO/tagcast
# Needs python3 and chromium; fails when one is missing (.ci/run installs them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tagcast=$(realpath "${1:?usage: $0 PATH/TO/tagcast}")
messages=1500

# shellcheck source=tests/common/script.sh
. "$here/../common/script.sh"

for tool in python3 chromium; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install -y python3 chromium)"
done

echo "== daemon with [history]"
cat >"$work/tagcast.toml" <<TOML
[server]
address = "127.0.0.1"
port = 0

[messages]
parser = "json"

[http]
admin_address = ""

[history]
size = 5000
TOML
NO_COLOR=1 RUST_LOG=info "$tagcast" serve --config "$work/tagcast.toml" 2>"$work/tagcast.log" &
pids+=($!)
wait_for "$work/tagcast.log" "listening for ws"
ws=$(sed -n 's/.*listening for ws .*address=\([0-9.:]*\).*/\1/p' "$work/tagcast.log")
echo "ws on $ws"

echo "== page server and cutting proxy"
python3 "$here/helper.py" "$ws" "$work/ports" "$work/browser.log" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/ports" ] && break; sleep 0.1; done
ports=$(cat "$work/ports") || fail "the helper did not start"
http_port=${ports% *}
proxy_port=${ports#* }

start_chromium() {
    local attempt=$1
    setsid chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --user-data-dir="$work/chromium-$attempt" \
        "http://127.0.0.1:$http_port/?ws=127.0.0.1:$proxy_port&expected=$messages" \
        >"$work/chromium-$attempt.out" 2>&1 &
    chromium_group=$!
    pids+=("-$chromium_group")
}
show_chromium() { echo "--- chromium output:" >&2; cat "$work"/chromium-*.out >&2 || true; }
# A cold first start of Chromium can be slow (see tests/wss/run.sh): one more try.
start_chromium 1
if ! ( wait_for "$work/browser.log" "open 1" 60 ); then
    show_chromium
    kill -- "-$chromium_group" 2>/dev/null || true
    echo "no report from the page within 60 s: starting Chromium again"
    start_chromium 2
    ( wait_for "$work/browser.log" "open 1" 60 ) || { show_chromium; exit 1; }
fi

echo "== $messages messages, every connection cut after 300, 700 and 1100"
python3 "$here/publish.py" "$ws" "$messages" "http://127.0.0.1:$http_port/cut" 300 700 1100
( wait_for "$work/browser.log" "done " 60 ) || { show_chromium; exit 1; }
python3 - "$work/browser.log" "$messages" <<'PY'
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
done = json.loads(next(line for line in lines if line.startswith("done "))[5:])
expected = list(range(int(sys.argv[2])))
assert done["received"] == expected, f"not every message once in order: {done['received']}"
assert done["gaps"] == 0, f"{done['gaps']} gap(s)"
assert done["opens"] >= 4, f"only {done['opens']} connection(s): the cuts did not happen"
print(f"the page saw {len(expected)} messages once, in order, over {done['opens']} connections, no gap")
PY
echo "PASS: recovery in Chromium with web/tagcast.js"
