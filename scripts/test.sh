#!/usr/bin/env bash
# Runs every test of sealkit on a fresh machine: installs what the tests need when it is
# missing, then format check, clippy (warnings are errors), the Rust tests (unit and the
# integration binary over real TLS), and an external RFC 9449 client against `sealkit demo`.
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "test.sh: missing $*; install it (apt-get install -y $*) and retry" >&2
        exit 1
    fi
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    echo "test.sh: installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need_cmd() { command -v "$1" >/dev/null 2>&1 || apt_install "${2:-$1}"; }
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || apt_install "$1"; }

# Build and test dependencies. promtool (Debian package prometheus) runs the alert tests
# and lints a live /metrics scrape in the test suite (it::monitoring).
need_pkg pkg-config
need_pkg libssl-dev
need_cmd openssl
need_cmd curl
need_cmd python3
need_cmd node nodejs
need_cmd npm
need_cmd redis-server redis-server
need_cmd minisign
# The external clients of the user grants: Python's requests + cryptography (device flow) and
# Debian's chromium (the sign-in and consent pages, driven through the DevTools protocol).
python3 -c 'import requests, cryptography' 2>/dev/null || apt_install python3-requests python3-cryptography
need_cmd chromium
need_cmd openssl
need_cmd promtool prometheus
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== alert rules (promtool check rules / test rules)"
scripts/check-alerts.sh
echo "== cargo test"
cargo test --locked
echo "== external clients against sealkit demo (oauth4webapi; Python device flow; chromium pages)"
scripts/external-client.sh target/debug/sealkit
