#!/bin/bash
# Lab test, the manager and the host agents running a stock Linux guest: the
# same ferry-center (SQLite) and ferryd binaries as tests/center/multihost.sh,
# with two hosts as network namespaces inside L1 (tests/center/lib.sh's
# ns_hosts_up: a management network for ferryd's API, a migration network),
# driven by the operator's CLI.
#   - `ferry host add` joins both hosts, `ferry cluster set-baseline --common`
#     gives the cluster a CPU baseline (EVC);
#   - `ferry vm create --spec` defines a Debian guest on h1 (the lab's kernel,
#     a busybox initramfs, 1 vCPU, 256 MiB; t-linux-migrate moves 2 vCPUs);
#     `ferry vm start` boots it; its /init prints "C <n> <uptime>" every 0.1 s;
#   - `ferry vm migrate vm1 --host h2`, then back to h1, by name.
# Asserted: after each hop the inventory names the host and the VM runs;
# exactly one ferry-vmm runs it, in that host's namespace, with the baseline;
# the guest counts on there. Over the whole run the consoles (copied as they
# are written: an agent removes a VM's directory when the VM has left) show
# the counter 1, 2, 3, ... with no restart, gap or duplicate; the guest's
# uptime never goes back, and across each switchover it steps at most 5 s
# (before it the vCPUs may be slowed: the lab moves pages at ~16 MB/s). The
# two migration tasks succeeded with a matching memory digest. `ferry vm
# stop` ends the VM.
#   BUILD              build directory (default "build")
#   FERRY_L2_TIMEOUT   seconds for the guest to boot, to counter line 20 (default 150)
# Runs inside L1 (tests/lab/run.sh).

set -u -o pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/../.." || exit 1
BUILD=$(realpath -m -- "${BUILD:-build}")
eval "$(lab/lab.sh info)"
# LAB_LINUX_APPEND; tests/center/lib.sh then brings its own wait_for (SECONDS CMD...)
. tests/lab/lib.sh
export FERRY_CENTER=$BUILD/center/ferry-center FERRYD=$BUILD/agent/ferryd
export FERRY_VMM=$BUILD/vmm/ferry-vmm FERRY_CLI=$BUILD/cli/ferry
for f in "$FERRY_CENTER" "$FERRYD" "$FERRY_VMM" "$FERRY_CLI"; do
    [ -x "$f" ] || { echo "t-center-migrate: no $f (build first)" >&2; exit 1; }
done
# shellcheck source=tests/center/lib.sh
. tests/center/lib.sh sqlite
need_netns

# ---- the guest ----
cat >"$TMP/init.sh" <<'EOF'
( n=0; while :; do n=$((n + 1)); read -r up _ < /proc/uptime; echo "C $n $up"; sleep 0.1; done ) &
while :; do sleep 3600; done
EOF
lab/lab.sh mkinitrd "$TMP/initrd.cpio" "$TMP/init.sh" || fail "lab.sh mkinitrd failed"

# mark HOST: remember how long vm1's console on HOST is now (0: none), before
# the VM starts or arrives there (the file is opened O_APPEND);
# follow HOST: copy it from there to $TMP/con-<n> as it is written (tail -f
# follows the file, not the name: it reads what the VMM wrote even after the
# agent removed the file)
cons=() tails=() mark=0
mark() { mark=$(stat -c %s "$(console "$1" vm1)" 2>/dev/null || echo 0); }
follow() {
    local c; c=$(console "$1" vm1)
    wait_for 10 test -e "$c" || fail "no console file $c"
    cons+=("$TMP/con-${#cons[@]}")
    tail -c +$((mark + 1)) -f "$c" >"${cons[-1]}" 2>/dev/null &
    tails=($!)
    tail -n +1 -f "${c%/*}/vmm.log" >"$TMP/vmm-${#cons[@]}.log" 2>/dev/null &   # (for dump)
    tails+=($!)
    BG_PIDS+=("${tails[@]}")
}
unfollow() { sleep 1; kill "${tails[@]}" 2>/dev/null; wait "${tails[@]}" 2>/dev/null; }
# last_c FILE: the last counter value in FILE (0: none)
last_c() { local n; n=$(grep -aoE '^C [0-9]+ ' "$1" | tail -n1 | cut -d' ' -f2); echo "${n:-0}"; }
counter_at() { [ "$(last_c "${cons[-1]}")" -ge "$1" ]; }
# dump: the consoles' and VMMs' last lines, before failing (fail calls it)
dump() {
    local f
    for f in "${cons[@]}" "$TMP"/vmm-*.log "$TMP"/h?/ferryd.log; do
        [ -s "$f" ] || continue
        echo "---- ${f#"$TMP"/} (last 15 lines) ----" >&2
        tail -n 15 "$f" | tr -d '\r' >&2
    done
}
FAIL_DUMP=dump

# ---- the system ----
manager_up
export FERRY_CENTER=https://127.0.0.1:$PORT FERRY_TOKEN=$ADMIN FERRY_CA=$TMP/tls/ca.pem
ferry() { "$FERRY_CLI" "$@"; }
ns_hosts_up 2
for h in h1 h2; do ns_host_add "$h"; done
ferry cluster set-baseline c1 --common >"$TMP/baseline.out" 2>&1 ||
    fail "ferry cluster set-baseline c1 --common: $(cat "$TMP/baseline.out")"

cat >"$TMP/vm1.json" <<JSON
{"name": "vm1", "memory_mib": 256, "vcpus": 1,
 "boot": {"kernel": "$VMLINUZ", "initrd": "$TMP/initrd.cpio", "cmdline": "$LAB_LINUX_APPEND"}}
JSON
ferry vm create vm1 --host h1 --spec "$TMP/vm1.json" >"$TMP/create.out" 2>&1 ||
    fail "ferry vm create: $(cat "$TMP/create.out")"
# An L2 whose console stays empty is the nested lab's occasional boot hang
# (tests/lab/t-linux-boot.sh): that, and only that, is tried once more.
t0=$(date +%s%N)
for try in 1 2; do
    mark h1
    ferry vm start vm1 >"$TMP/start.out" 2>&1 || fail "ferry vm start: $(cat "$TMP/start.out")"
    follow h1
    wait_for "${FERRY_L2_TIMEOUT:-150}" counter_at 20 && break
    [ "$try" = 1 ] && [ ! -s "${cons[-1]}" ] ||
        fail "the guest did not count to 20 in ${FERRY_L2_TIMEOUT:-150} s"
    echo "t-center-migrate: the guest printed nothing in ${FERRY_L2_TIMEOUT:-150} s (a lab L2 boot hang); booting again" >&2
    lab_vcpus "$(dirname "$(console h1 vm1)")/control.sock"
    ferry vm stop vm1 >"$TMP/stop.out" 2>&1 || fail "ferry vm stop: $(cat "$TMP/stop.out")"
    unfollow
    cons=()
done
summary=("boot $((($(date +%s%N) - t0) / 1000000))ms")
in_ns vm1 h1 || fail "vm1's ferry-vmm is not in h1's namespace with the cluster's --cpu-features"

for dst in h2 h1; do
    mark "$dst"
    ns_migrate vm1 "$dst"
    unfollow
    before=$(last_c "${cons[-1]}")
    follow "$dst"
    wait_for 60 counter_at $((before + 20)) || fail "after $NS_SRC -> $dst: the guest did not count on from $before"
    summary+=("$NS_SRC->$dst ${MIG_MS}ms")
done

ferry --json task list >"$TMP/tasks.json" || fail "ferry task list"
python3 - "$TMP/tasks.json" <<'PY' || fail "ferry task list: $(cat "$TMP/tasks.json")"
import json, sys
t = [x for x in json.load(open(sys.argv[1])) if x["kind"] == "vm.migrate" and x["target"] == "vm1"]
ok = [x for x in t if x["state"] == "success" and x["result"]["verify_result"].startswith("match")]
for x in ok:
    print("t-center-migrate: task %s: %s .. %s, downtime %s ms, total %s ms" % (
        x["id"], x["started"], x["finished"], x["result"]["downtime_ms"], x["result"]["total_ms"]))
sys.exit(len(t) != 2 or len(ok) != 2)
PY

# the counter over the whole run, across both switchovers: the bytes join up
cat "${cons[@]}" | tr -d '\r' >"$TMP/console.all"
for f in "${cons[@]::${#cons[@]}-1}"; do last_c "$f"; done >"$TMP/hops"   # the last count before each hop
python3 - "$TMP/console.all" "$TMP/hops" <<'PY' || fail "the guest's counter across the migrations is wrong"
import re, sys
c = [(int(n), float(u)) for n, u in re.findall(r'^C (\d+) (\d+\.\d+)$', open(sys.argv[1]).read(), re.M)]
ns = [n for n, _ in c]
if ns != list(range(1, len(ns) + 1)):
    bad = next(i for i, n in enumerate(ns) if n != i + 1)
    sys.exit("counter lines %s ... around %d" % (ns[max(0, bad - 2):bad + 3], bad + 1))
steps = [b[1] - a[1] for a, b in zip(c, c[1:])]
hops = [int(x) for x in open(sys.argv[2]).read().split()]
across = [steps[n - 1] for n in hops if 0 < n < len(c)]
print("t-center-migrate: counter 1..%d; uptime steps across the switchovers (after C %s): %s s; largest: %.2f s"
      % (len(ns), hops, ", ".join("%.2f" % x for x in across), max(steps)))
if min(steps) < 0:
    sys.exit("the guest's uptime went back by %.2f s" % -min(steps))
if len(across) != len(hops) or max(across) > 5:
    sys.exit("an uptime step across a switchover is over 5 s, or a switchover is missing")
PY
ferry vm stop vm1 >"$TMP/stop.out" 2>&1 || fail "ferry vm stop vm1: $(cat "$TMP/stop.out")"
no_vmm() { [ -z "$(vmm_hosts vm1)" ]; }
wait_for 10 no_vmm || fail "vm1 still runs on $(vmm_hosts vm1) after ferry vm stop"
echo "t-center-migrate: ${summary[*]}"
sed -n 's/^ferry-vmm: migration to .* completed: /t-center-migrate: migration: /p' "$TMP"/vmm-*.log
