#!/bin/bash
# The source dies (SIGKILL) during pre-copy: the destination exits non-zero
# with a clear error about the lost connection and never runs the guest
# (no console output at all), both when the kill lands between messages
# and, most likely, inside one (a throttled stream of 1 MiB messages).
. "$(dirname "$0")/lib.sh"

boot a 512M "$DIRTIER"
progress a 15 1
incoming d 7830
migrate a 7830 '"bandwidth_mbps":200,"compress":"off"'
"$PYTHON" "$MIGCTL" kill-at "$TMP/a.sock" 15 precopy "${VM_PID[a]}" >"$TMP/kill.json" 2>/dev/null ||
    fail "could not kill the source during pre-copy: $(cat "$TMP/kill.json")"
kill9 a
sent=$(jget "$(cat "$TMP/kill.json")" result.bytes_sent)
wait_exit d 15
expect_dest_error d 'connection closed|closed by peer|truncated|discarded|reset by peer|closed or reset'

finish "source killed after $sent bytes; destination: '$(tail -n1 "$TMP/d.err" | sed 's/^ferry-vmm: //')' (exit $RC)"
