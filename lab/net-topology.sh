#!/bin/bash
# net-topology.sh - the network for Ferry's migration tests, built from network
# namespaces, veth pairs, Linux bridges and taps. Works inside the lab's L1 and on
# a development machine (as root).
#
#            client (10.88.0.100/24)
#               | eth0
#   switch:  br-vm  ---- the VM network's L2 segment (a physical switch)
#            |     |
#     uplink |     | uplink
#   hostA: br-vm   br-vm :hostB       each host: its own bridge for the VM network,
#          |          |               and tap-vm (the VM's NIC) on it
#        tap-vm     tap-vm
#   hostA: mig0 10.99.0.1/24 ====== 10.99.0.2/24 mig0 :hostB   (migration network)
#
# A VM runs on hostA with ferry-vmm started in hostA's namespace on hostA's tap
# (net-topology.sh exec hostA ferry-vmm ...), migrates to hostB over 10.99.0.0/24,
# and the client on the VM network keeps talking to it; after the move the
# destination's announcement makes the switch learn the VM's MAC on hostB's uplink.
#
# Commands (idempotent; root needed):
#   up                      create everything missing
#   down                    remove it all: the namespaces (processes still running in
#                           them are sent SIGTERM, then SIGKILL after 2 s)
#   status                  what exists: namespaces, links, addresses, the switch's fdb
#   tap HOST NAME [USER]    a persistent tap NAME in HOST (hostA|hostB) on its br-vm,
#                           up; USER may open it without privileges
#   vm HOST NAME IP/LEN [MAC]
#                           a veth stand-in for a VM: namespace vm-NAME with eth0 =
#                           IP/LEN (and MAC), cabled to HOST's br-vm; if it is cabled to
#                           the other host, it is moved there (a "migration") and
#                           announces itself (a gratuitous ARP, as a guest does)
#   exec NS CMD [ARG...]    run CMD in namespace NS: hostA, hostB, switch, client or
#                           vm-NAME
#   ns NS                   print the namespace's full name (for ip -n / ip netns exec)
#   netem HOST|both DELAY [RATE]
#                           WAN emulation on the migration link: HOST's mig0 delays what
#                           it sends by DELAY (e.g. 75ms; a bare number is ms), optional
#                           RATE limit (e.g. 1gbit); "both" = each way (RTT 2 x DELAY)
#   netem HOST|both off     remove it
#   iperf [SECONDS]         iperf3 hostA -> hostB over the migration network (default 3 s);
#                           prints "migration network: N Mbit/s"
#
# Environment: FERRY_NET_PREFIX prefixes every namespace name (default none), so that
# several topologies (e.g. concurrent tests) can coexist.
#
# Exit status: 0; 1 on errors (one line "net-topology: ..." on stderr); 2 on usage
# errors; 3 when netem is not available (this build machine's kernel has no sch_netem;
# the lab's L1 kernel has it).

set -euo pipefail

P=${FERRY_NET_PREFIX:-}
VM_NET=10.88.0.0/24
CLIENT_IP=10.88.0.100/24
MIG_A=10.99.0.1/24
MIG_B=10.99.0.2/24
HOSTS=(hostA hostB)
BASE_NS=(switch hostA hostB client)

say() { echo "net-topology: $*" >&2; }
die() { say "$*"; exit 1; }
usage() {
    sed -n '/^# Commands/,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, bridges, taps)"
    command -v ip >/dev/null || die "ip (iproute2) not found"
}

nsname() { echo "$P$1"; }
ns_exists() { [ -e "/run/netns/$P$1" ]; }
# x CMD...: run CMD; on failure die with its message
x() {
    local out
    out=$("$@" 2>&1) || die "$* failed: ${out//$'\n'/ }"
}
in_ns() { local n=$1; shift; ip netns exec "$P$n" "$@"; }
has_link() { ip -n "$P$1" link show "$2" >/dev/null 2>&1; }

check_host() {
    case $1 in hostA|hostB) ;; *) say "HOST must be hostA or hostB, not '$1'"; exit 2 ;; esac
}
other_host() { [ "$1" = hostA ] && echo hostB || echo hostA; }

resolve_ns() {
    case $1 in
        hostA|hostB|switch|client|vm-*) ns_exists "$1" || die "namespace $P$1 does not exist (run: net-topology.sh up)"
                                        echo "$P$1" ;;
        *) say "NS must be hostA, hostB, switch, client or vm-NAME, not '$1'"; exit 2 ;;
    esac
}

make_ns() {
    ns_exists "$1" && return 0
    x ip netns add "$P$1"
    # quiet segments: no IPv6 autoconfiguration, DAD or MLD chatter
    x in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    x ip -n "$P$1" link set lo up
}

make_bridge() {   # NS
    has_link "$1" br-vm || x ip -n "$P$1" link add br-vm type bridge stp_state 0
    x ip -n "$P$1" link set br-vm up
}

# cable NS1 IF1 NS2 IF2: a veth pair, both ends up
cable() {
    if has_link "$1" "$2" && has_link "$3" "$4"; then
        :
    else
        ip -n "$P$1" link del "$2" >/dev/null 2>&1 || true
        ip -n "$P$3" link del "$4" >/dev/null 2>&1 || true
        x ip -n "$P$1" link add "$2" type veth peer name "$4" netns "$P$3"
    fi
    x ip -n "$P$1" link set "$2" up
    x ip -n "$P$3" link set "$4" up
}

enslave() { x ip -n "$P$1" link set "$2" master br-vm up; }

make_tap() {   # HOST NAME [USER]
    local host=$1 name=$2 user=${3:-}
    if has_link "$host" "$name"; then
        ip -n "$P$host" -d link show "$name" 2>/dev/null | grep -q 'tun type tap' ||
            die "$name in $P$host exists and is not a tap device"
    else
        x ip -n "$P$host" tuntap add dev "$name" mode tap ${user:+user "$user"}
    fi
    enslave "$host" "$name"
}

cmd_up() {
    need_root
    local n
    for n in "${BASE_NS[@]}"; do make_ns "$n"; done
    make_bridge switch
    for n in "${HOSTS[@]}"; do
        make_bridge "$n"
        cable switch "to-$n" "$n" uplink
        enslave switch "to-$n"
        enslave "$n" uplink
        make_tap "$n" tap-vm
    done
    cable switch to-client client eth0
    enslave switch to-client
    x ip -n "$P"client addr replace "$CLIENT_IP" dev eth0
    cable hostA mig0 hostB mig0
    x ip -n "$P"hostA addr replace "$MIG_A" dev mig0
    x ip -n "$P"hostB addr replace "$MIG_B" dev mig0
    say "up: ${P}hostA ${P}hostB ${P}switch ${P}client; VM network $VM_NET (client ${CLIENT_IP%/*}), migration network ${MIG_A%/*} <-> ${MIG_B%/*}"
}

our_namespaces() {
    local n
    for n in "${BASE_NS[@]}"; do ns_exists "$n" && echo "$P$n"; done
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${P//./\\.}vm-" || true
}

cmd_down() {
    need_root
    # (no process substitution: the lab's L1 has no /dev/fd)
    local all n pids=()
    # shellcheck disable=SC2207  # namespace names and pids have no blanks
    all=($(our_namespaces))
    for n in "${all[@]}"; do
        # shellcheck disable=SC2207
        pids+=($(ip netns pids "$n" 2>/dev/null))
    done
    if [ "${#pids[@]}" -gt 0 ]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 20); do
            kill -0 "${pids[@]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    for n in "${all[@]}"; do
        ip netns del "$n" 2>/dev/null || [ ! -e "/run/netns/$n" ] || die "cannot delete namespace $n"
    done
    return 0
}

cmd_status() {
    need_root
    local n
    for n in $(our_namespaces); do
        echo "== $n"
        ip -n "$n" -br link show | grep -v '^lo ' || true
        ip -n "$n" -br -4 addr show | grep -v '^lo ' || true
    done
    if ns_exists switch; then
        echo "== ${P}switch br-vm fdb (learned)"
        bridge -n "$P"switch fdb show br br-vm 2>/dev/null | grep -v permanent || true
    fi
}

cmd_tap() {
    need_root
    [ $# -ge 2 ] && [ $# -le 3 ] || usage
    check_host "$1"
    ns_exists "$1" || die "namespace $P$1 does not exist (run: net-topology.sh up)"
    [ ${#2} -le 15 ] || die "tap name '$2' is longer than 15 characters"
    make_tap "$@"
}

cmd_vm() {
    need_root
    [ $# -ge 3 ] && [ $# -le 4 ] || usage
    local host=$1 name=$2 ip=$3 mac=${4:-}
    check_host "$host"
    [[ $name =~ ^[A-Za-z0-9_-]{1,12}$ ]] || die "VM name '$name': 1-12 letters, digits, - or _"
    [[ $ip == */* ]] || die "VM address '$ip' needs a prefix length (e.g. 10.88.0.5/24)"
    ns_exists "$host" || die "namespace $P$host does not exist (run: net-topology.sh up)"
    local vns=vm-$name port=vm-$name other moved=0
    other=$(other_host "$host")
    make_ns "$vns"
    # the stand-in sends a gratuitous ARP whenever eth0 comes up (as a guest does
    # after a migration when virtio-net asks it to announce itself)
    x in_ns "$vns" sysctl -qw net.ipv4.conf.all.arp_notify=1 net.ipv4.conf.default.arp_notify=1
    if has_link "$other" "$port"; then          # move the cable to the other host
        x ip -n "$P$other" link set "$port" nomaster
        x ip -n "$P$other" link set "$port" netns "$P$host"
        moved=1
    fi
    if ! has_link "$host" "$port"; then
        ip -n "$P$vns" link del eth0 >/dev/null 2>&1 || true
        x ip -n "$P$host" link add "$port" type veth peer name eth0 netns "$P$vns"
    fi
    enslave "$host" "$port"
    [ -z "$mac" ] || x ip -n "$P$vns" link set eth0 address "$mac"
    x ip -n "$P$vns" addr replace "$ip" dev eth0
    [ "$moved" -eq 0 ] || x ip -n "$P$vns" link set eth0 down
    x ip -n "$P$vns" link set eth0 up
    # the link-up announcement races with the bridge port's enabling (a port
    # without carrier drops frames): once the port forwards, announce again by
    # setting the MAC address it has (NETDEV_CHANGEADDR -> gratuitous ARP)
    wait_forwarding "$host" "$port"
    local cur
    cur=$(ip -n "$P$vns" link show eth0 | awk '/link\/ether/ { print $2 }')
    x ip -n "$P$vns" link set eth0 address "$cur"
}

# wait_forwarding NS PORT: up to 15 s for the bridge port to forward
wait_forwarding() {
    for _ in $(seq 150); do
        bridge -n "$P$1" link show dev "$2" 2>/dev/null | grep -q 'state forwarding' && return 0
        sleep 0.1
    done
    die "bridge port $2 in $P$1 does not forward"
}

cmd_exec() {
    need_root
    [ $# -ge 2 ] || usage
    local n
    n=$(resolve_ns "$1") || exit $?
    shift
    exec ip netns exec "$n" "$@"
}

netem_one() {   # HOST DELAY|off [RATE]
    local host=$1 delay=$2 rate=${3:-} out
    has_link "$host" mig0 || die "no migration link in $P$host (run: net-topology.sh up)"
    if [ "$delay" = off ]; then
        ip -n "$P$host" link show mig0 >/dev/null
        tc -n "$P$host" qdisc del dev mig0 root >/dev/null 2>&1 || true
        return 0
    fi
    [[ $delay =~ ^[0-9]+(\.[0-9]+)?$ ]] && delay=${delay}ms
    [[ $delay =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)$ ]] || die "bad delay '$delay' (e.g. 75ms)"
    local args=(delay "$delay")
    [ -z "$rate" ] || args+=(rate "$rate")
    if ! out=$(tc -n "$P$host" qdisc replace dev mig0 root netem "${args[@]}" 2>&1); then
        if [[ $out == *"qdisc kind is unknown"* ]] || [[ $out == *"No such file"* ]]; then
            command -v modprobe >/dev/null && modprobe sch_netem >/dev/null 2>&1 &&
                out=$(tc -n "$P$host" qdisc replace dev mig0 root netem "${args[@]}" 2>&1) && return 0
            say "netem is not available on this kernel ($(uname -r): no sch_netem); WAN emulation works inside the lab's L1 (lab/lab.sh run)"
            exit 3
        fi
        die "tc netem on $P$host mig0 failed: ${out//$'\n'/ }"
    fi
}

cmd_netem() {
    need_root
    [ $# -ge 2 ] && [ $# -le 3 ] || usage
    command -v tc >/dev/null || die "tc (iproute2) not found"
    local h
    if [ "$1" = both ]; then
        for h in "${HOSTS[@]}"; do netem_one "$h" "${@:2}"; done
    else
        check_host "$1"
        netem_one "$@"
    fi
}

cmd_iperf() {
    need_root
    local secs=${1:-3}
    [[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -ge 1 ] || die "bad duration '$secs'"
    command -v iperf3 >/dev/null || die "iperf3 not found (apt-get install iperf3)"
    has_link hostA mig0 && has_link hostB mig0 || die "no migration network (run: net-topology.sh up)"
    local srv out
    in_ns hostB iperf3 -s -1 -B "${MIG_B%/*}" >/dev/null 2>&1 &
    srv=$!
    for _ in $(seq 50); do
        in_ns hostB ss -Hltn "sport = :5201" 2>/dev/null | grep -q . && break
        sleep 0.1
    done
    if ! out=$(in_ns hostA iperf3 -c "${MIG_B%/*}" -t "$secs" -f m 2>&1); then
        kill "$srv" 2>/dev/null || true
        wait "$srv" 2>/dev/null || true
        die "iperf3 hostA -> hostB failed: $(tail -n 1 <<<"$out")"
    fi
    wait "$srv" 2>/dev/null || true
    local mbps
    mbps=$(awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") v = $i } END { print v }' <<<"$out")
    [ -n "$mbps" ] || die "cannot read iperf3's result: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    echo "migration network: $mbps Mbit/s"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
    up) [ $# -eq 0 ] || usage; cmd_up ;;
    down) [ $# -eq 0 ] || usage; cmd_down ;;
    status) [ $# -eq 0 ] || usage; cmd_status ;;
    tap) cmd_tap "$@" ;;
    vm) cmd_vm "$@" ;;
    exec) cmd_exec "$@" ;;
    ns) [ $# -eq 1 ] || usage; resolve_ns "$1" ;;
    netem) cmd_netem "$@" ;;
    iperf) [ $# -le 1 ] || usage; cmd_iperf "$@" ;;
    -h|--help|help) usage ;;
    *) say "unknown command '$cmd'"; usage ;;
esac
