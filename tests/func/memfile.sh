#!/bin/bash
# The dirtier leaves its working set in a --mem-path file; the checker, run
# on the same file in a new ferry-vmm, verifies it: it passes and reports
# the generation of the dirtier's last pass; a flipped bit in a stamp or a
# wiped header makes it exit 1 naming the page.
# shellcheck source=tests/func/lib.sh
. "$(dirname "$0")/lib.sh"
ram=$TMP/ram
mem=64M

# 1. dirtier: 3 passes over 32 MiB (8192 pages).
vmm 30 --kernel "$(guest dirtier)" --append "mib=32 passes=3" --mem $mem --mem-path "$ram" --console none
expect_exit 0
expect_line "$OUT" '^dirtier: done passes=3 pages=8192 '
last_pass=$(sed -nE 's/^dirtier pass=([0-9]+) pages=8192 ok .* max_gap_us=[0-9]+$/\1/p' "$OUT" | tail -n1)
[ "$last_pass" = 3 ] || vfail "last progress line reports pass '$last_pass', expected 3"
[ "$(stat -c %s "$ram")" -eq $((64 << 20)) ] || fail "memory file is $(stat -c %s "$ram") bytes, expected 64 MiB"

eval "$(dirtier_hdr "$ram")"
[ "$hdr_magic" = $((0x3152454954524944)) ] || fail "dirtier header magic $hdr_magic in the memory file"
[ "$hdr_gen $hdr_done $hdr_verified $hdr_npages" = "3 1 3 8192" ] ||
    fail "dirtier header: gen=$hdr_gen done=$hdr_done verified=$hdr_verified npages=$hdr_npages, expected 3 1 3 8192"
[ "$hdr_tsc_khz" -gt 0 ] && [ "$hdr_max_gap_ns" -gt 0 ] ||
    fail "dirtier header: tsc_khz=$hdr_tsc_khz max_gap_ns=$hdr_max_gap_ns (expected both > 0)"

# 2. checker on the same RAM: passes, same generation, dirtier done.
check() {   # check EXPECTED_STATUS
    vmm 30 --kernel "$(guest checker)" --append "expect_done=1" --mem $mem --mem-path "$ram" --console none
    expect_exit "$1"
}
check 0
expect_line "$OUT" "^checker: 8192 pages ok gen=$last_pass cursor=8192 cursor_qword=0 done=1 stride=0\$" \
    "checker did not report 8192 pages ok at gen=$last_pass (the dirtier's last pass)"
expect_line "$OUT" "^testdev: result $last_pass\$"

# 3. one flipped bit in the stamp of page 1234 (qword 0 at GPA base + 1234 * 4 KiB).
page=1234
off=$((DIRTIER_BASE + page * 4096))
flip_bit "$ram" $((off + 5)) 3           # in the generation half of the stamp
check 1
expect_line "$OUT" "^checker: page $page \\(gpa $(printf '0x%x' $off)\\) qword 0 holds " \
    "checker did not name page $page"
flip_bit "$ram" $((off + 5)) 3           # put it back: passes again
check 0
expect_line "$OUT" "^checker: 8192 pages ok gen=3 "

# 4. a stamp with the right generation but another page's index.
flip_bit "$ram" $((DIRTIER_BASE + 8191 * 4096)) 1
check 1
expect_line "$OUT" "^checker: page 8191 \\(gpa 0x2fff000\\) qword 0 holds 0x300001ffd expected 0x300001fff " \
    "checker did not name page 8191"
flip_bit "$ram" $((DIRTIER_BASE + 8191 * 4096)) 1

# 5. a strided working set: bit flipped in qword 24 of page 77 (stride 8).
vmm 30 --kernel "$(guest dirtier)" --append "mib=8 passes=2 stride=8" --mem $mem --mem-path "$ram" --console none
expect_exit 0
check 0
expect_line "$OUT" "^checker: 2048 pages ok gen=2 cursor=2048 cursor_qword=0 done=1 stride=8\$"
flip_bit "$ram" $((DIRTIER_BASE + 77 * 4096 + 24 * 8)) 0
check 1
expect_line "$OUT" "^checker: page 77 \\(gpa 0x104d000\\) qword 24 holds 0x20000004c expected 0x20000004d " \
    "checker did not name page 77 qword 24"

# 6. no dirtier header (magic wiped) and a fresh, all-zero RAM file.
flip_bit "$ram" $((DIRTIER_BASE + 64))
check 1
expect_line "$OUT" '^checker: no dirtier header at 0x1000040 '
rm -f "$ram"
check 1
expect_line "$OUT" '^checker: no dirtier header at 0x1000040 \(magic 0x0\)'
exit 0
