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
