#!/bin/bash
# Shared-nothing live migration (storage_to): the blkwriter guest writes
# numbered blocks all through a migration between two ferry-vmm whose mount
# namespaces see different files at the image's path (through the CLI, TLS,
# default streams, digests after the hand-over), then on through a second hop
# to a third (one stream, digests in the pause). The destinations run on
# their own files (the open fd's inode, status), no partial file is left, and
# afterwards each image holds every block the guest wrote while it was the
# VM's, in order (the last one at least what the guest counted); holes stayed
# holes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/storage-lib.sh"

writer a
[ -e "$TMP/dst-store/vm.img" ] && fail "the destination's store is not empty"
dest d 7840 "$TMP/dst-store"
# through the CLI: its exit status, progress lines and final JSON
"$FERRY" -S "$TMP/a.sock" vm migrate --to 127.0.0.1:7840 --storage-to "$IMG" --keep-source >"$TMP/cli.out" 2>&1 ||
    fail "ferry vm migrate --storage-to failed: $(cat "$TMP/cli.out")"
grep -q '^migrated to ' "$TMP/cli.out" || fail "the CLI did not say migrated: $(cat "$TMP/cli.out")"
wait_phase a 10 completed || fail "migration ended '$(ms phase)': $(ms error)"
[ "$(ms verify_result)" = match ] || fail "verify_result '$(ms verify_result)', expected match"
sent=$(ms disk_bytes_sent)
total=$(ms disk_total_bytes)
[ "$sent" -ge $((BLOCKS * 4096)) ] || fail "only $sent disk bytes sent for $((BLOCKS * 4096)) written"
[ "$(jget "$(ctl d '{"cmd":"migrate-status"}')" result.incoming.disk_bytes)" -ge $((BLOCKS * 4096)) ] ||
    fail "the destination counts fewer disk bytes than were written"
ctl a '{"cmd":"quit"}' >/dev/null
wait_exit a 10
[ "$RC" = 0 ] || fail "the source exited with status $RC after the migration"

# the destination runs on its own image: its writes go on, into dst-store's file
w=$(writes d)
wait_for 20 writes_beyond d $((w + BLOCKS)) || fail "d: the guest does not write on the destination"
dpid=${VM_PID[d]}
ino=$(stat -c %i "$TMP/dst-store/vm.img") || fail "no image in the destination's store"
open_ino=$(for f in /proc/"$dpid"/fd/*; do stat -L -c '%i %n' "$f"; done 2>/dev/null | awk -v i="$ino" '$1 == i' | head -1)
[ -n "$open_ino" ] || fail "d has no fd on its store's vm.img (inode $ino)"
path=$("$PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])["result"]["disks"][0]["path"])' \
    "$(ctl d '{"cmd":"status"}')")
[ "$path" = "$IMG" ] || fail "d's disk is '$path', expected $IMG"
ls "$TMP/dst-store" | grep -q partial && fail "a partial file is left: $(ls "$TMP/dst-store")"

# a second hop, d -> e (a third store), one stream, the digests in the pause
mkdir -p "$TMP/third-store"
dest e 7841 "$TMP/third-store"
migrate d 7841 "\"storage_to\":\"$IMG\",\"streams\":1,\"verify\":\"strict\""
wait_phase d 60 completed || fail "second hop ended '$(ms phase)': $(ms error)"
[ "$(ms verify_result)" = "match (in the pause)" ] || fail "second hop: verify_result '$(ms verify_result)'"
ctl d '{"cmd":"quit"}' >/dev/null
wait_exit d 10
[ "$RC" = 0 ] || fail "d exited with status $RC after the second hop"
w=$(writes e)
wait_for 20 writes_beyond e $((w + BLOCKS)) || fail "e: the guest does not write after the second hop"

ctl e '{"cmd":"quit"}' >/dev/null
min=$(writes e)
wait_exit e 20
[ "$RC" = 0 ] || fail "e exited with status $RC"
third=$(blkcheck "$TMP/third-store/vm.img" "$min" "the second hop's image")
dst=$(blkcheck "$TMP/dst-store/vm.img" 0 "the first hop's image")
src=$(blkcheck "$TMP/src-store/vm.img" 0 "source image")
[ "$dst" != "$src" ] && [ "$third" != "$dst" ] ||
    fail "two images are the same ($src / $dst / $third): a destination did not write its own"
# sparse: 32 MiB of data in 64 MiB, holes kept (with room for the last pass)
alloc=$(($(stat -c %b "$TMP/third-store/vm.img") * 512))
[ "$alloc" -le $((40 << 20)) ] || fail "the second hop's image allocates $alloc bytes: holes were filled"

finish "$(tail -n1 "$TMP/cli.out"); disk_total=$total disk_sent=$sent; src: $src; hop 1: $dst; hop 2: $third (min $min), allocated=$alloc"
