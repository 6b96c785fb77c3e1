#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each (default 20), one after the other,
# with libFuzzer through cargo-fuzz; fails on the first crash, panic, hang (10 s) or allocation
# over 256 MB. The stable toolchain builds it with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly
# flags); no sanitizer (`-s none`): the crate forbids unsafe code.
# Usage: bash fuzz/run.sh [SECONDS [TARGET...]]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(handshake request frame auth_file config token inflate)
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "fuzz: $target for ${seconds}s"
    log=$(mktemp)
    # seeds/ is committed; corpus/ grows locally.
    if ! cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $target found a crash: see fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
    rm -f "$log"
done
