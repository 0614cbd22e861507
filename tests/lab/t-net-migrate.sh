#!/bin/bash
# shellcheck disable=SC2317  # functions called indirectly (trap)
# Lab test, devices that migrate: a stock Debian guest with a virtio-blk disk (a raw image
# both "hosts" open: shared storage) and a virtio-net NIC on a tap, in the network of
# lab/net-topology.sh: ferry-vmm runs in the hostA namespace on hostA's tap-vm, a client
# namespace sits on the VM network, and the VM moves over the migration network
# (10.99.0.0/24) A -> B -> A.  The guest (10.88.0.5, MAC 52:54:00:88:00:05)
#   - writes numbered 64 KiB blocks to /dev/vda in a loop (O_DIRECT + fsync), all along;
#   - serves a TCP stream (tests/lab/seqstream.c): sequence numbers every 20 ms, and echoes
#     of the client's own numbers, to a client in the client namespace connected before
#     the first migration.
# Asserted, after each hop: the source exited 0, the guest writes on on the destination,
# the destination host's bridge learned the VM's MAC on its tap-vm and the switch on that
# host's uplink (bridge fdb, after the RARP/GARP announcement).  At the end: the client's
# one connection carried both sequences with no gap and no reset, each to the end (a stopped
# stream is a guest timer that never fired), the guest still has its
# MAC and IP, every block it wrote reads back holding its number (in the guest and in the
# image file), and `ferry vm quit` ends the VM.  Reported: TCP throughput client <-> guest,
# the client's longest pause, each hop's downtime, the disk blocks written.
# Bad input, against the running VM (which must go on untouched): a destination whose tap
# cannot be opened (busy) and a destination that sees a different disk file both refuse
# the migration with a clear error.
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
vmm=$BUILD/vmm/ferry-vmm
cli=$BUILD/cli/ferry
seq=$BUILD/tests/lab/seqstream
for f in "$vmm" "$cli" "$seq"; do
    [ -x "$f" ] || { echo "t-net-migrate: no $f (build first)" >&2; exit 1; }
done
export FERRY_NET_PREFIX=ftn-
topo=lab/net-topology.sh
MAC=52:54:00:88:00:05 IP=10.88.0.5

work=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$topo" down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
errors=()
fail() { errors+=("$*"); echo "t-net-migrate: $*" >&2; }
die() {
    fail "$*"
    local f
    for f in "$work"/con-* "$work"/vmm-*.out "$work"/mig-*.out "$work/client.out"; do
        [ -s "$f" ] || continue
        echo "---- ${f##*/} (last 25 lines) ----" >&2
        tail -n 25 "$f" | tr -d '\r' >&2
    done
    exit 1
}
count() { grep -c "$1" "$2" 2>/dev/null || true; }
wait_for() {   # wait_for SECONDS FILE REGEX
    local end=$(($(date +%s) + $1))
    while ! grep -qE "$3" "$2" 2>/dev/null; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.5
    done
}
# wait_more SECONDS FILE REGEX N: until FILE has more than N lines matching REGEX
wait_more() {
    local end=$(($(date +%s) + $1))
    while [ "$(count "$3" "$2")" -le "$4" ]; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.5
    done
}
jnum() { jq -r ".$2 // empty" "$1"; }

"$topo" down >/dev/null 2>&1 || true
"$topo" up

# ------------------------------------------------------------------ the guest
img=$work/disk.img
truncate -s 64M "$img"
cat > "$work/init.sh" <<EOF
stty -echo 2>/dev/null
ip link set lo up
ip link set eth0 up
ip addr add $IP/24 dev eth0
echo "FERRY-NET \$(cat /sys/class/net/eth0/address) \$(ip -4 -o addr show eth0 | awk '{ print \$4 }')"
$seq serve 7000 &
blk() { printf 'BLOCK %08d' "\$1"; head -c 65522 /dev/zero | tr '\0' '.'; }
(
    n=0
    while [ ! -e /tmp/stop ]; do
        blk \$((n % 256)) | dd of=/dev/vda bs=64k count=1 seek=\$((n % 256)) iflag=fullblock oflag=direct conv=fsync 2>/dev/null ||
            echo "FERRY-FAIL write \$n"
        n=\$((n + 1))
        [ \$((n % 8)) -ne 0 ] || echo "FERRY-W \$n"
    done
    echo "FERRY-WRITTEN \$n"
) &
writer=\$!
echo "FERRY-READY"
while read -r cmd; do
    case \$cmd in
        stop)
            touch /tmp/stop; wait \$writer
            bad=0 n=0
            while [ \$n -lt 256 ]; do
                h=\$(dd if=/dev/vda bs=64k skip=\$n count=1 iflag=direct 2>/dev/null | head -c 14)
                case \$h in "BLOCK \$(printf %08d \$n)"|"") ;; *) bad=\$((bad + 1)); echo "FERRY-BAD \$n '\$h'" ;; esac
                n=\$((n + 1))
            done
            echo "FERRY-VERIFY bad=\$bad" ;;
        *) eval "\$cmd" ;;
    esac
done
EOF
lab/lab.sh mkinitrd -m virtio_pci,virtio_blk,virtio_net -b "$seq" "$work/initrd.cpio" "$work/init.sh"

# start_vmm NAME HOST ARGS...: ferry-vmm in HOST's namespace; console in con-NAME, its
# input from the FIFO in-NAME (fd in_NAME), messages in vmm-NAME.out
# wrap: a command start_vmm puts before ferry-vmm (e.g. a private mount namespace)
declare -A vpid infd
wrap=()
start_vmm() {
    local name=$1 host=$2 fd; shift 2
    mkfifo "$work/in-$name"
    exec {fd}<>"$work/in-$name"
    infd[$name]=$fd
    : > "$work/con-$name"
    "$topo" exec "$host" "${wrap[@]}" "$vmm" --control "$work/$name.sock" "$@" < "$work/in-$name" \
        > "$work/con-$name" 2> "$work/vmm-$name.out" &
    vpid[$name]=$!
    pids+=($!)
}
console() { echo "$2" >&"${infd[$1]}"; }
exited() { ! kill -0 "${vpid[$1]}" 2>/dev/null; }

start_vmm a hostA --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --mem 256M \
    --append "$LAB_LINUX_APPEND" --disk "$img" --net "tap=tap-vm,mac=$MAC"
wait_for "$limit" "$work/con-a" '^FERRY-READY' || die "the guest did not come up on A"
wait_for 30 "$work/con-a" '^FERRY-W ' || die "the guest does not write its disk"
net0=$(grep -m1 '^FERRY-NET ' "$work/con-a" | tr -d '\r')
[ "$net0" = "FERRY-NET $MAC $IP/24" ] || die "guest network: '$net0' (want FERRY-NET $MAC $IP/24)"
"$topo" exec client busybox ping -c 2 -W 5 "$IP" > /dev/null || die "the client cannot ping the guest"

# ------------------------------------------------------------------ throughput
console a "$seq recv 5001 | sed 's/^/FERRY-RX /' &"
sleep 2
"$topo" exec client "$seq" send "$IP" 5001 4 || die "client -> guest bulk transfer failed"
wait_for 60 "$work/con-a" '^FERRY-RX recv' || die "the guest did not report what it received"
rx=$(grep -m1 '^FERRY-RX' "$work/con-a" | tr -d '\r' | sed 's/^FERRY-RX recv: //')
"$topo" exec client "$seq" recv 5002 > "$work/recv-client.out" &
pids+=($!)
sleep 1
console a "$seq send 10.88.0.100 5002 4"
wait_for 60 "$work/recv-client.out" '^recv' || die "guest -> client bulk transfer failed"
tx=$(sed 's/^recv: //' "$work/recv-client.out")
echo "net-migrate: TCP client -> guest: $rx; guest -> client: $tx"
echo "net-migrate: $("$cli" -S "$work/a.sock" vm status | grep '^nic:')"

# ------------------------------------------------------------------ the stream
"$topo" exec client "$seq" client "$IP" 7000 "$work/stop" > "$work/client.out" 2>&1 &
cpid=$!
sleep 3
kill -0 "$cpid" 2>/dev/null || die "the client's connection ended before the migrations"

# ------------------------------------------------------------------ bad destinations
# Each must refuse the VM with a clear error while it goes on running on A.
bad_dest() {   # bad_dest NAME HOST IP WANT-REGEX EXTRA-ARGS...
    local name=$1 host=$2 ip=$3 want=$4; shift 4
    start_vmm "$name" "$host" --incoming "$ip:4445" "$@"
    wait_for 30 "$work/vmm-$name.out" 'port 4445' || die "$name: destination did not listen"
    local st=0 w
    w=$(count '^FERRY-W ' "$work/con-a")
    timeout "$limit" "$cli" -S "$work/a.sock" vm migrate --to "$ip:4445" > "$work/mig-$name.out" 2>&1 || st=$?
    [ "$st" -ne 0 ] || die "$name: the migration succeeded"
    grep -qE "$want" "$work/mig-$name.out" ||
        die "$name: error not as expected: $(tail -n 1 "$work/mig-$name.out")"
    echo "net-migrate: $name refused: $(grep -oE "$want.*" "$work/mig-$name.out" | head -n 1 | cut -c1-150)"
    timeout 30 tail --pid="${vpid[$name]}" -f /dev/null || die "$name: destination did not exit"
    wait_more 60 "$work/con-a" '^FERRY-W ' "$w" || die "$name: the VM does not run on A after the refusal"
    [ "$("$cli" -S "$work/a.sock" vm status --json | jq -r .state)" = running ] || die "$name: A not running"
}
# hostA's tap-vm is held by A: a second VMM there cannot have it
bad_dest busy-tap hostA 10.99.0.1 "tap tap-vm: device busy"
# hostB sees another file at the image's path (its own mount namespace): same size,
# other content
other=$work/other.img
truncate -s 64M "$other"
# shellcheck disable=SC2016  # expanded by that sh
wrap=(unshare -m sh -c 'mount --bind "$0" "$1" && shift && exec "$@"' "$other" "$img")
bad_dest other-disk hostB 10.99.0.2 "not the same file"
wrap=()

# ------------------------------------------------------------------ migrations
hop() {   # hop SRC DST HOST IP
    local src=$1 dst=$2 host=$3 ip=$4 st=0 w
    start_vmm "$dst" "$host" --incoming "$ip:4444"
    wait_for 30 "$work/vmm-$dst.out" 'port 4444' || die "$dst: destination did not listen"
    timeout "$limit" "$cli" -S "$work/$src.sock" vm migrate --to "$ip:4444" --json \
        > "$work/mig-$src$dst.out" 2> "$work/mig-$src$dst.err" || st=$?
    [ "$st" -eq 0 ] || die "migration $src -> $dst failed ($st): $(tail -n 1 "$work/mig-$src$dst.err")"
    timeout 90 tail --pid="${vpid[$src]}" -f /dev/null || die "source $src did not exit"
    wait "${vpid[$src]}" || die "source $src exited $?"
    wait_more 90 "$work/con-$dst" '^FERRY-W ' 1 || die "the guest does not write its disk on $dst"
    # the announcement: hostX's bridge learned the MAC on tap-vm, the switch on to-hostX
    local fdb_host fdb_sw
    fdb_host=$(bridge -n "${FERRY_NET_PREFIX}$host" fdb show br br-vm | grep -i "^$MAC " || true)
    fdb_sw=$(bridge -n "${FERRY_NET_PREFIX}switch" fdb show br br-vm | grep -i "^$MAC " || true)
    grep -q "dev tap-vm" <<< "$fdb_host" || die "$host's bridge did not learn $MAC on tap-vm: '$fdb_host'"
    grep -q "dev to-$host" <<< "$fdb_sw" || die "the switch did not learn $MAC on to-$host: '$fdb_sw'"
    kill -0 "$cpid" 2>/dev/null || die "the client's connection ended at $src -> $dst"
    echo "net-migrate: $src -> $dst ($host): downtime $(jnum "$work/mig-$src$dst.out" downtime_ms) ms" \
         "(verify $(jnum "$work/mig-$src$dst.out" verify_ms) ms), total $(jnum "$work/mig-$src$dst.out" total_ms) ms;" \
         "fdb: $host tap-vm, switch to-$host"
}
hop a b hostB 10.99.0.2
sleep 3
hop b c hostA 10.99.0.1
sleep 3

# ------------------------------------------------------------------ the checks
touch "$work/stop"
crc=0
wait "$cpid" || crc=$?
tr -d '\r' < "$work/client.out" | sed 's/^/net-migrate: /'
[ "$crc" -eq 0 ] || fail "the client's stream broke (status $crc)"
# shellcheck disable=SC2016  # expanded by the guest
console c 'echo "FERRY-NET2 $(cat /sys/class/net/eth0/address) $(ip -4 -o addr show eth0 | awk "{ print \$4 }")"'
wait_for 60 "$work/con-c" '^FERRY-NET2' || die "the guest does not answer on C"
net2=$(grep -m1 '^FERRY-NET2 ' "$work/con-c" | tr -d '\r')
[ "$net2" = "FERRY-NET2 $MAC $IP/24" ] || fail "guest network after the migrations: '$net2'"
console c stop
wait_for "$limit" "$work/con-c" '^FERRY-VERIFY' || die "no disk verification on C"
cat "$work"/con-a "$work"/con-b "$work"/con-c | tr -d '\r' > "$work/all.log"
verify=$(grep -m1 '^FERRY-VERIFY' "$work/all.log" | cut -d' ' -f2)
written=$(grep -m1 '^FERRY-WRITTEN' "$work/all.log" | cut -d' ' -f2)
[ "$verify" = "bad=0" ] || fail "the guest found bad blocks: $verify"
! grep -q 'FERRY-FAIL' "$work/all.log" || fail "guest I/O errors: $(grep -m3 FERRY-FAIL "$work/all.log" | tr '\n' ' ')"
"$cli" -S "$work/c.sock" vm quit > /dev/null || fail "ferry vm quit failed"
timeout 60 tail --pid="${vpid[c]}" -f /dev/null || fail "C did not exit after quit"
bad=$(lab_bad_blocks "$img")
[ "$bad" = 0 ] || fail "$bad blocks in the image file do not hold their number"
echo "net-migrate: disk: ${written:-?} blocks written across A, B and C (A: $(count '^FERRY-W ' "$work/con-a")x8," \
     "B: $(count '^FERRY-W ' "$work/con-b")x8, C: $(count '^FERRY-W ' "$work/con-c")x8), guest check $verify, image check bad=$bad"
[ ${#errors[@]} -eq 0 ] || exit 1
