#!/bin/bash
# Shared-nothing live migration (--storage-to) on loopback against the raw
# link measured in the same run (issue 10's target: total time <= 1.15 x
# (memory + disk bytes) / raw loopback rate).
#
# A near-idle micro-guest (the dirtier writing 10 pages/s of a 1 MiB working
# set, sleeping in between: a spinning vCPU would take one of the two cores
# the reference, iperf3 -P 2, uses; its disk idle) with a STORAGE_MIB
# (default 512) MiB sparse image, 3/4 data (64 MiB extents of random bytes,
# 64 MiB holes), on BENCH_DIR (default /dev/shm: the link, not a disk, is
# what is measured) is
# migrated ROUNDS times (default 2) with TLS and plaintext, 2 streams. Each
# run's total time is set against the bytes it moved (page data + disk data,
# from migrate-status) at iperf3's raw loopback TCP rate with -P 2, and the
# ratio printed, and against the one-box bound (iperf3's CPU use, a cp of the
# image and, for TLS, AES-128-GCM, all on these cores: see below).
# Informational: nothing fails on a ratio.
set -u -o pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
: "${FERRY_VMM:?}" "${FERRY_CLI:?}" "${GUEST_DIR:?}"
MIB=${STORAGE_MIB:-512}
ROUNDS=${ROUNDS:-2}
PORT=${PORT:-7960}
DIR=$(mktemp -d "${BENCH_DIR:-/dev/shm}/ferry-bench-storage.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$DIR"' EXIT
die() { echo "FAIL: migrate-storage: $*" >&2; exit 1; }
calc() { python3 -c "print($1)"; }
for t in iperf3 openssl python3 taskset; do command -v "$t" >/dev/null || die "$t missing"; done

src=$DIR/src.img
truncate -s "${MIB}M" "$src"
for ((off = 0; off < MIB; off += 64)); do
    (( (off / 64) % 4 == 3 )) && continue
    head -c 64M /dev/urandom | dd of="$src" bs=1M seek="$off" conv=notrunc status=none
done
"$FERRY_CLI" tls init "$DIR/tls" --cn bench >/dev/null || die "ferry tls init"

read -r RAW TCPCORES <<<"$(ref_iperf $((PORT + 99)) 2)"
[ -n "$TCPCORES" ] || die "iperf3 on loopback failed"
AES=$(ref_aes)
[ -n "$AES" ] || die "openssl speed -evp aes-128-gcm failed"
data=$(($(du -k "$src" | cut -f1) * 1024))
t0=$(date +%s%N)
cp --sparse=always "$src" "$DIR/cp.img" || die "cp failed"
CP=$(calc "$data / (($(date +%s%N) - $t0) / 1e9)")
rm -f "$DIR/cp.img"
printf 'machine: %s cores; raw loopback TCP (iperf3 -P 2, 3 s) %.0f MB/s on %.2f cores; AES-128-GCM one core %.0f MB/s\n' \
    "$(nproc)" "$(calc "$RAW/1e6")" "$TCPCORES" "$(calc "$AES/1e6")"
printf 'image: %d MiB, %d MiB data, on %s; cp --sparse=always of it %.0f MB/s\n' "$MIB" $((data / 1048576)) \
    "${BENCH_DIR:-/dev/shm}" "$(calc "$CP/1e6")"
# The one-box bound: both ends share these cores, so each byte costs what
# iperf3 spent on it (loopback TCP, both ends), what cp spent (reading the
# image and writing the copy: what the source's read and the destination's
# write do too) and, with TLS, one encryption and one decryption; the cores
# divide by that, and it is no faster than iperf3. Page data (a near-idle
# 256 MiB guest: a few MiB) is counted the same.
onebox() {  # onebox TLS(0|1) -> bytes/s
    calc "min($RAW, $(nproc) / ($TCPCORES / $RAW + 1 / $CP + $1 * 2 / $AES))"
}
BOX_TLS=$(onebox 1) BOX_PLAIN=$(onebox 0)
printf 'one-box bound: TLS %.0f MB/s, plaintext %.0f MB/s\n' "$(calc "$BOX_TLS/1e6")" "$(calc "$BOX_PLAIN/1e6")"

# one SEC...: one migration with ferry-vmm's security options SEC; prints
# "total_ms bytes" (page data + disk data moved)
one() {
    local n=$((PORT + RANDOM % 30)) out
    rm -f "$DIR/a.sock" "$DIR/dst.img"
    "$FERRY_VMM" --kernel "$GUEST_DIR/dirtier.elf" --append "mib=1 rate=10 report_ms=0" --mem 256M --disk "$src" \
        "$@" --control "$DIR/a.sock" </dev/null >/dev/null 2>"$DIR/a.err" &
    local spid=$!
    PIDS+=($spid)
    "$FERRY_VMM" --incoming "127.0.0.1:$n" "$@" --control "$DIR/d.sock" </dev/null >/dev/null 2>"$DIR/d.err" &
    local dpid=$!
    PIDS+=($dpid)
    for _ in $(seq 100); do [ -S "$DIR/a.sock" ] && grep -q waiting "$DIR/d.err" && break; sleep 0.05; done
    out=$("$FERRY_CLI" -S "$DIR/a.sock" vm migrate --to "127.0.0.1:$n" --storage-to "$DIR/dst.img" --streams 2 \
        --json) || die "migration failed: $out $(tail -2 "$DIR/a.err")"
    "$FERRY_CLI" -S "$DIR/d.sock" vm quit >/dev/null 2>&1
    # both gone before the next run starts (the source exits after its
    # digest of the frozen image; it would share the cores with that run)
    wait "$dpid" "$spid" 2>/dev/null
    python3 -c 'import json,sys; s=json.loads(sys.argv[1].splitlines()[0]); print(s["total_ms"], s["data_bytes"] + s["disk_bytes_sent"], s["downtime_ms"], s["verify_ms"], s["round"])' "$out"
}

for mode in tls insecure; do
    for ((r = 1; r <= ROUNDS; r++)); do
        if [ $mode = tls ]; then sec=(--tls-dir "$DIR/tls"); else sec=(--insecure); fi
        # not in a $(...) subshell: a failure must reach this shell's trap,
        # which kills the run's ferry-vmm processes
        one "${sec[@]}" >"$DIR/result"
        read -r ms bytes down vms rounds <"$DIR/result" && [ -n "$rounds" ] || die "no result: $(cat "$DIR/result")"
        ideal=$(calc "$bytes / $RAW * 1000")
        if [ $mode = tls ]; then box=$BOX_TLS; else box=$BOX_PLAIN; fi
        printf '%-8s run %d: total %5d ms (digest after the hand-over %d ms, %d rounds) for %4.0f MiB (%.0f MB/s), downtime %d ms; ideal at raw TCP %5.0f ms; ratio %.2f, to the one-box bound %.2f\n' \
            "$mode" "$r" "$ms" "$vms" "$rounds" "$(calc "$bytes/1048576")" "$(calc "$bytes/$ms/1000")" "$down" "$ideal" \
            "$(calc "$ms/$ideal")" "$(calc "$ms/($bytes / $box * 1000)")"
    done
done
echo "ratio = total time / ((memory + disk bytes) / raw loopback TCP rate); target <= 1.15;" \
     "to the one-box bound = total time / (those bytes / the one-box bound)"
