#!/usr/bin/env bash
# Builds the static x86_64-unknown-linux-musl release binary of sealkit (OpenSSL vendored
# and linked in), checks that it is statically linked and runs, and prints where it is.
#   scripts/build-static.sh            -> target/x86_64-unknown-linux-musl/release/sealkit
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
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

cargo build --release --locked --target "$TARGET" --features vendored-openssl

BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/sealkit"
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
version=$("$BIN" --version)
size=$(stat -c %s "$BIN")
echo "build-static: $BIN ($version, $((size / 1024 / 1024)) MiB, $description)"
