/* Live disk move (Storage vMotion at the VMM level): copy a running
 * virtio-blk disk's raw image to another path and switch the device to the
 * copy without the guest noticing.
 *
 * Phases:
 *   copy     a thread copies the image's data extents (SEEK_DATA/SEEK_HOLE;
 *            holes and all-zero chunks stay holes) into TARGET.ferry-partial
 *            with io_uring (1 MiB chunks, 8 in flight; pread/pwrite when
 *            io_uring is unavailable). Guest writes meanwhile set bits in a
 *            dirty bitmap (64 KiB blocks); passes re-copy the dirty blocks
 *            until few are left (or MOVE_MAX_PASSES).
 *   mirror   every guest write goes to both images before it completes, so
 *            the dirty set only shrinks; the remaining dirty blocks are
 *            copied (a guest write and the copy of the same 256 KiB run
 *            exclude each other), the new image is synced.
 *   switch   with the device's request thread held (vp.lock, no batch being
 *            executed, bitmap empty) the partial file is renamed to TARGET
 *            and the device's fd and path are swapped: no request is lost or
 *            reordered, the next batch runs on the new image.
 *
 * Crash rule: TARGET itself exists only after the switch (rename is atomic).
 * After a crash of ferry-vmm, TARGET existing means the new image is
 * authoritative (it was identical to the source at the rename, and only it
 * was written after); otherwise the source is, and TARGET.ferry-partial is
 * garbage. The source is never written by the copy.
 *
 * Cancel, an error on either image, or the VM stopping before the switch:
 * the device stays on the source and the partial file is removed. */
#ifndef FERRY_BLK_MOVE_H
#define FERRY_BLK_MOVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct virtio_blk;
struct blk_move;

#define MOVE_BLOCK       (64u << 10)   /* dirty-bitmap granularity */
#define MOVE_CHUNK       (1u << 20)    /* copy I/O size */
#define MOVE_QD          8             /* chunks in flight (io_uring) */
#define MOVE_MAX_PASSES  8             /* dirty passes before mirroring anyway */
#define MOVE_PARTIAL_SUFFIX ".ferry-partial"

enum blk_move_phase { MOVE_NONE, MOVE_COPY, MOVE_MIRROR, MOVE_SWITCHED, MOVE_FAILED, MOVE_CANCELLED };
const char *blk_move_phase_name(enum blk_move_phase p);

struct blk_move_params {
    const char *target;
    bool delete_source;       /* unlink the old image after the switch */
    bool force;               /* replace an existing TARGET */
    bool no_uring;            /* pread/pwrite even when io_uring works (benchmark) */
    uint64_t bandwidth;       /* bytes/s, 0 = no cap */
    uint64_t test_hold_ms;    /* tests: stay in the mirror phase this long */
    uint64_t test_switch_ms;  /* tests: sleep this long in the switch, after the rename */
};

struct blk_move_info {
    enum blk_move_phase phase;
    char source[4096], target[4096];
    char error[512];
    const char *io;           /* "io_uring" or "pread" */
    uint64_t size;            /* virtual size of the image */
    uint64_t total_bytes;     /* data (non-hole) bytes of the source at the start */
    uint64_t pass0_bytes;     /* of those, copied by the first pass */
    uint64_t bytes_copied;    /* all bytes read from the source, re-copies included */
    uint64_t zero_bytes;      /* read but left as holes */
    uint64_t dirty_blocks;    /* now */
    uint64_t mirrored_writes; /* guest writes sent to both images */
    uint32_t pass;            /* 0 = bulk copy, then dirty passes */
    double rate;              /* bytes/s over the last second or so */
    uint64_t bandwidth;       /* cap, bytes/s */
    uint64_t elapsed_ms, switch_us;
    bool delete_source;
};

/* Start moving b's image to p->target. Checks (same file, exists, can
 * create) happen here; the copy runs on its own thread. 0 or -1 with a
 * one-line reason. */
int blk_move_start(struct virtio_blk *b, const struct blk_move_params *p, char *err, size_t errlen);
/* Ask the move to stop; the device stays on the old image. -1 when there is
 * no move to cancel (or it already switched). */
int blk_move_cancel(struct virtio_blk *b, char *err, size_t errlen);
/* The current or last move; false when the disk was never moved. */
bool blk_move_info(struct virtio_blk *b, struct blk_move_info *out);
/* A move is copying or mirroring (not yet switched, failed or cancelled). */
bool blk_move_active(struct virtio_blk *b);
/* Stop and free the move (the device is being destroyed). */
void blk_move_destroy(struct virtio_blk *b);

/* ---- hooks for the device's request thread (m = b->move, may be NULL) ---- */
/* Before a guest write (or discard) of [off, off+len): returns the fd the
 * write must also go to (mirror phase), else -1. */
int blk_move_write_begin(struct blk_move *m, uint64_t off, uint64_t len, bool data);
/* After it, whether or not it succeeded on the source (src_ok); mirror_fd is
 * what write_begin returned, mirror_errno the mirror write's errno (0 = fine,
 * or not attempted because the source write failed). */
void blk_move_write_end(struct blk_move *m, uint64_t off, uint64_t len, int mirror_fd, int mirror_errno,
                        bool src_ok);
/* A guest flush succeeded on the source: sync the mirror too (errors abort
 * the move, not the guest's flush). */
void blk_move_flush(struct blk_move *m);

/* ---- shared-nothing migration: the same bitmap, no target file ----------
 * The migration sends the image itself over its streams (migration/disks.h):
 * a tracker (b->track) marks every guest write in a bitmap of its own, and
 * cursors walk the image's data extents (round 0) or take its dirty blocks
 * (later rounds), each stream its lane of 1 MiB chunks (chunk % lanes ==
 * lane), so that a block sent again always follows its older copy on the same
 * stream. Pieces start and end on MOVE_BLOCK boundaries (or the image's end). */
struct blk_cursor {
    bool dirty;               /* false: data extents; true: dirty blocks (cleared as taken) */
    uint32_t lanes, lane;     /* lanes 0: every chunk, runs across chunks (a move); else pieces
                                 within one chunk, those with chunk % lanes == lane */
    uint64_t off, end, blk;   /* position */
};
/* Start tracking b's writes (no write in flight misses it). -1 with a
 * reason: a move is under way, or no memory. */
int blk_track_start(struct virtio_blk *b, char *err, size_t errlen);
/* Stop tracking and free the tracker (no-op without one). */
void blk_track_stop(struct virtio_blk *b);
/* Dirty blocks now; data (non-hole) bytes of the image. */
uint64_t blk_track_dirty(struct virtio_blk *b);
uint64_t blk_track_data_bytes(struct virtio_blk *b);
/* The next piece [*off, *off + *len) of the walk, at most MOVE_CHUNK bytes
 * within one chunk. 1, or 0 at the end. */
int blk_track_next(struct virtio_blk *b, struct blk_cursor *c, uint64_t *off, size_t *len);
/* The same walk over the data extents of an image not in use (cold copy):
 * fd, size bytes. */
int blk_extents_next(int fd, uint64_t size, struct blk_cursor *c, uint64_t *off, size_t *len);
/* The data extent [*lo, *hi) of fd (size bytes) at or after pos; *lo = *hi =
 * size past the last. No SEEK_DATA (a block device): all of it is data. */
void blk_data_extent(int fd, uint64_t size, uint64_t pos, uint64_t *lo, uint64_t *hi);
/* Read a piece from the tracked image (0, or -1 with errno). */
int blk_track_read(struct virtio_blk *b, uint8_t *buf, size_t len, uint64_t off);
/* Rename the device's image file to path (an incoming shared-nothing image
 * that became the VM's at COMMIT) and make that the disk's path. */
int blk_image_rename(struct virtio_blk *b, const char *path, char *err, size_t errlen);
/* len bytes at p are all zero. */
bool blk_buf_zero(const uint8_t *p, size_t len);

#endif
