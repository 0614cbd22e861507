#!/bin/bash
# Live-migration benchmark on loopback (transport 2.0): a 1 GiB micro-guest
# (dirtier, 768 MiB working set, warm) migrated between two ferry-vmm
# processes on this machine, against reference rates measured in the same run:
#   - raw loopback TCP, iperf3 -P 1 and -P 2 (bytes/s);
#   - the cipher on one core: openssl speed -evp aes-128-gcm, 16384-byte blocks;
#   - from those, the one-box bound of TLS (both ends on these cores; x1box).
# Cases: streams 1|2 x TLS on|off x verify after|strict at dirty rates of 0, 10
# and 25% of the raw -P 1 link (compress off: they measure the transport),
# plus compress auto and lz4 at 10%, TLS, 2 streams. Each case runs REPEATS
# times. A failed migration or a verify_result other than "match" / "match (in
# the pause)" makes the bench exit 1.
#
# The destination runs with --prealloc --mem (as one with reserved memory would,
# prepared before the source is told to move): on this VM host the kernel's
# zeroing of never-touched memory runs at about 0.5 GB/s and would otherwise be
# what round 0 measures, or, preallocated at HELLO, 2 s of each 1 GiB
# migration's total. PREALLOC=0 turns it off.
#
# Default (CI: meson test --benchmark --suite bench): a reduced matrix, TLS on,
# streams 1|2, verify after, dirty 0|10%, REPEATS=2, plus one strict run.
# FULL=1: the whole matrix (REPEATS default 3).
#
# Env: FERRY_VMM, FERRY_CLI, GUEST_DIR (set by meson), FULL, REPEATS, MEM (1G),
# WS_MIB (768), PORT (7950), ONLY (a regex on the case labels, e.g. 'lz4|auto').
set -u -o pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
: "${FERRY_VMM:?}" "${GUEST_DIR:?}"
FERRY_CLI=${FERRY_CLI:-$(dirname "$FERRY_VMM")/../cli/ferry}
FULL=${FULL:-0}
if [ "$FULL" = 1 ]; then REPEATS=${REPEATS:-3}; else REPEATS=${REPEATS:-2}; fi
MEM=${MEM:-1G}
WS_MIB=${WS_MIB:-768}
PORT=${PORT:-7950}
ONLY=${ONLY:-.}
TMP=$(mktemp -d /tmp/ferry-bench.XXXXXX)
PIDS=()   # our background processes; runs in $(...) subshells append theirs to $TMP/pids
cleanup() {
    local p
    for p in "${PIDS[@]}" $(cat "$TMP/pids" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench: $*" >&2; exit 1; }
calc() { awk "BEGIN{print $*}"; }
ctl() { echo "$2" | socat -t 5 - "UNIX-CONNECT:$1"; }
pct() {  # pct P < numbers -> the P-th percentile (nearest rank)
    sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((p/100)*NR+0.999); if(i<1)i=1; if(i>NR)i=NR; print a[i]}'
}

for t in iperf3 openssl socat python3 jq taskset; do
    command -v "$t" >/dev/null || die "$t missing (apt-get install iperf3 openssl socat python3 jq util-linux)"
done
[ -x "$FERRY_CLI" ] || die "ferry CLI not found at $FERRY_CLI (set FERRY_CLI)"
"$FERRY_CLI" tls init "$TMP/tls" >/dev/null 2>&1 || die "ferry tls init $TMP/tls failed"

# The machine's CPU use by others, % of all cores over 1 s while this bench idles:
# the cores are shared (other builds and VMs) and every number below depends on it.
busy() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    awk -v a="${a[*]:1}" -v b="${b[*]:1}" 'BEGIN{n=split(a,x);split(b,y);for(i=1;i<=n;i++)t+=y[i]-x[i];
        idle=(y[4]-x[4])+(y[5]-x[5]); printf "%.0f", (t > 0) ? 100*(t-idle)/t : 0}'
}
BUSY0=$(busy)

# ---- reference rates, measured now ------------------------------------------
read -r RAW1 TCPCORES1 <<<"$(ref_iperf $((PORT + 99)) 1)"; [ -n "$TCPCORES1" ] || die "iperf3 -P 1 on loopback failed"
read -r RAW2 TCPCORES2 <<<"$(ref_iperf $((PORT + 99)) 2)"; [ -n "$TCPCORES2" ] || die "iperf3 -P 2 on loopback failed"
CIPHER=$(ref_aes)
[ -n "$CIPHER" ] || die "openssl speed -evp aes-128-gcm failed"
printf 'machine: %s, %s cores, %s\n' "$(uname -m)" "$(nproc)" \
    "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
printf 'background CPU use by other processes: %s%% of %s cores (1 s, before the bench)\n' "$BUSY0" "$(nproc)"
printf 'raw loopback TCP (iperf3, 3 s): -P 1 %.0f MB/s, -P 2 %.0f MB/s\n' "$(calc "$RAW1/1e6")" "$(calc "$RAW2/1e6")"
printf 'AES-128-GCM on one core (openssl speed, 16 KiB blocks): %.0f MB/s\n' "$(calc "$CIPHER/1e6")"
# The one-box bound of a TLS migration with S streams: here both ends share
# these cores, so every byte costs the CPU time iperf3 spent on it (loopback
# TCP, sender and receiver) plus one encryption and one decryption, and the
# cores divide by that; no faster than iperf3 itself. (On two hosts each end
# has its own cores and the bound is min(iperf3, cipher): the issue's.)
onebox() {  # onebox RAW TCPCORES -> bytes/s
    local b; b=$(calc "$(nproc) / ($2 / $1 + 2 / $CIPHER)")
    calc "($b < $1) ? $b : $1"
}
ONEBOX1=$(onebox "$RAW1" "$TCPCORES1")
ONEBOX2=$(onebox "$RAW2" "$TCPCORES2")
printf 'TLS one-box bound: 1 stream %.0f MB/s, 2 streams %.0f MB/s (iperf3 used %.2f and %.2f cores)\n' \
    "$(calc "$ONEBOX1/1e6")" "$(calc "$ONEBOX2/1e6")" "$TCPCORES1" "$TCPCORES2"

# ---- one migration ----------------------------------------------------------
# The control-socket driver: sends migrate, polls migrate-status every 20 ms on
# one connection, and prints the final status as JSON plus "r0_Bps": the
# engine's throughput estimate as it stood right after round 0 (page data of
# round 0 / its duration), the link rate with the whole RAM in flight.
cat >"$TMP/drive.py" <<'EOF'
import json, socket, sys, time
sock, args = sys.argv[1], json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX); s.connect(sock); f = s.makefile("rw")
def call(cmd, a=None):
    f.write(json.dumps({"cmd": cmd, "args": a or {}}) + "\n"); f.flush()
    return json.loads(f.readline())
r = call("migrate", args)
if not r.get("ok"):
    print(json.dumps({"phase": "refused", "error": r.get("error", str(r))})); sys.exit(0)
r0 = None
deadline = time.time() + args.get("max_time_s", 60) + 60
while time.time() < deadline:
    time.sleep(0.02)
    st = call("migrate-status").get("result", {})
    if r0 is None and (st.get("round", 0) >= 1 or st.get("phase") == "completed"):
        r0 = st.get("throughput_mbps", 0) * 1e6 / 8
    if st.get("phase") in ("completed", "failed", "cancelled", "in-doubt"):
        break
else:
    st = {"phase": "timeout", "error": "no end of migration within %d s" % (args.get("max_time_s", 60) + 60)}
st["r0_Bps"] = r0 or 0
print(json.dumps(st))
EOF

# one_run STREAMS TLS(1|0) VERIFY COMPRESS RATE N -> "down_ms total_ms r0_Bps data_bytes
# bytes_sent gap_us wire/data rtt_ms codec pause_ms(stop/last/state/verify/dest)
# tcp_window_note", or a one-line error and status 1 (it runs in $(...))
one_run() {
    local streams=$1 tls=$2 verify=$3 compress=$4 rate=$5 n=$6
    local port=$((PORT + n % 90)) dst_out=$TMP/dst.$n src_out=$TMP/src.$n
    local sec=(--insecure)
    [ "$tls" = 1 ] && sec=(--tls-dir "$TMP/tls")
    rm -f "$TMP/a.sock" "$TMP/b.sock"
    "$FERRY_VMM" --incoming 127.0.0.1:$port "${sec[@]}" $([ "${PREALLOC:-1}" = 1 ] && echo --prealloc --mem "$MEM") \
        --control "$TMP/b.sock" >"$dst_out" 2>&1 &
    local dpid=$!
    "$FERRY_VMM" --kernel "$GUEST_DIR/dirtier.elf" --mem "$MEM" "${sec[@]}" --control "$TMP/a.sock" \
        --append "mib=$WS_MIB rate=$rate warm=1 report_ms=200" >"$src_out" 2>&1 &
    local spid=$!
    echo "$dpid $spid" >>"$TMP/pids"
    stop() { kill -9 $dpid $spid 2>/dev/null; wait $dpid $spid 2>/dev/null; }
    # migrate a warm guest: its whole working set written once, then paced writes
    local t=0
    until grep -q 'pass=2' "$src_out" 2>/dev/null && grep -q 'waiting for an incoming' "$dst_out"; do
        sleep 0.1; t=$((t + 1))
        [ $t -gt 300 ] && { echo "dirtier or destination not ready: $(tail -1 "$src_out") | $(tail -1 "$dst_out")"; stop; return 1; }
    done
    local args st
    args="{\"uri\":\"127.0.0.1:$port\",\"streams\":$streams,\"verify\":\"$verify\",\"compress\":\"$compress\",\"max_time_s\":60}"
    st=$(python3 "$TMP/drive.py" "$TMP/a.sock" "$args" 2>"$TMP/drive.err") ||
        { echo "control socket: $(tail -1 "$TMP/drive.err")"; stop; return 1; }
    local phase vres
    phase=$(jq -r .phase <<<"$st")
    if [ "$phase" != completed ]; then
        echo "migration $phase: $(jq -r '.error // "?"' <<<"$st")"; stop; return 1
    fi
    # the destination's first report after the switchover holds the gap spanning the pause
    for _ in $(seq 1 50); do grep -q max_gap_us "$dst_out" && break; sleep 0.1; done
    ctl "$TMP/a.sock" '{"cmd":"quit"}' >/dev/null
    ctl "$TMP/b.sock" '{"cmd":"quit"}' >/dev/null
    wait $dpid $spid 2>/dev/null
    vres=$(jq -r '.verify_result // "none"' <<<"$st")
    case $vres in
        match|"match (in the pause)") ;;
        *) echo "verify_result: $vres"; return 1 ;;
    esac
    local gap
    gap=$(grep -o 'max_gap_us=[0-9]*' "$dst_out" | head -1 | cut -d= -f2)
    jq -r --arg gap "${gap:-0}" '"\(.downtime_ms) \(.total_ms) \(.r0_Bps) \(.data_bytes) \(.bytes_sent) \($gap) \(.compression_ratio) \(.rtt_ms) \(.compression) \(.pause_breakdown_us | [.stop_vcpus, .last_pages, .state, .verify, .destination] | map(. / 1000 | floor) | join("/")) \(.tcp_window // "-")"' <<<"$st"
}

# ---- cases ------------------------------------------------------------------
FAILED=0
NRUN=0
ERRORS=()
FMT='| %-24s | %4s | %8s | %8s | %7s | %7s | %7s | %6s | %5s | %9s | %5s | %9s |'
HDR=$(printf "$FMT" case runs "down p50" "down p99" "gap p50" "total s" "r0 MB/s" "rtt ms" xraw xTLSbound x1box wire/data)
ROWS=()
run_case() {  # run_case STREAMS TLS VERIFY COMPRESS DIRTY_PCT [REPEATS]
    local streams=$1 tls=$2 verify=$3 compress=$4 p=$5 reps=${6:-$REPEATS}
    local label
    label="${streams}s $([ "$tls" = 1 ] && echo tls || echo plain) $verify dirty${p}%"
    [ "$compress" != off ] && label+=" $compress"
    [[ $label =~ $ONLY ]] || return 0
    local rate=$((RAW1 * p / 100 / 4096))
    [ "$rate" -gt 0 ] || rate=1   # rate=0 would mean "unpaced" to the dirtier
    local i out d=() tot=() r0=() gap=() cr=() rtt=() ok=0
    for i in $(seq 1 "$reps"); do
        NRUN=$((NRUN + 1))
        if ! out=$(one_run "$streams" "$tls" "$verify" "$compress" "$rate" $NRUN); then
            echo "FAIL $label run $i: $out" >&2
            ERRORS+=("$label run $i: $out"); FAILED=1; continue
        fi
        read -r dd tt rr db bs gg cc rt codec pb note <<<"$out"
        d+=("$dd"); tot+=("$tt"); r0+=("$rr"); gap+=("$gg"); cr+=("$cc"); rtt+=("$rt"); ok=$((ok + 1))
        printf '  %s run %d: down %s ms, total %s ms, r0 %.0f MB/s, %.0f MiB of pages, %.0f MiB sent (%s), gap %s us, rtt %s ms, pause stop/last/state/verify/dest %s ms%s\n' \
            "$label" "$i" "$dd" "$tt" "$(calc "$rr/1e6")" "$(calc "$db/1048576")" "$(calc "$bs/1048576")" \
            "$codec" "$gg" "$rt" "$pb" "$([ "$note" != - ] && echo "; $note")" >&2
    done
    if [ $ok -eq 0 ]; then
        ROWS+=("$(printf "$FMT" "$label" "0/$reps" - - - - - - - - - -)")
        return
    fi
    local raw=$RAW1 onebox=$ONEBOX1 r0m bound tlsr=- boxr=-
    [ "$streams" -ge 2 ] && raw=$RAW2 onebox=$ONEBOX2
    r0m=$(printf '%s\n' "${r0[@]}" | pct 50)
    if [ "$tls" = 1 ]; then
        bound=$(calc "($CIPHER * ($streams < 2 ? $streams : 2) < $raw) ? $CIPHER * ($streams < 2 ? $streams : 2) : $raw")
        tlsr=$(printf '%.2f' "$(calc "$r0m/$bound")")
        boxr=$(printf '%.2f' "$(calc "$r0m/$onebox")")
    fi
    ROWS+=("$(printf "$FMT" "$label" "$ok/$reps" \
        "$(printf '%s\n' "${d[@]}" | pct 50)" "$(printf '%s\n' "${d[@]}" | pct 99)" \
        "$(printf '%.1f' "$(calc "$(printf '%s\n' "${gap[@]}" | pct 50)/1000")")" \
        "$(printf '%.1f' "$(calc "$(printf '%s\n' "${tot[@]}" | pct 50)/1000")")" \
        "$(printf '%.0f' "$(calc "$r0m/1e6")")" "$(printf '%s\n' "${rtt[@]}" | pct 50)" \
        "$(printf '%.2f' "$(calc "$r0m/$raw")")" "$tlsr" "$boxr" \
        "$(printf '%.3f' "$(printf '%s\n' "${cr[@]}" | pct 50)")")")
}

if [ "$FULL" = 1 ]; then
    for p in 0 10 25; do
        for tls in 1 0; do
            for streams in 1 2; do
                for verify in after strict; do
                    run_case $streams $tls $verify off $p
                done
            done
        done
    done
    run_case 2 1 after auto 10
    run_case 2 1 after lz4 10
else
    for p in 0 10; do
        for streams in 1 2; do run_case $streams 1 after off $p; done
    done
    run_case 2 1 strict off 10 1
fi

# ---- report -----------------------------------------------------------------
echo
printf 'Reference: iperf3 loopback -P 1 %.0f MB/s, -P 2 %.0f MB/s; AES-128-GCM one core %.0f MB/s; %s cores,\n' \
    "$(calc "$RAW1/1e6")" "$(calc "$RAW2/1e6")" "$(calc "$CIPHER/1e6")" "$(nproc)"
printf 'busy with other processes %s%% before and %s%% after the bench (1 s each); load average %s\n' \
    "$BUSY0" "$(busy)" "$(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "$HDR"
echo "$HDR" | sed 's/[^|]/-/g'
printf '%s\n' "${ROWS[@]}"
cat <<'EOT'

runs = completed runs / attempts; down = VMM-measured pause (source pause -> destination's
ACK(resumed)), ms, p50/p99 over the runs (nearest rank); gap = the guest's own largest TSC gap
in the destination's first report after the switchover, ms (p50); total = migrate command to
the end, s (with verify=after it includes the digest comparison after the hand-over); r0 MB/s =
page data of round 0 (the whole RAM, guest running) / round 0's duration, the engine's own
throughput estimate; rtt = the engine's RTT probe at setup (it sizes the TCP windows); xraw =
r0 / iperf3 loopback with -P min(streams, 2); xTLSbound = r0 / min(that iperf3 rate, AES-128-GCM
one-core rate x min(streams, 2)), the bound with each end on its own host; x1box = r0 / the
one-box bound above (both ends, TCP and cipher on these cores); wire/data = bytes_sent /
data_bytes (1.002 = framing only).
Dirty N% = the dirtier paced at N% of the iperf3 -P 1 rate in pages/s (write-protection faults
cap what it reaches). Both VMMs, the guest's vCPU and the streams share this machine's cores.
EOT
if [ $FAILED -ne 0 ]; then
    echo
    echo "FAILED runs:"
    printf '  %s\n' "${ERRORS[@]}"
fi
exit $FAILED
