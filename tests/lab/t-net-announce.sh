#!/bin/bash
# Lab test, the guest announces itself after a migration (VIRTIO_NET_F_GUEST_ANNOUNCE): a
# stock Debian guest with a virtio-net NIC on hostA's tap-vm (lab/net-topology.sh) moves
# to hostB; the destination sets VIRTIO_NET_S_ANNOUNCE, the guest's driver sends its own
# gratuitous ARP and acks on the control queue. Asserted: the destination counted one
# ack (ferry vm status --json: nics[0].announce_acks) and no more, the switch learned the
# MAC on hostB's uplink, and the client reaches the guest on B.
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
export FERRY_NET_PREFIX=fna-
MAC=52:54:00:88:00:05 IP=10.88.0.5
lab_vm_init t-net-announce
acks() { "$cli" -S "$work/$1.sock" vm status --json | jq -r '.nics[0].announce_acks'; }

cat > "$work/init.sh" <<EOF
ip link set lo up
ip link set eth0 up
ip addr add $IP/24 dev eth0
echo FERRY-READY
while true; do sleep 1; done
EOF
lab/lab.sh mkinitrd -m virtio_pci,virtio_net "$work/initrd.cpio" "$work/init.sh"
lab_vm_start a hostA --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --mem 256M \
    --append "$LAB_LINUX_APPEND" --net "tap=tap-vm,mac=$MAC"
wait_for "$limit" "$work/con-a" '^FERRY-READY' || lab_die "the guest did not come up on A"
"$topo" exec client busybox ping -c 2 -W 5 "$IP" > /dev/null || lab_die "the client cannot ping the guest on A"
[ "$(acks a)" = 0 ] || lab_die "A counted announce acks before any migration"
lab_hop a b hostB 10.99.0.2
end=$(($(date +%s) + 30))
until [ "$(acks b)" = 1 ]; do
    [ "$(date +%s)" -lt "$end" ] || lab_die "the guest did not ack the announcement on B (acks: $(acks b))"
    sleep 0.5
done
sleep 3
[ "$(acks b)" = 1 ] || lab_die "the guest acked $(acks b) times"
bridge -n "${FERRY_NET_PREFIX}switch" fdb show br br-vm | grep -i "^$MAC .*dev to-hostB" > /dev/null ||
    lab_die "the switch did not learn $MAC on to-hostB"
"$topo" exec client busybox ping -c 2 -W 5 "$IP" > /dev/null || lab_die "the client cannot ping the guest on B"
echo "net-announce: the guest acked the announcement on B: $("$cli" -S "$work/b.sock" vm status --json |
    jq -c '.nics[0] | { announce_acks, rx_packets, tx_packets }')"
"$cli" -S "$work/b.sock" vm quit > /dev/null || lab_die "ferry vm quit failed"
