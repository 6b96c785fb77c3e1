#!/usr/bin/env bash
# wss against independent clients (issue 5): a real `tagcast serve` with a certificate made here,
# checked with openssl s_client (certificate, ALPN, TLS 1.2/1.3 only), a Python `websockets`
# client and headless Chromium, each exchanging messages with ws clients (`tagcast send`/`listen`).
#
# Usage: tests/wss/run.sh PATH/TO/tagcast
# Needs openssl, python3 (with venv) and chromium; fails when one is missing (.ci/run installs them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tagcast=$(realpath "${1:?usage: $0 PATH/TO/tagcast}")

# shellcheck source=tests/common/script.sh
. "$here/../common/script.sh"

for tool in openssl python3 chromium; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install -y openssl python3-venv chromium)"
done

echo "== certificate and daemon"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/key.pem" -out "$work/cert.pem" -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
cat >"$work/tagcast.toml" <<EOF
[server]
address = "127.0.0.1"
port = 0

[tls]
port = 0
cert = "$work/cert.pem"
key = "$work/key.pem"

[http]
admin_address = ""
EOF
NO_COLOR=1 RUST_LOG=info "$tagcast" serve --config "$work/tagcast.toml" 2>"$work/tagcast.log" &
pids+=($!)
wait_for "$work/tagcast.log" "listening for wss"
ws=$(sed -n 's/.*listening for ws .*address=\([0-9.:]*\).*/\1/p' "$work/tagcast.log")
wss=$(sed -n 's/.*listening for wss .*address=\([0-9.:]*\).*/\1/p' "$work/tagcast.log")
echo "ws on $ws, wss on $wss"

echo "== openssl s_client"
s_client() { openssl s_client -connect "$wss" -servername localhost -CAfile "$work/cert.pem" \
    -verify_return_error -alpn http/1.1 "$@" </dev/null 2>&1; }
for version in tls1_2 tls1_3; do
    out=$(s_client "-$version") || { echo "$out" >&2; fail "$version handshake failed"; }
    grep -q "Verify return code: 0 (ok)" <<<"$out" || fail "$version: certificate not verified"
    grep -q "ALPN protocol: http/1.1" <<<"$out" || fail "$version: ALPN http/1.1 not negotiated"
    grep -q "New, TLSv1\.${version#tls1_}," <<<"$out" || fail "$version: not negotiated"
    echo "$version: negotiated, certificate verified, ALPN http/1.1"
done
if s_client -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' >"$work/tls1_1.out"; then
    fail "TLS 1.1 was accepted"
fi
grep -q "alert" "$work/tls1_1.out" || fail "TLS 1.1 failed without an alert from the server: $(cat "$work/tls1_1.out")"
echo "tls1_1: refused by the server ($(grep -o 'alert [a-z ]*' "$work/tls1_1.out" | head -1))"
served=$(s_client | openssl x509 -noout -fingerprint -sha256)
expected=$(openssl x509 -in "$work/cert.pem" -noout -fingerprint -sha256)
[ "$served" = "$expected" ] || fail "served $served, expected $expected"
echo "served certificate: $served"

# A ws listener tagged room=cli, known to be registered once a probe sent to it comes back.
"$tagcast" listen --url "ws://$ws" --tag room=cli >"$work/listen.out" &
pids+=($!)
for _ in $(seq 50); do
    "$tagcast" send --url "ws://$ws" --tag room=cli probe
    grep -qF '"probe"' "$work/listen.out" && break
    sleep 0.2
done
wait_for "$work/listen.out" '"probe"'

echo "== Python websockets over wss"
venv=${TAGCAST_TEST_VENV:-$work/venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import websockets' 2>/dev/null || "$venv/bin/pip" install -q 'websockets>=14,<16'
"$venv/bin/python" "$here/client.py" "$wss" "$work/cert.pem" >"$work/python.out" 2>&1 &
python=$!
pids+=("$python")
wait_for "$work/python.out" ready
"$tagcast" send --url "ws://$ws" --tag room=py "hello python"
wait_for "$work/python.out" '"hello python"'
wait_for "$work/listen.out" '"python got hello python"'
wait "$python" || fail "the Python client failed: $(cat "$work/python.out")"
echo "ws -> Python (wss) -> ws: ok"

echo "== headless Chromium over wss"
python3 "$here/report_server.py" "$work/http.port" "$work/browser.log" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/http.port" ] && break; sleep 0.1; done
http_port=$(cat "$work/http.port") || fail "the report server did not start"
# Starts headless Chromium on the page, in its own process group (ATTEMPT names its profile and
# output), and remembers the group for cleanup.
start_chromium() {
    local attempt=$1
    setsid chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --ignore-certificate-errors \
        --user-data-dir="$work/chromium-$attempt" \
        "http://127.0.0.1:$http_port/?wss=$wss" >"$work/chromium-$attempt.out" 2>&1 &
    chromium_group=$!
    pids+=("-$chromium_group")
}
show_chromium() { echo "--- chromium output:" >&2; cat "$work"/chromium-*.out >&2 || true; }
# A first start of Chromium on a fresh machine (cold disk cache, no font cache yet) can take far
# longer than the rest of this script (CI once saw no report within 15 s, and nothing to say why).
# The page's first report gets 60 s; without it, what Chromium printed is shown and it is started
# once more. A page that loaded but whose socket fails is not retried.
start_chromium 1
if ! ( wait_for "$work/browser.log" loaded 60 ); then
    show_chromium
    kill -- "-$chromium_group" 2>/dev/null || true
    echo "no report from the page within 60 s: starting Chromium again"
    start_chromium 2
    ( wait_for "$work/browser.log" loaded 60 ) || { show_chromium; exit 1; }
fi
( wait_for "$work/browser.log" 'message "probe"' ) || { show_chromium; exit 1; }
"$tagcast" send --url "ws://$ws" --tag browser=chromium "Bonjour Chromium"
wait_for "$work/browser.log" 'message "Bonjour Chromium"'
# permessage-deflate (messages.compression = "shared", the default): Chromium negotiated it, its
# probe came compressed, and a message over compression_min_size reaches it compressed.
grep -q '^open permessage-deflate; server_no_context_takeover; client_no_context_takeover$' \
    "$work/browser.log" || fail "Chromium did not negotiate permessage-deflate: $(cat "$work/browser.log")"
long="Bonjour Chromium, compressed: $(printf 'tagcast %.0s' $(seq 60))"
"$tagcast" send --url "ws://$ws" --tag browser=chromium "$long"
wait_for "$work/browser.log" "message \"$long\""
if grep -q '^error\|^close' "$work/browser.log"; then
    fail "the browser's connection failed: $(cat "$work/browser.log")"
fi
echo "ws -> Chromium (wss): ok"
echo "PASS: wss with openssl, Python websockets and Chromium"
