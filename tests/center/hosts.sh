# Real host agents for the ferry-center tests (sourced after lib.sh; bash):
# enrol a host with the manager, start its ferryd, add it, and talk to its
# ferryd directly. Needs FERRYD (skipped without it, /dev/kvm or curl).
# shellcheck shell=bash disable=SC2034
: "${FERRY_CLI:?FERRY_CLI is not set (run through meson test)}"
if [ -z "${FERRYD:-}" ] || [ ! -x "$FERRYD" ] || [ ! -w /dev/kvm ] || ! command -v curl >/dev/null; then
    echo "SKIP: $T_NAME needs FERRYD (the host agent), /dev/kvm and curl" >&2
    exit 77
fi

enrol() {   # enrol NAME: token in ET, the host's identity in $TMP/NAME/tls
    expect 201 POST /v1/enrolments "{\"host_name\": \"$1\"}"
    ET=$(field .token)
    expect_as "" 200 POST /v1/enrol "{\"token\": \"$ET\"}"
    mkdir -p "$TMP/$1/tls"
    for f in ca cert key; do field ".${f}_pem" >"$TMP/$1/tls/$f.pem"; done
    chmod 600 "$TMP/$1/tls/key.pem"
}

# ferryd_start NAME TLSDIR DATASTORE-DIRS...: sets FPORT, FPID. The
# datastores are ds0, ds1, ... in that order; FERRYD_MIG_MBPS (default
# 1000) labels its migration interface, FERRYD_NETWORKS (default vm-net on
# a bridge that does not exist) are its port groups.
ferryd_start() {
    local name=$1 tls=$2 ds="" i=0 d
    local nets=${FERRYD_NETWORKS:-"{\"name\": \"vm-net\", \"bridge\": \"brnone-$name\"}"}
    shift 2
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
  "migration_interfaces": [{"address": "127.0.0.1", "nic": "lo", "speed_mbps": ${FERRYD_MIG_MBPS:-1000}}],
  "networks": [$nets],
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

add_host() {   # add_host ADDRESS TOKEN: the task's final state in BODY
    expect 202 POST /v1/hosts "{\"address\": \"$1\", \"cluster\": \"c1\", \"enrolment_token\": \"$2\"}"
    local id; id=$(field .task.id)
    wait_task "$id" success error
}

# ferryd_call NAME PORT METHOD PATH [BODY]: NAME's own ferryd, with NAME's
# identity; FCODE and FBODY get the reply.
ferryd_call() {
    local name=$1 port=$2 method=$3 path=$4 args=()
    [ "$#" -ge 5 ] && args=(-H 'Content-Type: application/json' --data-binary "$5")
    FCODE=$(curl -sS -o "$TMP/ferryd.out" -w '%{http_code}' -X "$method" --cacert "$TMP/$name/tls/ca.pem" \
        --cert "$TMP/$name/tls/cert.pem" --key "$TMP/$name/tls/key.pem" --resolve "$name:$port:127.0.0.1" \
        "${args[@]}" "https://$name:$port$path") || fail "cannot reach ferryd $name"
    FBODY=$(cat "$TMP/ferryd.out")
}

# define_vm NAME PORT SPEC: a VM defined (stopped) on host NAME's ferryd
define_vm() {
    ferryd_call "$1" "$2" POST /v1/vms "$3"
    [ "$FCODE" = 201 ] || fail "ferryd $1 refused the VM: $FBODY"
}
