#!/bin/bash
# Live disk move throughput and guest write latency (issue 10's targets).
#
# 1. Copy rate: a MOVE_MIB (default 512) MiB sparse image with 3/4 of it
#    data (64 MiB extents of random bytes, 64 MiB holes between) is moved,
#    under an idle guest, with io_uring and with pread/pwrite, and copied with
#    `cp --sparse=always` + fsync, ROUNDS times each (default 5) on the same
#    filesystem in the same run, page cache warm for all (the source was just
#    written), rotating the order. Target: move-disk (io_uring) >= 0.9 x cp. Both include making
#    the copy durable (the move fdatasyncs before its switch; cp is followed
#    by `sync FILE`).
# 2. Write latency: the blkwriter guest at 5000 writes/s; p99 of its write
#    latency (median of its 0.5 s intervals) without a move and while a move
#    is held in the mirror phase, 3 x 2 s of each, interleaved. Target:
#    mirror <= 2 x without (reported, not asserted: on a loaded 2-core host
#    the guest's polling vCPU and the request thread fight for a core).
#
# Fails when the copy target is missed, best run against best run (FAIL_UNDER=0
# turns that off; medians are reported too). The CI
# default takes about 30 s. BENCH_DIR picks the filesystem (default: $TMPDIR).
# shellcheck source=tests/func/lib.sh
. "$SRC/tests/func/lib.sh"
: "${FERRY_CLI:?FERRY_CLI is not set (run through meson test)}"
MIB=${MOVE_MIB:-512}
ROUNDS=${ROUNDS:-5}
FAIL_UNDER=${FAIL_UNDER:-0.9}
DIR=${BENCH_DIR:-$TMP}
[ "$DIR" = "$TMP" ] || DIR=$(mktemp -d "$DIR/ferry-bench.XXXXXX")
trap '[ "$DIR" = "$TMP" ] || rm -rf "$DIR"; _cleanup' EXIT

# the source image: 64 MiB data extents with 64 MiB holes, 3/4 data
src=$DIR/src.img
truncate -s "${MIB}M" "$src"
ext=64
for ((off = 0; off < MIB; off += ext)); do
    (( (off / ext) % 4 == 3 )) && continue
    head -c "${ext}M" /dev/urandom | dd of="$src" bs=1M seek="$off" conv=notrunc,fsync status=none
done
data_mib=$(( $(du -k "$src" | cut -f1) / 1024 ))

SOCK=$TMP/bench.sock
vmm_bg bench --kernel "$(guest spin)" --append "iters=1000000000000" --mem 64M --disk "$src" --control "$SOCK"
wait_for 10 test -S "$SOCK" || vfail "ferry-vmm did not come up"
# paused: the guest's vCPU would take a core from the copy and from cp alike,
# and the disk is idle either way
ctl "$SOCK" '{"cmd":"pause"}' >/dev/null

now_ms() { date +%s%3N; }
cur=$src
move_rates=() pread_rates=() cp_rates=()
# one_move uring|pread DST: move the disk to DST, append the rate (MiB/s of data)
one_move() {
    local io=$1 dst=$2 out rate
    if [ "$io" = uring ]; then
        out=$("$FERRY_CLI" -S "$SOCK" vm move-disk vda --to "$dst" --json) || vfail "move-disk: $out"
    else
        ctl "$SOCK" "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$dst\",\"no_uring\":true}}" >/dev/null
        while [[ $(jget "$(ctl "$SOCK" '{"cmd":"move-disk-status"}')" result.phase) == @(copy|mirror) ]]; do
            sleep 0.02
        done
        out=$(jget "$(ctl "$SOCK" '{"cmd":"move-disk-status"}')" result)
    fi
    expect_json "$out" phase=switched
    [ "$(jget "$out" io)" = "$([ "$io" = uring ] && echo io_uring || echo pread)" ] || vfail "io: $out"
    rate=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print("%.0f" % (s["total_bytes"]/1048576/(s["elapsed_ms"]/1000)))' "$out")
    if [ -z "$record" ]; then :; elif [ "$io" = uring ]; then move_rates+=("$rate"); else pread_rates+=("$rate"); fi
    [ "$cur" = "$src" ] || rm -f "$cur"
    cur=$dst
}
# cp of the same image, same filesystem, made durable like the move
one_cp() {
    local t0 t1
    t0=$(now_ms)
    cp --sparse=always "$src" "$DIR/cp.img"
    sync "$DIR/cp.img"
    t1=$(now_ms)
    [ -z "$record" ] || cp_rates+=("$((data_mib * 1000 / (t1 - t0 > 0 ? t1 - t0 : 1)))")
    cp_kib=$(du -k "$DIR/cp.img" | cut -f1)
    rm -f "$DIR/cp.img"
}
# the host's writeback is noisy: rotate the order, sync before each run. Round
# -1 is a warm-up, not counted: the first writes into blocks this filesystem
# never used are much slower on a VM whose disk is a sparse file on its host.
for ((r = -1; r < ROUNDS; r++)); do
    record=$([ $r -ge 0 ] && echo 1)
    order=(cp uring pread)
    for ((k = 0; k < 3; k++)); do
        what=${order[$(((k + r + 3) % 3))]}
        sync
        if [ "$what" = cp ]; then one_cp; else one_move "$what" "$DIR/m-$what-$r.img"; fi
    done
done
move_kib=$(du -k "$cur" | cut -f1)
ctl "$SOCK" '{"cmd":"quit"}' >/dev/null
vmm_bg_wait 20

# latency: 3 x (2 s without a move, then a move held 2 s in the mirror
# phase), interleaved so that background load hits both alike; the intervals
# (0.5 s each) are sorted into "base" and "mirror" by line numbers
rm -f "$DIR"/m-*.img
lat=$DIR/lat0.img
truncate -s 256M "$lat"
SOCK=$TMP/lat.sock
vmm_bg lat --kernel "$(guest blkwriter)" --append "blocks=8192 rate=5000 report=2500" --mem 64M --disk "$lat" \
    --control "$SOCK"
wait_for 10 test -S "$SOCK" || vfail "ferry-vmm did not come up"
lines() { grep -c 'blkwriter progress' "$BG_OUT"; }
mphase() { jget "$(ctl "$SOCK" '{"cmd":"move-disk-status"}')" result.phase; }
in_mirror() { [ "$(mphase)" = mirror ]; }
sleep 1
windows=()
for k in 1 2 3; do
    a=$(lines); sleep 2; b=$(lines)
    ctl "$SOCK" "{\"cmd\":\"move-disk\",\"args\":{\"disk\":\"vda\",\"to\":\"$DIR/lat$k.img\",\"test_hold_ms\":2000}}" >/dev/null
    wait_for 10 in_mirror || vfail "no mirror phase"
    # no polling inside the window: a python per poll would take the CPU
    # the request thread needs (2-core hosts) and show up as guest latency
    c=$(lines); sleep 1.8; d=$(lines)
    while [ "$(mphase)" = mirror ]; do sleep 0.05; done
    [ "$(mphase)" = switched ] || vfail "move $k: $(ctl "$SOCK" '{"cmd":"move-disk-status"}')"
    rm -f "$DIR/lat$((k - 1)).img"
    windows+=("$a:$b:$c:$d")
done
st=$(ctl "$SOCK" '{"cmd":"move-disk-status"}')
ctl "$SOCK" '{"cmd":"quit"}' >/dev/null
vmm_bg_wait 20

python3 - "$BG_OUT" "${windows[*]}" "$MIB" "$data_mib" "$move_kib" "$cp_kib" "$FAIL_UNDER" \
    "${move_rates[*]}" "${pread_rates[*]}" "${cp_rates[*]}" "$st" <<'PY'
import json, re, statistics, sys
out, windows, mib, data, mkib, ckib, fail_under = sys.argv[1:8]
mv, pr, cp = ([int(x) for x in a.split()] for a in sys.argv[8:11])
st = json.loads(sys.argv[11])["result"]
lines = [l for l in open(out) if "blkwriter progress" in l]
p99 = [int(re.search(r"lat_p99_us=(\d+)", l).group(1)) for l in lines]
p50 = [int(re.search(r"lat_p50_us=(\d+)", l).group(1)) for l in lines]
base99, base50, mir99, mir50 = [], [], [], []
for w in windows.split():
    a, b, c, d = map(int, w.split(":"))
    # line i covers the interval before it: whole intervals inside each window
    base99 += p99[a + 1:b]; base50 += p50[a + 1:b]
    mir99 += p99[c + 1:d]; mir50 += p50[c + 1:d]
m, p, c = statistics.median(mv), statistics.median(pr), statistics.median(cp)
print("move-disk %s MiB image, %s MiB data: io_uring %d MiB/s, pread %d MiB/s, cp --sparse=always %d MiB/s "
      "(medians of %d); io_uring/cp = %.2f, pread/cp = %.2f; allocated after: move %d KiB, cp %d KiB"
      % (mib, data, m, p, c, len(mv), m / c, p / c, int(mkib), int(ckib)))
print("  runs: io_uring %s, pread %s, cp %s" % (mv, pr, cp))
if base99 and mir99:
    b, w = statistics.median(base99), statistics.median(mir99)
    print("guest write latency (5000 writes/s, medians of 0.5 s intervals): without a move p50 %d us p99 %d us; "
          "in the mirror phase p50 %d us p99 %d us (%.2f x); %d mirrored writes in the last move"
          % (statistics.median(base50), b, statistics.median(mir50), w, w / b if b else 0,
             st.get("mirrored_writes", 0)))
    print("  p99 per interval: without %s, mirror %s" % (base99, mir99))
else:
    print("guest write latency: not enough intervals (%d baseline, %d mirror)" % (len(base99), len(mir99)))
# the assertion compares the best runs: interference only ever slows a run down
bm, bc = max(mv), max(cp)
print("  best: io_uring %d MiB/s, cp %d MiB/s: %.2f" % (bm, bc, bm / bc))
if float(fail_under) > 0 and bm < float(fail_under) * bc:
    sys.exit("FAIL: move-disk copy rate %d MiB/s is under %s x cp's %d MiB/s (best runs)" % (bm, fail_under, bc))
PY
