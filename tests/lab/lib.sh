# tests/lab/lib.sh - shared by the lab tests (sourced by tests/lab/t-*.sh inside L1).
# shellcheck shell=bash
#   LAB_LINUX_APPEND   kernel command line for a stock Linux L2 guest: quiet and fast to boot
#                      (lab.sh info's L2_APPEND), "reboot -f" resets through the keyboard
#                      controller (ferry-vmm then exits 0), no probing of absent devices
#   us                 wall clock in microseconds
#   secs US            microseconds as seconds with one decimal

# shellcheck disable=SC2034  # used by the tests that source this file
LAB_LINUX_APPEND="console=ttyS0 panic=-1 quiet pci=noearly cryptomgr.notests mitigations=off"
LAB_LINUX_APPEND+=" 8250.nr_uarts=1 rodata=off reboot=k i8042.noaux i8042.nomux i8042.nopnp"
LAB_LINUX_APPEND+=" i8042.dumbkbd"

us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
secs() { printf '%d.%d' $(($1 / 1000000)) $(($1 / 100000 % 10)); }
