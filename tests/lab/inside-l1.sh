#!/bin/bash
# tests/lab/inside-l1.sh - runs inside the lab's L1 (started by tests/lab/run.sh): every
# tests/lab/t-*.sh in order, each with bash and a time limit, cwd = the repository root.
# Prints "PASS name (Xs)" or "FAIL name" per test; exits 1 if any failed.
#   BUILD                    build directory (default "build")
#   FERRY_LAB_TESTS          glob on the test name (NAME in t-NAME.sh); default all
#   FERRY_LAB_TEST_TIMEOUT   seconds per test (default 600)

set -uo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/../.." || exit 125
export BUILD=${BUILD:-build}

if [ ! -c /dev/kvm ]; then
    echo "FAIL lab: no /dev/kvm in L1"
    exit 1
fi

# Every migration in the lab is TLS: ferry-vmm takes /etc/ferry/tls by default.
if [ ! -e /etc/ferry/tls/ca.pem ] &&
    ! { mkdir -p /etc/ferry && "$BUILD/cli/ferry" tls init /etc/ferry/tls --cn ferry-lab >/dev/null; }; then
    echo "FAIL lab: cannot make the migration credentials (ferry tls init /etc/ferry/tls)"
    exit 1
fi

pass=0 fail=0
for t in tests/lab/t-*.sh; do
    [ -e "$t" ] || continue
    name=${t##*/t-}
    name=${name%.sh}
    # shellcheck disable=SC2053  # FERRY_LAB_TESTS is a glob
    [[ $name == ${FERRY_LAB_TESTS:-*} ]] || continue
    start=${EPOCHREALTIME//[!0-9]/}
    timeout -k 10 "${FERRY_LAB_TEST_TIMEOUT:-600}" bash "$t"
    st=$?
    d=$((${EPOCHREALTIME//[!0-9]/} - start))
    printf -v took '%d.%d' $((d / 1000000)) $((d / 100000 % 10))
    if [ "$st" -eq 0 ]; then
        echo "PASS $name (${took}s)"
        pass=$((pass + 1))
    else
        echo "FAIL $name (status $st$([ "$st" -ne 124 ] || echo ": timed out"), ${took}s)"
        fail=$((fail + 1))
    fi
done
echo "lab tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
