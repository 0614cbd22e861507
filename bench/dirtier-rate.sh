#!/bin/bash
# Dirtier rates (informational): first-touch ns/page (pass 1: every page
# faulted in by KVM) and the steady-state pages/s (median over passes 2..N),
# for one qword per page (stride=0) and whole pages (stride=1). Fails only if
# the dirtier itself fails.
# shellcheck source=tests/func/lib.sh
. "$SRC/tests/func/lib.sh"
mib=${DIRTIER_MIB:-256}
passes=${DIRTIER_PASSES:-10}
for stride in 0 1; do
    vmm 240 --kernel "$(guest dirtier)" --append "mib=$mib passes=$passes stride=$stride" \
        --mem $((mib + 64))M --console none
    expect_exit 0
    expect_line "$OUT" "^dirtier: done passes=$passes "
    python3 - "$OUT" "$stride" "$mib" <<'PY' || vfail "cannot summarise the dirtier's output"
import re, statistics, sys
lines = open(sys.argv[1]).read().splitlines()
pat = re.compile(r"^dirtier pass=(\d+) pages=(\d+) ok pages_per_s=(\d+) ns_per_page=([\d.]+) "
                 r"verify_ns_per_page=(\d+) max_gap_us=(\d+)$")
rows = [m.groups() for m in map(pat.match, lines) if m]
if len(rows) < 2:
    sys.exit("dirtier-rate: fewer than 2 progress lines")
first, steady = rows[0], rows[1:]
pps = statistics.median(int(r[2]) for r in steady)
npp = statistics.median(float(r[3]) for r in steady)
gap = statistics.median(int(r[5]) for r in steady)
print("dirtier stride=%s mib=%s: first_touch_ns_per_page=%s steady_pages_per_s=%d "
      "steady_ns_per_page=%.2f (median of %d passes) steady_max_gap_us=%d (median)"
      % (sys.argv[2], sys.argv[3], first[3], pps, npp, len(steady), gap))
PY
done
exit 0
