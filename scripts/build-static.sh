#!/usr/bin/env bash
# Builds the static x86_64-unknown-linux-musl release binary of sealkit (OpenSSL vendored
# and linked in) reproducibly, with its CycloneDX SBOM, checks that it is statically linked
# and runs, and prints both SHA-256 digests.
#   scripts/build-static.sh   -> target/x86_64-unknown-linux-musl/release/sealkit
#                                target/x86_64-unknown-linux-musl/release/sealkit.cdx.json
#
# Reproducible: the same commit gives the same bytes from any checkout directory, any day,
# on any machine of this kind (scripts/check-reproducible.sh proves it by building twice).
# The script sets the build's whole environment itself and ignores the caller's (RUSTFLAGS,
# CARGO_TARGET_DIR, SOURCE_DATE_EPOCH, CC, CFLAGS, … are dropped with `env -i`):
#   SOURCE_DATE_EPOCH     the commit's time (OpenSSL's "built on", the SBOM, --version)
#   RUSTFLAGS             --remap-path-prefix for the checkout (/build/sealkit), the target
#                         directory (/build/target), CARGO_HOME (/cargo), RUSTUP_HOME (/rustup)
#   GNUMAKEFLAGS          OpenSSL's ENGINESDIR and MODULESDIR fixed to /usr/local/lib/… (by
#                         default they name the build directory: 21 bytes differed between
#                         two checkouts); OPENSSL_CONFIG_DIR fixes OPENSSLDIR (/usr/local/ssl)
#   CARGO_TARGET_DIR      <checkout>/target, always
#   TZ, LC_ALL, PATH      UTC, C, the toolchain's directory and /usr/bin:/bin
# The profile strips symbols; no build-time timestamp reaches the binary.
#
# The SBOM is made first, from `cargo metadata` for the target and features of this build
# and Cargo.lock's checksums (scripts/sbom.py: CycloneDX 1.5 JSON of the crates linked in,
# no random serial number, no wall-clock time), and its SHA-256 is compiled into the binary
# (`sealkit --version --verbose`).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)

TARGET=x86_64-unknown-linux-musl
OUT="$REPO/target/$TARGET/release"
BIN="$OUT/sealkit"
SBOM="$OUT/sealkit.cdx.json"

apt_updated=
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "build-static: missing $*; install it (apt-get install -y $*) and retry" >&2
        exit 1
    fi
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"
command -v musl-gcc >/dev/null || apt_install musl-tools
command -v make >/dev/null || apt_install make
command -v perl >/dev/null || apt_install perl
command -v file >/dev/null || apt_install file
command -v git >/dev/null || apt_install git
[ -x /usr/bin/python3 ] || apt_install python3

# --- what is built ------------------------------------------------------------------------
git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1 \
    || { echo "build-static: $REPO is not a git checkout; the commit fixes the build" >&2; exit 1; }
COMMIT=$(git -C "$REPO" rev-parse HEAD)
EPOCH=$(git -C "$REPO" log -1 --format=%ct HEAD)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
    echo "build-static: WARNING: uncommitted changes; this binary is not commit $COMMIT" >&2
    COMMIT="$COMMIT-dirty"
fi

CARGO=$(command -v cargo)
CARGO_HOME_DIR=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)
RUSTUP_HOME_DIR=$(cd "${RUSTUP_HOME:-$HOME/.rustup}" && pwd -P)
TOOLCHAIN=$(rustc -vV | sed -n 's/^release: //p')
# Later remappings win, so the target directory (inside the checkout) comes after it.
RUSTFLAGS_FIXED="--remap-path-prefix=$REPO=/build/sealkit --remap-path-prefix=$REPO/target=/build/target"
RUSTFLAGS_FIXED+=" --remap-path-prefix=$CARGO_HOME_DIR=/cargo --remap-path-prefix=$RUSTUP_HOME_DIR=/rustup"

# The build's environment, and nothing else.
build_env=(
    env -i
    "PATH=$(dirname "$CARGO"):/usr/local/bin:/usr/bin:/bin"
    "HOME=$HOME"
    "CARGO_HOME=$CARGO_HOME_DIR"
    "RUSTUP_HOME=$RUSTUP_HOME_DIR"
    "CARGO_TARGET_DIR=$REPO/target"
    "CARGO_INCREMENTAL=0"
    "CARGO_TERM_COLOR=never"
    "RUSTFLAGS=$RUSTFLAGS_FIXED"
    "SOURCE_DATE_EPOCH=$EPOCH"
    "TZ=UTC"
    "LC_ALL=C"
    "OPENSSL_CONFIG_DIR=/usr/local/ssl"
    "GNUMAKEFLAGS=ENGINESDIR=/usr/local/lib/engines-3 MODULESDIR=/usr/local/lib/ossl-modules"
    "SEALKIT_BUILD_COMMIT=$COMMIT"
)

# --- the SBOM first: its digest goes into the binary ----------------------------------------
mkdir -p "$OUT"
metadata=$(mktemp)
trap 'rm -f "$metadata"' EXIT
"${build_env[@]}" "$CARGO" metadata --format-version 1 --locked --manifest-path "$REPO/Cargo.toml" \
    --filter-platform "$TARGET" --features vendored-openssl >"$metadata"
"${build_env[@]}" "SEALKIT_RUSTC=$(rustc -V)" python3 "$REPO/scripts/sbom.py" "$metadata" "$REPO/Cargo.lock" \
    "$TARGET" vendored-openssl >"$SBOM.partial"
mv "$SBOM.partial" "$SBOM"
SBOM_SHA256=$(sha256sum "$SBOM" | cut -d' ' -f1)

# --- the binary ---------------------------------------------------------------------------
started=$SECONDS
"${build_env[@]}" "SEALKIT_SBOM_SHA256=$SBOM_SHA256" \
    "$CARGO" build --release --locked --target "$TARGET" --features vendored-openssl
elapsed=$((SECONDS - started))

description=$(file -b "$BIN")
case "$description" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "build-static: $BIN is not statically linked: $description" >&2; exit 1 ;;
esac
if ldd "$BIN" >/dev/null 2>&1 && ! ldd "$BIN" 2>&1 | grep -q "statically linked\|not a dynamic executable"; then
    echo "build-static: ldd lists dynamic dependencies:" >&2
    ldd "$BIN" >&2
    exit 1
fi
# The binary must copy memory with sealkit's SSE2 memcpy (src/memmove.rs), not musl's; a
# link that took musl's instead would run correctly and slower, so it is refused here.
if ! "$BIN" --version --verbose | grep -q "^memcpy: *sealkit's SSE2 copy$"; then
    echo "build-static: $BIN does not run sealkit's memcpy (src/memmove.rs):" >&2
    "$BIN" --version --verbose >&2
    exit 1
fi
version=$("$BIN" --version)
size=$(stat -c %s "$BIN")
echo "build-static: $BIN ($version, $((size / 1024 / 1024)) MiB, $description)"
echo "build-static: commit $COMMIT, SOURCE_DATE_EPOCH=$EPOCH ($(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)), rustc $TOOLCHAIN, cargo build ${elapsed} s"
echo "build-static: sha256 $(sha256sum "$BIN" | cut -d' ' -f1)  sealkit"
echo "build-static: sha256 $SBOM_SHA256  sealkit.cdx.json"
