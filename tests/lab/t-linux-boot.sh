#!/bin/bash
# Lab test: ferry-vmm boots the lab's stock Debian kernel (bzImage) with 2 vCPUs and a
# busybox initramfs whose /init reports its uptime and CPU count, then powers off.
# Runs inside L1 (tests/lab/run.sh).  FERRY_L2_VMM=qemu boots the same kernel, initramfs
# and command line with QEMU instead (to check the lab itself).
#   BUILD             build directory holding vmm/ferry-vmm (default "build")
#   FERRY_L2_TIMEOUT  seconds the guest may take (default 180)
#   FERRY_BOOT_TRIES  boots to try when the console stays empty (default 2; see below)

set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/../.."
BUILD=${BUILD:-build}
limit=${FERRY_L2_TIMEOUT:-180}
eval "$(lab/lab.sh info)"
. tests/lab/lib.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
con=$work/console.log

cat > "$work/init.sh" <<'EOF'
echo "FERRY-UPTIME $(cat /proc/uptime)"
echo "FERRY-NCPU $(nproc 2>/dev/null || grep -c '^processor' /proc/cpuinfo)"
# power off needs ACPI (ferry-vmm and QEMU have it); without, "poweroff -f" halts for ever
[ ! -d /sys/firmware/acpi ] || poweroff -f
reboot -f
EOF
lab/lab.sh mkinitrd "$work/initrd.cpio" "$work/init.sh"

append=$LAB_LINUX_APPEND
vmm_name=${FERRY_L2_VMM:-ferry}
case $vmm_name in
    qemu)
        vmm=(qemu-system-x86_64 -enable-kvm -cpu host -smp 2 -m 512 -nodefaults -no-user-config
             -display none -serial "file:$con" -no-reboot
             -kernel "$VMLINUZ" -initrd "$work/initrd.cpio" -append "$append") ;;
    ferry)
        if [ ! -x "$BUILD/vmm/ferry-vmm" ]; then
            echo "t-linux-boot: no $BUILD/vmm/ferry-vmm (build it, or set FERRY_L2_VMM=qemu)" >&2
            exit 1
        fi
        vmm=("$BUILD/vmm/ferry-vmm" --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --cpus 2
             --mem 512M --append "$append" --console "file:$con" --control "$work/vm.sock") ;;
    *) echo "t-linux-boot: FERRY_L2_VMM must be qemu or ferry" >&2; exit 1 ;;
esac

# An L2 whose console stays empty until the time limit is the nested lab's occasional
# boot hang (tests/lab/t-linux-migrate.sh retries its boot for the same reason): that,
# and only that, is tried once more. FERRY_BOOT_TRIES sets how often (default 2).
for ((try = 1; ; try++)); do
    : > "$con"
    t0=$(us)
    timeout -k 5 "$limit" "${vmm[@]}" > "$work/vmm.out" 2>&1 &
    pid=$!
    watch=""
    if [ "$vmm_name" = ferry ]; then   # a silent boot: what the vCPUs do, before the limit kills it
        # (read -t on a FIFO nobody writes: a sleep with no child process to outlive a kill)
        ( mkfifo "$work/nap"; exec {nap}<>"$work/nap"; read -r -t $((limit - 8)) -u "$nap" _
          [ -s "$con" ] || { echo "linux-boot: console empty after $((limit - 8))s" >&2
                             lab_vcpus "$work/vm.sock"; } ) &
        watch=$!
    fi
    # the time the uptime line appears (tail follows the console until the VMM exits)
    t_up=$(tail -n +1 -F -s 0.2 --pid="$pid" "$con" 2>/dev/null |
           while IFS= read -r line; do
               case $line in *FERRY-UPTIME*) us; break ;; esac
           done) || true
    rc=0
    wait "$pid" || rc=$?
    t_end=$(us)
    [ -z "$watch" ] || { kill "$watch" 2>/dev/null; wait "$watch" 2>/dev/null || true; rm -f "$work/nap"; }
    if [ "$rc" -ne 124 ] || [ -s "$con" ] || [ "$try" -ge "${FERRY_BOOT_TRIES:-2}" ]; then break; fi
    echo "linux-boot: boot $try printed nothing in ${limit}s (a lab L2 boot hang); booting again" >&2
done

uptime="" ncpu=""
while IFS=$' \t\r' read -r key val _; do
    case $key in
        FERRY-UPTIME) [ -n "$uptime" ] || uptime=$val ;;
        FERRY-NCPU) [ -n "$ncpu" ] || ncpu=$val ;;
    esac
done < "$con"
boot=n/a
[ -z "$t_up" ] || boot=$(secs $((t_up - t0)))
echo "linux-boot ($vmm_name): userspace after ${boot}s" \
     "(guest uptime ${uptime:-n/a}s), ${ncpu:-?} CPUs, exit $rc after $(secs $((t_end - t0)))s"

errors=()
[ "$rc" -eq 0 ] || errors+=("VMM exit status $rc$([ "$rc" -ne 124 ] || echo " (timed out after ${limit}s)")")
[ "$ncpu" = 2 ] || errors+=("FERRY-NCPU is '$ncpu', want 2")
# ACPI: the guest powers off (S5), and ferry-vmm says so
[ "$vmm_name" != ferry ] || grep -q 'guest powered off' "$work/vmm.out" ||
    errors+=("ferry-vmm did not report 'guest powered off'")
[[ $uptime =~ ^[0-9]+(\.[0-9]+)?$ && $uptime =~ [1-9] ]] ||
    errors+=("no positive FERRY-UPTIME (got '$uptime')")
[ ${#errors[@]} -gt 0 ] || exit 0

printf 't-linux-boot: %s\n' "${errors[@]}" >&2
echo "---- guest console (last 30 lines) ----" >&2
tail -n 30 "$con" | tr -d '\r' >&2
if [ -s "$work/vmm.out" ]; then
    echo "---- $vmm_name output (last 30 lines) ----" >&2
    tail -n 30 "$work/vmm.out" >&2
fi
exit 1
