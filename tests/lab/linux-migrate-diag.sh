#!/bin/bash
# tests/lab/linux-migrate-diag.sh PID... - what the KVM guests of the ferry-vmm processes
# PID are doing, for a lab test that found a guest stuck (t-linux-migrate.sh runs it when
# FERRY_MIGRATE_DIAG=1).  Needs root (inside L1): for each PID it prints its threads (state,
# wait channel, kernel stack) and the change of KVM's per-VM counters over 2 s; then it
# traces every kvm:* event for 5 s, typing "echo PONG-diag" into each ferry-vmm's console
# (its stdin) 1 s in, and prints a summary (events per thread, exit reasons with guest
# RIPs, IRQ activity) and the first and last trace lines.  Output on stdout.
#   FERRY_DIAG_SECS   trace length in seconds (default 5)

set -uo pipefail
[ $# -gt 0 ] || { echo "usage: $0 PID..." >&2; exit 2; }
D=/sys/kernel/debug T=/sys/kernel/tracing
[ -e "$D/kvm" ] || mount -t debugfs none "$D" 2>/dev/null
[ -e "$T/trace" ] || mount -t tracefs none "$T" 2>/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

counters() {    # counters DIR: "name value" per KVM statistic file in DIR
    local f v
    for f in "$1"/*; do
        [ -f "$f" ] || continue
        read -r v < "$f" 2>/dev/null && printf '%s %s\n' "${f##*/}" "$v"
    done
}

for pid in "$@"; do
    echo "diag: ferry-vmm $pid threads (tid comm state wchan / kernel stack):"
    for t in /proc/"$pid"/task/*; do
        [ -d "$t" ] || continue
        read -r comm < "$t/comm"
        state=$(awk '{ print $3 }' "$t/stat" 2>/dev/null)
        read -r wchan < "$t/wchan" 2>/dev/null || true
        echo "  ${t##*/} $comm $state ${wchan:-?}"
        head -n 6 "$t/stack" 2>/dev/null | sed 's/^/      /'
    done
    for vm in "$D"/kvm/"$pid"-*; do
        [ -d "$vm" ] || { echo "diag: no KVM debugfs directory for pid $pid"; continue; }
        echo "diag: KVM counters of $vm that changed in 2 s (before -> after)"
        counters "$vm" > "$tmp/c1"
        sleep 2
        counters "$vm" > "$tmp/c2"
        join "$tmp/c1" "$tmp/c2" |
            awk '$2 != $3 && $2 ~ /^[0-9]+$/ { printf "  %-28s %s -> %s (+%d)\n", $1, $2, $3, $3 - $2 }'
    done
done

if [ ! -w "$T/tracing_on" ]; then
    echo "diag: no tracefs at $T"
    exit 0
fi
secs=${FERRY_DIAG_SECS:-5}
echo 0 > "$T/tracing_on"
echo > "$T/trace"
echo 16384 > "$T/buffer_size_kb"
echo 1 > "$T/events/kvm/enable"
echo 1 > "$T/tracing_on"
sleep 1
for pid in "$@"; do
    echo "echo PONG-diag" > "/proc/$pid/fd/0" 2>/dev/null &&
        echo "diag: typed 'echo PONG-diag' on the console of $pid at $(awk '{ print $1 }' /proc/uptime)"
done
sleep "$((secs - 1))"
echo 0 > "$T/tracing_on"
echo 0 > "$T/events/kvm/enable"
grep -v '^#' "$T/trace" > "$tmp/trace"
echo "diag: kvm events in ${secs} s ($(wc -l < "$tmp/trace") lines), by thread and event:"
awk 'NF > 4 { ev = $0; sub(/^.*\] [^ ]+ +[0-9.]+: /, "", ev); sub(/:.*/, "", ev); n[$1 " " ev]++ }
     END { for (k in n) printf "  %6d %s\n", n[k], k }' "$tmp/trace" | sort -k2 | head -n 80
echo "diag: kvm_exit reasons and guest RIPs (top 30):"
grep -o 'kvm_exit: .*' "$tmp/trace" | sed 's/ info.*//' | sort | uniq -c | sort -rn | head -n 30
echo "diag: IRQ lines, injections, APIC:"
grep -oE '(kvm_set_irq|kvm_ioapic_set_irq|kvm_apic_accept_irq|kvm_inj_virq|kvm_eoi|kvm_pv_eoi|kvm_apic): .*' "$tmp/trace" |
    sort | uniq -c | sort -rn | head -n 30
echo "diag: first 40 trace lines:"
head -n 40 "$tmp/trace"
echo "diag: last 60 trace lines:"
tail -n 60 "$tmp/trace"
