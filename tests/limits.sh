# tests/limits.sh - how long the test helpers wait (sourced by tests/func/lib.sh,
# tests/migration/lib.sh and tests/center/lib.sh; bash).
# FERRY_TEST_SLOW=N stretches every limit N times: tests/run.sh sets it when
# the guests run inside the nested lab, on QEMU's emulated CPU. A limit only
# bounds how long a test waits for something that must happen; what a test
# asserts does not change with it.
# shellcheck shell=bash
SLOW=${FERRY_TEST_SLOW:-1}

# limit SECONDS: SECONDS stretched
limit() { echo $(($1 * SLOW)); }

# wait_for SECONDS CMD...: poll CMD every 20 ms until it succeeds; 1 on timeout.
wait_for() {
    local end=$((SECONDS + $1 * SLOW)); shift
    until "$@"; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.02
    done
}
