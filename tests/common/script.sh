# Sourced by the shell test suites (tests/wss/run.sh, tests/browser_recovery/run.sh): `fail`, a
# temporary directory `work`, the processes to stop at exit (`pids`: a pid, or -PGID for a
# process group) and `wait_for`.

fail() { echo "FAIL: $*" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -- "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Polls (every 0.1 s, at most SECONDS, default 15) until FILE has a line containing TEXT.
wait_for() {
    local file=$1 text=$2 seconds=${3:-15}
    for _ in $(seq $((seconds * 10))); do
        grep -qF -- "$text" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "--- $file:" >&2; cat "$file" >&2 || true
    fail "no line containing '$text' in $file"
}
