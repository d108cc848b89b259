#!/usr/bin/env bash
# demo.sh — build Kapsel and run one busybox container through kapseld with `kapsel run`.
#
# Installs the dependencies, builds the release binaries (kapsel-runtime, the shim, kapseld,
# kapsel), builds the busybox image offline (scripts/make-fixtures.sh), starts kapseld with
# its embedded defaults (/var/lib/kapsel, /run/kapsel/kapseld.sock) unless one already runs
# there, loads the image and runs a container that greets from inside. Exits with the
# container's exit code; a kapseld it started is stopped again. Progress goes to stderr; the
# container's output to stdout. Set KAPSEL_SKIP_DEPS=1 to skip install-deps.sh.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
cd "$KAPSEL_ROOT"

if [ "${KAPSEL_SKIP_DEPS:-0}" != 1 ]; then
    scripts/install-deps.sh
else
    scripts/cgroup-hugetlb.sh
fi
ensure_cargo

log "building kapsel (release)"
scripts/build-release.sh -q
bin=$KAPSEL_ROOT/target/release
fixtures=$KAPSEL_ROOT/.fixtures
scripts/make-fixtures.sh "$fixtures"

kapsel=$bin/kapsel
daemon_pid=
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if "$kapsel" version >/dev/null 2>&1; then
    log "using the kapseld that already runs"
else
    log "starting kapseld (embedded defaults; log: /run/kapsel/demo-kapseld.log)"
    mkdir -p /run/kapsel
    "$bin/kapseld" >/run/kapsel/demo-kapseld.log 2>&1 &
    daemon_pid=$!
    for _ in $(seq 200); do
        "$kapsel" version >/dev/null 2>&1 && break
        kill -0 "$daemon_pid" 2>/dev/null || { cat /run/kapsel/demo-kapseld.log >&2; exit 1; }
        sleep 0.05
    done
fi

log "kapsel load -i $fixtures/busybox-docker.tar"
"$kapsel" load -q -i "$fixtures/busybox-docker.tar" >&2

# Single quotes on purpose: the container's shell expands these, not ours.
# shellcheck disable=SC2016
set -- /bin/sh -c 'echo "hello from a kapsel container: $(hostname), pid $$, uid $(id -u)"'
log "kapsel run --rm --hostname kapsel busybox $*"
rc=0
"$kapsel" run --rm --hostname kapsel busybox "$@" </dev/null || rc=$?
log "the container exited with $rc"
exit "$rc"
