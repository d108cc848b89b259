# shellcheck shell=bash
# Helpers shared by the scripts in this folder. Source it; do not run it.

# Repository root: the parent of the folder this file lives in.
KAPSEL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KAPSEL_ROOT

# log MSG...: a progress line on stderr, so stdout stays clean for results.
log() {
    printf '==> %s\n' "$*" >&2
}

# die MSG...: an error line on stderr, then exit 1.
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# need_root: the container scripts create namespaces, mounts and cgroups.
need_root() {
    [ "$(id -u)" -eq 0 ] || die "$(basename "$0") must run as root (it creates namespaces, mounts and cgroups)"
}

# ensure_cargo: put rustup's default bin dir on PATH when a
# non-login shell (CI, sudo) did not, and fail clearly without cargo.
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install a Rust toolchain (rustup, or apt-get install cargo) and put cargo on PATH"
}
