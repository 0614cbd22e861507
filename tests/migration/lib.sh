# Shared helpers for the live-migration tests (sourced; bash).
#
# Environment (set by tests/migration/meson.build):
#   FERRY_VMM   ferry-vmm under test
#   GUEST_DIR   directory of the micro-guest ELFs (dirtier.elf, checker.elf)
#   SRC         project source root
#   MIGTOOL     tests/migration/migtool (fake source / proxy), for the tests that use it
#   FERRY       the ferry CLI (makes the TLS credentials)
# Migrations are TLS (credentials from `ferry tls init` in $TMP/tls), except
# in tests that set MIG_SEC=insecure before sourcing this file: those whose
# migtool reads or writes the stream itself. MIG_STREAMS (default: ferry-vmm's
# choice) is added to every migrate.
# Each VM runs in the background under a short NAME: its stdout (the guest
# console) is $TMP/NAME.out, its stderr $TMP/NAME.err, its control socket
# $TMP/NAME.sock. Tests are quiet on success apart from one summary line on
# stdout (kept in meson's test log); on failure they print what went wrong
# and the logs of every VM they started, and exit 1. KEEP_TMP=1 keeps $TMP.

set -u -o pipefail

: "${FERRY_VMM:?FERRY_VMM is not set (run through meson test)}"
: "${GUEST_DIR:?GUEST_DIR is not set (run through meson test)}"
: "${SRC:?SRC is not set (run through meson test)}"
# shellcheck source=tests/limits.sh
. "$SRC/tests/limits.sh"
# The TLS suite Ferry picks here: AES-GCM where the CPU has AES instructions;
# without them (QEMU's emulated CPU in the lab) it measures ChaCha20 faster
TLS_CIPHER=TLS_AES_128_GCM_SHA256
grep -qw aes /proc/cpuinfo || TLS_CIPHER=TLS_CHACHA20_POLY1305_SHA256

# The interpreter itself, not a version-manager shim (pyenv's costs ~0.3 s a call).
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
MIGCTL=$SRC/tests/migration/migctl.py

T_NAME=$(basename "$0" .sh)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-mig-$T_NAME.XXXXXX")
# Guest RAM files (--mem-path) on tmpfs when there is one: on a disk they
# add writeback stalls that have nothing to do with migration.
RAMDIR=$TMP
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    RAMDIR=$(mktemp -d "/dev/shm/ferry-mig-$T_NAME.XXXXXX") || RAMDIR=$TMP
fi
declare -A VM_PID=()
VM_NAMES=()
T0=$SECONDS

_cleanup() {
    local n p
    for n in "${VM_NAMES[@]}"; do
        p=${VM_PID[$n]:-}
        [ -n "$p" ] || continue
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    for p in $(jobs -p); do      # helpers started with & (migtool proxy)
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ -n "${KEEP_TMP:-}" ]; then
        echo "$T_NAME: kept $TMP $RAMDIR" >&2
    else
        rm -rf "$TMP"
        [ "$RAMDIR" = "$TMP" ] || rm -rf "$RAMDIR"
    fi
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

show() {   # show FILE LABEL
    if [ -s "$1" ]; then
        echo "---- $2 ----" >&2
        tail -c 6000 "$1" >&2
        echo "---- end $2 ----" >&2
    else
        echo "---- $2: (empty) ----" >&2
    fi
}

# fail MESSAGE...: report with every VM's logs and exit 1.
fail() {
    echo "FAIL: $T_NAME: $*" >&2
    local n
    for n in "${VM_NAMES[@]}"; do
        show "$TMP/$n.err" "$n stderr"
        show "$TMP/$n.out" "$n console"
    done
    for n in "$TMP"/*.log; do     # helpers' logs (migtool proxy)
        [ -e "$n" ] && show "$n" "$(basename "$n")"
    done
    exit 1
}

note() { echo "$T_NAME: $*"; }

guest() { echo "$GUEST_DIR/$1.elf"; }

# The workload: 256 MiB rewritten at RATE pages/s (~1.6 s a pass), verified
# after each pass, one ok line per pass (report_ms=0: no mid-pass lines).
# shellcheck disable=SC2034  # used by the tests
DIRTIER="mib=256 rate=${RATE:-40000} report_ms=0"

if [ "${MIG_SEC:-tls}" = insecure ]; then
    SEC_ARGS=(--insecure)
else
    : "${FERRY:?FERRY is not set (run through meson test)}"
    "$FERRY" tls init "$TMP/tls" --cn ferry-test >/dev/null || { echo "FAIL: ferry tls init" >&2; exit 1; }
    SEC_ARGS=(--tls-dir "$TMP/tls")
fi

# _start NAME ARGS...: run ferry-vmm in the background under NAME.
_start() {
    local name=$1; shift
    rm -f "$TMP/$name.sock"
    "$FERRY_VMM" "$@" "${SEC_ARGS[@]}" --control "$TMP/$name.sock" </dev/null >"$TMP/$name.out" 2>"$TMP/$name.err" &
    VM_PID[$name]=$!
    VM_NAMES+=("$name")
}

# boot NAME MEM DIRTIER_ARGS [EXTRA...]: a dirtier VM; waits for its control
# socket and its first console line.
boot() {
    local name=$1 mem=$2 args=$3; shift 3
    _start "$name" --kernel "$(guest dirtier)" --mem "$mem" --append "$args" "$@"
    wait_for 10 _has_line "$name" '^dirtier: start ' || fail "$name: the dirtier did not start"
    wait_for 10 test -S "$TMP/$name.sock" || fail "$name: no control socket"
}

# incoming NAME PORT [EXTRA...]: a destination on 127.0.0.1:PORT; waits until it listens.
incoming() {
    local name=$1 port=$2; shift 2
    _start "$name" --incoming "127.0.0.1:$port" "$@"
    wait_for 10 _has_line_err "$name" 'waiting for an incoming migration' ||
        fail "$name: does not listen on port $port"
}

_has_line() { grep -qE -- "$2" "$TMP/$1.out" 2>/dev/null; }
_has_line_err() { grep -qE -- "$2" "$TMP/$1.err" 2>/dev/null; }


alive() { kill -0 "${VM_PID[$1]}" 2>/dev/null; }

# wait_exit NAME SECONDS: wait for the VM process to exit; sets RC (124 if it
# did not, then it is killed).
wait_exit() {
    local name=$1 pid=${VM_PID[$1]}
    if ! wait_for "$2" eval "! kill -0 $pid 2>/dev/null"; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        RC=124
    else
        wait "$pid"
        RC=$?
    fi
    VM_PID[$name]=
}

# kill9 NAME: SIGKILL the VM and reap it.
kill9() {
    kill -KILL "${VM_PID[$1]}" 2>/dev/null
    wait "${VM_PID[$1]}" 2>/dev/null
    VM_PID[$1]=
}

# ctl NAME LINE...: requests on NAME's control socket, one reply line each.
ctl() {
    local name=$1; shift
    "$PYTHON" "$MIGCTL" req "$TMP/$name.sock" "$@"
}

# jget JSON PATH...: values at dotted paths, one a line.
jget() { "$PYTHON" "$MIGCTL" get "$@"; }

# vm_state NAME: the "state" of NAME's status reply.
vm_state() { jget "$(ctl "$1" '{"cmd":"status"}')" result.state; }

# migrate NAME PORT [JSON_ARGS]: start migrating NAME to 127.0.0.1:PORT;
# JSON_ARGS are extra members of "args", e.g. '"bandwidth_mbps":100'.
migrate() {
    local r
    r=$(ctl "$1" "{\"cmd\":\"migrate\",\"args\":{\"uri\":\"127.0.0.1:$2\"${MIG_STREAMS:+,\"streams\":$MIG_STREAMS}${3:+,$3}}}") ||
        fail "$1: migrate: no reply"
    [ "$(jget "$r" ok)" = true ] || fail "$1: migrate refused: $r"
}

# wait_phase NAME SECONDS PHASE[,PHASE]: poll migrate-status until PHASE;
# sets MS (the reply's result as JSON) and returns migctl's status
# (0 reached, 3 another terminal phase, 4 timeout).
wait_phase() {
    local r rc
    r=$("$PYTHON" "$MIGCTL" wait "$TMP/$1.sock" "$(limit "$2")" "$3")
    rc=$?
    MS=$r
    return $rc
}

# ms PATH...: fields of the last migrate-status reply.
ms() { jget "$MS" "${@/#/result.}"; }

# ---- the dirtier's console ---------------------------------------------------

# passes NAME: the pass numbers of NAME's progress lines, one a line.
passes() { sed -nE 's/^dirtier pass=([0-9]+) pages=[0-9]+ ok .*/\1/p' "$TMP/$1.out"; }

# last_pass NAME: the last pass reported on NAME's console (0 if none).
last_pass() { local p; p=$(passes "$1" | tail -n1); echo "${p:-0}"; }

# dirtier_failed NAME: NAME's console holds a verification failure.
dirtier_failed() { grep -qE '^dirtier: pass=[0-9]+ page [0-9]+' "$TMP/$1.out"; }

# progress NAME SECONDS COUNT: NAME's dirtier reports COUNT more ok passes
# within SECONDS (fails on a verification error or if the VM exits).
progress() {
    local name=$1 secs=$2 count=$3 start want end
    start=$(last_pass "$name")
    want=$((start + count))
    end=$((SECONDS + $(limit "$secs")))
    while [ "$(last_pass "$name")" -lt "$want" ]; do
        dirtier_failed "$name" && fail "$name: the dirtier found corrupted memory"
        alive "$name" || fail "$name: ferry-vmm exited while the dirtier should run"
        [ $SECONDS -ge $end ] && fail "$name: the dirtier made no progress past pass $start in ${secs}s (wanted pass $want)"
        sleep 0.05
    done
    dirtier_failed "$name" && fail "$name: the dirtier found corrupted memory"
    return 0
}

# console_sequence NAME...: the VMs' consoles, concatenated in order (one
# guest's life across hops; a line may be split at a switchover), hold a
# gapless run of ok progress lines 1..N (mid-pass "dirtier progress" lines
# allowed for the pass under way) and nothing unexpected; prints N.
console_sequence() {
    local n files=()
    for n in "$@"; do files+=("$TMP/$n.out"); done
    cat "${files[@]}" | "$PYTHON" -c '
import re, sys
want, page = 1, -1
for ln in sys.stdin.read().splitlines():
    if ln.startswith("dirtier: start "):
        if want != 1:
            sys.exit("the dirtier started again after pass %d" % (want - 1))
        continue
    m = re.match(r"dirtier progress pass=(\d+) page=(\d+) max_gap_us=\d+$", ln)
    if m:
        if int(m.group(1)) != want or int(m.group(2)) <= page:
            sys.exit("progress line %r during pass %d after page %d" % (ln, want, page))
        page = int(m.group(2))
        continue
    m = re.match(r"dirtier pass=(\d+) pages=\d+ ok pages_per_s=\d+ ns_per_page=[\d.]+ verify_ns_per_page=\d+ max_gap_us=\d+$", ln)
    if not m:
        sys.exit("unexpected console line: %r" % ln)
    if int(m.group(1)) != want:
        sys.exit("ok line for pass %s where pass %d was due" % (m.group(1), want))
    want, page = want + 1, -1
print(want - 1)'
}

# first_gap NAME: max_gap_us of NAME's first console line (it covers the
# switchover when NAME is a destination); "?" when the line was split.
first_gap() {
    local g
    g=$(head -n1 "$TMP/$1.out" | sed -nE 's/^dirtier .* max_gap_us=([0-9]+)$/\1/p')
    echo "${g:-?}"
}

# expect_dest_error NAME REGEX: NAME (a destination) exited with status 1-127
# (not a signal), its last stderr line is "incoming migration failed: ..."
# matching REGEX, it never ran the guest and printed no sanitizer report.
expect_dest_error() {
    local name=$1 re=$2 last
    [ "$RC" = 124 ] && fail "$name: still running, expected it to exit with an error"
    [ "$RC" -ge 128 ] && fail "$name: killed by signal $((RC - 128)), expected a clean error exit"
    [ "$RC" -ne 0 ] || fail "$name: exited 0, expected a failure"
    sanitizer_clean "$TMP/$name.err" || fail "$name: sanitizer report"
    last=$(tail -n1 "$TMP/$name.err")
    [[ $last =~ ^ferry-vmm:\ incoming\ migration\ failed:\ .+ ]] ||
        fail "$name: last stderr line is not 'incoming migration failed: ...': $last"
    [[ $last =~ $re ]] || fail "$name: error '$last' does not match /$re/"
    [ -s "$TMP/$name.out" ] && fail "$name: printed guest output, but it must never run the VM"
    return 0
}

sanitizer_clean() {
    ! grep -qE 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|SUMMARY: (Address|Undefined|Leak)' "$1"
}

elapsed() { echo "$((SECONDS - T0))s"; }

# finish SUMMARY: quit every VM still running (so sanitizer builds report
# leaks at exit), require clean exits and sanitizer-clean stderr from all
# VMs, print the summary line and exit 0.
finish() {
    local n
    for n in "${VM_NAMES[@]}"; do
        [ -n "${VM_PID[$n]}" ] || continue
        alive "$n" || { wait_exit "$n" 1; continue; }
        ctl "$n" '{"cmd":"quit"}' >/dev/null 2>&1 || fail "$n: quit failed"
        wait_exit "$n" 20
        [ "$RC" = 0 ] || fail "$n exited with status $RC after quit"
    done
    for n in "${VM_NAMES[@]}"; do
        sanitizer_clean "$TMP/$n.err" || fail "$n: sanitizer report on stderr"
    done
    note "$* time=$(elapsed)"
    exit 0
}
