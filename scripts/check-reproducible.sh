#!/usr/bin/env bash
# Proves the static build is reproducible: clones the commit at HEAD twice, cleanly, into
# two directories of different names and lengths, builds each with its own
# scripts/build-static.sh, and compares the binaries and SBOMs byte for byte. Prints both
# SHA-256 digests; exits 1 if they differ (with diffoscope's report where it helps).
#
#   scripts/check-reproducible.sh               two clean builds (two release builds' time)
#   scripts/check-reproducible.sh --against BIN one clean build, compared with BIN and
#                                               BIN.cdx.json built from the same commit in
#                                               another checkout (CI: the binary that
#                                               scripts/build-static.sh just built there)
#
# Also fails if a binary contains a path of its build: the checkout, the target directory,
# CARGO_HOME or RUSTUP_HOME. Work directory: $REPRO_WORK or a new /tmp/sealkit-repro.*;
# removed on success unless REPRO_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)
TARGET=x86_64-unknown-linux-musl

against=
case "${1:-}" in
    --against)
        [ -n "${2:-}" ] || { echo "check-reproducible: --against needs a binary" >&2; exit 2; }
        against=$(cd "$(dirname "$2")" && pwd -P)/$(basename "$2")
        [ -f "$against" ] || { echo "check-reproducible: no binary at $2" >&2; exit 2; }
        [ -f "$against.cdx.json" ] || { echo "check-reproducible: no SBOM at $2.cdx.json" >&2; exit 2; }
        ;;
    "") ;;
    *) echo "usage: scripts/check-reproducible.sh [--against BIN]" >&2; exit 2 ;;
esac

COMMIT=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "check-reproducible: note: uncommitted changes are not built; this checks commit $COMMIT" >&2
fi
WORK=${REPRO_WORK:-$(mktemp -d /tmp/sealkit-repro.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd -P)

# Clones the commit into $1 (a path that must not exist) and builds it there.
build_in() {
    local dir=$1 started
    mkdir -p "$(dirname "$dir")"
    git -c advice.defaultBranchName=false clone --quiet --no-local --no-checkout "$REPO" "$dir"
    git -C "$dir" checkout --quiet --detach "$COMMIT"
    echo "check-reproducible: building $COMMIT in $dir"
    started=$SECONDS
    "$dir/scripts/build-static.sh" >"$dir.build.log" 2>&1 || {
        tail -n 40 "$dir.build.log" >&2
        echo "check-reproducible: the build in $dir failed (log: $dir.build.log)" >&2
        exit 1
    }
    grep '^build-static:' "$dir.build.log" | sed 's/^/    /'
    echo "check-reproducible: built in $((SECONDS - started)) s"
}

# Paths of a build that must not appear in its binary.
leaks() {
    local bin=$1 checkout=$2 path found=0
    for path in "$checkout" "$checkout/target" "${CARGO_HOME:-$HOME/.cargo}" "${RUSTUP_HOME:-$HOME/.rustup}" "$WORK"; do
        if grep -qaF "$path" "$bin"; then
            echo "check-reproducible: $bin contains the build path $path:" >&2
            grep -aoF "$path" "$bin" | sort | uniq -c | head -n 5 >&2
            found=1
        fi
    done
    return "$found"
}

first_dir=$WORK/a/sealkit
second_dir=$WORK/second-build-directory/checkout-of-sealkit
if [ -n "$against" ]; then
    first_bin=$against
    first_checkout=$(cd "$(dirname "$against")/../../.." && pwd -P)
else
    build_in "$first_dir"
    first_bin=$first_dir/target/$TARGET/release/sealkit
    first_checkout=$first_dir
fi
build_in "$second_dir"
second_bin=$second_dir/target/$TARGET/release/sealkit

status=0
leaks "$first_bin" "$first_checkout" || status=1
leaks "$second_bin" "$second_dir" || status=1

echo
echo "check-reproducible: commit $COMMIT"
for pair in "$first_bin:$first_checkout" "$second_bin:$second_dir"; do
    bin=${pair%%:*}
    echo "  $(sha256sum "$bin" | cut -d' ' -f1)  sealkit           (built in ${pair#*:})"
    echo "  $(sha256sum "$bin.cdx.json" | cut -d' ' -f1)  sealkit.cdx.json"
done
for suffix in "" ".cdx.json"; do
    if cmp -s "$first_bin$suffix" "$second_bin$suffix"; then
        echo "check-reproducible: sealkit$suffix IDENTICAL"
        continue
    fi
    status=1
    echo "check-reproducible: sealkit$suffix DIFFERS ($(cmp -l "$first_bin$suffix" "$second_bin$suffix" | wc -l) byte(s))"
    if ! command -v diffoscope >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "check-reproducible: installing diffoscope-minimal to explain the difference"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq diffoscope-minimal >/dev/null; } || true
    fi
    if command -v diffoscope >/dev/null; then
        diffoscope --text "$WORK/diffoscope$suffix.txt" "$first_bin$suffix" "$second_bin$suffix" >/dev/null 2>&1 || true
        head -n 80 "$WORK/diffoscope$suffix.txt"
        echo "check-reproducible: full report: $WORK/diffoscope$suffix.txt"
    else
        cmp -l "$first_bin$suffix" "$second_bin$suffix" | head -n 20
    fi
done

if [ "$status" -eq 0 ]; then
    echo "check-reproducible: PASSED: two clean builds in different directories gave the same bytes"
    [ "${REPRO_KEEP:-}" = 1 ] || rm -rf "$WORK"
else
    echo "check-reproducible: FAILED (work directory kept: $WORK)" >&2
fi
exit "$status"
