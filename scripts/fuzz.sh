#!/usr/bin/env bash
# fuzz.sh — run the kapsel-runtime fuzz targets (runtime/fuzz) for a bounded time each.
#
# Usage: scripts/fuzz.sh [TARGET...]      (default: every target: config seccomp seccomp_structured)
#
# First the fuzz crate's own tests (its BPF checker and profile model against the seed
# corpus). Each target then starts from its seed corpus in the repository (runtime/fuzz/corpus/TARGET,
# read only) plus a working corpus kept between runs in runtime/fuzz/target/corpus/TARGET,
# with its dictionary if it has one (runtime/fuzz/TARGET.dict). Built with debug assertions and overflow
# checks, without AddressSanitizer (`-s none`): the code under test is safe Rust, and ASan
# cost most of the speed. A crash, panic, leak or timeout fails the script; the input that caused it is
# saved under runtime/fuzz/artifacts/TARGET/ and its path printed at the end. To reproduce:
#   cargo +nightly fuzz run -a -s none TARGET PATH      (in runtime/fuzz)
# then add PATH to runtime/fuzz/corpus/TARGET/ with the fix.
#
# Environment:
#   KAPSEL_FUZZ_SECONDS=N   time per target (default 60)
#   KAPSEL_FUZZ_JOBS=N      parallel fuzzing processes per target (default 1)
#   KAPSEL_FUZZ_TOOLCHAIN   the nightly toolchain cargo fuzz builds with (default nightly)
# Needs cargo-fuzz (scripts/install-deps.sh installs it) and a nightly toolchain (without one:
# the default toolchain with RUSTC_BOOTSTRAP=1); not root.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_cargo

seconds=${KAPSEL_FUZZ_SECONDS:-60}
jobs=${KAPSEL_FUZZ_JOBS:-1}
toolchain=${KAPSEL_FUZZ_TOOLCHAIN:-nightly}
fuzz_dir="$KAPSEL_ROOT/runtime/fuzz"

cargo fuzz --version >/dev/null 2>&1 ||
    die "cargo-fuzz is missing: cargo install cargo-fuzz --locked (scripts/install-deps.sh does)"
if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
    # cargo fuzz passes unstable flags (-Z...); where no nightly is installed (and none can be
    # fetched), the stable compiler accepts them under RUSTC_BOOTSTRAP=1. With `-s none` nothing
    # else of nightly is used.
    log "no $toolchain toolchain: building the fuzz targets with the default toolchain and RUSTC_BOOTSTRAP=1"
    toolchain=$(rustup show active-toolchain 2>/dev/null | awk '{ print $1; exit }')
    [ -n "$toolchain" ] || die "no Rust toolchain found (rustup show active-toolchain)"
    export RUSTC_BOOTSTRAP=1
fi

cd "$fuzz_dir"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

log "testing the checks the targets make (cargo test in runtime/fuzz)"
cargo test -q >&2 || die "the fuzz crate's own tests failed"

log "building ${targets[*]} (debug assertions on)"
build_log=$(mktemp /tmp/kapsel-fuzz-build.XXXXXX)
cargo "+$toolchain" fuzz build -a -s none >"$build_log" 2>&1 || {
    tail -n 30 "$build_log" >&2
    die "cargo fuzz build failed (log: $build_log)"
}
rm -f "$build_log"
parallel=()
[ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")

failed=()
crashes=()
for t in "${targets[@]}"; do
    work="$fuzz_dir/target/corpus/$t"
    mkdir -p "$work" "$fuzz_dir/artifacts/$t"
    out=$(mktemp "/tmp/kapsel-fuzz-$t.XXXXXX")
    log "[$t] fuzzing for ${seconds}s (log: $out)"
    dict=()
    [ -f "$t.dict" ] && dict=(-dict="$t.dict")
    rc=0
    # The working corpus comes first: libFuzzer adds new inputs to the first directory only.
    cargo "+$toolchain" fuzz run -a -s none "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" "${parallel[@]}" "${dict[@]}" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$out" 2>&1 || rc=$?
    # Last progress line (execs, coverage, corpus) and the final statistics.
    grep -E '^#[0-9]+' "$out" | tail -n 1 >&2 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$out" >&2 || true
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        grep -E 'panicked at|^==[0-9]+==ERROR|SUMMARY:' "$out" | head -n 5 >&2 || true
        while read -r path; do
            crashes+=("$t: $path")
        done < <(sed -n 's/.*Test unit written to //p' "$out" | sort -u)
        log "[$t] FAILED (exit $rc); full output in $out"
    else
        rm -f "$out"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    printf 'fuzz: failing targets: %s\n' "${failed[*]}" >&2
    for c in "${crashes[@]}"; do
        printf 'crash input: %s\n' "$c" >&2
    done
    exit 1
fi
log "fuzz: ${targets[*]} ran ${seconds}s each without a crash"
