#!/bin/bash
# api.sh sqlite|pg: ferry-center end to end over HTTPS on one database
# backend (a private PostgreSQL server for pg):
#   - the schema is created from empty; the bootstrap admin token is printed
#     once, at the first start only;
#   - no, a malformed or a wrong token: 401; a readonly token: 403 on a
#     change; neither changes anything;
#   - clusters, enrolment (the manager issues the host's certificate),
#     bad input (malformed JSON, unknown fields, wrong types, bad names,
#     unknown cluster/host/task/VM: 400/404), each a one-line error with
#     nothing changed;
#   - tasks: host add to a host that never answers runs until cancelled;
#     kill -9 of the manager mid-task: at restart the running task is error
#     "manager restarted", the queued one runs, and finished tasks and
#     events are all still there.
# shellcheck source=tests/center/lib.sh
. "$(dirname "$0")/lib.sh"

db_setup
center_start --workers 1
ADMIN=$(sed -n 's/^bootstrap admin token: //p' "$TMP/center.out")
[[ $ADMIN == fc_* ]] || fail "no bootstrap admin token on stdout: $(cat "$TMP/center.out")"

# --- authentication and roles ---------------------------------------------
expect_as "" 401 GET /v1/clusters
expect_as "" 401 POST /v1/clusters '{"name": "c0"}'
expect_as "fc_0000" 401 GET /v1/clusters
expect_as "fc_0000" 401 POST /v1/clusters '{"name": "c0"}'
expect_as "" 401 GET /v1/nowhere   # no token: 401 before any 404
api_as "" GET /v1/clusters
args=(-sS -o /dev/null -w '%{http_code}' --cacert "$TMP/tls/ca.pem" --resolve "ferry-center:$PORT:127.0.0.1")
[ "$(curl "${args[@]}" -H "Authorization: Basic $ADMIN" "$URL/v1/clusters")" = 401 ] ||
    fail "a Basic Authorization header was not refused"
RO=$("$FERRY_CENTER" token create --db "$DBURL" --role readonly --description test) ||
    fail "ferry-center token create failed"
expect_as "$RO" 200 GET /v1/clusters
expect_as "$RO" 403 POST /v1/clusters '{"name": "c0"}'
expect_as "$RO" 403 POST /v1/tokens '{"role": "admin"}'
expect_as "$RO" 403 POST /v1/enrolments '{"host_name": "h1"}'
expect 200 GET /v1/clusters
[ "$BODY" = "[]" ] || fail "a refused request created a cluster: $BODY"
expect 201 POST /v1/tokens '{"role": "readonly", "description": "second"}'
RO2=$(field .token)
expect_as "$RO2" 403 POST /v1/clusters '{"name": "c0"}'
expect 400 POST /v1/tokens '{"role": "root"}'
"$FERRY_CENTER" token create --db "$DBURL" --role root >/dev/null 2>"$TMP/tok.err" &&
    fail "token create accepted role root"
[ "$(wc -l <"$TMP/tok.err")" = 1 ] || fail "token create: not one line: $(cat "$TMP/tok.err")"

# --- clusters and bad input -----------------------------------------------
expect 201 POST /v1/clusters '{"name": "c1", "description": "first"}'
[ "$(field .name)" = c1 ] || fail "cluster create returned $BODY"
expect 409 POST /v1/clusters '{"name": "c1"}'
expect 400 POST /v1/clusters '{"name": "c2"'
expect 400 POST /v1/clusters '{"name": "c2"} x'
expect 400 POST /v1/clusters '["c2"]'
expect 400 POST /v1/clusters ''
expect 400 POST /v1/clusters '{"name": "c2", "colour": "red"}'
expect 400 POST /v1/clusters '{"name": 2}'
expect 400 POST /v1/clusters '{"name": "bad name"}'
expect 400 POST /v1/clusters '{"name": "c2", "description": 5}'
expect 400 POST /v1/clusters '{}'
expect 405 DELETE /v1/clusters
expect 200 GET /v1/clusters
holds 'len(b) == 1 and b[0]["name"] == "c1" and b[0]["description"] == "first"' ||
    fail "bad input changed the clusters: $BODY"
expect 200 GET /v1/clusters/c1
expect 404 GET /v1/clusters/nope
expect 404 GET /v1/hosts/nope
expect 404 GET /v1/vms/nope
expect 404 GET /v1/tasks/999
expect 404 POST /v1/tasks/999/cancel
expect 404 GET /v1/nowhere
expect 400 GET '/v1/tasks?state=done'
expect 400 GET '/v1/events?limit=0'
expect 400 GET '/v1/events?since=x'

# a PostgreSQL restart (failover): the manager reconnects
if [ "$BACKEND" = pg ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w restart >>"$TMP/pg.log" 2>&1 ||
        fail "pg_ctl restart failed"
    expect 200 GET /v1/clusters/c1
    expect 201 POST /v1/clusters '{"name": "c-after-restart"}'
fi

# --- enrolment: the manager is the hosts' CA -------------------------------
enrol() {   # enrol NAME: token in ET, the host's identity in $TMP/NAME/
    expect 201 POST /v1/enrolments "{\"host_name\": \"$1\"}"
    ET=$(field .token)
    expect_as "" 200 POST /v1/enrol "{\"token\": \"$ET\"}"
    mkdir -p "$TMP/$1"
    for f in ca cert key; do field ".${f}_pem" >"$TMP/$1/$f.pem"; done
    chmod 600 "$TMP/$1/key.pem"
}
expect 400 POST /v1/enrolments '{"host_name": "no/slash"}'
expect 400 POST /v1/enrolments '{"host_name": "h1", "ttl": 5}'
enrol h1
ET1=$ET
openssl verify -CAfile "$TMP/tls/ca.pem" "$TMP/h1/cert.pem" >/dev/null 2>&1 ||
    fail "the issued certificate does not verify against the manager's CA"
openssl x509 -in "$TMP/h1/cert.pem" -noout -subject | grep -q 'CN *= *h1' ||
    fail "the issued certificate is not for h1"
cmp -s "$TMP/h1/ca.pem" "$TMP/tls/ca.pem" || fail "enrol returned another CA"
[ -e "$TMP/state/hosts/h1/key.pem" ] && fail "the manager kept the host's private key"
expect_as "" 401 POST /v1/enrol "{\"token\": \"$ET1\"}"     # once only
expect_as "" 401 POST /v1/enrol '{"token": "fe_nope"}'
expect_as "" 400 POST /v1/enrol '{"tok": "x"}'

# --- host add: validation changes nothing ---------------------------------
expect 400 POST /v1/hosts "{\"address\": \"127.0.0.1\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET1\"}"
expect 400 POST /v1/hosts "{\"address\": \"127.0.0.1:99999\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET1\"}"
expect 404 POST /v1/hosts "{\"address\": \"127.0.0.1:1\", \"cluster\": \"nope\", \"enrolment_token\": \"$ET1\"}"
expect 400 POST /v1/hosts '{"address": "127.0.0.1:1", "cluster": "c1", "enrolment_token": "fe_nope"}'
expect 400 POST /v1/hosts "{\"address\": \"127.0.0.1:1\", \"cluster\": \"c1\"}"
expect 400 POST /v1/hosts "{\"address\": \"127.0.0.1:1\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET1\", \"x\": 1}"
expect_as "$RO" 403 POST /v1/hosts "{\"address\": \"127.0.0.1:1\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET1\"}"
expect 200 GET /v1/hosts
[ "$BODY" = "[]" ] || fail "a refused host add left a host: $BODY"
expect 200 GET /v1/tasks
[ "$BODY" = "[]" ] || fail "a refused host add left a task: $BODY"

# --- a task that fails: nothing listens on the address --------------------
dead=$(free_port)
expect 202 POST /v1/hosts "{\"address\": \"127.0.0.1:$dead\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET1\"}"
T1=$(field .task.id)
wait_task "$T1" error
holds '"Connection refused" in b["error"] or "onnect" in b["error"]' || fail "task $T1: unclear error: $BODY"
expect 404 GET /v1/hosts/h1      # a failed add leaves no host
expect 409 POST "/v1/tasks/$T1/cancel"

# --- a task that hangs: a TCP server that never speaks TLS ----------------
"$PYTHON" -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)' >"$TMP/hang.port" &
BG_PIDS+=($!)
wait_for 5 test -s "$TMP/hang.port" || fail "the hanging server did not start"
HANG=127.0.0.1:$(cat "$TMP/hang.port")
expect 202 POST /v1/hosts "{\"address\": \"$HANG\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET1\"}"
T2=$(field .task.id)
wait_task "$T2" running
expect 200 GET /v1/hosts/h1
[ "$(field .state)" = adding ] || fail "host h1 is not 'adding' during its task: $BODY"
expect_as "$RO" 403 POST "/v1/tasks/$T2/cancel"
expect 200 POST "/v1/tasks/$T2/cancel"
wait_task "$T2" cancelled
expect 404 GET /v1/hosts/h1

# --- kill -9 mid-task: the running task is reconciled, the queued one runs --
enrol h2
ET2=$ET
expect 202 POST /v1/hosts "{\"address\": \"$HANG\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET1\"}"
T3=$(field .task.id)
wait_task "$T3" running
expect 202 POST /v1/hosts "{\"address\": \"$HANG\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET2\"}"
T4=$(field .task.id)
sleep 0.3
task_in "$T4" queued || fail "with one worker busy, task $T4 should be queued: $BODY"
expect 200 GET '/v1/tasks?limit=1000'
tasks_before=$(field 'sorted((t["id"], t["state"], t["error"]) for t in b if t["state"] not in ("running", "queued"))')
expect 200 GET '/v1/events?limit=1000'
events_before=$(field 'len(b)')
center_kill9
center_start --workers 1
this_start_log | grep -q 'bootstrap' && fail "a restart made another bootstrap token"
[ "$(grep -c '^bootstrap admin token' "$TMP/center.out")" = 1 ] || fail "bootstrap token printed twice"
expect 200 GET "/v1/tasks/$T3"
holds 'b["state"] == "error" and b["error"] == "manager restarted" and bool(b["finished"])' ||
    fail "the task running at kill -9 was not reconciled: $BODY"
wait_task "$T4" running        # the queued task survived and runs now
expect 404 GET /v1/hosts/h1    # the interrupted add left no half-added host
expect 200 POST "/v1/tasks/$T4/cancel"
wait_task "$T4" cancelled
expect 200 GET '/v1/tasks?limit=1000'
tasks_after=$(field 'sorted((t["id"], t["state"], t["error"]) for t in b if t["id"] not in ('"$T3, $T4"'))')
[ "$tasks_after" = "$tasks_before" ] || fail "tasks changed across the restart: $tasks_before -> $tasks_after"
expect 200 GET '/v1/events?limit=1000'
holds "len(b) > $events_before and any(e['kind'] == 'task.interrupted' and e['task_id'] == $T3 for e in b)" ||
    fail "events lost or no task.interrupted event after the restart: $BODY"
expect 200 GET '/v1/tasks?state=cancelled'
holds "sorted(t['id'] for t in b) == [$T2, $T4]" || fail "?state=cancelled lists $BODY"
# the enrolment token of an interrupted add can be used again
expect 202 POST /v1/hosts "{\"address\": \"127.0.0.1:$dead\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET1\"}"
wait_task "$(field .task.id)" error
# SIGTERM does not wait for a host that never answers (curl's limit is 60 s)
expect 202 POST /v1/hosts "{\"address\": \"$HANG\", \"cluster\": \"c1\", \"enrolment_token\": \"$ET1\"}"
T5=$(field .task.id)
wait_task "$T5" running
t0=$SECONDS
kill "$CENTER_PID"
wait "$CENTER_PID" || fail "ferry-center did not exit cleanly on SIGTERM (leaks under ASan?)"
[ $((SECONDS - t0)) -le 5 ] || fail "SIGTERM took $((SECONDS - t0)) s with a task running"
center_start --workers 1
expect 200 GET "/v1/tasks/$T5"
[ "$(field .error)" = "manager restarted" ] || fail "task $T5 after SIGTERM and a restart: $BODY"
center_kill9
exit 0
