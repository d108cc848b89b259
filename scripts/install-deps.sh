#!/usr/bin/env bash
# install-deps.sh — install what building and testing Kapsel needs (Debian 12, as root).
#
# Idempotent: asks apt only for packages that are missing, and runs
# `apt-get update` at most once. Checks that a Rust toolchain with rustfmt and
# clippy exists (it is not installed from here). Finally applies the
# cgroup-hugetlb.sh workaround so crun runs on cgroup v1 hybrid hosts.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

packages=(
    # build
    build-essential pkg-config libseccomp-dev
    # runtimes to compare with and the clients that drive a runtime
    runc crun containerd podman docker.io uidmap golang-github-containers-common
    # images, registry, networking
    busybox-static skopeo umoci docker-registry containernetworking-plugins iptables iproute2
    # scripts, benchmarks, lint
    python3 jq curl hyperfine shellcheck time
)

missing=()
for p in "${packages[@]}"; do
    # Installed means status "install ok installed"; anything else counts as missing.
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for another apt/dpkg run instead of failing on its lock.
    apt_opts=(-q -y -o DPkg::Lock::Timeout=900)
    apt-get "${apt_opts[@]}" update </dev/null
    apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" </dev/null
else
    log "apt packages already installed"
fi

ensure_cargo
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"
log "rust: $(cargo --version)"

"$KAPSEL_ROOT/scripts/cgroup-hugetlb.sh"
