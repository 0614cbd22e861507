#!/bin/bash
# KNOWN BUG (not registered in meson.build until fixed): the connection dies
# right after COMPLETE, before the source reads the destination's answer
# (migtool proxy drop-ack: the destination's ACK(resumed) is dropped and the
# source's connection cut, as a network failure or a middlebox reset would).
# The destination, whose ACK write succeeded, runs the VM. The source must
# then NOT run it too: it cannot tell "destination died" from "answer lost",
# so it must keep the VM paused and report in-doubt. Today it resumes
# (phase failed, "migration connection closed by peer") and both copies run.
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
grep -q 'ACK status 2' "$TMP/p.log" || { show "$TMP/p.log" proxy; fail "the destination did not accept the VM"; }
wait_for 10 test -S "$TMP/d.sock" || fail "the destination has no control socket"
sleep 1
src=$(vm_state a) dst=$(vm_state d)
if [ "$src" = running ] && [ "$dst" = running ]; then
    progress a 10 1
    progress d 10 1
    fail "split brain: the VM runs on both sides (source phase '$phase': $err; both dirtiers progress)"
fi
[ "$phase" = in-doubt ] || fail "source phase '$phase' ($err), expected in-doubt"
[ "$src" = paused ] || fail "source VM is '$src', expected paused while in doubt"
finish "source in-doubt ($err), destination $dst"
