#!/bin/bash
# A dirtier rewrites a 256 MiB working set (and verifies all of it after
# each pass) while the VM migrates A -> B -> A -> B, each hop into a fresh
# `--incoming` ferry-vmm whose RAM is a file. After each hop: the source
# reports completed with a downtime, the destination is running and the
# dirtier keeps passing its own whole-set verification there. The guest's
# console across all four processes is one gapless run of ok passes. At the
# end the checker verifies the last destination's memory file. Hop 2's
# destination has anonymous RAM faulted in before it listens (--mem
# --prealloc); first, one prepared for another size refuses the VM, which
# runs on at the source.
. "$(dirname "$0")/lib.sh"

MEM=512M
HOPS=(a1 b1 a2 b2)
PORT0=7800
summary=()

boot a1 $MEM "$DIRTIER"
progress a1 15 1

incoming small "$((PORT0 + 9))" --mem 256M --prealloc
migrate a1 "$((PORT0 + 9))"
wait_phase a1 30 failed || fail "a migration into a 256 MiB destination ended '$(ms phase)', expected failed"
wait_exit small 10
expect_dest_error small "memory size mismatch: the VM has 512 MiB, this destination was started with --mem 256 MiB"
[ "$(vm_state a1)" = running ] || fail "a1 is '$(vm_state a1)' after the refused migration, expected running"

for i in 1 2 3; do
    src=${HOPS[$((i - 1))]} dst=${HOPS[$i]} port=$((PORT0 + i - 1))
    if [ "$i" = 2 ]; then
        incoming "$dst" "$port" --mem $MEM --prealloc
    else
        incoming "$dst" "$port" --mem-path "$RAMDIR/$dst.ram"
    fi
    migrate "$src" "$port" '"downtime_ms":50'
    wait_phase "$src" 60 completed || fail "hop $i ($src -> $dst): migration ended '$(ms phase)': $(ms error)"
    read -r downtime verify total rounds final < <(ms downtime_ms verify_ms total_ms round final_pages | paste -sd' ')
    [[ $downtime =~ ^[0-9]+$ ]] || fail "hop $i: no downtime_ms in $MS"
    breakdown=$(ms pause_breakdown_us | tr -d ' ')
    wait_for 10 test -S "$TMP/$dst.sock" || fail "hop $i: $dst has no control socket after the migration"
    st=$(vm_state "$dst")
    [ "$st" = running ] || fail "hop $i: $dst is '$st', expected running"
    progress "$dst" 20 2
    [ "$(vm_state "$src")" = migrated ] || fail "hop $i: $src is '$(vm_state "$src")', expected migrated"
    # the source stops for good: nothing more on its console
    n=$(wc -l <"$TMP/$src.out")
    ctl "$src" '{"cmd":"quit"}' >/dev/null
    wait_exit "$src" 10
    [ "$RC" = 0 ] || fail "hop $i: $src exited with status $RC after quit"
    [ "$(wc -l <"$TMP/$src.out")" = "$n" ] || fail "hop $i: $src printed guest output after the handover"
    rm -f "$RAMDIR/$src.ram"
    seq=$(console_sequence "${HOPS[@]:0:$((i + 1))}") || fail "hop $i: console across hops: $seq"
    summary+=("hop$i downtime_ms=$downtime verify_ms=$verify guest_max_gap_us=$(first_gap "$dst") rounds=$rounds total_ms=$total final_pages=$final pause_breakdown_us=$breakdown")
done

# Stop the last VM mid-pass and check its RAM from the outside.
ctl b2 '{"cmd":"quit"}' >/dev/null
wait_exit b2 10
last=$(last_pass b2)
[ "$RC" = 0 ] || fail "b2 exited with status $RC after quit"
seq=$(console_sequence "${HOPS[@]}") || fail "console across hops: $seq"
"$FERRY_VMM" --kernel "$(guest checker)" --mem $MEM --mem-path "$RAMDIR/b2.ram" \
    </dev/null >"$TMP/check.out" 2>"$TMP/check.err"
rc=$?
sanitizer_clean "$TMP/check.err" || { show "$TMP/check.err" "checker stderr"; fail "sanitizer report from the checker run"; }
[ $rc = 0 ] || { show "$TMP/check.out" checker; show "$TMP/check.err" "checker stderr"; fail "checker exited $rc on b2's memory"; }
gen=$(sed -nE 's/^checker: 65536 pages ok gen=([0-9]+) .*/\1/p' "$TMP/check.out")
[ -n "$gen" ] || { show "$TMP/check.out" checker; fail "checker did not report 65536 pages ok"; }
[ "$gen" -eq "$last" ] || [ "$gen" -eq $((last + 1)) ] ||
    fail "checker found generation $gen in b2's memory, but the dirtier last reported pass $last"

finish "${summary[*]} passes=$seq checker_gen=$gen"
