#!/bin/bash
# ferryd.sh: the host agent end to end, over HTTPS with mutual TLS (curl).
# In a private network namespace (its own loopback, a VM bridge): ferryd with
# a temporary config, state dir and credentials from `ferry tls init`;
#   - host facts are sane, datastore markers carry one UUID per storage;
#   - a dirtier micro-guest is created, started (running, with a pid) and
#     its console advances;
#   - kill -9 of ferryd does not stop it: a restarted ferryd re-adopts the
#     same pid, and the guest's pass counter kept advancing meanwhile; a VM
#     whose VMM died meanwhile is reported stopped;
#   - CPU affinity is applied, a NIC gets a tap on its port group's bridge;
#   - stop, delete; bad input gets the right code and changes nothing;
#   - clients without a certificate or with one from another CA are refused.
# Needs root (network namespace, bridge) and /dev/kvm, else skipped.
# shellcheck source=tests/func/lib.sh
. "$SRC/tests/func/lib.sh"
: "${FERRYD:?FERRYD is not set (run through meson test)}"
: "${FERRY_CLI:?FERRY_CLI is not set (run through meson test)}"

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || ! command -v curl >/dev/null ||
   [ ! -c /dev/net/tun ] || [ ! -w /dev/kvm ]; then
    echo "SKIP: $T_NAME needs root, iproute2, curl, /dev/net/tun and /dev/kvm" >&2
    exit 77
fi

NS=ferryd-t-$$
STATE=$TMP/state
PORT=18443
URL=https://h1:$PORT
FERRYD_PID=

# Every VMM the test's ferryd started (their pid files), and ferryd itself.
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local f pid
    [ -n "$FERRYD_PID" ] && kill -KILL "$FERRYD_PID" 2>/dev/null
    for f in "$STATE"/vms/*/vmm.pid; do
        [ -e "$f" ] || continue
        read -r pid _ <"$f"
        grep -qF "$STATE" "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid"
    done
    ip netns del "$NS" 2>/dev/null
    _cleanup
}
trap cleanup EXIT

in_ns() { ip netns exec "$NS" "$@"; }

ip netns add "$NS" || fail "cannot create network namespace $NS"
in_ns ip link set lo up
if ! in_ns ip link add brvm0 type bridge || ! in_ns ip link set brvm0 up; then
    fail "cannot create bridge"
fi

"$FERRY_CLI" tls init "$TMP/tls" --cn h1 >/dev/null || fail "ferry tls init"
"$FERRY_CLI" tls init "$TMP/other" --cn h1 >/dev/null || fail "ferry tls init (other CA)"
mkdir -p "$TMP/ds1" "$TMP/ds2"
cat >"$TMP/ferryd.json" <<EOF
{
  "host_name": "h1",
  "listen": "127.0.0.1:$PORT",
  "state_dir": "$STATE",
  "tls_dir": "$TMP/tls",
  "ferry_vmm": "$FERRY_VMM",
  "migration_interfaces": [{"address": "10.77.0.1", "nic": "lo", "speed_mbps": 10000}],
  "networks": [{"name": "vm-net", "bridge": "brvm0"}, {"name": "dmz", "bridge": "brnone"}],
  "datastores": [{"name": "ds1", "path": "$TMP/ds1"}, {"name": "ds1-again", "path": "$TMP/ds1"},
                 {"name": "ds2", "path": "$TMP/ds2"}, {"name": "late", "path": "$TMP/late"}]
}
EOF

# ip netns exec execs the command: $! is ferryd's pid.
start_ferryd() {
    ip netns exec "$NS" "$FERRYD" --config "$TMP/ferryd.json" >>"$TMP/ferryd.log" 2>&1 &
    FERRYD_PID=$!
    wait_for 10 in_ns curl -s -o /dev/null "${CURL_TLS[@]}" "$URL/v1/host" ||
        ffail "ferryd does not answer"
    kill -0 "$FERRYD_PID" 2>/dev/null || ffail "ferryd exited"
    [ "$(readlink "/proc/$FERRYD_PID/exe")" = "$(readlink -f "$FERRYD")" ] ||
        ffail "pid $FERRYD_PID is not ferryd"
}

# ffail MESSAGE: fail with ferryd's log.
ffail() {
    echo "FAIL: $T_NAME: $*" >&2
    show "$TMP/ferryd.log" ferryd.log
    exit 1
}

CURL_TLS=(--resolve "h1:$PORT:127.0.0.1" --cacert "$TMP/tls/ca.pem"
          --cert "$TMP/tls/cert.pem" --key "$TMP/tls/key.pem")
# api METHOD PATH [JSON]: sets CODE and BODY.
api() {
    local out
    out=$(in_ns curl -sS -m 20 -X "$1" "${CURL_TLS[@]}" ${3+--data-binary "$3"} \
          -w '\n%{http_code}' "$URL$2") || ffail "curl $1 $2 failed: $out"
    CODE=${out##*$'\n'}
    BODY=${out%$'\n'*}
}
# expect CODE METHOD PATH [JSON]
expect() {
    local want=$1; shift
    api "$@"
    [ "$CODE" = "$want" ] || ffail "$1 $2: HTTP $CODE, expected $want: $BODY"
}
# field PATH: the value at dotted PATH of the last reply (list indices are
# numbers), strings bare, others as JSON; "<missing>" when absent.
field() {
    python3 -c '
import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    try:
        v = v[int(k)] if isinstance(v, list) else v[k]
    except (KeyError, IndexError, ValueError, TypeError):
        v = "<missing>"
        break
print(v if isinstance(v, str) else json.dumps(v))' "$BODY" "$1"
}
check() {
    local got
    got=$(field "$1")
    # shellcheck disable=SC2053
    [[ $got == $2 ]] || ffail "$3: $1 is '$got', expected '$2' in $BODY"
}

# The dirtier's pass counter: the last "dirtier pass=N" in its console.
last_pass() {
    grep -oE '^dirtier pass=[0-9]+' "$1" 2>/dev/null | tail -1 | cut -d= -f2
}
# shellcheck disable=SC2317  # called through wait_for
pass_above() { local p; p=$(last_pass "$1"); [ -n "$p" ] && [ "$p" -gt "$2" ]; }

start_ferryd

# ---- host facts ----
expect 200 GET /v1/host
check name h1 "host"
check cpu.vendor '?*' "host"
check cpu.kvm_features '*"fpu"*' "host"
check cpu.kvm_cpuid '*0x1.0.edx*' "host"
check memory.total_bytes '[1-9]*' "host"
check migration_interfaces '*"speed_mbps": 10000*' "host"
uuid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["uuid"])' "$TMP/ds1/.ferry-datastore") ||
    ffail "no datastore marker in ds1"
python3 - "$BODY" "$uuid" <<'PY' || ffail "host facts: $BODY"
import json, sys
h, uuid = json.loads(sys.argv[1]), sys.argv[2]
ds = {d["name"]: d for d in h["datastores"]}
assert ds["ds1"]["uuid"] == uuid and ds["ds1-again"]["uuid"] == uuid, "same storage, same uuid"
assert ds["ds2"]["uuid"] != uuid and len(ds["ds2"]["uuid"]) == 36
assert ds["ds1"]["capacity_bytes"] >= ds["ds1"]["free_bytes"] > 0
nets = {n["name"]: n["bridge_exists"] for n in h["networks"]}
assert nets == {"vm-net": True, "dmz": False}, nets
assert h["memory"]["total_bytes"] >= h["memory"]["available_bytes"] > 0
assert any(n["name"] == "brvm0" and n["bridge"] for n in h["nics"]), h["nics"]
assert not ds["late"]["accessible"] and ds["late"]["uuid"] == "", ds["late"]
PY
# a datastore mounted after ferryd started is found at the next look
mkdir "$TMP/late"
expect 200 GET /v1/host
python3 -c 'import json,sys; d=[d for d in json.loads(sys.argv[1])["datastores"] if d["name"]=="late"][0]; assert d["accessible"] and len(d["uuid"])==36, d' "$BODY" ||
    ffail "datastore 'late' not picked up: $BODY"

# ---- a running VM ----
DIRTIER=$(guest dirtier)
VM1='{"name":"vm1","vcpus":1,"memory_mib":64,"boot":{"kernel":"'$DIRTIER'","cmdline":"mib=4 report_ms=100"}}'
expect 201 POST /v1/vms "$VM1"
check state stopped "create"
check uuid '????????-????-4???-????-????????????' "create"
[ -f "$STATE/vms/vm1/spec.json" ] || ffail "no spec.json after create"
expect 200 POST /v1/vms/vm1/start
check state running "start"
pid=$(field pid)
[ -d "/proc/$pid" ] || ffail "no process $pid after start"
CONSOLE=$STATE/vms/vm1/console.log
wait_for 10 pass_above "$CONSOLE" 0 || ffail "the guest prints no progress"
p0=$(last_pass "$CONSOLE")
wait_for 10 pass_above "$CONSOLE" "$p0" || ffail "the guest's pass counter stays at $p0"
expect 200 GET /v1/vms/vm1/console
[[ $BODY == *"dirtier pass="* ]] || ffail "console endpoint: no dirtier lines"
expect 200 GET /v1/vms/vm1
check state running "status"
check vmm.boot micro-guest "status"
expect 200 GET /v1/vms
check 0.name vm1 "list"

# ---- kill -9 ferryd: the VM runs on, a new ferryd adopts it ----
# vm2's VMM dies while no ferryd runs: the new one reports it stopped
# vm2 reserves all its memory: its VMM faults it in before the guest starts
expect 201 POST /v1/vms '{"name":"vm2","memory_mib":32,"memory_reservation_mib":32,"boot":{"kernel":"'"$DIRTIER"'","cmdline":"mib=1"}}'
expect 200 POST /v1/vms/vm2/start
pid2=$(field pid)
tr '\0' '\n' <"/proc/$pid2/cmdline" | grep -cx -- --prealloc >/dev/null || ffail "a fully reserved VM started without --prealloc"
tr '\0' '\n' <"/proc/$pid/cmdline" | grep -cx -- --prealloc >/dev/null && ffail "vm1 (no reservation) started with --prealloc"
rss=$(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$pid2/status")
[ "${rss:-0}" -ge 32 ] || ffail "vm2 reserves 32 MiB but its VMM holds ${rss:-0} MiB"
kill -KILL "$FERRYD_PID"
wait "$FERRYD_PID" 2>/dev/null
[ -e "/proc/$FERRYD_PID" ] && ffail "ferryd survived kill -9"
FERRYD_PID=
[ "$(grep -c 'serving HTTPS' "$TMP/ferryd.log")" = 1 ] || ffail "not exactly one ferryd started"
p1=$(last_pass "$CONSOLE")
wait_for 10 pass_above "$CONSOLE" "$p1" || ffail "the guest stopped with ferryd"
p2=$(last_pass "$CONSOLE")
# gone, or a zombie init has not reaped yet (empty command line)
# shellcheck disable=SC2317  # called through wait_for
vmm_gone() { [ -z "$(tr -d '\0' <"/proc/$1/cmdline" 2>/dev/null)" ]; }
kill -KILL "$pid2"
# kill returns before the process has died: the new ferryd must not find it dying
wait_for 10 vmm_gone "$pid2" || ffail "vm2's ferry-vmm $pid2 survived kill -9"
start_ferryd
[ "$(grep -c 'serving HTTPS' "$TMP/ferryd.log")" = 2 ] || ffail "the new ferryd does not serve"
grep -q "VM vm1: adopted running ferry-vmm pid $pid" "$TMP/ferryd.log" || ffail "no adoption logged"
expect 200 GET /v1/vms/vm1
check state running "after restart"
check pid "$pid" "after restart"
wait_for 10 pass_above "$CONSOLE" "$p2" || ffail "the adopted guest's counter stays at $p2"
grep -q "VM vm2: its ferry-vmm is gone, VM is stopped" "$TMP/ferryd.log" || ffail "vm2's end not logged"
expect 200 GET /v1/vms/vm2
check state stopped "a VM whose VMM died"
check pid null "a VM whose VMM died"
expect 200 DELETE /v1/vms/vm2
# the power state is the VMM's own
ctl "$STATE/vms/vm1/control.sock" '{"cmd":"pause"}' >/dev/null || ffail "cannot pause vm1"
expect 200 GET /v1/vms/vm1
check state paused "paused through its control socket"
ctl "$STATE/vms/vm1/control.sock" '{"cmd":"resume"}' >/dev/null || ffail "cannot resume vm1"

# ---- bad input: the right code, nothing changes ----
snapshot() {
    api GET /v1/vms
    # shellcheck disable=SC2001  # a regex
    echo "$BODY" | sed 's/"state":"[a-z]*"//g'
    (cd "$STATE/vms" && ls -R)
}
before=$(snapshot)
expect 400 POST /v1/vms '{"name":"vm2","memory_mib":64,'
check error 'malformed JSON*' "malformed"
expect 400 POST /v1/vms '{"name":"vm2"} x'
expect 400 POST /v1/vms '[1,2]'
expect 400 POST /v1/vms ''
expect 400 POST /v1/vms '{"name":"vm2","memory_mib":64,"boot":{"kernel":"/k"},"colour":"red"}'
check error "spec: unknown field 'colour'" "unknown field"
expect 400 POST /v1/vms '{"name":"vm2","memory_mib":"64","boot":{"kernel":"/k"}}'
check error '*memory_mib*' "wrong type"
expect 400 POST /v1/vms '{"name":"vm2","memory_mib":64,"boot":{"kernel":"/k"},"disks":[{"datastore":"nope","path":"a.img"}]}'
check error "*unknown datastore 'nope'*" "unknown datastore"
expect 400 POST /v1/vms '{"name":"vm2","memory_mib":64,"boot":{"kernel":"/k"},"disks":[{"datastore":"ds1","path":"../x.img"}]}'
expect 400 POST /v1/vms '{"name":"vm2","memory_mib":64,"boot":{"kernel":"/k"},"nics":[{"portgroup":"nope"}]}'
check error "*unknown port group 'nope'*" "unknown port group"
expect 400 POST /v1/vms '{"name":"vm2","memory_mib":64,"boot":{"kernel":"/k"},"nics":[{"portgroup":"vm-net","mac":"01:00:5e:00:00:01"}]}'
expect 400 POST /v1/vms '{"name":"../vm2","memory_mib":64,"boot":{"kernel":"/k"}}'
expect 400 POST /v1/vms '{"name":"vm2","memory_mib":64,"boot":{"kernel":"/k"},"cpu_affinity":[99999]}'
expect 400 POST /v1/vms '{"name":"vm2","memory_mib":64,"memory_reservation_mib":65,"boot":{"kernel":"/k"}}'
expect 409 POST /v1/vms "$VM1"
check error "a VM named 'vm1' exists already" "duplicate"
# a dry run checks as a create does and stores nothing
expect 409 POST '/v1/vms?dry_run=1' "$VM1"
expect 400 POST '/v1/vms?dry_run=1' '{"name":"vm2","memory_mib":64,"boot":{"kernel":"/k"},"nics":[{"portgroup":"nope"}]}'
check error "*unknown port group 'nope'*" "dry run: unknown port group"
expect 200 POST '/v1/vms?dry_run=true' '{"name":"vm2","memory_mib":64,"boot":{"kernel":"/k"}}'
check spec.uuid '????????-????-4???-????-????????????' "dry run"
expect 404 GET /v1/vms/nosuch
check error "no VM named 'nosuch'" "unknown VM"
expect 404 POST /v1/vms/nosuch/start
expect 404 DELETE /v1/vms/nosuch
expect 404 GET /v1/nosuch
expect 405 PUT /v1/vms/vm1
expect 409 POST /v1/vms/vm1/start
expect 409 DELETE /v1/vms/vm1
check error "VM 'vm1' is running: stop it first" "delete running"
after=$(snapshot)
[ "$before" = "$after" ] || ffail "bad input changed something: $before -> $after"

# ---- what ferry-vmm cannot do is stored, and refused at start ----
expect 201 POST /v1/vms '{"name":"cd","memory_mib":64,"boot":{"kernel":"'"$DIRTIER"'"},"cdrom":{"host_path":"/srv/x.iso"},"shared_disks":[{"datastore":"ds1","path":"quorum.img"}],"memory_reservation_mib":32}'
check spec.cdrom.host_path /srv/x.iso "cdrom stored"
expect 409 POST /v1/vms/cd/start
check error "cdrom is not supported by ferry-vmm yet" "cdrom"
expect 200 DELETE /v1/vms/cd
expect 201 POST /v1/vms '{"name":"nokernel","memory_mib":64,"boot":{"kernel":"/nonexistent/k.elf"}}'
expect 500 POST /v1/vms/nokernel/start
check error 'ferry-vmm exited at start: *nonexistent*' "missing kernel"
expect 200 GET /v1/vms/nokernel
check state stopped "after a failed start"
expect 200 DELETE /v1/vms/nokernel

# ---- affinity, a disk on a datastore, a NIC on the port group's bridge ----
truncate -s 1M "$TMP/ds2/vm3 disk.img"
VM3='{"name":"vm3","memory_mib":64,"boot":{"kernel":"'$DIRTIER'","cmdline":"mib=4"},"cpu_affinity":[0],
      "disks":[{"datastore":"ds2","path":"vm3 disk.img","readonly":true}],
      "nics":[{"portgroup":"vm-net","mac":"52:54:00:aa:bb:01"}]}'
expect 201 POST /v1/vms "$VM3"
expect 200 POST /v1/vms/vm3/start
pid3=$(field pid)
check vmm.disks.0.path "$TMP/ds2/vm3 disk.img" "disk"
check vmm.disks.0.readonly true "disk"
check vmm.nics.0.mac 52:54:00:aa:bb:01 "NIC"
tap=$(field vmm.nics.0.tap)
in_ns ip -o link show "$tap" | grep -q "master brvm0" || ffail "tap $tap is not on brvm0"
for t in /proc/"$pid3"/task/*; do
    grep -qE '^Cpus_allowed_list:\s+0$' "$t/status" || ffail "thread $t not pinned to CPU 0"
done
expect 201 POST /v1/vms '{"name":"vm4","memory_mib":64,"boot":{"kernel":"/k"},"nics":[{"portgroup":"dmz"}]}'
check spec.nics.0.mac '52:54:00:??:??:??' "generated MAC"
expect 409 POST /v1/vms/vm4/start
check error "*port group 'dmz' has no bridge on this host" "missing bridge"
expect 200 DELETE /v1/vms/vm4
expect 200 POST /v1/vms/vm3/stop
in_ns ip link show "$tap" >/dev/null 2>&1 && ffail "tap $tap left behind after stop"
expect 200 DELETE /v1/vms/vm3

# ---- stop and delete ----
expect 200 POST /v1/vms/vm1/stop
check state stopped "stop"
wait_for 5 vmm_gone "$pid" || ffail "ferry-vmm $pid still runs after stop"
expect 409 POST /v1/vms/vm1/stop
expect 200 DELETE /v1/vms/vm1
expect 404 GET /v1/vms/vm1
[ -e "$STATE/vms/vm1" ] && ffail "vm1's directory is still there"

# ---- mutual TLS: only clients with a certificate from our CA ----
refused() {
    local out
    if out=$(in_ns curl -sS -m 5 --resolve "h1:$PORT:127.0.0.1" --cacert "$TMP/tls/ca.pem" "$@" \
             "$URL/v1/host" 2>&1); then
        ffail "a client with ${*:-no certificate} was served: $out"
    fi
}
refused
refused --cert "$TMP/other/cert.pem" --key "$TMP/other/key.pem"
in_ns curl -s -m 5 "http://127.0.0.1:$PORT/v1/host" >/dev/null 2>&1 && ffail "plain HTTP was served"
# and the server is still fine
expect 200 GET /v1/host

# SIGTERM: a clean exit (and no sanitizer report in an ASan build)
kill -TERM "$FERRYD_PID"
wait "$FERRYD_PID"
st=$?
FERRYD_PID=
[ "$st" = 0 ] || ffail "ferryd exited $st on SIGTERM"
sanitizer_clean "$TMP/ferryd.log" || ffail "sanitizer report from ferryd"
exit 0
