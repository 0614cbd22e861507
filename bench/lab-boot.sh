#!/bin/bash
# bench/lab-boot.sh [N] - boot reliability of stock Linux under ferry-vmm, in the nested
# lab: boots the lab's Debian kernel with 2 vCPUs N times in a row (default 20), each
# until its init prints a marker and powers off (ACPI), and reports how many boots
# reached userspace, the median and the longest time to it.  A boot that prints nothing
# within FERRY_BOOT_LIMIT seconds (default 120) is a hang: the VMM's status, the
# console's tail, the VMM log and each vCPU's state (twice) are printed before it is killed.  Exit status 1 on
# any hang.
# Run from the repository root on the build machine (it boots the lab itself):
#     lab/lab.sh run -- bench/lab-boot.sh 20
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
limit=${FERRY_BOOT_LIMIT:-120}
BUILD=$(realpath "${BUILD:-build}")
if [ -z "${FERRY_LAB_L1:-}" ]; then
    exec lab/lab.sh run --timeout $((n * (limit + 30) + 300)) -e BUILD="$BUILD" -e FERRY_BOOT_LIMIT -- \
        bench/lab-boot.sh "$n"
fi
eval "$(lab/lab.sh info)"
. tests/lab/lib.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/init.sh" <<'EOF'
echo FERRY-USERSPACE
poweroff -f
EOF
lab/lab.sh mkinitrd "$work/initrd.cpio" "$work/init.sh"

times=() hangs=0
for ((i = 1; i <= n; i++)); do
    con=$work/con-$i
    : > "$con"
    t0=$(us)
    "$BUILD/vmm/ferry-vmm" --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --cpus 2 --mem 256M \
        --append "$LAB_LINUX_APPEND" --console "file:$con" --control "$work/vm.sock" > "$work/vmm.out" 2>&1 &
    pid=$!
    t_up=""
    while kill -0 "$pid" 2>/dev/null && [ $(($(us) - t0)) -lt $((limit * 1000000)) ]; do
        if [ -z "$t_up" ] && grep -q FERRY-USERSPACE "$con"; then t_up=$(us); fi
        sleep 0.2
    done
    if [ -z "$t_up" ] && grep -q FERRY-USERSPACE "$con"; then t_up=$(us); fi
    if [ -n "$t_up" ]; then
        wait "$pid" || echo "lab-boot: boot $i: ferry-vmm exited $? after powering off" >&2
        times+=($((t_up - t0)))
        echo "lab-boot: boot $i: userspace after $(secs $((t_up - t0)))s"
    else
        hangs=$((hangs + 1))
        echo "lab-boot: boot $i: HANG, nothing from init in ${limit}s; console $(wc -c < "$con") bytes" >&2
        lab_vcpus "$work/vm.sock"
        tail -n 20 "$con" "$work/vmm.out" >&2 || true
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
med=$(sed -n "$(((${#times[@]} + 1) / 2))p" <<< "$sorted")
max=$(tail -n 1 <<< "$sorted")
echo "lab-boot: ${#times[@]}/$n boots reached userspace, median $(secs "${med:-0}")s, longest $(secs "${max:-0}")s; $hangs hung"
[ "$hangs" -eq 0 ]
