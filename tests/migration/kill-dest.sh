#!/bin/bash
# The destination dies (SIGKILL) mid-migration: the source reports the
# migration failed with a connection error and keeps running the VM, whose
# dirtier keeps verifying its memory.
#  1. during pre-copy (throttled, so round 0 lasts);
#  2. during the switchover (VM paused on the source, final pages, state and
#     digest on the wire, or COMPLETE sent and the ACK awaited). A 2 GiB VM
#     with verify=strict (the digest in the pause) makes the window a few hundred ms; migrate-status is
#     polled every 5 ms and the destination killed as soon as it reads
#     "switchover".
. "$(dirname "$0")/lib.sh"

# 1. pre-copy
boot a 512M "$DIRTIER"
progress a 15 1
incoming d1 7820
migrate a 7820 '"bandwidth_mbps":200,"compress":"off"'
"$PYTHON" "$MIGCTL" kill-at "$TMP/a.sock" 15 precopy "${VM_PID[d1]}" >"$TMP/kill1.json" 2>/dev/null ||
    fail "could not kill d1 during pre-copy: $(cat "$TMP/kill1.json")"
kill9 d1
wait_phase a 15 failed || fail "after the destination died in pre-copy the phase is '$(ms phase)', expected failed"
err1=$(ms error)
[[ $err1 =~ (connection|Connection|reset|Broken\ pipe|closed) ]] ||
    fail "pre-copy kill: error '$err1' does not name the lost connection"
[ "$(vm_state a)" = running ] || fail "source is '$(vm_state a)' after losing d1, expected running"
progress a 15 2
ctl a '{"cmd":"quit"}' >/dev/null
wait_exit a 10
[ "$RC" = 0 ] || fail "a exited with status $RC after quit"
seq=$(console_sequence a) || fail "source console: $seq"

# 2. switchover
boot b 2G "$DIRTIER"
progress b 15 1
incoming d2 7821
migrate b 7821 '"verify":"strict"'   # the in-pause digest of 2 GiB keeps the window open
"$PYTHON" "$MIGCTL" kill-at "$TMP/b.sock" 60 switchover "${VM_PID[d2]}" >"$TMP/kill2.json" 2>"$TMP/kill2.err"
krc=$?
[ $krc = 3 ] && fail "switchover kill: never saw phase switchover before '$(jget "$(cat "$TMP/kill2.json")" result.phase)' (the window was missed)"
[ $krc = 0 ] || fail "switchover kill: migctl status $krc: $(cat "$TMP/kill2.json" "$TMP/kill2.err")"
kill9 d2
wait_phase b 70 failed
case "$(ms phase)" in
failed) ;;
completed) fail "switchover kill: the source says completed although d2 was killed in the switchover (ACK(resumed) beat the kill?)" ;;
*) fail "after killing d2 in the switchover the source phase is '$(ms phase)' ($(ms error))" ;;
esac
err2=$(ms error)
[[ $err2 =~ (connection|Connection|reset|Broken\ pipe|closed) ]] ||
    fail "switchover kill: error '$err2' does not name the lost connection"
st=$(vm_state b)
[ "$st" = running ] || fail "source is '$st' after losing the destination in the switchover, expected running"
progress b 20 2
seq=$(console_sequence b) || fail "source console: $seq"
killed_at=$(jget "$(cat "$TMP/kill2.json")" result.elapsed_ms)

finish "precopy_kill_error='$err1' switchover_kill_error='$err2' (killed ${killed_at}ms into the migration)"
