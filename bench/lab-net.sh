#!/bin/bash
# bench/lab-net.sh - virtio-net TCP throughput in the nested lab, against the same path
# without the VM. Runs inside the lab's L1:
#
#   meson setup build --werror && ninja -C build
#   lab/lab.sh run --timeout 900 -- bench/lab-net.sh
#
# In lab/net-topology.sh's network (prefix fbn-), a stock Debian guest (10.88.0.5) runs
# on hostA's tap-vm under ferry-vmm with iperf3 -s; the client namespace measures, with
# iperf3 (TCP, SECS seconds, the best of RUNS rounds of all three):
#   baseline      client -> a veth stand-in VM on hostA's bridge (net-topology.sh vm):
#                 the same bridges and veths, no VM
#   client->guest iperf3 -c
#   guest->client iperf3 -c -R (the guest's iperf3 sends)
# and prints the three figures and their ratios, L1's CPU use, the NIC's counters (ferry
# vm status --json: frames, kicks, interrupts, offloads) and the guest's virtio interrupt
# counts. Exit status 1 when a target is missed: guest->client >= 0.8 x client->guest,
# both >= 0.5 x baseline. A benchmark, not a CI test.
#   BUILD            build directory (default "build")
#   SECS, RUNS       seconds per iperf3 run (default 5), rounds (default 3)
#   FERRY_L2_VMM=qemu  the same with QEMU's userspace virtio-net (a reference; -e to lab.sh)
set -euo pipefail
cd "$(dirname "$(realpath "${BASH_SOURCE[0]}")")/.."
BUILD=$(realpath "${BUILD:-build}")
SECS=${SECS:-5}
RUNS=${RUNS:-3}
[ -n "${FERRY_LAB_L1:-}" ] || { echo "lab-net: run me inside the lab: lab/lab.sh run -- $0" >&2; exit 2; }
eval "$(lab/lab.sh info)"
. tests/lab/lib.sh
export FERRY_NET_PREFIX=fbn-
topo=lab/net-topology.sh
IP=10.88.0.5
work=$(mktemp -d)
vmm_pid=
cleanup() {
    [ -z "$vmm_pid" ] || kill "$vmm_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    "$topo" down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
die() { echo "lab-net: $*" >&2; tail -n 20 "$work/con" "$work/vmm.out" 2>/dev/null | tr -d '\r' >&2; exit 1; }
# iperf HOST [ARGS]: TCP Mbit/s received, from the client to the iperf3 server at HOST
iperf() {
    local host=$1; shift
    "$topo" exec client iperf3 -c "$host" -t "$SECS" -J "$@" > "$work/iperf.json" ||
        die "iperf3 $* to $host failed: $(jq -r '.error // empty' "$work/iperf.json" 2>/dev/null)"
    jq -r '.end.sum_received.bits_per_second / 1e6 | . * 10 | floor / 10' "$work/iperf.json"
}
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a ? b : a) }'; }

"$topo" down >/dev/null 2>&1 || true
"$topo" up 2>/dev/null
"$topo" vm hostA base 10.88.0.6/24
"$topo" exec vm-base iperf3 -s -D

cat > "$work/init.sh" <<EOF
ip link set lo up
ip link set eth0 up
ip addr add $IP/24 dev eth0
iperf3 -s -D
echo FERRY-READY
while read -r cmd; do eval "\$cmd"; done
EOF
lab/lab.sh mkinitrd -m virtio_pci,virtio_net -b iperf3 "$work/initrd.cpio" "$work/init.sh"
mkfifo "$work/in"
exec {infd}<>"$work/in"
if [ "${FERRY_L2_VMM:-ferry}" = qemu ]; then   # the reference: QEMU's virtio-net, no vhost
    # shellcheck disable=SC2054  # commas inside QEMU arguments
    vmm=(qemu-system-x86_64 -enable-kvm -cpu host -m 256 -nodefaults -no-user-config -display none
         -serial stdio -netdev tap,id=n0,ifname=tap-vm,script=no,downscript=no,vhost=off
         -device virtio-net-pci,netdev=n0,mac=52:54:00:88:00:05 -kernel "$VMLINUZ"
         -initrd "$work/initrd.cpio" -append "$LAB_LINUX_APPEND")
else
    vmm=("$BUILD/vmm/ferry-vmm" --control "$work/vm.sock" --net "tap=tap-vm,mac=52:54:00:88:00:05"
         --mem 256M --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --append "$LAB_LINUX_APPEND")
fi
"$topo" exec hostA "${vmm[@]}" < "$work/in" > "$work/con" 2> "$work/vmm.out" &
vmm_pid=$!
wait_for 180 "$work/con" '^FERRY-READY' || die "the guest did not come up"
"$topo" exec client busybox ping -c 2 -W 5 "$IP" > /dev/null || die "the client cannot ping the guest"
nic() { [ "${FERRY_L2_VMM:-ferry}" = qemu ] || "$BUILD/cli/ferry" -S "$work/vm.sock" vm status --json | jq -c '.nics[0] | del(.name, .tap, .mac, .ipv4)'; }
# cpu: CPU ticks since the last call: L1's (/proc/stat: whether its one CPU is the limit),
# the VMM's packet thread's and its other threads' (vCPU: the guest, and its exits)
cpu() {
    local f
    { head -n 1 /proc/stat
      for f in /proc/"$vmm_pid"/task/*; do
          echo "$(sed 's/^virtio-net.*/packet-thread/; t; s/.*/other-threads/' "$f/comm") $(cut -d' ' -f14,15 "$f/stat")"
      done; } > "$work/cpu.now"
    [ ! -e "$work/cpu.last" ] || awk 'NR == FNR { o[$1] += $2 + $3; c[$1] = $0; next }
        $1 == "cpu" { split(c["cpu"], p, " ")
                      printf "L1 user %d sys %d softirq %d idle %d;", $2 - p[2], $4 - p[4], $8 - p[8], $5 - p[5]; next }
        { n[$1] += $2 + $3 } END { for (k in n) printf " %s %d", k, n[k] - o[k]; print "" }' \
        "$work/cpu.last" "$work/cpu.now"
    mv "$work/cpu.now" "$work/cpu.last"
}
# rounds of the three, so that the shared host's other load hits all alike; each figure
# is its best round (other load only ever lowers one)
base=0 in=0 out=0
for ((round = 1; round <= RUNS; round++)); do
    base=$(max "$base" "$(iperf 10.88.0.6)")
    cpu > /dev/null
    n0=$(nic)
    in=$(max "$in" "$(iperf "$IP")")
    c1=$(cpu)
    n1=$(nic)
    out=$(max "$out" "$(iperf "$IP" -R)")
    c2=$(cpu)
    n2=$(nic)
done
echo "lab-net: last round: CPU ticks during client->guest: $c1"
echo "lab-net: last round: CPU ticks during guest->client: $c2"
echo "lab-net: last round: nic before $n0"
echo "lab-net: nic after client->guest $n1"
echo "lab-net: nic after guest->client $n2"

echo 'grep virtio /proc/interrupts | sed "s/^/FERRY-IRQ /"' >&"$infd"
sleep 2
tr -d '\r' < "$work/con" | sed -n 's/^FERRY-IRQ */lab-net: guest irq /p'
echo "lab-net: baseline (client -> namespace) $base Mbit/s"
echo "lab-net: client -> guest $in Mbit/s, guest -> client $out Mbit/s"
read -r r_out_in r_in_base r_out_base <<< "$(awk -v b="$base" -v i="$in" -v o="$out" \
    'BEGIN { printf "%.2f %.2f %.2f", o / i, i / b, o / b }')"
echo "lab-net: guest->client / client->guest $r_out_in (target >= 0.8)," \
     "client->guest / baseline $r_in_base, guest->client / baseline $r_out_base (targets >= 0.5)"
awk -v a="$r_out_in" -v b="$r_in_base" -v c="$r_out_base" 'BEGIN { exit !(a >= 0.8 && b >= 0.5 && c >= 0.5) }' ||
    { echo "lab-net: target missed"; exit 1; }
echo "lab-net: targets met"
