#!/bin/bash
# A valid migration whose end arrives all at once: migtool proxy holds STATE
# and DIGEST and delivers them with COMPLETE in one write, as a destination
# lagging behind the stream would find them queued. The destination must
# still verify the digest, take the VM and run it; the source completes.
# (Guards the hand-off between the destination's background hasher, started
# at STATE, and the digest comparison at COMPLETE.)
MIG_SEC=insecure MIG_STREAMS=1   # migtool reads and writes the plaintext stream itself
. "$(dirname "$0")/lib.sh"
: "${MIGTOOL:?MIGTOOL is not set (run through meson test)}"

boot a 512M "$DIRTIER"
progress a 15 1
incoming d 7860
"$MIGTOOL" proxy 127.0.0.1:7861 127.0.0.1:7860 burst-tail >"$TMP/p.log" 2>&1 &
wait_for 10 grep -qs '^proxy: listening' "$TMP/p.log" || fail "the proxy does not listen"
migrate a 7861 '"verify":"strict"'   # DIGEST before COMPLETE
wait_phase a 60 completed,failed
if [ "$(ms phase)" != completed ]; then
    alive d || { wait_exit d 1; [ "$RC" -ge 128 ] && fail "the destination died of signal $((RC - 128)) at the end of the stream (source: $(ms phase): $(ms error))"; }
    fail "migration ended '$(ms phase)': $(ms error)"
fi
grep -q '^proxy: sent 2 message(s) and COMPLETE in one write' "$TMP/p.log" || fail "the proxy did not deliver STATE, DIGEST and COMPLETE together"
grep -q 'memory digest verified' "$TMP/d.err" || fail "the destination did not report 'memory digest verified'"
wait_for 10 test -S "$TMP/d.sock" || fail "the destination has no control socket"
[ "$(vm_state d)" = running ] || fail "the destination is '$(vm_state d)', expected running"
progress d 20 2
seq=$(console_sequence a d) || fail "console across the hop: $seq"
finish "downtime_ms=$(ms downtime_ms) verify_ms=$(ms verify_ms)"
