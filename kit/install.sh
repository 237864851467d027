#!/bin/sh
# sealkit offline-kit installer. Run it from an unpacked, VERIFIED kit:
#
#   sealkit kit verify sealkit-kit.tar.zst --trusted-keys bundle-signing.pub --extract kit
#   sh kit/install.sh
#
# It installs (and only changes what differs; running it twice changes nothing):
#   $PREFIX/bin/sealkit                         the binary (0755)
#   user and group `sealkit`                    when missing (system account, no login)
#   /etc/sealkit                      0750      root:sealkit
#   /etc/sealkit/site-ca.crt          0644      the site CA certificate (trust/site-ca.crt)
#   /etc/sealkit/tls/*                0640/0644 host TLS files carried in the kit (tls/)
#   /var/lib/sealkit                  0700      sealkit:sealkit
#   /var/lib/sealkit/bundles          0700      the bundle root (trusted-keys/ pinned from
#                                               trust/keys/*.pub on the first install)
#   /var/lib/sealkit/data             0700      store, signing key, control socket
#   /var/lib/sealkit/guard-data       0700      the guard's store and cached JWKS
#   /var/log/sealkit                  0750      sealkit:sealkit
#   /var/log/sealkit-guard            0750      sealkit:sealkit (the guard's logs)
#   /etc/systemd/system/sealkit.service         the hardened unit
#   /etc/systemd/system/sealkit-guard.service   the guard's hardened unit
#   $PREFIX/share/sealkit/                      README.md, default authority.yaml, prometheus/,
#                                               sealkit.cdx.json (the binary's SBOM),
#                                               runbooks/ (what the alerts point to)
#   $PREFIX/share/man/man1/sealkit*.1           man pages (`sealkit man`)
#   $PREFIX/share/bash-completion/completions/sealkit, zsh/site-functions/_sealkit,
#   fish/vendor_completions.d/sealkit.fish      shell completions (`sealkit completions`)
#
# It does not import bundles, enable or start the authority: see the next steps it prints.
# The guard (sealkit-guard.service) stays disabled unless the active bundle carries a
# guard.yaml: then the run that first installs its unit enables it (does not start it);
# otherwise the steps to enable it are printed. A guard unit the operator disabled is left
# disabled.
#
# Environment:
#   DESTDIR   install into this root instead of / (no accounts, no ownership, no systemctl);
#             used to stage and test an installation unprivileged
#   PREFIX    where the binary and shared files go (default /usr/local)
set -eu

KIT_DIR=$(cd "$(dirname "$0")" && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
case "$PREFIX" in
    /*) ;;
    *) echo "install: PREFIX must be an absolute path (got $PREFIX)" >&2; exit 2 ;;
esac
if [ -n "$DESTDIR" ]; then
    case "$DESTDIR" in
        /*) DESTDIR=${DESTDIR%/} ;;
        *) DESTDIR=$(cd "$DESTDIR" 2>/dev/null && pwd) || { echo "install: DESTDIR $DESTDIR does not exist" >&2; exit 2; } ;;
    esac
fi

ETC=$DESTDIR/etc/sealkit
STATE=$DESTDIR/var/lib/sealkit
BUNDLES=$STATE/bundles
DATA=$STATE/data
GUARD_DATA=$STATE/guard-data
LOGS=$DESTDIR/var/log/sealkit
GUARD_LOGS=$DESTDIR/var/log/sealkit-guard
UNIT_DIR=$DESTDIR/etc/systemd/system
BIN_DIR=$DESTDIR$PREFIX/bin
SHARE=$DESTDIR$PREFIX/share/sealkit

changed=0
unchanged=0
say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

# Accounts and ownership only for a real installation as root.
if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ]; then
    privileged=yes
else
    privileged=no
fi

[ -f "$KIT_DIR/sealkit" ] || die "$KIT_DIR/sealkit is missing: run this from an unpacked kit"

# Integrity of the unpacked kit (authenticity was established by `sealkit kit verify`).
if command -v sha256sum >/dev/null 2>&1 && [ -f "$KIT_DIR/SHA256SUMS" ]; then
    (cd "$KIT_DIR" && sha256sum -c SHA256SUMS) >/dev/null 2>&1 \
        || die "the kit's files do not match its SHA256SUMS: re-run sealkit kit verify and unpack it again"
fi

# --- helpers -------------------------------------------------------------------------------

mode_of() { stat -c %a "$1"; }
owner_of() { stat -c %U:%G "$1"; }

# ensure_owner PATH OWNER:GROUP
ensure_owner() {
    [ "$privileged" = yes ] || return 0
    if [ "$(owner_of "$1")" != "$2" ]; then
        chown "$2" "$1"
        changed=$((changed + 1))
        say "owner of $1 set to $2"
    fi
}

# ensure_dir PATH MODE OWNER:GROUP
ensure_dir() {
    if [ ! -d "$1" ]; then
        mkdir -p "$1"
        chmod "$2" "$1"
        changed=$((changed + 1))
        say "created $1 ($2)"
    elif [ "$(mode_of "$1")" != "${2#0}" ]; then
        chmod "$2" "$1"
        changed=$((changed + 1))
        say "mode of $1 set to $2"
    else
        unchanged=$((unchanged + 1))
    fi
    ensure_owner "$1" "$3"
}

# ensure_system_dir PATH — a directory the system owns (/usr/local/bin, …): created when
# missing, otherwise left exactly as it is
ensure_system_dir() {
    if [ ! -d "$1" ]; then
        mkdir -p "$1"
        chmod 0755 "$1"
        changed=$((changed + 1))
        say "created $1"
    fi
}

# put_file SOURCE DEST MODE OWNER:GROUP — replaces DEST only when its content differs
put_file() {
    if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2"; then
        if [ "$(mode_of "$2")" != "${3#0}" ]; then
            chmod "$3" "$2"
            changed=$((changed + 1))
            say "mode of $2 set to $3"
        else
            unchanged=$((unchanged + 1))
        fi
    else
        tmp="$2.install-$$"
        rm -f "$tmp"
        cp "$1" "$tmp"
        chmod "$3" "$tmp"
        if [ "$privileged" = yes ]; then chown "$4" "$tmp"; fi
        if [ -e "$2" ]; then verb=updated; else verb=installed; fi
        mv -f "$tmp" "$2"
        changed=$((changed + 1))
        say "$verb $2 ($3)"
    fi
    ensure_owner "$2" "$4"
}

# --- the sealkit account -------------------------------------------------------------------

if [ "$privileged" = yes ]; then
    if ! getent group sealkit >/dev/null 2>&1; then
        if command -v groupadd >/dev/null 2>&1; then
            groupadd --system sealkit
        else
            addgroup -S sealkit
        fi
        changed=$((changed + 1))
        say "created group sealkit"
    fi
    if ! getent passwd sealkit >/dev/null 2>&1; then
        nologin=/usr/sbin/nologin
        [ -x "$nologin" ] || nologin=/sbin/nologin
        [ -x "$nologin" ] || nologin=/bin/false
        if command -v useradd >/dev/null 2>&1; then
            useradd --system --gid sealkit --home-dir /var/lib/sealkit --no-create-home \
                --shell "$nologin" --comment "sealkit authority" sealkit
        else
            adduser -S -D -H -G sealkit -h /var/lib/sealkit -s "$nologin" sealkit
        fi
        changed=$((changed + 1))
        say "created user sealkit"
    fi
elif [ -n "$DESTDIR" ]; then
    say "note: DESTDIR is set: no sealkit user/group, no ownership changes, no systemctl"
else
    say "note: not root: no sealkit user/group and no ownership changes (run as root for a real installation)"
fi

# --- directories ---------------------------------------------------------------------------

ensure_system_dir "$BIN_DIR"
ensure_system_dir "$UNIT_DIR"
ensure_dir "$SHARE" 0755 root:root
ensure_dir "$SHARE/prometheus" 0755 root:root
if [ -d "$KIT_DIR/runbooks" ]; then
    ensure_dir "$SHARE/runbooks" 0755 root:root
fi
ensure_dir "$ETC" 0750 root:sealkit
ensure_dir "$ETC/tls" 0750 root:sealkit
ensure_dir "$STATE" 0700 sealkit:sealkit
ensure_dir "$BUNDLES" 0700 sealkit:sealkit
ensure_dir "$BUNDLES/trusted-keys" 0755 root:root
ensure_dir "$DATA" 0700 sealkit:sealkit
ensure_dir "$GUARD_DATA" 0700 sealkit:sealkit
ensure_dir "$LOGS" 0750 sealkit:sealkit
ensure_dir "$GUARD_LOGS" 0750 sealkit:sealkit

# --- files ---------------------------------------------------------------------------------

put_file "$KIT_DIR/sealkit" "$BIN_DIR/sealkit" 0755 root:root

if [ -f "$KIT_DIR/trust/site-ca.crt" ]; then
    put_file "$KIT_DIR/trust/site-ca.crt" "$ETC/site-ca.crt" 0644 root:sealkit
fi
if [ -d "$KIT_DIR/tls" ]; then
    for f in "$KIT_DIR"/tls/*; do
        [ -f "$f" ] || continue
        case "$f" in
            *.key) put_file "$f" "$ETC/tls/$(basename "$f")" 0640 root:sealkit ;;
            *) put_file "$f" "$ETC/tls/$(basename "$f")" 0644 root:sealkit ;;
        esac
    done
fi

# The units name the binary; follow PREFIX.
# put_unit NAME — installs $KIT_DIR/NAME as $UNIT_DIR/NAME
put_unit() {
    unit_src="$KIT_DIR/$1"
    unit_tmp=
    if [ "$PREFIX" != /usr/local ]; then
        unit_tmp=$(mktemp)
        sed "s|/usr/local/|$PREFIX/|g" "$unit_src" >"$unit_tmp"
        unit_src=$unit_tmp
    fi
    put_file "$unit_src" "$UNIT_DIR/$1" 0644 root:root
    [ -z "$unit_tmp" ] || rm -f "$unit_tmp"
}
before=$changed
put_unit sealkit.service
if [ -e "$UNIT_DIR/sealkit-guard.service" ]; then guard_unit_new=no; else guard_unit_new=yes; fi
put_unit sealkit-guard.service
unit_changed=$((changed - before))

put_file "$KIT_DIR/authority.yaml" "$SHARE/authority.yaml" 0644 root:root
put_file "$KIT_DIR/README.md" "$SHARE/README.md" 0644 root:root
put_file "$KIT_DIR/sealkit.cdx.json" "$SHARE/sealkit.cdx.json" 0644 root:root
for f in "$KIT_DIR"/prometheus/*; do
    [ -f "$f" ] || continue
    put_file "$f" "$SHARE/prometheus/$(basename "$f")" 0644 root:root
done
if [ -d "$KIT_DIR/runbooks" ]; then
    for f in "$KIT_DIR"/runbooks/*; do
        [ -f "$f" ] || continue
        put_file "$f" "$SHARE/runbooks/$(basename "$f")" 0644 root:root
    done
fi

# Man pages and shell completions, made by the binary from its own command tree.
DOCS_TMP=$(mktemp -d)
"$KIT_DIR/sealkit" man "$DOCS_TMP/man1"
"$KIT_DIR/sealkit" completions bash >"$DOCS_TMP/sealkit.bash"
"$KIT_DIR/sealkit" completions zsh >"$DOCS_TMP/_sealkit"
"$KIT_DIR/sealkit" completions fish >"$DOCS_TMP/sealkit.fish"
MAN1=$DESTDIR$PREFIX/share/man/man1
ensure_system_dir "$MAN1"
for f in "$DOCS_TMP"/man1/*.1; do
    put_file "$f" "$MAN1/$(basename "$f")" 0644 root:root
done
for d in bash-completion/completions zsh/site-functions fish/vendor_completions.d; do
    ensure_system_dir "$DESTDIR$PREFIX/share/$d"
done
put_file "$DOCS_TMP/sealkit.bash" "$DESTDIR$PREFIX/share/bash-completion/completions/sealkit" 0644 root:root
put_file "$DOCS_TMP/_sealkit" "$DESTDIR$PREFIX/share/zsh/site-functions/_sealkit" 0644 root:root
put_file "$DOCS_TMP/sealkit.fish" "$DESTDIR$PREFIX/share/fish/vendor_completions.d/sealkit.fish" 0644 root:root
rm -rf "$DOCS_TMP"

# --- trust roots: bundle signing keys ------------------------------------------------------
# Pinned on the FIRST installation only. Afterwards the trusted set belongs to the bundles
# (a key-rotation bundle retires keys): re-pinning a kit's key would undo a retirement.
pinned=$(find "$BUNDLES/trusted-keys" -maxdepth 1 -name '*.pub' -type f | wc -l)
if [ "$pinned" -eq 0 ]; then
    found=no
    for key in "$KIT_DIR"/trust/keys/*.pub; do
        [ -f "$key" ] || continue
        found=yes
        out=$("$BIN_DIR/sealkit" bundle trust add "$key" --root "$BUNDLES" 2>&1) \
            || die "cannot pin $key: $out"
        changed=$((changed + 1))
        say "pinned bundle signing key $(basename "$key" .pub)"
    done
    [ "$found" = yes ] || say "WARNING: the kit carries no trust/keys/*.pub: pin a key with sealkit bundle trust add before importing"
else
    for key in "$KIT_DIR"/trust/keys/*.pub; do
        [ -f "$key" ] || continue
        if [ ! -f "$BUNDLES/trusted-keys/$(basename "$key")" ]; then
            say "note: not pinning $(basename "$key" .pub): this host already trusts $pinned key(s), managed by bundles since; pin it deliberately with: sealkit bundle trust add $key"
        fi
    done
fi

# --- systemd -------------------------------------------------------------------------------

if [ "$privileged" = yes ] && [ "$unit_changed" -gt 0 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemctl daemon-reload"
fi

# The guard runs where the bundle configures one. Enabled (not started) only by the run that
# installs its unit, so that a later run never undoes an operator's `systemctl disable`.
guard_hint=no
if [ -f "$BUNDLES/current/guard.yaml" ]; then
    guard_enabled=unknown
    if [ "$privileged" = yes ] && [ -d /run/systemd/system ]; then
        if systemctl is-enabled --quiet sealkit-guard.service 2>/dev/null; then
            guard_enabled=yes
        elif [ "$guard_unit_new" = yes ]; then
            systemctl enable sealkit-guard.service >/dev/null 2>&1 \
                || die "cannot enable sealkit-guard.service"
            guard_enabled=yes
            changed=$((changed + 1))
            say "enabled sealkit-guard.service: the bundle carries guard.yaml (start it: systemctl start sealkit-guard)"
        else
            guard_enabled=no
        fi
    fi
    [ "$guard_enabled" = yes ] || guard_hint=yes
fi

# --- done ----------------------------------------------------------------------------------

if [ "$changed" -eq 0 ]; then
    say "nothing to change: the installation matches the kit ($unchanged item(s) checked)"
else
    say "done: $changed change(s), $unchanged item(s) already in place"
fi
if [ ! -e "$BUNDLES/current" ]; then
    bundle_hint=$(find "$KIT_DIR/bundles" -maxdepth 1 -name '*.bundle.tar.zst' 2>/dev/null | head -n 1)
    echo "Next steps${DESTDIR:+ (on the installed host; paths below are inside $DESTDIR)}:"
    step=1
    if [ ! -f "$ETC/tls/server.crt" ] || [ ! -f "$ETC/tls/server.key" ]; then
        echo "  $step. Put the host's server.crt and server.key (0640 root:sealkit) into /etc/sealkit/tls"
        echo "     (the kit carried none; docs/runbooks/ca.md: a CSR made on this host)."
        step=$((step + 1))
    fi
    echo "  $step. Import the site's bundle:"
    echo "       $PREFIX/bin/sealkit bundle import ${bundle_hint:-<site>-v<n>.bundle.tar.zst} --site <site>"
    echo "  $((step + 1)). systemctl enable --now sealkit && $PREFIX/bin/sealkit bundle status"
    echo "  $((step + 2)). Drill it: $PREFIX/bin/sealkit drill run ... (docs/runbooks/run-drill.md)"
    echo "  $((step + 3)). If the bundle carries guard.yaml (a resource guard on this host):"
    echo "       systemctl enable --now sealkit-guard (docs/runbooks/guard.md)"
elif [ "$guard_hint" = yes ]; then
    echo "note: the active bundle carries guard.yaml and sealkit-guard is not enabled${DESTDIR:+ (not checked: DESTDIR)}; if this host guards resources:"
    echo "       systemctl enable --now sealkit-guard (docs/runbooks/guard.md)"
fi
