#!/bin/bash
# need-kvm.sh SCRIPT [ARG...]: run a micro-guest benchmark with bash, or skip
# it (meson's status 77) on a host without /dev/kvm. These benchmarks measure
# guests at native speed; inside the nested lab they would measure QEMU's
# emulator instead, so they are not moved there (tests/run.sh moves the tests).
if [ ! -c /dev/kvm ]; then
    echo "SKIP: $(basename "$1" .sh): this host has no /dev/kvm, and the benchmark measures micro-guests at native speed"
    exit 77
fi
exec bash "$@"
