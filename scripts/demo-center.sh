#!/bin/bash
# Ferry's manager demo: one ferry-center (SQLite), two hosts (ferryd on
# loopback addresses 127.0.0.11 and 127.0.0.12) enrolled under its CA, and a
# micro-guest created, started and live-migrated by name with `ferry`, the
# way an operator drives a cluster (docs/center.md, docs/cli.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
CENTER=build/center/ferry-center FERRYD=build/agent/ferryd VMM=$PWD/build/vmm/ferry-vmm
FERRY=build/cli/ferry GUEST=$PWD/build/guests/dirtier.elf
T=$(mktemp -d /tmp/ferry-demo-center.XXXXXX)
PIDS=()
# VMs outlive their ferryd by design: stop what the demo started, then the daemons
cleanup() {
    for f in "$T"/h*/state/vms/*/vmm.pid; do
        [ -f "$f" ] && kill "$(cut -d' ' -f1 "$f")" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo-center: $*" >&2; exit 1; }

say "1. start the manager on SQLite; it makes the cluster CA and prints the first admin token"
$CENTER --db "sqlite:$T/center.db" --listen 127.0.0.10:0 --tls-dir "$T/tls" --state-dir "$T/state" \
    >"$T/center.out" 2>"$T/center.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'serving HTTPS on' "$T/center.err" && break; sleep 0.1; done
PORT=$(sed -n 's/.*serving HTTPS on 127.0.0.10:\([0-9]*\)$/\1/p' "$T/center.err")
[ -n "$PORT" ] || die "ferry-center did not start: $(tail -n 3 "$T/center.err")"
export FERRY_CENTER=https://127.0.0.10:$PORT FERRY_CA=$T/tls/ca.pem
FERRY_TOKEN=$(sed -n 's/^bootstrap admin token: //p' "$T/center.out")
export FERRY_TOKEN
echo "FERRY_CENTER=$FERRY_CENTER FERRY_CA=$FERRY_CA FERRY_TOKEN=${FERRY_TOKEN:0:8}..."
$FERRY cluster create c1

# enrol NAME ADDRESS: the host fetches its identity with a one-time token
# (the first two steps of docs/center.md, with curl), starts ferryd, and is
# added by address with `ferry host add`
enrol() {
    local name=$1 addr=$2 dir=$T/$1 tok
    mkdir -p "$dir/tls" "$dir/state"
    tok=$(curl -sS --cacert "$FERRY_CA" --resolve "ferry-center:$PORT:127.0.0.10" \
        -H "Authorization: Bearer $FERRY_TOKEN" -d "{\"host_name\": \"$name\"}" \
        "https://ferry-center:$PORT/v1/enrolments" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    curl -sS --cacert "$FERRY_CA" --resolve "ferry-center:$PORT:127.0.0.10" -d "{\"token\": \"$tok\"}" \
        "https://ferry-center:$PORT/v1/enrol" | python3 -c '
import json, os, sys
r = json.load(sys.stdin)
for f in ("ca", "cert", "key"):
    with open(os.path.join(sys.argv[1], f + ".pem"), "w", opener=lambda p, fl: os.open(p, fl, 0o600)) as o:
        o.write(r[f + "_pem"])' "$dir/tls"
    cat >"$dir/ferryd.json" <<JSON
{"host_name": "$name", "listen": "$addr:8443", "state_dir": "$dir/state", "tls_dir": "$dir/tls",
 "ferry_vmm": "$VMM", "migration_interfaces": [{"address": "$addr", "nic": "lo", "speed_mbps": 10000}]}
JSON
    $FERRYD --config "$dir/ferryd.json" >"$dir/ferryd.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q 'serving' "$dir/ferryd.log" && break; sleep 0.1; done
    $FERRY host add "$addr:8443" --cluster c1 --token "$tok"
}

say "2. enrol two hosts, h1 on 127.0.0.11 and h2 on 127.0.0.12, and add them by address"
enrol h1 127.0.0.11
enrol h2 127.0.0.12
$FERRY host list

say "3. create a VM on h1 from a ferryd spec (a micro-guest that rewrites 16 MiB and checks it), start it by name"
echo "{\"vcpus\": 1, \"memory_mib\": 128, \"boot\": {\"kernel\": \"$GUEST\", \"cmdline\": \"mib=16 report_ms=500\"}}" \
    >"$T/vm1.json"
$FERRY vm create vm1 --host h1 --spec "$T/vm1.json"
$FERRY vm start vm1
$FERRY vm list
passes() { grep -c 'dirtier pass=' "$T/$1/state/vms/vm1/console.log" 2>/dev/null || true; }
for _ in $(seq 100); do [ "$(passes h1)" -gt 1 ] && break; sleep 0.1; done
[ "$(passes h1)" -gt 1 ] || die "the guest does not run on h1"
grep 'dirtier pass=' "$T/h1/state/vms/vm1/console.log" | tail -n 1

say "4. live-migrate it by name to h2"
$FERRY vm migrate vm1 --host h2 || die "the migration failed"
$FERRY vm list
$FERRY --json vm show vm1 | python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(v["host"] != "h2" or v["power_state"] != "running")' ||
    die "the inventory does not have vm1 running on h2 after the migration"

say "5. the tasks that did it"
$FERRY task list
$FERRY vm stop vm1 >/dev/null
say "done: see docs/center.md and docs/cli.md"
