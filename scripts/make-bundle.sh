#!/usr/bin/env bash
# make-bundle.sh FIXTURES BUNDLE_DIR [ARG...] — an OCI bundle from the busybox fixtures.
#
# BUNDLE_DIR gets rootfs/ (a copy of FIXTURES/rootfs) and the config.json that
# `$KAPSEL_RUNTIME spec` writes (default: target/release/kapsel-runtime; any
# runc-compatible runtime works, e.g. KAPSEL_RUNTIME=/usr/sbin/runc). With ARGs,
# process.args becomes ARG... and process.terminal false, so the bundle runs
# without a console socket.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -ge 2 ] || die "usage: $(basename "$0") FIXTURES BUNDLE_DIR [ARG...]"
fixtures=$1 bundle=$2
shift 2
runtime=${KAPSEL_RUNTIME:-$KAPSEL_ROOT/target/release/kapsel-runtime}

[ -d "$fixtures/rootfs/bin" ] || die "$fixtures/rootfs: no fixture rootfs; run scripts/make-fixtures.sh $fixtures"
[ -x "$runtime" ] || die "$runtime: no runtime binary; run scripts/build-release.sh or set KAPSEL_RUNTIME"
command -v jq >/dev/null || die "jq not found: run scripts/install-deps.sh"
if [ -e "$bundle/rootfs" ] || [ -e "$bundle/config.json" ]; then
    die "$bundle already holds a bundle"
fi

mkdir -p "$bundle"
cp -a "$fixtures/rootfs" "$bundle/rootfs"
# `spec` writes ./config.json, as runc's does.
(cd "$bundle" && "$runtime" spec) || die "$runtime spec failed in $bundle"
[ -s "$bundle/config.json" ] || die "$runtime spec wrote no $bundle/config.json"

if [ $# -gt 0 ]; then
    jq '.process.args = $ARGS.positional | .process.terminal = false' \
        "$bundle/config.json" --args -- "$@" >"$bundle/config.json.new"
    mv "$bundle/config.json.new" "$bundle/config.json"
fi
