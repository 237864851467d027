#!/usr/bin/env bash
# The sealed drill: proves the offline kit works on a host with nothing but the kit.
#
#   scripts/sealed-drill.sh             (as root: network namespace and chroot)
#
# 1. Takes the static binary ($SEALKIT_BIN, or builds it with scripts/build-static.sh into
#    target/) and its SBOM beside it (<binary>.cdx.json), and checks it has no dynamic
#    libraries (file, ldd).
# 2. Connected side, with that binary only: a site CA, server and client certificates and
#    clients (`sealkit demo --prepare-only`, adapted to host paths), a bundle signing key,
#    a signed site bundle (DPoP tenant, DPoP+nonce tenant, introspecting client, mTLS
#    tenant), and the offline kit (`sealkit kit build`).
# 3. An empty root holding ONLY the binary, the kit and the bundle signing public key. Then,
#    in a new network namespace with only loopback (`unshare --net`), every sealkit command
#    runs chrooted into that root with `env -i PATH=/usr/bin:/bin HOME=/` (HOME is the root
#    as the binary sees it), so nothing outside the kit can be used:
#      kit verify of a tampered copy (refused, nothing extracted) → kit verify --extract →
#      the kit's SBOM is the one whose digest the kit's binary names (--version --verbose) →
#      a tampered file in an unpacked copy (refused) → install.sh (DESTDIR=root) twice (the
#      second run changes nothing) → bundle import → serve in the background → /ready →
#      drill run (whole matrix incl. bypass and audit log, JUnit report) → SIGTERM, clean
#      exit.
# Fails on any failed scenario. Prints the drill table and the JUnit report's path.
#
# Environment: SEALKIT_BIN (skip the build), SEALED_DRILL_KEEP=1 (keep the whole work
# directory even on success).
set -euo pipefail

SITE=sealed-drill
PORT=8443
ISSUER="https://127.0.0.1:$PORT"
ROOT_CONFIG=/var/lib/sealkit/bundles/current/authority.yaml
TARGET=x86_64-unknown-linux-musl
# Every scenario of the verification matrix the drill must report (src/drill/mod.rs).
MATRIX_ROWS=(
    "DPoP required without proof"
    "nonce round trip"
    "introspection shows cnf.jkt"
    "replay within the window"
    "replay audit entry"
    "mTLS certificate-bound token"
    "mTLS mismatch (token over another certificate)"
    "mTLS mismatch metric"
    "bypass on: unbound token"
    "bypass off: enforcement back"
)

say() { printf '\n== sealed-drill: %s\n' "$*"; }
fail() {
    printf '\nsealed-drill: FAILED: %s\n' "$*" >&2
    exit 1
}

# Flips the lowest bit of byte OFFSET of FILE in place.
flip_byte() {
    local file=$1 offset=$2 byte
    byte=$(od -An -tu1 -j "$offset" -N1 "$file" | tr -d ' ')
    # shellcheck disable=SC2059
    printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of="$file" bs=1 seek="$offset" conv=notrunc status=none
}

# The names in a directory, sorted, on one line.
root_listing() { find "$1" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | tr '\n' ' '; }

# ---------------------------------------------------------------------------------------
# Inside the network namespace: the sealed host.
inside() {
    local R=$1
    local CHROOT
    CHROOT=$(command -v chroot)
    # The binary sees only the root, a minimal environment and loopback.
    sealed() { env -i PATH=/usr/bin:/bin HOME=/ "$CHROOT" "$R" "$@"; }
    SERVER_PID=
    trap '[ -z "$SERVER_PID" ] || kill -9 "$SERVER_PID" 2>/dev/null || true' EXIT

    say "network namespace: only loopback"
    ip link set lo up
    local links
    links=$(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
    [ "$links" = "lo " ] || fail "the namespace has interfaces besides lo: $links"
    [ -z "$(ip route show default)" ] || fail "the namespace has a default route"
    if timeout 5 bash -c 'exec 3<>/dev/tcp/192.0.2.1/443' 2>/dev/null; then
        fail "an outbound connection succeeded inside the namespace"
    fi
    echo "interfaces: $links; no default route; connect to 192.0.2.1:443 fails (network unreachable)"
    echo "the root holds: $(root_listing "$R")"

    say "kit verify of a tampered copy (one byte flipped) must refuse, extracting nothing"
    cp "$R/sealkit-kit.tar.zst" "$R/tampered.tar.zst"
    local size rc
    size=$(stat -c %s "$R/tampered.tar.zst")
    flip_byte "$R/tampered.tar.zst" $((size / 2))
    set +e
    sealed /sealkit kit verify /tampered.tar.zst --trusted-keys /bundle-signing.pub --extract /tampered-kit
    rc=$?
    set -e
    [ "$rc" -ne 0 ] || fail "kit verify accepted a tampered kit"
    [ ! -e "$R/tampered-kit" ] || fail "kit verify extracted a tampered kit"
    [ -z "$(find "$R" -maxdepth 1 -name '.tampered-kit.partial-*')" ] || fail "staging left behind"
    rm -f "$R/tampered.tar.zst"
    TAMPER_ARCHIVE_RC=$rc
    echo "refused with exit $rc; nothing extracted"

    say "kit verify --extract"
    sealed /sealkit kit verify /sealkit-kit.tar.zst --trusted-keys /bundle-signing.pub --extract /kit

    say "the kit's SBOM is the one its binary was built with"
    local sbom_kit sbom_binary
    sbom_kit=$(sha256sum "$R/kit/sealkit.cdx.json" | cut -d' ' -f1)
    sbom_binary=$(sealed /kit/sealkit --version --verbose | sed -n 's/^SBOM: *sha256://p')
    [ "$sbom_kit" = "$sbom_binary" ] \
        || fail "the kit's sealkit.cdx.json (sha256 $sbom_kit) is not the SBOM the binary names (${sbom_binary:-none})"
    echo "sealkit.cdx.json sha256 $sbom_kit = the SBOM digest in the binary's --version --verbose"
    SBOM_SHA256=$sbom_kit

    say "a changed byte in a file of an unpacked kit must be refused"
    cp -a "$R/kit" "$R/kit-tampered"
    flip_byte "$R/kit-tampered/sealkit" $(($(stat -c %s "$R/kit-tampered/sealkit") / 2))
    set +e
    sealed /sealkit kit verify /kit-tampered --trusted-keys /bundle-signing.pub
    rc=$?
    set -e
    [ "$rc" -ne 0 ] || fail "kit verify accepted an unpacked kit with a changed binary"
    rm -rf "$R/kit-tampered"
    TAMPER_FILE_RC=$rc
    echo "refused with exit $rc"

    say "install.sh with DESTDIR=$R"
    local install=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DESTDIR="$R" sh "$R/kit/install.sh")
    "${install[@]}"
    local snapshot_before snapshot_after second
    snapshot() { find "$R" -printf '%p %m %u:%g %s %T@ %l\n' | sort; }
    snapshot_before=$(snapshot)
    say "install.sh again: must change nothing"
    second=$("${install[@]}")
    echo "$second"
    snapshot_after=$(snapshot)
    [ "$snapshot_before" = "$snapshot_after" ] || {
        diff <(echo "$snapshot_before") <(echo "$snapshot_after") || true
        fail "the second install.sh run changed the root"
    }
    grep -q "nothing to change" <<<"$second" || fail "the second install.sh run reported changes"
    local path mode
    while read -r path mode; do
        [ "$(stat -c %a "$R/$path")" = "$mode" ] || fail "$path has mode $(stat -c %a "$R/$path"), expected $mode"
    done <<'MODES'
etc/sealkit 750
etc/sealkit/tls 750
etc/sealkit/tls/server.key 640
var/lib/sealkit 700
var/lib/sealkit/bundles 700
var/lib/sealkit/data 700
var/lib/sealkit/guard-data 700
var/log/sealkit 750
var/log/sealkit-guard 750
MODES

    say "bundle import"
    sealed /usr/local/bin/sealkit bundle import "/kit/bundles/$SITE-v1.bundle.tar.zst" --site "$SITE" \
        2>"$R/import.log" || { cat "$R/import.log"; fail "bundle import failed"; }
    sealed /usr/local/bin/sealkit bundle status
    second=$("${install[@]}")
    grep -q "nothing to change" <<<"$second" || { echo "$second"; fail "install.sh after the import changed something"; }
    echo "install.sh after the import: nothing to change"

    say "the kit's default authority.yaml validates on this host"
    sealed /usr/local/bin/sealkit config check /usr/local/share/sealkit/authority.yaml

    say "sealkit serve (background), waiting for /ready"
    env -i PATH=/usr/bin:/bin HOME=/ "$CHROOT" "$R" /usr/local/bin/sealkit serve --config "$ROOT_CONFIG" \
        >"$R/serve.log" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + 60)) ready=
    while [ "$SECONDS" -lt "$deadline" ]; do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$R/serve.log"; fail "sealkit serve exited"; }
        if command -v curl >/dev/null; then
            if ready=$(curl -fsS --max-time 2 --cacert "$R/etc/sealkit/site-ca.crt" "$ISSUER/ready" 2>/dev/null); then
                break
            fi
        elif (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            ready="(port $PORT open)"
            break
        fi
        ready=
        sleep 0.2
    done
    [ -n "$ready" ] || { cat "$R/serve.log"; fail "no /ready within 60 s"; }
    echo "ready: $ready"

    say "drill run (verification matrix, bypass drill, audit log)"
    set +e
    sealed /usr/local/bin/sealkit drill run --env /kit/drill/drill.env --log-dir /var/log/sealkit \
        --bypass --config "$ROOT_CONFIG" --report /drill-junit.xml >"$R/drill-table.txt" 2>"$R/drill.err"
    rc=$?
    set -e
    DRILL_RC=$rc

    say "shutdown (SIGTERM)"
    kill -TERM "$SERVER_PID"
    deadline=$((SECONDS + 30))
    while kill -0 "$SERVER_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -9 "$SERVER_PID"
        fail "sealkit serve did not stop within 30 s of SIGTERM"
    fi
    set +e
    wait "$SERVER_PID"
    rc=$?
    set -e
    SERVER_PID=
    [ "$rc" -eq 0 ] || { tail -n 20 "$R/serve.log"; fail "sealkit serve exited $rc after SIGTERM"; }
    echo "sealkit serve exited 0"
    if grep -q "panicked" "$R/serve.log"; then fail "sealkit serve panicked (see $R/serve.log)"; fi

    say "drill table"
    cat "$R/drill-table.txt"
    [ ! -s "$R/drill.err" ] || cat "$R/drill.err"
    [ "$DRILL_RC" -eq 0 ] || fail "the drill failed (exit $DRILL_RC)"

    say "JUnit report: every matrix row"
    local junit="$R/drill-junit.xml" tests cases rows
    [ -s "$junit" ] || fail "no JUnit report at $junit"
    tests=$(sed -n 's/.*<testsuite [^>]*tests="\([0-9]*\)".*/\1/p' "$junit")
    cases=$(grep -c '<testcase ' "$junit")
    rows=$(awk '/^-+  -+/{on=1; next} /^drill against /{on=0} on' "$R/drill-table.txt" | wc -l)
    if [ "$tests" != "$cases" ] || [ "$cases" != "$rows" ]; then
        fail "the JUnit report has tests=$tests, $cases testcase(s); the table has $rows row(s)"
    fi
    grep -q 'failures="0"' "$junit" || fail "the JUnit report lists failures"
    local row
    for row in "${MATRIX_ROWS[@]}"; do
        grep -qF "name=\"$row\"" "$junit" || fail "the JUnit report lacks the row \"$row\""
        grep -qF "$row" "$R/drill-table.txt" || fail "the table lacks the row \"$row\""
    done
    if grep -q 'remote-skipped' "$junit"; then
        fail "rows were remote-skipped on the authority's own host (--log-dir not effective)"
    fi
    echo "$cases row(s), all $((${#MATRIX_ROWS[@]})) matrix rows present, 0 failures"
    cat >"$R/sealed-proof.txt" <<EOF
tamper_archive_rc=$TAMPER_ARCHIVE_RC
tamper_file_rc=$TAMPER_FILE_RC
sbom_sha256=$SBOM_SHA256
rows=$cases
skipped=$(grep -c '<skipped' "$junit" || true)
EOF
}

if [ "${1:-}" = --inside ]; then
    inside "$2"
    exit 0
fi

# ---------------------------------------------------------------------------------------
# Outside: the connected side and the harness.
cd "$(dirname "$0")/.."
REPO=$(pwd)
[ "$(id -u)" = 0 ] || fail "run as root (it uses a network namespace and chroot)"
# Install what a fresh machine may lack (as root, from Debian's packages).
for pair in unshare:util-linux ip:iproute2 chroot:coreutils file:file timeout:coreutils; do
    tool=${pair%%:*} package=${pair#*:}
    if ! command -v "$tool" >/dev/null; then
        echo "sealed-drill: installing $package (for $tool)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null; } \
            || fail "missing $tool (package $package)"
    fi
done

if [ -n "${SEALKIT_BIN:-}" ]; then
    BIN=$SEALKIT_BIN
else
    say "building the static binary (scripts/build-static.sh)"
    scripts/build-static.sh
    BIN="target/$TARGET/release/sealkit"
fi
[ -x "$BIN" ] || fail "no executable binary at $BIN"
[ -f "$BIN.cdx.json" ] || fail "no SBOM beside the binary ($BIN.cdx.json; scripts/build-static.sh writes it)"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

say "no dynamic libraries"
description=$(file -b "$BIN")
case "$description" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) fail "$BIN is not statically linked: $description" ;;
esac
ldd_out=$(ldd "$BIN" 2>&1 || true)
case "$ldd_out" in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) fail "ldd lists dynamic dependencies of $BIN: $ldd_out" ;;
esac
echo "file: $description"
echo "ldd:  $(echo "$ldd_out" | head -n 1 | sed 's/^[[:space:]]*//')"

WORK=$(mktemp -d /tmp/sealkit-sealed-drill.XXXXXX)
C=$WORK/connected
R=$WORK/root
mkdir -p "$C" "$R"
chmod 0755 "$WORK" "$R"
keep_on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "sealed-drill: work directory kept for inspection: $WORK" >&2
    fi
}
trap keep_on_exit EXIT
# The connected side also runs the binary alone, with a minimal environment.
sk() { env -i PATH=/usr/bin:/bin HOME="$C" "$BIN" "$@"; }

say "connected side: site CA, certificates, clients (sealkit demo --prepare-only)"
sk demo --prepare-only --dir "$C/demo" --listen "127.0.0.1:$PORT" >"$C/demo.out"
[ -f "$C/demo/demo.env" ] || fail "sealkit demo did not write demo.env"

say "connected side: the site bundle (host paths), signed"
mkdir -p "$C/site"
sed -e 's|^# sealkit demo site.*|# sealed-drill site: sealkit demo adapted to host paths by scripts/sealed-drill.sh|' \
    -e 's|^  certificate: tls/server.crt$|  certificate: /etc/sealkit/tls/server.crt|' \
    -e 's|^  privateKey: tls/server.key$|  privateKey: /etc/sealkit/tls/server.key|' \
    -e 's|^  clientCa: ca/root.crt$|  clientCa: /etc/sealkit/site-ca.crt|' \
    -e 's|^dataDir: data$|dataDir: /var/lib/sealkit/data|' \
    -e 's|^  directory: logs$|  directory: /var/log/sealkit|' \
    "$C/demo/authority.yaml" >"$C/site/authority.yaml"
# The demo's users file (people.users: users.yaml, argon2id hashes) travels in the bundle.
[ -f "$C/demo/users.yaml" ] && cp "$C/demo/users.yaml" "$C/site/users.yaml"
for line in "  certificate: /etc/sealkit/tls/server.crt" "  privateKey: /etc/sealkit/tls/server.key" \
    "  clientCa: /etc/sealkit/site-ca.crt" "dataDir: /var/lib/sealkit/data" "  directory: /var/log/sealkit" \
    "    senderConstraint: mtls" "    requireNonce: true" "    mayIntrospect: true"; do
    grep -qxF "$line" "$C/site/authority.yaml" || fail "the adapted authority.yaml lacks \"$line\" (did sealkit demo change?)"
done
mkdir -m 0700 "$C/keys"
sk bundle keygen --unencrypted --secret-key "$C/keys/bundle-signing.key" --public-key "$C/keys/bundle-signing.pub"
BUNDLE="$C/$SITE-v1.bundle.tar.zst"
sk bundle pack "$C/site" --site "$SITE" --version 1 --expires 7d -o "$BUNDLE"
sk bundle sign "$BUNDLE" --secret-key "$C/keys/bundle-signing.key"

say "connected side: host TLS files and drill credentials"
mkdir -p "$C/host-tls" "$C/drill"
cp "$C/demo/tls/server.crt" "$C/demo/tls/server.key" "$C/host-tls/"
chmod 0600 "$C/host-tls/server.key"
# kit/authority.yaml checks client certificates against /etc/sealkit/tls/site-ca.crl.
sk ca crl --dir "$C/demo/ca" --days 7 --out "$C/host-tls/site-ca.crl" >/dev/null
declare -A drill_paths=(
    [SEALKIT_CA_FILE]=/etc/sealkit/site-ca.crt
    [SEALKIT_CONFIG]=$ROOT_CONFIG
    [SEALKIT_LOG_DIR]=/var/log/sealkit
)
while IFS='=' read -r key value; do
    case "$key" in
        SEALKIT_MTLS_CERT | SEALKIT_MTLS_KEY | SEALKIT_OTHER_CERT | SEALKIT_OTHER_KEY)
            cp "$value" "$C/drill/"
            drill_paths[$key]=/kit/drill/$(basename "$value")
            ;;
    esac
done < <(grep -v '^#' "$C/demo/demo.env")
chmod 0600 "$C"/drill/*.key
(
    umask 077
    while IFS='=' read -r key value; do
        [ -n "$key" ] || continue
        case "$key" in '#'*) echo "$key${value:+=$value}"; continue ;; esac
        # The guard runs in front of the demo's echo upstream, which the sealed root does
        # not have: its rows are drilled by `sealkit demo` and tests/it/guard.rs instead.
        case "$key" in SEALKIT_GUARD_* | SEALKIT_RESOURCE_*) continue ;; esac
        echo "$key=${drill_paths[$key]:-$value}"
    done <"$C/demo/demo.env" >"$C/drill/drill.env"
)
if grep -q "$C" "$C/drill/drill.env"; then fail "drill.env still names connected-side paths"; fi

say "connected side: sealkit kit build"
KIT="$C/sealkit-kit.tar.zst"
sk kit build --out "$KIT" --binary "$BIN" --kit-dir "$REPO/kit" --bundle "$BUNDLE" \
    --secret-key "$C/keys/bundle-signing.key" --ca-cert "$C/demo/ca/root.crt" \
    --tls-dir "$C/host-tls" --drill-dir "$C/drill" | sed -n '1,4p'

say "the sealed root: only the binary, the kit and the signing public key"
cp "$BIN" "$R/sealkit"
cp "$KIT" "$R/sealkit-kit.tar.zst"
cp "$C/keys/bundle-signing.pub" "$R/bundle-signing.pub"
[ "$(root_listing "$R")" = "bundle-signing.pub sealkit sealkit-kit.tar.zst " ] \
    || fail "the root is not empty but for the binary, kit and key: $(root_listing "$R")"

unshare --net -- bash "$REPO/scripts/sealed-drill.sh" --inside "$R" \
    || fail "the sealed phase failed (root: $R)"

proof() { sed -n "s/^$1=//p" "$R/sealed-proof.txt"; }
if [ "${SEALED_DRILL_KEEP:-}" != 1 ]; then
    # Keep the reports and logs; drop the bulky copies.
    rm -rf "$C" "$R/sealkit" "$R/sealkit-kit.tar.zst" "$R/kit" "$R/usr/local/bin/sealkit"
fi
cat <<EOF

sealed drill: PASSED
  binary:    static ($description); ldd: not dynamic
  network:   namespace with loopback only; no default route; outbound connect unreachable
  files:     every sealkit command chrooted into $R (env -i), which began with only the
             binary, the kit and the signing public key
  SBOM:      sealkit.cdx.json in the kit, sha256 $(proof sbom_sha256), named by the binary
  kit:       tampered archive refused (exit $(proof tamper_archive_rc)), changed file in an unpacked
             kit refused (exit $(proof tamper_file_rc)), nothing extracted; install.sh idempotent
  drill:     $(proof rows) row(s), 0 failed, $(proof skipped) skipped; clean exit on SIGTERM
  JUnit:     $R/drill-junit.xml
  table:     $R/drill-table.txt
EOF
