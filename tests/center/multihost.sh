#!/bin/bash
# The system on one machine, driven by the operator's CLI: three hosts as
# network namespaces, each with its own ferryd, its VM network bridge (port
# group vm-net) and an address on a shared migration network, plus one
# ferry-center (SQLite or PostgreSQL) in the root namespace, which reaches
# the hosts over a management network:
#
#   root:  br mgmt 10.77.0.254 ---- h1/h2/h3 mgmt0 10.77.0.N   (ferryd's API)
#          br mig  (no address) ---- h1/h2/h3 mig0  10.78.0.N   (migration streams)
#          (10.79 and 10.80 on PostgreSQL)
#   hN:    br-vm (vm-net): the VM's tap
#
# `ferry host add` joins the hosts, `ferry cluster set-baseline --common` gives
# the cluster a CPU baseline (EVC); `ferry vm create/start` makes a dirtier
# micro-guest with a NIC on vm-net on h1; `ferry vm migrate --host` moves it
# by name h1 -> h2 -> h3 -> h1. After every hop: the inventory names the
# host, exactly one ferry-vmm runs the VM (in the right namespace, with the
# baseline's --cpu-features), and the guest's own passes go on,
# consecutive, each verifying its whole working set. Then the VM, powered
# off, moves cold to h2 (defined there, gone from h1, running nowhere) and
# starts there. `ferry task list` holds the four moves, the three live ones
# with a matching memory digest. Needs root, iproute2, FERRYD and /dev/kvm
# (else skipped).
# shellcheck source=tests/center/lib.sh
. "$(dirname "$0")/lib.sh"
: "${GUEST_DIR:?GUEST_DIR is not set (run through meson test)}" "${FERRY_CLI:?FERRY_CLI is not set}"
need_ferryd
need_netns

manager_up
export FERRY_CENTER=https://127.0.0.1:$PORT FERRY_TOKEN=$ADMIN FERRY_CA=$TMP/tls/ca.pem
ferry() { "$FERRY_CLI" "$@"; }

ns_hosts_up 3
for i in 1 2 3; do ns_host_add "h$i"; done
ferry cluster set-baseline c1 --common >"$TMP/baseline.out" 2>&1 ||
    fail "ferry cluster set-baseline c1 --common: $(cat "$TMP/baseline.out")"
ferry --json host list >"$TMP/hosts.json" || fail "ferry host list"
python3 -c 'import json,sys; h=json.load(open(sys.argv[1])); sys.exit(sorted(x["name"] for x in h) != ["h1","h2","h3"])' \
    "$TMP/hosts.json" || fail "ferry host list: $(cat "$TMP/hosts.json")"

cat >"$TMP/vm1.json" <<JSON
{"name": "vm1", "memory_mib": 128, "vcpus": 1,
 "boot": {"kernel": "$GUEST_DIR/dirtier.elf", "cmdline": "mib=32 rate=8000 report_ms=0"},
 "nics": [{"portgroup": "vm-net", "mac": "52:54:00:77:00:01"}]}
JSON
ferry vm create vm1 --host h1 --spec "$TMP/vm1.json" >"$TMP/create.out" 2>&1 ||
    fail "ferry vm create: $(cat "$TMP/create.out")"
ferry vm start vm1 >"$TMP/start.out" 2>&1 || fail "ferry vm start: $(cat "$TMP/start.out")"
guest_passes h1 vm1 2
in_ns vm1 h1 || fail "vm1's ferry-vmm is not in h1's namespace with the cluster's --cpu-features"

summary=()
for dst in h2 h3 h1; do
    prev=$(last_pass "$(vm_host vm1)" vm1)
    ns_migrate vm1 "$dst"
    guest_continues "$dst" vm1 "$prev"
    summary+=("$NS_SRC->$dst ${MIG_MS}ms")
done

# a powered-off VM moves without a live migration: defined on h2, gone from h1
ferry vm stop vm1 >"$TMP/stop.out" 2>&1 || fail "ferry vm stop vm1: $(cat "$TMP/stop.out")"
ferry vm migrate vm1 --host h2 >"$TMP/cold.out" 2>&1 || fail "cold move to h2: $(cat "$TMP/cold.out")"
ferry --json vm show vm1 >"$TMP/show.json" || fail "ferry vm show vm1"
python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); sys.exit(v["host"] != "h2" or v["power_state"] != "stopped")' \
    "$TMP/show.json" || fail "after the cold move: ferry vm show: $(cat "$TMP/show.json")"
forgotten h1 vm1 || fail "after the cold move h1 still has vm1: $FCODE $FBODY"
fd h2 GET /v1/vms/vm1
[ "$FCODE" = 200 ] || fail "after the cold move h2 does not have vm1: $FCODE $FBODY"
[ -z "$(vmm_hosts vm1)" ] || fail "a powered-off VM runs on $(vmm_hosts vm1)"
ferry vm start vm1 >"$TMP/start2.out" 2>&1 || fail "ferry vm start vm1 on h2: $(cat "$TMP/start2.out")"
guest_passes h2 vm1 1
in_ns vm1 h2 || fail "vm1 started on h2 is not in h2's namespace with --cpu-features"
summary+=("cold h1->h2")

ferry --json task list >"$TMP/tasks.json" || fail "ferry task list"
python3 - "$TMP/tasks.json" <<'PY' || fail "ferry task list: $(cat "$TMP/tasks.json")"
import json, sys
t = [x for x in json.load(open(sys.argv[1])) if x["kind"] == "vm.migrate"]
ok = [x for x in t if x["state"] == "success" and x["target"] == "vm1"]
live = [x for x in ok if "verify_result" in (x["result"] or {})]
sys.exit((len(ok) != 4 or len(live) != 3 or not all(x["result"]["verify_result"].startswith("match") for x in live))
         and "migrations: %s" % t)
PY
ferry task list >"$TMP/tasks.txt" 2>&1 || fail "ferry task list (text)"
echo "multihost $BACKEND: ${summary[*]}; the tasks:"
cat "$TMP/tasks.txt"
