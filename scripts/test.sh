#!/usr/bin/env bash
# test.sh — the whole test suite, as CI runs it (.ci/run). Needs root.
#
# Steps: dependencies, shellcheck, rustfmt, clippy, release build, fixtures,
# unit tests, root-only unit tests (#[ignore]d), integration tests (one at a
# time, against the release runtime and the fixtures), cgroup v2 checks in a
# qemu guest (cgroup2-vm-test.sh), the fuzz targets for a bounded time
# (fuzz.sh, KAPSEL_FUZZ_SECONDS each). A failing lint or test
# step does not stop the later ones; a failing build or fixture step does.
# Prints a summary and exits non-zero if any step failed.
#
# Environment:
#   KAPSEL_SKIP_DEPS=1     skip install-deps.sh (still applies cgroup-hugetlb.sh)
#   KAPSEL_TEST_BUDGET=N   overall time limit in minutes (default 85); each
#                          step is killed when the budget is spent
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
cd "$KAPSEL_ROOT"

budget=$((${KAPSEL_TEST_BUDGET:-85} * 60))
summary=()
failed=0
# Every cargo test's output is also collected here, to count the tests at the end.
KAPSEL_TESTLOG=$(mktemp /tmp/kapsel-tests.XXXXXX)
export KAPSEL_TESTLOG

print_summary() {
    printf '\n%s\n' "---- test.sh summary ($((SECONDS / 60))m$((SECONDS % 60))s) ----"
    printf '%s\n' "${summary[@]}"
    if [ "$failed" -eq 0 ]; then echo "PASS"; else echo "FAIL"; fi
    # The closing line CI reads: all cargo tests of this run, added up, and the checks of the
    # cgroup v2 guest ("cgroup2-vm: N passed, N failed, N skipped").
    awk '/^test result:/ { p += $4; f += $6 }
        /^cgroup2-vm: [0-9]+ passed, [0-9]+ failed/ { p += $2; f += $4 }
        END { printf "tests: %d passed, %d failed\n", p, f }' "$KAPSEL_TESTLOG"
    rm -f "$KAPSEL_TESTLOG"
}
trap print_summary EXIT

# step NAME fatal|continue CMD...: run CMD with what is left of the budget; record the outcome.
step() {
    local name=$1 on_fail=$2 left rc=0 start=$SECONDS
    shift 2
    left=$((budget - SECONDS))
    if [ "$left" -le 0 ]; then
        summary+=("$(printf 'SKIP  %-22s time budget spent' "$name")")
        failed=1
        return 0
    fi
    log "[$name] $*"
    # timeout kills the step's whole process group, except interactively,
    # where it must stay in the terminal's group so that Ctrl-C reaches it.
    local fg=()
    [ -t 0 ] && fg=(--foreground)
    timeout "${fg[@]}" --kill-after=30 "$left" "$@" || rc=$?
    local took=$((SECONDS - start)) note=""
    [ "$rc" -eq 124 ] && note=" (timed out)"
    if [ "$rc" -eq 0 ]; then
        summary+=("$(printf 'ok    %-22s %4ss' "$name" "$took")")
        return 0
    fi
    summary+=("$(printf 'FAIL  %-22s %4ss  exit %s%s' "$name" "$took" "$rc" "$note")")
    failed=1
    if [ "$on_fail" = fatal ]; then
        log "[$name] failed; later steps depend on it, stopping"
        exit 1
    fi
}

if [ "${KAPSEL_SKIP_DEPS:-0}" = 1 ]; then
    step cgroup-hugetlb fatal scripts/cgroup-hugetlb.sh
else
    step install-deps fatal scripts/install-deps.sh
fi
ensure_cargo
export RUST_BACKTRACE=1

if command -v shellcheck >/dev/null; then
    step shellcheck continue shellcheck -x scripts/*.sh .ci/run
fi
step fmt continue cargo fmt --all --check
step clippy continue cargo clippy --workspace --all-targets -- -D warnings
step build-release fatal scripts/build-release.sh
step fixtures fatal scripts/make-fixtures.sh "$KAPSEL_ROOT/.fixtures"
# Unit tests: everything but the integration-test crate, which needs the env below.
# "${logged[@]}" CMD...: run CMD with its output also appended to the test log.
# shellcheck disable=SC2016 # expanded by the inner bash
logged=(bash -o pipefail -c '"$@" 2>&1 | tee -a "$KAPSEL_TESTLOG"' logged)
step unit-tests continue "${logged[@]}" cargo test --workspace --exclude kapsel-integration-tests
step root-unit-tests continue "${logged[@]}" cargo test -p kapsel-runtime -- --ignored
step integration-tests continue "${logged[@]}" env \
    KAPSEL_RUNTIME="$KAPSEL_ROOT/target/release/kapsel-runtime" \
    KAPSEL_MANAGER_BIN_DIR="$KAPSEL_ROOT/target/release" \
    KAPSEL_FIXTURES="$KAPSEL_ROOT/.fixtures" \
    cargo test -p kapsel-integration-tests --no-fail-fast -- --test-threads=1
# The README's main command as a user runs it once the dependencies are in: it must greet.
# (Its output is kept in a variable: `tee /dev/stderr` would reopen, and so truncate, a log
# file that CI's output is redirected to.)
# shellcheck disable=SC2016 # expanded by the inner bash
step demo continue bash -c 'out=$(KAPSEL_SKIP_DEPS=1 scripts/demo.sh) || exit; echo "$out"
    grep -qx "hello from a kapsel container: kapsel, pid 1, uid 0" <<<"$out"'
# cgroup v2 checks in a qemu guest (this host is cgroup v1 hybrid): the runtime alone, then
# kapseld + shim + runtime through the CLI
step cgroup2-vm continue "${logged[@]}" scripts/cgroup2-vm-test.sh
# config.json and seccomp fuzz targets, KAPSEL_FUZZ_SECONDS (default 60) each
step fuzz continue scripts/fuzz.sh

[ "$failed" -eq 0 ]
