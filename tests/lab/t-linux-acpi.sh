#!/bin/bash
# shellcheck disable=SC2317  # functions called indirectly (trap)
# Lab test, ACPI power management of a stock Linux guest (2 vCPUs):
#   1. a guest that handles its power button (Linux's button driver turns the fixed
#      power button into a KEY_POWER input event; the guest's init waits for it and runs
#      `poweroff -f`) is migrated A -> B, then `ferry vm shutdown --timeout 60` on B:
#      the press reaches the guest after the move (the PM registers migrate), the guest
#      powers off through ACPI S5, ferry-vmm exits 0 saying "guest powered off", and the
#      CLI reports it within the timeout;
#   2. a guest that ignores the button: `ferry vm shutdown --timeout 5` falls back to a
#      hard stop and says so (status 1), and ferry-vmm exits 0;
#   3. neither guest's kernel log has an ACPI error or warning.
#   BUILD              build directory (default "build")
#   FERRY_L2_TIMEOUT   seconds for the guest to boot (default 180)

set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/../.."
BUILD=$(realpath "${BUILD:-build}")
limit=${FERRY_L2_TIMEOUT:-180}
eval "$(lab/lab.sh info)"
. tests/lab/lib.sh
vmm=$BUILD/vmm/ferry-vmm
cli=$BUILD/cli/ferry
for f in "$vmm" "$cli"; do
    [ -x "$f" ] || { echo "t-linux-acpi: no $f (build first)" >&2; exit 1; }
done

lab_name=t-linux-acpi lab_errors=() pids=()
work=$(mktemp -d)
clean_on_exit

# The guest: MODE=handle waits for the power button and powers off; MODE=ignore does not.
for mode in handle ignore; do
    cat > "$work/init-$mode.sh" <<EOF
dmesg | grep -E 'ACPI (BIOS )?(Error|Warning)|Firmware Bug' | sed 's/^/FERRY-ACPIERR /'
ev=
for d in /sys/class/input/event*; do
    [ "\$(cat \$d/device/name 2>/dev/null)" != "Power Button" ] || ev=/dev/input/\${d##*/}
done
echo "FERRY-BUTTON \${ev:-none}"
if [ $mode = handle ] && [ -n "\$ev" ]; then
    (dd if=\$ev bs=24 count=1 of=/dev/null 2>/dev/null; echo FERRY-PRESSED; poweroff -f) &
fi
echo FERRY-READY
while :; do sleep 1000; done
EOF
    lab/lab.sh mkinitrd -m button,evdev "$work/initrd-$mode.cpio" "$work/init-$mode.sh"
done

declare -A vpid
start_vmm() {   # start_vmm NAME ARGS...
    local name=$1; shift
    : > "$work/con-$name"
    "$vmm" --control "$work/$name.sock" --console "file:$work/con-$name" "$@" > "$work/vmm-$name.out" 2>&1 &
    vpid[$name]=$!
    pids+=($!)
}
boot() {   # boot NAME MODE
    start_vmm "$1" --kernel "$VMLINUZ" --initrd "$work/initrd-$2.cpio" --cpus 2 --mem 256M \
        --append "$LAB_LINUX_APPEND"
    wait_for "$limit" "$work/con-$1" '^FERRY-READY' || lab_die "the guest ($2) did not come up"
    grep -q '^FERRY-BUTTON /dev/input/' "$work/con-$1" ||
        lab_die "the guest ($2) has no power button: $(grep '^FERRY-BUTTON' "$work/con-$1" | tr -d '\r')"
}
exited() {   # exited NAME SECONDS: ferry-vmm's exit status in $vst ("timeout" if it runs on)
    vst=timeout
    timeout "$2" tail --pid="${vpid[$1]}" -f /dev/null || return 0
    vst=0
    wait "${vpid[$1]}" || vst=$?
}

# ------------------------------------------------------------------ 1. clean shutdown
boot a handle
start_vmm b --incoming 127.0.0.1:4446
wait_for 30 "$work/vmm-b.out" 'port 4446' || lab_die "destination did not listen"
"$cli" -S "$work/a.sock" vm migrate --to 127.0.0.1:4446 --json > "$work/cli-mig.out" 2>&1 ||
    lab_die "migration A -> B failed: $(tail -n 1 "$work/cli-mig.out")"
exited a 60
[ "$vst" = 0 ] || lab_die "the source did not exit 0 after the migration ($vst)"
t0=$(us)
st=0
"$cli" -S "$work/b.sock" vm shutdown --timeout 60 > "$work/cli-shutdown.out" 2>&1 || st=$?
took=$(secs $(($(us) - t0)))
[ "$st" = 0 ] || lab_fail "ferry vm shutdown exited $st: $(tail -n 1 "$work/cli-shutdown.out")"
grep -q '^guest powered off' "$work/cli-shutdown.out" || lab_fail "the CLI did not report the power-off"
grep -q '^FERRY-PRESSED' "$work/con-b" || lab_fail "the guest on B never saw the power button"
exited b 30
[ "$vst" = 0 ] || lab_fail "ferry-vmm B exited '$vst' after the guest powered off (want 0)"
grep -q 'guest powered off' "$work/vmm-b.out" || lab_fail "ferry-vmm B did not say 'guest powered off'"
echo "linux-acpi: migrated A -> B, then shutdown: guest powered off in ${took}s, ferry-vmm exit $vst"

# ------------------------------------------------------------------ 2. ignored button
boot c ignore
t0=$(us)
st=0
"$cli" -S "$work/c.sock" vm shutdown --timeout 5 > "$work/cli-ignored.out" 2>&1 || st=$?
took=$(secs $(($(us) - t0)))
[ "$st" = 1 ] || lab_fail "ferry vm shutdown on a guest ignoring the button exited $st (want 1)"
grep -q 'did not power off within 5 s: stopped it hard' "$work/cli-ignored.out" ||
    lab_fail "no fallback message: $(tail -n 1 "$work/cli-ignored.out")"
exited c 30
[ "$vst" = 0 ] || lab_fail "ferry-vmm C exited '$vst' after the hard stop (want 0)"
echo "linux-acpi: a guest ignoring the button: $(tr -d '\r' < "$work/cli-ignored.out" | tail -n 1) (after ${took}s)"

# ------------------------------------------------------------------ 3. ACPI errors
if grep -h '^FERRY-ACPIERR' "$work"/con-a "$work"/con-c > "$work/acpierr"; then
    lab_fail "ACPI errors in the guest's log: $(tr -d '\r' < "$work/acpierr" | head -n 3 | tr '\n' ' ')"
else
    echo "linux-acpi: no ACPI error or warning in the guests' kernel logs"
fi
[ ${#lab_errors[@]} -eq 0 ] || exit 1
