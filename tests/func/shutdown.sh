#!/bin/bash
# `ferry vm shutdown` on a guest that ignores the ACPI power button (a
# micro-guest): the button is pressed, and after --timeout the CLI stops the
# VM hard and says so in one line; ferry-vmm exits 0. A paused VM is refused.
# (A stock Linux guest that powers off: tests/lab/t-linux-acpi.sh.)
# shellcheck source=tests/func/lib.sh
. "$(dirname "$0")/lib.sh"
sock=$TMP/ctl.sock

vmm_bg vm --kernel "$(guest dirtier)" --append "mib=4 report_ms=100" --mem 64M \
    --control "$sock" --console none
OUT=$BG_OUT ERR=$BG_ERR RC=running
wait_for 20 test -S "$sock" || vfail "no control socket at $sock"

# bad option use never reaches the VM
for args in "vm status --timeout 5" "vm shutdown --timeout x"; do
    # shellcheck disable=SC2086  # word splitting wanted
    "$FERRY_CLI" -S "$sock" $args 2>"$TMP/usage.err" && fail "ferry $args succeeded"
    grep -q "^ferry: .*--timeout.* (see ferry --help)\$" "$TMP/usage.err" ||
        fail "ferry $args: unexpected error: $(cat "$TMP/usage.err")"
done

"$FERRY_CLI" -S "$sock" vm pause >/dev/null || vfail "ferry vm pause failed"
"$FERRY_CLI" -S "$sock" vm shutdown 2>"$TMP/paused.err" && vfail "shutdown of a paused VM succeeded"
grep -qx "ferry: the VM is paused: only a running VM can be asked to shut down" "$TMP/paused.err" ||
    vfail "shutdown of a paused VM: $(cat "$TMP/paused.err")"
"$FERRY_CLI" -S "$sock" vm resume >/dev/null || vfail "ferry vm resume failed"

rc=0
"$FERRY_CLI" -S "$sock" vm shutdown --timeout 1 >"$TMP/cli.out" 2>"$TMP/cli.err" || rc=$?
vmm_bg_wait 10
expect_exit 0
[ "$rc" -eq 1 ] || vfail "ferry vm shutdown exited $rc, want 1 (hard stop); stderr: $(cat "$TMP/cli.err")"
[ "$(cat "$TMP/cli.err")" = "ferry: guest did not power off within 1 s: stopped it hard" ] ||
    vfail "ferry vm shutdown said: $(cat "$TMP/cli.err")"
expect_line "$ERR" "power button pressed" "ferry-vmm's log"
exit 0
