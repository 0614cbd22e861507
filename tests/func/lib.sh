# Shared helpers for the functional tests (sourced; bash).
# shellcheck shell=bash disable=SC2034  # variables here are used by the tests that source it
#
# Environment (set by tests/func/meson.build):
#   FERRY_VMM   path of the ferry-vmm binary under test
#   GUEST_DIR   directory holding the micro-guest ELFs (hello.elf, ...)
#   SRC         project source root
# Tests are quiet on success; on failure they print what went wrong
# (with the captured output of the failing command) and exit 1.

set -u -o pipefail

: "${FERRY_VMM:?FERRY_VMM is not set (run through meson test)}"
: "${GUEST_DIR:?GUEST_DIR is not set (run through meson test)}"
: "${SRC:?SRC is not set (run through meson test)}"
# shellcheck source=tests/limits.sh
. "$SRC/tests/limits.sh"

# The interpreter itself, not a version-manager shim (pyenv's costs ~0.3 s a call).
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
python3() { "$PYTHON" "$@"; }

T_NAME=$(basename "$0" .sh)${T_ARGS:+ $T_ARGS}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-func.XXXXXX")
BG_PIDS=()

_cleanup() {
    local p
    # BG_PIDS are timeout(1) processes: SIGTERM reaches ferry-vmm through
    # them, and they SIGKILL it 5 s later if it is still there.
    for p in "${BG_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    if [ -n "${KEEP_TMP:-}" ]; then
        echo "$T_NAME: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap _cleanup EXIT

# fail MESSAGE...: report and exit 1.
fail() {
    echo "FAIL: $T_NAME: $*" >&2
    exit 1
}

# show FILE LABEL: dump a captured file into the failure report.
show() {
    local f=$1 label=${2:-$1}
    if [ -s "$f" ]; then
        echo "---- $label ----" >&2
        head -c 8000 "$f" >&2
        echo "---- end $label ----" >&2
    else
        echo "---- $label: (empty) ----" >&2
    fi
}

guest() { echo "$GUEST_DIR/$1.elf"; }

# with_timeout SECONDS CMD...: run CMD, SIGTERM after SECONDS, SIGKILL 5 s later.
# Exit status as timeout(1): 124 = timed out.
with_timeout() {
    local secs=$1; shift
    timeout --kill-after=5 "$(limit "$secs")" "$@"
}

# vmm TIMEOUT ARGS...: run ferry-vmm; sets RC, OUT (stdout file), ERR (stderr file).
# The console goes nowhere unless ARGS say otherwise; stdin is /dev/null.
VMM_N=0 VMM_CMD="(no ferry-vmm run yet)" RC=none OUT=/dev/null ERR=/dev/null
vmm() {
    local secs=$1; shift
    VMM_N=$((VMM_N + 1))
    OUT=$TMP/vmm$VMM_N.out ERR=$TMP/vmm$VMM_N.err
    VMM_CMD="ferry-vmm $*"
    with_timeout "$secs" "$FERRY_VMM" "$@" </dev/null >"$OUT" 2>"$ERR"
    RC=$?
    return 0
}

# vmm_report: the last vmm run's command, status and output (for failures).
vmm_report() {
    echo "command: $VMM_CMD" >&2
    echo "exit status: $RC" >&2
    show "$OUT" stdout
    show "$ERR" stderr
}

# vfail MESSAGE: fail with the last vmm run's details.
vfail() {
    echo "FAIL: $T_NAME: $*" >&2
    vmm_report
    exit 1
}

# sanitizer_clean FILE: no ASan/UBSan/LSan report in FILE.
sanitizer_clean() {
    ! grep -qE 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|SUMMARY: (Address|Undefined|Leak)' "$1"
}

# expect_exit WANT: the last vmm run exited with status WANT, no timeout,
# no signal, no sanitizer report.
expect_exit() {
    local want=$1
    [ "$RC" -eq 124 ] && vfail "timed out"
    [ "$RC" -ge 128 ] && vfail "killed by signal $((RC - 128))"
    sanitizer_clean "$ERR" || vfail "sanitizer report on stderr"
    [ "$RC" -eq "$want" ] || vfail "exit status $RC, expected $want"
}

# expect_line FILE REGEX [WHAT]: some line of FILE matches the ERE.
expect_line() {
    grep -qE -- "$2" "$1" || vfail "${3:-no line matching /$2/ in $(basename "$1")}"
}

# expect_no_line FILE REGEX [WHAT]
expect_no_line() {
    ! grep -qE -- "$2" "$1" || vfail "${3:-unexpected line matching /$2/ in $(basename "$1")}"
}

# count_lines FILE REGEX: how many lines match.
count_lines() {
    grep -cE -- "$2" "$1" 2>/dev/null || true
}


# vmm_bg NAME ARGS...: start ferry-vmm in the background (60 s hard limit) at
# nice BG_NICE (default 5: a guest spinning on every vCPU must not starve the
# test driving it); sets BG_PID, BG_OUT, BG_ERR. Collect it with vmm_bg_wait.
vmm_bg() {
    local name=$1; shift
    BG_OUT=$TMP/$name.out BG_ERR=$TMP/$name.err
    VMM_CMD="ferry-vmm $*"
    with_timeout 60 nice -n "${BG_NICE:-5}" "$FERRY_VMM" "$@" </dev/null >"$BG_OUT" 2>"$BG_ERR" &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
}

# vmm_bg_wait SECONDS: wait for the background ferry-vmm to exit; sets RC,
# OUT, ERR like vmm. RC=124 if it is still running after SECONDS (then killed).
vmm_bg_wait() {
    local secs=$1
    OUT=$BG_OUT ERR=$BG_ERR
    if ! wait_for "$secs" _bg_exited; then
        kill -TERM "$BG_PID" 2>/dev/null   # timeout(1) forwards it, then SIGKILLs
        wait "$BG_PID" 2>/dev/null
        RC=124
        return 0
    fi
    wait "$BG_PID"
    RC=$?
    return 0
}
_bg_exited() { ! kill -0 "$BG_PID" 2>/dev/null; }

# ctl SOCKET LINE...: send each line on one control connection and print one
# reply line per request (tests/func/ctl.py).
ctl() {
    python3 "$SRC/tests/func/ctl.py" "$@"
}

# jget JSON PATH...: the value at each dotted PATH (a number indexes an array) of a JSON document, one a
# line (strings bare, others as JSON); "<missing>" when absent, "<bad json>"
# when the document is not JSON.
jget() {
    python3 -c '
import json, sys
try:
    doc = json.loads(sys.argv[1])
except ValueError:
    doc = None
for path in sys.argv[2:]:
    v = doc
    if doc is None:
        v = "<bad json>"
    for k in path.split(".") if doc is not None else []:
        if isinstance(v, dict) and k in v:
            v = v[k]
        elif isinstance(v, list) and k.isdigit() and int(k) < len(v):
            v = v[int(k)]
        else:
            v = "<missing>"
            break
    print(v if isinstance(v, str) else json.dumps(v))' "$@"
}

# expect_json JSON PATH=VALUE...: each PATH holds VALUE (as jget prints it);
# PATH~GLOB: it matches the shell pattern GLOB.
expect_json() {
    local doc=$1; shift
    local paths=() a
    for a in "$@"; do paths+=("${a%%[=~]*}"); done
    local vals
    mapfile -t vals < <(jget "$doc" "${paths[@]}")
    local i=0 want op
    for a in "$@"; do
        want=${a#*[=~]}
        op=${a:${#paths[$i]}:1}
        if [ "$op" = "=" ]; then
            [ "${vals[$i]}" = "$want" ] || vfail "reply $doc: ${paths[$i]} is '${vals[$i]}', expected '$want'"
        else
            # shellcheck disable=SC2053
            [[ ${vals[$i]} == $want ]] || vfail "reply $doc: ${paths[$i]} is '${vals[$i]}', expected to match '$want'"
        fi
        i=$((i + 1))
    done
}

# ---- guest RAM files (--mem-path): for RAM below 3 GiB, file offset = GPA ----

# flip_bit FILE OFFSET [BIT]: invert one bit of the byte at OFFSET.
flip_bit() {
    python3 - "$@" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2], 0)
bit = int(sys.argv[3]) if len(sys.argv) > 3 else 0
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    if len(b) != 1:
        sys.exit("flip_bit: offset %#x beyond the end of %s" % (off, path))
    f.seek(off)
    f.write(bytes([b[0] ^ (1 << bit)]))
PY
}

# read_u64 FILE OFFSET: the little-endian qword at OFFSET (decimal).
read_u64() {
    python3 -c '
import struct, sys
with open(sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2], 0))
    print(struct.unpack("<Q", f.read(8))[0])' "$1" "$2"
}

# dirtier_hdr FILE [BASE]: struct dirtier_hdr (guests/dirtier.h) of the
# working set at GPA BASE (default 16 MiB) as shell assignments hdr_magic=...
DIRTIER_BASE=$((0x1000000))
dirtier_hdr() {
    python3 - "$1" "${2:-$DIRTIER_BASE}" <<'PY'
import struct, sys
names = ["magic", "base", "npages", "stride", "passes", "gen", "done", "verified",
         "tsc_khz", "max_gap_ns", "max_gap_at"]
with open(sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2], 0) + 64)
    vals = struct.unpack("<%dQ" % len(names), f.read(8 * len(names)))
for n, v in zip(names, vals):
    print("hdr_%s=%d" % (n, v))
PY
}
