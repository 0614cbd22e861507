#!/bin/bash
# checks.sh sqlite|pg: CPU baselines and the pre-migration checks with two
# real ferryd whose configurations differ: h1 has a datastore and a port
# group h2 lacks, and h2's migration interface is labelled 100 Mbit/s.
# Baselines: a host lacking a baseline feature cannot join and is told
# which; "common" is computed from the members; a baseline a member lacks
# is refused and changes nothing. Checks: POST /v1/vms/NAME/checks names
# each problem with its own check and reason, warnings do not count, and a
# running VM started with the baseline is checked for its link too.
# shellcheck source=tests/center/lib.sh
. "$(dirname "$0")/lib.sh"
need_ferryd
: "${GUEST_DIR:?GUEST_DIR is not set (run through meson test)}"

manager_up 2

enrol h1
ET1=$ET
FD_NETWORKS='{"name": "vm-net", "bridge": "brnone-h1"}, {"name": "dmz", "bridge": "brnone-dmz"}'
ferryd_start h1 "$TMP/h1/tls" "$TMP/shared" "$TMP/local1"
P1=$FPORT
enrol h2
ET2=$ET
FD_NETWORKS= FD_MBPS=100 ferryd_start h2 "$TMP/h2/tls" "$TMP/shared" "$TMP/local2"
P2=$FPORT

# ---- baselines ----
expect 400 PUT /v1/clusters/c1/baseline '{"mode": "all"}'
expect 400 PUT /v1/clusters/c1/baseline '{"features": []}'
expect 400 PUT /v1/clusters/c1/baseline '{"features": ["fpu", "fpu"]}'
expect 400 PUT /v1/clusters/c1/baseline '{"features": ["fpu"], "mode": "common"}'
expect 400 PUT /v1/clusters/c1/baseline '{"features": ["fpu"], "colour": 1}'
expect 404 PUT /v1/clusters/nope/baseline '{"mode": "common"}'
expect 405 GET /v1/clusters/c1/baseline
expect 409 PUT /v1/clusters/c1/baseline '{"mode": "common"}'   # no hosts yet
holds '"no hosts" in b["error"]' || fail "common baseline of no hosts: $BODY"

# a host lacking a baseline feature is refused, told which
expect 200 PUT /v1/clusters/c1/baseline '{"features": ["fpu", "sse2", "avx9000"]}'
add_host "127.0.0.1:$P1" "$ET1"
holds 'b["state"] == "error" and "lacks 1 CPU feature of cluster c1'"'"'s baseline: avx9000" in b["error"]' ||
    fail "a host lacking a baseline feature: $BODY"
expect 404 GET /v1/hosts/h1
expect 200 DELETE /v1/clusters/c1/baseline
add_host "127.0.0.1:$P1" "$ET1"
[ "$(field .state)" = success ] || fail "adding h1 failed: $BODY"
add_host "127.0.0.1:$P2" "$ET2"
[ "$(field .state)" = success ] || fail "adding h2 failed: $BODY"

# common: what every member has (here one machine's CPU, so h1's list)
expect 200 PUT /v1/clusters/c1/baseline '{"mode": "common"}'
api GET /v1/hosts/h1
H1_FEATURES=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["facts"]["cpu"]["kvm_features"]))' "$BODY")
expect 200 GET /v1/clusters/c1
holds "b['baseline'] == $H1_FEATURES and len(b['baseline']) > 10" || fail "common baseline: $BODY"
# a baseline a member lacks is refused, naming host and features; nothing changes
expect 409 PUT /v1/clusters/c1/baseline '{"features": ["fpu", "avx9000", "sse9"]}'
holds '"host h1 of the cluster lacks 2 baseline features: avx9000, sse9" in b["error"]' ||
    fail "baseline a member lacks: $BODY"
expect 200 GET /v1/clusters/c1
holds "b['baseline'] == $H1_FEATURES" || fail "a refused baseline changed the cluster: $BODY"

# ---- pre-migration checks ----
# vmok: on the shared datastore and vm-net (which h2 has, without a bridge: powered off, a warning)
define_vm h1 '{"name": "vmok", "memory_mib": 64, "boot": {"kernel": "/k.elf"},
    "disks": [{"datastore": "ds0", "path": "ok.img"}], "nics": [{"portgroup": "vm-net"}]}'
# vmbad: a local disk, a port group h2 lacks, host-local CD-ROM media, CPU affinity
define_vm h1 '{"name": "vmbad", "memory_mib": 64, "boot": {"kernel": "/k.elf"},
    "disks": [{"datastore": "ds1", "path": "bad.img"}], "nics": [{"portgroup": "dmz"}],
    "cdrom": {"host_path": "/srv/iso/x.iso"}, "cpu_affinity": [0]}'
# vmrun: a running micro-guest (the dirtier, slowed down) started with the cluster's baseline
define_vm h1 '{"name": "vmrun", "memory_mib": 32, "boot": {"kernel": "'"$GUEST_DIR/dirtier.elf"'", "cmdline": "mib=1 rate=100"},
    "cpu_features": '"$H1_FEATURES"'}'
fd h1 POST /v1/vms/vmrun/start
[ "$FCODE" = 200 ] || fail "vmrun did not start: $FBODY"
VMM_PID=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$FBODY")
BG_PIDS+=("$VMM_PID")
tr '\0' ' ' <"/proc/$VMM_PID/cmdline" | grep -q -- "--cpu-features fpu," ||
    fail "ferryd did not pass the baseline to ferry-vmm: $(tr '\0' ' ' <"/proc/$VMM_PID/cmdline")"
expect 202 POST /v1/hosts/h1/refresh
wait_task "$(field .task.id)" success error

expect 200 POST /v1/vms/vmok/checks '{"host": "h2"}'
holds 'b["errors"] == 0 and [(e["check"], e["level"]) for e in b["report"]] == [("nic.portgroup", "warning")]' ||
    fail "vmok to h2: $BODY"

expect 200 POST /v1/vms/vmbad/checks '{"host": "h2"}'
holds 'b["errors"] == 3 and sorted((e["check"], e["level"]) for e in b["report"]) == [
       ("cdrom.local", "error"), ("cpu.affinity", "warning"), ("datastore.shared", "error"),
       ("nic.portgroup", "error")]' || fail "vmbad to h2: $BODY"
holds '(any("datastore ds1" in e["reason"] and "which host h2 does not mount" in e["reason"] for e in b["report"])
        and any("port group dmz, which host h2 does not have" in e["reason"] for e in b["report"])
        and any("host-local media /srv/iso/x.iso" in e["reason"] for e in b["report"]))' ||
    fail "vmbad's reasons: $BODY"

expect 200 POST /v1/vms/vmrun/checks '{"host": "h2"}'
holds '(b["errors"] == 1 and b["report"][0]["check"] == "migration.interface"
        and "host h2'"'"'s fastest migration interface is 100 Mbit/s" in b["report"][0]["reason"])' ||
    fail "vmrun to h2: $BODY"

expect 200 POST /v1/vms/vmok/checks '{"host": "h1"}'
holds 'b["errors"] == 1 and b["report"][0]["check"] == "host.different"' || fail "vmok to h1: $BODY"

# bad input changes nothing and is told clearly
expect 404 POST /v1/vms/nope/checks '{"host": "h2"}'
expect 404 POST /v1/vms/vmok/checks '{"host": "h9"}'
expect 400 POST /v1/vms/vmok/checks '{}'
expect 400 POST /v1/vms/vmok/checks '{"host": "h2", "force": true}'
expect 405 GET /v1/vms/vmok/checks
fd h1 POST /v1/vms/vmrun/stop
[ "$FCODE" = 200 ] || fail "vmrun did not stop: $FBODY"
exit 0
