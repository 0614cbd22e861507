#!/bin/bash
# hello.sh NCPUS: the hello micro-guest on NCPUS vCPUs prints one line per
# vCPU, nothing else, and ferry-vmm exits 0.
T_ARGS="$*"
# shellcheck source=tests/func/lib.sh
. "$(dirname "$0")/lib.sh"
n=${1:?usage: hello.sh NCPUS}

vmm 20 --kernel "$(guest hello)" --cpus "$n" --mem 64M --console none
expect_exit 0
for ((i = 0; i < n; i++)); do
    expect_line "$OUT" "^hello from ferry micro-guest cpu $i ram 64 MiB\$" "no hello line from vCPU $i"
done
got=$(count_lines "$OUT" '^hello from')
[ "$got" -eq "$n" ] || vfail "$got hello lines for $n vCPUs"
expect_no_line "$OUT" 'only [0-9]+ of' "the guest saw fewer vCPUs than $n run"
[ -s "$ERR" ] && vfail "unexpected output on stderr"
exit 0
