#!/usr/bin/env bash
# cgroup2-vm-test.sh — cgroup v2 checks in a qemu guest (TCG) whose only cgroup hierarchy is
# cgroup v2: kapsel-runtime with hand-made bundles, then kapseld + containerd-shim-kapsel-v2 +
# kapsel-runtime through the kapsel CLI. This host is cgroup v1 hybrid, so the v2 code cannot
# be exercised here otherwise. Needs root.
#
#   cgroup2-vm-test.sh [-v] [-T SECS] [--only runtime|kapseld]    run the checks (all, or one
#                                        section of them)
#   cgroup2-vm-test.sh --prepare         only fetch and cache the kernel and boot it once
#                                        (install-deps.sh does this; needs the network)
#
# The VM is booted by the shared tool cgroup2-vm.sh ($CGROUP2_VM, default
# ../shared/tools/cgroup2-vm.sh next to the repository), with the repository shared into the
# guest over 9p at /mnt/host. On the host this script writes one bundle per check under
# target/cgroup2-vm/bundles/ (config.json from `kapsel-runtime spec`, edited with jq;
# root.path is the shared .fixtures/rootfs, or a copy when .fixtures lies outside the repository);
# scripts/cgroup2-vm-guest.sh runs the checks in
# the guest with the shared target/release/kapsel-runtime (else target/debug/, or
# $KAPSEL_RUNTIME), then sources scripts/cgroup2-vm-kapseld.sh, which starts kapseld, kapsel
# and the shim from the runtime's directory (or $KAPSEL_MANAGER_BIN_DIR, as the integration
# tests), loads .fixtures/busybox-docker.tar and runs containers with `kapsel run`. One
# PASS/FAIL/SKIP/INFO line per check.
#
# Offline once prepared: the kernel package (from bookworm-backports) is cached in
# $KAPSEL_CG2VM_WORK (default /var/cache/kapsel/cgroup2-vm), and the package name that was
# prepared is reused, so a later apt-get update does not trigger a download.
#
# Exit: 0 all checks passed, 1 a check failed, 2 no result (no VM tool, boot failure, timeout).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

prepare=no
sections="runtime kapseld"
verbose=()
timeout_s=600
while [ $# -gt 0 ]; do
    case $1 in
        --prepare) prepare=yes ;;
        -v) verbose=(-v) ;;
        -T) timeout_s=$2; shift ;;
        --only) sections=$2; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see -h)" ;;
    esac
    shift
done

tool=${CGROUP2_VM:-$KAPSEL_ROOT/../shared/tools/cgroup2-vm.sh}
work=${KAPSEL_CG2VM_WORK:-/var/cache/kapsel/cgroup2-vm}
runtime=${KAPSEL_RUNTIME:-$KAPSEL_ROOT/target/release/kapsel-runtime}
# without a release build, the debug one (as the integration tests do)
[ -n "${KAPSEL_RUNTIME:-}" ] || [ -x "$runtime" ] || runtime=$KAPSEL_ROOT/target/debug/kapsel-runtime
fixtures=$KAPSEL_ROOT/.fixtures
bundles=$KAPSEL_ROOT/target/cgroup2-vm/bundles # the guest script expects exactly this place
stamp=$work/kapsel-prepared

if [ ! -f "$tool" ]; then
    echo "cgroup2-vm: RESULT FAIL (no VM tool at $tool; set CGROUP2_VM)" >&2
    exit 2
fi
mkdir -p "$work"

# The kernel package: the one prepared before, else what linux-image-amd64 depends on
# (bookworm-backports first), the same way the tool would pick it.
kpkg=$(cat "$stamp" 2>/dev/null || true)
if [ -z "$kpkg" ] || [ "$prepare" = yes ]; then
    kpkg=$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-/ { print $2; exit }' || true)
    [ -n "$kpkg" ] || kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-/ { print $2; exit }' || true)
    [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64: run scripts/install-deps.sh"
fi

if [ "$prepare" = yes ]; then
    if [ "$(cat "$stamp" 2>/dev/null || true)" = "$kpkg" ]; then
        log "cgroup2-vm: $kpkg already prepared in $work"
        exit 0
    fi
    log "cgroup2-vm: fetching $kpkg and booting it once"
    probe=$(mktemp /tmp/cgroup2-vm-probe.XXXXXX)
    trap 'rm -f "$probe"' EXIT
    # shellcheck disable=SC2016 # for the guest's shell
    printf '%s\n' '#!/bin/sh' '[ "$(stat -fc %t /sys/fs/cgroup)" = 63677270 ]' >"$probe"
    rt=$(command -v runc || command -v crun || true)
    [ -n "$rt" ] || die "runc or crun is needed (the VM tool writes its own bundle with it)"
    "$tool" -w "$work" -k "$kpkg" -T "$timeout_s" -t "$probe" "$rt" >"$work/prepare.log" 2>&1 ||
        die "booting $kpkg failed: $work/prepare.log"
    echo "$kpkg" >"$stamp"
    log "cgroup2-vm: prepared $kpkg ($(grep -o 'boot(qemu start->init)=[^ ]*' "$work/prepare.log" || true))"
    exit 0
fi

[ -x "$runtime" ] || die "no $runtime: run scripts/build-release.sh (or cargo build -p kapsel-runtime)"
case $runtime in
    "$KAPSEL_ROOT"/*) ;;
    *) die "$runtime must lie inside $KAPSEL_ROOT (the guest runs it from the 9p share)" ;;
esac
case " $sections " in
    *" kapseld "*) with_kapseld=yes ;;
    *) with_kapseld=no ;;
esac
for s in $sections; do
    case $s in
        runtime | kapseld) ;;
        *) die "unknown section $s for --only: use runtime or kapseld" ;;
    esac
done
# kapseld and its helpers: next to the runtime (a relative KAPSEL_MANAGER_BIN_DIR is taken
# from the repository root, as the integration tests take it)
bindir=$(dirname "$runtime")
[ -z "${KAPSEL_MANAGER_BIN_DIR:-}" ] || bindir=$(cd "$KAPSEL_ROOT" && readlink -f "$KAPSEL_MANAGER_BIN_DIR")
manager_bins=(kapseld kapsel containerd-shim-kapsel-v2 kapsel-logger)
if [ "$with_kapseld" = yes ]; then
    for b in "${manager_bins[@]}"; do
        [ -x "$bindir/$b" ] || die "no $bindir/$b: run scripts/build-release.sh (or cargo build -p kapsel-manager -p containerd-shim-kapsel-v2)"
    done
    case $bindir in
        "$KAPSEL_ROOT"/*) ;;
        *) die "$bindir must lie inside $KAPSEL_ROOT (the guest runs kapseld from the 9p share)" ;;
    esac
fi
[ -x "$fixtures/rootfs/bin/busybox" ] || "$KAPSEL_ROOT/scripts/make-fixtures.sh" "$fixtures"
command -v jq >/dev/null || die "jq is missing: run scripts/install-deps.sh"

# ------------------------------------------------------------------ bundles (host side)
guest_root=/mnt/host # where the tool mounts the share in the guest
rm -rf "$bundles"
mkdir -p "$bundles/spec"
# The guest sees only the share: a .fixtures that is a symlink out of it (a git worktree's) is
# not reachable there, so its small rootfs is copied in.
guest_rootfs=$guest_root/.fixtures/rootfs
case $(readlink -f "$fixtures/rootfs") in
    "$KAPSEL_ROOT"/*) ;;
    *)
        cp -a "$fixtures/rootfs" "$bundles/rootfs"
        guest_rootfs=$guest_root/${bundles#"$KAPSEL_ROOT"/}/rootfs
        ;;
esac
"$runtime" spec --bundle "$bundles/spec"
# bundle NAME JQ-FILTER: bundles/NAME/config.json = the spec config, edited for container c2-NAME
# (the filter can use $probe, the shell function $dev_probe for the device checks)
bundle() {
    mkdir -p "$bundles/$1"
    jq --arg id "c2-$1" --arg root "$guest_rootfs" --arg probe "${dev_probe-}" "
        .process.terminal = false | .root.path = \$root | .root.readonly = true
        | .linux.cgroupsPath = \"/kapsel/\" + \$id | $2" \
        "$bundles/spec/config.json" >"$bundles/$1/config.json"
}
mib=1048576
# limits: prints its own view of the cgroup files, then sleeps until deleted
# shellcheck disable=SC2016 # $f and $(...) are for the container's shell
bundle limits '.process.args = ["sh", "-c",
        "echo self-cgroup=$(cat /proc/self/cgroup); for f in memory.max memory.swap.max memory.low memory.high cpu.weight cpu.max pids.max cpuset.cpus; do echo $f=$(cat /sys/fs/cgroup/$f); done; echo ready; exec sleep 600"]
    | .linux.resources.memory = {"limit": '$((64 * mib))', "swap": '$((96 * mib))', "reservation": '$((16 * mib))'}
    | .linux.resources.cpu = {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}
    | .linux.resources.pids = {"limit": 20}
    | .linux.resources.unified = {"memory.high": "'$((48 * mib))'"}'
# shellcheck disable=SC2016
bundle run '.process.args = ["sh", "-c", "echo memory.max=$(cat /sys/fs/cgroup/memory.max); exit 3"]
    | .linux.resources.memory = {"limit": '$((64 * mib))'}'
# a string that doubles until the 16 MiB limit (no swap: swap = limit) gets awk OOM-killed
bundle oom '.process.args = ["awk", "BEGIN { s = \"0123456789abcdef\"; for (;;) s = s s }"]
    | .linux.resources.memory = {"limit": '$((16 * mib))', "swap": '$((16 * mib))'}'
bundle io '.process.args = ["sleep", "600"] | .linux.resources.blockIO = {"weight": 500}'
# only used to diagnose an io-weight failure: the same request under the non-OCI key "blockIo"
bundle io-camel '.process.args = ["sleep", "600"] | .linux.resources.blockIo = {"weight": 500}
    | .linux.cgroupsPath = "/kapsel/c2-io"'
bundle hugetlb '.process.args = ["sleep", "600"]
    | .linux.resources.hugepageLimits = [{"pageSize": "2MB", "limit": '$((4 * mib))'}]'
# devices: the spec's default rules (deny all; the runtime adds runc's allowances: /dev/null,
# zero, full, tty, random, urandom, ptmx, pts, net/tun, mknod of any node) with CAP_MKNOD and
# two nodes in linux.devices that no rule allows: /dev/kmsg (c 1:11) and /dev/kcons (c 5:1, the
# console). Opening them for these accesses needs no capability (reading /dev/kmsg would need
# CAP_SYSLOG, opening /dev/mem CAP_SYS_RAWIO): only the device filter can refuse them.
# $dev_probe defines p MODE FILE: prints "MODE FILE ok" or "MODE FILE <strerror>" for an open
# for reading (r) or writing (w).
# shellcheck disable=SC2016 # for the container's shell
dev_probe='p() { if [ "$1" = r ]; then e=$( (exec 3<"$2") 2>&1 ); else e=$( (exec 3>"$2") 2>&1 ); fi && echo "$1 $2 ok" || echo "$1 $2 ${e##*: }"; }'
devices_common='.process.capabilities |= with_entries(if .key == "ambient" then . else .value += ["CAP_MKNOD"] end)
    | .linux.devices = [
        {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 420, "uid": 0, "gid": 0},
        {"path": "/dev/kcons", "type": "c", "major": 5, "minor": 1, "fileMode": 384, "uid": 0, "gid": 0}]'
# shellcheck disable=SC2016
bundle dev-default "$devices_common"' | .process.args = ["sh", "-c", $probe + "; head -c1 /dev/null && echo null-read=ok; echo zero-read=$(head -c1 /dev/zero | wc -c); p w /dev/null; p r /dev/urandom; p w /dev/kmsg; p r /dev/kcons; mknod /dev/kcons2 c 5 1 && echo mknod-c5:1=ok || echo mknod-c5:1=refused; p r /dev/kcons2"]'
# dev-allow: the same plus allow rules for c 1:11 w and c 5:1 r; stays up for the update and
# program checks
# shellcheck disable=SC2016
bundle dev-allow "$devices_common"' | .linux.resources.devices += [
        {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "w"},
        {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "r"}]
    | .process.args = ["sh", "-c", $probe + "; p w /dev/kmsg; echo kapsel-cgroup2-vm-kmsg-allowed >/dev/kmsg && echo kmsg-write=ok; p r /dev/kcons; p w /dev/kcons; echo ready; exec sleep 600"]'
printf '%s\n' "$dev_probe" >"$bundles/dev-probe.sh" # for exec in the guest
# update -r for dev-allow: only the spec's deny-all again (the runtime adds the defaults)
echo '{"devices": [{"allow": false, "access": "rwm"}]}' >"$bundles/dev-allow/update.json"
rm -rf "$bundles/spec"
echo "$sections" >"$bundles/sections"
# for cgroup2-vm-kapseld.sh: where kapseld and the image are in the guest
guest_image=$guest_root/.fixtures/busybox-docker.tar
case $(readlink -f "$fixtures/busybox-docker.tar") in
    "$KAPSEL_ROOT"/*) ;;
    *)
        cp "$fixtures/busybox-docker.tar" "$bundles/busybox-docker.tar"
        guest_image=$guest_root/${bundles#"$KAPSEL_ROOT"/}/busybox-docker.tar
        ;;
esac
printf 'KD_BIN=%s\nKD_IMAGE=%s\n' "$guest_root/${bindir#"$KAPSEL_ROOT"/}" "$guest_image" >"$bundles/kapseld.env"

# ------------------------------------------------------------------ the VM
# the shared libraries of kapseld and the CLI (libssl, libcrypto) go into the initramfs; the
# binaries themselves run from the share
libs=()
if [ "$with_kapseld" = yes ]; then
    for b in "${manager_bins[@]}"; do libs+=(-l "$bindir/$b"); done
fi
log "cgroup2-vm: kernel $kpkg, runtime $runtime, sections: $sections$([ "$with_kapseld" = no ] || echo "; kapseld from $bindir")"
"$tool" -w "$work" -k "$kpkg" -T "$timeout_s" -s "$KAPSEL_ROOT" -t "$KAPSEL_ROOT/scripts/cgroup2-vm-guest.sh" \
    "${verbose[@]}" "${libs[@]}" "$runtime"
