#!/bin/bash
# shellcheck disable=SC2317  # functions called indirectly (trap, wait_for)
# Lab test, live migration of a stock Linux guest (the acceptance test of live migration):
# ferry-vmm A boots the lab's Debian kernel (2 vCPUs, 512 MiB) with a busybox initramfs
# whose /init prints "C <n> <uptime>" every 0.1 s from a background loop and runs a command
# loop on the console.  The running guest is migrated A -> B -> C between ferry-vmm
# processes inside L1 (`ferry vm migrate`, which quits the source).  Asserted:
#   - the counter continues exactly: the concatenated consoles of A, B and C show 1, 2, 3,
#     ... with no restart, gap or duplicate (the counter lives in guest memory; a line cut
#     at the switchover continues on the destination's console, so the bytes join up);
#   - the guest's uptime never goes back;
#   - after each migration the guest answers on the destination's console (echo PONG-$((6*7))
#     must print PONG-42), and each source exits 0;
#   - `ferry vm quit` ends the VM on C and that ferry-vmm exits 0.  (Not "reboot -f" in
#     the guest: resetting a migrated L2 is what left the emulated L1 idle with no timer
#     interrupt in most lab hangs seen; tests/lab/t-linux-boot.sh covers the reset exit.)
# Prints per migration the VMM's downtime (and where it went) and total time, the guest's
# uptime step between the counter lines around the switchover (guest-visible pause) and
# the console's wall-clock silence.  Runs inside L1 (tests/lab/run.sh).
#   BUILD                build directory holding vmm/ferry-vmm and cli/ferry (default "build")
#   FERRY_L2_TIMEOUT     seconds for the guest to boot, to counter line 20 (default 150)
#   FERRY_MIGRATE_BOOT_TRIES  boots of A to try when one does not get there (default 2:
#                        the nested lab's L2 boot occasionally hangs)
#   FERRY_MIGRATE_STEP_TIMEOUT  seconds for each later step (default 120)
#   FERRY_MIGRATE_HOPS   migrations: 1 (A -> B) or 2 (A -> B -> C, default)
#   FERRY_MIGRATE_ARGS   extra `ferry vm migrate` options, e.g. "--no-verify"
#   FERRY_MIGRATE_LINES  counter lines required before and after each migration (default 20)
#   FERRY_MIGRATE_DIAG=1 when a guest is stuck, show what its vCPUs do
#                        (tests/lab/linux-migrate-diag.sh: KVM counters and trace events)
#   FERRY_MIGRATE_KEEP=DIR  copy the consoles, ferry-vmm logs and migration results there
#                        (a directory L1 can write: lab.sh run --share DIR)

set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/../.."
BUILD=${BUILD:-build}
hops=${FERRY_MIGRATE_HOPS:-2}
lines=${FERRY_MIGRATE_LINES:-20}
tries=${FERRY_MIGRATE_BOOT_TRIES:-2}
read -ra mig_args <<< "${FERRY_MIGRATE_ARGS:-}"
eval "$(lab/lab.sh info)"
. tests/lab/lib.sh
vmm=$BUILD/vmm/ferry-vmm
cli=$BUILD/cli/ferry
for f in "$vmm" "$cli"; do
    [ -x "$f" ] || { echo "t-linux-migrate: no $f (build first)" >&2; exit 1; }
done
case $hops in 1|2) ;; *) echo "t-linux-migrate: FERRY_MIGRATE_HOPS must be 1 or 2" >&2; exit 1 ;; esac

work=$(mktemp -d)
names=(a b c)
declare -A pid tpid fd
cleanup() {
    local n
    for n in "${!pid[@]}"; do kill "${pid[$n]}" 2>/dev/null || true; done
    for n in "${!tpid[@]}"; do kill "${tpid[$n]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${FERRY_MIGRATE_KEEP:-}" ]; then
        mkdir -p "$FERRY_MIGRATE_KEEP" || true
        cp "$work"/*.out "$work"/*.err "$work"/*.ts "$FERRY_MIGRATE_KEEP"/ 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
# "read -t S -u $nap" sleeps S seconds without starting a process (L1 is slow at that)
mkfifo "$work/nap"
exec {nap}<>"$work/nap"

# ------------------------------------------------------------------ the guest
# stty -echo: only command output reaches the console, one write per line, so it never
# splits a counter line.  The counter and the command loop are separate processes.
cat > "$work/init.sh" <<'EOF'
stty -echo 2>/dev/null
( n=0; while :; do n=$((n + 1)); read -r up _ < /proc/uptime; echo "C $n $up"; sleep 0.1; done ) &
while IFS= read -r cmd; do eval "$cmd"; done
echo "init: console closed"
reboot -f
EOF
lab/lab.sh mkinitrd "$work/initrd.cpio" "$work/init.sh"

# stamp.pl NAME: copies stdin (a console) byte for byte to NAME.out, writes each line as
# "<epoch seconds> <line>" to NAME.ts, other lines than counter lines to NAME.lines, and
# keeps the last counter value in NAME.last (so that polling them costs no process)
cat > "$work/stamp.pl" <<'EOF'
use strict; use warnings; use IO::Handle; use Time::HiRes qw(time);
my $n = $ARGV[0];
open(my $raw, '>', "$n.out") or die "$n.out: $!";
open(my $ts, '>', "$n.ts") or die "$n.ts: $!";
open(my $other, '>', "$n.lines") or die "$n.lines: $!";
$_->autoflush(1) for ($raw, $ts, $other);
my $buf = '';
while (sysread(STDIN, my $d, 4096)) {
    print $raw $d;
    $buf .= $d;
    while ($buf =~ s/^([^\n]*)\n//) {
        (my $l = $1) =~ tr/\r//d;
        printf $ts "%.3f %s\n", time, $l;
        if ($l =~ /^C (\d+) \d+\.\d+$/) {
            my $c = $1;
            if (open(my $f, '>', "$n.last.tmp")) { print $f "$c\n"; close($f); rename("$n.last.tmp", "$n.last"); }
        } else {
            print $other "$l\n";
        }
    }
}
printf $ts "%.3f %s\n", time, $buf if length $buf;
EOF

# ------------------------------------------------------------------ helpers
dump() {
    local n
    for n in "${names[@]}"; do
        [ -e "$work/$n.err" ] || continue
        echo "---- ferry-vmm $n: stderr ----"
        if [ "${FERRY_MIGRATE_DIAG:-}" = 1 ]; then head -n 300 "$work/$n.err"; else tail -n 20 "$work/$n.err"; fi
        echo "---- ferry-vmm $n: guest console (last 15 lines) ----"
        tail -n 15 "$work/$n.out" 2>/dev/null | tr -d '\r' || true
    done
    for n in "$work"/mig-*.out; do
        [ -e "$n" ] || continue
        echo "---- ${n##*/} ----"
        cat "$n" "${n%.out}.err"
    done
}
diag() {    # with FERRY_MIGRATE_DIAG=1: what the VMs still running do
    [ "${FERRY_MIGRATE_DIAG:-}" = 1 ] && [ ${#pid[@]} -gt 0 ] || return 0
    bash tests/lab/linux-migrate-diag.sh "${pid[@]}" || true
}
fail() {
    echo "t-linux-migrate: $*" >&2
    diag >&2
    dump >&2
    exit 1
}

# start_vmm NAME ARG...: ferry-vmm with its console on stdio: stdin from the FIFO NAME.in
# (held open here read-write, so it never sees EOF; fd[NAME] writes to it), stdout through
# stamp.pl, stderr in NAME.err.
start_vmm() {
    local n=$1 f old=${fd[$1]:-}; shift
    [ -z "$old" ] || exec {old}>&-
    rm -f "$work/$n".*
    mkfifo "$work/$n.in" "$work/$n.pipe"
    exec {f}<>"$work/$n.in"
    fd[$n]=$f
    perl "$work/stamp.pl" "$work/$n" < "$work/$n.pipe" &
    tpid[$n]=$!
    "$vmm" "$@" < "$work/$n.in" > "$work/$n.pipe" 2> "$work/$n.err" &
    pid[$n]=$!
}

console() { printf '%s\n' "$2" >&"${fd[$1]}"; }   # console NAME LINE: type LINE

last_n() {      # the last counter value on NAME's console (0: none yet)
    local v=0
    [ ! -s "$work/$1.last" ] || read -r v < "$work/$1.last" || true
    echo "${v:-0}"
}
at_least() {    # at_least N NAME: NAME's console showed counter value N or later
    local v=0
    [ ! -s "$work/$2.last" ] || read -r v < "$work/$2.last" || true
    [ "${v:-0}" -ge "$1" ]
}
has_line() {    # has_line NAME LINE: NAME's console showed LINE
    local l
    [ -e "$work/$1.lines" ] || return 1
    while IFS= read -r l; do [ "$l" != "$2" ] || return 0; done < "$work/$1.lines"
    return 1
}
port=""
listen_re='waiting for an incoming migration .*[(]port ([0-9]+)[,)]'
listening() {   # listening NAME: ferry-vmm NAME --incoming listens; its port in $port
    local l
    [ -e "$work/$1.err" ] || return 1
    while IFS= read -r l; do
        if [[ $l =~ $listen_re ]]; then
            port=${BASH_REMATCH[1]}
            return 0
        fi
    done < "$work/$1.err"
    return 1
}

# wait_for DESC VMM CMD...: poll CMD until it succeeds; fail if VMM exits or after $limit s
# (returns 1 instead of failing when $soft is set)
wait_for() {
    local desc=$1 n=$2 end=$((SECONDS + limit)); shift 2
    until "$@"; do
        kill -0 "${pid[$n]}" 2>/dev/null || fail "ferry-vmm $n exited while waiting for $desc"
        if [ "$SECONDS" -ge "$end" ]; then
            [ -z "${soft:-}" ] || return 1
            fail "no $desc within ${limit}s"
        fi
        read -r -t 0.5 -u "$nap" _ || true
    done
}

stop_vmm() {    # stop_vmm NAME: kill ferry-vmm NAME
    kill "${pid[$1]}" 2>/dev/null || true
    wait "${pid[$1]}" 2>/dev/null || true
    wait "${tpid[$1]}" 2>/dev/null || true
    unset "pid[$1]" "tpid[$1]"
}

# wait_exit NAME: wait (at most $limit s) for ferry-vmm NAME to exit; its status in $rc
wait_exit() {
    local end=$((SECONDS + limit))
    while kill -0 "${pid[$1]}" 2>/dev/null; do
        if [ "$SECONDS" -ge "$end" ]; then
            stop_vmm "$1"
            rc=124
            return
        fi
        read -r -t 0.2 -u "$nap" _ || true
    done
    rc=0
    wait "${pid[$1]}" || rc=$?
    wait "${tpid[$1]}" 2>/dev/null || true   # its console copy is complete
    unset "pid[$1]" "tpid[$1]"
}

jnum() { jq -r ".${2} // empty" "$1" 2>/dev/null; }   # jnum FILE KEY

# ------------------------------------------------------------------ boot A
limit=${FERRY_L2_TIMEOUT:-150}     # the limit of the current step, in seconds
for ((try = 1; ; try++)); do
    t0=$(us)
    start_vmm a --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --cpus 2 --mem 512M \
        --append "$LAB_LINUX_APPEND" --control "$work/a.sock"
    soft=1
    wait_for "counter line $lines on A's console" a at_least "$lines" a && break
    soft=""
    echo "linux-migrate: boot $try of $tries: no counter line $lines within ${limit}s" \
         "(console: $(tr -d '\r' < "$work/a.out" | tail -n 3 | tr '\n' '|'))" >&2
    lab_vcpus "$work/a.sock"
    [ "$try" -lt "$tries" ] || fail "the guest did not boot"
    diag >&2
    stop_vmm a
done
soft=""
echo "linux-migrate: counter at $(last_n a) on A, $(secs $(($(us) - t0)))s after its start"
limit=${FERRY_MIGRATE_STEP_TIMEOUT:-120}

# ------------------------------------------------------------------ migrations
summary=() breakdown=()
ran=(a)
for ((h = 1; h <= hops; h++)); do
    src=${names[h - 1]} dst=${names[h]}
    start_vmm "$dst" --incoming 127.0.0.1:0 --control "$work/$dst.sock"
    wait_for "listening port of $dst" "$dst" listening "$dst"
    ran+=("$dst")
    mig=$work/mig-$src$dst
    st=0
    t_m=$(us)
    timeout -k 5 "$limit" "$cli" -S "$work/$src.sock" vm migrate --to "127.0.0.1:$port" --json \
        "${mig_args[@]}" > "$mig.out" 2> "$mig.err" || st=$?
    t_m=$(($(us) - t_m))
    [ "$st" -eq 0 ] || fail "migration $src -> $dst: ferry vm migrate exited $st"
    [ "$(jnum "$mig.out" phase)" = completed ] || fail "migration $src -> $dst: phase is not completed"
    wait_exit "$src"
    [ "$rc" -eq 0 ] || fail "source ferry-vmm $src exited $rc after the migration (want 0)"
    n_sw=$(last_n "$src")
    wait_for "$lines counter lines on $dst after the switchover (at $n_sw)" "$dst" \
        at_least $((n_sw + lines)) "$dst"
    console "$dst" "echo PONG-\$((6*7))-$dst"
    wait_for "PONG-42-$dst on $dst's console" "$dst" has_line "$dst" "PONG-42-$dst"
    m=()
    for k in downtime_ms verify_ms total_ms round bytes_sent; do m+=("$(jnum "$mig.out" "$k")"); done
    summary+=("$src $dst $n_sw ${m[*]} $t_m")
    breakdown+=("$(jq -r '.pause_breakdown_us // {} | to_entries |
        map("\(.key | gsub("_"; " ")) \((.value / 100 | round) / 10)") | join(", ")' "$mig.out")")
    echo "linux-migrate: $src -> $dst done: downtime $(jnum "$mig.out" downtime_ms) ms," \
         "total $(jnum "$mig.out" total_ms) ms; counter $n_sw at the switchover, $(last_n "$dst") now"
done

# ------------------------------------------------------------------ shut down
last=${names[hops]}
"$cli" -S "$work/$last.sock" vm quit > /dev/null || fail "ferry vm quit on $last failed"
wait_exit "$last"
[ "$rc" -eq 0 ] || fail "ferry-vmm $last exited $rc after quit (want 0)"

# ------------------------------------------------------------------ check the counter
outs=()
for n in "${ran[@]}"; do outs+=("$work/$n.out"); done
# the joined consoles: prints the problems, then "count N last L maxgap G at M"
check=$(cat "${outs[@]}" | tr -d '\r' | awk '
    function bad(s) { if (nbad++ < 10) print "counter: " s }
    /^C [0-9]+ [0-9]+\.[0-9][0-9]$/ {
        n = $2 + 0; u = $3 + 0
        if (!cnt && n != 1) bad("starts at " n ", not 1")
        if (cnt && n != prev + 1) bad(prev " is followed by " n " (want " prev + 1 ")")
        if (cnt && u < pu) bad("uptime went back from " pu " to " u " at " n)
        if (cnt && u - pu > maxgap) { maxgap = u - pu; at = n }
        prev = n; pu = u; cnt++
        next
    }
    /C [0-9]/ { bad("garbled line \"" $0 "\"") }
    END { printf "count %d last %d maxgap %.2f at %d\n", cnt, prev, maxgap, at }')
problems=$(grep -v '^count ' <<< "$check" || true)
read -r _ count _ lastn _ maxgap _ maxat <<< "$(grep '^count ' <<< "$check")"

# uptime of counter value N (from the joined consoles)
uptime_of() { cat "${outs[@]}" | tr -d '\r' | awk -v n="$1" '$1 == "C" && $2 == n { print $3; exit }'; }
# console wall-clock silence around a switchover: last counter line of SRC to first of DST
silence() {
    local a b
    a=$(awk '$2 == "C" { t = $1 } END { print t }' "$work/$1.ts")
    b=$(awk '$2 == "C" { print $1; exit }' "$work/$2.ts")
    awk -v a="$a" -v b="$b" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.2f", b - a }'
}

echo "linux-migrate: $count counter lines (1..$lastn), largest uptime step ${maxgap}s (before C $maxat)"
for ((h = 1; h <= hops; h++)); do
    read -r src dst n_sw down verify total rounds bytes t_m <<< "${summary[h - 1]}"
    u1=$(uptime_of "$n_sw") u2=$(uptime_of $((n_sw + 1)))
    gap=$(awk -v a="$u1" -v b="$u2" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.2f", b - a }')
    echo "linux-migrate: $src -> $dst: VMM downtime ${down} ms (${breakdown[h - 1]:-digest $verify} ms)," \
         "total ${total} ms, $rounds rounds, $((bytes >> 20)) MiB; guest uptime step across the" \
         "switchover ${gap}s (C $n_sw -> $((n_sw + 1))), console silent $(silence "$src" "$dst")s," \
         "CLI $(secs "$t_m")s"
    # the guest's clock across the switchover moves on about as the host's did:
    # its uptime step was 0.3-1.1 s in good runs (the counter's 0.1 s, the pause,
    # the lab's scheduling) and 12-16 s in an L1 whose kvm ran the guests' TSC
    # at a rate it did not have.  (The console's silence is no bound: the two
    # consoles' timestamps come from two readers.)
    awk -v g="$gap" 'BEGIN { exit !(g == "n/a" || g <= 5) }' ||
        fail "$src -> $dst: the guest's uptime stepped ${gap}s across a ${down} ms switchover (limit 5 s)"
done
[ -z "$problems" ] || fail "the counter did not continue exactly:
$problems"
[ "$count" -ge $((lines * (hops + 1))) ] || fail "only $count counter lines"
exit 0
