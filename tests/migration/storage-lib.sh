# Shared-nothing migration tests (sourced after lib.sh; bash).
#
# Each ferry-vmm runs in a mount namespace of its own (unshare -m) in which
# $STORE, the directory of the disk image, is a bind mount of its host's own
# directory ($TMP/src-store, $TMP/dst-store) or a small tmpfs: the two sides
# see different files at the same path, so storage cannot be shared by
# accident. The guest is the blkwriter (guests/blkwriter.c), writing numbered
# 4 KiB blocks over the first half of a 64 MiB sparse image all the time;
# images are checked block by block (tests/func/blkcheck.py).

command -v unshare >/dev/null && [ "$(id -u)" = 0 ] || { echo "SKIP: needs root and unshare"; exit 77; }

STORE=$TMP/store
IMG=$STORE/vm.img
BLOCKS=8192                          # 32 MiB of data in a 64 MiB image
mkdir -p "$STORE" "$TMP/src-store" "$TMP/dst-store"
truncate -s 64M "$TMP/src-store/vm.img"

# ns_start NAME MOUNT ARGS...: ferry-vmm under NAME (as lib.sh's _start) in a
# mount namespace where $STORE is MOUNT: a directory (bound) or "tmpfs:SIZE".
ns_start() {
    local name=$1 mnt=$2; shift 2
    local how="--bind $mnt"
    [[ $mnt == tmpfs:* ]] && how="-t tmpfs -o size=${mnt#tmpfs:} tmpfs"
    rm -f "$TMP/$name.sock"
    # shellcheck disable=SC2016  # "$@" is the inner shell's
    unshare -m --propagation private sh -c "mount $how $STORE && exec \"\$@\"" sh \
        "$FERRY_VMM" "$@" "${SEC_ARGS[@]}" --control "$TMP/$name.sock" </dev/null >"$TMP/$name.out" 2>"$TMP/$name.err" &
    VM_PID[$name]=$!
    VM_NAMES+=("$name")
}

# writer NAME [RATE]: the blkwriter on the source side's image.
writer() {
    ns_start "$1" "$TMP/src-store" --kernel "$(guest blkwriter)" --mem 64M --disk "$IMG" \
        --append "blocks=$BLOCKS report=256 rate=${2:-5000}"
    wait_for 30 first_pass_done "$1" || fail "$1: the blkwriter did not write its first pass"
}

# dest NAME PORT MOUNT: a destination on 127.0.0.1:PORT in its own namespace.
dest() {
    ns_start "$1" "$3" --incoming "127.0.0.1:$2"
    wait_for 10 _has_line_err "$1" 'waiting for an incoming migration' ||
        fail "$1: does not listen on port $2"
}

# writes NAME: the writes the guest's last progress line on NAME's console counted.
writes() {
    local w
    w=$(grep -ao 'writes=[0-9]*' "$TMP/$1.out" 2>/dev/null | tail -1)
    echo "${w:-writes=0}" | cut -d= -f2
}
first_pass_done() { [ "$(writes "$1")" -ge $BLOCKS ] && [ -S "$TMP/$1.sock" ]; }
writes_beyond() { [ "$(writes "$1")" -gt "$2" ]; }

# blkcheck IMAGE MIN_WRITES WHAT: every block whole and in order, at least MIN_WRITES of them.
blkcheck() {
    local out
    out=$("$PYTHON" "$SRC/tests/func/blkcheck.py" "$1" $BLOCKS "$2") || fail "$3: $out"
    echo "$out"
}

# disk_sent NAME: disk data bytes the source has sent so far.
disk_sent() { jget "$(ctl "$1" '{"cmd":"migrate-status"}')" result.disk_bytes_sent; }
sending_disk() { [ "$(disk_sent "$1")" -gt 0 ]; }

# source_survives NAME: after a failed shared-nothing migration the VM runs on
# with its disk: it keeps writing, and once quit its image checks out.
source_survives() {
    [ "$(vm_state "$1")" = running ] || fail "$1 is '$(vm_state "$1")', expected running"
    local w
    w=$(writes "$1")
    wait_for 20 writes_beyond "$1" $((w + 2 * BLOCKS)) || fail "$1: the guest stopped writing after the failure"
}
