#!/bin/bash
# tests/lab/linux-migrate-diag.sh PID... - what the KVM VMs of the ferry-vmm processes PID
# are doing, for a lab test that found a guest stuck (t-linux-migrate.sh runs it on failure
# when FERRY_MIGRATE_DIAG=1).  Needs root in L1: mounts debugfs and tracefs, prints the
# change of KVM's per-VM counters over 2 s, then traces every kvm:* event for 2 s and
# prints a summary (events per vCPU, exit reasons, guest RIPs) and the last trace lines.
# Output on stdout.

set -uo pipefail
[ $# -gt 0 ] || { echo "usage: $0 PID..." >&2; exit 2; }
D=/sys/kernel/debug T=/sys/kernel/tracing
[ -e "$D/kvm" ] || mount -t debugfs none "$D" 2>/dev/null
[ -e "$T/trace" ] || mount -t tracefs none "$T" 2>/dev/null

counters() {    # counters DIR: "name value" per KVM statistic file in DIR
    local f
    for f in "$1"/*; do
        [ -f "$f" ] || continue
        printf '%s %s\n' "${f##*/}" "$(head -n 1 "$f" 2>/dev/null)"
    done
}

for pid in "$@"; do
    for vm in "$D"/kvm/"$pid"-*; do
        [ -d "$vm" ] || { echo "diag: no KVM debugfs directory for pid $pid"; continue; }
        echo "diag: KVM counters of $vm that changed in 2 s (before -> after)"
        counters "$vm" > /tmp/diag.c1
        sleep 2
        counters "$vm" > /tmp/diag.c2
        join /tmp/diag.c1 /tmp/diag.c2 | awk '$2 != $3 && $2 ~ /^[0-9]+$/ { printf "  %-32s %s -> %s (+%d)\n", $1, $2, $3, $3 - $2 }'
        for v in "$vm"/vcpu*; do
            [ -d "$v" ] || continue
            echo "diag: ${v##*/}: $(for f in "$v"/*; do [ -f "$f" ] && printf '%s=%s ' "${f##*/}" "$(head -c 80 "$f" 2>/dev/null | tr '\n' ' ')"; done)"
        done
    done
done

if [ -w "$T/tracing_on" ]; then
    echo 0 > "$T/tracing_on"
    echo > "$T/trace"
    echo 8192 > "$T/buffer_size_kb"
    echo 1 > "$T/events/kvm/enable"
    echo 1 > "$T/tracing_on"
    sleep 2
    echo 0 > "$T/tracing_on"
    echo 0 > "$T/events/kvm/enable"
    cp "$T/trace" /tmp/diag.trace
    echo "diag: kvm events in 2 s, by task and event:"
    awk '!/^#/ && NF > 4 { ev = $0; sub(/^.*\] [^ ]+ +[0-9.]+: /, "", ev); sub(/:.*/, "", ev); n[$1 " " ev]++ }
         END { for (k in n) printf "  %6d %s\n", n[k], k }' /tmp/diag.trace | sort -k2 | head -n 80
    echo "diag: kvm_exit reasons and guest RIPs (top 30):"
    grep -o 'kvm_exit: .*' /tmp/diag.trace | sed 's/ info.*//' | sort | uniq -c | sort -rn | head -n 30
    echo "diag: last 60 trace lines:"
    grep -v '^#' /tmp/diag.trace | tail -n 60
else
    echo "diag: no tracefs at $T"
fi
