#!/usr/bin/env bash
# Runs the lease, actor and concurrency tests under AddressSanitizer.
#
# Needs a nightly toolchain (`-Zsanitizer` is unstable); where there is none
# it prints why and exits 0. The instrumented build goes to its own target
# directory so it never invalidates the normal one.
#
# Usage: scripts/sanitizers.sh [TEST ...]
#   TEST: integration test names (files in tests/) to run besides the
#   library's unit tests; by default every one of DEFAULT_TESTS that exists.
#
# Environment:
#   ASAN_TARGET_DIR   target directory (default: target/asan)
#   ASAN_OPTIONS      passed through (default: detect_leaks=1)
#   MMAP_ACTOR_MODEL_CASES, MMAP_ACTOR_STRESS_SEED, ...: as for the tests.
set -euo pipefail

cd "$(dirname "$0")/.."

DEFAULT_TESTS=(leases resize lifecycle ordering cancellation stress model bad_input)
TARGET=x86_64-unknown-linux-gnu

skip() {
    echo "SKIPPED sanitizers: $*"
    exit 0
}

command -v rustup >/dev/null 2>&1 || skip "rustup is not installed, so no nightly toolchain"
rustup toolchain list 2>/dev/null | grep -q '^nightly' || skip "no nightly toolchain (rustup toolchain list)"
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || skip "AddressSanitizer is run on x86_64 Linux only"

if [ "$#" -gt 0 ]; then
    tests=("$@")
else
    tests=()
    for t in "${DEFAULT_TESTS[@]}"; do
        [ -f "tests/$t.rs" ] && tests+=("$t")
    done
fi
test_args=(--lib)
for t in "${tests[@]}"; do
    test_args+=(--test "$t")
done

export CARGO_TARGET_DIR="${ASAN_TARGET_DIR:-target/asan}"
export RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes"
export RUSTDOCFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
# The property test's default is enough under the sanitizer's slowdown.
export MMAP_ACTOR_MODEL_CASES="${MMAP_ACTOR_MODEL_CASES:-32}"

build_std=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "sanitizers: building with AddressSanitizer ($(rustc +nightly --version))"
if ! cargo +nightly test --target "$TARGET" "${test_args[@]}" --no-run 2>"$log"; then
    # Some nightlies need an instrumented standard library.
    if rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
        echo "sanitizers: plain build failed; retrying with -Zbuild-std"
        build_std=(-Zbuild-std)
        cargo +nightly test "${build_std[@]}" --target "$TARGET" "${test_args[@]}" --no-run
    else
        cat "$log" >&2
        echo "sanitizers: the instrumented build failed (and rust-src is not installed for -Zbuild-std)" >&2
        exit 1
    fi
fi

echo "sanitizers: running ${test_args[*]} under AddressSanitizer"
start=$(date +%s)
rc=0
cargo +nightly test "${build_std[@]}" --target "$TARGET" --no-fail-fast "${test_args[@]}" || rc=$?
if [ "$rc" -eq 0 ]; then
    echo "sanitizers: passed in $(($(date +%s) - start)) s (tests only)"
else
    echo "sanitizers: FAILED (exit $rc) after $(($(date +%s) - start)) s" >&2
fi
exit "$rc"
