#!/bin/bash
# Ferry's demo: build, boot a micro-guest, then live-migrate a VM that keeps
# dirtying memory from one ferry-vmm to another on this machine, and show the
# measured downtime, the total time, and that the guest carried on intact.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
if [ ! -c /dev/kvm ] && [ -z "${FERRY_LAB_L1:-}" ]; then
    # the same demo one level down: the nested lab's L1 has a KVM (QEMU's
    # emulated SVM), many times slower than a real host's; one vCPU, as for
    # the tests (with 2, L1's kernel panicked in the scheduler, once in CI)
    echo "demo: this host has no /dev/kvm; running the demo inside the nested lab (lab/lab.sh)" >&2
    lab/lab.sh setup >/dev/null
    exec lab/lab.sh run --timeout 1200 --smp 1 --mem 4096 -- scripts/demo.sh
fi
VMM=build/vmm/ferry-vmm FERRY=build/cli/ferry G=build/guests
T=$(mktemp -d /tmp/ferry-demo.XXXXXX)
PIDS=()
# the VMs are normally gone by now: a failed kill must not become the demo's status
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# wait_log PID LOG PATTERN: until LOG has PATTERN; the log, if PID exits first
wait_log() {
    until grep -q "$3" "$2" 2>/dev/null; do
        kill -0 "$1" 2>/dev/null || { cat "$2" >&2; echo "demo: ferry-vmm exited before '$3'" >&2; exit 1; }
        sleep 0.1
    done
}

say "1. boot a micro-guest (64-bit, CPL3) on KVM"
$VMM --kernel $G/hello.elf --cpus 2 --mem 64M

say "2. make migration credentials (a cluster CA and a host certificate), then start a 1 GiB VM"
say "   whose guest rewrites 512 MiB of memory and checks it after every pass"
$FERRY tls init "$T/tls" --cn demo-host
$VMM --kernel $G/dirtier.elf --mem 1G --control "$T/src.sock" --tls-dir "$T/tls" \
    --append "mib=512 rate=25000 warm=1 report_ms=500" > "$T/src.log" 2>&1 &
PIDS+=($!)
wait_log "${PIDS[0]}" "$T/src.log" 'pass=1 '
tail -n 2 "$T/src.log"

say "3. start the destination ferry-vmm, waiting for the VM (RAM kept in a file for step 5)"
$VMM --incoming 127.0.0.1:7700 --control "$T/dst.sock" --mem-path "$T/dst.mem" --tls-dir "$T/tls" > "$T/dst.log" 2>&1 &
PIDS+=($!)
wait_log "${PIDS[1]}" "$T/dst.log" 'waiting for an incoming migration'   # (slow to start when emulated)

say "4. live-migrate it over mutual TLS 1.3 while the guest keeps writing (~100 MB/s of dirty pages)"
$FERRY -S "$T/src.sock" vm migrate --to 127.0.0.1:7700

say "5. the guest runs on at the destination: its own checks still pass"
passes() { grep -c 'dirtier pass=' "$T/dst.log" || true; }
n=$(passes)
wait_s=30
[ -z "${FERRY_LAB_L1:-}" ] || wait_s=300   # (emulated: a pass takes a while)
for _ in $(seq $((wait_s * 5))); do [ "$(passes)" -gt "$n" ] && break; sleep 0.2; done
[ "$(passes)" -gt "$n" ] || { echo "demo: the guest completed no pass on the destination in $wait_s s" >&2; exit 1; }
grep -E 'dirtier (pass|progress)' "$T/dst.log" | tail -n 3
$FERRY -S "$T/dst.sock" vm status
$FERRY -S "$T/dst.sock" vm quit >/dev/null
wait "${PIDS[1]}" 2>/dev/null || true
# a fresh VM on the destination's RAM file checks every page the dirtier wrote
$VMM --kernel $G/checker.elf --mem 1G --mem-path "$T/dst.mem"
say "done: see README.md for booting stock Linux and the nested lab"
