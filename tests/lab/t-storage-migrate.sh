#!/bin/bash
# Lab test, Storage vMotion and shared-nothing migration (issue 10) on a stock Debian
# guest. The guest writes numbered 64 KiB blocks to /dev/vda all along (O_DIRECT +
# fsync, as t-net-migrate's does) while
#   1. `ferry vm move-disk vda --to` moves its image live to a second directory on hostA
#      (a second datastore): afterwards the VMM runs on the new image (status) and the
#      old one is left untouched for the operator;
#   2. `ferry vm migrate --storage-to` moves it, disk and memory, to hostB into a third
#      directory (no shared storage: B writes its own copy, A's stays A's).
# Then the guest reads every block back (none may be bad), and after the VM quit the
# image B ran on is checked block by block on the host.
#   BUILD              build directory (default "build")
#   FERRY_L2_TIMEOUT   seconds for the guest to boot and for each later step (default 180)
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/../.."
BUILD=$(realpath "${BUILD:-build}")
limit=${FERRY_L2_TIMEOUT:-180}
eval "$(lab/lab.sh info)"
. tests/lab/lib.sh
export FERRY_NET_PREFIX=fsm-
lab_vm_init t-storage-migrate
mkdir -p "$work/ds1" "$work/ds2" "$work/dsB"
truncate -s 64M "$work/ds1/disk.img"

cat > "$work/init.sh" <<'EOF'
blk() { printf 'BLOCK %08d' "$1"; head -c 65522 /dev/zero | tr '\0' '.'; }
(
    n=0
    while [ ! -e /tmp/stop ]; do
        blk $((n % 256)) | dd of=/dev/vda bs=64k count=1 seek=$((n % 256)) iflag=fullblock oflag=direct conv=fsync 2>/dev/null ||
            echo "FERRY-FAIL write $n"
        n=$((n + 1))
        [ $((n % 8)) -ne 0 ] || echo "FERRY-W $n"
    done
    echo "FERRY-WRITTEN $n"
) &
writer=$!
echo FERRY-READY
while read -r cmd; do
    [ "$cmd" = stop ] || continue
    touch /tmp/stop; wait $writer
    bad=0 n=0
    while [ $n -lt 256 ]; do
        h=$(dd if=/dev/vda bs=64k skip=$n count=1 iflag=direct 2>/dev/null | head -c 14)
        case $h in "BLOCK $(printf %08d $n)"|"") ;; *) bad=$((bad + 1)); echo "FERRY-BAD $n '$h'" ;; esac
        n=$((n + 1))
    done
    echo "FERRY-VERIFY bad=$bad"
done
EOF
lab/lab.sh mkinitrd -m virtio_pci,virtio_blk "$work/initrd.cpio" "$work/init.sh"
lab_vm_start a hostA --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --mem 256M \
    --append "$LAB_LINUX_APPEND" --disk "$work/ds1/disk.img"
wait_for "$limit" "$work/con-a" '^FERRY-READY' || lab_die "the guest did not come up on A"
wait_for 60 "$work/con-a" '^FERRY-W ' || lab_die "the guest does not write its disk"
writes() { grep -c '^FERRY-W ' "$1" || true; }

# ---- 1. live disk move on hostA ----
n0=$(writes "$work/con-a")
timeout "$limit" "$cli" -S "$work/a.sock" vm move-disk vda --to "$work/ds2/disk.img" --json \
    > "$work/cli-move.out" 2> "$work/cli-move.err" || lab_die "move-disk failed: $(tail -n 1 "$work/cli-move.err")"
[ "$(jq -r '.phase' "$work/cli-move.out")" = switched ] || lab_die "move-disk: $(cat "$work/cli-move.out")"
path=$("$cli" -S "$work/a.sock" vm status --json | jq -r '.disks[0].path')
[ "$path" = "$work/ds2/disk.img" ] || lab_die "after move-disk the VM's disk is '$path'"
wait_for 60 "$work/con-a" "^FERRY-W $(( (n0 + 2) * 8 ))\b" || lab_die "the guest stopped writing after the move"
[ -s "$work/ds1/disk.img" ] || lab_die "move-disk removed the old image (no --delete-source)"
echo "storage-migrate: move-disk on A: $(jq -c '{phase, bytes_copied, pass, mirrored_writes, elapsed_ms, switch_us}' \
    "$work/cli-move.out")"

# ---- 2. shared-nothing hop A -> B ----
lab_hop_args=(--storage-to "$work/dsB/disk.img")
lab_hop a b hostB 10.99.0.2
path=$("$cli" -S "$work/b.sock" vm status --json | jq -r '.disks[0].path')
[ "$path" = "$work/dsB/disk.img" ] || lab_die "on B the VM's disk is '$path', not the copy B received"
n1=$(writes "$work/con-b")
wait_for 90 "$work/con-b" '^FERRY-W ' || lab_die "the guest does not write its disk on B"
echo "storage-migrate: a -> b: disk $(jq -r '.disk_bytes_sent // "?"' "$work/mig-ab.out") bytes sent," \
     "verify $(jq -r '.verify_result' "$work/mig-ab.out")"
[[ "$(jq -r '.verify_result' "$work/mig-ab.out")" == match* ]] || lab_fail "memory/disk digest: $(jq -r '.verify_result' "$work/mig-ab.out")"

# ---- the checks ----
sleep 3
lab_console b stop
wait_for "$limit" "$work/con-b" '^FERRY-VERIFY' || lab_die "no disk verification on B"
cat "$work/con-a" "$work/con-b" | tr -d '\r' > "$work/all.log"
verify=$(grep -m1 '^FERRY-VERIFY' "$work/all.log" | cut -d' ' -f2)
[ "$verify" = bad=0 ] || lab_fail "the guest found bad blocks: $(grep '^FERRY-BAD' "$work/all.log" | head -n 3 | tr '\n' ' ')"
! grep -q FERRY-FAIL "$work/all.log" || lab_fail "guest I/O errors: $(grep -m3 FERRY-FAIL "$work/all.log" | tr '\n' ' ')"
"$cli" -S "$work/b.sock" vm quit > /dev/null || lab_fail "ferry vm quit failed"
timeout 60 tail --pid="${lab_vpid[b]}" -f /dev/null || lab_fail "B did not exit after quit"
bad=$(lab_bad_blocks "$work/dsB/disk.img")
[ "$bad" = 0 ] || lab_fail "$bad blocks of B's image do not hold their number"
echo "storage-migrate: $(grep -m1 '^FERRY-WRITTEN' "$work/all.log" | cut -d' ' -f2) blocks written" \
     "(A: $(writes "$work/con-a")x8 across the move, B: ${n1}x8+), guest check $verify, B's image bad=$bad"
[ ${#lab_errors[@]} -eq 0 ]
