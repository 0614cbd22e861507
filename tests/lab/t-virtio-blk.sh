#!/bin/bash
# shellcheck disable=SC2317  # functions called indirectly (trap)
# Lab test, virtio-blk: ferry-vmm boots the lab's stock Debian kernel with two disks,
# a 64 MiB raw image (--disk, /dev/vda) and a small read-only one (--disk PATH,readonly,
# /dev/vdb); the initramfs loads virtio_pci + virtio_blk.  The guest
#   - reads region A (8 MiB at 0, random data the host wrote) and prints its md5;
#   - writes region B (8 MiB of random data at 8 MiB) with fsync, drops its caches, reads
#     it back with O_DIRECT and prints both md5s;
#   - measures O_DIRECT throughput with dd (32 MiB written at 16 MiB, then read back);
#   - discards that region, reads the disk's serial, tries to write the read-only disk;
#   - reboots (-f).
# Asserted: the guest saw vda (64 MiB) and a read-only vdb, region A read back as the host
# wrote it, region B read back as written and is in the image file as the guest wrote it
# (checked on the host after the VM exited), the write to vdb failed and left the file
# untouched, ferry-vmm exited 0.
#
# Then (FERRY_BLK_MIGRATE=1; off by default until it passes: the guest stalls after the
# switchover, see the issue notes) the migration variant: the guest writes numbered
# 64 KiB blocks to /dev/vda in a loop (each block holds its number, O_DIRECT + fsync) while
# it is migrated A -> B between two ferry-vmm in L1 opening the same image (shared
# storage); after the migration the guest stops writing, reads every block back and checks
# each holds its number, and the host checks the image file too.
# Runs inside L1 (tests/lab/run.sh).
#   BUILD              build directory holding vmm/ferry-vmm and cli/ferry (default "build")
#   FERRY_L2_TIMEOUT   seconds for the guest to boot and for each later step (default 180)
#   FERRY_BLK_MIGRATE  1 runs the migration variant (default 0)
#   FERRY_BLK_IO       0 skips the first part (I/O checks and throughput)

set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/../.."
BUILD=${BUILD:-build}
limit=${FERRY_L2_TIMEOUT:-180}
eval "$(lab/lab.sh info)"
. tests/lab/lib.sh
vmm=$BUILD/vmm/ferry-vmm
cli=$BUILD/cli/ferry
for f in "$vmm" "$cli"; do
    [ -x "$f" ] || { echo "t-virtio-blk: no $f (build first)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
errors=()
fail() { errors+=("$*"); }
md5() { md5sum | cut -d' ' -f1; }
# value of the first "KEY value" line of a console log
field() { awk -v k="$1" '$1 == k { sub(/\r$/, ""); $1 = ""; sub(/^ /, ""); print; exit }' "$2"; }
show_logs() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        echo "---- ${f##*/} (last 40 lines) ----" >&2
        tail -n 40 "$f" | tr -d '\r' >&2
    done
}

# ---------------------------------------------------------------- 1. I/O and throughput
img=$work/disk.img
ro=$work/ro.img
truncate -s 64M "$img"
if [ "${FERRY_BLK_IO:-1}" != 0 ]; then
head -c 8M /dev/urandom > "$work/a"
dd if="$work/a" of="$img" conv=notrunc status=none
md5_a=$(md5 < "$work/a")
head -c 1M /dev/urandom > "$ro"
md5_ro=$(md5 < "$ro")

cat > "$work/init.sh" <<EOF
dmesg | grep -E 'virtio|vd[a-z]' | sed 's/^/FERRY-DMESG /'
echo "FERRY-SIZE \$(cat /sys/block/vda/size 2>/dev/null)"
echo "FERRY-RO \$(cat /sys/block/vdb/ro 2>/dev/null)"
echo "FERRY-READ-A \$(dd if=/dev/vda bs=1M count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
dd if=/dev/urandom of=/tmp/b bs=1M count=8 2>/dev/null
echo "FERRY-WROTE-B \$(md5sum < /tmp/b | cut -d' ' -f1)"
dd if=/tmp/b of=/dev/vda bs=1M seek=8 conv=fsync 2>/dev/null || echo "FERRY-FAIL write B"
echo 3 > /proc/sys/vm/drop_caches
echo "FERRY-READ-B \$(dd if=/dev/vda bs=1M skip=8 count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
# throughput by the guest's clock (busybox dd prints no rate)
up() { cut -d' ' -f1 /proc/uptime; }
rate() { awk -v a="\$1" -v b="\$2" 'BEGIN { d = b - a; if (d < 0.01) d = 0.01; printf "%.1f MB/s (32 MiB in %.2f s)", 33.554432 / d, d }'; }
t0=\$(up)
dd if=/dev/zero of=/dev/vda bs=1M seek=16 count=32 oflag=direct 2>/dev/null && echo "FERRY-DD-WRITE \$(rate "\$t0" "\$(up)")"
t0=\$(up)
dd if=/dev/vda of=/dev/null bs=1M skip=16 count=32 iflag=direct 2>/dev/null && echo "FERRY-DD-READ \$(rate "\$t0" "\$(up)")"
if blkdiscard -o $((16 << 20)) -l $((32 << 20)) /dev/vda 2>/dev/null; then echo "FERRY-DISCARD ok"; else echo "FERRY-DISCARD failed"; fi
echo "FERRY-SERIAL \$(cat /sys/block/vda/serial 2>/dev/null)"
if dd if=/dev/zero of=/dev/vdb bs=4k count=1 oflag=direct 2>/dev/null; then echo "FERRY-RO-WRITE accepted"; else echo "FERRY-RO-WRITE refused"; fi
sync
echo "FERRY-DONE"
reboot -f
EOF
lab/lab.sh mkinitrd -m virtio_pci,virtio_blk "$work/initrd.cpio" "$work/init.sh"

con=$work/console-io.log
: > "$con"
t0=$(us)
rc=0
timeout -k 5 "$limit" "$vmm" --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --mem 256M \
    --append "$LAB_LINUX_APPEND" --console "file:$con" --disk "$img" --disk "$ro,readonly" \
    > "$work/vmm-io.out" 2>&1 || rc=$?
t1=$(us)

grep '^FERRY-DMESG' "$con" | tr -d '\r' | sed 's/^FERRY-DMESG /  guest: /' | grep -E 'vd[ab]|virtio_blk' || true
size=$(field FERRY-SIZE "$con")
rof=$(field FERRY-RO "$con")
ra=$(field FERRY-READ-A "$con")
wb=$(field FERRY-WROTE-B "$con")
rb=$(field FERRY-READ-B "$con")
ddw=$(field FERRY-DD-WRITE "$con")
ddr=$(field FERRY-DD-READ "$con")
disc=$(field FERRY-DISCARD "$con")
serial=$(field FERRY-SERIAL "$con")
row=$(field FERRY-RO-WRITE "$con")
echo "virtio-blk: dd bs=1M O_DIRECT write: ${ddw:-n/a}"
echo "virtio-blk: dd bs=1M O_DIRECT read: ${ddr:-n/a}"
echo "virtio-blk: guest ran $(secs $((t1 - t0)))s, serial '${serial}', discard ${disc:-n/a}"

[ "$rc" -eq 0 ] || fail "VMM exit status $rc$([ "$rc" -ne 124 ] || echo " (timed out after ${limit}s)")"
grep -q '^FERRY-DONE' "$con" || fail "the guest's script did not finish"
[ "$size" = 131072 ] || fail "vda has '$size' sectors, want 131072 (64 MiB)"
[ "$rof" = 1 ] || fail "vdb read-only flag is '$rof', want 1"
[ "$ra" = "$md5_a" ] || fail "region A read back as $ra, the host wrote $md5_a"
if [ -z "$wb" ] || [ "$rb" != "$wb" ]; then fail "region B read back as '$rb', the guest wrote '$wb'"; fi
hb=$(dd if="$img" bs=1M skip=8 count=8 status=none | md5)
[ "$hb" = "$wb" ] || fail "region B in the image file is $hb, the guest wrote '$wb'"
[[ $ddw == *MB/s* ]] || fail "no dd write figure"
[[ $ddr == *MB/s* ]] || fail "no dd read figure"
[ "$disc" = ok ] || fail "discard: '${disc}'"
[ "$serial" = disk.img ] || fail "serial '$serial', want disk.img"
[ "$row" = refused ] || fail "write to the read-only disk was '$row'"
[ "$(md5 < "$ro")" = "$md5_ro" ] || fail "the read-only image changed"
if [ ${#errors[@]} -gt 0 ]; then
    printf 't-virtio-blk: %s\n' "${errors[@]}" >&2
    show_logs "$con" "$work/vmm-io.out"
    exit 1
fi
fi   # FERRY_BLK_IO
[ "${FERRY_BLK_MIGRATE:-0}" != 0 ] || exit 0

# ---------------------------------------------------------------- 2. writes across a migration
# Block n (64 KiB at n * 64 KiB: 256 blocks, the first 16 MiB) holds "BLOCK n" padded
# with dots; the guest cycles through the blocks until told to stop, then verifies.
truncate -s 0 "$img"
truncate -s 64M "$img"
cat > "$work/init2.sh" <<'EOF'
stty -echo 2>/dev/null
blk() { printf 'BLOCK %08d' "$1"; head -c 65522 /dev/zero | tr '\0' '.'; }
(
    n=0
    while [ ! -e /tmp/stop ]; do
        blk $((n % 256)) | dd of=/dev/vda bs=64k count=1 seek=$((n % 256)) iflag=fullblock oflag=direct conv=fsync 2>/dev/null ||
            echo "FERRY-FAIL write $n"
        n=$((n + 1))
        [ $((n % 16)) -ne 0 ] || echo "FERRY-W $n"
    done
    echo "FERRY-WRITTEN $n"
) &
( while :; do sleep 5; echo "FERRY-T $(cut -d' ' -f1 /proc/uptime)"; done ) &   # heartbeat
echo "FERRY-READY"
while read -r cmd; do
    case $cmd in
        stop)
            touch /tmp/stop; wait
            bad=0 n=0
            while [ $n -lt 256 ]; do
                h=$(dd if=/dev/vda bs=64k skip=$n count=1 iflag=direct 2>/dev/null | head -c 14)
                case $h in "BLOCK $(printf %08d $n)"|"") ;; *) bad=$((bad + 1)); echo "FERRY-BAD $n '$h'" ;; esac
                n=$((n + 1))
            done
            echo "FERRY-VERIFY bad=$bad"
            sync
            reboot -f ;;
        *) eval "$cmd" ;;
    esac
done
EOF
lab/lab.sh mkinitrd -m virtio_pci,virtio_blk "$work/initrd2.cpio" "$work/init2.sh"

ca=$work/console-a.log cb=$work/console-b.log
: > "$ca"
: > "$cb"
mkfifo "$work/in-a" "$work/in-b"
# shellcheck disable=SC2034  # fa only holds the FIFO open (no EOF for the guest)
exec {fa}<>"$work/in-a" {fb}<>"$work/in-b"
"$vmm" --kernel "$VMLINUZ" --initrd "$work/initrd2.cpio" --mem 256M --append "$LAB_LINUX_APPEND" \
    --disk "$img" --control "$work/a.sock" < "$work/in-a" > "$ca" 2> "$work/vmm-a.out" &
pa=$!
pids+=("$pa")
wait_for() {   # wait_for SECONDS FILE REGEX
    local end=$(($(date +%s) + $1))
    while ! grep -qE "$3" "$2" 2>/dev/null; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.5
    done
}
if ! wait_for "$limit" "$ca" '^FERRY-W 32([^0-9]|$)'; then
    fail "guest A did not start writing"
    show_logs "$ca" "$work/vmm-a.out"
    printf 't-virtio-blk: %s\n' "${errors[@]}" >&2
    exit 1
fi
"$vmm" --incoming 127.0.0.1:0 --control "$work/b.sock" < "$work/in-b" > "$cb" 2> "$work/vmm-b.out" &
pb=$!
pids+=("$pb")
wait_for 30 "$work/vmm-b.out" 'port [0-9]+' || fail "destination did not listen"
port=$(grep -oE 'port [0-9]+' "$work/vmm-b.out" | head -n 1 | cut -d' ' -f2)
w_before=$(grep -c '^FERRY-W ' "$ca" || true)
mrc=0
timeout "$limit" "$cli" -S "$work/a.sock" vm migrate --to "127.0.0.1:$port" > "$work/migrate.out" 2>&1 || mrc=$?
tail -n 2 "$work/migrate.out" | tr -d '\r' | sed 's/^/  migrate: /'
if [ "$mrc" -ne 0 ]; then
    # the source resumed the VM: its disk thread must go on completing requests
    w=$(grep -c '^FERRY-W ' "$ca" || true)
    if wait_for 60 "$ca" "^FERRY-W $(((w + 2) * 16))([^0-9]|\$)"; then
        fail "migration failed (status $mrc); the VM resumed on the source and its disk I/O goes on"
    else
        fail "migration failed (status $mrc), and the VM's disk I/O stalled on the source afterwards"
    fi
    printf 't-virtio-blk: %s\n' "${errors[@]}" >&2
    show_logs "$ca" "$work/vmm-a.out" "$work/vmm-b.out" "$work/migrate.out"
    exit 1
fi
# let the guest keep writing on B for a while, then verify
wait_for 90 "$cb" '^FERRY-W ' ||
    fail "guest did not write on the destination ($(grep -c '^FERRY-T ' "$cb" || true) heartbeats there)"
sleep 2
echo "stop" >&"$fb"
wait_for 150 "$cb" '^FERRY-VERIFY' || fail "no verification on the destination"
brc=0
timeout 60 tail --pid="$pb" -f /dev/null || kill "$pb" 2>/dev/null || true
wait "$pb" || brc=$?
wait "$pa" || true
cat "$ca" "$cb" | tr -d '\r' > "$work/all.log"
verify=$(field FERRY-VERIFY "$work/all.log")
written=$(field FERRY-WRITTEN "$work/all.log")
w_on_b=$(grep -c '^FERRY-W ' "$cb" || true)
echo "virtio-blk migration: ${written:-?} blocks written (${w_before}x16 before the migration," \
     "${w_on_b}x16 on the destination), guest verification: ${verify:-n/a}"
grep -q 'FERRY-FAIL' "$work/all.log" && fail "guest I/O errors: $(grep -m3 FERRY-FAIL "$work/all.log" | tr '\n' ' ')"
[ "$verify" = "bad=0" ] || fail "guest found bad blocks: $verify"
[ "$brc" -eq 0 ] || fail "destination exit status $brc"
# host side: every block that was written holds its own number
bad=$(python3 - "$img" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
bad = 0
for n in range(256):
    h = data[n * 65536: n * 65536 + 14]
    if h != b'\0' * 14 and h != b'BLOCK %08d' % n:
        bad += 1
print(bad)
PY
)
[ "$bad" = 0 ] || fail "$bad blocks in the image file do not hold their number"
if [ ${#errors[@]} -gt 0 ]; then
    printf 't-virtio-blk: %s\n' "${errors[@]}" >&2
    show_logs "$ca" "$work/vmm-a.out" "$cb" "$work/vmm-b.out" "$work/migrate.out"
    exit 1
fi
