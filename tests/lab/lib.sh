# tests/lab/lib.sh - shared by the lab tests (sourced by tests/lab/t-*.sh inside L1).
# shellcheck shell=bash
#   LAB_LINUX_APPEND   kernel command line for a stock Linux L2 guest: quiet and fast to boot
#                      (lab.sh info's L2_APPEND), "reboot -f" resets through the keyboard
#                      controller (ferry-vmm then exits 0), no probing of absent devices
#   us                 wall clock in microseconds
#   secs US            microseconds as seconds with one decimal
#   wait_for S FILE RE until a line of FILE matches the extended regex RE; 1 after S seconds
#   clean_on_exit [CMD...]  at exit: kill the processes in the array pids, wait, run CMD
#                      (errors ignored), remove the directory $work
#   lab_bad_blocks IMG how many of the image's first 256 64 KiB blocks hold neither zeros
#                      nor "BLOCK n" (their number), as the lab guests' disk writers
#                      write them
#   lab_vcpus SOCK     for an L2 that seems stuck (a silent boot): its VMM's status and
#                      each vCPU's state twice, 2 s apart (a RIP that never moves is
#                      parked, one that moves spins), on stderr

# shellcheck disable=SC2034  # used by the tests that source this file
LAB_LINUX_APPEND="console=ttyS0 panic=-1 quiet pci=noearly cryptomgr.notests mitigations=off"
LAB_LINUX_APPEND+=" 8250.nr_uarts=1 rodata=off reboot=k i8042.noaux i8042.nomux i8042.nopnp"
LAB_LINUX_APPEND+=" i8042.dumbkbd"

us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
secs() { printf '%d.%d' $(($1 / 1000000)) $(($1 / 100000 % 10)); }
wait_for() {
    local end=$(($(date +%s) + $1))
    until grep -qE "$3" "$2" 2>/dev/null; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.5
    done
}
lab_bad_blocks() {
    python3 - "$1" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
print(sum(1 for n in range(256) if data[n * 65536: n * 65536 + 14] not in (b'\0' * 14, b'BLOCK %08d' % n)))
PY
}
lab_vcpus() {
    local i
    "$BUILD/cli/ferry" -S "$1" vm status >&2 || true
    for i in 1 2; do
        [ "$i" = 1 ] || sleep 2
        "$BUILD/cli/ferry" -S "$1" vm vcpus >&2 || true
    done
}
clean_on_exit() {
    on_exit=("$@")
    trap '_clean' EXIT
}
# shellcheck disable=SC2154  # pids and work: the test's
_clean() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ ${#on_exit[@]} -eq 0 ] || "${on_exit[@]}" >/dev/null 2>&1 || true
    rm -rf "$work"
}

# ---- a VM on lab/net-topology.sh's network, migrated between its two hosts ----
# lab_vm_init NAME: for a test called NAME (messages are prefixed with it): checks the
# build (ferry-vmm, ferry: $vmm, $cli), makes $work (removed on exit, with every process
# in pids killed and the topology torn down) and brings the topology up ($topo,
# FERRY_NET_PREFIX set by the test).  Then:
#   lab_fail MSG...         record a failure (lab_errors) and go on
#   lab_die MSG...          fail, print the consoles and logs ($work/con-*, vmm-*.out,
#                           mig-*.err, cli-*.out), exit 1
# (lab_fail and lab_die also serve tests without the topology: they need lab_name,
# lab_errors and work.)
#   lab_vm_start NAME HOST ARGS...   ferry-vmm in HOST's namespace, control socket
#                           $work/NAME.sock, console $work/con-NAME (input: lab_console)
#   lab_console NAME LINE   type LINE on NAME's console
#   lab_hop SRC DST HOST IP migrate SRC to a new ferry-vmm DST in HOST listening on
#                           IP:4444 (extra `ferry vm migrate` options: the array
#                           lab_hop_args); appends the host's wall clock (ns) before and
#                           after to lab_hop_from/lab_hop_to and the downtime (ms) to
#                           lab_hop_down; the migration's JSON is $work/mig-SRCDST.out
lab_vm_init() {
    lab_name=$1
    vmm=$BUILD/vmm/ferry-vmm
    cli=$BUILD/cli/ferry
    local f
    for f in "$vmm" "$cli"; do
        [ -x "$f" ] || { echo "$lab_name: no $f (build first)" >&2; exit 1; }
    done
    topo=lab/net-topology.sh
    work=$(mktemp -d)
    pids=() lab_errors=() lab_hop_from=() lab_hop_to=() lab_hop_down=() lab_hop_args=()
    declare -gA lab_vpid lab_infd
    clean_on_exit "$topo" down
    "$topo" down >/dev/null 2>&1 || true
    "$topo" up
}
lab_fail() { lab_errors+=("$*"); echo "$lab_name: $*" >&2; }
lab_die() {
    lab_fail "$*"
    local f
    for f in "$work"/con-* "$work"/vmm-*.out "$work"/mig-*.err "$work"/cli-*.out; do
        [ -s "$f" ] || continue
        echo "---- ${f##*/} (last 25 lines) ----" >&2
        tail -n 25 "$f" | tr -d '\r' >&2
    done
    exit 1
}
lab_vm_start() {
    local name=$1 host=$2 fd; shift 2
    mkfifo "$work/in-$name"
    exec {fd}<>"$work/in-$name"
    lab_infd[$name]=$fd
    : > "$work/con-$name"
    "$topo" exec "$host" "$vmm" --control "$work/$name.sock" "$@" < "$work/in-$name" \
        > "$work/con-$name" 2> "$work/vmm-$name.out" &
    lab_vpid[$name]=$!
    pids+=($!)
}
lab_console() { echo "$2" >&"${lab_infd[$1]}"; }
lab_hop() {
    local src=$1 dst=$2 host=$3 ip=$4 st=0
    lab_vm_start "$dst" "$host" --incoming "$ip:4444"
    wait_for 30 "$work/vmm-$dst.out" 'port 4444' || lab_die "$dst: destination did not listen"
    lab_hop_from+=("$(date +%s%N)")
    timeout "${limit:-180}" "$cli" -S "$work/$src.sock" vm migrate --to "$ip:4444" --json "${lab_hop_args[@]}" \
        > "$work/mig-$src$dst.out" 2> "$work/mig-$src$dst.err" || st=$?
    lab_hop_to+=("$(date +%s%N)")
    [ "$st" -eq 0 ] || lab_die "migration $src -> $dst failed ($st): $(tail -n 1 "$work/mig-$src$dst.err")"
    lab_hop_down+=("$(jq -r .downtime_ms "$work/mig-$src$dst.out")")
    timeout 90 tail --pid="${lab_vpid[$src]}" -f /dev/null || lab_die "source $src did not exit"
    echo "${lab_name#t-}: $src -> $dst: downtime ${lab_hop_down[-1]} ms, total $(jq -r .total_ms "$work/mig-$src$dst.out") ms," \
         "vCPUs slowed up to $(jq -r .throttle_pct "$work/mig-$src$dst.out")%"
}
