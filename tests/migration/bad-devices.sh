#!/bin/bash
# Bad disk and NIC input (micro-guest): each is one clear line on stderr and a
# failed start, or, for a migration, a refused VM that goes on running on its
# source (the Linux guest's version is in tests/lab/t-net-migrate.sh).
#   - a missing disk image, one that is not a file, one shorter than a sector;
#   - a malformed --net (no tap, a name too long, a bad or multicast MAC);
#   - a destination on which the image's path does not exist (its own mount
#     namespace hides the directory): refused, and the source keeps running.
set -u -o pipefail
: "${FERRY_VMM:?FERRY_VMM is not set (run through meson test)}"
: "${GUEST_DIR:?}"
CLI=$(dirname "$FERRY_VMM")/../cli/ferry
TMP=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
fail() {
    echo "FAIL: $*"
    for f in "$TMP"/*.err; do [ -s "$f" ] && { echo "--- $f"; tail -n 10 "$f"; }; done
    exit 1
}
# refuse WANT ARGS...: ferry-vmm exits 1 with exactly the line WANT on stderr
refuse() {
    local want=$1 rc=0; shift
    "$FERRY_VMM" --kernel "$GUEST_DIR/hello.elf" "$@" > /dev/null 2> "$TMP/out.txt" || rc=$?
    [ "$rc" -eq 1 ] || fail "'$*' exited $rc, want 1"
    [ "$(cat "$TMP/out.txt")" = "$want" ] || fail "'$*' said '$(cat "$TMP/out.txt")', want '$want'"
}
refuse "ferry-vmm: disk $TMP/none.img: No such file or directory" --disk "$TMP/none.img"
refuse "ferry-vmm: disk $TMP: Is a directory" --disk "$TMP"
: > "$TMP/empty.img"
refuse "ferry-vmm: disk $TMP/empty.img: 0 bytes, smaller than one 512-byte sector" --disk "$TMP/empty.img"
refuse "ferry-vmm: --net needs tap=NAME" --net mac=52:54:00:00:00:01
refuse "ferry-vmm: bad --net option 'tap=a-name-far-too-long' (expected tap=NAME (at most 15 characters) or mac=MAC)" \
    --net tap=a-name-far-too-long
refuse "ferry-vmm: bad --net mac '52:54:00:00:01' (expected a unicast MAC like 52:54:00:12:34:56)" \
    --net tap=t0,mac=52:54:00:00:01
refuse "ferry-vmm: bad --net mac '01:00:5e:00:00:01' (expected a unicast MAC like 52:54:00:12:34:56)" \
    --net tap=t0,mac=01:00:5e:00:00:01

# a destination without the image: refused, the source goes on
mkdir "$TMP/shared"
truncate -s 8M "$TMP/shared/disk.img"
"$FERRY_VMM" --kernel "$GUEST_DIR/dirtier.elf" --append "mib=8 passes=0 report_ms=100" --mem 64M --insecure \
    --disk "$TMP/shared/disk.img" --control "$TMP/a.sock" > "$TMP/a.out" 2> "$TMP/a.err" &
pids+=($!)
if ! unshare -m true 2>/dev/null; then
    echo "bad-devices: input checks ok; SKIP the destination without the image (no mount namespaces)"
    exit 0
fi
# shellcheck disable=SC2016  # expanded by that sh
unshare -m sh -c 'mount -t tmpfs none "$0" && exec "$@"' "$TMP/shared" \
    "$FERRY_VMM" --incoming 127.0.0.1:0 --insecure > /dev/null 2> "$TMP/b.err" &
pids+=($!)
for _ in $(seq 100); do grep -q 'port [0-9]' "$TMP/b.err" 2>/dev/null && break; sleep 0.1; done
port=$(grep -oE 'port [0-9]+' "$TMP/b.err" | cut -d' ' -f2)
[ -n "$port" ] || fail "the destination did not listen"
n=$(grep -c ' ok ' "$TMP/a.out")
"$CLI" -S "$TMP/a.sock" vm migrate --to "127.0.0.1:$port" > "$TMP/mig.txt" 2>&1 && fail "the migration succeeded"
grep -q "destination refused the VM: disk $TMP/shared/disk.img: No such file or directory" "$TMP/mig.txt" ||
    fail "refusal: $(tail -n 1 "$TMP/mig.txt")"
[ "$("$CLI" -S "$TMP/a.sock" vm status --json | jq -r .state)" = running ] || fail "the source is not running"
sleep 0.5
[ "$(grep -c ' ok ' "$TMP/a.out")" -gt "$n" ] || fail "the source's guest stopped"
echo "bad-devices: ok ($(tail -n 1 "$TMP/mig.txt" | cut -c1-160))"
