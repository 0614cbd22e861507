#!/bin/bash
# ferryd.sh sqlite|pg: the manager with real host agents. Two ferryd
# (FERRYD: the agent branch's binary, or this tree's once merged) enrol
# with the manager, which issues their certificates; they are added by
# address and their facts land in the inventory: CPU, memory, port groups,
# VMs, and datastores matched by UUID (one directory both mount is one
# shared datastore). Refused: an address whose certificate is another
# host's, and a host whose certificate comes from another CA.
# Skipped without FERRYD or /dev/kvm (ferryd probes KVM's CPUID).
# shellcheck source=tests/center/lib.sh
. "$(dirname "$0")/lib.sh"
: "${FERRY_CLI:?FERRY_CLI is not set (run through meson test)}"
if [ -z "${FERRYD:-}" ] || [ ! -x "$FERRYD" ] || [ ! -w /dev/kvm ] || ! command -v curl >/dev/null; then
    echo "SKIP: $T_NAME needs FERRYD (the host agent), /dev/kvm and curl" >&2
    exit 77
fi

db_setup
center_start --workers 2
ADMIN=$(sed -n 's/^bootstrap admin token: //p' "$TMP/center.out")
expect 201 POST /v1/clusters '{"name": "c1"}'

add_host() {   # add_host ADDRESS TOKEN: the task's final state in BODY
    expect 202 POST /v1/hosts "{\"address\": \"$1\", \"cluster\": \"c1\", \"enrolment_token\": \"$2\"}"
    local id; id=$(field .task.id)
    wait_task "$id" success error
}

enrol h1
ET1=$ET
ferryd_start h1 "$TMP/h1/tls" "$TMP/shared" "$TMP/local1"
P1=$FPORT
enrol h2
ET2=$ET
ferryd_start h2 "$TMP/h2/tls" "$TMP/shared" "$TMP/local2"
P2=$FPORT
P2PID=$FPID

# define_vm NAME: a VM defined on h1 (stopped), through ferryd's own API with h1's identity
define_vm() {
    curl -sS -o "$TMP/vm.out" -w '%{http_code}' --cacert "$TMP/h1/tls/ca.pem" --cert "$TMP/h1/tls/cert.pem" \
        --key "$TMP/h1/tls/key.pem" --resolve "h1:$P1:127.0.0.1" -H 'Content-Type: application/json' \
        --data-binary "{\"name\": \"$1\", \"memory_mib\": 64, \"boot\": {\"kernel\": \"$FERRY_VMM\"},
                        \"nics\": [{\"portgroup\": \"vm-net\"}]}" \
        "https://h1:$P1/v1/vms" >"$TMP/vm.code" || fail "cannot define a VM on h1"
    [ "$(cat "$TMP/vm.code")" = 201 ] || fail "ferryd refused the VM: $(cat "$TMP/vm.out")"
}
define_vm vm1

# the wrong host at an address: h2's enrolment token, h1's address
add_host "127.0.0.1:$P1" "$ET2"
holds 'b["state"] == "error" and "not the enrolled" in b["error"]' || fail "h2's token at h1's address: $BODY"

add_host "127.0.0.1:$P1" "$ET1"
[ "$(field .state)" = success ] || fail "adding h1 failed: $BODY"
holds 'b["result"] == {"host": "h1", "datastores": 2, "networks": 1, "vms": 1}' || fail "h1's task result: $BODY"
add_host "127.0.0.1:$P2" "$ET2"
[ "$(field .state)" = success ] || fail "adding h2 failed: $BODY"

expect 200 GET /v1/hosts/h1
holds '(b["state"] == "connected" and b["cluster"] == "c1" and b["facts"]["name"] == "h1"
       and b["facts"]["cpu"]["vendor"] != "" and len(b["facts"]["cpu"]["kvm_features"]) > 10
       and b["facts"]["memory"]["total_bytes"] > 0
       and b["facts"]["migration_interfaces"][0]["speed_mbps"] == 1000)' || fail "h1's facts: $BODY"
expect 200 GET /v1/hosts
holds '[h["name"] for h in b] == ["h1", "h2"] and all(h["state"] == "connected" for h in b)' ||
    fail "hosts: $BODY"
expect 200 GET /v1/datastores
holds 'sorted((len(d["hosts"]), d["shared"]) for d in b) == [(1, False), (1, False), (2, True)]' ||
    fail "datastores: the shared directory is not one shared datastore: $BODY"
uuid=$(python3 <"$TMP/shared/.ferry-datastore" -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
holds "[d for d in b if d['shared']][0]['uuid'] == '$uuid'" || fail "shared datastore's uuid: $BODY"
expect 200 GET /v1/networks
holds 'len(b) == 1 and b[0]["portgroup"] == "vm-net" and [h["host"] for h in b[0]["hosts"]] == ["h1", "h2"]' ||
    fail "networks: $BODY"
expect 200 GET /v1/vms/vm1
holds 'b["host"] == "h1" and b["power_state"] == "stopped" and len(b["uuid"]) == 36' || fail "vm1: $BODY"
expect 200 GET /v1/events
holds 'sum(e["kind"] == "host.add" and e["severity"] == "info" for e in b) == 2' || fail "events: $BODY"

# refresh: a VM defined since appears; a host that went away is disconnected
define_vm vm2
expect 202 POST /v1/hosts/h1/refresh
wait_task "$(field .task.id)" success error
holds 'b["state"] == "success" and b["result"]["vms"] == 2' || fail "refresh of h1: $BODY"
expect 200 GET /v1/vms
holds '[(v["name"], v["host"]) for v in b] == [("vm1", "h1"), ("vm2", "h1")]' || fail "VMs after refresh: $BODY"
expect 200 GET /v1/datastores
[ "$(field 'len(b)')" = 3 ] || fail "a refresh duplicated datastores: $BODY"
expect 404 POST /v1/hosts/nope/refresh
expect 400 POST /v1/hosts/h1/refresh '{"deep": true}'
kill -KILL "$P2PID"
expect 202 POST /v1/hosts/h2/refresh
wait_task "$(field .task.id)" success error
[ "$(field .state)" = error ] || fail "refresh of a dead host: $BODY"
expect 200 GET /v1/hosts/h2
holds 'b["state"] == "disconnected" and bool(b["error"])' || fail "h2 after its ferryd died: $BODY"

# a host whose certificate another CA signed is refused
mkdir -p "$TMP/h3"
"$FERRY_CLI" tls init "$TMP/h3/other" --cn h3 >/dev/null || fail "ferry tls init"
enrol h3
ferryd_start h3 "$TMP/h3/other" "$TMP/local3"
add_host "127.0.0.1:$FPORT" "$ET"
holds 'b["state"] == "error" and ("certificate" in b["error"] or "SSL" in b["error"])' ||
    fail "a host from another CA was not refused clearly: $BODY"
expect 404 GET /v1/hosts/h3
exit 0
