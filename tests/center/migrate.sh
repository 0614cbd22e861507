#!/bin/bash
# migrate.sh sqlite|pg: compute migration (vMotion) through the manager.
# Three ferryd on loopback addresses (127.0.0.1-3, certificates from the
# manager's enrolment, migration interfaces labelled 10 Gbit/s) and one
# ferry-center. A dirtier micro-guest (it rewrites and re-verifies its
# working set every pass) moves by name a -> b -> c -> a. After every hop:
# the task succeeded with the memory digest matching, the inventory names
# the new host, the VM's ferry-vmm runs on exactly that host, the source
# forgot the VM, and the guest goes on there (its pass counter continues,
# no reboot) and verifies its whole working set again. Then: a cancelled
# migration leaves the VM on its source; kill -9 of the manager
# mid-migration and kill -9 of the source's ferryd mid-migration leave the
# VM running exactly once, where the inventory says. Bad input changes
# nothing. Skipped without FERRYD or /dev/kvm.
# shellcheck source=tests/center/lib.sh
. "$(dirname "$0")/lib.sh"
: "${GUEST_DIR:?GUEST_DIR is not set (run through meson test)}"
need_ferryd

manager_up
hosts_add 10000 a b c

# the guest: 32 MiB rewritten at 8000 pages/s, verified after each pass (~1 s)
vm_run a vm1 128 "mib=32 rate=8000 report_ms=0"
refresh a
expect 200 GET /v1/vms/vm1
holds 'b["host"] == "a" and b["power_state"] == "running"' || fail "vm1 in the inventory: $BODY"
guest_passes a vm1 2

summary=()
for dst in b c a; do
    src=$(vm_host vm1) prev=$(last_pass "$src" vm1)
    t0=$(date +%s%N)
    migrate vm1 "$dst"
    wait_task_for 60 "$TASK" success error cancelled
    ms=$((($(date +%s%N) - t0) / 1000000))
    holds "b['state'] == 'success' and b['result']['host'] == '$dst' and b['result']['source'] == '$src'" ||
        fail "hop $src -> $dst: $BODY"
    holds 'b["result"]["verify_result"].startswith("match")' || fail "hop $src -> $dst: memory digest: $BODY"
    down=$(field .result.downtime_ms)
    expect 200 GET /v1/vms/vm1
    holds "b['host'] == '$dst' and b['power_state'] == 'running'" || fail "after $src -> $dst: inventory: $BODY"
    [ "$(single_host vm1)" = "$dst" ] || fail "after $src -> $dst: vm1 runs on $(vmm_hosts vm1)"
    fd "$src" GET /v1/vms/vm1
    [ "$FCODE" = 404 ] || fail "after $src -> $dst: the source still has vm1: $FCODE $FBODY"
    guest_continues "$dst" vm1 "$prev"
    summary+=("$src->$dst ${ms}ms downtime=${down}ms")
done

# ferryd's legs directly: bad input changes nothing; a VM that resumed is
# no longer incoming; an arrived VM is re-adopted by a restarted ferryd
spec='"name": "vmx", "memory_mib": 64, "boot": {"kernel": "'$GUEST_DIR/dirtier.elf'"}'
fd_expect() { local want=$1; shift; fd "$@"; [ "$FCODE" = "$want" ] || fail "ferryd $1: $2 $3: $FCODE, want $want: $FBODY"; }
fd_expect 400 b POST /v1/vms/vmx/incoming "{\"spec\": {$spec}, \"colour\": 1}"
fd_expect 400 b POST /v1/vms/vmx/incoming "{\"spec\": {$spec, \"vcpus\": 0}}"
fd_expect 400 b POST /v1/vms/vmy/incoming "{\"spec\": {$spec}}"
fd_expect 400 b POST /v1/vms/vmx/incoming "{\"spec\": {$spec, \"disks\": [{\"datastore\": \"nope\", \"path\": \"x\"}]}}"
fd_expect 400 b POST /v1/vms/vmx/incoming "{\"spec\": {$spec}, \"interface\": \"10.9.9.9\"}"
fd_expect 400 b POST /v1/vms/vmx/incoming '{"spec": {"name": "vmx"'
fd_expect 404 b GET /v1/vms/vmx
fd_expect 409 a POST /v1/vms/vm1/incoming "{\"spec\": {$spec, \"name\": \"vm1\"}}"
fd_expect 409 a POST /v1/vms/vm1/incoming/abort
fd_expect 409 a DELETE /v1/vms/vm1/incoming
fd_expect 400 a POST /v1/vms/vm1/migrate '{"to": "127.0.0.2:1", "colour": 1}'
fd_expect 400 a POST /v1/vms/vm1/migrate '{"to": "127.0.0.2:1", "streams": 99}'
fd_expect 400 a POST /v1/vms/vm1/migrate '{"to": "127.0.0.2:1", "priority": "urgent"}'
fd_expect 400 a POST /v1/vms/vm1/migrate '{}'
fd_expect 409 a POST /v1/vms/vm1/migration/cancel
fd_expect 404 a GET /v1/vms/nope/migration
fd_expect 405 a GET /v1/vms/vm1/migrate
fd_expect 200 a GET /v1/vms/vm1/migration
pid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$(fd a GET /v1/vms/vm1; echo "$FBODY")")
kill -KILL "${FD_PID[a]}"
ferryd_run a
fd_expect 200 a GET /v1/vms/vm1
python3 -c 'import json,sys; b=json.loads(sys.argv[1]); sys.exit(b["state"] != "running" or b["pid"] != int(sys.argv[2]))' \
    "$FBODY" "$pid" || fail "a's restarted ferryd did not re-adopt vm1 (pid $pid): $FBODY"
[ "$(single_host vm1)" = a ] || fail "vm1 runs on $(vmm_hosts vm1) after a's ferryd restarted"
guest_continues a vm1 -

# cancel: the VM stays on its source, the destination forgets its leg.  The
# guest's pages compress about 140x (auto compression), so the move can end
# before the cancel arrives: a cancel that late loses, and the migration must
# then be whole (the VM on b, once); it comes back and the test tries again.
vm_run a big 512 "mib=384 rate=40000 report_ms=0"
refresh a
guest_passes a big 1
extra=0
for try in 1 2 3; do
    migrate big b
    wait_phase "$TASK" precopy
    expect 200 POST "/v1/tasks/$TASK/cancel"
    wait_task_for 30 "$TASK" success error cancelled
    state=$(field .state)
    [ "$state" = success ] || break
    expect 200 GET /v1/vms/big
    holds 'b["host"] == "b"' || fail "a cancel that came too late: inventory: $BODY"
    [ "$(single_host big)" = b ] || fail "a cancel that came too late: big runs on $(vmm_hosts big)"
    summary+=("cancel-too-late-$try")
    migrate big a
    wait_task_for 60 "$TASK" success error cancelled
    [ "$(field .state)" = success ] || fail "big back to a: $BODY"
    extra=$((extra + 2))
done
[ "$state" = cancelled ] || fail "cancelled migration (try $try): state $state"
expect 200 GET /v1/vms/big
holds 'b["host"] == "a"' || fail "after the cancel: inventory: $BODY"
[ "$(single_host big)" = a ] || fail "after the cancel big runs on $(vmm_hosts big)"
fd b GET /v1/vms/big
[ "$FCODE" = 404 ] || fail "after the cancel b still has big: $FCODE $FBODY"
guest_continues a big -

# bad input changes nothing
expect 404 POST /v1/vms/nope/migrate '{"host": "b"}'
expect 404 POST /v1/vms/big/migrate '{"host": "nope"}'
expect 400 POST /v1/vms/big/migrate '{"host": "b", "colour": "red"}'
expect 400 POST /v1/vms/big/migrate '{"host": "b", "priority": "urgent"}'
expect 400 POST /v1/vms/big/migrate '{"host": 7}'
expect 405 GET /v1/vms/big/migrate
api POST /v1/vms/big/migrate '{"host": "a"}'
[ "$CODE" = 409 ] && holds 'any(c["level"] == "error" and "already" in c["reason"] for c in b["checks"])' ||
    fail "a migration to the VM's own host: $CODE $BODY"
expect 200 GET /v1/tasks
holds "sum(t['kind'] == 'vm.migrate' for t in b) == 4 + $extra" || fail "a refused request made a task: $BODY"

# kill -9 of the manager mid-migration: after the restart the task resumes
# from what the hosts say, and the inventory names where the VM runs
migrate big c
wait_phase "$TASK" precopy
center_kill9
center_start --workers 16
wait_task_for 60 "$TASK" success error cancelled
where=$(single_host big)
expect 200 GET /v1/vms/big
holds "b['host'] == '$where'" || fail "after the manager's restart big runs on '$where': $BODY"
summary+=("manager-kill9: big on $where")

# kill -9 of the source's ferryd mid-migration: the VM runs exactly once
src=$where dst=$( [ "$where" = c ] && echo b || echo c ) prev=$(last_pass "$where" big)
migrate big "$dst"
wait_phase "$TASK" precopy
kill -KILL "${FD_PID[$src]}"
wait_task_for 60 "$TASK" success error cancelled
ferryd_run "$src"
where=$(single_host big)
expect 200 GET /v1/vms/big
holds "b['host'] == '$where'" || fail "after the source ferryd's kill -9 big runs on '$where': $BODY"
other=$( [ "$where" = "$src" ] && echo "$dst" || echo "$src" )
wait_for 10 forgotten "$other" big || fail "$other still lists big: $FBODY"
guest_continues "$where" big "$( [ "$where" = "$src" ] && echo - || echo "$prev")"
summary+=("ferryd-kill9: big on $where")

echo "$T_NAME: ${summary[*]}"
exit 0
