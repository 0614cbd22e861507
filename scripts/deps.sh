#!/bin/bash
# Install the Debian packages Ferry needs to build and test (idempotent).
set -euo pipefail
PKGS="gcc meson ninja-build pkg-config acpica-tools libjson-c-dev libxxhash-dev libcmocka-dev
      libclang-rt-14-dev libssl-dev openssl liblz4-dev libzstd-dev libevent-dev curl socat iproute2 python3
      qemu-system-x86 qemu-utils busybox-static cpio kmod xz-utils iperf3 liburing-dev
      libsqlite3-dev libpq-dev postgresql libcurl4-openssl-dev"
missing=()
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
    echo "deps: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
