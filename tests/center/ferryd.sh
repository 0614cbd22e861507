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
need_ferryd

manager_up 2

enrol h1
ET1=$ET
ferryd_start h1 "$TMP/h1/tls" "$TMP/shared" "$TMP/local1"
P1=$FPORT
enrol h2
ET2=$ET
ferryd_start h2 "$TMP/h2/tls" "$TMP/shared" "$TMP/local2"
P2=$FPORT
P2PID=$FPID

VM_SPEC='"memory_mib": 64, "boot": {"kernel": "'$FERRY_VMM'"}, "nics": [{"portgroup": "vm-net"}]}'
define_vm h1 "{\"name\": \"vm1\", $VM_SPEC"

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
define_vm h1 "{\"name\": \"vm2\", $VM_SPEC"
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
