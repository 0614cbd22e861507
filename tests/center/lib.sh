# Shared helpers of the ferry-center tests (sourced; bash).
# Environment (tests/center/meson.build): FERRY_CENTER, SRC; BACKEND is the
# first argument: sqlite or pg (a private PostgreSQL server the test starts).
# shellcheck shell=bash disable=SC2034
set -u -o pipefail

: "${FERRY_CENTER:?FERRY_CENTER is not set (run through meson test)}"
BACKEND=${1:-sqlite}
T_NAME="$(basename "$0" .sh) $BACKEND"
# The interpreter itself, not a version-manager shim (pyenv's costs ~0.3 s a call).
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
python3() { "$PYTHON" "$@"; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-center.XXXXXX")
chmod 755 "$TMP"
CENTER_PID='' PG_DATA='' BG_PIDS=()

_cleanup() {
    local p
    [ -n "$CENTER_PID" ] && kill -KILL "$CENTER_PID" 2>/dev/null
    for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    # VMs outlive their ferryd by design: stop the ones a failed test left
    for f in "$TMP"/*/state/vms/*/vmm.pid; do
        [ -f "$f" ] && p=$(cut -d' ' -f1 "$f") && grep -qF "$TMP" "/proc/$p/cmdline" 2>/dev/null &&
            kill -KILL "$p"
    done
    [ -n "$PG_DATA" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1
    if [ -n "${KEEP_TMP:-}" ]; then echo "$T_NAME: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap _cleanup EXIT

fail() {
    echo "FAIL: $T_NAME: $*" >&2
    for f in "$TMP"/center.err "$TMP"/pg.log; do
        [ -s "$f" ] && { echo "---- $f (tail) ----" >&2; tail -n 30 "$f" >&2; }
    done
    exit 1
}

# wait_for SECONDS CMD...: retry CMD every 50 ms.
wait_for() {
    local end=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.05
    done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A private PostgreSQL: its own cluster in $TMP, Unix socket only (in $TMP),
# run as the postgres user (initdb refuses root). Sets DBURL.
PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
pg_start() {
    if [ "$(id -u)" -ne 0 ] || [ -z "$PG_BIN" ] || ! id postgres >/dev/null 2>&1; then
        echo "SKIP: $T_NAME needs root and Debian's postgresql package" >&2
        exit 77
    fi
    local port; port=$(free_port)
    mkdir -p "$TMP/pg" && chown postgres: "$TMP/pg"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$TMP/pg/data" -U ferry -A trust --no-sync \
        >"$TMP/pg.log" 2>&1 || fail "initdb failed"
    PG_DATA=$TMP/pg/data
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$TMP/pg/server.log" -w -t 30 \
        -o "-k $TMP/pg -p $port -c listen_addresses='' -c fsync=off" start >>"$TMP/pg.log" 2>&1 ||
        { cat "$TMP/pg/server.log" >>"$TMP/pg.log" 2>/dev/null; fail "pg_ctl start failed"; }
    DBURL="postgresql://ferry@/postgres?host=$TMP/pg&port=$port"
}

db_setup() {
    case $BACKEND in
    sqlite) DBURL="sqlite:$TMP/center.db" ;;
    pg) pg_start ;;
    *) fail "unknown backend '$BACKEND'" ;;
    esac
}

# center_start: ferry-center on a free port; sets PORT, URL; the first
# start's bootstrap token lands in $TMP/center.out.
center_start() {
    touch "$TMP/center.err"
    START_LINE=$(($(wc -l <"$TMP/center.err") + 1))
    "$FERRY_CENTER" --db "$DBURL" --listen 127.0.0.1:0 --tls-dir "$TMP/tls" --state-dir "$TMP/state" \
        "$@" >>"$TMP/center.out" 2>>"$TMP/center.err" &
    CENTER_PID=$!
    wait_for 10 center_serving || fail "ferry-center did not start"
    PORT=$(this_start_log | sed -n 's/.*serving HTTPS on 127.0.0.1:\([0-9]*\)$/\1/p')
    URL=https://ferry-center:$PORT
}
# the log lines of the latest start
this_start_log() { tail -n +"$START_LINE" "$TMP/center.err"; }
center_serving() { this_start_log | grep -q 'serving HTTPS on'; }

center_kill9() {
    kill -KILL "$CENTER_PID" && wait "$CENTER_PID" 2>/dev/null
    CENTER_PID=
}

# api [TOKEN] METHOD PATH [BODY]: sets CODE and BODY (the reply).
api_as() {
    local tok=$1 method=$2 path=$3 data=${4-} out=$TMP/reply
    local args=(-sS -o "$out" -w '%{http_code}' --cacert "$TMP/tls/ca.pem"
                --resolve "ferry-center:$PORT:127.0.0.1" -X "$method")
    [ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
    [ "$#" -ge 4 ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
    CODE=$(curl "${args[@]}" "$URL$path" 2>"$TMP/curl.err") || fail "curl $method $path: $(cat "$TMP/curl.err")"
    BODY=$(cat "$out")
}
api() { api_as "$ADMIN" "$@"; }

# expect CODE METHOD PATH [BODY] (as admin); expect_as TOKEN CODE ...
expect_as() {
    local tok=$1 want=$2; shift 2
    api_as "$tok" "$@"
    [ "$CODE" = "$want" ] || fail "$1 $2: HTTP $CODE, want $want: $BODY"
    if [ "$want" -ge 400 ]; then
        # a clear one-line error, and only that
        holds 'list(b) == ["error"] and isinstance(b["error"], str) and b["error"] and "\n" not in b["error"]' ||
            fail "$1 $2: HTTP $CODE without a one-line error: $BODY"
    fi
}
expect() { expect_as "$ADMIN" "$@"; }

# field EXPR: of the reply: '.a.0.b' is b["a"][0]["b"]; anything else is a
# Python expression over b (the reply, parsed).
field() {
    python3 - "$1" "$BODY" <<'PY'
import json, sys
expr, b = sys.argv[1], json.loads(sys.argv[2])
if expr.startswith('.'):
    for k in filter(None, expr.split('.')):
        b = b[int(k)] if isinstance(b, list) else b.get(k)
    print(b, end='' if isinstance(b, str) and b.endswith('\n') else '\n')
else:
    print(eval(expr, {"b": b}))
PY
}
holds() { [ "$(field "$1")" = True ]; }

# wait_task ID STATE...: until the task is in one of STATEs (10 s).
task_in() { api GET "/v1/tasks/$1"; local s; s=$(field .state); shift; for w in "$@"; do [ "$s" = "$w" ] && return 0; done; return 1; }
wait_task() { local id=$1; shift; wait_for 15 task_in "$id" "$@" || fail "task $id never became $*: $BODY"; }

# ---- hosts: needs ADMIN, FERRYD and FERRY_VMM ----
enrol() {   # enrol NAME: token in ET, the host's identity in $TMP/NAME/tls
    expect 201 POST /v1/enrolments "{\"host_name\": \"$1\"}"
    ET=$(field .token)
    expect_as "" 200 POST /v1/enrol "{\"token\": \"$ET\"}"
    mkdir -p "$TMP/$1/tls"
    for f in ca cert key; do field ".${f}_pem" >"$TMP/$1/tls/$f.pem"; done
    chmod 600 "$TMP/$1/tls/key.pem"
}

# ferryd_start NAME TLSDIR DATASTORE-DIRS...: sets FPORT
ferryd_start() {
    local name=$1 tls=$2 ds="" i=0 d; shift 2
    for d in "$@"; do
        mkdir -p "$d"
        ds+="${ds:+, }{\"name\": \"ds$i\", \"path\": \"$d\"}"
        i=$((i + 1))
    done
    FPORT=$(free_port)
    mkdir -p "$TMP/$name/state"
    cat >"$TMP/$name/ferryd.json" <<JSON
{
  "host_name": "$name",
  "listen": "127.0.0.1:$FPORT",
  "state_dir": "$TMP/$name/state",
  "tls_dir": "$tls",
  "ferry_vmm": "$FERRY_VMM",
  "migration_interfaces": [{"address": "127.0.0.1", "nic": "lo", "speed_mbps": 1000}],
  "networks": [{"name": "vm-net", "bridge": "brnone-$name"}],
  "datastores": [$ds]
}
JSON
    "$FERRYD" --config "$TMP/$name/ferryd.json" >>"$TMP/$name/ferryd.log" 2>&1 &
    FPID=$!
    BG_PIDS+=("$FPID")
    wait_for 10 curl -s -o /dev/null --cacert "$tls/ca.pem" --cert "$tls/cert.pem" --key "$tls/key.pem" \
        --resolve "$name:$FPORT:127.0.0.1" "https://$name:$FPORT/v1/host" ||
        { cat "$TMP/$name/ferryd.log" >&2; fail "ferryd $name does not answer"; }
}
