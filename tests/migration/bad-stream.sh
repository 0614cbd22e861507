#!/bin/bash
# Crafted migration streams (tests/migration/migtool.c, built on the
# project's own framing code) against `ferry-vmm --incoming`. For each: the
# destination exits 1 (never a signal, no sanitizer report) with one
# "incoming migration failed: ..." line naming the problem, tells the
# "source" why in ACK(rejected) (once it knows the peer speaks the
# protocol), and never runs a guest. CASES=... runs a
# subset.
MIG_SEC=insecure MIG_STREAMS=1   # migtool reads and writes the plaintext stream itself
. "$(dirname "$0")/lib.sh"
: "${MIGTOOL:?MIGTOOL is not set (run through meson test)}"

# case | ack: the reason must come back in ACK(rejected) / any: it may (a
# stream that never was a Ferry stream is just dropped) | ERE the error must match
table='
flip              | ack | MEM_PAGES message checksum mismatch \(payload 0x[0-9a-f]{8}, header 0x[0-9a-f]{8}\)
truncated         | ack | stream truncated: MEM_PAGES message ended early \(2112 bytes short\)
truncated-header  | ack | stream truncated: connection closed after 7 of 16 header bytes
version           | ack | incompatible migration protocol version 4\.0 \(this side speaks 3\.0\)
oversized         | ack | MEM_PAGES message of 16777217 bytes exceeds the 16777216-byte limit
oversized-max     | ack | MEM_PAGES message of 4294967295 bytes exceeds the 16777216-byte limit
garbage           | any | bad magic 0x[0-9a-f]{8} \(not a Ferry stream, or out of sync\)
outside-ram       | ack | page at GPA 0x40000000 is outside guest RAM
outside-ram-wrap  | ack | page at GPA 0xfffffffffffff000 is outside guest RAM
unaligned         | ack | MEM_PAGES: page 0 has unknown flags 0x800
batch-count       | ack | MEM_PAGES: page 1 has unknown flags 0x[0-9a-f]+
complete-nostate  | ack | COMPLETE before any device state
cpuid             | ack | CPU lacks features the VM uses: CPUID leaf 0x7\.0 ebx bits 0x[0-9a-f]{8}
bad-type          | ack | unknown message type 42
bad-flags         | ack | COMPLETE message has unknown flags 0x8000
bad-json          | ack | VM configuration is not a JSON object
state-garbage     | ack | [Ss]tate|[Ss]ection
second-hello      | ack | unexpected HELLO message
ack-from-source   | ack | unexpected ACK message
eof-after-hello   | ack | connection closed by peer
stray-join        | any | connection closed by peer|stray connection: not a stream of this migration
'

port=7840 n=0 results=()
while IFS='|' read -r c ack re; do
    c=${c// /} ack=${ack// /}
    [ -n "$c" ] || continue
    re=${re# }
    if [ -n "${CASES:-}" ] && [[ " $CASES " != *" $c "* ]]; then continue; fi
    d=d_$c
    incoming "$d" $port
    "$MIGTOOL" send "127.0.0.1:$port" "$c" >"$TMP/$c.tool" 2>&1
    trc=$?
    [ $trc = 0 ] || { show "$TMP/$c.tool" migtool; fail "$c: migtool could not play the case (status $trc)"; }
    wait_exit "$d" 10
    expect_dest_error "$d" "$re"
    # the peer was told, with the same reason
    if grep -q "^reply: ACK rejected" "$TMP/$c.tool" || [ "$ack" = ack ]; then
        grep -qE "^reply: ACK rejected: .*($re)" "$TMP/$c.tool" ||
            { show "$TMP/$c.tool" "migtool ($c)"; fail "$c: the destination did not send ACK(rejected) naming the problem"; }
    fi
    if [ "$c" = stray-join ]; then   # the stray refused, the real stream accepted
        grep -q '^reply: ACK rejected: stray connection: not a stream of this migration' "$TMP/$c.tool" &&
            [ "$(grep -c '^reply: ACK ready' "$TMP/$c.tool")" = 2 ] ||
            { show "$TMP/$c.tool" "migtool ($c)"; fail "$c: the stray JOIN was not refused, or the right one not accepted"; }
    fi
    results+=("$c")
    port=$((port + 1)) n=$((n + 1))
done <<<"$table"
[ $n -gt 0 ] || fail "no case selected"
finish "$n cases ok ($FERRY_VMM)"
