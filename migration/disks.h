/* Disk images on the migration streams (shared-nothing migration, protocol 3).
 *
 * DISK_BLOCKS: u32 disk (index in HELLO's "disks"), u32 flags (DISK_F_ZERO:
 * the range reads as zeroes, no data follows; the destination punches a
 * hole), u64 offset, u64 length, then the data. A piece starts on a
 * DISK_BLOCK boundary and ends on one or at the image's end, within one
 * 1 MiB chunk, which always travels on stream chunk % N (so a block sent
 * again follows its older copy, as pages do).
 *
 * DISK_DIGEST: u32 disk, u32 0, u64 image size, then one u64 per 1 MiB chunk:
 * XXH3-64 of the XXH3-64s of its blocks (the last block, chunk possibly short).
 * The destination hashes each block as it writes it; blocks never sent are
 * holes, zeroes. */
#ifndef FERRY_DISKS_H
#define FERRY_DISKS_H

#include <stdbool.h>
#include <stdint.h>

#include "migration/chan.h"
#include "migration/stream.h"

#define DISK_BLOCK   (64u << 10)   /* = MOVE_BLOCK: the tracker's granularity */
#define DISK_CHUNK   (1u << 20)    /* = MOVE_CHUNK */
#define DISK_HEAD    24
#define DISK_F_ZERO  1u
#define DISKS_MAX    4             /* = VM_MAX_DISKS */

/* ---- source ---------------------------------------------------------------- */

/* Send [off, off + len) of disk d: buf holds the data, or zero says it is all
 * zero. *wire gets the bytes written. 0, or -1 with a reason. */
int disk_blocks_send(struct chan *c, uint32_t d, uint64_t off, const uint8_t *buf, size_t len, bool zero,
                     uint64_t *wire, char *err, size_t errlen);
/* DISK_DIGEST of the image open on fd (the VM paused) into b: its data
 * extents read by up to one thread per core, holes hashed as zeroes unread. */
int disk_digest_encode(struct buf *b, uint32_t d, int fd, uint64_t size, char *err, size_t errlen);

/* ---- destination ------------------------------------------------------------- */

/* The images being received: written through fd[d], each block's hash kept. */
struct disk_sink {
    int n;
    int fd[DISKS_MAX];
    const char *path[DISKS_MAX];
    uint64_t size[DISKS_MAX];
    uint64_t *hash[DISKS_MAX];     /* per DISK_BLOCK */
};

/* Set up disk d (size bytes, written through fd, named path for errors). */
int disk_sink_add(struct disk_sink *s, int fd, const char *path, uint64_t size);
void disk_sink_free(struct disk_sink *s);

/* Per stream: a buffer for one piece, and totals. */
struct disks_rx {
    uint8_t *buf;
    uint64_t bytes, wire_bytes;
};

/* After msg_read_header returned DISK_BLOCKS in m: read the piece, write it
 * to its image, record its hashes. 0, or -1 with a reason (an ENOSPC or EIO
 * names the image; the stream is then dropped). */
int disks_rx_recv(struct disks_rx *rx, struct disk_sink *s, struct chan *c, struct msg *m, char *err,
                  size_t errlen);
void disks_rx_free(struct disks_rx *rx);

/* Compare a DISK_DIGEST with what arrived: 0, or -1 with where they differ. */
int disk_digest_check(const struct disk_sink *s, const struct msg *m, char *err, size_t errlen);

#endif
