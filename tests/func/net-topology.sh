#!/bin/bash
# net-topology.sh: the lab's migration network (lab/net-topology.sh) on this
# machine, under a private namespace prefix, always torn down:
#   - up is idempotent; a veth stand-in for a VM on hostA answers the client's
#     ping across switch and bridge, and the switch learned it on hostA's uplink;
#   - an announcement (nettool: devices/announce.c through devices/tap.c) of a
#     MAC on hostA's tap-vm, then on hostB's (a migration), moves it in every
#     bridge: switch -> to-hostB, hostA -> uplink, hostB -> tap-vm;
#   - the stand-in moved to hostB announces itself and answers again;
#   - the migration network answers ping both ways, and iperf3 measures it
#     (printed: "migration network: N Mbit/s");
#   - netem works or says clearly that this kernel lacks it (exit 3);
#   - bad arguments are refused; down is idempotent and leaves nothing.
# Needs root (else skipped). Pings use ping(8), or a raw ICMP socket without it.
# shellcheck source=tests/func/lib.sh
. "$(dirname "$0")/lib.sh"
: "${NETTOOL:?NETTOOL is not set (run through meson test)}"

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || ! command -v bridge >/dev/null ||
   [ ! -c /dev/net/tun ]; then
    echo "SKIP: $T_NAME needs root, iproute2 and /dev/net/tun" >&2
    exit 77
fi

TOPO=$SRC/lab/net-topology.sh
export FERRY_NET_PREFIX=ft$$-
P=$FERRY_NET_PREFIX
cleanup() {
    "$TOPO" down >/dev/null 2>&1
    _cleanup
}
trap cleanup EXIT

topo() {   # topo ARGS...: run net-topology.sh, fail with its output
    "$TOPO" "$@" >"$TMP/topo.out" 2>&1 ||
        { show "$TMP/topo.out" "net-topology.sh $*"; fail "net-topology.sh $* failed"; }
}

# ping_ns NS IP: three echo requests from namespace NS must be answered
ping_ns() {
    if command -v ping >/dev/null; then
        ip netns exec "$P$1" ping -c 3 -i 0.2 -W 2 "$2" >"$TMP/ping.out" 2>&1 && return 0
    else
        ip netns exec "$P$1" python3 - "$2" >"$TMP/ping.out" 2>&1 <<'EOF' && return 0
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident, ok = os.getpid() & 0xffff, 0
for seq in range(1, 4):
    body = struct.pack("!d", time.time()) + b"ferry-ping"
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    s.sendto(struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, seq) + body, (sys.argv[1], 0))
    end = time.monotonic() + 2
    while time.monotonic() < end:
        s.settimeout(end - time.monotonic())
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            break
        icmp = data[(data[0] & 15) * 4:]
        t, _, _, i, q = struct.unpack("!BBHHH", icmp[:8])
        if t == 0 and i == ident and q == seq and addr[0] == sys.argv[1]:
            ok += 1
            print("reply from %s seq %d time=%.1f ms" % (addr[0], seq, (time.time() - struct.unpack("!d", icmp[8:16])[0]) * 1000))
            break
    time.sleep(0.2)
print("%d of 3 answered" % ok)
sys.exit(0 if ok == 3 else 1)
EOF
    fi
    show "$TMP/ping.out" "ping from $P$1 to $2"
    fail "no answer from $2 in $P$1"
}

# fdb_port NS MAC: the bridge port br-vm in NS learned MAC on (empty if none)
fdb_port() {
    bridge -n "$P$1" fdb show br br-vm 2>/dev/null |
        awk -v m="$2" '$1 == m && $0 !~ /permanent/ { print $3; exit }'
}
expect_fdb() {   # expect_fdb NS MAC PORT
    local got
    got=$(fdb_port "$1" "$2")
    [ "$got" = "$3" ] || { bridge -n "$P$1" fdb show br br-vm >&2; fail "$P$1 br-vm has $2 on '${got:-nothing}', expected $3"; }
}

# ---------------------------------------------------------------- up, twice
topo up
topo up
for n in hostA hostB switch client; do
    [ -e "/run/netns/$P$n" ] || fail "namespace $P$n missing after up"
done
ip -n "${P}hostA" -d link show tap-vm | grep -q 'tun type tap' || fail "no tap-vm in hostA"
ip -n "${P}hostB" link show tap-vm | grep -q 'master br-vm' || fail "hostB tap-vm is not on br-vm"
ip -n "${P}client" -4 addr show eth0 | grep -q 'inet 10.88.0.100/24' || fail "client has no 10.88.0.100/24"
ip -n "${P}hostB" -4 addr show mig0 | grep -q 'inet 10.99.0.2/24' || fail "hostB has no 10.99.0.2/24"

# ---------------------------------------------------------------- the VM network
W=52:54:00:88:00:05
topo vm hostA web 10.88.0.5/24 "$W"
ping_ns client 10.88.0.5
expect_fdb switch "$W" to-hostA
expect_fdb hostA "$W" vm-web

# announcing a VM's MAC from hostA's tap, then from hostB's: every bridge follows.
# announce HOST: nettool announces X on HOST's tap-vm and keeps it open while the
# fdb is checked (a bridge forgets what it learned on a port when the tap closes)
X=52:54:00:99:00:01
announce() {
    : >"$TMP/$1.out"
    "$TOPO" exec "$1" "$NETTOOL" announce --hold 30000 --initial 10 --step 10 tap-vm "$X" 10.88.0.9 \
        >"$TMP/$1.out" 2>"$TMP/$1.err" &
    ANN_PID=$!
    wait_for 30 grep -q '^announce' "$TMP/$1.out" || { show "$TMP/$1.err" stderr; fail "announce on $1 did not finish"; }
    grep -qx "announce tap-vm: 5 rounds, 10 frames, 0 errors" "$TMP/$1.out" ||
        { show "$TMP/$1.out" stdout; show "$TMP/$1.err" stderr; fail "unexpected announce summary on $1"; }
}
announce_done() { kill "$ANN_PID"; wait "$ANN_PID" 2>/dev/null; }
announce hostA
expect_fdb switch "$X" to-hostA
expect_fdb hostA "$X" tap-vm
expect_fdb hostB "$X" uplink
announce_done
announce hostB
expect_fdb switch "$X" to-hostB
expect_fdb hostA "$X" uplink
expect_fdb hostB "$X" tap-vm
announce_done

# the stand-in moves to hostB, announces itself, and answers there
topo vm hostB web 10.88.0.5/24
ip -n "${P}hostA" link show vm-web >/dev/null 2>&1 && fail "vm-web still on hostA after the move"
wait_for 15 test "$(fdb_port switch "$W")" = to-hostB || expect_fdb switch "$W" to-hostB
ping_ns client 10.88.0.5
expect_fdb hostB "$W" vm-web

# ---------------------------------------------------------------- the migration network
ping_ns hostA 10.99.0.2
ping_ns hostB 10.99.0.1
if command -v iperf3 >/dev/null; then
    "$TOPO" iperf 2 >"$TMP/iperf.out" 2>&1 || { show "$TMP/iperf.out" iperf; fail "iperf on the migration network failed"; }
    grep -qE '^migration network: [0-9.]+ Mbit/s$' "$TMP/iperf.out" || { show "$TMP/iperf.out" iperf; fail "no iperf result"; }
    cat "$TMP/iperf.out"
else
    echo "$T_NAME: iperf3 not installed, migration network not measured"
fi

# ---------------------------------------------------------------- netem
rc=0
"$TOPO" netem both 20ms >"$TMP/netem.out" 2>&1 || rc=$?
case $rc in
    0)  # available (the lab's L1): the round trip grows by about 40 ms
        ping_ns hostA 10.99.0.2
        rtt=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^time=/) { sub(/time=/, "", $i); t = $i } }
                   END { print int(t) }' "$TMP/ping.out")
        [ "${rtt:-0}" -ge 38 ] || { show "$TMP/ping.out" ping; fail "netem 20ms each way, yet the RTT is ${rtt:-?} ms"; }
        topo netem both off ;;
    3)  grep -q "^net-topology: netem is not available on this kernel" "$TMP/netem.out" ||
            { show "$TMP/netem.out" netem; fail "netem unavailable without a clear message"; } ;;
    *)  show "$TMP/netem.out" netem; fail "netem: exit status $rc" ;;
esac

# ---------------------------------------------------------------- refusals
expect_status() {   # expect_status WANT REGEX ARGS...
    local want=$1 re=$2 rc=0; shift 2
    "$TOPO" "$@" >"$TMP/bad.out" 2>&1 || rc=$?
    [ "$rc" -eq "$want" ] || { show "$TMP/bad.out" "net-topology.sh $*"; fail "net-topology.sh $*: status $rc, expected $want"; }
    grep -qE -- "$re" "$TMP/bad.out" || { show "$TMP/bad.out" "net-topology.sh $*"; fail "net-topology.sh $*: no /$re/"; }
}
expect_status 2 "^net-topology: NS must be" exec nowhere true
expect_status 2 "^net-topology: HOST must be" tap hostC tap1
expect_status 2 "^net-topology: unknown command" frobnicate
expect_status 1 "exists and is not a tap device" tap hostA mig0
expect_status 1 "needs a prefix length" vm hostA x 10.88.0.6
topo tap hostA tap-extra
topo tap hostA tap-extra
ip -n "${P}hostA" link show tap-extra | grep -q 'master br-vm' || fail "tap-extra is not on br-vm"

# ---------------------------------------------------------------- down, twice
topo down
topo down
left=$(ip netns list | awk '{print $1}' | grep -c "^$P" || true)
[ "$left" -eq 0 ] || { ip netns list >&2; fail "$left namespaces left after down"; }
exit 0
