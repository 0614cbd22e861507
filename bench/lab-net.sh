#!/bin/bash
# bench/lab-net.sh - virtio-net TCP throughput in the nested lab, against the same path
# without the VM. Runs inside the lab's L1:
#
#   meson setup build --werror && ninja -C build
#   lab/lab.sh run --timeout 900 -- bench/lab-net.sh
#
# In lab/net-topology.sh's network (prefix fbn-), a stock Debian guest (10.88.0.5) runs
# on hostA's tap-vm under ferry-vmm with iperf3 -s; the client namespace measures, with
# iperf3 (TCP, SECS seconds each):
#   baseline      client -> a veth stand-in VM on hostA's bridge (net-topology.sh vm):
#                 the same bridges and veths, no VM
#   client->guest iperf3 -c
#   guest->client iperf3 -c -R (the guest's iperf3 sends)
# and prints the three figures and their ratios, the NIC's counters (ferry vm status
# --json) and the guest's virtio interrupt counts. Exit status 1 when a target is missed:
# guest->client >= 0.8 x client->guest, both >= 0.5 x baseline. Not a CI test.
#   BUILD   build directory (default "build");  SECS   seconds per measurement (default 8)
set -euo pipefail
cd "$(dirname "$(realpath "${BASH_SOURCE[0]}")")/.."
BUILD=$(realpath "${BUILD:-build}")
SECS=${SECS:-8}
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
wait_for() {   # wait_for SECONDS FILE REGEX
    local end=$(($(date +%s) + $1))
    until grep -qE "$3" "$2" 2>/dev/null; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.5
    done
}
# iperf NS HOST [ARGS]: TCP Mbit/s received, from NS to the iperf3 server at HOST
iperf() {
    local ns=$1 host=$2; shift 2
    "$topo" exec "$ns" iperf3 -c "$host" -t "$SECS" -J "$@" > "$work/iperf.json" ||
        die "iperf3 $* to $host failed: $(jq -r '.error // empty' "$work/iperf.json" 2>/dev/null)"
    jq -r '.end.sum_received.bits_per_second / 1e6 | . * 10 | floor / 10' "$work/iperf.json"
}

"$topo" down >/dev/null 2>&1 || true
"$topo" up 2>/dev/null
"$topo" vm hostA base 10.88.0.6/24
"$topo" exec vm-base iperf3 -s -D
sleep 1
base=$(iperf client 10.88.0.6)

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
"$topo" exec hostA "$BUILD/vmm/ferry-vmm" --control "$work/vm.sock" --kernel "$VMLINUZ" \
    --initrd "$work/initrd.cpio" --mem 256M --append "$LAB_LINUX_APPEND" \
    --net "tap=tap-vm,mac=52:54:00:88:00:05" < "$work/in" > "$work/con" 2> "$work/vmm.out" &
vmm_pid=$!
wait_for 180 "$work/con" '^FERRY-READY' || die "the guest did not come up"
"$topo" exec client busybox ping -c 2 -W 5 "$IP" > /dev/null || die "the client cannot ping the guest"
in=$(iperf client "$IP")
out=$(iperf client "$IP" -R)

echo 'grep virtio /proc/interrupts | sed "s/^/FERRY-IRQ /"' >&"$infd"
sleep 2
tr -d '\r' < "$work/con" | sed -n 's/^FERRY-IRQ */lab-net: guest irq /p'
echo "lab-net: nic $(build/cli/ferry -S "$work/vm.sock" vm status --json | jq -c '.nics[0]')"
echo "lab-net: baseline (client -> namespace) $base Mbit/s"
echo "lab-net: client -> guest $in Mbit/s, guest -> client $out Mbit/s"
read -r r_out_in r_in_base r_out_base <<< "$(awk -v b="$base" -v i="$in" -v o="$out" \
    'BEGIN { printf "%.2f %.2f %.2f", o / i, i / b, o / b }')"
echo "lab-net: guest->client / client->guest $r_out_in (target >= 0.8)," \
     "client->guest / baseline $r_in_base, guest->client / baseline $r_out_base (targets >= 0.5)"
awk -v a="$r_out_in" -v b="$r_in_base" -v c="$r_out_base" 'BEGIN { exit !(a >= 0.8 && b >= 0.5 && c >= 0.5) }' ||
    { echo "lab-net: target missed"; exit 1; }
echo "lab-net: targets met"
