#!/usr/bin/env bash
# End-to-end test of the Debian package under real systemd: builds the .deb, boots the machine's
# own systemd in a throwaway container (tests/systemd/sdbox, systemd-nspawn on an overlay of /),
# installs the package with apt and drives the service the way an operator would.
#
# Needs root, systemd-container, lintian, jq and cargo-deb (.ci/run installs them). The container
# shares the host network: the service listens on 127.0.0.1:8080 as the host sees it, so that
# port must be free. Every check is run and reported; the exit status is 1 when any failed.
#
#   bash tests/systemd/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

SDBOX=tests/systemd/sdbox
BOX=tagcast-e2e-$$
URL=ws://127.0.0.1:8080/
WAIT_S=10
export CARGO_TERM_COLOR=never

# shellcheck source=tests/checks.sh
. tests/checks.sh

for tool in systemd-nspawn lintian jq cargo-deb; do
    command -v "$tool" >/dev/null || die "$tool is missing (see .ci/run: systemd tests)"
done
[ "$(id -u)" = 0 ] || die "run as root (systemd-nspawn)"
if ss -Hltn 'sport = :8080' | grep -q .; then die "port 8080 is in use on this machine"; fi

echo "=== build the package"
packaging/build-deb
# The .deb of this version (cargo-deb names it tagcast_VERSION-REVISION_ARCH.deb).
DEB=$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/tagcast_*.deb | head -1)
TAGCAST=${CARGO_TARGET_DIR:-target}/release/tagcast
echo "package: $DEB"
check "lintian --fail-on error" lintian --allow-root --fail-on error "$DEB"
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/share/doc/tagcast/copyright >"${TMPDIR:-/tmp}/tagcast-copyright.$$"
copyright_names() { grep -q "^Files: cargo-registry/$1-" "${TMPDIR:-/tmp}/tagcast-copyright.$$"; }
check "debian/copyright lists aws-lc-sys, webpki-roots, tokio" \
    eval 'copyright_names aws-lc-sys && copyright_names webpki-roots && copyright_names tokio'
license_text() { grep -A1 -x "License: $1" "${TMPDIR:-/tmp}/tagcast-copyright.$$" | grep -q "^ [^.]"; }
check "debian/copyright has the texts of CDLA-Permissive-2.0, ISC, Apache-2.0" \
    eval 'license_text CDLA-Permissive-2.0 && license_text ISC && license_text Apache-2.0'
rm -f "${TMPDIR:-/tmp}/tagcast-copyright.$$"

WORK=$(mktemp -d)
listeners=()
cleanup() {
    for pid in "${listeners[@]}"; do kill "$pid" 2>/dev/null || true; done
    "$SDBOX" down "$BOX" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "=== boot systemd and install"
"$SDBOX" up "$BOX"
ROOT=$("$SDBOX" root "$BOX")
box() { "$SDBOX" exec "$BOX" "$@"; }
prop() { box systemctl show tagcast -p "$1" --value; }
cp "$DEB" "$ROOT/var/tmp/tagcast.deb"
box apt-get install -y /var/tmp/tagcast.deb
active() { test "$(box systemctl is-active tagcast)" = active; }
check "the service is active after install (READY=1 arrived)" active
check "the service is enabled" test "$(box systemctl is-enabled tagcast)" = enabled
status_has() { grep -q "$1" <<<"$(prop StatusText)"; }
check "STATUS= shows the connections" eventually status_has "0 connections"
verify=$(box systemd-analyze verify /lib/systemd/system/tagcast.service 2>&1)
check "systemd-analyze verify prints nothing" test -z "$verify"
[ -z "$verify" ] || printf '%s\n' "$verify"
score=$(box systemd-analyze security tagcast --no-pager 2>&1 | sed -n 's/.*Overall exposure level for tagcast.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: $score"
check "systemd-analyze security scores at most 2.0" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }'

AUTH=$ROOT/etc/tagcast/auth.yml
check "auth.yml is created 0640 root:tagcast" \
    test "$(box stat -c '%a %U:%G' /etc/tagcast/auth.yml)" = "640 root:tagcast"
SECRET=$(sed -n 's/^ *secret: *//p' "$AUTH" | head -1)
check "auth.yml holds one application with a random secret" \
    test "$(grep -c 'key:' "$AUTH")" = 1 -a "${#SECRET}" -ge 32

echo "=== man pages and completions"
man_commands=$(box sh -c 'MANWIDTH=200 man -P cat tagcast 2>/dev/null' | sed -n 's/^ *tagcast-\([a-z]*\)(1)$/\1/p' | sort | tr '\n' ' ')
help_commands=$("$TAGCAST" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z]*\) .*/\1/p' | grep -vx help | sort | tr '\n' ' ')
echo "man tagcast: $man_commands; tagcast --help: $help_commands"
check "man tagcast lists every command of tagcast --help" test -n "$help_commands" -a "$man_commands" = "$help_commands"
every_page() { for command in $help_commands; do box man -w "tagcast-$command" >/dev/null || return 1; done; }
check "every command has its page (man tagcast-send, ...)" every_page
check "man tagcast-send documents --http" eval 'box sh -c "man -P cat tagcast-send 2>/dev/null" | grep -q -- "--http"'
check "bash completion installed and loadable" box bash -c \
    '. /usr/share/bash-completion/completions/tagcast && complete -p tagcast >/dev/null'
check "zsh and fish completions installed" test -s "$ROOT/usr/share/zsh/vendor-completions/_tagcast" \
    -a -s "$ROOT/usr/share/fish/vendor_completions.d/tagcast.fish"

echo "=== a client receives what tagcast send sends"
listen() { # listen NAME [ARGS...]: a background `tagcast listen` on room=e2e; output in $WORK/NAME.*
    local name=$1; shift
    "$TAGCAST" listen --url "$URL" --tag room=e2e "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    listeners+=($!)
}
send() { "$TAGCAST" send --url "$URL" --tag room=e2e "$@"; }
received() { grep -qx "\"$2\"" "$WORK/$1.out"; }
listen first
check "the listener is counted in STATUS=" eventually status_has "^1 connection,"
check "tagcast send with the installed secret is accepted" send --key application1 --secret "$SECRET" hello-1
check "the listener receives it" eventually received first hello-1
PID=$(prop MainPID)

echo "=== auth.yml edited from the host takes effect without a restart (needs the auth branch)"
random_secret() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
NEW_SECRET=$(random_secret)
SECOND_SECRET=$(random_secret)
GID=$(awk -F: '$1 == "tagcast" { print $3 }' "$ROOT/etc/group")
cat >"$AUTH.new" <<EOF
applications:
  - key: application1
    secret: $NEW_SECRET
    authorizeOpen: true
  - key: application2
    secret: $SECOND_SECRET
    authorizeOpen: false
EOF
chown "0:$GID" "$AUTH.new"
chmod 0640 "$AUTH.new"
mv "$AUTH.new" "$AUTH"
check "the new secret is accepted" \
    eventually send --key application2 --secret "$SECOND_SECRET" hello-2 2>/dev/null
check "application1's new secret is accepted" send --key application1 --secret "$NEW_SECRET" hello-3
refused=$(send --key application1 --secret "$SECRET" hello-old 2>&1 || true)
check "the old secret is refused with 4401" grep -q 4401 <<<"$refused"
check "same MainPID (no restart)" test "$(prop MainPID)" = "$PID"
check "the listener was not dropped" eventually received first hello-3
check "STATUS= counts the applications" eventually status_has "auth: 2 applications"

echo "=== systemctl reload"
since=$(box date '+%Y-%m-%d %H:%M:%S')
start_ns=$(date +%s%N)
check "systemctl reload tagcast succeeds" timeout 10 "$SDBOX" exec "$BOX" systemctl reload tagcast
reload_ms=$((($(date +%s%N) - start_ns) / 1000000))
echo "systemctl reload took ${reload_ms} ms"
check "systemctl reload returns within 3 s" test "$reload_ms" -lt 3000
journal_has() { box journalctl -u tagcast --since "$since" -o cat --no-pager | grep -F -- "$1" >/dev/null; }
check "the journal shows the reload" eventually journal_has "reload done"
check "same MainPID after reload" test "$(prop MainPID)" = "$PID"
check "the listener survived the reload" status_has "^1 connection,"

echo "=== structured journal entries, no secret"
# A client that opens with its key (and secret) in the URL and tags, then sends a bad request:
# the server closes it with 4400 and logs it at notice level with the connection's fields.
bad_request() {
    exec 3<>/dev/tcp/127.0.0.1/8080
    printf 'GET /?tags=%%7B%%22room%%22%%3A%%22e2e%%22%%7D&key=application1&secret=%s HTTP/1.1\r\nHost: e2e\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' "$NEW_SECRET" >&3
    printf '\x81\x88\x00\x00\x00\x00not json' >&3 # a masked text frame (zero mask)
    timeout 5 cat <&3 | od -An -tx1 | tr -d '\n' >"$WORK/bad.bytes" || true
    exec 3>&-
    grep -q '88 [0-9a-f][0-9a-f] 11 30' "$WORK/bad.bytes" # a close frame with code 4400
}
check "a bad request is closed with 4400" bad_request
box journalctl -u tagcast -o json --no-pager >"$WORK/journal.json"
refusal() { jq -e 'select((.MESSAGE | startswith("request refused with 4400")) and .CODE == "4400"
    and .CONN != null and (.PEER | startswith("127.0.0.1:")) and .TAGS != null
    and .APP == "application1" and .PRIORITY == "6")' "$WORK/journal.json" >/dev/null; }
check "journal entry with CONN, PEER, TAGS, APP, CODE at info priority (6)" refusal
info_events() { box journalctl -u tagcast -p info -o cat --no-pager | grep -q "^tagcast .* starting$"; }
check "journalctl -p info shows info events (the start)" info_events
check "journalctl -p notice does not (info is 6, not 5)" eval '! box journalctl -u tagcast -p notice -o cat --no-pager | grep -q " starting$"'
by_id() { # by_id ID TEXT: journalctl MESSAGE_ID=ID selects tagcast's entries, one with TEXT
    box journalctl "MESSAGE_ID=$1" -o json --no-pager | jq -se --arg text "$2" \
        'length > 0 and all(.[]; .SYSLOG_IDENTIFIER == "tagcast") and any(.[]; .MESSAGE | contains($text))' >/dev/null
}
check "MESSAGE_ID= selects the start" by_id 5701cb616f2f43fea13b42793d2419db "starting"
check "MESSAGE_ID= selects ready" by_id 9d3a15de849d42ee8fa3d9fd89dada6a ready
check "MESSAGE_ID= selects reload done" by_id dff14ef3f50146e8b671e0ec6dd3305f "reload done"
box journalctl -o json --no-pager >"$WORK/all.json"
no_secret() { ! grep -qF -e "$SECRET" -e "$NEW_SECRET" -e "$SECOND_SECRET" "$WORK/all.json"; }
check "no secret anywhere in the journal" no_secret

echo "=== systemctl stop: close 1001"
check "systemctl stop tagcast succeeds" box systemctl stop tagcast
check "the listener got close 1001" eventually grep -q 1001 "$WORK/first.err"
check "the service is inactive" test "$(box systemctl is-active tagcast)" = inactive
check "MESSAGE_ID= selects the shutdown" by_id 750f232eca9d48dc81ee30acb0e39d00 "SIGTERM received"

echo "=== an upgrade (here a reinstall) keeps the admin's edits"
printf '\n# edited by the admin\n' >>"$ROOT/etc/tagcast/tagcast.toml"
auth_before=$(sha256sum <"$AUTH")
check "dpkg -i over the installed package" box dpkg -i /var/tmp/tagcast.deb
check "tagcast.toml keeps the admin's edit" grep -q "edited by the admin" "$ROOT/etc/tagcast/tagcast.toml"
check "auth.yml is left as it was" test "$(sha256sum <"$AUTH")" = "$auth_before"
check "the service runs after the upgrade" eventually active

echo "=== a broken auth.yml: systemctl reload fails with the reason, the old secret still works"
PID=$(prop MainPID)
cp "$AUTH" "$WORK/auth.yml"
printf 'applications:\n  - key: application1\n    authorizeOpen: true\n' >"$AUTH"
since=$(box date '+%Y-%m-%d %H:%M:%S')
check "systemctl reload fails" eval '! timeout 10 "$SDBOX" exec "$BOX" systemctl reload tagcast'
status_text=$(box systemctl status tagcast --no-pager -n 20 2>&1 || true)
check "systemctl status shows why (file, line, key)" \
    grep -q "reload failed: /etc/tagcast/auth.yml: line 2: .*secret" <<<"$status_text"
check "STATUS= tells the reload failed" eventually status_has "last reload failed.*auth.yml"
check "MESSAGE_ID= selects the failed reload" by_id 9832264f5ad1495487f3a62df6391b83 "reload failed"
check "the old secret still works" send --key application1 --secret "$NEW_SECRET" hello-4
check "same MainPID, still active" test "$(prop MainPID) $(box systemctl is-active tagcast)" = "$PID active"
cp "$WORK/auth.yml" "$AUTH"
check "systemctl reload succeeds once repaired" timeout 10 "$SDBOX" exec "$BOX" systemctl reload tagcast

echo "=== a changed port: the reload names it as needing a restart"
cp "$ROOT/etc/tagcast/tagcast.toml" "$WORK/tagcast.toml"
sed -i 's/^port = 8080/port = 8081/' "$ROOT/etc/tagcast/tagcast.toml"
grep -q '^port = 8081' "$ROOT/etc/tagcast/tagcast.toml" || die "etc/tagcast.toml has no 'port = 8080' line"
since=$(box date '+%Y-%m-%d %H:%M:%S')
check "systemctl reload succeeds" timeout 10 "$SDBOX" exec "$BOX" systemctl reload tagcast
check "the reload command's output says needs restart: server.port" \
    eventually journal_has "needs restart: server.port (changed in tagcast.toml"
check "the daemon logs needs restart: server.port" \
    eventually journal_has "tagcast.toml: needs restart: server.port"
check "still on 8080" send --key application1 --secret "$NEW_SECRET" hello-5
cp "$WORK/tagcast.toml" "$ROOT/etc/tagcast/tagcast.toml"

echo "=== a broken tagcast.toml: reload fails naming the key, restart fails, no restart loop"
printf '[server]\nprot = 8080\n' >"$ROOT/etc/tagcast/tagcast.toml"
check "systemctl reload fails (the running server goes on)" \
    eval '! timeout 10 "$SDBOX" exec "$BOX" systemctl reload tagcast'
check "STATUS= tells the reload failed, naming the key" eventually status_has "last reload failed.*prot"
check "same MainPID, still active" test "$(prop MainPID) $(box systemctl is-active tagcast)" = "$PID active"
since=$(box date '+%Y-%m-%d %H:%M:%S')
check "systemctl restart fails" eval '! box systemctl restart tagcast'
check "the journal names the key" eventually journal_has 'unknown field `prot`'
# Restart= would act within RestartSec=2; look past it.
sleep 3
check "no restart (NRestarts=0, failed, exit 78)" \
    test "$(prop NRestarts) $(prop ActiveState) $(prop ExecMainStatus)" = "0 failed 78"
cp "$WORK/tagcast.toml" "$ROOT/etc/tagcast/tagcast.toml"
check "restart with the config repaired" box systemctl restart tagcast

echo "=== remove keeps every file in /etc/tagcast; purge keeps only the admin's"
mkdir -p "$ROOT/etc/tagcast/tls"
echo "an admin's key" >"$ROOT/etc/tagcast/tls/server.key"
auth_before=$(sha256sum <"$AUTH")
check "apt-get remove succeeds" box apt-get remove -y tagcast
check "remove leaves auth.yml and tagcast.toml" \
    test "$(sha256sum <"$AUTH")" = "$auth_before" -a -e "$ROOT/etc/tagcast/tagcast.toml"
check "apt-get purge succeeds" box apt-get purge -y tagcast
check "purge removes auth.yml and tagcast.toml" \
    test ! -e "$AUTH" -a ! -e "$ROOT/etc/tagcast/tagcast.toml"
check "purge keeps the admin's /etc/tagcast/tls/server.key" \
    grep -qx "an admin's key" "$ROOT/etc/tagcast/tls/server.key"
check "the unit is gone" test ! -e "$ROOT/lib/systemd/system/tagcast.service"
check "nothing listens on 8080" eval '! ss -Hltn "sport = :8080" | grep -q .'
rm -r "$ROOT/etc/tagcast/tls"
check "install again, then purge" box sh -c 'apt-get install -y /var/tmp/tagcast.deb >/dev/null && apt-get purge -y tagcast >/dev/null'
check "with nothing of the admin's in it, /etc/tagcast is gone" test ! -e "$ROOT/etc/tagcast"

report systemd
