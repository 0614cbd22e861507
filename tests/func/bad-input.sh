#!/bin/bash
# Bad input to ferry-vmm: each case must give a non-zero exit status below
# 128 (no crash, no signal, no timeout) and exactly one line on stderr that
# starts with "ferry-vmm: " and says what is wrong (matches the case's
# pattern). Every case runs; all failures are reported together.
# usage: bad-input.sh [files|options|bzimage]... (default: all groups)
T_ARGS="$*"
# shellcheck source=tests/func/lib.sh
. "$(dirname "$0")/lib.sh"
groups=" ${*:-files options bzimage} "
want() { [[ $groups == *" $1 "* ]]; }
hello=$(guest hello)
mkbz() { python3 "$SRC/tests/func/mkbzimage.py" "$@" || fail "mkbzimage.py $* failed"; }

nfail=0
bad() {   # bad DESCRIPTION PATTERN ARGS...: ferry-vmm ARGS must reject with a line matching PATTERN
    local what=$1 pat=$2; shift 2
    vmm 20 "$@"
    local why=""
    local nl
    nl=$(wc -l <"$ERR")
    if [ "$RC" -eq 0 ]; then why="exit status 0 (accepted)"
    elif [ "$RC" -eq 124 ]; then why="timed out"
    elif [ "$RC" -ge 128 ]; then why="killed by signal $((RC - 128)) (exit status $RC)"
    elif ! sanitizer_clean "$ERR"; then why="sanitizer report"
    elif [ "$nl" -ne 1 ] || [ -n "$(tail -c1 "$ERR")" ]; then why="$nl lines on stderr, expected exactly one"
    elif ! head -n1 "$ERR" | grep -q '^ferry-vmm: '; then why="stderr does not start with 'ferry-vmm: '"
    elif ! grep -qE -- "$pat" "$ERR"; then why="stderr does not match /$pat/"
    fi
    if [ -n "$why" ]; then
        echo "FAIL: $T_NAME: $what: $why" >&2
        vmm_report
        nfail=$((nfail + 1))
    fi
}

# ---- files ----
: >"$TMP/empty"
head -c 100 "$hello" >"$TMP/trunc-hdr.elf"
head -c 8000 "$hello" >"$TMP/trunc-seg.elf"
python3 -c '
import random, sys
b = bytearray(random.Random(1234).randbytes(65536))
b[0x1fe:0x200] = b"\0\0"     # neither ELF (no \x7fELF) nor bzImage (no 0xAA55)
open(sys.argv[1], "wb").write(b)' "$TMP/random.bin"
for i in $(seq 100); do echo "line $i: not a kernel"; done >"$TMP/regular"
mkdir "$TMP/dir"

if want files; then
bad "no --kernel"                '^ferry-vmm: .*kernel'                       --mem 64M
bad "missing kernel file"        "$TMP/nonexistent.*No such file"            --kernel "$TMP/nonexistent"
bad "kernel is a directory"      "$TMP/dir.*not a regular file"              --kernel "$TMP/dir"
bad "empty kernel"               "kernel $TMP/empty: .*(empty|truncated)"    --kernel "$TMP/empty"
bad "ELF cut inside its headers" "kernel $TMP/trunc-hdr.elf: "              --kernel "$TMP/trunc-hdr.elf"
bad "ELF cut inside a segment"   "kernel $TMP/trunc-seg.elf: .*(truncated|beyond|outside)" --kernel "$TMP/trunc-seg.elf"
bad "random bytes"               "kernel $TMP/random.bin: not a bzImage"     --kernel "$TMP/random.bin"
bad "text file"                  "kernel $TMP/regular: .*not a bzImage"      --kernel "$TMP/regular"
bad "host (PIE) executable"      "kernel /bin/true: .*ELF"                   --kernel /bin/true
fi

# ---- options ----
if want options; then
bad "--cpus 0"                   'vCPU|cpus'                  --kernel "$hello" --cpus 0
bad "--cpus -1"                  'vCPU|cpus'                  --kernel "$hello" --cpus -1
bad "--cpus 65"                  'vCPU|cpus'                  --kernel "$hello" --cpus 65
bad "--cpus abc"                 "--cpus 'abc'"               --kernel "$hello" --cpus abc
bad "--cpus 2x"                  "--cpus '2x'"                --kernel "$hello" --cpus 2x
bad "--cpu-features unknown"     "unknown CPU feature 'avx9000'" --kernel "$hello" --cpu-features sse2,avx9000
bad "--cpu-features empty name"  "unknown CPU feature ''"     --kernel "$hello" --cpu-features sse2,,lm
bad "--mem 0"                    "mem.*'?0'?"                 --kernel "$hello" --mem 0
bad "--mem 3M"                   '3 MiB.*multiple of 2 MiB'   --kernel "$hello" --mem 3M
bad "--mem 1M"                   '1 MiB.*2 MiB'               --kernel "$hello" --mem 1M
bad "--mem abc"                  "--mem 'abc'"                --kernel "$hello" --mem abc
bad "--mem -2M"                  "--mem '-2M'"                --kernel "$hello" --mem -2M
bad "--mem overflowing"          "--mem '99999999999999G'"    --kernel "$hello" --mem 99999999999999G
bad "--mem 2M (guest too big)"   'outside guest RAM|too small' --kernel "$hello" --mem 2M
bad "unknown option"             "--bogus"                    --kernel "$hello" --bogus
bad "missing option argument"    "--mem"                      --kernel "$hello" --mem
bad "stray argument"             "stray"                      --kernel "$hello" stray
bad "--console bogus"            "--console 'bogus'"          --kernel "$hello" --console bogus
bad "--console file: (no path)"  "--console 'file:'"          --kernel "$hello" --console file:
bad "--console file in a missing dir" "$TMP/nodir/con"        --kernel "$hello" --console "file:$TMP/nodir/con"
bad "--control in a missing dir" "control socket $TMP/nodir/ctl.sock" --kernel "$hello" --control "$TMP/nodir/ctl.sock"
bad "--control path too long"    'control socket path too long' --kernel "$hello" --control "$TMP/$(printf 'x%.0s' {1..120})"
bad "--control is a regular file" "control socket $TMP/regular" --kernel "$hello" --control "$TMP/regular"
[ -f "$TMP/regular" ] || { echo "FAIL: $T_NAME: --control deleted the regular file $TMP/regular" >&2; nfail=$((nfail + 1)); }
echo "not a kernel" >"$TMP/regular"
bad "--mem-path in a missing dir" "memory file $TMP/nodir/ram" --kernel "$hello" --mem-path "$TMP/nodir/ram"
bad "--mem-path is a directory"  "memory file $TMP/dir"       --kernel "$hello" --mem-path "$TMP/dir"
bad "--initrd with a micro-guest" 'initrd'                    --kernel "$hello" --initrd "$TMP/regular"
bad "--append too long for a micro-guest" 'command line too long' --kernel "$hello" --append "$(printf 'x%.0s' {1..3000})"
fi

# ---- bzImage (fake images: tests/func/mkbzimage.py) ----
if want bzimage; then
mkbz "$TMP/bz-2.05" --version 0x0205
mkbz "$TMP/bz-2.11" --version 0x020b
mkbz "$TMP/bz-no64" --xloadflags 0
mkbz "$TMP/bz-zimage" --loadflags 0
mkbz "$TMP/bz-cut" --truncate 3000
mkbz "$TMP/bz-syssize" --syssize 0x10000
mkbz "$TMP/bz-64m" --init-size $((64 << 20))
mkbz "$TMP/bz-40m" --init-size $((40 << 20))
mkbz "$TMP/bz-ok" --probe
head -c $((16 << 20)) /dev/zero >"$TMP/initrd-16m"
bad "bzImage protocol 2.05"      "kernel $TMP/bz-2.05: boot protocol 2.05 too old" --kernel "$TMP/bz-2.05"
bad "bzImage protocol 2.11"      "kernel $TMP/bz-2.11: .*2.11.*64-bit"   --kernel "$TMP/bz-2.11"
bad "bzImage without XLF_KERNEL_64" "kernel $TMP/bz-no64: .*64-bit"      --kernel "$TMP/bz-no64"
bad "zImage (not loaded high)"   "kernel $TMP/bz-zimage: .*zImage"       --kernel "$TMP/bz-zimage"
bad "bzImage cut in its setup"   "kernel $TMP/bz-cut: truncated"         --kernel "$TMP/bz-cut"
bad "bzImage syssize beyond the file" "kernel $TMP/bz-syssize: truncated" --kernel "$TMP/bz-syssize"
bad "memory too small for the kernel" 'memory 32 MiB too small for kernel \(needs 80 MiB\)' \
    --kernel "$TMP/bz-64m" --mem 32M
bad "memory too small for kernel + initrd" 'memory 64 MiB too small for kernel \(needs 56 MiB\) \+ initrd \(16 MiB\)' \
    --kernel "$TMP/bz-40m" --mem 64M --initrd "$TMP/initrd-16m"
bad "missing initrd"             "initrd $TMP/nonexistent"               --kernel "$TMP/bz-ok" --initrd "$TMP/nonexistent"
bad "empty initrd"               "initrd $TMP/empty: empty"              --kernel "$TMP/bz-ok" --initrd "$TMP/empty"
fi

[ "$nfail" -eq 0 ] || fail "$nfail case(s) failed"
exit 0
