#!/bin/bash
# migrate-limits.sh sqlite|pg: admission of migrations. Host s's migration
# link is labelled 1 GbE (at most 4 migrations at once), t's 10 GbE (8).
# 12 VMs on s are asked to move to t at once (10 normal, then 2 high
# priority), with 16 task workers: the task list, sampled every 100 ms
# meanwhile, never shows more than 4 running, and does show 4 running with
# more queued; every task completes, each VM then runs exactly once, on t,
# as the inventory says; the high-priority tasks started before every
# normal one still queued when they came. Skipped without FERRYD or /dev/kvm.
# shellcheck source=tests/center/lib.sh
. "$(dirname "$0")/lib.sh"
: "${GUEST_DIR:?GUEST_DIR is not set (run through meson test)}"
need_ferryd

N=12
manager_up
hosts_add 1000 s
hosts_add 10000 t
for i in $(seq $N); do vm_run s "l$i" 256 "mib=128 rate=4000 report_ms=0"; done
refresh s

# The sampler: "running queued" of the vm.migrate tasks, one line per 100 ms.
python3 - "$PORT" "$ADMIN" "$TMP/tls/ca.pem" "$TMP/samples" "$TMP/stop" <<'PY' &
import http.client, json, os, ssl, sys, time
port, token, ca, out, stop = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
with open(out, "w") as f:
    while not os.path.exists(stop):
        c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=10)
        c.request("GET", "/v1/tasks?limit=1000", headers={"Authorization": "Bearer " + token})
        tasks = [t for t in json.loads(c.getresponse().read()) if t["kind"] == "vm.migrate"]
        c.close()
        f.write("%d %d\n" % (sum(t["state"] == "running" for t in tasks),
                             sum(t["state"] == "queued" for t in tasks)))
        f.flush()
        time.sleep(0.1)
PY
BG_PIDS+=($!)

# request_all PRIORITY VM...: the migrations to t requested at once (one
# curl each, in parallel); their task ids appended to ids, in VM order
ids=()
request_all() {
    local prio=$1 vm pids=(); shift
    for vm in "$@"; do
        curl -sS -o "$TMP/req.$vm" -w '%{http_code}' --cacert "$TMP/tls/ca.pem" \
            --resolve "ferry-center:$PORT:127.0.0.1" -H "Authorization: Bearer $ADMIN" \
            --data-binary "{\"host\": \"t\", \"priority\": \"$prio\"}" \
            "$URL/v1/vms/$vm/migrate" >"$TMP/code.$vm" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    for vm in "$@"; do
        [ "$(cat "$TMP/code.$vm")" = 202 ] || fail "migrate $vm: $(cat "$TMP/code.$vm") $(cat "$TMP/req.$vm")"
        # sed, not field: a Python start costs a second on a loaded machine
        ids+=("$(sed -n 's/^{"task":{"id":\([0-9]*\),.*/\1/p' "$TMP/req.$vm")")
    done
}
request_all normal $(seq -f 'l%g' $((N - 2)))
request_all high "l$((N - 1))" "l$N"
expect 200 GET "/v1/tasks?state=queued&limit=1000"
waiting=$(field "' '.join(str(t['id']) for t in b if t['kind'] == 'vm.migrate' and t['id'] not in (${ids[*]: -2:1}, ${ids[*]: -1}))")
t0=$(date +%s%N)
for id in "${ids[@]}"; do wait_task_for 120 "$id" success error cancelled; done
secs=$((($(date +%s%N) - t0) / 1000000))
touch "$TMP/stop"
wait_for 5 test -s "$TMP/samples" || fail "no samples of the task list"

expect 200 GET /v1/tasks?limit=1000
holds "sorted(t['state'] for t in b if t['kind'] == 'vm.migrate') == ['success'] * $N" ||
    fail "not every migration succeeded: $BODY"
read -r most full < <(python3 -c '
import sys
s = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
print(max(r for r, q in s), sum(r == 4 and q > 0 for r, q in s))' "$TMP/samples")
[ "$most" -le 4 ] || fail "$most migrations ran at once from a 1 GbE host (at most 4): $(tr '\n' ' ' <"$TMP/samples")"
[ "$full" -gt 0 ] || fail "no sample with 4 running and more queued: $(tr '\n' ' ' <"$TMP/samples")"
# high priority first: each normal task still queued after the high ones
# came started no earlier than both of them
for id in $waiting; do
    for h in "${ids[@]: -2}"; do
        holds "[t for t in b if t['id'] == $h][0]['started'] <= [t for t in b if t['id'] == $id][0]['started']" ||
            fail "normal task $id started before high-priority task $h: $BODY"
    done
done
for i in $(seq $N); do
    [ "$(single_host "l$i")" = t ] || fail "l$i runs on $(vmm_hosts "l$i")"
    [ "$(vm_host "l$i")" = t ] || fail "the inventory has l$i on $(vm_host "l$i")"
done
echo "$T_NAME: $N migrations in ${secs}ms, at most $most at once ($full samples at the limit with more queued), queued behind the high ones: $(wc -w <<<"$waiting")"
exit 0
