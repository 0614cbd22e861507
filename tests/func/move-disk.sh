#!/bin/bash
# Live disk move (ferry vm move-disk; devices/blk_move.h) under a guest that
# writes numbered blocks all the time (guests/blkwriter.c), checked block by
# block (tests/func/blkcheck.py).
#   move-disk.sh live     move (bandwidth-capped), then again with --delete-source: every
#                         block reads back from the new image, the VM's fd and status
#                         show it, the old image stays consistent, holes stay holes
#   move-disk.sh cancel   cancel during the copy and during the mirror phase, quit during
#                         the copy; migrate is refused while a move runs
#   move-disk.sh kill     kill -9 of ferry-vmm during the copy, the mirror phase, the switch
#                         and after it: which image is authoritative, and it is consistent
#   move-disk.sh enospc   destination on a full tmpfs: clean abort, VM on the old image
#   move-disk.sh bad      bad input: no disk, unknown disk, same file, existing target,
#                         read-only target, a second move
# shellcheck source=tests/func/lib.sh
source "$(dirname "$0")/lib.sh"
: "${FERRY_CLI:?FERRY_CLI is not set (run through meson test)}"

MODE=${1:?usage: move-disk.sh live|cancel|kill|enospc|bad}
T_NAME="move-disk $MODE"
BLOCKS=8192          # 32 MiB of numbered 4 KiB blocks at the start of each image
# The copy a test interrupts (cancel, quit, kill -9) is capped at 8 Mbit/s:
# its 32 MiB would take 34 s, so the interruption lands in it even when the
# test's own steps crawl (in the lab's emulator, a copy at 80 Mbit/s was over
# before the cancel); the test ends it at once, so the cap costs no time.
CUT_MBPS=8
# The test hooks that hold a move in its mirror phase (longer than the test's
# waits there, stretched like them: tests/limits.sh) or in its switch (the
# most the hook allows): the cancel or kill -9 that follows ends them.
HOLD_MS=$(($(limit 40) * 1000)) SWITCH_MS=60000
MOUNTS=()
_umount_all() {
    local m
    for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null; done
}
trap '_umount_all; _cleanup' EXIT

ferry() { "$FERRY_CLI" -S "$SOCK" "$@"; }
req() { ctl "$SOCK" "$1"; }
mstatus() { req '{"cmd":"move-disk-status"}'; }
phase() { jget "$(mstatus)" result.phase; }

# start_vm NAME IMAGE [ARG...]: the blkwriter (with ARGs) on IMAGE (a fresh
# sparse 256 MiB file), running once its first pass is on the disk.
start_vm() {
    SOCK=$TMP/$1.sock
    rm -f "$2"
    truncate -s 256M "$2"
    vmm_bg "$1" --kernel "$(guest blkwriter)" --mem 64M --disk "$2" --control "$SOCK" \
        --append "blocks=$BLOCKS report=256 ${*:3}"
    wait_for 30 first_pass_done || vfail "the blkwriter did not write its first pass"
    VPID=$(pgrep -f -- "^$FERRY_VMM .*--control $SOCK" | head -1)
    [ -n "$VPID" ] || vfail "cannot find ferry-vmm's pid"
}
first_pass_done() { [ "$(last_writes)" -ge $BLOCKS ] && [ -S "$SOCK" ]; }
# last_writes: how many writes the guest's last progress line said it completed
last_writes() {
    local w
    w=$(grep -o 'writes=[0-9]*' "$BG_OUT" 2>/dev/null | tail -1)
    echo "${w#writes=}"
    [ -n "$w" ] || echo 0
}
writes_beyond() { [ "$(last_writes)" -gt "$1" ]; }
wait_phase() {  # wait_phase PHASE [SECONDS]
    wait_for "${2:-20}" phase_is "$1" || vfail "move phase is $(phase), expected $1: $(mstatus)"
}
phase_is() { [ "$(phase)" = "$1" ]; }
copied_some() { [ "$(jget "$(mstatus)" result.bytes_copied)" -gt 0 ]; }
# uses_image PATH: ferry-vmm has PATH open (/proc/PID/fd)
uses_image() {
    local f
    for f in /proc/"$VPID"/fd/*; do
        [ "$(readlink "$f")" = "$1" ] && return 0
    done
    return 1
}
expect_on() {   # expect_on PATH: the VM's disk is PATH, by status and by its open fd
    local st
    st=$(ferry vm status --json) || vfail "vm status failed"
    p=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["disks"][0]["path"])' "$st")
    [ "$p" = "$1" ] || vfail "vm status says the disk is $p, expected $1: $st"
    uses_image "$1" || vfail "ferry-vmm has no fd on $1: $(ls -l /proc/"$VPID"/fd)"
}
quit_vm() {
    req '{"cmd":"quit"}' >/dev/null
    vmm_bg_wait 20
    expect_exit 0
}
# check IMAGE [MIN_WRITES] WHAT: every block of IMAGE valid, holding at least MIN_WRITES
check() {
    local out
    out=$(python3 "$SRC/tests/func/blkcheck.py" "$1" $BLOCKS "${2:-0}") || vfail "$3: $out"
}
kill_vm() {
    kill -9 "$VPID"
    vmm_bg_wait 10
    [ "$RC" -ge 128 ] || vfail "ferry-vmm was not killed (exit $RC)"
}

case $MODE in
live)
    # The guest writes 5000 blocks/s: the capped copy (~0.7 s for 32 MiB) sees a
    # good part of the disk rewritten, and the quit right after the switch
    # leaves most of the new image as the move made it.
    start_vm live "$TMP/a.img" rate=5000
    out=$(ferry vm move-disk vda --to "$TMP/b.img" --bandwidth-mbps 400 --json 2>&1) ||
        vfail "move-disk failed: $out"
    expect_json "$out" phase=switched target="$TMP/b.img" source="$TMP/a.img" dirty_blocks=0
    [ "$(jget "$out" bytes_copied)" -ge $((32 << 20)) ] || vfail "copied less than the data: $out"
    expect_on "$TMP/b.img"
    uses_image "$TMP/a.img" && vfail "ferry-vmm still has the old image open"
    [ -e "$TMP/b.img.ferry-partial" ] && vfail "partial file left behind"
    ferry vm pause >/dev/null || vfail "pause failed"
    w=$(last_writes)
    quit_vm
    check "$TMP/b.img" "$w" "the new image right after the switch"
    check "$TMP/a.img" 0 "the old image (left as it was at the switch)"
    # sparse: 32 MiB of data in a 256 MiB image stays about 32 MiB
    kib=$(du -k "$TMP/b.img" | cut -f1)
    [ "$kib" -lt $((48 << 10)) ] || fail "the new image is not sparse: $kib KiB allocated"

    # a guest at full speed, a move with --delete-source and no cap (text
    # output), then more writes on the new image
    start_vm live2 "$TMP/c.img"
    out=$(ferry vm move-disk 0 --to "$TMP/d.img" --delete-source 2>&1) || vfail "second move failed: $out"
    [[ $out == *"vda moved to $TMP/d.img"*"source deleted"* ]] || vfail "unexpected output: $out"
    [ -e "$TMP/c.img" ] && vfail "--delete-source left $TMP/c.img"
    expect_on "$TMP/d.img"
    out=$(ferry vm move-disk-status) || vfail "move-disk-status failed"
    [[ $out == "vda moved to $TMP/d.img"* ]] || vfail "move-disk-status: $out"
    w=$(last_writes)
    wait_for 30 writes_beyond $((w + BLOCKS)) || vfail "the guest stopped writing"
    quit_vm
    expect_no_line "$OUT" 'failed: status'
    check "$TMP/d.img" "$(last_writes)" "the new image after a move and a full pass more"
    ;;
cancel)
    start_vm cancel "$TMP/a.img"
    # during the copy
    req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/b.img\",\"bandwidth_mbps\":$CUT_MBPS}}" >/dev/null
    wait_for 10 copied_some || vfail "the copy does not start: $(mstatus)"
    phase_is copy || vfail "not copying: $(mstatus)"
    out=$(ferry vm move-disk-cancel vda 2>&1) || vfail "move-disk-cancel failed: $out"
    [[ $out == *cancelled* ]] || vfail "move-disk-cancel: $out"
    [ -e "$TMP/b.img" ] || [ -e "$TMP/b.img.ferry-partial" ] && vfail "cancel left the new image behind"
    expect_on "$TMP/a.img"
    # during the mirror phase (held there for the test); migrate is refused meanwhile
    req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/b.img\",\"test_hold_ms\":$HOLD_MS}}" >/dev/null
    wait_phase mirror
    r=$(req '{"cmd":"migrate","args":{"uri":"127.0.0.1:1"}}')
    expect_json "$r" ok=false error~"disk vda is being moved*"
    w=$(last_writes)
    wait_for 30 writes_beyond $((w + BLOCKS)) || vfail "the guest stopped writing while mirrored"
    [ "$(jget "$(mstatus)" result.mirrored_writes)" -gt 0 ] || vfail "no mirrored writes: $(mstatus)"
    out=$(ferry vm move-disk-cancel 2>&1) || vfail "move-disk-cancel failed: $out"
    phase_is cancelled || vfail "not cancelled: $(mstatus)"
    [ -e "$TMP/b.img" ] || [ -e "$TMP/b.img.ferry-partial" ] && vfail "cancel left the new image behind"
    expect_on "$TMP/a.img"
    out=$(ferry vm move-disk-cancel 2>&1) && vfail "a second cancel succeeded: $out"
    # the VM quits in the middle of a move: as a cancel
    req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/b.img\",\"bandwidth_mbps\":$CUT_MBPS}}" >/dev/null
    wait_for 10 copied_some || vfail "the copy does not start: $(mstatus)"
    quit_vm
    [ -e "$TMP/b.img" ] || [ -e "$TMP/b.img.ferry-partial" ] && vfail "quit during a move left the new image behind"
    expect_line "$ERR" "move to .* cancelled; the disk stays on $TMP/a.img"
    check "$TMP/a.img" "$(last_writes)" "the old image after two cancels and a quit"
    echo "move-disk cancel: authoritative image: the old one ($TMP/a.img), all $BLOCKS blocks valid"
    ;;
kill)
    # during the copy
    start_vm k1 "$TMP/a.img"
    req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/b.img\",\"bandwidth_mbps\":$CUT_MBPS}}" >/dev/null
    wait_for 10 copied_some || vfail "the copy does not start: $(mstatus)"
    kill_vm
    [ -e "$TMP/b.img" ] && fail "killed in the copy, yet $TMP/b.img exists (the crash rule would trust it)"
    check "$TMP/a.img" "$(last_writes)" "the old image after kill -9 during the copy"
    echo "move-disk kill in copy: authoritative: the old image (no $TMP/b.img), consistent"
    # during the mirror phase
    start_vm k2 "$TMP/a2.img"
    req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/b2.img\",\"test_hold_ms\":$HOLD_MS}}" >/dev/null
    wait_phase mirror
    w=$(last_writes)
    wait_for 20 writes_beyond $((w + BLOCKS / 2)) || vfail "the guest stopped writing while mirrored"
    kill_vm
    [ -e "$TMP/b2.img" ] && fail "killed in the mirror phase, yet $TMP/b2.img exists"
    check "$TMP/a2.img" "$(last_writes)" "the old image after kill -9 during the mirror phase"
    echo "move-disk kill in mirror: authoritative: the old image (no $TMP/b2.img), consistent"
    # in the switch, after the rename (the record), before the fd swap: the
    # guest's requests wait meanwhile
    start_vm k4 "$TMP/a4.img"
    req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/b4.img\",\"test_switch_ms\":$SWITCH_MS}}" >/dev/null
    wait_for 20 test -e "$TMP/b4.img" || vfail "no switch: $(mstatus)"
    phase_is mirror || vfail "not in the switch: $(mstatus)"
    kill_vm
    check "$TMP/b4.img" "$(last_writes)" "the new image after kill -9 in the switch"
    check "$TMP/a4.img" "$(last_writes)" "the old image after kill -9 in the switch"
    cmp -s "$TMP/a4.img" "$TMP/b4.img" || fail "killed in the switch: the images differ"
    echo "move-disk kill in switch: authoritative: the new image ($TMP/b4.img exists), identical to the old"
    # after the switch
    start_vm k3 "$TMP/a3.img"
    out=$(ferry vm move-disk vda --to "$TMP/b3.img" --json 2>&1) || vfail "move-disk failed: $out"
    w=$(last_writes)
    wait_for 10 writes_beyond $((w + BLOCKS / 2)) || vfail "the guest stopped writing"
    kill_vm
    [ -e "$TMP/b3.img" ] || fail "switched, yet $TMP/b3.img does not exist"
    check "$TMP/b3.img" "$(last_writes)" "the new image after kill -9 after the switch"
    echo "move-disk kill after switch: authoritative: the new image ($TMP/b3.img exists), consistent"
    ;;
enospc)
    [ "$(id -u)" = 0 ] || { echo "move-disk enospc: SKIP (needs root to mount a tmpfs)"; exit 77; }
    mkdir -p "$TMP/small"
    mount -t tmpfs -o size=16M ferry-move-test "$TMP/small" || { echo "SKIP: cannot mount a tmpfs"; exit 77; }
    MOUNTS+=("$TMP/small")
    start_vm full "$TMP/a.img"
    out=$(ferry vm move-disk vda --to "$TMP/small/b.img" 2>&1) && vfail "move to a full tmpfs succeeded: $out"
    [[ $out == *"No space left on device"*"the VM stays on $TMP/a.img"* ]] || vfail "unexpected error: $out"
    st=$(mstatus)
    expect_json "$st" result.phase=failed result.error~"*No space left on device*"
    [ -z "$(ls -A "$TMP/small")" ] || vfail "the aborted move left files: $(ls -A "$TMP/small")"
    expect_on "$TMP/a.img"
    w=$(last_writes)
    wait_for 30 writes_beyond $((w + BLOCKS)) || vfail "the guest stopped writing after the abort"
    quit_vm
    expect_no_line "$OUT" 'failed: status'
    check "$TMP/a.img" "$(last_writes)" "the old image after ENOSPC"
    ;;
bad)
    start_vm bad "$TMP/a.img"
    "$FERRY_CLI" -S "$SOCK" vm move-disk --to "$TMP/x.img" 2>"$TMP/e"; rc=$?
    [ $rc = 2 ] && grep -q "needs the disk" "$TMP/e" || vfail "no disk name: exit $rc, $(cat "$TMP/e")"
    "$FERRY_CLI" -S "$SOCK" vm move-disk vda 2>"$TMP/e"; rc=$?
    [ $rc = 2 ] && grep -q "needs --to" "$TMP/e" || vfail "no --to: exit $rc, $(cat "$TMP/e")"
    "$FERRY_CLI" -S "$SOCK" vm status --delete-source 2>"$TMP/e"; rc=$?
    [ $rc = 2 ] || vfail "--delete-source on status: exit $rc"
    expect_json "$(req '{"cmd":"move-disk","args":{"to":"/tmp/x"}}')" ok=false error~'*needs "disk"*'
    expect_json "$(req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vdz\",\"to\":\"$TMP/x\"}}")" \
        ok=false error~"no disk vdz*"
    expect_json "$(req '{"cmd":"move-disk","args":{"disk":"vda"}}')" ok=false error~'*needs "to"*'
    expect_json "$(req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/a.img\"}}")" \
        ok=false error~"*is the disk's image already"
    ln "$TMP/a.img" "$TMP/hard.img"
    expect_json "$(req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/hard.img\"}}")" \
        ok=false error~"*is the disk's image already"
    echo x >"$TMP/exists.img"
    out=$(ferry vm move-disk vda --to "$TMP/exists.img" 2>&1) && vfail "existing target accepted: $out"
    [[ $out == *"exists (force replaces it)"* ]] || vfail "existing target: $out"
    [ "$(cat "$TMP/exists.img")" = x ] || vfail "the refused move touched the existing target"
    if [ "$(id -u)" = 0 ] && mkdir -p "$TMP/ro" && mount -t tmpfs -o ro,size=1M ferry-ro "$TMP/ro"; then
        MOUNTS+=("$TMP/ro")
        out=$(ferry vm move-disk vda --to "$TMP/ro/b.img" 2>&1) && vfail "read-only target accepted: $out"
        [[ $out == *"Read-only file system"* ]] || vfail "read-only target: $out"
    fi
    out=$(ferry vm move-disk-cancel 2>&1) && vfail "cancel without a move succeeded: $out"
    req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/b.img\",\"bandwidth_mbps\":$CUT_MBPS}}" >/dev/null
    r=$(req "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$TMP/c.img\"}}")
    expect_json "$r" ok=false error~"*a move is already in progress"
    expect_json "$(req '{"cmd":"move-disk","args":{"disk":"vda","to":"x","bandwidth_mbps":-1}}')" ok=false
    # --force replaces an existing target, after the move in flight is done
    ferry vm move-disk-cancel >/dev/null || vfail "cancel failed"
    out=$(ferry vm move-disk vda --to "$TMP/exists.img" --force 2>&1) || vfail "--force move failed: $out"
    expect_on "$TMP/exists.img"
    quit_vm
    check "$TMP/exists.img" "$(last_writes)" "the image moved over an existing file"
    ;;
*)
    fail "unknown mode $MODE"
    ;;
esac
exit 0
