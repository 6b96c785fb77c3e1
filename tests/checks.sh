# The check helpers of the shell suites (tests/systemd/run.sh, tests/container/run.sh): every
# check is run and reported, and `report SUITE` ends the suite with status 1 when any failed.
# Source it after setting WAIT_S (how long `eventually` polls, in seconds).

failures=()
pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failures+=("$1"); }
# check NAME COMMAND...: runs COMMAND, records the result under NAME.
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }
# eventually COMMAND...: true once COMMAND succeeds, polling for at most WAIT_S seconds.
eventually() {
    local deadline=$((SECONDS + WAIT_S))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}
die() { printf 'ERROR %s\n' "$*" >&2; exit 1; }
# report SUITE: lists the failed checks and exits 1, or says all passed.
report() {
    echo
    if ((${#failures[@]})); then
        printf '%d check(s) failed:\n' "${#failures[@]}"
        printf '  %s\n' "${failures[@]}"
        exit 1
    fi
    echo "all $1 checks passed"
}
