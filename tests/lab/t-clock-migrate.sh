#!/bin/bash
# shellcheck disable=SC2317  # functions called indirectly (trap)
# Lab test, guest time across live migration: a stock Debian guest (1 vCPU) on a tap in
# the network of lab/net-topology.sh runs tests/lab/clockprobe.c, which samples its
# CLOCK_MONOTONIC through the vDSO and the system call every 1 ms; a client on the VM
# network asks the guest's CLOCK_REALTIME every 50 ms.  The VM moves A -> B with the
# guest's default clocksource (kvm-clock), then B -> A with the TSC as its clocksource.
# Asserted:
#   - CLOCK_MONOTONIC (vDSO and syscall) never goes backwards;
#   - at each switchover it steps forward by that hop's downtime +- 20 ms (see the
#     checks below), and nowhere else by more than 2 s (a stalled timer would show here);
#   - CLOCK_REALTIME stays within 50 ms of the host's wall clock before, between and
#     after the hops (each probe's error bound is half its round trip, at most 10 ms).
# One vCPU: in the lab, Linux marks the TSC unstable with two ("TSCs unsynchronized";
# a QEMU guest in the same L1 does the same: L1's emulated SVM does not keep two L2
# vCPUs' TSCs in step), and then offers no TSC clocksource.  kvm-clock with two vCPUs
# across migrations is covered by t-linux-migrate and t-net-migrate.
# The two hosts' TSCs differ for the guest: the destination's vCPUs are created at
# another moment, so KVM gives them another TSC offset; Ferry restores the guest's TSC
# as a value, moved on by the time in flight.
#   BUILD              build directory (default "build")
#   FERRY_L2_TIMEOUT   seconds for the guest to boot and for each later step (default 180)

# The guest runs with tsc=nowatchdog: in 3 of 5 lab runs this session its TSC and
# kvm-clock disagreed by 0.65-0.69 ms (either sign) across a hop, above the
# clocksource watchdog's skew limit, and Linux refused the TSC; the cause is not found
# (the lab's L1 is TCG-emulated; last session, with 1-3 s pauses, it never showed).
# This test measures the guest's clocks itself, against the host, across each hop.
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/../.."
BUILD=$(realpath "${BUILD:-build}")
limit=${FERRY_L2_TIMEOUT:-180}
eval "$(lab/lab.sh info)"
. tests/lab/lib.sh
probe=$BUILD/tests/lab/clockprobe
[ -x "$probe" ] || { echo "t-clock-migrate: no $probe (build first)" >&2; exit 1; }
export FERRY_NET_PREFIX=ftc-
MAC=52:54:00:88:00:07 IP=10.88.0.7
lab_vm_init t-clock-migrate

cat > "$work/init.sh" <<EOF
stty -echo 2>/dev/null
ip link set lo up
ip link set eth0 up
ip addr add $IP/24 dev eth0
cs=/sys/devices/system/clocksource/clocksource0
echo "FERRY-CS \$(cat \$cs/current_clocksource) of \$(cat \$cs/available_clocksource)"
echo "FERRY-\$($probe sync /dev/ptp0 2>&1)"
$probe serve 7100 &
echo "FERRY-READY"
while read -r cmd; do eval "\$cmd"; done
EOF
lab/lab.sh mkinitrd -m virtio_pci,virtio_net,ptp_kvm -b "$probe" "$work/initrd.cpio" "$work/init.sh"

lab_vm_start a hostA --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --mem 256M \
    --append "$LAB_LINUX_APPEND tsc=nowatchdog" --net "tap=tap-vm,mac=$MAC"
wait_for "$limit" "$work/con-a" '^FERRY-READY' || lab_die "the guest did not come up on A"
cs0=$(grep -m1 '^FERRY-CS' "$work/con-a" | tr -d '\r')
echo "clock-migrate: guest clocksource: ${cs0#FERRY-CS }"
sync=$(grep -m1 '^FERRY-sync' "$work/con-a" | tr -d '\r') ||
    lab_die "the guest could not set its clock from the host's: $(grep -m1 '^FERRY-clockprobe' "$work/con-a")" \
        "(ptp_kvm needs L1's clocksource to be the TSC, now $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)," \
        "and a guest TSC rate L1's kvm runs natively)"
echo "clock-migrate: guest ${sync#FERRY-} (ptp_kvm, as chrony would)"
if ! grep -qw tsc <<< "$cs0"; then
    lab_console a 'dmesg | grep -iE "tsc|clocksource" | sed "s/^/FERRY-DMESG /"; echo FERRY-DMESG-END'
    wait_for 60 "$work/con-a" '^FERRY-DMESG-END' || true
    grep '^FERRY-DMESG ' "$work/con-a" | tr -d '\r' | sed 's/^FERRY-DMESG /clock-migrate: guest: /'
    lab_fail "the guest offers no TSC clocksource: '$cs0'"
fi

"$topo" exec client "$probe" watch "$IP" 7100 "$work/stop" > "$work/watch.out" 2>&1 &
wpid=$!
pids+=("$wpid")
sleep 3
kill -0 "$wpid" 2>/dev/null || lab_die "the client cannot watch the guest's clock"

lab_hop a b hostB 10.99.0.2
kill -0 "$wpid" 2>/dev/null || lab_die "the clock watcher's connection ended at A -> B"
sleep 3
lab_console b "echo tsc > \$cs/current_clocksource; echo FERRY-CS2 \$(cat \$cs/current_clocksource)"
wait_for 60 "$work/con-b" '^FERRY-CS2' || lab_die "the guest does not answer on B"
cs2=$(grep -m1 '^FERRY-CS2' "$work/con-b" | tr -d '\r')
if [ "$cs2" != "FERRY-CS2 tsc" ]; then
    lab_console b 'dmesg | grep -iE "tsc|clocksource|watchdog" | tail -n 6 | sed "s/^/FERRY-DMESG2 /"; echo FERRY-DMESG2-END'
    wait_for 30 "$work/con-b" '^FERRY-DMESG2-END' || true
    grep '^FERRY-DMESG2 ' "$work/con-b" | tr -d '\r' | sed 's/^FERRY-DMESG2/clock-migrate: guest dmesg:/'
    lab_fail "the guest did not switch to the TSC clocksource: '$cs2'"
fi
sleep 3
lab_hop b c hostA 10.99.0.1
kill -0 "$wpid" 2>/dev/null || lab_die "the clock watcher's connection ended at B -> A"
sleep 3
touch "$work/stop"
wait "$wpid" || lab_die "the clock watcher failed"
tr -d '\r' < "$work/watch.out" | grep -v '^probe ' | sed 's/^/clock-migrate: guest: /'
# what each ferry-vmm saw of the guest's clock as it saved and restored it
cat "$work"/vmm-*.out | grep 'guest clock' | sed 's/^/clock-migrate: /' || true
# KVM without TSC scaling runs a guest's TSC at the host's rate whatever rate it
# was told: if L1's kvm took a rate other than the one L1's TSC runs at, every
# guest clock here is wrong, and that is the lab's fault (lab/lab.sh loads kvm
# after Linux refines its TSC calibration for this reason)
khz=$(sed -n 's/.* at \([0-9]*\) kHz$/\1/p' "$work/vmm-a.out" | head -n 1)
hw=$(dmesg | sed -n 's/.*Refined TSC clocksource calibration: \([0-9]*\)\.\([0-9]*\) MHz.*/\1\2/p' | tail -n 1)
ppm=$([ -n "$khz" ] && [ -n "$hw" ] && echo $(((khz - hw) * 1000000 / hw)) || echo 0)
if [ "${ppm#-}" -gt 250 ]; then
    lab_fail "lab fault: L1's kvm runs guests' TSC at $khz kHz but L1's TSC ticks at $hw kHz (more than 250 ppm apart, no TSC scaling): guest clocks cannot be right in this L1"
fi

# ------------------------------------------------------------------ the checks
# (files, not process substitution: L1 has no /dev/fd)
grep '^probe ' "$work/watch.out" > "$work/probes" || lab_die "the watcher measured nothing"
grep '^step ' "$work/watch.out" > "$work/steps" || true
g=$(grep -m1 '^G ' "$work/watch.out") || lab_die "no findings from the guest's sampler"
for k in back_vdso back_sys; do
    v=$(sed -n "s/.* $k=\([0-9]*\).*/\1/p" <<< "$g")
    [ "$v" = 0 ] || lab_fail "CLOCK_MONOTONIC went back $v times ($k; $g)"
done
# CLOCK_REALTIME: the guest's answer against the midpoint of a probe's round trip, for
# probes answered within 20 ms (the error of the measure is at most 10 ms); reported
# before, between and after the hops
realtime=$(awk -v h1="${lab_hop_to[0]}" -v h2="${lab_hop_to[1]}" '
    $3 <= 20000000 {
        e = ($4 < 0 ? -$4 : $4); p = $2 < h1 ? 0 : $2 < h2 ? 1 : 2
        if (e > w[p]) w[p] = e; if (e > all) all = e; n++ }
    END { printf "%.1f %.1f %.1f %.1f %d", all / 1e6, w[0] / 1e6, w[1] / 1e6, w[2] / 1e6, n }' "$work/probes")
read -r worst w0 w1 w2 nprobes <<< "$realtime"
echo "clock-migrate: CLOCK_REALTIME vs host, worst: $w0 ms before the hops, $w1 ms after A -> B," \
     "$w2 ms after B -> A ($nprobes probes within 20 ms)"
awk -v o="$worst" 'BEGIN { exit !(o <= 50) }' ||
    lab_fail "CLOCK_REALTIME was $worst ms off the host's wall clock (limit 50 ms)"
# the longest step outside the hops: the lab's own scheduling noise in this run
other=0
while read -r _ gap end; do
    in_hop=0
    for i in "${!lab_hop_from[@]}"; do
        [ "$end" -lt "${lab_hop_from[$i]}" ] || [ "$end" -gt $((lab_hop_to[i] + 1000000000)) ] || in_hop=1
    done
    [ "$in_hop" = 1 ] || [ "$gap" -le "$other" ] || other=$gap
done < "$work/steps"
# The clock's step at a switchover: the guest was paused for the downtime, and its clock
# moved on by that plus its error, which is how far its offset to the host's wall clock
# moved: at most 20 ms.  Each side's offset is that of the probe with the shortest round
# trip in the 5 s before and after the hop (as NTP's clock filter does: the fastest
# exchange is the least disturbed by the lab's scheduling).
# The sampler's own gap also holds the lab's scheduling of the guest around the pause
# (its single L1 CPU runs the migration and other tests' VMs too; gaps of 50-400 ms
# come and go during pre-copy): it is reported, and bounded by downtime + 250 ms + the
# longest step outside the hops.
for i in "${!lab_hop_from[@]}"; do
    drift=$(awk -v a="${lab_hop_from[$i]}" -v b="${lab_hop_to[$i]}" '
        $2 < a && $2 >= a - 5e9 && (!n || $3 < rx) { rx = $3; x = $4; n = 1 }
        $2 > b && $2 <= b + 5e9 && (!m || $3 < ry) { ry = $3; y = $4; m = 1 }
        END { if (!n || !m) { print "none"; exit } printf "%.1f", (y - x) / 1e6 }' "$work/probes")
    best=0
    while read -r _ gap end; do
        if [ "$end" -ge "${lab_hop_from[$i]}" ] && [ "$end" -le $((lab_hop_to[i] + 1000000000)) ] &&
           [ "$gap" -gt "$best" ]; then
            best=$gap
        fi
    done < "$work/steps"
    down=${lab_hop_down[$i]%.*}
    echo "clock-migrate: hop $((i + 1)): downtime $down ms; guest clock error across it $drift ms;" \
         "the guest's sampler paused $((best / 1000000)) ms"
    [ "$drift" != none ] || { lab_fail "hop $((i + 1)): no probes to compare the guest's clock around it"; continue; }
    awk -v d="$drift" 'BEGIN { exit !(d <= 20 && d >= -20) }' ||
        lab_fail "hop $((i + 1)): the guest's clock stepped $drift ms more than the $down ms pause (limit 20 ms)"
    [ $((best / 1000000)) -le $((down + 250 + other / 1000000)) ] ||
        lab_fail "hop $((i + 1)): the guest's sampler paused $((best / 1000000)) ms for a $down ms downtime"
done
echo "clock-migrate: longest step outside the hops: $((other / 1000000)) ms"
[ "$other" -le 2000000000 ] || lab_fail "the guest's clock stalled for $((other / 1000000)) ms outside a migration"
"$cli" -S "$work/c.sock" vm quit > /dev/null || lab_fail "ferry vm quit failed"
[ ${#lab_errors[@]} -eq 0 ] || exit 1
