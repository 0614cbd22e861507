#!/bin/bash
# migrate-cancel during pre-copy: the migration ends "cancelled", the VM
# never stops running on the source (its dirtier keeps verifying), the
# destination gives up with an error and never runs the guest, and the same
# source then migrates to a new destination.
. "$(dirname "$0")/lib.sh"

boot a 512M "$DIRTIER"
progress a 15 1

incoming d1 7810
migrate a 7810 '"bandwidth_mbps":100,"compress":"off"'   # the dirtier's pages squeeze 50-fold
# well into round 0: 100 Mbit/s moves ~12 MB/s, 256 MiB take ~20 s
sent_8m() { [ "$(jget "$(ctl a '{"cmd":"migrate-status"}')" result.bytes_sent)" -ge $((8 << 20)) ] 2>/dev/null; }
wait_for 15 sent_8m ||
    fail "the migration did not get 8 MiB into pre-copy in 15 s: $(ctl a '{"cmd":"migrate-status"}')"
r=$(ctl a '{"cmd":"migrate-status"}' '{"cmd":"migrate-cancel"}' | tail -n1)
[ "$(jget "$r" ok)" = true ] || fail "migrate-cancel refused: $r"
t_cancel=$(date +%s%N)
wait_phase a 10 cancelled || fail "after migrate-cancel the phase is '$(ms phase)' (error: $(ms error)), expected cancelled"
cancel_ms=$((($(date +%s%N) - t_cancel) / 1000000))
[ "$(ms error)" = "cancelled by the operator" ] || fail "cancelled migration reports error '$(ms error)'"

# a second cancel has nothing to cancel
r=$(ctl a '{"cmd":"migrate-cancel"}')
[ "$(jget "$r" ok)" = false ] || fail "a second migrate-cancel succeeded: $r"

st=$(vm_state a)
[ "$st" = running ] || fail "source is '$st' after the cancel, expected running"
progress a 15 2

wait_exit d1 10
expect_dest_error d1 'closed|abort|cancel'
d1_err=$(tail -n1 "$TMP/d1.err")

# the same source migrates fine afterwards
incoming d2 7811
migrate a 7811
wait_phase a 60 completed || fail "migration after the cancel ended '$(ms phase)': $(ms error)"
downtime=$(ms downtime_ms)
wait_for 10 test -S "$TMP/d2.sock" || fail "d2 has no control socket after the migration"
[ "$(vm_state d2)" = running ] || fail "d2 is '$(vm_state d2)' after the migration, expected running"
progress d2 20 2
seq=$(console_sequence a d2) || fail "console across the hop: $seq"

finish "cancel_to_cancelled_ms=$cancel_ms d1_error='${d1_err#ferry-vmm: }' then downtime_ms=$downtime guest_max_gap_us=$(first_gap d2)"
