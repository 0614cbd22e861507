#!/bin/bash
# The connection dies at the worst moment: right after COMPLETE, the proxy
# drops the destination's answer (ACK ready: verified and loaded) and cuts the
# source off. The VM must keep running exactly once: the source never wrote
# COMMIT, so it resumes; the destination never read COMMIT, so it discards
# its copy and exits with an error, never having run the guest.
MIG_SEC=insecure MIG_STREAMS=1   # migtool reads and writes the plaintext stream itself
. "$(dirname "$0")/lib.sh"
: "${MIGTOOL:?MIGTOOL is not set (run through meson test)}"

boot a 512M "$DIRTIER"
progress a 15 1
incoming d 7890
"$MIGTOOL" proxy 127.0.0.1:7891 127.0.0.1:7890 drop-ack >"$TMP/p.log" 2>&1 &
wait_for 10 grep -qs '^proxy: listening' "$TMP/p.log" || fail "the proxy does not listen"
migrate a 7891
wait_phase a 90 completed,failed,in-doubt
phase=$(ms phase) err=$(ms error)
wait_for 10 grep -q '^proxy: dropped ' "$TMP/p.log" || { show "$TMP/p.log" proxy; fail "the proxy never saw COMPLETE"; }
grep -q 'ACK status 1' "$TMP/p.log" || { show "$TMP/p.log" proxy; fail "the destination did not report ready"; }
[ "$phase" = failed ] || fail "source phase '$phase' ($err), expected failed (COMMIT never sent)"
[ "$(vm_state a)" = running ] || fail "the source VM is not running after the failed switchover"
progress a 10 1
wait_exit d 30
expect_dest_error d 'closed|COMMIT'
finish "source resumed ($err); destination discarded its copy"
