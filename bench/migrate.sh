#!/bin/bash
# Live-migration benchmark on loopback: a 1 GiB micro-guest (dirtier, 768 MiB
# working set) migrated between two ferry-vmm processes while it dirties
# memory at 0, 10, 25 and 50% of the link's raw rate (iperf3, measured in the
# same run). Each case is repeated REPEATS times; prints downtime p50/p99, the
# guest-visible pause (dirtier's largest TSC gap), total time, bytes sent and
# throughput with its ratio to the raw link. One extra case without the
# memory digest shows what verification costs.
#
# Env: FERRY_VMM, GUEST_DIR (set by meson), REPEATS (default 5), MEM (1G).
set -u -o pipefail
: "${FERRY_VMM:?}" "${GUEST_DIR:?}"
REPEATS=${REPEATS:-5}
MEM=${MEM:-1G}
WS_MIB=${WS_MIB:-768}
PORT=${PORT:-7950}
TMP=$(mktemp -d /tmp/ferry-bench.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$TMP"' EXIT

calc() { awk "BEGIN{print $*}"; }
ctl() { echo "$2" | socat -t 5 - "UNIX-CONNECT:$1"; }
jget() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); r=d.get("result",d)
for k in sys.argv[2].split("."): r=r.get(k) if isinstance(r,dict) else None
print("" if r is None else r)' "$1" "$2"; }

# Raw loopback TCP throughput (bytes/s), measured now.
command -v iperf3 >/dev/null || { echo "bench: iperf3 missing (apt-get install iperf3)"; exit 1; }
iperf3 -s -1 -p $((PORT + 99)) >/dev/null 2>&1 &
PIDS+=($!)
sleep 0.5
RAW_BPS=$(iperf3 -c 127.0.0.1 -p $((PORT + 99)) -t 3 -J | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8))')
[ -n "$RAW_BPS" ] || { echo "bench: iperf3 failed"; exit 1; }
printf 'raw loopback TCP (iperf3, 3 s): %.0f MB/s (%.2f Gbit/s)\n' "$(calc "$RAW_BPS/1e6")" "$(calc "$RAW_BPS*8/1e9")"

# one_run RATE_PAGES_PER_S VERIFY -> "downtime_ms total_ms bytes throughput_Bps gap_us dirty_MBps rounds"
one_run() {
    local rate=$1 verify=$2 n=$3
    local dst_out=$TMP/dst.$n src_out=$TMP/src.$n port=$((PORT + n % 50))
    rm -f "$TMP/a.sock" "$TMP/b.sock"
    "$FERRY_VMM" --incoming 127.0.0.1:$port --control "$TMP/b.sock" >"$dst_out" 2>&1 &
    local dpid=$!
    "$FERRY_VMM" --kernel "$GUEST_DIR/dirtier.elf" --mem "$MEM" --control "$TMP/a.sock" \
        --append "mib=$WS_MIB rate=$rate warm=1 report_ms=200" >"$src_out" 2>&1 &
    local spid=$!
    PIDS+=($dpid $spid)
    # migrate a warm guest: its whole working set written once, then paced writes
    local t=0
    until grep -q 'pass=2' "$src_out" 2>/dev/null; do
        sleep 0.1; t=$((t + 1))
        [ $t -gt 300 ] && { echo "bench: dirtier did not start" >&2; kill -9 $dpid $spid 2>/dev/null; return 1; }
    done
    local r
    r=$(ctl "$TMP/a.sock" "{\"cmd\":\"migrate\",\"args\":{\"uri\":\"127.0.0.1:$port\",\"verify\":$verify,\"max_time_s\":60}}")
    case $r in
        *'"ok":true'*) ;;
        *) echo "bench: migrate refused: $r" >&2
           kill -9 $dpid $spid 2>/dev/null; wait $dpid $spid 2>/dev/null
           return 1 ;;
    esac
    local phase=""
    for _ in $(seq 1 1200); do
        sleep 0.05
        r=$(ctl "$TMP/a.sock" '{"cmd":"migrate-status"}')
        phase=$(jget "$r" phase)
        case $phase in completed|failed|cancelled|in-doubt) break ;; esac
    done
    if [ "$phase" != completed ]; then
        echo "bench: migration $phase: $(jget "$r" error)" >&2
        kill -9 $dpid $spid 2>/dev/null; wait $dpid $spid 2>/dev/null
        return 1
    fi
    # the destination's first report after the switchover holds the gap spanning the pause
    for _ in $(seq 1 50); do grep -q max_gap_us "$dst_out" && break; sleep 0.1; done
    ctl "$TMP/a.sock" '{"cmd":"quit"}' >/dev/null
    ctl "$TMP/b.sock" '{"cmd":"quit"}' >/dev/null
    wait $dpid $spid 2>/dev/null
    local gap
    gap=$(grep -o 'max_gap_us=[0-9]*' "$dst_out" | head -1 | cut -d= -f2)
    echo "$(jget "$r" downtime_ms) $(jget "$r" total_ms) $(jget "$r" bytes_sent) $(jget "$r" elapsed_ms) ${gap:-0} $(jget "$r" dirty_rate_mbps) $(jget "$r" round) $(jget "$r" verify_ms)"
}

pct() {  # pct P < numbers -> the P-th percentile (nearest rank)
    sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((p/100)*NR+0.999); if(i<1)i=1; if(i>NR)i=NR; print a[i]}'
}

printf '\n%-14s %6s %8s %8s %8s %9s %9s %8s %9s %9s %7s %6s\n' case runs down_p50 down_p99 verify gap_p50us total_p50 MiB MB/s raw_ratio dirtyMB rounds
run_case() {
    local label=$1 rate=$2 verify=$3
    local rows=() i out
    for i in $(seq 1 "$REPEATS"); do
        out=$(one_run "$rate" "$verify" "$((${#rows[@]} + RANDOM % 40))") || { echo "$label: run $i failed" >&2; continue; }
        rows+=("$out")
    done
    [ ${#rows[@]} -gt 0 ] || { echo "$label: no successful run"; FAILED=1; return; }
    local d=() tot=() by=() gap=() dr=() rd=() vf=() thr=()
    for row in "${rows[@]}"; do
        read -r dd tt bb ee gg rr ro vv <<< "$row"
        d+=("$dd"); tot+=("$tt"); by+=("$bb"); gap+=("$gg"); dr+=("$rr"); rd+=("$ro"); vf+=("$vv")
        thr+=("$(awk -v b="$bb" -v t="$tt" 'BEGIN{printf "%.0f", (t>0)? b/(t/1000):0}')")
    done
    local tp; tp=$(printf '%s\n' "${thr[@]}" | pct 50)
    printf '%-14s %6d %8s %8s %8s %9s %9s %8.0f %9.0f %9.2f %7.0f %6s\n' "$label" "${#rows[@]}" \
        "$(printf '%s\n' "${d[@]}" | pct 50)" "$(printf '%s\n' "${d[@]}" | pct 99)" \
        "$(printf '%s\n' "${vf[@]}" | pct 50)" "$(printf '%s\n' "${gap[@]}" | pct 50)" \
        "$(printf '%s\n' "${tot[@]}" | pct 50)" "$(( $(printf '%s\n' "${by[@]}" | pct 50) / 1048576 ))" \
        "$(calc "$tp/1e6")" "$(calc "$tp/$RAW_BPS")" \
        "$(awk -v m="$(printf '%s\n' "${dr[@]}" | pct 50)" 'BEGIN{print m/8}')" "$(printf '%s\n' "${rd[@]}" | pct 50)"
}

FAILED=0
for p in 0 10 25 50; do
    rate=$(( RAW_BPS * p / 100 / 4096 ))
    [ "$rate" -gt 0 ] || rate=1   # rate=0 would mean "unpaced" to the dirtier
    run_case "dirty ${p}%" "$rate" true
done
run_case "dirty 0% nover" 1 false
cat <<'EOT'

down = VMM-measured pause (source pause -> destination's ACK(resumed)), ms; verify = part of it
spent hashing all guest RAM on the source; gap = the guest's own largest TSC gap in the pass that
spanned the migration, us; MB/s = bytes sent / total time; raw_ratio = that / iperf3's loopback
rate; dirtyMB = the dirty rate the source measured (MB/s); the dirtier's requested rate is the
percentage of the raw link, but write-protection faults (~10 us each here) cap what it reaches.
EOT
exit $FAILED
