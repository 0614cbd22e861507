#!/bin/bash
# Ferry's whole test suite (the README's test command; CI runs it via .ci/run):
#   1. build with warnings as errors; unit (cmocka) and functional tests on this machine's KVM
#   2. the same build and tests under ASan/UBSan
#   3. the nested lab: stock Linux guests under ferry-vmm (tests/lab/run.sh)
# Options: --no-lab (skip 3; not allowed when CI=true), --no-asan.
set -euo pipefail
cd "$(dirname "$0")/.."
lab=1 asan=1
for a in "$@"; do
    case $a in
        --no-lab) lab="" ;;
        --no-asan) asan="" ;;
        *) echo "usage: tests/run.sh [--no-lab] [--no-asan]" >&2; exit 2 ;;
    esac
done
if [ "${CI:-}" = true ] && { [ -z "$lab" ] || [ -z "$asan" ]; }; then
    echo "tests/run.sh: CI runs everything (no --no-lab/--no-asan)" >&2; exit 2
fi
bash scripts/deps.sh
if [ ! -c /dev/kvm ]; then
    echo "tests/run.sh: FAIL: /dev/kvm is missing: the functional tests need KVM" >&2
    exit 1
fi
t0=$SECONDS
step() { echo "== $* ($((SECONDS - t0))s)"; }

build() {   # build DIR [meson options]
    local dir=$1; shift
    if [ -d "$dir" ]; then meson configure "$dir" --werror "$@" >/dev/null
    else meson setup "$dir" --werror "$@" >/dev/null; fi
    ninja -C "$dir" >/dev/null
}

step "build (warnings as errors)"
build build
step "demo (the README's first command must exit 0)"
st=0
scripts/demo.sh > build/demo.log 2>&1 || st=$?
if [ "$st" -ne 0 ]; then
    tail -n 20 build/demo.log
    echo "tests/run.sh: FAIL: scripts/demo.sh exited $st" >&2
    exit 1
fi
step "unit + functional tests"
meson test -C build --print-errorlogs --num-processes 2
step "benchmarks (the CPL3 loop must run under 10 ns/iteration; migration numbers)"
meson test -C build --benchmark --suite bench --num-processes 1
if [ -n "$asan" ]; then
    step "build with ASan/UBSan"
    build build-asan -Db_sanitize=address,undefined -Db_lundef=false
    step "unit + functional tests under ASan/UBSan"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson test -C build-asan --print-errorlogs --num-processes 2
fi
if [ -n "$lab" ]; then
    step "nested lab (stock Linux guests)"
    tests/lab/run.sh build
fi
step "all tests passed"
