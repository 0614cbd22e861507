#!/bin/bash
# Cold disk copy (ferry-disk): the blkwriter guest writes 2 passes of
# numbered blocks to a sparse image and powers off; the image goes to a
# receiver over TLS from another local address (--via, "the provisioning
# network"). The copy reads back block by block with every write, holes
# stayed holes, and the receiver saw the sender's --via address. Then: a full
# receiver (a 4 MiB tmpfs in its own mount namespace) fails the copy with the
# reason on the sender and leaves nothing; plaintext and an existing target
# are refused.
. "$(dirname "$0")/lib.sh"
FERRY_DISK=$(dirname "$FERRY_VMM")/ferry-disk
BLOCKS=4096                       # 16 MiB of data in a 64 MiB image
truncate -s 64M "$TMP/a.img"
_start w --kernel "$(guest blkwriter)" --mem 64M --disk "$TMP/a.img" --append "blocks=$BLOCKS passes=2"
wait_exit w 60
[ "$RC" = 0 ] || fail "the blkwriter exited with status $RC"

# receive NAME PATH PORT [PREFIX...]: ferry-disk receive in the background (PREFIX: e.g. unshare ...)
receive() {
    local name=$1 path=$2 port=$3; shift 3
    "$@" "$FERRY_DISK" receive "$path" --listen "127.0.0.1:$port" --tls-dir "$TMP/tls" \
        >"$TMP/$name.out" 2>"$TMP/$name.log" &
    RPID=$!
    wait_for 10 grep -q 'waiting for an image' "$TMP/$name.log" || fail "$name: the receiver does not listen"
}

receive r1 "$TMP/b.img" 7870
out=$("$FERRY_DISK" send "$TMP/a.img" --to 127.0.0.1:7870 --via 127.0.0.2 --tls-dir "$TMP/tls" 2>&1) ||
    fail "send failed: $out"
wait "$RPID" || fail "the receiver failed: $(cat "$TMP/r1.log")"
grep -q 'from 127.0.0.2, digest verified' "$TMP/r1.out" || fail "receiver: $(cat "$TMP/r1.out" "$TMP/r1.log")"
[[ $out == *"$TLS_CIPHER"* ]] || fail "the copy was not TLS with $TLS_CIPHER: $out"
check=$("$PYTHON" "$SRC/tests/func/blkcheck.py" "$TMP/b.img" $BLOCKS $((2 * BLOCKS))) || fail "copy: $check"
[ "$(stat -c %s "$TMP/b.img")" = $((64 << 20)) ] || fail "the copy's size is $(stat -c %s "$TMP/b.img")"
alloc=$(($(stat -c %b "$TMP/b.img") * 512))
[ "$alloc" -le $((20 << 20)) ] || fail "the copy allocates $alloc bytes: holes were filled"
cmp -s "$TMP/a.img" "$TMP/b.img" || fail "the copy differs from the image"

# a full receiver: 4 MiB of room for 16 MiB of data
mkdir -p "$TMP/full"
# (what the receiver leaves is listed inside its namespace, once it exited)
receive r2 "$TMP/full/c.img" 7871 unshare -m --propagation private \
    sh -c "mount -t tmpfs -o size=4m tmpfs $TMP/full || exit 99; \"\$@\"; rc=\$?; ls -A $TMP/full >$TMP/full.ls; exit \$rc" sh
full=$("$FERRY_DISK" send "$TMP/a.img" --to 127.0.0.1:7871 --tls-dir "$TMP/tls" 2>&1) && fail "a full receiver accepted it: $full"
[[ $full == *"No space left on device"* ]] || fail "full: the sender's error does not say why: $full"
wait "$RPID" && fail "the full receiver exited 0"
grep -q 'No space left on device' "$TMP/r2.log" || fail "full: receiver: $(cat "$TMP/r2.log")"
[ -e "$TMP/full.ls" ] || fail "full: the receiver's store was not listed"
[ ! -s "$TMP/full.ls" ] || fail "full: the receiver left $(cat "$TMP/full.ls")"

# never plaintext; never over an existing image
"$FERRY_DISK" receive "$TMP/d.img" --listen 127.0.0.1:7872 >/dev/null 2>"$TMP/p.err" && fail "plaintext receive ran"
grep -q 'never plaintext' "$TMP/p.err" || fail "plaintext: $(cat "$TMP/p.err")"
"$FERRY_DISK" receive "$TMP/b.img" --listen 127.0.0.1:7872 --tls-dir "$TMP/tls" >/dev/null 2>"$TMP/e.err" &&
    fail "receive over an existing image ran"
grep -q 'exists' "$TMP/e.err" || fail "existing target: $(cat "$TMP/e.err")"
cmp -s "$TMP/a.img" "$TMP/b.img" || fail "the refused receive touched the existing image"

for f in "$TMP"/r1.log "$TMP"/r2.log "$TMP"/p.err "$TMP"/e.err; do
    sanitizer_clean "$f" || fail "sanitizer report in $f"
done
[[ $out$full != *Sanitizer* && $out$full != *"runtime error"* ]] || fail "sanitizer report from the sender"
note "$check; $(head -c 200 <<<"$out"); full: ${full#ferry-disk: } time=$(elapsed)"
