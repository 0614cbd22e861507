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
#   - "reboot -f" ends the guest and the last ferry-vmm exits 0.
# Prints per migration the VMM's downtime and total time, the largest gap of the guest's
# uptime between consecutive counter lines around the switchover (guest-visible pause),
# and the console's wall-clock silence.  Runs inside L1 (tests/lab/run.sh).
#   BUILD                build directory holding vmm/ferry-vmm and cli/ferry (default "build")
#   FERRY_L2_TIMEOUT     seconds for the guest to boot and for each later step (default 180)
#   FERRY_MIGRATE_HOPS   migrations: 1 (A -> B) or 2 (A -> B -> C, default)
#   FERRY_MIGRATE_ARGS   extra `ferry vm migrate` options, e.g. "--no-verify"
#   FERRY_MIGRATE_LINES  counter lines required before and after each migration (default 20)

set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/../.."
BUILD=${BUILD:-build}
limit=${FERRY_L2_TIMEOUT:-180}
hops=${FERRY_MIGRATE_HOPS:-2}
lines=${FERRY_MIGRATE_LINES:-20}
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
    rm -rf "$work"
}
trap cleanup EXIT

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

# Copies stdin to $1 byte for byte and writes "<epoch seconds> <line>" to $2 per line.
cat > "$work/stamp.pl" <<'EOF'
use strict; use warnings; use IO::Handle; use Time::HiRes qw(time);
open(my $raw, '>', $ARGV[0]) or die "$ARGV[0]: $!";
open(my $ts, '>', $ARGV[1]) or die "$ARGV[1]: $!";
$raw->autoflush(1); $ts->autoflush(1);
my $buf = '';
while (sysread(STDIN, my $d, 4096)) {
    print $raw $d;
    $buf .= $d;
    while ($buf =~ s/^([^\n]*)\n//) { (my $l = $1) =~ tr/\r//d; printf $ts "%.3f %s\n", time, $l; }
}
printf $ts "%.3f %s\n", time, $buf if length $buf;
EOF

# ------------------------------------------------------------------ helpers
fail() {
    echo "t-linux-migrate: $*" >&2
    local n
    for n in "${names[@]}"; do
        [ -e "$work/$n.err" ] || continue
        echo "---- ferry-vmm $n: stderr ----" >&2
        tail -n 20 "$work/$n.err" >&2
        echo "---- ferry-vmm $n: guest console (last 15 lines) ----" >&2
        tail -n 15 "$work/$n.out" 2>/dev/null | tr -d '\r' >&2 || true
    done
    for n in "$work"/mig-*.out; do
        [ -e "$n" ] || continue
        echo "---- ${n##*/} ----" >&2
        cat "$n" "${n%.out}.err" >&2
    done
    exit 1
}

# start_vmm NAME ARG...: ferry-vmm with its console on stdio: stdin from the FIFO NAME.in
# (held open here read-write, so it never sees EOF; fd[NAME] writes to it), stdout copied
# to NAME.out and time-stamped per line in NAME.ts, stderr in NAME.err.
start_vmm() {
    local n=$1 f; shift
    mkfifo "$work/$n.in" "$work/$n.pipe"
    exec {f}<>"$work/$n.in"
    fd[$n]=$f
    perl "$work/stamp.pl" "$work/$n.out" "$work/$n.ts" < "$work/$n.pipe" &
    tpid[$n]=$!
    "$vmm" "$@" < "$work/$n.in" > "$work/$n.pipe" 2> "$work/$n.err" &
    pid[$n]=$!
}

console() { printf '%s\n' "$2" >&"${fd[$1]}"; }   # console NAME LINE: type LINE

# the last counter value in the concatenated consoles of NAME... (0: none)
last_n() {
    local n files=()
    for n in "$@"; do [ ! -e "$work/$n.out" ] || files+=("$work/$n.out"); done
    [ ${#files[@]} -gt 0 ] || { echo 0; return; }
    cat "${files[@]}" | tr -d '\r' |
        awk '/^C [0-9]+ [0-9]+\.[0-9]+$/ { c = $2 } END { print c + 0 }'
}

# wait_for DESC VMM CMD...: poll CMD until it succeeds; fail if VMM exits or after $limit s
wait_for() {
    local desc=$1 n=$2 end=$((SECONDS + limit)); shift 2
    until "$@"; do
        kill -0 "${pid[$n]}" 2>/dev/null || fail "ferry-vmm $n exited while waiting for $desc"
        [ "$SECONDS" -lt "$end" ] || fail "no $desc within ${limit}s"
        sleep 0.5
    done
}

# wait_exit NAME: wait (at most $limit s) for ferry-vmm NAME to exit; its status in $rc
wait_exit() {
    local end=$((SECONDS + limit))
    while kill -0 "${pid[$1]}" 2>/dev/null; do
        if [ "$SECONDS" -ge "$end" ]; then
            kill "${pid[$1]}" 2>/dev/null || true
            rc=124
            wait "${pid[$1]}" 2>/dev/null || true
            unset "pid[$1]"
            return
        fi
        sleep 0.2
    done
    rc=0
    wait "${pid[$1]}" || rc=$?
    unset "pid[$1]"
    wait "${tpid[$1]}" 2>/dev/null || true   # its console copy is complete
    unset "tpid[$1]"
}

at_least() { [ "$(last_n "${@:2}")" -ge "$1" ]; }   # at_least N NAME...
has_line() { tr -d '\r' < "$work/$1.out" 2>/dev/null | grep -qx -- "$2"; }
port_of() {     # the port ferry-vmm NAME --incoming listens on, once it does
    sed -n 's/.*waiting for an incoming migration on .* (port \([0-9]*\)).*/\1/p' "$work/$1.err" |
        head -n 1
}
listening() { [ -n "$(port_of "$1")" ]; }
jnum() { jq -r ".${2} // empty" "$1" 2>/dev/null; }   # jnum FILE KEY

# ------------------------------------------------------------------ boot A
t0=$(us)
start_vmm a --kernel "$VMLINUZ" --initrd "$work/initrd.cpio" --cpus 2 --mem 512M \
    --append "$LAB_LINUX_APPEND" --control "$work/a.sock"
wait_for "counter line $lines on A's console" a at_least "$lines" a
echo "linux-migrate: counter at $(last_n a) on A, $(secs $(($(us) - t0)))s after the start"

# ------------------------------------------------------------------ migrations
summary=()
ran=(a)
for ((h = 1; h <= hops; h++)); do
    src=${names[h - 1]} dst=${names[h]}
    start_vmm "$dst" --incoming 127.0.0.1:0 --control "$work/$dst.sock"
    port=""
    wait_for "listening port of $dst" "$dst" listening "$dst"
    port=$(port_of "$dst")
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
        at_least $((n_sw + lines)) "${ran[@]}"
    console "$dst" "echo PONG-\$((6*7))-$dst"
    wait_for "PONG-42-$dst on $dst's console" "$dst" has_line "$dst" "PONG-42-$dst"
    m=()
    for k in downtime_ms verify_ms total_ms round bytes_sent; do m+=("$(jnum "$mig.out" "$k")"); done
    summary+=("$src $dst $n_sw ${m[*]} $t_m")
    echo "linux-migrate: $src -> $dst done: downtime $(jnum "$mig.out" downtime_ms) ms," \
         "total $(jnum "$mig.out" total_ms) ms; counter $n_sw at the switchover, $(last_n "${ran[@]}") now"
done

# ------------------------------------------------------------------ shut down
last=${names[hops]}
console "$last" "reboot -f"
wait_exit "$last"
[ "$rc" -eq 0 ] || fail "ferry-vmm $last exited $rc after reboot -f (want 0)"

# ------------------------------------------------------------------ check the counter
outs=() tss=()
for n in "${ran[@]}"; do outs+=("$work/$n.out"); tss+=("$work/$n.ts"); done
# stdin: the joined consoles; prints the problems, then "count N last L maxgap G at M"
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
    awk '$2 == "C" { t = $1 } END { print t }' "$work/$1.ts" |
        { read -r a; b=$(awk '$2 == "C" { print $1; exit }' "$work/$2.ts"); awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b - a }'; }
}

echo "linux-migrate: $count counter lines (1..$lastn), largest uptime step ${maxgap}s (before $maxat)"
for ((h = 1; h <= hops; h++)); do
    read -r src dst n_sw down verify total rounds bytes t_m <<< "${summary[h - 1]}"
    u1=$(uptime_of "$n_sw") u2=$(uptime_of $((n_sw + 1)))
    gap=$(awk -v a="$u1" -v b="$u2" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.2f", b - a }')
    echo "linux-migrate: $src -> $dst: VMM downtime ${down} ms (digest ${verify} ms), total ${total} ms," \
         "$rounds rounds, $((bytes >> 20)) MiB; guest uptime step across the switchover ${gap}s" \
         "(C $n_sw -> $((n_sw + 1))), console silent $(silence "$src" "$dst")s, CLI $(secs "$t_m")s"
done
[ -z "$problems" ] || fail "the counter did not continue exactly:
$problems"
[ "$count" -ge $((lines * (hops + 1))) ] || fail "only $count counter lines"
exit 0
