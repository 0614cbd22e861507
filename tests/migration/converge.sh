#!/bin/bash
# Auto-converge: a guest that dirties memory faster than the (capped) link
# moves it. The dirtier rewrites 16 MiB at 8000 pages/s (~33 MB/s) against a
# 100 Mbit/s (~12 MB/s) cap, compression off.
#   1. With auto_converge off the migration cannot converge: it fails at its
#      round limit, the VM keeps running on the source, never slowed.
#   2. With the default (on), the engine slows the vCPUs until the last pages
#      fit the pause target: the migration completes, the status says how far
#      the vCPUs were slowed, and the guest's checker passes at the destination.
#   3. A migration cancelled as soon as the vCPUs are slowed gives the guest
#      back its full speed on the source (its paced rate, measured by the guest
#      itself). (That slowing works at all, 1 and 2 show: without it, no
#      convergence; with it, convergence.)
. "$(dirname "$0")/lib.sh"

rate=8000
slow='"bandwidth_mbps":100,"compress":"off"'
boot a 512M "mib=16 rate=$rate report_ms=250"
progress a 15 1

# pages_per_s of NAME's progress lines after line N (the guest's own rate)
rates_after() { grep -E '^dirtier pass=[0-9]+ pages=[0-9]+ ok ' "$TMP/$1.out" | tail -n +"$(($2 + 1))" |
                sed -nE 's/.* pages_per_s=([0-9]+) .*/\1/p'; }
nlines() { grep -cE '^dirtier pass=[0-9]+ pages=[0-9]+ ok ' "$TMP/$1.out"; }

# ---- 1. off: no convergence, no slowing, the VM runs on ----
incoming d1 7890
migrate a 7890 "$slow,\"auto_converge\":false,\"max_rounds\":6"
wait_phase a 60 failed || fail "without auto-converge the migration ended '$(ms phase)', expected failed (not converging)"
[[ "$(ms error)" == *"not converging"* ]] || fail "failed for another reason: $(ms error)"
[ "$(ms throttle_pct)" = 0 ] || fail "auto_converge=false, yet the vCPUs were slowed $(ms throttle_pct)%"
[ "$(vm_state a)" = running ] || fail "source is '$(vm_state a)' after the failed migration"
wait_exit d1 10
progress a 15 1

# ---- 3. cancelled while slowed: full speed again ----
incoming d2 7891
# The cancel must land between the first slowing and convergence, a few
# rounds of ~1.3 s. In the lab's emulator the test's own steps take longer
# than that: there the cap shrinks SLOW times (tests/limits.sh), and the
# rounds, of the same 16 MiB, stretch with it.
migrate a 7891 "\"bandwidth_mbps\":$((100 / SLOW)),\"compress\":\"off\""
slowed() { r=$(ctl a '{"cmd":"migrate-status"}'); [ "$(jget "$r" result.throttle_pct)" -gt 0 ] 2>/dev/null; }
wait_for 60 slowed || fail "the vCPUs were not slowed within 60 s: $(ctl a '{"cmd":"migrate-status"}')"
ctl a '{"cmd":"migrate-cancel"}' >/dev/null
wait_phase a 10 cancelled || fail "after migrate-cancel the phase is '$(ms phase)'"
wait_exit d2 10
n=$(nlines a)
progress a 15 4
full=$(rates_after a "$((n + 1))" | sort -n | tail -n1)   # the first line may span the cancel
[ -n "$full" ] && [ "$full" -ge $((rate * 9 / 10)) ] ||
    fail "after the cancel the guest writes ${full:-?} pages/s, paced at $rate: still slowed"

# ---- 2. on (the default): converges by slowing the guest ----
incoming d3 7892
migrate a 7892 "$slow"
wait_phase a 120 completed || fail "with auto-converge the migration ended '$(ms phase)': $(ms error)"
pct=$(ms throttle_pct)
[ "$pct" -ge 20 ] || fail "completed without slowing the vCPUs (throttle_pct=$pct): the case did not need auto-converge"
grep -q "vCPUs slowed up to $pct%" "$TMP/a.err" || fail "the source's log does not say how far it slowed the vCPUs"
wait_for 10 test -S "$TMP/d3.sock" || fail "d3 has no control socket"
[ "$(vm_state d3)" = running ] || fail "d3 is '$(vm_state d3)', expected running"
progress d3 20 2
seq=$(console_sequence a d3) || fail "console across the hop: $seq"
n=$(nlines d3)
progress d3 15 3
full=$(rates_after d3 "$((n + 1))" | sort -n | tail -n1)
[ -n "$full" ] && [ "$full" -ge $((rate * 9 / 10)) ] ||
    fail "at the destination the guest writes ${full:-?} pages/s, paced at $rate: still slowed"

finish "slowed_to=$pct% rounds=$(ms round) downtime_ms=$(ms downtime_ms) full_rate=$full"
