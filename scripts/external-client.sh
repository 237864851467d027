#!/usr/bin/env bash
# Interop check with a DPoP client nobody on this project wrote: starts
# `sealkit demo` on a free loopback port in a fresh temp dir and runs
# tests/external/oauth4webapi/client.mjs (oauth4webapi) against it.
#
# usage: scripts/external-client.sh [path/to/sealkit]   (default target/debug/sealkit)
# Exit code: the client's (non-zero on any failed check), or 1 if the demo
# server could not be started.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:-$repo/target/debug/sealkit}
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
client_dir=$repo/tests/external/oauth4webapi

log() { echo "external-client: $*" >&2; }

if [[ ! -x $bin ]]; then
  log "no sealkit binary at $bin (build it with 'cargo build')"
  exit 1
fi
command -v curl >/dev/null || { log "curl is required"; exit 1; }

# --- node and the client's dependencies --------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "node/npm missing: installing Debian's nodejs and npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
# Install when missing, or when node_modules does not hold the pinned version.
if ! (cd "$client_dir" && node -e '
    const fs = require("fs");
    const want = JSON.parse(fs.readFileSync("package.json")).dependencies.oauth4webapi;
    const have = JSON.parse(fs.readFileSync("node_modules/oauth4webapi/package.json")).version;
    process.exit(want === have ? 0 : 1);' 2>/dev/null); then
  log "installing node dependencies (npm ci)"
  (cd "$client_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# --- demo server --------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/sealkit-external.XXXXXX")
server_pid=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    # No python3: pick a random high port nobody is listening on.
    local p
    while :; do
      p=$((20000 + RANDOM % 40000))
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
  fi
}

# A chosen port can be taken between choosing and binding: retry a few times.
ready=
for attempt in 1 2 3; do
  port=$(free_port)
  dir=$work/site-$attempt
  "$bin" demo --dir "$dir" --listen "127.0.0.1:$port" >"$work/server-$attempt.log" 2>&1 &
  server_pid=$!
  deadline=$((SECONDS + 20))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      wait "$server_pid" 2>/dev/null || true
      log "demo server exited early on port $port (attempt $attempt):"
      sed 's/^/  /' "$work/server-$attempt.log" >&2
      server_pid=
      break
    fi
    if [[ -f $dir/ca/root.crt ]] &&
      curl -fsS -o /dev/null --max-time 2 --cacert "$dir/ca/root.crt" "https://127.0.0.1:$port/ready" 2>/dev/null &&
      curl -fsS -o /dev/null --max-time 2 --cacert "$dir/ca/root.crt" "https://127.0.0.1:$((port + 1))/health" 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.1
  done
  [[ -n $ready ]] && break
  if [[ -n $server_pid ]]; then
    log "demo server on port $port not ready within 20 s:"
    sed 's/^/  /' "$work/server-$attempt.log" >&2
    exit 1
  fi
done
if [[ -z $ready ]]; then
  log "could not start the demo server"
  exit 1
fi
log "demo server ready at https://127.0.0.1:$port (pid $server_pid)"

# --- the external client ------------------------------------------------------
set -a
# shellcheck disable=SC1091
. "$dir/demo.env"
set +a
status=0
(cd "$client_dir" && NODE_EXTRA_CA_CERTS="$SEALKIT_CA_FILE" node client.mjs) || status=$?
# The device flow from Python (requests + cryptography; scripts/test.sh installs them).
if ((status == 0)); then
  python3 "$repo/tests/external/python/device_flow.py" || status=$?
fi
# The sign-in and consent pages in headless chromium; chromium trusts exactly the demo
# server's key (its SPKI hash), nothing else is relaxed. Screenshots in the test output.
if ((status == 0)); then
  spki=$(openssl x509 -in "$dir/tls/server.crt" -pubkey -noout |
    openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)
  shots=${SEALKIT_SCREENSHOT_DIR:-$repo/target/external/screenshots}
  SEALKIT_SERVER_SPKI=$spki SEALKIT_SCREENSHOT_DIR=$shots \
    node --experimental-websocket "$repo/tests/external/browser/pages.mjs" || status=$?
fi
if ((status != 0)); then
  log "client failed (exit $status); server output:"
  sed 's/^/  /' "$work/server-$attempt.log" >&2 || true
  for f in "${SEALKIT_LOG_DIR:-/nonexistent}"/*; do
    [[ -f $f ]] || continue
    log "server log $f (last 40 lines):"
    tail -n 40 "$f" | sed 's/^/  /' >&2
  done
fi
# The live /metrics of the server the client just drove: Prometheus must be able to read it.
if ((status == 0)) && [[ -x "$repo/scripts/check-alerts.sh" ]]; then
  curl -sS --cacert "$SEALKIT_CA_FILE" "$SEALKIT_METRICS_URL" | "$repo/scripts/check-alerts.sh" --metrics - || status=$?
fi
exit "$status"
