#!/usr/bin/env bash
# demo.sh — build kapsel-runtime and run one busybox container with it.
#
# Installs the dependencies, builds the runtime (release), builds the busybox
# fixtures, makes a bundle whose process greets from inside the container,
# runs it in the foreground with `kapsel-runtime run`, then removes the bundle.
# Exits with the container's exit code. Progress goes to stderr; the
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

log "building kapsel-runtime (release)"
scripts/build-release.sh -q
runtime=$KAPSEL_ROOT/target/release/kapsel-runtime
fixtures=$KAPSEL_ROOT/.fixtures
scripts/make-fixtures.sh "$fixtures"

id=demo-$$
bundle=$(mktemp -d /tmp/kapsel-demo.XXXXXX)
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    "$runtime" delete --force "$id" >/dev/null 2>&1 || true
    rm -rf "$bundle"
}
trap cleanup EXIT

# Single quotes on purpose: the container's shell expands these, not ours.
# shellcheck disable=SC2016
KAPSEL_RUNTIME=$runtime scripts/make-bundle.sh "$fixtures" "$bundle" \
    /bin/sh -c 'echo "hello from a kapsel container: $(hostname), pid $$, uid $(id -u)"'

log "kapsel-runtime run --bundle $bundle $id"
rc=0
"$runtime" run --bundle "$bundle" "$id" </dev/null || rc=$?
log "container $id exited with $rc"
exit "$rc"
