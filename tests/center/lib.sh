# Shared helpers of the ferry-center tests (sourced; bash).
# Environment (tests/center/meson.build): FERRY_CENTER, SRC; BACKEND is the
# first argument: sqlite or pg (a private PostgreSQL server the test starts).
# shellcheck shell=bash disable=SC2034
set -u -o pipefail

: "${FERRY_CENTER:?FERRY_CENTER is not set (run through meson test)}"
# shellcheck source=tests/limits.sh
. "$(dirname "${BASH_SOURCE[0]}")/../limits.sh"
BACKEND=${1:-sqlite}
T_NAME="$(basename "$0" .sh) $BACKEND"
# The interpreter itself, not a version-manager shim (pyenv's costs ~0.3 s a call).
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
python3() { "$PYTHON" "$@"; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-center.XXXXXX")
chmod 755 "$TMP"
CENTER_PID='' PG_DATA='' BG_PIDS=()

_cleanup() {
    local p
    [ -n "$CENTER_PID" ] && kill -KILL "$CENTER_PID" 2>/dev/null && wait "$CENTER_PID" 2>/dev/null
    for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    # the VMMs the test's ferryd started outlive them (by design)
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/exe" 2>/dev/null)" = "$(readlink -f "${FERRY_VMM:-/nonexistent}")" ] &&
            grep -qF -- "$TMP/" "$p/cmdline" 2>/dev/null && kill -KILL "${p#/proc/}" 2>/dev/null
    done
    [ -n "$PG_DATA" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1
    if [ -n "${KEEP_TMP:-}" ]; then echo "$T_NAME: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap _cleanup EXIT

# fail MSG: the test fails; FAIL_DUMP names a function of the test's that
# prints its own diagnostics first (consoles, logs)
fail() {
    [ -z "${FAIL_DUMP:-}" ] || "$FAIL_DUMP"
    echo "FAIL: $T_NAME: $*" >&2
    for f in "$TMP"/center.err "$TMP"/pg.log; do
        [ -s "$f" ] && { echo "---- $f (tail) ----" >&2; tail -n 30 "$f" >&2; }
    done
    exit 1
}


free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A private PostgreSQL: its own cluster in $TMP, Unix socket only (in $TMP),
# run as the postgres user (initdb refuses root). Sets DBURL.
PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
pg_start() {
    if [ "$(id -u)" -ne 0 ] || [ -z "$PG_BIN" ] || ! id postgres >/dev/null 2>&1; then
        echo "SKIP: $T_NAME needs root and Debian's postgresql package" >&2
        exit 77
    fi
    local port; port=$(free_port)
    mkdir -p "$TMP/pg" && chown postgres: "$TMP/pg"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$TMP/pg/data" -U ferry -A trust --no-sync \
        >"$TMP/pg.log" 2>&1 || fail "initdb failed"
    PG_DATA=$TMP/pg/data
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$TMP/pg/server.log" -w -t 30 \
        -o "-k $TMP/pg -p $port -c listen_addresses='' -c fsync=off" start >>"$TMP/pg.log" 2>&1 ||
        { cat "$TMP/pg/server.log" >>"$TMP/pg.log" 2>/dev/null; fail "pg_ctl start failed"; }
    DBURL="postgresql://ferry@/postgres?host=$TMP/pg&port=$port"
}

db_setup() {
    case $BACKEND in
    sqlite) DBURL="sqlite:$TMP/center.db" ;;
    pg) pg_start ;;
    *) fail "unknown backend '$BACKEND'" ;;
    esac
}

# center_start: ferry-center on a free port; sets PORT, URL; the first
# start's bootstrap token lands in $TMP/center.out.
center_start() {
    touch "$TMP/center.err"
    START_LINE=$(($(wc -l <"$TMP/center.err") + 1))
    "$FERRY_CENTER" --db "$DBURL" --listen 127.0.0.1:0 --tls-dir "$TMP/tls" --state-dir "$TMP/state" \
        "$@" >>"$TMP/center.out" 2>>"$TMP/center.err" &
    CENTER_PID=$!
    wait_for 10 center_serving || fail "ferry-center did not start"
    PORT=$(this_start_log | sed -n 's/.*serving HTTPS on 127.0.0.1:\([0-9]*\)$/\1/p')
    URL=https://ferry-center:$PORT
}
# the log lines of the latest start
this_start_log() { tail -n +"$START_LINE" "$TMP/center.err"; }
center_serving() { this_start_log | grep -q 'serving HTTPS on'; }

center_kill9() {
    kill -KILL "$CENTER_PID" && wait "$CENTER_PID" 2>/dev/null
    CENTER_PID=
}

# api [TOKEN] METHOD PATH [BODY]: sets CODE and BODY (the reply).
api_as() {
    local tok=$1 method=$2 path=$3 data=${4-} out=$TMP/reply
    local args=(-sS -o "$out" -w '%{http_code}' --cacert "$TMP/tls/ca.pem"
                --resolve "ferry-center:$PORT:127.0.0.1" -X "$method")
    [ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
    [ "$#" -ge 4 ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
    CODE=$(curl "${args[@]}" "$URL$path" 2>"$TMP/curl.err") || fail "curl $method $path: $(cat "$TMP/curl.err")"
    BODY=$(cat "$out")
}
api() { api_as "$ADMIN" "$@"; }

# expect CODE METHOD PATH [BODY] (as admin); expect_as TOKEN CODE ...
expect_as() {
    local tok=$1 want=$2; shift 2
    api_as "$tok" "$@"
    [ "$CODE" = "$want" ] || fail "$1 $2: HTTP $CODE, want $want: $BODY"
    if [ "$want" -ge 400 ]; then
        # a clear one-line error, and only that
        holds 'list(b) == ["error"] and isinstance(b["error"], str) and b["error"] and "\n" not in b["error"]' ||
            fail "$1 $2: HTTP $CODE without a one-line error: $BODY"
    fi
}
expect() { expect_as "$ADMIN" "$@"; }

# field EXPR: of the reply: '.a.0.b' is b["a"][0]["b"]; anything else is a
# Python expression over b (the reply, parsed).
field() {
    python3 - "$1" "$BODY" <<'PY'
import json, sys
expr, b = sys.argv[1], json.loads(sys.argv[2])
if expr.startswith('.'):
    for k in filter(None, expr.split('.')):
        b = b[int(k)] if isinstance(b, list) else b.get(k)
    print(b, end='' if isinstance(b, str) and b.endswith('\n') else '\n')
else:
    print(eval(expr, {"b": b}))
PY
}
holds() { [ "$(field "$1")" = True ]; }

# wait_task ID STATE...: until the task is in one of STATEs (10 s).
task_in() { api GET "/v1/tasks/$1"; local s; s=$(field .state); shift; for w in "$@"; do [ "$s" = "$w" ] && return 0; done; return 1; }
wait_task() { local id=$1; shift; wait_for 15 task_in "$id" "$@" || fail "task $id never became $*: $BODY"; }

# ---- hosts: real ferryd agents (FERRYD, FERRY_VMM) ----

# need_ferryd: skip the test (77) without the agent, /dev/kvm or curl
need_ferryd() {
    if [ -z "${FERRYD:-}" ] || [ ! -x "$FERRYD" ] || [ ! -w /dev/kvm ] || ! command -v curl >/dev/null; then
        echo "SKIP: $T_NAME needs FERRYD (the host agent), /dev/kvm and curl" >&2
        exit 77
    fi
}

# enrol NAME: token in ET, the host's identity in $TMP/NAME/tls
enrol() {
    expect 201 POST /v1/enrolments "{\"host_name\": \"$1\"}"
    ET=$(field .token)
    expect_as "" 200 POST /v1/enrol "{\"token\": \"$ET\"}"
    mkdir -p "$TMP/$1/tls"
    for f in ca cert key; do field ".${f}_pem" >"$TMP/$1/tls/$f.pem"; done
    chmod 600 "$TMP/$1/tls/key.pem"
}

# ferryd_start NAME TLSDIR DATASTORE-DIRS...: a ferryd listening on
# $FD_IP (default 127.0.0.1), its migration interface $FD_MIG_IP on
# $FD_MIG_NIC (default: $FD_IP on lo) labelled $FD_MBPS Mbit/s (default
# 1000), its port groups $FD_NETWORKS (default vm-net on a bridge that does
# not exist); datastores ds0, ds1, ... in that order. In the network
# namespace FD_NS[NAME] when that is set. Sets FPORT, FPID.
declare -A FD_NS=()
ferryd_start() {
    local name=$1 tls=$2 ds="" i=0 d ip=${FD_IP:-127.0.0.1}; shift 2
    local mig=${FD_MIG_IP:-$ip} nic=${FD_MIG_NIC:-lo}
    local nets=${FD_NETWORKS:-"{\"name\": \"vm-net\", \"bridge\": \"brnone-$name\"}"}
    for d in "$@"; do
        mkdir -p "$d"
        ds+="${ds:+, }{\"name\": \"ds$i\", \"path\": \"$d\"}"
        i=$((i + 1))
    done
    FPORT=$(free_port)
    mkdir -p "$TMP/$name/state"
    cat >"$TMP/$name/ferryd.json" <<JSON
{
  "host_name": "$name",
  "listen": "$ip:$FPORT",
  "state_dir": "$TMP/$name/state",
  "tls_dir": "$tls",
  "ferry_vmm": "$FERRY_VMM",
  "migration_interfaces": [{"address": "$mig", "nic": "$nic", "speed_mbps": ${FD_MBPS:-1000}}],
  "networks": [$nets],
  "datastores": [$ds]
}
JSON
    ferryd_run "$name"
}

declare -A FD_PID=()
# ferryd_run NAME: (re)start NAME's ferryd on its existing configuration.
ferryd_run() {
    local name=$1 tls addr
    tls=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["tls_dir"], c["listen"])' \
          "$TMP/$name/ferryd.json")
    read -r tls addr <<<"$tls"
    ${FD_NS[$name]:+ip netns exec "${FD_NS[$name]}"} \
        "$FERRYD" --config "$TMP/$name/ferryd.json" >>"$TMP/$name/ferryd.log" 2>&1 &
    FPID=$!
    FD_PID[$name]=$FPID
    BG_PIDS+=("$FPID")
    wait_for 10 curl -s -o /dev/null --cacert "$tls/ca.pem" --cert "$tls/cert.pem" --key "$tls/key.pem" \
        --resolve "$name:${addr##*:}:${addr%:*}" "https://$name:${addr##*:}/v1/host" ||
        { cat "$TMP/$name/ferryd.log" >&2; fail "ferryd $name does not answer"; }
}

# add_host ADDRESS TOKEN: the task's final state in BODY
add_host() {
    expect 202 POST /v1/hosts "{\"address\": \"$1\", \"cluster\": \"c1\", \"enrolment_token\": \"$2\"}"
    local id; id=$(field .task.id)
    wait_task "$id" success error
}

# fd NAME METHOD PATH [BODY]: NAME's ferryd API with NAME's identity; sets
# FCODE and FBODY.
fd() {
    local name=$1 method=$2 path=$3 tls addr
    read -r tls addr < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["tls_dir"], c["listen"])' \
                         "$TMP/$name/ferryd.json")
    local args=(-sS -m 30 -o "$TMP/fd.out" -w '%{http_code}' --cacert "$tls/ca.pem" --cert "$tls/cert.pem"
                --key "$tls/key.pem" --resolve "$name:${addr##*:}:${addr%:*}" -X "$method")
    [ "$#" -ge 4 ] && args+=(-H 'Content-Type: application/json' --data-binary "$4")
    FCODE=$(curl "${args[@]}" "https://$name:${addr##*:}$path" 2>"$TMP/curl.err") || FCODE=000
    FBODY=$(cat "$TMP/fd.out" 2>/dev/null)
}

# define_vm NAME SPEC: a VM defined (stopped) on host NAME's ferryd
define_vm() {
    fd "$1" POST /v1/vms "$2"
    [ "$FCODE" = 201 ] || fail "ferryd $1 refused the VM: $FCODE $FBODY"
}

# ---- migrations (tests/center/migrate*.sh) ----

# manager_up [WORKERS]: the manager on $BACKEND with WORKERS task workers
# (default 16: more than the admission limits), its admin token in ADMIN,
# cluster c1.
manager_up() {
    db_setup
    center_start --workers "${1:-16}"
    ADMIN=$(sed -n 's/^bootstrap admin token: //p' "$TMP/center.out")
    expect 201 POST /v1/clusters '{"name": "c1"}'
}

# hosts_add MBPS NAMES...: enrolled ferryd on the next loopback addresses
# (127.0.0.1, .2, ...), migration links labelled MBPS, added to c1; all
# mount $TMP/shared.
HOST_N=0
hosts_add() {
    local mbps=$1 h et; shift
    for h in "$@"; do
        HOST_N=$((HOST_N + 1))
        enrol "$h"
        et=$ET
        FD_IP=127.0.0.$HOST_N FD_MBPS=$mbps ferryd_start "$h" "$TMP/$h/tls" "$TMP/shared"
        add_host "127.0.0.$HOST_N:$FPORT" "$et"
        [ "$(field .state)" = success ] || fail "adding host $h: $BODY"
    done
}

# vm_run HOST NAME MEM_MIB DIRTIER_ARGS: a dirtier VM defined and started
# on HOST through its ferryd (VM creation through the manager is another
# task's).
vm_run() {
    fd "$1" POST /v1/vms "{\"name\": \"$2\", \"memory_mib\": $3,
        \"boot\": {\"kernel\": \"$GUEST_DIR/dirtier.elf\", \"cmdline\": \"$4\"}}"
    [ "$FCODE" = 201 ] || fail "defining $2 on $1: $FCODE $FBODY"
    fd "$1" POST "/v1/vms/$2/start"
    [ "$FCODE" = 200 ] || fail "starting $2 on $1: $FCODE $FBODY"
}

# refresh HOST: the manager reads HOST again (its VMs land in the inventory)
refresh() {
    expect 202 POST "/v1/hosts/$1/refresh"
    wait_task "$(field .task.id)" success error
    [ "$(field .state)" = success ] || fail "refresh of $1: $BODY"
}

# migrate VM HOST [PRIORITY]: the task's id in TASK
migrate() {
    expect 202 POST "/v1/vms/$1/migrate" "{\"host\": \"$2\", \"priority\": \"${3:-normal}\"}"
    TASK=$(field .task.id)
}

wait_task_for() { local s=$1 id=$2; shift 2; wait_for "$s" task_in "$id" "$@" || fail "task $id never became $*: $BODY"; }

# wait_phase ID WORD: until the running task's phase text starts with WORD
phase_is() { api GET "/v1/tasks/$1"; holds "b['state'] == 'running' and b['phase'].startswith('$2')"; }
wait_phase() { wait_for 30 phase_is "$1" "$2" || fail "task $1 never reached phase $2: $BODY"; }

# vm_host VM: the VM's host in the inventory
vm_host() { api GET "/v1/vms/$1"; field .host; }

# vmm_hosts VM: the hosts (sorted) on which a ferry-vmm of VM runs
vmm_hosts() {
    python3 - "$TMP" "$1" <<'PY'
import glob, sys
tmp, vm = sys.argv[1:]
hosts = []
for p in glob.glob('/proc/[0-9]*/cmdline'):
    try:
        args = open(p, 'rb').read().decode(errors='replace').split('\0')
    except OSError:
        continue
    for a in args:
        if a.startswith(tmp + '/') and a.endswith('/state/vms/%s/control.sock' % vm):
            hosts.append(a[len(tmp) + 1:].split('/')[0])
print(' '.join(sorted(hosts)))
PY
}

# single_host VM: the one host whose ferry-vmm runs VM (a source's VMM
# lingers until its ferryd sees the migration's end: 10 s)
one_vmm() { [ "$(vmm_hosts "$1" | wc -w)" = 1 ]; }
single_host() {
    wait_for 10 one_vmm "$1" || fail "VM $1 runs on '$(vmm_hosts "$1")', not on exactly one host"
    vmm_hosts "$1"
}

# forgotten HOST VM: HOST's ferryd does not list VM
forgotten() { fd "$1" GET "/v1/vms/$2"; [ "$FCODE" = 404 ]; }

# The guest's console on HOST (since the VM started or arrived there).
console() { echo "$TMP/$1/state/vms/$2/console.log"; }
passes() { sed -nE 's/^dirtier pass=([0-9]+) pages=[0-9]+ ok .*/\1/p' "$(console "$1" "$2")"; }
last_pass() { local p; p=$(passes "$1" "$2" | tail -n1); echo "${p:-0}"; }

# guest_passes HOST VM N: N more ok passes within 60 s; a verification
# failure (the dirtier found a page it did not write) fails at once
_passes_past() {
    grep -qE '^dirtier: pass=[0-9]+ page' "$(console "$1" "$2")" 2>/dev/null &&
        fail "$2 on $1: the guest found corrupted memory: $(grep -m1 -E '^dirtier: pass' "$(console "$1" "$2")")"
    [ "$(last_pass "$1" "$2")" -ge "$3" ]
}
guest_passes() {
    local want=$(($(last_pass "$1" "$2") + $3))
    wait_for 60 _passes_past "$1" "$2" "$want" || fail "$2 on $1: no pass $want in 60 s"
}

# guest_continues HOST VM PREV: the guest verifies its whole working set
# twice more on HOST and its passes are consecutive; unless PREV is "-" it
# arrived there by migration (PREV: its last pass on the source): it did
# not start again and went on after PREV.
guest_continues() {
    local c; c=$(console "$1" "$2")
    guest_passes "$1" "$2" 2
    passes "$1" "$2" | python3 -c '
import sys
p = [int(x) for x in sys.stdin.read().split()]
sys.exit(0 if all(b == a + 1 for a, b in zip(p, p[1:])) else "passes %s" % p)' ||
        fail "$2 on $1: its passes are not consecutive"
    if [ "$3" != - ]; then
        grep -q '^dirtier: start' "$c" && fail "$2 on $1: the guest started again: $(head -n3 "$c")"
        [ "$(passes "$1" "$2" | head -n1)" -gt "$3" ] || fail "$2 on $1: pass counter went back: $(head -n3 "$c")"
    fi
    return 0
}

# ---- hosts as network namespaces (multihost.sh, tests/lab/t-center-migrate.sh) ----
#
#   root:  bridge NS_Pmgmt 10.M.0.254 ---- hI's mgmt0 10.M.0.I   (ferryd's API)
#          bridge NS_Pmig (no address) ---- hI's mig0  10.G.0.I   (migration streams)
#   hI:    bridge br-vm: port group vm-net (the VMs' taps)
# M.G is 77.78 on SQLite and 79.80 on PostgreSQL: meson runs the two
# backends' tests at once, and both subnets live in the root namespace.

# need_netns: skip the test (77) without root, iproute2 or /dev/net/tun
need_netns() {
    if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || [ ! -c /dev/net/tun ]; then
        echo "SKIP: $T_NAME needs root, iproute2 and /dev/net/tun" >&2
        exit 77
    fi
}

NS_P=fmh$$- NS_N=0
NS_M=$([ "$BACKEND" = pg ] && echo 79 || echo 77) NS_G=$([ "$BACKEND" = pg ] && echo 80 || echo 78)
_ns_hosts_down() {
    local i
    for ((i = 1; i <= NS_N; i++)); do ip netns del "${NS_P}h$i" 2>/dev/null; done
    ip link del "${NS_P}mgmt" 2>/dev/null
    ip link del "${NS_P}mig" 2>/dev/null
    _cleanup
}
# ns_hosts_up N: hosts h1..hN (FD_NS), all removed at exit
ns_hosts_up() {
    local i ns
    NS_N=$1
    trap _ns_hosts_down EXIT
    ip link add "${NS_P}mgmt" type bridge && ip addr add "10.$NS_M.0.254/24" dev "${NS_P}mgmt" &&
        ip link set "${NS_P}mgmt" up && ip link add "${NS_P}mig" type bridge && ip link set "${NS_P}mig" up ||
        fail "cannot make the root namespace's bridges"
    for ((i = 1; i <= NS_N; i++)); do
        ns=${NS_P}h$i
        FD_NS[h$i]=$ns
        ip netns add "$ns" &&
        ip link add "${NS_P}m$i" type veth peer name mgmt0 netns "$ns" &&
        ip link set "${NS_P}m$i" master "${NS_P}mgmt" up &&
        ip link add "${NS_P}v$i" type veth peer name mig0 netns "$ns" &&
        ip link set "${NS_P}v$i" master "${NS_P}mig" up &&
        ip -n "$ns" addr add "10.$NS_M.0.$i/24" dev mgmt0 && ip -n "$ns" link set mgmt0 up &&
        ip -n "$ns" addr add "10.$NS_G.0.$i/24" dev mig0 && ip -n "$ns" link set mig0 up &&
        ip -n "$ns" link set lo up &&
        ip -n "$ns" link add br-vm type bridge && ip -n "$ns" link set br-vm up ||
            fail "cannot make host h$i's namespace"
    done
}
# ns_host_add hI: hI enrolled, its ferryd started in its namespace (migration
# interface mig0, labelled 10 GbE; datastore ds0 = $TMP/shared) and added to
# cluster c1 with `ferry host add` (FERRY_CENTER/FERRY_TOKEN/FERRY_CA set)
ns_host_add() {
    local h=$1 i=${1#h}
    enrol "$h"
    FD_IP=10.$NS_M.0.$i FD_MIG_IP=10.$NS_G.0.$i FD_MIG_NIC=mig0 FD_MBPS=10000 \
        FD_NETWORKS='{"name": "vm-net", "bridge": "br-vm"}' ferryd_start "$h" "$TMP/$h/tls" "$TMP/shared"
    "$FERRY_CLI" host add "10.$NS_M.0.$i:$FPORT" --cluster c1 --token "$ET" >"$TMP/add-$h.out" 2>&1 ||
        fail "ferry host add $h: $(cat "$TMP/add-$h.out")"
}
# in_ns VM HOST: VM's ferry-vmm runs in HOST's namespace, with the cluster's
# CPU baseline (EVC: --cpu-features, on the source and on every destination)
in_ns() {
    local pid
    pid=$(pgrep -f "$TMP/$2/state/vms/$1/control.sock" | head -n1)
    [ -n "$pid" ] && [ "$(ip netns identify "$pid")" = "${FD_NS[$2]}" ] &&
        tr '\0' '\n' < "/proc/$pid/cmdline" | grep -cx -- --cpu-features >/dev/null   # -c reads it all: no SIGPIPE under pipefail
}
# ns_migrate VM HOST: `ferry vm migrate VM --host HOST`; then the inventory
# has VM running on HOST and exactly one ferry-vmm runs it, in HOST's
# namespace with the baseline. Sets NS_SRC (where it was) and MIG_MS.
ns_migrate() {
    local vm=$1 dst=$2 t0
    NS_SRC=$(vm_host "$vm")
    t0=$(date +%s%N)
    "$FERRY_CLI" vm migrate "$vm" --host "$dst" >"$TMP/mig-$dst.out" 2>&1 ||
        fail "ferry vm migrate $vm --host $dst: $(cat "$TMP/mig-$dst.out")"
    MIG_MS=$((($(date +%s%N) - t0) / 1000000))
    "$FERRY_CLI" --json vm show "$vm" >"$TMP/show.json" || fail "ferry vm show $vm"
    python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); sys.exit(v["host"] != sys.argv[2] or v["power_state"] != "running")' \
        "$TMP/show.json" "$dst" || fail "after $NS_SRC -> $dst: ferry vm show: $(cat "$TMP/show.json")"
    [ "$(single_host "$vm")" = "$dst" ] || fail "after $NS_SRC -> $dst: $vm runs on $(vmm_hosts "$vm")"
    in_ns "$vm" "$dst" || fail "after $NS_SRC -> $dst: $vm's ferry-vmm is not in $dst's namespace with --cpu-features"
}
