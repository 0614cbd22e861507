#!/usr/bin/env python3
"""blkcheck.py IMAGE BLOCKS [MIN_WRITES]: check a disk image the blkwriter
micro-guest (guests/blkwriter.c) wrote, block by block.

Every block must be whole: all zero (never written) or block i of some
generation g with every qword as blkwriter writes it. Read in write order the
generations must be G up to a cursor and G-1 after it (what a guest that
writes block 0..N-1 pass after pass leaves at any instant; a lost or
reordered write breaks it). The writes the image holds, (G-1)*N + cursor,
must be at least MIN_WRITES (the guest's last progress line said it had
completed that many).

Prints "ok gen=G cursor=C writes=W" and exits 0, or prints the first problem
and exits 1."""
import struct
import sys

MAGIC = 0x31305452574B4C42
BS = 4096
QW = BS // 8
K_INT = int.from_bytes(struct.pack("<%dQ" % (QW - 3), *range(3, QW)), "little")


def block_gen(buf, i):
    """The generation of block i, or None when it is not a valid block."""
    if buf == bytes(BS):
        return 0
    magic, blk, g = struct.unpack_from("<3Q", buf)
    if magic != MAGIC or blk != i:
        return None
    base = struct.pack("<Q", (g << 32 | i) & 0xFFFFFFFFFFFFFFFF) * (QW - 3)
    want = int.from_bytes(base, "little") ^ K_INT   # qword k = base ^ k, all at once
    if int.from_bytes(buf[24:], "little") != want:
        return None
    return g


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: blkcheck.py IMAGE BLOCKS [MIN_WRITES]")
    path, n = sys.argv[1], int(sys.argv[2])
    min_writes = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    gens = []
    with open(path, "rb") as f:
        for i in range(n):
            buf = f.read(BS)
            if len(buf) != BS:
                print("%s: short image: block %d missing" % (path, i))
                return 1
            g = block_gen(buf, i)
            if g is None:
                print("%s: block %d is not a whole blkwriter block (torn or foreign data)" % (path, i))
                return 1
            gens.append(g)
    top = gens[0]
    cursor = n
    for i, g in enumerate(gens):
        if cursor == n and g == top:
            continue
        if g == top - 1:
            cursor = min(cursor, i)
            continue
        print("%s: block %d has generation %d, block 0 has %d (cursor %s): a write was lost or reordered"
              % (path, i, g, top, cursor if cursor < n else "none"))
        return 1
    writes = (top - 1) * n + cursor if top > 0 else 0
    if writes < min_writes:
        print("%s: holds %d writes (gen %d, cursor %d), the guest had completed %d: writes were lost"
              % (path, writes, top, cursor, min_writes))
        return 1
    print("ok gen=%d cursor=%d writes=%d" % (top, cursor, writes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
