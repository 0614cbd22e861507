#!/bin/bash
# The control socket (docs/control-socket.md) on a running dirtier:
# status; pause stops the guest (no progress for 1 s, and the guest itself
# measures a ~1 s TSC gap); resume; bad requests get ok:false and leave the
# VM running; quit makes ferry-vmm exit 0 and remove its socket. Then the
# checker verifies the RAM the interrupted dirtier left in its --mem-path file.
# shellcheck source=tests/func/lib.sh
. "$(dirname "$0")/lib.sh"
sock=$TMP/ctl.sock ram=$TMP/ram
dirtier=$(guest dirtier)
progress='^dirtier pass=[0-9]+ pages=4096 ok .* max_gap_us=[0-9]+$'

vmm_bg vm --kernel "$dirtier" --append "mib=16 report_ms=100" --cpus 2 --mem 64M \
    --mem-path "$ram" --control "$sock" --console none
OUT=$BG_OUT ERR=$BG_ERR RC=running
nprog() { count_lines "$BG_OUT" "$progress"; }
have_progress() { [ "$(nprog)" -ge "$1" ]; }
wait_for 20 have_progress 2 || vfail "no dirtier progress within 20 s"
[ -S "$sock" ] || vfail "no control socket at $sock"

# req JSON...: one connection, one reply per request; REPLY = the last reply,
# REPLIES = all of them (one per line).
req() {
    REPLIES=$(ctl "$sock" "$@") || vfail "control request failed: $*"
    REPLY=$(tail -n1 <<<"$REPLIES")
}
# ---- status ----
req '{"cmd":"status"}'
expect_json "$REPLY" ok=true result.state=running result.vcpus=2 result.memory_mib=64 \
    result.boot=micro-guest result.kernel="$dirtier"

# ---- vcpus: one entry per vCPU, read in a brief pause; the VM runs on ----
req '{"cmd":"vcpus"}' '{"cmd":"status"}'
expect_json "$(head -n1 <<<"$REPLIES")" ok=true result.vcpus.0.id=0 result.vcpus.1.id=1
expect_json "$REPLY" ok=true result.state=running
lines=$("${FERRY_CLI:?FERRY_CLI is not set (run through meson test)}" -S "$sock" vm vcpus) || vfail "ferry vm vcpus failed"
[ "$(grep -cE '^vcpu [01]: .*rip=0x[0-9a-f]+' <<<"$lines")" -eq 2 ] ||
    vfail "ferry vm vcpus: expected a line with rip= per vCPU, got: $lines"

# ---- pause: no progress for a second ----
req '{"cmd":"pause"}'
expect_json "$REPLY" ok=true result.state=paused
n1=$(nprog)
sleep 1
n2=$(nprog)
[ "$n2" -eq "$n1" ] || vfail "$((n2 - n1)) progress line(s) while paused"
req '{"cmd":"status"}' '{"cmd":"pause"}'
expect_json "$(head -n1 <<<"$REPLIES")" ok=true result.state=paused
expect_json "$REPLY" ok=false error~*paused*    # already paused
n3=$(nprog)
[ "$n3" -eq "$n1" ] || vfail "$((n3 - n1)) progress line(s) while paused"

# ---- resume: progress again, and the guest saw the pause as a TSC gap ----
req '{"cmd":"resume"}'
expect_json "$REPLY" ok=true result.state=running
wait_for 10 have_progress $((n1 + 2)) || vfail "no progress within 10 s of resume"
first=$(grep -E "$progress" "$BG_OUT" | sed -n "$((n1 + 1))p")
gap_us=$(sed -E 's/.* max_gap_us=([0-9]+)$/\1/' <<<"$first")
[ "$gap_us" -ge 900000 ] && [ "$gap_us" -le 60000000 ] ||
    vfail "first progress line after a 1 s pause reports max_gap_us=$gap_us (expected >= 900000): $first"

# ---- bad requests: ok:false, the connection stays usable, the VM runs on ----
long=$(python3 -c 'print("{\"cmd\":\"status\",\"pad\":\"" + "x" * 70000 + "\"}")')
req '{"cmd":"frobnicate"}' '{"cmd":' 'not json at all' '[1,2]' '{"args":{}}' '{"cmd":7}' \
    '{"cmd":"status","args":[1]}' '{"cmd":"resume"}' '{"cmd":"bogus","id":"abc"}' \
    '{"cmd":"status","id":42}'
mapfile -t r <<<"$REPLIES"
[ "${#r[@]}" -eq 10 ] || vfail "${#r[@]} replies to 10 requests: $REPLIES"
expect_json "${r[0]}" ok=false "error~unknown command *frobnicate*" id=\<missing\>
expect_json "${r[1]}" ok=false "error~*malformed JSON*"
expect_json "${r[2]}" ok=false "error~*malformed JSON*"
expect_json "${r[3]}" ok=false "error~?*"          # not an object
expect_json "${r[4]}" ok=false "error~*cmd*"       # no cmd
expect_json "${r[5]}" ok=false "error~*cmd*"       # cmd not a string
expect_json "${r[6]}" ok=false "error~*args*"      # args not an object
expect_json "${r[7]}" ok=false "error~*not paused*" # resume while running
expect_json "${r[8]}" ok=false "error~unknown command *bogus*" id=abc
expect_json "${r[9]}" ok=true id=42 result.state=running
# a line over 64 KiB: an error reply (then the server may close this connection)
reply=$(ctl "$sock" "$long" 2>&1 | head -n1)
expect_json "$reply" ok=false "error~?*"
# a client that connects and goes away without a word
python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.close()' "$sock"

n4=$(nprog)
wait_for 10 have_progress $((n4 + 2)) || vfail "no progress after the bad requests"
req '{"cmd":"status"}'
expect_json "$REPLY" ok=true result.state=running

# ---- quit ----
last_pass=$(grep -E "$progress" "$BG_OUT" | tail -n1 | sed -E 's/^dirtier pass=([0-9]+) .*/\1/')
req '{"cmd":"quit"}'
expect_json "$REPLY" ok=true result.state=stopping
vmm_bg_wait 10
expect_exit 0
[ -e "$sock" ] && vfail "control socket $sock left behind after quit"

# ---- what the interrupted dirtier left in RAM ----
eval "$(dirtier_hdr "$ram")"
[ "$hdr_done" -eq 0 ] || fail "dirtier header says done=$hdr_done for an endless run"
[ "$hdr_gen" -ge "$last_pass" ] || fail "dirtier header gen=$hdr_gen < last reported pass $last_pass"
[ "$hdr_max_gap_ns" -ge 900000000 ] ||
    fail "dirtier header max_gap_ns=$hdr_max_gap_ns: the 1 s pause is missing"
vmm 30 --kernel "$(guest checker)" --mem 64M --mem-path "$ram" --console none
expect_exit 0
expect_line "$OUT" "^checker: 4096 pages ok gen=$hdr_gen cursor=[0-9]+ cursor_qword=0 done=0 stride=0\$"
exit 0
