#!/usr/bin/env bash
# cgroup-hugetlb.sh — make a cgroup v1 "hybrid" host acceptable to crun 1.8.
#
# On a hybrid host (v1 controllers under /sys/fs/cgroup/<name>, a v2 tree at
# /sys/fs/cgroup/unified) any controller left unbound to v1 shows up in the
# v2 tree's cgroup.controllers. crun 1.8.1 then fails every container with
# "cgroups in hybrid mode not supported, drop all controllers from cgroupv2".
# On our machines that controller is hugetlb: mount it as a v1 hierarchy, which
# moves it out of the v2 tree. Does nothing when there is nothing to do.
set -euo pipefail

unified=/sys/fs/cgroup/unified
target=/sys/fs/cgroup/hugetlb

[ -r "$unified/cgroup.controllers" ] || exit 0 # not a hybrid host
grep -qw hugetlb "$unified/cgroup.controllers" || exit 0
mountpoint -q "$target" && exit 0

mkdir -p "$target"
mount -t cgroup -o hugetlb cgroup "$target"
echo "mounted the cgroup v1 hugetlb hierarchy at $target (crun refuses hybrid mode otherwise)" >&2
