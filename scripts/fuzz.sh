#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and prints its exec count (issue 9).
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS (default 60) each   (make fuzz)
#   FUZZ_SECONDS=5 scripts/fuzz.sh  a smoke run                                     (make fuzz-smoke)
#   scripts/fuzz.sh filter_escape   one target
#
# Set-up: installs the pinned cargo-fuzz (CARGO_FUZZ_VERSION) into .tools/bin when missing
# (scripts/ensure-cargo-tool.sh); the first build downloads fuzz/Cargo.lock's crates.
# Toolchain: cargo-fuzz wants nightly for -Zsanitizer. We only have stable, so the build runs with
# RUSTC_BOOTSTRAP=1 (unlocks the -Z flags cargo-fuzz passes). FUZZ_SANITIZER picks the sanitizer
# (default: none — our crates forbid unsafe_code, so AddressSanitizer only watches third-party
# code and roughly halves the exec rate; FUZZ_SANITIZER=address turns it on). Corpora live in fuzz/corpus/<target>
# (seeded from fuzz/seeds/<target>); crashes land in fuzz/artifacts/<target> and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}
scripts/ensure-cargo-tool.sh cargo-fuzz "$CARGO_FUZZ_VERSION"
CARGO_FUZZ=$PWD/.tools/bin/cargo-fuzz
cd fuzz

SECONDS_EACH=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}

fuzz() { "$CARGO_FUZZ" fuzz "$@"; }

if [[ $# -gt 0 ]]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(fuzz list)
fi

start=$(date +%s)
if [[ $# -eq 0 ]]; then
    fuzz build --sanitizer "$SANITIZER"          # every target in one cargo invocation
else
    for t in "${TARGETS[@]}"; do fuzz build --sanitizer "$SANITIZER" "$t"; done
fi
built=$(date +%s)

failed=()
summary=()
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [[ -d seeds/$t ]] && seeds=("seeds/$t")
    log=$(mktemp)
    if fuzz run --sanitizer "$SANITIZER" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 -max_len=65536 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        status=ok
    else
        status=FAIL
        failed+=("$t")
    fi
    execs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | grep -o '[0-9]*' || echo "?")
    summary+=("$(printf '%-14s %-4s %10s execs  %5s edges  %ss' "$t" "$status" "$execs" "$cov" "$SECONDS_EACH")")
    if [[ $status == FAIL ]]; then
        echo "--- $t failed; last lines of libFuzzer output ---" >&2
        grep -v '^#' "$log" | tail -n 30 >&2
    fi
    rm -f "$log"
done

echo "fuzz: build $((built - start))s, total $(( $(date +%s) - start ))s, sanitizer=$SANITIZER"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: FAILED: ${failed[*]} (reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 ../.tools/bin/cargo-fuzz fuzz run --sanitizer $SANITIZER TARGET artifacts/TARGET/crash-…)" >&2
    exit 1
fi
