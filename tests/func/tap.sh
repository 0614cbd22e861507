#!/bin/bash
# tap.sh: the tap backend and the post-migration announcement on a real bridge.
# In a private network namespace: bridge br0 with a persistent tap (ip tuntap)
# and a veth whose far end a raw-socket sniffer watches. nettool (devices/tap.c,
# devices/announce.c) announces a MAC + IPv4 through the tap; then
#   - the bridge learned the MAC on the tap's port (bridge fdb show),
#   - the sniffer got 5 RARP + 5 gratuitous ARP frames, byte-exact, broadcast,
#     with the default back-off (50, 150, 250, 350 ms between rounds),
#   - the tap's RX counter (ip -s link) counts them;
# a unicast frame to the MAC reaches nettool's read behind its 12-byte vnet
# header; a tap nettool creates itself works and disappears after; and
# the errors are one clear line: busy, multi-queue mismatch, not a tap, no
# /dev/net/tun, not permitted. Needs root (else skipped); the namespace is
# always removed.
# shellcheck source=tests/func/lib.sh
. "$(dirname "$0")/lib.sh"
: "${NETTOOL:?NETTOOL is not set (run through meson test)}"

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || ! command -v bridge >/dev/null ||
   [ ! -c /dev/net/tun ]; then
    echo "SKIP: $T_NAME needs root, iproute2 and /dev/net/tun" >&2
    exit 77
fi

NS=ferry-tap-$$
MAC=52:54:00:12:34:56
IP=10.88.0.5
cleanup() {
    ip netns pids "$NS" 2>/dev/null | while read -r p; do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    _cleanup
}
trap cleanup EXIT

inns() { ip netns exec "$NS" "$@"; }
run() {   # run CMD...: quietly, or fail with its output
    "$@" >"$TMP/run.out" 2>&1 || { show "$TMP/run.out" "$*"; fail "command failed: $*"; }
}

run ip netns add "$NS"
run inns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
run inns ip link set lo up
run inns ip link add br0 type bridge
run inns ip link set br0 up
run inns ip tuntap add dev ftap0 mode tap
run inns ip link set ftap0 master br0 up
run inns ip link add sniff type veth peer name sniff-br
run inns ip link set sniff-br master br0 up
run inns ip link set sniff up

# sniff IFACE MAC COUNT SECONDS OUT: in the namespace, capture frames whose
# source is MAC as "receive-time hex" lines (the kernel's timestamps); touches
# OUT.ready once listening
sniff() {
    inns python3 - "$@" <<'EOF' &
import socket, struct, sys, time
iface, mac, count, secs, out = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
TSNS = getattr(socket, "SO_TIMESTAMPNS", 35)   # Linux x86-64; also the cmsg type
s.setsockopt(socket.SOL_SOCKET, TSNS, 1)          # the kernel's receive time
s.bind((iface, 0))
open(out + ".ready", "w").close()
end, n = time.monotonic() + secs, 0
with open(out, "w") as f:
    while n < count and time.monotonic() < end:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            data, anc, _, _ = s.recvmsg(65536, 64)
        except socket.timeout:
            break
        ts = time.time()
        for level, kind, val in anc:
            if level == socket.SOL_SOCKET and kind == TSNS:
                sec, nsec = struct.unpack("qq", val[:16])
                ts = sec + nsec / 1e9
        if data[6:12] == mac:
            f.write("%.6f %s\n" % (ts, data.hex()))
            f.flush()
            n += 1
EOF
    SNIFF_PID=$!
    wait_for 30 test -e "$5.ready" || fail "the sniffer did not start"
}

# send_frame IFACE HEX: send one raw frame from IFACE in the namespace
send_frame() {
    inns python3 -c '
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
s.send(bytes.fromhex(sys.argv[2]))' "$1" "$2" || fail "cannot send a frame on $1"
}

in_port_forwarding() { inns bash -c "[ \"\$(cat /sys/class/net/$1/brport/state 2>/dev/null)\" = 3 ]"; }

# ---------------------------------------------------------------- announce
sniff sniff "$MAC" 10 30 "$TMP/sniff"
# nettool keeps the tap open for a while after the last round, as a VMM does:
# a bridge flushes what it learned on a port when the tap closes
: >"$TMP/ann.out"
ip netns exec "$NS" "$NETTOOL" announce --hold 30000 ftap0 "$MAC" "$IP" >"$TMP/ann.out" 2>"$TMP/ann.err" &
ANN_PID=$!
wait_for 30 grep -q '^announce' "$TMP/ann.out" ||
    { show "$TMP/ann.err" stderr; fail "nettool announce did not finish"; }
grep -qx "announce ftap0: 5 rounds, 10 frames, 0 errors" "$TMP/ann.out" ||
    { show "$TMP/ann.out" stdout; show "$TMP/ann.err" stderr; fail "unexpected announce summary"; }
wait "$SNIFF_PID"

# the bridge learned the MAC behind the tap (a learned entry, not a static one)
fdb=$(inns bridge fdb show br br0 2>&1)
grep -qE "^$MAC dev ftap0 master br0 *\$" <<<"$fdb" ||
    { echo "$fdb" >&2; fail "br0 did not learn $MAC on ftap0"; }
kill "$ANN_PID"
wait "$ANN_PID" 2>/dev/null

# the frames, byte for byte (60 bytes: the Ethernet minimum without FCS)
m=${MAC//:/}
pad=$(printf '0%.0s' {1..36})
rarp="ffffffffffff${m}80350001080006040003${m}00000000${m}00000000${pad}"
garp="ffffffffffff${m}08060001080006040001${m}0a5800050000000000000a580005${pad}"
nr=$(grep -c " $rarp\$" "$TMP/sniff")
ng=$(grep -c " $garp\$" "$TMP/sniff")
total=$(wc -l <"$TMP/sniff")
if [ "$nr" -ne 5 ] || [ "$ng" -ne 5 ] || [ "$total" -ne 10 ]; then
    show "$TMP/sniff" "captured frames"
    echo "expected RARP: $rarp" >&2
    echo "expected GARP: $garp" >&2
    fail "captured $nr RARP + $ng GARP of $total frames, expected 5 + 5 of 10"
fi
# RARP then GARP each round; rounds 50, 150, 250, 350 ms apart (not early; late
# by less than 300 ms)
python3 - "$TMP/sniff" "$rarp" <<'EOF' || fail "announce rounds out of order or off schedule"
import sys
lines = [l.split() for l in open(sys.argv[1])]
kinds = ["r" if h == sys.argv[2] else "g" for _, h in lines]
if kinds != ["r", "g"] * 5:
    sys.exit("order: %s" % "".join(kinds))
t = [float(ts) for (ts, h), k in zip(lines, kinds) if k == "r"]
for i, want in enumerate([0.050, 0.150, 0.250, 0.350]):
    gap = t[i + 1] - t[i]
    if not (want - 0.002 <= gap < want + 0.300):
        sys.exit("gap %d: %.1f ms, expected %.0f ms" % (i, gap * 1000, want * 1000))
EOF
rx=$(inns cat /sys/class/net/ftap0/statistics/rx_packets)
[ "$rx" -ge 10 ] || fail "ftap0 counted $rx RX packets, expected >= 10"
inns ip -s link show ftap0 | grep -q "RX:" || fail "ip -s link show ftap0 has no RX statistics"

# ---------------------------------------------------------------- receive
# a unicast frame to the VM's MAC, sent from the sniffer's side, reaches
# nettool's read behind a vnet header of zeros (flags 0, GSO none; the last 2
# bytes, num_buffers, are the device's to fill: kernels before 6.x leave them
# as they were)
: >"$TMP/recv.out"
ip netns exec "$NS" "$NETTOOL" recv ftap0 1 30000 >"$TMP/recv.out" 2>"$TMP/recv.err" &
RECV_PID=$!
wait_for 30 grep -q "^ready" "$TMP/recv.out" || { show "$TMP/recv.err" stderr; fail "nettool recv did not start"; }
wait_for 15 in_port_forwarding ftap0 || fail "ftap0 is not forwarding"
frame="${m}020000000077""88b5$(printf 'ab%.0s' {1..46})"
send_frame sniff "$frame"
wait "$RECV_PID" || { show "$TMP/recv.err" stderr; fail "nettool recv got no frame"; }
grep -qxE "frame 60 00000000000000000000[0-9a-f]{4} $frame" "$TMP/recv.out" ||
    { show "$TMP/recv.out" stdout; echo "expected frame: $frame" >&2; fail "received frame differs"; }

# ---------------------------------------------------------------- a tap nettool creates
inns ip link show fnew0 >/dev/null 2>&1 && fail "fnew0 exists before the test"
: >"$TMP/new.out"
ip netns exec "$NS" "$NETTOOL" recv --up fnew0 1 30000 >"$TMP/new.out" 2>"$TMP/new.err" &
RECV_PID=$!
wait_for 30 grep -q '^ready fnew0' "$TMP/new.out" || { show "$TMP/new.err" stderr; fail "nettool did not create fnew0"; }
run inns ip link set fnew0 master br0
wait_for 15 in_port_forwarding fnew0 || fail "fnew0 is not forwarding"
bframe="ffffffffffff020000000077""88b5$(printf 'cd%.0s' {1..46})"
send_frame sniff "$bframe"
wait "$RECV_PID" || { show "$TMP/new.err" stderr; fail "fnew0 got no broadcast frame"; }
grep -qxE "frame 60 00000000000000000000[0-9a-f]{4} $bframe" "$TMP/new.out" ||
    { show "$TMP/new.out" stdout; fail "fnew0: received frame differs"; }
wait_for 15 bash -c "! ip netns exec $NS ip link show fnew0 >/dev/null 2>&1" ||
    fail "fnew0 still exists after nettool closed it"

# ---------------------------------------------------------------- errors
# expect_err WANT CMD...: CMD fails with status 1 and exactly the line WANT on stderr
expect_err() {
    local want=$1 rc=0; shift
    "$@" >"$TMP/err.out" 2>"$TMP/err.err" || rc=$?
    [ "$rc" -eq 1 ] || { show "$TMP/err.err" stderr; fail "$*: exit status $rc, expected 1"; }
    [ "$(cat "$TMP/err.err")" = "$want" ] ||
        { show "$TMP/err.err" stderr; echo "expected: $want" >&2; fail "$*: wrong message"; }
}
: >"$TMP/hold.out"
ip netns exec "$NS" "$NETTOOL" open --hold 30000 ftap0 >"$TMP/hold.out" 2>&1 &
HOLD_PID=$!
wait_for 30 grep -q '^open ftap0' "$TMP/hold.out" || fail "nettool open did not open ftap0"
expect_err "nettool: tap ftap0: device busy or not permitted: Device or resource busy" \
    inns "$NETTOOL" open ftap0
kill "$HOLD_PID" 2>/dev/null; wait "$HOLD_PID" 2>/dev/null
expect_err "nettool: tap ftap0: cannot attach: not a tap device, or its multi_queue setting differs (multi_queue asked): Invalid argument" \
    inns "$NETTOOL" open --mq ftap0
run inns ip link add fnotap0 type bridge
expect_err "nettool: tap fnotap0: cannot attach: not a tap device, or its multi_queue setting differs (single queue asked): Invalid argument" \
    inns "$NETTOOL" open fnotap0
expect_err "nettool: tap ferry0: cannot open /dev/net/tun: No such file or directory" \
    unshare -m bash -c "mount -t tmpfs none /dev/net && exec ip netns exec $NS $NETTOOL open ferry0"
if command -v setpriv >/dev/null; then
    # root without CAP_NET_ADMIN may open /dev/net/tun but not create a tap ...
    nocap=(setpriv --inh-caps=-net_admin --bounding-set=-net_admin)
    expect_err "nettool: tap ferry0: device busy or not permitted: Operation not permitted" \
        inns "${nocap[@]}" "$NETTOOL" open ferry0
    # ... nor attach to a tap that belongs to another user
    run inns ip tuntap add dev fown0 mode tap user 12345
    expect_err "nettool: tap fown0: device busy or not permitted: Operation not permitted" \
        inns "${nocap[@]}" "$NETTOOL" open fown0
fi
exit 0
