#!/bin/bash
# shellcheck disable=SC2317  # functions called indirectly (trap)
# shellcheck disable=SC2016  # the single-quoted scripts are expanded by the shells they go to
# Lab test, a real service through live migrations: Debian's redis-server runs in a stock
# Debian guest with its data on the guest's virtio disk (ext4, append-only file with
# `appendfsync always`: a write is acknowledged once it is on disk), on a tap in the
# network of lab/net-topology.sh.  From the client namespace, Debian's stock clients
# load it all along: redis-benchmark (SET, GET, INCR, LPUSH, batches of 500 requests
# over 2 connections, 0.5 s apart) and a writer that stores key n = n with redis-cli
# every 50 ms and notes each acknowledgement.  (The lab's L1 has one emulated CPU for
# the client, both VMMs and the guest: a heavier load starves it until it looks hung.)  The VM moves A -> B -> A meanwhile.  Asserted:
#   - no client error: every redis-benchmark batch and every write succeeded;
#   - every acknowledged write reads back afterwards, and again after redis-server was
#     killed (SIGKILL) in the guest and restarted from its append-only file on disk;
# Reported per hop: the downtime and the longest gap the writer saw between two
# acknowledged writes around it (the client-visible stall).
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
export FERRY_NET_PREFIX=fts-
MAC=52:54:00:88:00:09 IP=10.88.0.9
lab_vm_init t-service-migrate

mkfs.ext4 -q -F "$work/disk.img" 64M
cat > "$work/init.sh" <<EOF
stty -echo 2>/dev/null
ip link set lo up
ip link set eth0 up
ip addr add $IP/24 dev eth0
mkdir -p /data
mount -t ext4 /dev/vda /data || echo "FERRY-FAIL mount"
redis() {
    redis-server --bind 0.0.0.0 --port 6379 --protected-mode no --dir /data --appendonly yes \
        --appendfsync always --save "" --daemonize no --logfile /data/redis.log &
}
redis
echo FERRY-READY
while read -r cmd; do eval "\$cmd"; done
EOF
lab/lab.sh mkinitrd -m virtio_pci,virtio_net,virtio_blk,ext4 -b redis-server -b redis-cli \
    "$work/initrd.cpio" "$work/init.sh"

lab_vm_start a hostA --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --mem 256M \
    --append "$LAB_LINUX_APPEND" --disk "$work/disk.img" --net "tap=tap-vm,mac=$MAC"
wait_for "$limit" "$work/con-a" '^FERRY-READY' || lab_die "the guest did not come up on A"
! grep -q FERRY-FAIL "$work/con-a" || lab_die "the guest cannot mount its disk"
rcli() { "$topo" exec client redis-cli -h "$IP" "$@"; }
up() {   # redis answers within $1 seconds
    local end=$(($(date +%s) + $1))
    until [ "$(rcli ping 2>/dev/null)" = PONG ]; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 1
    done
}
up 60 || lab_die "redis-server does not answer in the guest"

# ------------------------------------------------------------------ the load
stop=$work/stop
"$topo" exec client bash -c '
    b=0
    while [ ! -e "$2" ]; do
        b=$((b + 1))
        timeout 120 redis-benchmark -h "$1" -c 2 -n 500 -t set,get,incr,lpush -q > "$3.$b" 2>&1 ||
            echo "batch $b exited $?" >> "$3.errors"
        ! grep -qi error "$3.$b" || echo "batch $b: $(grep -i -m1 error "$3.$b")" >> "$3.errors"
        sleep 0.5
    done
    echo "$b" > "$3.batches"' _ "$IP" "$stop" "$work/bench" &
bench_pid=$!
pids+=("$bench_pid")
"$topo" exec client bash -c '
    n=0
    while [ ! -e "$2" ]; do
        n=$((n + 1))
        r=$(timeout 60 redis-cli -h "$1" SET "k$n" "$n" 2>&1) || r="$r (status $?)"
        if [ "$r" = OK ]; then echo "$n $(date +%s%N)" >> "$3.acked"
        else echo "write $n: $r" >> "$3.errors"; fi
        sleep 0.05
    done' _ "$IP" "$stop" "$work/writer" &
writer_pid=$!
pids+=("$writer_pid")
sleep 5

# Under this load the lab's one TCG CPU leaves the TLS link about as fast as redis
# dirties memory (9 against 11 MB/s in one CI run): the hops converge because the
# engine slows the guest's vCPUs (auto-converge; lab_hop reports how far).
lab_hop a b hostB 10.99.0.2
sleep 5
lab_hop b c hostA 10.99.0.1
sleep 5
touch "$stop"
for p in "$bench_pid" "$writer_pid"; do
    timeout 150 tail --pid="$p" -f /dev/null || lab_die "the client load did not stop"
done

# ------------------------------------------------------------------ the checks
batches=$(cat "$work/bench.batches" 2>/dev/null || echo 0)
acked=$(wc -l < "$work/writer.acked")
if [ "$batches" -eq 0 ] || [ "$acked" -eq 0 ]; then
    lab_die "no load ran ($batches benchmark batches, $acked writes)"
fi
for f in bench writer; do
    [ ! -s "$work/$f.errors" ] || lab_fail "$f errors: $(head -n 3 "$work/$f.errors" | tr '\n' ' ')"
done
echo "service-migrate: redis-benchmark: $batches batches of 4 x 500 requests; the last:" \
     "$(tr '\r' '\n' < "$work/bench.$batches" | grep -E '^[A-Z]+: [0-9.]+ requests' |
        sed 's/ requests per second.*/ rq\/s/' | tr '\n' ' ')"
echo "service-migrate: writer: $acked acknowledged writes"
for i in "${!lab_hop_from[@]}"; do
    gap=$(awk -v a="${lab_hop_from[$i]}" -v b="${lab_hop_to[$i]}" '
        p && $2 >= a && p <= b + 2e9 { g = $2 - p; if (g > m) m = g } { p = $2 } END { printf "%d", m / 1e6 }' \
        "$work/writer.acked")
    echo "service-migrate: hop $((i + 1)): downtime ${lab_hop_down[$i]} ms; longest gap between acknowledged writes $gap ms"
done

# every acknowledged write reads back: now, and after redis-server died and restarted
# from its append-only file on the guest's disk
check() {   # check WHEN
    awk '{ print "GET k" $1 }' "$work/writer.acked" > "$work/gets"
    timeout 120 "$topo" exec client redis-cli -h "$IP" < "$work/gets" > "$work/got" || lab_die "GETs failed ($1)"
    local bad
    bad=$(awk '{ print $1 }' "$work/writer.acked" | paste -d' ' - "$work/got" | awk '$1 != $2' | wc -l)
    [ "$bad" = 0 ] || lab_fail "$1: $bad of $acked acknowledged writes do not read back" \
        "(first: $(awk '{ print $1 }' "$work/writer.acked" | paste -d' ' - "$work/got" | awk '$1 != $2' | head -n 1))"
    echo "service-migrate: $1: $((acked - bad)) of $acked acknowledged writes read back"
}
check "after the hops"
lab_console c 'kill -9 $(pidof redis-server); sleep 1; redis'
sleep 2
up 60 || lab_die "redis-server did not restart in the guest"
check "after kill -9 and a restart from disk"
"$cli" -S "$work/c.sock" vm quit > /dev/null || lab_fail "ferry vm quit failed"
[ ${#lab_errors[@]} -eq 0 ] || exit 1
