#!/usr/bin/env bash
# install-deps.sh — install what building and testing Kapsel needs (Debian 12, as root).
#
# Idempotent: asks apt only for packages that are missing, and runs
# `apt-get update` at most once. Adds Debian's bookworm-backports suite (same
# mirror, default low priority): the cgroup v2 VM test (cgroup2-vm-test.sh)
# boots a kernel downloaded from there, and qemu-system-x86 comes from there
# when the installed qemu-utils is a backport. Checks that a Rust toolchain with rustfmt and
# clippy exists (it is not installed from here) and installs cargo-fuzz when it is missing
# (fuzz.sh; it also needs a nightly toolchain). Then applies the cgroup-hugetlb.sh
# workaround so crun runs on cgroup v1 hybrid hosts, and caches the cgroup v2 VM test's kernel (cgroup2-vm-test.sh --prepare).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

packages=(
    # build
    build-essential pkg-config libseccomp-dev libssl-dev
    # runtimes to compare with and the clients that drive a runtime
    runc crun containerd podman docker.io uidmap golang-github-containers-common
    # images, registry, networking
    busybox-static skopeo umoci docker-registry containernetworking-plugins iptables iproute2
    # registry tests: htpasswd (basic auth), openssl (token server signing), gzip/zstd (layers)
    apache2-utils openssl gzip zstd
    # scripts, benchmarks, lint
    python3 jq curl hyperfine shellcheck time
    # cgroup v2 VM test (scripts/cgroup2-vm-test.sh): qemu itself is installed below
    kmod xz-utils
)

# bookworm-backports, from the mirror the machine already uses.
backports_added=no
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '/^deb / { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$uri" ] || die "no Debian mirror found in the apt sources"
    log "adding bookworm-backports ($uri) to the apt sources"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" >/etc/apt/sources.list.d/bookworm-backports.sources
    backports_added=yes
fi

missing=()
for p in "${packages[@]}"; do
    # Installed means status "install ok installed"; anything else counts as missing.
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

qemu_missing=no
command -v qemu-system-x86_64 >/dev/null 2>&1 || qemu_missing=yes

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run instead of failing on its lock.
apt_opts=(-q -y -o DPkg::Lock::Timeout=900)
if [ ${#missing[@]} -gt 0 ] || [ "$qemu_missing" = yes ] || [ "$backports_added" = yes ]; then
    apt-get "${apt_opts[@]}" update </dev/null
fi
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" </dev/null
else
    log "apt packages already installed"
fi
if [ "$qemu_missing" = yes ]; then
    log "installing qemu-system-x86"
    # A qemu-utils backport (as on these machines) Breaks bookworm's
    # qemu-system-common: then take qemu-system-x86 from backports too.
    apt-get "${apt_opts[@]}" install --no-install-recommends qemu-system-x86 </dev/null ||
        apt-get "${apt_opts[@]}" install --no-install-recommends -t bookworm-backports qemu-system-x86 </dev/null
fi

ensure_cargo
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"
log "rust: $(cargo --version)"

# The fuzz targets (scripts/fuzz.sh) build with cargo-fuzz on a nightly toolchain. A missing
# nightly is reported, not installed: toolchains are not installed from here.
if cargo fuzz --version >/dev/null 2>&1; then
    log "cargo-fuzz already installed ($(cargo fuzz --version))"
else
    log "installing cargo-fuzz (about 1.5 min)"
    cargo install cargo-fuzz --locked
fi
cargo +nightly --version >/dev/null 2>&1 ||
    log "no nightly toolchain: scripts/fuzz.sh builds the fuzz targets on the default one with RUSTC_BOOTSTRAP=1"

"$KAPSEL_ROOT/scripts/cgroup-hugetlb.sh"

# The cgroup v2 VM test's kernel, downloaded (not installed) and cached now, so that test.sh's
# cgroup2-vm step runs offline. Not fatal: that step can still fetch it itself.
"$KAPSEL_ROOT/scripts/cgroup2-vm-test.sh" --prepare ||
    log "warning: could not prepare the cgroup v2 VM (scripts/cgroup2-vm-test.sh --prepare)"
