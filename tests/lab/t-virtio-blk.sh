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
# A disk written across migrations is tests/lab/t-net-migrate.sh.
# Runs inside L1 (tests/lab/run.sh).
#   BUILD              build directory holding vmm/ferry-vmm and cli/ferry (default "build")
#   FERRY_L2_TIMEOUT   seconds for the guest to boot and for each later step (default 180)

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

img=$work/disk.img
ro=$work/ro.img
truncate -s 64M "$img"
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
