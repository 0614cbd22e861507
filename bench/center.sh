#!/bin/bash
# bench/center.sh - the manager's own costs (issue 9), on SQLite, informational:
#   1. inventory queries with 100 hosts and 2,000 VMs registered: p50/p99 of GET
#      /v1/hosts, /v1/vms, /v1/hosts/NAME, /v1/vms/NAME and POST /v1/vms/NAME/checks, each
#      on one kept-alive HTTPS connection (what a UI or a script polling the API pays).
#      The inventory is one real ferryd's host and VM, cloned in the database;
#   2. from the migrate request (`ferry vm migrate NAME --host H`) to the first page on
#      the wire (the source's migrate-status shows bytes sent), 5 times;
#   3. 64 migrations requested at once from a host labelled 1 GbE (4 at a time):
#      until all succeeded, the most running at once, and each task's time.
# Env (set by meson): FERRY_CENTER, FERRYD, FERRY_VMM, FERRY_CLI, GUEST_DIR, SRC.
set -u -o pipefail
here=$(dirname "$(realpath "$0")")
# shellcheck source=tests/center/lib.sh
. "$here/../tests/center/lib.sh" sqlite
need_ferryd
manager_up
hosts_add 1000 a b
export FERRY_CENTER=https://127.0.0.1:$PORT FERRY_TOKEN=$ADMIN FERRY_CA=$TMP/tls/ca.pem

# ---- 1. inventory queries ----
vm_run a vm1 32 "mib=1 rate=100"
refresh a
python3 - "$TMP/center.db" <<'PY' || fail "cannot clone the inventory"
import sqlite3, sys, uuid
db = sqlite3.connect(sys.argv[1], timeout=10)
c = db.cursor()
h = c.execute("SELECT address, cluster_id, state, facts, added, updated FROM hosts WHERE name = 'a'").fetchone()
v = c.execute("SELECT power_state, spec, updated FROM vms WHERE name = 'vm1'").fetchone()
for i in range(100):
    c.execute("INSERT INTO hosts (name, address, cluster_id, state, facts, added, updated) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)", ("h%03d" % i, "10.1.%d.%d:8443" % (i // 250, i % 250),) + h[1:])
    hid = c.lastrowid
    for ds in c.execute("SELECT name, uuid, path, accessible, capacity_bytes, free_bytes FROM datastores "
                        "WHERE host_id = (SELECT id FROM hosts WHERE name = 'a')").fetchall():
        c.execute("INSERT INTO datastores VALUES (?, ?, ?, ?, ?, ?, ?)", (hid,) + ds)
    for j in range(20):
        c.execute("INSERT INTO vms (name, uuid, host_id, power_state, spec, updated) VALUES (?, ?, ?, ?, ?, ?)",
                  ("vm%03d-%02d" % (i, j), str(uuid.uuid4()), hid) + v)
db.commit()
PY
python3 - "$PORT" "$ADMIN" "$TMP/tls/ca.pem" <<'PY' || fail "inventory queries"
import http.client, json, ssl, sys, time
port, token, ca = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
hdr = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def run(label, method, path, body=None, n=200):
    t = []
    for i in range(n):
        p = path(i) if callable(path) else path
        t0 = time.perf_counter()
        conn.request(method, p, body=body, headers=hdr)
        r = conn.getresponse()
        data = r.read()
        t.append((time.perf_counter() - t0) * 1e3)
        if r.status != 200:
            sys.exit("%s %s: HTTP %d %s" % (method, p, r.status, data[:200]))
    t.sort()
    print("center-bench: %-34s p50 %7.2f ms  p99 %7.2f ms  (%d requests, %d bytes each)"
          % (label, t[len(t) // 2], t[min(len(t) - 1, int(len(t) * 0.99))], n, len(data)))
hosts = json.loads((conn.request("GET", "/v1/hosts", headers=hdr), conn.getresponse().read())[1])
vms = json.loads((conn.request("GET", "/v1/vms", headers=hdr), conn.getresponse().read())[1])
print("center-bench: inventory: %d hosts, %d VMs" % (len(hosts), len(vms)))
run("GET /v1/hosts", "GET", "/v1/hosts", n=50)
run("GET /v1/vms", "GET", "/v1/vms", n=50)
run("GET /v1/hosts/NAME", "GET", lambda i: "/v1/hosts/h%03d" % (i % 100))
run("GET /v1/vms/NAME", "GET", lambda i: "/v1/vms/vm%03d-%02d" % (i % 100, i % 20))
run("POST /v1/vms/NAME/checks", "POST", lambda i: "/v1/vms/vm%03d-%02d/checks" % (i % 100, i % 20),
    body=json.dumps({"host": "h050"}))
PY

# ---- 2. from the request to the first page on the wire ----
vm_run a mv 128 "mib=32 rate=1000 report_ms=0"
refresh a
firsts=()
for hop in b a b a b; do
    src=$(vm_host mv)
    t0=$(date +%s%N)
    "$FERRY_CLI" vm migrate mv --host "$hop" >"$TMP/mig.out" 2>&1 &
    cli=$!
    until fd "$src" GET /v1/vms/mv/migration && [ "$FCODE" = 200 ] &&
          python3 -c 'import json,sys; sys.exit(json.loads(sys.argv[1]).get("bytes_sent", 0) <= 0)' "$FBODY"; do
        kill -0 "$cli" 2>/dev/null || break
    done
    t1=$(date +%s%N)
    wait "$cli" || fail "ferry vm migrate mv --host $hop: $(cat "$TMP/mig.out")"
    firsts+=("$(((t1 - t0) / 1000000))")
done
echo "center-bench: ferry vm migrate -> first page on the wire: ${firsts[*]} ms (polled through the source's ferryd)"

# ---- 3. 64 migrations through admission ----
# light guests (a page rewritten 10 times a second): the bench measures the
# manager and its hosts, not 64 busy VMs on two cores
for i in $(seq -w 1 64); do vm_run a "q$i" 32 "mib=1 rate=10"; done
refresh a
python3 - "$PORT" "$ADMIN" "$TMP/tls/ca.pem" <<'PY' || fail "64 migrations through admission"
import http.client, json, ssl, sys, time
from datetime import datetime
port, token, ca = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
hdr = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def call(method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=hdr)
    r = conn.getresponse()
    return r.status, json.loads(r.read())
t0 = time.perf_counter()
for i in range(1, 65):
    st, b = call("POST", "/v1/vms/q%02d/migrate" % i, {"host": "b"})
    if st != 202:
        sys.exit("migrate q%02d: HTTP %d %s" % (i, st, b))
t_req = time.perf_counter() - t0
peak = 0
while True:
    st, tasks = call("GET", "/v1/tasks?limit=200")
    t = [x for x in tasks if x["kind"] == "vm.migrate" and x["target"].startswith("q")]
    peak = max(peak, sum(x["state"] == "running" for x in t))
    if not any(x["state"] in ("queued", "running") for x in t):
        break
    if time.perf_counter() - t0 > 600:
        sys.exit("64 migrations not done in 600 s")
    time.sleep(0.1)
total = time.perf_counter() - t0
bad = [x for x in t if x["state"] != "success"]
if bad:
    sys.exit("not all succeeded: %s" % bad[:2])
iso = lambda s: datetime.fromisoformat(s.rstrip("Z"))
d = sorted((iso(x["finished"]) - iso(x["started"])).total_seconds() * 1e3 for x in t)
print("center-bench: 64 migrations through admission: requested in %.2f s, all done in %.1f s, at most %d running "
      "at once (limit 4); each task p50 %.0f ms, p99 %.0f ms" % (t_req, total, peak, d[len(d) // 2], d[-1]))
sys.exit(peak > 4 and "admission let %d migrations run at once from a 1 GbE host" % peak)
PY
