#!/bin/bash
# Network identity follows the VM (micro-guest; the Linux guest's version is
# tests/lab/t-net-migrate.sh): in lab/net-topology.sh's namespaces, a dirtier VM
# with a virtio-net NIC on hostA's tap-vm migrates to hostB over the migration
# network and back. After each hop the destination's announcement must have
# taught the destination host's bridge the VM's MAC on its tap-vm and the switch
# on that host's uplink (bridge fdb), and the guest must go on working.
# Bad input: a second VM on a tap that is in use fails to start with a one-line
# error, and a destination whose tap is in use refuses the VM, which goes on
# running on its source.
set -u -o pipefail
: "${FERRY_VMM:?FERRY_VMM is not set (run through meson test)}"
: "${GUEST_DIR:?}" "${SRC:?}"
CLI=$(dirname "$FERRY_VMM")/../cli/ferry
TOPO=$SRC/lab/net-topology.sh
export FERRY_NET_PREFIX=fmi-
MAC=52:54:00:77:00:05
if [ "$(id -u)" != 0 ] || [ ! -c /dev/net/tun ]; then
    echo "SKIP: needs root and /dev/net/tun (network namespaces, taps)"
    exit 77
fi
TMP=$(mktemp -d)
pids=()
declare -A pid
cleanup() {
    kill "${pids[@]}" 2>/dev/null
    wait 2>/dev/null
    "$TOPO" down > /dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$TMP"/*.err "$TMP"/*.out; do [ -s "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }; done
    exit 1
}
wait_for() {   # wait_for SECONDS FILE REGEX
    local end=$((SECONDS + $1))
    until grep -qE "$3" "$2" 2>/dev/null; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.1
    done
}
start() {   # start NAME HOST ARGS...
    local n=$1 h=$2; shift 2
    "$TOPO" exec "$h" "$FERRY_VMM" --control "$TMP/$n.sock" --insecure "$@" > "$TMP/$n.out" \
        2> "$TMP/$n.err" &
    pids+=($!)
    pid[$n]=$!
}
passes() { grep -c ' ok ' "$TMP/$1.out" 2>/dev/null || echo 0; }
fdb() { bridge -n "$FERRY_NET_PREFIX$1" fdb show br br-vm | grep -i "^$MAC " || true; }

"$TOPO" down > /dev/null 2>&1
"$TOPO" up 2> /dev/null || fail "net-topology.sh up"

start a hostA --kernel "$GUEST_DIR/dirtier.elf" --append "mib=16 passes=0 report_ms=200" --mem 128M \
    --net "tap=tap-vm,mac=$MAC"
wait_for 10 "$TMP/a.out" ' ok ' || fail "A: the dirtier does not run"

# a tap in use: a clear error, at start and as a destination
"$TOPO" exec hostA "$FERRY_VMM" --kernel "$GUEST_DIR/hello.elf" --net tap=tap-vm 2> "$TMP/busy.txt" > /dev/null &&
    fail "a second VM on tap-vm started"
grep -qx "ferry-vmm: tap tap-vm: device busy or not permitted: Device or resource busy" "$TMP/busy.txt" ||
    fail "busy tap at start: $(cat "$TMP/busy.txt")"
start busy hostA --incoming 10.99.0.1:4456
wait_for 10 "$TMP/busy.err" 'port 4456' || fail "busy: no listener"
n=$(passes a)
"$CLI" -S "$TMP/a.sock" vm migrate --to 10.99.0.1:4456 > "$TMP/mig-busy.txt" 2>&1 &&
    fail "migration to a destination whose tap is busy succeeded"
grep -q "tap tap-vm: device busy" "$TMP/mig-busy.txt" || fail "busy destination: $(tail -n 1 "$TMP/mig-busy.txt")"
[ "$("$CLI" -S "$TMP/a.sock" vm status --json | jq -r .state)" = running ] || fail "A is not running after the refusal"
sleep 1
[ "$(passes a)" -gt "$n" ] || fail "A's dirtier stopped after the refusal"

hop() {   # hop SRC DST HOST IP PORT
    start "$2" "$3" --incoming "$4:$5"
    wait_for 10 "$TMP/$2.err" "port $5" || fail "$2: no listener"
    "$CLI" -S "$TMP/$1.sock" vm migrate --to "$4:$5" > "$TMP/mig-$1$2.txt" 2>&1 ||
        fail "migration $1 -> $2: $(tail -n 1 "$TMP/mig-$1$2.txt")"
    wait "${pid[$1]}" || fail "source $1 exited $?"
    local n; n=$(passes "$2")
    wait_for 10 "$TMP/$2.out" ' ok ' || fail "$2: the dirtier does not run there"
    sleep 0.7   # announcement rounds: 0, 50, 200, 450, 800 ms
    fdb "$3" | grep -q "dev tap-vm" || fail "$3's bridge did not learn $MAC on tap-vm: $(fdb "$3")"
    fdb switch | grep -q "dev to-$3" || fail "the switch did not learn $MAC on to-$3: $(fdb switch)"
    echo "$1 -> $2: $(tail -n 1 "$TMP/mig-$1$2.txt" | sed 's/^.*migrated/migrated/'); fdb: $3 tap-vm, switch to-$3"
}
hop a b hostB 10.99.0.2 4457
hop b c hostA 10.99.0.1 4458
"$CLI" -S "$TMP/c.sock" vm quit > /dev/null || fail "quit C"
wait "${pid[c]}" || fail "C exited $?"
grep -q 'FAIL\|mismatch' "$TMP"/[abc].out && fail "the dirtier found a bad page"
echo "net-identity: ok"
