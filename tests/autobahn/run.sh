#!/usr/bin/env bash
# Autobahn|Testsuite against examples/autobahn_echo.rs (tagcast's handshake, reader and writer),
# every case over ws and over wss. Fails, listing them, on any case that is not a pass:
# behavior OK/NON-STRICT/INFORMATIONAL and behaviorClose OK/INFORMATIONAL, the compression cases
# (12.*, 13.*: permessage-deflate) included.
# Usage: bash tests/autobahn/run.sh [ECHO_BINARY]   (default: builds the release example)
# Needs Python 2.7 (PYTHON2, default /root/.pyenv/versions/2.7.18/bin/python) and openssl.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-$PWD/target}
python2=${PYTHON2:-/root/.pyenv/versions/2.7.18/bin/python}
echo_bin=${1:-}
if [ -z "$echo_bin" ]; then
    cargo build --release --example autobahn_echo
    echo_bin=$target/release/examples/autobahn_echo
fi

export PYTHONUSERBASE=$target/autobahn-py
if [ ! -x "$PYTHONUSERBASE/bin/wstest" ]; then
    "$python2" -m pip install --quiet --user autobahntestsuite==0.8.2
fi

work=$(mktemp -d)
echo_pid=
cleanup() {
    if [ -n "$echo_pid" ]; then kill "$echo_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/key.pem" -out "$work/cert.pem" -days 30 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null

"$echo_bin" 127.0.0.1:0 127.0.0.1:0 "$work/cert.pem" "$work/key.pem" >"$work/ports" &
echo_pid=$!
for _ in $(seq 100); do
    if grep -q '^wss ' "$work/ports"; then break; fi
    sleep 0.1
done
ws_port=$(awk '$1 == "ws" {print $2}' "$work/ports")
wss_port=$(awk '$1 == "wss" {print $2}' "$work/ports")
if [ -z "$ws_port" ] || [ -z "$wss_port" ]; then
    echo "autobahn: the echo server did not start" >&2
    exit 1
fi

report=$target/autobahn
rm -rf "$report"
cat >"$work/fuzzingclient.json" <<JSON
{"outdir": "$report",
 "servers": [{"agent": "tagcast-ws", "url": "ws://127.0.0.1:$ws_port"},
             {"agent": "tagcast-wss", "url": "wss://127.0.0.1:$wss_port"}],
 "cases": ["*"], "exclude-cases": [], "exclude-agent-cases": {}}
JSON
(cd "$work" && "$PYTHONUSERBASE/bin/wstest" -m fuzzingclient -s fuzzingclient.json) \
    >"$work/wstest.log" 2>&1 || { tail -20 "$work/wstest.log"; exit 1; }

python3 - "$report/index.json" <<'PY'
import json, sys
index = json.load(open(sys.argv[1]))
failed = []
for agent, cases in sorted(index.items()):
    for case, result in cases.items():
        behavior, close = result["behavior"], result["behaviorClose"]
        ok = behavior in ("OK", "NON-STRICT", "INFORMATIONAL")
        ok = ok and close in ("OK", "INFORMATIONAL")
        if not ok:
            failed.append((agent, case, behavior, close))
    print("autobahn: %s: %d cases" % (agent, len(cases)))
for agent, case, behavior, close in sorted(failed, key=lambda f: (f[0], [int(p) for p in f[1].split(".")])):
    print("FAILED %s %s behavior=%s behaviorClose=%s" % (agent, case, behavior, close))
if failed:
    sys.exit("autobahn: %d failed cases (report: %s)" % (len(failed), sys.argv[1].replace("index.json", "index.html")))
if len(index) != 2:
    sys.exit("autobahn: expected results for ws and wss")
print("autobahn: every case passed over ws and wss")
PY
