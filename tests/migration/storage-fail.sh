#!/bin/bash
# Shared-nothing migrations that fail: each time the VM runs on at the source
# on its own image (the guest keeps writing; once quit, its image checks out
# block by block), the destination exits with the reason and leaves no
# partial image behind.
#  1. the destination's store is a 16 MiB tmpfs for 32 MiB of data: ENOSPC,
#     and the source's error names it;
#  2. cancel while the disk is being copied (a capped link);
#  3. kill -9 of the destination while the disk is being copied.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/storage-lib.sh"

writer a

# 1. destination full
dest d1 7850 tmpfs:16m
migrate a 7850 "\"storage_to\":\"$IMG\""
wait_phase a 60 failed || fail "full destination: phase '$(ms phase)', expected failed"
err1=$(ms error)
[[ $err1 =~ No\ space\ left\ on\ device ]] || fail "full destination: error '$err1' does not say the disk is full"
wait_exit d1 10
expect_dest_error d1 'No space left on device'
source_survives a

# 2. cancel mid-copy
dest d2 7851 "$TMP/dst-store"
migrate a 7851 "\"storage_to\":\"$IMG\",\"bandwidth_mbps\":40"
wait_for 20 sending_disk a || fail "cancel: the disk copy did not start"
ctl a '{"cmd":"migrate-cancel"}' >/dev/null
wait_phase a 20 cancelled || fail "cancel: phase '$(ms phase)', expected cancelled ($(ms error))"
sent2=$(ms disk_bytes_sent)
[ "$sent2" -lt $((BLOCKS * 4096)) ] || fail "cancel: the copy had finished ($sent2 bytes) before the cancel"
wait_exit d2 10
expect_dest_error d2 'cancelled by the operator'
[ -z "$(ls "$TMP/dst-store")" ] || fail "cancel: the destination left $(ls "$TMP/dst-store")"
source_survives a

# 3. kill -9 of the destination mid-copy
dest d3 7852 "$TMP/dst-store"
migrate a 7852 "\"storage_to\":\"$IMG\",\"bandwidth_mbps\":40"
wait_for 20 sending_disk a || fail "kill: the disk copy did not start"
kill9 d3
wait_phase a 30 failed || fail "kill: phase '$(ms phase)', expected failed"
err3=$(ms error)
[[ $err3 =~ (connection|Connection|reset|Broken\ pipe|closed) ]] || fail "kill: error '$err3' does not name the lost connection"
source_survives a

ctl a '{"cmd":"quit"}' >/dev/null
min=$(writes a)
wait_exit a 20
[ "$RC" = 0 ] || fail "a exited with status $RC after quit"
src=$(blkcheck "$TMP/src-store/vm.img" "$min" "source image")
finish "full: '$err1'; cancelled after $sent2 disk bytes; kill: '$err3'; source image $src"
