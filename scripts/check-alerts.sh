#!/usr/bin/env bash
# Checks sealkit's Prometheus alert rules. Every rule file kit/prometheus/NAME.yaml (today
# authority-alerts.yaml and guard-alerts.yaml) must come with its unit tests in
# kit/prometheus/NAME.test.yaml. For each pair: `promtool check rules` on the rule file;
# a coverage check (every alert of the file has a test case where it fires and one where
# it must not, the tests name no alert the file lacks, and every `runbook:` annotation
# names a file of this repository and, after `#`, one of its headings); `promtool test
# rules` on the tests, one test group at a time. Then it prints
#   alert rules: N passed, M failed
# (N and M count test groups, plus one coverage check per rule file, plus the metrics check
# with --metrics). Installs promtool (Debian package `prometheus`) when it is missing and
# this runs as root. Exits non-zero on any failure.
#
#   scripts/check-alerts.sh                   # rules + unit tests
#   scripts/check-alerts.sh --metrics FILE    # also lint a /metrics exposition (FILE or -)
#
# PROMTOOL=/path/to/promtool overrides the promtool found on PATH.
#
# --metrics: sealkit serves OpenMetrics text (prometheus-client); promtool 2.42 lints it
# with the classic text parser, which reports every counter as "<name>_total no help
# text". That one artefact is shown as a note; parse errors and any other finding fail.
set -euo pipefail

rules_dir=kit/prometheus

usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

metrics_file=
while [ $# -gt 0 ]; do
    case "$1" in
        --metrics)
            [ $# -ge 2 ] || { echo "check-alerts: --metrics needs a FILE (or - for stdin)" >&2; exit 2; }
            metrics_file=$2
            shift 2
            ;;
        --metrics=*)
            metrics_file=${1#--metrics=}
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "check-alerts: unknown argument: $1" >&2
            usage >&2
            exit 2
            ;;
    esac
done

# Resolve the metrics file against the caller's directory before moving to the repo root.
if [ -n "$metrics_file" ] && [ "$metrics_file" != - ]; then
    [ -f "$metrics_file" ] || { echo "check-alerts: no such metrics file: $metrics_file" >&2; exit 2; }
    metrics_file=$(cd "$(dirname "$metrics_file")" && pwd)/$(basename "$metrics_file")
fi
# Read stdin now (before anything else could consume it).
metrics_tmp=
if [ "$metrics_file" = - ]; then
    metrics_tmp=$(mktemp)
    trap 'rm -f "$metrics_tmp"' EXIT
    cat >"$metrics_tmp"
    metrics_file=$metrics_tmp
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- promtool ------------------------------------------------------------------------------
promtool_unavailable() {
    echo "check-alerts: promtool is unavailable: $1" >&2
    echo "check-alerts: install the Debian package 'prometheus' (it provides /usr/bin/promtool) or set PROMTOOL=/path/to/promtool" >&2
    exit 1
}

promtool=${PROMTOOL:-}
if [ -z "$promtool" ]; then
    if command -v promtool >/dev/null 2>&1; then
        promtool=$(command -v promtool)
    else
        [ "$(id -u)" = 0 ] || promtool_unavailable "it is not on PATH and installing it needs root"
        command -v apt-get >/dev/null 2>&1 || promtool_unavailable "it is not on PATH and there is no apt-get"
        echo "check-alerts: promtool not found; installing the Debian package 'prometheus'"
        if ! apt-get update -qq; then
            promtool_unavailable "apt-get update failed (no reachable package mirror?)"
        fi
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
            promtool_unavailable "apt-get could not install the 'prometheus' package"
        fi
        command -v promtool >/dev/null 2>&1 || promtool_unavailable "the 'prometheus' package did not provide promtool"
        promtool=$(command -v promtool)
    fi
fi
[ -x "$promtool" ] || promtool_unavailable "$promtool is not executable"
echo "check-alerts: using $("$promtool" --version 2>&1 | head -n 1) ($promtool)"

# --- rule files and their tests -------------------------------------------------------------
# Every NAME.yaml needs NAME.test.yaml, and every test file its rule file: a rule file
# without tests (or tests left behind by a removed rule file) fails here.
rule_files=()
for file in "$rules_dir"/*.yaml; do
    case $file in
        *.test.yaml)
            [ -f "${file%.test.yaml}.yaml" ] || {
                echo "check-alerts: $file has no rule file ${file%.test.yaml}.yaml" >&2
                exit 1
            }
            ;;
        *)
            [ -f "${file%.yaml}.test.yaml" ] || {
                echo "check-alerts: $file has no unit tests (${file%.yaml}.test.yaml)" >&2
                exit 1
            }
            rule_files+=("$file")
            ;;
    esac
done
[ "${#rule_files[@]}" -gt 0 ] || { echo "check-alerts: no rule files in $rules_dir" >&2; exit 1; }

# --- rules ------------------------------------------------------------------------------------
for rules in "${rule_files[@]}"; do
    echo "== promtool check rules $rules"
    if ! "$promtool" check rules "$rules"; then
        echo "check-alerts: promtool check rules failed on $rules; not running the unit tests" >&2
        exit 1
    fi
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch" ${metrics_tmp:+"$metrics_tmp"}' EXIT
passed=0
failed=0

# --- coverage: a firing and a silent case for every alert ---------------------------------------
# promtool passes a test that expects `exp_alerts: []` of an alert name that does not exist
# (a typo) and says nothing about alerts no test mentions; this closes both gaps. It reads
# the test file's layout: an `alertname: X` line, then its `exp_alerts:` line, which is
# `exp_alerts: []` for a silent case.
coverage() { # RULES TESTS
    awk '
        FNR == 1 { file++ }
        file == 1 && /^[[:space:]]*- alert:/ {
            name = $0; sub(/^[[:space:]]*- alert:[[:space:]]*/, "", name); sub(/[[:space:]]+$/, "", name)
            alerts[name] = 1; order[++n] = name
        }
        file == 2 && /^[[:space:]]*alertname:/ {
            current = $0; sub(/^[[:space:]]*alertname:[[:space:]]*/, "", current); sub(/[[:space:]]+$/, "", current)
            tested[current] = 1
        }
        file == 2 && /^[[:space:]]*exp_alerts:/ {
            if ($0 ~ /exp_alerts:[[:space:]]*\[[[:space:]]*\][[:space:]]*$/) silent[current] = 1
            else fires[current] = 1
        }
        END {
            bad = 0
            for (i = 1; i <= n; i++) {
                a = order[i]
                if (!fires[a]) { print "    " a ": no test case where it fires"; bad++ }
                if (!silent[a]) { print "    " a ": no test case where it must stay silent"; bad++ }
            }
            for (a in tested) if (!alerts[a]) { print "    " a ": tested, but the rule file has no such alert"; bad++ }
            if (n == 0) { print "    no alerts found"; bad++ }
            exit (bad > 0 ? 1 : 0)
        }
    ' "$1" "$2"
}

# Every `runbook:` annotation names an existing file, and its `#anchor` (if any) a heading
# of that file (GitHub's anchor: lower case, punctuation dropped, spaces to hyphens).
runbooks_exist() { # RULES
    local bad=0 runbook doc anchor
    while read -r runbook; do
        [ -n "$runbook" ] || continue
        doc=${runbook%%#*}
        if [ ! -f "$doc" ]; then
            echo "    runbook $runbook: no such file $doc"
            bad=$((bad + 1))
            continue
        fi
        [ "$doc" != "$runbook" ] || continue
        anchor=${runbook#*#}
        if ! sed -n 's/^#\{1,6\} \{1,\}//p' "$doc" | tr '[:upper:]' '[:lower:]' |
            sed -e 's/[^a-z0-9 _-]//g' -e 's/ /-/g' | grep -qxF -- "$anchor"; then
            echo "    runbook $runbook: $doc has no heading with the anchor #$anchor"
            bad=$((bad + 1))
        fi
    done < <(sed -n "s/^[[:space:]]*runbook:[[:space:]]*//p" "$1" | tr -d "\"'" | sort -u)
    [ "$bad" = 0 ]
}

# --- unit tests, one group at a time --------------------------------------------------------
# promtool 2.42 (Debian 12) cannot select test groups, so each test file is split into one
# file per group (its header -- rule_files, evaluation_interval -- plus that group) in a
# scratch directory next to a link to the rule file, and each is run on its own. The split
# relies on the test file's layout: top-level keys at column 0, each group starting with a
# `  - name: ...` line.
for rules in "${rule_files[@]}"; do
    tests=${rules%.yaml}.test.yaml
    stem=$(basename "${rules%.yaml}")

    echo "== coverage of $tests"
    if out=$(coverage "$rules" "$tests" && runbooks_exist "$rules"); then
        passed=$((passed + 1))
        echo "  ok    every alert of $rules fires in one test case and stays silent in another; its runbooks exist"
    else
        failed=$((failed + 1))
        echo "  FAIL  coverage of $rules"
        printf '%s\n' "$out" >&2
    fi

    echo "== promtool test rules $tests"
    "$promtool" test rules "$tests" && all_ok=1 || all_ok=0

    dir=$scratch/$stem
    mkdir "$dir"
    ln -s "$PWD/$rules" "$dir/$(basename "$rules")"
    awk -v dir="$dir" '
        BEGIN { n = 0; in_tests = 0; header = "" }
        !in_tests { header = header $0 "\n"; if ($0 ~ /^tests:/) in_tests = 1; next }
        /^  - name:/ {
            n++; out = sprintf("%s/group-%03d.yaml", dir, n)
            name = $0; sub(/^  - name: */, "", name); gsub(/^["\047]|["\047] *$/, "", name)
            print name > (dir "/names")
            printf "%s", header > out
        }
        n > 0 { print > out }
    ' "$tests"
    [ -s "$dir/names" ] || { echo "check-alerts: no test groups (\`  - name:\` lines) found in $tests" >&2; exit 1; }
    mapfile -t group_names <"$dir/names"

    file_failed=0
    for i in "${!group_names[@]}"; do
        file=$(printf '%s/group-%03d.yaml' "$dir" $((i + 1)))
        if out=$("$promtool" test rules "$file" 2>&1); then
            passed=$((passed + 1))
            echo "  ok    ${group_names[$i]}"
        else
            failed=$((failed + 1))
            file_failed=$((file_failed + 1))
            echo "  FAIL  ${group_names[$i]}"
            printf '%s\n' "$out" | sed 's/^/        /' >&2
        fi
    done
    # The whole-file run must agree with the per-group runs (a group the split missed, or a
    # header problem, shows up here).
    if [ "$all_ok" = 0 ] && [ "$file_failed" = 0 ]; then
        echo "check-alerts: the whole of $tests failed although every test group passed on its own" >&2
        failed=$((failed + 1))
    fi
done

# --- optional: a live /metrics exposition ---------------------------------------------------
# promtool (2.42) lints with the classic Prometheus text parser. sealkit's OpenMetrics text
# puts `# HELP x` / `# TYPE x counter` on the family name while the samples are `x_total`
# (and would be `x_created`); the classic parser does not tie those samples to the family
# and reports "x_total no help text" (exit status 3). `# EOF` and `# UNIT` are read as
# comments. So: exit 1 (a parse error) fails; of the lint findings (exit 3), exactly that
# artefact -- "<family>_total|_created no help text" for a family that has a HELP line and
# is a counter/histogram/summary -- is reported as a note, and any other finding fails.
metrics_ok=1
if [ -n "$metrics_file" ]; then
    shown=${metrics_tmp:+stdin}
    echo "== promtool check metrics < ${shown:-$metrics_file}"
    if ! grep -qv '^#' "$metrics_file"; then
        echo "check-alerts: the metrics exposition has no samples (empty scrape?)" >&2
        metrics_ok=0
    else
        lint_rc=0
        lint=$("$promtool" check metrics <"$metrics_file" 2>&1) || lint_rc=$?
        case $lint_rc in
            0) echo "  no problems" ;;
            3)
                notes=0
                problems=0
                while IFS= read -r line; do
                    [ -n "$line" ] || continue
                    name=${line%% *}
                    family=
                    case $name in
                        *_total) family=${name%_total} ;;
                        *_created) family=${name%_created} ;;
                    esac
                    if [ "${line#* }" = "no help text" ] && [ -n "$family" ] &&
                        grep -Eq "^# TYPE $family (counter|histogram|summary)\$" "$metrics_file" &&
                        grep -q "^# HELP $family " "$metrics_file"; then
                        notes=$((notes + 1))
                        echo "  note: promtool: $line (OpenMetrics: HELP/TYPE are on family $family)"
                    else
                        problems=$((problems + 1))
                        echo "  problem: promtool: $line" >&2
                    fi
                done <<<"$lint"
                if [ "$problems" -gt 0 ]; then
                    metrics_ok=0
                    echo "check-alerts: promtool check metrics: $problems problem(s)" >&2
                else
                    echo "  no problems ($notes OpenMetrics naming note(s), see above)"
                fi
                ;;
            *)
                metrics_ok=0
                printf '%s\n' "$lint" >&2
                echo "check-alerts: promtool check metrics failed (exit status $lint_rc)" >&2
                ;;
        esac
    fi
fi

# The metrics check, when asked for, counts as one more check in the summary.
if [ -n "$metrics_file" ]; then
    if [ "$metrics_ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi
echo "alert rules: $passed passed, $failed failed"
[ "$failed" = 0 ]
