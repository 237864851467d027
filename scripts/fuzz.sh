#!/usr/bin/env bash
# Builds and runs sealkit's fuzz targets (fuzz/, cargo fuzz on nightly; docs/fuzzing.md).
#   scripts/fuzz.sh --smoke                   every target briefly (CI): builds them, runs each
#                                             SEALKIT_FUZZ_SMOKE_SECONDS (default 15) from its seeds
#   scripts/fuzz.sh --long SECONDS [TARGET..] one target at a time at nice 19 for SECONDS each;
#                                             libFuzzer's final statistics go to fuzz/runs/
#   scripts/fuzz.sh --runs N [TARGET..]       the same, N executions each (the bar: 10000000)
#   SEALKIT_FUZZ_SANITIZER=none                 for --long/--runs: no AddressSanitizer, 4-20x the
#                                             executions/s (docs/fuzzing.md says when that is sound)
# Installs the nightly toolchain and cargo-fuzz when they are missing. A crash fails the
# run and leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:---smoke}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

targets() { cargo +nightly fuzz list | grep -v '^seeds$'; }

# Each target starts from its committed seeds (fuzz/seeds/<target>/), plus what earlier
# runs on this machine found (fuzz/corpus/<target>/, not committed).
prepare() {
    mkdir -p "fuzz/corpus/$1"
    cp -n "fuzz/seeds/$1"/* "fuzz/corpus/$1/" 2>/dev/null || true
}

run() { # target seconds [libFuzzer budget flag]
    prepare "$1"
    mkdir -p fuzz/runs
    local log="fuzz/runs/$1.log" budget=${3:--max_total_time=$2}
    echo "== fuzz $1 ($budget)"
    if ! nice -n "${NICE:-0}" cargo +nightly fuzz run "${sanitizer[@]}" "$1" "fuzz/corpus/$1" -- \
        "$budget" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: $1 failed (crash input in fuzz/artifacts/$1/)" >&2
        return 1
    fi
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)' "$log" || true
}

# The smoke run (CI) always uses the default, AddressSanitizer.
sanitizer=()
if [ "$mode" != --smoke ] && [ -n "${SEALKIT_FUZZ_SANITIZER:-}" ]; then
    sanitizer=(--sanitizer "$SEALKIT_FUZZ_SANITIZER")
fi
# Without a sanitizer the `seeds` helper does not link (it is not a fuzz target), so the
# targets are then built one by one by `fuzz run` instead of all at once here.
build_all() { [ ${#sanitizer[@]} -gt 0 ] || cargo +nightly fuzz build; }

case "$mode" in
--smoke)
    seconds=${SEALKIT_FUZZ_SMOKE_SECONDS:-15}
    cargo +nightly fuzz build
    for target in $(targets); do run "$target" "$seconds"; done
    ;;
--long)
    seconds=${2:?usage: scripts/fuzz.sh --long SECONDS [TARGET...]}
    shift 2
    list=${*:-$(targets)}
    build_all
    for target in $list; do NICE=19 run "$target" "$seconds"; done
    ;;
--runs)
    runs=${2:?usage: scripts/fuzz.sh --runs N [TARGET...]}
    shift 2
    list=${*:-$(targets)}
    build_all
    for target in $list; do NICE=19 run "$target" 0 "-runs=$runs"; done
    ;;
*)
    echo "usage: scripts/fuzz.sh --smoke | --long SECONDS [TARGET...] | --runs N [TARGET...]" >&2
    exit 2
    ;;
esac
