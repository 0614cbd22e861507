#!/bin/bash
# Linux boot protocol end to end with a fake bzImage (tests/func/mkbzimage.py
# --probe): its 64-bit entry point reads boot_params (rsi) and exits through
# the test device with (cmdline[0] - '0') + initrd[0], or 99 when the e820
# map is empty. So the kernel was loaded and entered at startup_64, and the
# command line, initrd and e820 map were handed over where boot_params says.
# shellcheck source=tests/func/lib.sh
. "$(dirname "$0")/lib.sh"
bz=$TMP/bzImage
python3 "$SRC/tests/func/mkbzimage.py" "$bz" --probe || fail "mkbzimage.py failed"
printf '\005initrd' >"$TMP/initrd"

vmm 20 --kernel "$bz" --append "7 console=ttyS0" --mem 64M --console none
expect_exit 7
vmm 20 --kernel "$bz" --append "3" --initrd "$TMP/initrd" --mem 64M --cpus 2 --console none
expect_exit 8
# 6 GiB: RAM above the PCI hole too (second memslot, e820 entry at 4 GiB)
vmm 20 --kernel "$bz" --append "4" --initrd "$TMP/initrd" --mem 6G --console none
expect_exit 9
exit 0
