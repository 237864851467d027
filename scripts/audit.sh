#!/usr/bin/env bash
# The offline dependency audit: `cargo deny check` (advisories, licenses, bans, sources;
# policy and every accepted advisory in deny.toml) against a local copy of the RustSec
# advisory database, never fetching it. Then a self-test: the same check against that copy
# plus one made-up advisory for a crate in Cargo.lock
# (tests/fixtures/audit/RUSTSEC-2099-0001.md) must FAIL and name it, or the audit could not
# catch a real advisory.
#
#   scripts/audit.sh [DB_DIR]
#
# The database, first found of: DB_DIR, $SEALKIT_ADVISORY_DB, ../shared/advisory-db beside
# the checkout (CI has the project's shared/ there; see ../shared/advisory-db.SNAPSHOT). It is
# a plain copy of the files of github.com/rustsec/advisory-db; cargo-deny wants a git
# repository, so a scratch copy is committed once, dated as the snapshot, and cargo-deny
# reads it offline (its staleness limit, deny.toml, counts from that date).
# No database: exit 1 saying where to put one. To audit with a newer copy, replace the
# folder (or pass its path); nothing else changes.
#
# cargo-deny (version pinned below) is installed with `cargo install --locked` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)
DENY_VERSION=0.20.2
# Where cargo-deny looks for the database of
# db-urls = ["https://github.com/rustsec/advisory-db"] under db-path (its own naming:
# <last URL segment>-<hash of the URL>, stable for the pinned version).
DB_DIR_NAME=advisory-db-3157b0e258782691
FIXTURE=tests/fixtures/audit/RUSTSEC-2099-0001.md
FIXTURE_ID=RUSTSEC-2099-0001
FIXTURE_CRATE=subtle

say() { printf '== audit: %s\n' "$*"; }
fail() {
    printf 'audit: FAILED: %s\n' "$*" >&2
    exit 1
}

if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $DENY_VERSION" ]; then
    say "installing cargo-deny $DENY_VERSION (cargo install --locked)"
    started=$SECONDS
    cargo install --locked --quiet "cargo-deny@$DENY_VERSION"
    say "cargo-deny installed in $((SECONDS - started)) s"
fi

# --- the database ---------------------------------------------------------------------------
source_db=${1:-${SEALKIT_ADVISORY_DB:-$REPO/../shared/advisory-db}}
if [ ! -d "$source_db/crates" ]; then
    fail "no RustSec advisory database at $source_db (a copy of github.com/rustsec/advisory-db with its crates/ folder).
  Put one there, or give its path: scripts/audit.sh DIR, or SEALKIT_ADVISORY_DB=DIR.
  The audit does not fetch it and does not run without it."
fi
source_db=$(cd "$source_db" && pwd -P)
snapshot="$source_db.SNAPSHOT"
db_date=
if [ -f "$snapshot" ]; then
    db_date=$(grep -oE 'dated [0-9]{4}-[0-9]{2}-[0-9]{2}' "$snapshot" | head -n 1 | cut -d' ' -f2 || true)
    db_commit=$(grep -oE 'commit [0-9a-f]{40}' "$snapshot" | head -n 1 | cut -d' ' -f2 || true)
fi
if [ -z "$db_date" ]; then
    # No snapshot note: date it by its newest advisory.
    db_date=$(grep -rhoE '^date = "[0-9]{4}-[0-9]{2}-[0-9]{2}"' "$source_db/crates" | cut -d'"' -f2 | sort | tail -n 1)
fi
advisories=$(find "$source_db/crates" -name 'RUSTSEC-*.md' | wc -l)
age_days=$((($(date -u +%s) - $(date -u -d "$db_date" +%s)) / 86400))
say "RustSec database: $source_db (${db_commit:-commit unknown}, dated $db_date, $age_days day(s) old, $advisories crate advisories)"

scratch=$(mktemp -d /tmp/sealkit-audit.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
# A git repository of the copy, committed once and dated as the snapshot.
make_db() {
    local root=$1 repo=$1/$DB_DIR_NAME
    mkdir -p "$repo"
    cp -R "$source_db/." "$repo/"
    chmod -R u+w "$repo"
    if [ -n "${2:-}" ]; then
        mkdir -p "$repo/crates/$FIXTURE_CRATE"
        cp "$2" "$repo/crates/$FIXTURE_CRATE/$(basename "$2")"
    fi
    local when="${db_date}T00:00:00Z"
    (
        cd "$repo"
        rm -rf .git
        git init -q -b main .
        git add -A
        GIT_AUTHOR_NAME=sealkit-audit GIT_AUTHOR_EMAIL=audit@sealkit.invalid GIT_AUTHOR_DATE=$when \
            GIT_COMMITTER_NAME=sealkit-audit GIT_COMMITTER_EMAIL=audit@sealkit.invalid GIT_COMMITTER_DATE=$when \
            git -c commit.gpgsign=false commit -q -m "RustSec advisory database snapshot ${db_commit:-} ($db_date)"
        # cargo-deny dates an unfetched repository by max(HEAD commit, mtime of .git/HEAD).
        touch -d "$when" .git/HEAD
    )
}
deny() {
    # db-path in deny.toml is ${SEALKIT_ADVISORY_DBS}. --offline: no database fetch, no
    # network for cargo either (the crates were fetched just before).
    SEALKIT_ADVISORY_DBS=$1 cargo deny --locked --offline --color never check "${@:2}"
}

# --- the audit --------------------------------------------------------------------------------
# Every crate of Cargo.lock, for every platform, so that the check itself can run offline.
cargo fetch --locked --quiet
make_db "$scratch/real"
say "cargo deny --offline check (advisories, bans, licenses, sources): the database is not fetched"
started=$SECONDS
deny "$scratch/real" --show-stats 2>&1 | tee "$scratch/real.log" || {
    fail "cargo deny check found problems (above); fix them or, for an advisory with no fix, add it to deny.toml's ignore list with its reason and plan"
}
say "passed in $((SECONDS - started)) s"
say "accepted advisories (deny.toml, each with its reason and plan there):"
grep -oE '\{ id = "RUSTSEC-[0-9]{4}-[0-9]{4}", reason = "[^"]*"' deny.toml | sed -E 's/\{ id = "([^"]*)", reason = "([^"]*)"/    \1  \2/'

# --- self-test: a made-up advisory must make it fail ------------------------------------------
grep -q "^name = \"$FIXTURE_CRATE\"$" Cargo.lock || fail "$FIXTURE_CRATE is no longer in Cargo.lock; point the self-test at another crate"
make_db "$scratch/control" "$FIXTURE"
say "self-test: the same check with a made-up advisory ($FIXTURE_ID against $FIXTURE_CRATE) must fail"
set +e
deny "$scratch/control" advisories >"$scratch/control.log" 2>&1
rc=$?
set -e
grep -E "$FIXTURE_ID|^error|advisories (FAILED|ok)" "$scratch/control.log" | head -n 8 | sed 's/^/    /'
[ "$rc" -ne 0 ] || fail "cargo deny passed with the made-up advisory $FIXTURE_ID in the database: the audit cannot fail"
grep -q "$FIXTURE_ID" "$scratch/control.log" || { cat "$scratch/control.log"; fail "cargo deny failed (exit $rc) but not on $FIXTURE_ID"; }
say "self-test: cargo deny exited $rc on $FIXTURE_ID, as it must"
say "PASSED"
