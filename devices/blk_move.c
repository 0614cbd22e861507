/* Live disk move: copy thread, dirty bitmap, mirror, switch (see blk_move.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#include "devices/blk_move.h"
#include "devices/virtio_blk.h"
#include "vmm/log.h"

#define MIRROR_THRESHOLD (4ull << 20)   /* dirty bytes small enough to finish in the mirror phase */
#define MIRROR_RUN (256u << 10)          /* mirror-phase copy unit: what a colliding guest write waits for */
#define CHUNK_BLOCKS (MOVE_CHUNK / MOVE_BLOCK)

static const struct blk_cursor ALL_DIRTY = { .dirty = true };

enum { MODE_OFF, MODE_TRACK, MODE_MIRROR };

struct blk_move {
    struct virtio_blk *b;
    struct blk_move_params p;
    char *source, *target, *partial;
    char *old_path;              /* b->path before the switch: status readers may still hold it */
    int src_fd, dst_fd;          /* src_fd: our own read-only fd on the source */
    uint64_t size, nblocks, nwords;
    _Atomic uint64_t *bm;        /* dirty blocks */
    atomic_int mode;
    atomic_bool cancel;
    pthread_t thread;
    bool thread_live;
    struct io_uring ring;
    bool uring;
    uint8_t *bufs;               /* MOVE_QD chunks, page aligned */
    uint64_t tb_base_ns, tb_bytes;   /* bandwidth cap: bytes since tb_base */

    pthread_mutex_t lock;        /* everything below */
    pthread_cond_t cond;         /* cancel wakes sleeps */
    pthread_cond_t range_cond;   /* the copy run and a mirrored write waiting for each other */
    int range_waiters;           /* signal range_cond only when someone waits: per guest write */
    uint64_t copy_lo, copy_hi;   /* blocks [lo, hi) the copier copies in the mirror phase */
    uint64_t wr_lo, wr_hi;       /* blocks of the guest's mirrored write in flight */
    int mirror_err;              /* first error of a mirrored write or flush */
    enum blk_move_phase phase;
    char error[512];
    uint64_t total, pass0, copied, zeroes, mirrored;
    uint32_t pass;
    uint64_t t0_ns, end_ns, switch_us;
    uint64_t rate_t_ns, rate_b;
    double rate;
};

const char *blk_move_phase_name(enum blk_move_phase p)
{
    static const char *const n[] = { "none", "copy", "mirror", "switched", "failed", "cancelled" };
    return p <= MOVE_CANCELLED ? n[p] : "?";
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- dirty bitmap -------------------------------------------------------- */

static void mark(struct blk_move *m, uint64_t lo, uint64_t hi)
{
    for (uint64_t i = lo; i < hi && i < m->nblocks; i++)
        atomic_fetch_or(&m->bm[i / 64], 1ull << (i % 64));
}

static void clear(struct blk_move *m, uint64_t lo, uint64_t hi)
{
    for (uint64_t i = lo; i < hi; i++)
        atomic_fetch_and(&m->bm[i / 64], ~(1ull << (i % 64)));
}

static bool test_bit(struct blk_move *m, uint64_t i)
{
    return atomic_load(&m->bm[i / 64]) >> (i % 64) & 1;
}

static uint64_t count_dirty(struct blk_move *m)
{
    uint64_t n = 0;
    for (uint64_t w = 0; w < m->nwords; w++)
        n += (uint64_t)__builtin_popcountll(atomic_load(&m->bm[w]));
    return n;
}

static bool ours(const struct blk_cursor *c, uint64_t chunk)
{
    return c->lanes <= 1 || chunk % c->lanes == c->lane;
}

/* The first dirty block at or after *blk in one of c's chunks and the run
 * of dirty blocks that follows (up to max blocks; with lanes, even one, not
 * past its chunk): [*lo, *hi). false when none is left. */
static bool next_run(struct blk_move *m, const struct blk_cursor *c, uint64_t *blk, uint64_t *lo, uint64_t *hi,
                     uint64_t max)
{
    uint64_t i = *blk;
    while (i < m->nblocks) {
        uint64_t w = atomic_load(&m->bm[i / 64]) >> (i % 64);
        if (!w) {
            i = (i / 64 + 1) * 64;
            continue;
        }
        i += (uint64_t)__builtin_ctzll(w);
        if (i < m->nblocks && !ours(c, i / CHUNK_BLOCKS)) {
            i = (i / CHUNK_BLOCKS + 1) * CHUNK_BLOCKS;
            continue;
        }
        break;
    }
    if (i >= m->nblocks) {
        *blk = m->nblocks;
        return false;
    }
    uint64_t j = i + 1;
    while (j < m->nblocks && j - i < max && test_bit(m, j) && (!c->lanes || j % CHUNK_BLOCKS))
        j++;
    *lo = i;
    *hi = j;
    *blk = j;
    return true;
}

/* ---- status and errors --------------------------------------------------- */

static bool stopping(struct blk_move *m)
{
    if (atomic_load(&m->cancel))
        return true;
    pthread_mutex_lock(&m->lock);
    bool bad = m->mirror_err || m->error[0];
    pthread_mutex_unlock(&m->lock);
    return bad;
}

static void set_error(struct blk_move *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct blk_move *m, const char *fmt, ...)
{
    pthread_mutex_lock(&m->lock);
    if (!m->error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m->error, sizeof(m->error), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&m->lock);
}

static void account(struct blk_move *m, uint64_t bytes, bool zero, bool pass0)
{
    pthread_mutex_lock(&m->lock);
    m->copied += bytes;
    if (zero)
        m->zeroes += bytes;
    if (pass0)
        m->pass0 += bytes;
    uint64_t t = now_ns();
    if (t - m->rate_t_ns >= 500000000ull) {
        m->rate = (double)(m->copied - m->rate_b) * 1e9 / (double)(t - m->rate_t_ns);
        m->rate_t_ns = t;
        m->rate_b = m->copied;
    }
    pthread_mutex_unlock(&m->lock);
}

/* Sleep until t_ns (CLOCK_MONOTONIC) or a cancel. false when cancelled. */
static bool sleep_until(struct blk_move *m, uint64_t t_ns)
{
    /* m->cond runs on CLOCK_MONOTONIC (blk_move_start) */
    struct timespec ts = { .tv_sec = (time_t)(t_ns / 1000000000ull), .tv_nsec = (long)(t_ns % 1000000000ull) };
    pthread_mutex_lock(&m->lock);
    while (!atomic_load(&m->cancel) && now_ns() < t_ns)
        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
    pthread_mutex_unlock(&m->lock);
    return !atomic_load(&m->cancel);
}

/* Bandwidth cap: a budget that refills at p.bandwidth bytes/s; a copier
 * that fell behind does not get to burst (the base moves forward). */
static bool throttle(struct blk_move *m, uint64_t bytes)
{
    if (!m->p.bandwidth)
        return !atomic_load(&m->cancel);
    uint64_t t = now_ns();
    uint64_t due = m->tb_base_ns + (uint64_t)((double)m->tb_bytes * 1e9 / (double)m->p.bandwidth);
    if (due + 100000000ull < t) {
        m->tb_base_ns = t;
        m->tb_bytes = 0;
        due = t;
    }
    m->tb_bytes += bytes;
    return due <= t ? !atomic_load(&m->cancel) : sleep_until(m, due);
}

/* ---- I/O helpers --------------------------------------------------------- */

bool blk_buf_zero(const uint8_t *p, size_t len)
{
    const uint64_t *q = (const uint64_t *)(const void *)p;
    for (size_t i = 0; i < len / 8; i += 8) {
        uint64_t acc = 0;
        for (size_t k = i; k < i + 8 && k < len / 8; k++)
            acc |= q[k];
        if (acc)
            return false;
    }
    for (size_t i = len & ~(size_t)7; i < len; i++)
        if (p[i])
            return false;
    return true;
}

/* pread/pwrite the whole range; a read past the end of the file gives
 * zeroes (the image cannot shrink under a running VM, but be safe). */
static int io_full(int fd, uint8_t *buf, size_t len, uint64_t off, bool write)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write ? pwrite(fd, buf + done, len - done, (off_t)(off + done))
                          : pread(fd, buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            if (write) {
                errno = EIO;
                return -1;
            }
            memset(buf + done, 0, len - done);
            return 0;
        }
        done += (size_t)n;
    }
    return 0;
}

/* A re-copied block that is now zero: punch it in the new image (it may
 * hold older data), or write the zeroes where punching is not supported. */
static int put_zero(struct blk_move *m, const uint8_t *zbuf, uint64_t off, size_t len)
{
    if (fallocate(m->dst_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    return io_full(m->dst_fd, (uint8_t *)zbuf, len, off, true);
}

void blk_data_extent(int fd, uint64_t size, uint64_t pos, uint64_t *lo, uint64_t *hi)
{
    off_t d = lseek(fd, (off_t)pos, SEEK_DATA), h = -1;
    if (d < 0 && errno == ENXIO) {
        *lo = *hi = size;
        return;
    }
    if (d >= 0)
        h = lseek(fd, d, SEEK_HOLE);
    *lo = d < 0 ? pos : (uint64_t)d;   /* no SEEK_DATA here (a block device): all of it is data */
    *hi = d < 0 || h < 0 || (uint64_t)h > size ? size : (uint64_t)h;
}

/* The next piece of fd's data extents (size bytes) in one of g's chunks:
 * 1, or 0 at the end. */
static int extents_next(int fd, uint64_t size, struct blk_cursor *g, uint64_t *off, size_t *len)
{
    for (;;) {
        if (g->off >= g->end) {
            if (g->end >= size)
                return 0;
            blk_data_extent(fd, size, g->end, &g->off, &g->end);
            if (g->off >= g->end)
                return 0;
        }
        /* cut at chunk boundaries so the I/O stays aligned */
        uint64_t cut = (g->off / MOVE_CHUNK + 1) * MOVE_CHUNK;
        uint64_t end = cut < g->end ? cut : g->end;
        *off = g->off;
        *len = (size_t)(end - g->off);
        g->off = end;
        if (ours(g, *off / MOVE_CHUNK))
            return 1;
    }
}

/* 1 with the next chunk, 0 at the end. */
static int next_chunk(struct blk_move *m, struct blk_cursor *g, uint64_t *off, size_t *len)
{
    if (g->dirty) {
        uint64_t lo, hi;
        if (!next_run(m, g, &g->blk, &lo, &hi, CHUNK_BLOCKS))
            return 0;
        clear(m, lo, hi);
        *off = lo * MOVE_BLOCK;
        uint64_t end = hi * MOVE_BLOCK < m->size ? hi * MOVE_BLOCK : m->size;
        *len = (size_t)(end - *off);
        return 1;
    }
    return extents_next(m->src_fd, m->size, g, off, len);
}

/* Data bytes of the source (the sum of its data extents). */
static uint64_t data_bytes(struct blk_move *m)
{
    uint64_t total = 0;
    off_t pos = 0;
    for (;;) {
        off_t d = lseek(m->src_fd, pos, SEEK_DATA);
        if (d < 0)
            return errno == ENXIO ? total : m->size;   /* no SEEK_DATA: all of it */
        off_t h = lseek(m->src_fd, d, SEEK_HOLE);
        if (h < 0 || (uint64_t)h > m->size)
            h = (off_t)m->size;
        total += (uint64_t)(h - d);
        if ((uint64_t)h >= m->size)
            return total;
        pos = h;
    }
}

/* One chunk read into buf: write it out (or leave/punch a hole). */
static int put_chunk(struct blk_move *m, const uint8_t *buf, uint64_t off, size_t len, bool fresh)
{
    bool zero = blk_buf_zero(buf, len);
    account(m, len, zero, fresh);
    if (zero && fresh)
        return 0;    /* the new file is a hole there already */
    int r = zero ? put_zero(m, buf, off, len) : io_full(m->dst_fd, (uint8_t *)buf, len, off, true);
    if (r < 0)
        set_error(m, "cannot write %s: %s", m->partial, strerror(errno));
    return r;
}

static int copy_sync(struct blk_move *m, struct blk_cursor *g, bool fresh)
{
    uint64_t off;
    size_t len;
    int r = 0;
    while (!stopping(m) && (r = next_chunk(m, g, &off, &len)) > 0) {
        if (!throttle(m, len))
            break;
        if (io_full(m->src_fd, m->bufs, len, off, false) < 0) {
            set_error(m, "cannot read %s: %s", m->source, strerror(errno));
            return -1;
        }
        if (put_chunk(m, m->bufs, off, len, fresh) < 0)
            return -1;
    }
    return stopping(m) || r < 0 ? -1 : 0;
}

/* The same with io_uring: up to MOVE_QD chunks in flight, each read then
 * written from its own buffer, so reads of the next chunks overlap the
 * writes of the previous ones. */
enum { SLOT_FREE, SLOT_READ, SLOT_WRITE };
struct slot { int state; uint64_t off; size_t len; };

static void queue_io(struct blk_move *m, struct slot *s, int idx, bool write)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&m->ring);   /* ring has 2 * MOVE_QD entries */
    uint8_t *buf = m->bufs + (size_t)idx * MOVE_CHUNK;
    if (write)
        io_uring_prep_write(sqe, m->dst_fd, buf, (unsigned)s->len, s->off);
    else
        io_uring_prep_read(sqe, m->src_fd, buf, (unsigned)s->len, s->off);
    io_uring_sqe_set_data64(sqe, (uint64_t)idx);
    s->state = write ? SLOT_WRITE : SLOT_READ;
}

static int copy_uring(struct blk_move *m, struct blk_cursor *g, bool fresh)
{
    struct slot slots[MOVE_QD] = { 0 };
    int inflight = 0, failed = 0;
    bool more = true;
    for (;;) {
        for (int i = 0; i < MOVE_QD && more && !failed && !stopping(m); i++) {
            if (slots[i].state != SLOT_FREE)
                continue;
            int r = next_chunk(m, g, &slots[i].off, &slots[i].len);
            if (r <= 0) {
                more = false;
                failed |= r < 0;
                break;
            }
            if (!throttle(m, slots[i].len)) {
                failed = 1;
                break;
            }
            queue_io(m, &slots[i], i, false);
            inflight++;
        }
        if (!inflight)
            break;
        struct io_uring_cqe *cqe;
        int r = io_uring_submit_and_wait(&m->ring, 1);
        if (r < 0 && r != -EINTR) {
            set_error(m, "io_uring: %s", strerror(-r));
            /* cannot tell what is still in flight: wait for it the slow way */
            while (inflight > 0 && io_uring_wait_cqe(&m->ring, &cqe) == 0) {
                io_uring_cqe_seen(&m->ring, cqe);
                inflight--;
            }
            return -1;
        }
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&m->ring, head, cqe) {
            seen++;
            int idx = (int)io_uring_cqe_get_data64(cqe);
            struct slot *s = &slots[idx];
            uint8_t *buf = m->bufs + (size_t)idx * MOVE_CHUNK;
            int res = cqe->res;
            if (s->state == SLOT_READ) {
                /* short read: finish it synchronously (rare) */
                if (res < 0 || ((size_t)res < s->len &&
                                io_full(m->src_fd, buf + res, s->len - (size_t)res, s->off + (uint64_t)res, false) < 0)) {
                    set_error(m, "cannot read %s: %s", m->source, strerror(res < 0 ? -res : errno));
                    failed = 1;
                } else if (!failed) {
                    bool zero = blk_buf_zero(buf, s->len);
                    if (!zero) {
                        account(m, s->len, false, fresh);
                        queue_io(m, s, idx, true);
                        continue;
                    }
                    if (put_chunk(m, buf, s->off, s->len, fresh) < 0)
                        failed = 1;
                }
            } else {
                if (res < 0 || ((size_t)res < s->len &&
                                io_full(m->dst_fd, buf + res, s->len - (size_t)res, s->off + (uint64_t)res, true) < 0)) {
                    set_error(m, "cannot write %s: %s", m->partial, strerror(res < 0 ? -res : errno));
                    failed = 1;
                }
            }
            s->state = SLOT_FREE;
            inflight--;
        }
        io_uring_cq_advance(&m->ring, seen);
    }
    return failed || stopping(m) ? -1 : 0;
}

static int copy_pass(struct blk_move *m, struct blk_cursor *g, bool fresh)
{
    return m->uring ? copy_uring(m, g, fresh) : copy_sync(m, g, fresh);
}

/* ---- the device side ----------------------------------------------------- */

/* Hold the device's request thread between two batches: no request being
 * executed, none taken until release_device, so nothing reads b->fd or
 * b->move meanwhile. vp.lock itself is not kept: the vCPUs' accesses to the
 * device's registers must not wait for our file system calls. */
static void hold_device(struct virtio_blk *b)
{
    pthread_mutex_lock(&b->vp.lock);
    b->held = true;
    while (b->busy)
        pthread_cond_wait(&b->vp.cond, &b->vp.lock);
    pthread_mutex_unlock(&b->vp.lock);
}

static void release_device(struct virtio_blk *b)
{
    pthread_mutex_lock(&b->vp.lock);
    b->held = false;
    pthread_mutex_unlock(&b->vp.lock);
    io_thread_wake(&b->io);   /* requests kicked meanwhile */
}

int blk_move_write_begin(struct blk_move *m, uint64_t off, uint64_t len, bool data)
{
    if (!m || atomic_load(&m->mode) != MODE_MIRROR || !data || !len)
        return -1;
    uint64_t lo = off / MOVE_BLOCK, hi = (off + len - 1) / MOVE_BLOCK + 1;
    pthread_mutex_lock(&m->lock);
    /* The copier may be copying older data of these blocks right now: wait
     * for that one copy (at most MIRROR_RUN bytes), so that our write lands
     * on the new image after it. Marking the blocks for another copy instead
     * would never converge under a guest that keeps rewriting them. */
    while (lo < m->copy_hi && m->copy_lo < hi) {
        m->range_waiters++;
        pthread_cond_wait(&m->range_cond, &m->lock);
        m->range_waiters--;
    }
    m->wr_lo = lo;
    m->wr_hi = hi;
    pthread_mutex_unlock(&m->lock);
    return m->dst_fd;
}

void blk_move_write_end(struct blk_move *m, uint64_t off, uint64_t len, int mirror_fd, int mirror_errno,
                        bool src_ok)
{
    if (!m || !len)
        return;
    uint64_t lo = off / MOVE_BLOCK, hi = (off + len - 1) / MOVE_BLOCK + 1;
    if (mirror_fd < 0) {
        /* tracked, not mirrored: after the write, so that a copy that read
         * the block before it copies it again */
        if (atomic_load(&m->mode) != MODE_OFF)
            mark(m, lo, hi);
        return;
    }
    pthread_mutex_lock(&m->lock);
    m->wr_lo = m->wr_hi = 0;
    if (m->range_waiters)   /* the copier waits for this write */
        pthread_cond_broadcast(&m->range_cond);
    m->mirrored++;
    if (!src_ok)   /* the source may hold part of it: not mirrored, so copy it again */
        mark(m, lo, hi);
    if (mirror_errno && !m->mirror_err) {
        m->mirror_err = mirror_errno;
        snprintf(m->error, sizeof(m->error), "cannot write %s: %s", m->partial, strerror(mirror_errno));
    }
    pthread_mutex_unlock(&m->lock);
}

void blk_move_flush(struct blk_move *m)
{
    if (!m || atomic_load(&m->mode) != MODE_MIRROR)
        return;
    if (fdatasync(m->dst_fd) < 0) {
        int e = errno;
        pthread_mutex_lock(&m->lock);
        if (!m->mirror_err) {
            m->mirror_err = e;
            snprintf(m->error, sizeof(m->error), "cannot sync %s: %s", m->partial, strerror(e));
        }
        pthread_mutex_unlock(&m->lock);
    }
}

/* ---- mirror phase -------------------------------------------------------- */

/* Copy the dirty blocks with the guest mirroring. The run being copied and
 * the guest's mirrored write in flight exclude each other: the copier waits
 * for a write to the run to finish before it reads, a guest write to the run
 * waits for the copy (blk_move_write_begin; at most MIRROR_RUN bytes, from
 * the page cache mostly). So each dirty block is copied once and the phase
 * converges whatever the guest does. 0, or -1. */
static int mirror_pass(struct blk_move *m)
{
    uint64_t blk = 0, lo, hi;
    while (!stopping(m) && next_run(m, &ALL_DIRTY, &blk, &lo, &hi, MIRROR_RUN / MOVE_BLOCK)) {
        uint64_t off = lo * MOVE_BLOCK, end = hi * MOVE_BLOCK < m->size ? hi * MOVE_BLOCK : m->size;
        size_t len = (size_t)(end - off);
        if (!throttle(m, len))   /* before taking the run: the guest must not wait for the cap */
            return -1;
        pthread_mutex_lock(&m->lock);
        while (lo < m->wr_hi && m->wr_lo < hi) {
            m->range_waiters++;
            pthread_cond_wait(&m->range_cond, &m->lock);
            m->range_waiters--;
        }
        m->copy_lo = lo;
        m->copy_hi = hi;
        clear(m, lo, hi);
        pthread_mutex_unlock(&m->lock);
        int r = io_full(m->src_fd, m->bufs, len, off, false);
        if (r < 0)
            set_error(m, "cannot read %s: %s", m->source, strerror(errno));
        else
            r = put_chunk(m, m->bufs, off, len, false);
        pthread_mutex_lock(&m->lock);
        m->copy_lo = m->copy_hi = 0;
        if (m->range_waiters)   /* a guest write waits for this run */
            pthread_cond_broadcast(&m->range_cond);
        pthread_mutex_unlock(&m->lock);
        if (r < 0)
            return -1;
    }
    return stopping(m) ? -1 : 0;
}

/* fsync the directory holding path (best effort: a crash of ferry-vmm does
 * not need it, a power loss does). */
static void sync_dir(const char *path)
{
    char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash)
        *(slash == dir ? slash + 1 : slash) = 0;
    int dfd = dir ? open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
}

/* Under hold_device with an empty bitmap: make the new image the disk's. */
static int do_switch(struct blk_move *m)
{
    struct virtio_blk *b = m->b;
    uint64_t t = now_ns();
    if (rename(m->partial, m->target) < 0) {
        set_error(m, "cannot rename %s to %s: %s", m->partial, m->target, strerror(errno));
        return -1;
    }
    /* the rename is the switch record: make it durable before the guest's
     * next write lands only in the new image */
    sync_dir(m->target);
    if (m->p.test_switch_ms)   /* tests: a window for kill -9 between the record and the swap */
        nanosleep(&(struct timespec){ .tv_sec = (time_t)(m->p.test_switch_ms / 1000),
                                      .tv_nsec = (long)(m->p.test_switch_ms % 1000) * 1000000L }, NULL);
    char *path = realpath(m->target, NULL);
    if (!path)
        path = strdup(m->target);
    if (!path) {
        /* keep the old name: the device works on the new fd regardless */
        path = strdup(b->path);
    }
    int old_fd = b->fd;
    m->old_path = b->path;
    b->path = path;
    b->fd = m->dst_fd;
    m->dst_fd = old_fd;          /* closed by the caller after the release */
    atomic_store(&b->unflushed, true);
    atomic_store(&m->mode, MODE_OFF);
    pthread_mutex_lock(&m->lock);
    m->phase = MOVE_SWITCHED;
    m->switch_us = (now_ns() - t) / 1000;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int run(struct blk_move *m)
{
    struct virtio_blk *b = m->b;
    m->tb_base_ns = now_ns();

    struct blk_cursor g = { .dirty = false };
    if (copy_pass(m, &g, true) < 0)
        return -1;
    uint64_t prev = UINT64_MAX;
    for (uint32_t pass = 1; pass <= MOVE_MAX_PASSES; pass++) {
        uint64_t dirty = count_dirty(m);
        /* few enough to finish while mirroring, or not converging */
        if (dirty * MOVE_BLOCK <= MIRROR_THRESHOLD || dirty >= prev)
            break;
        prev = dirty;
        pthread_mutex_lock(&m->lock);
        m->pass = pass;
        pthread_mutex_unlock(&m->lock);
        g = (struct blk_cursor){ .dirty = true };
        if (copy_pass(m, &g, false) < 0)
            return -1;
    }

    atomic_store(&m->mode, MODE_MIRROR);
    pthread_mutex_lock(&m->lock);
    m->phase = MOVE_MIRROR;
    m->pass++;
    pthread_mutex_unlock(&m->lock);
    uint64_t hold_until = now_ns() + m->p.test_hold_ms * 1000000ull;
    for (;;) {
        if (mirror_pass(m) < 0)
            return -1;
        if (now_ns() < hold_until) {
            /* tests: no polling meanwhile (it would cost the guest); the
             * pass above picks up what was tracked since */
            if (!sleep_until(m, hold_until))
                return -1;
            continue;
        }
        /* everything copied: what the copy wrote must be durable before
         * the rename makes the new image authoritative */
        if (fdatasync(m->dst_fd) < 0) {
            set_error(m, "cannot sync %s: %s", m->partial, strerror(errno));
            return -1;
        }
        sync_dir(m->target);   /* commit what is pending now, not with the device held */
        if (stopping(m))
            return -1;
        hold_device(b);
        /* a guest write that was tracked (begun before the mirror phase)
         * may have dirtied a block since: copy it and try again */
        if (count_dirty(m) || stopping(m)) {
            release_device(b);
            if (stopping(m))
                return -1;
            continue;
        }
        int r = do_switch(m);
        release_device(b);
        return r;
    }
}

/* Before the switch: detach from the device, remove the partial file. */
static void abandon(struct blk_move *m)
{
    hold_device(m->b);
    atomic_store(&m->mode, MODE_OFF);
    release_device(m->b);
    if (m->dst_fd >= 0)
        close(m->dst_fd);
    m->dst_fd = -1;
    if (unlink(m->partial) < 0 && errno != ENOENT)
        log_warn("%s: cannot remove %s: %s", m->b->name, m->partial, strerror(errno));
}

static void *move_thread(void *arg)
{
    struct blk_move *m = arg;
    int r = run(m);
    if (r < 0) {
        abandon(m);
        pthread_mutex_lock(&m->lock);
        m->phase = m->error[0] ? MOVE_FAILED : MOVE_CANCELLED;
        m->end_ns = now_ns();
        pthread_mutex_unlock(&m->lock);
        if (m->error[0])
            log_warn("%s: move to %s failed: %s; the disk stays on %s", m->b->name, m->target, m->error, m->source);
        else
            log_info("%s: move to %s cancelled; the disk stays on %s", m->b->name, m->target, m->source);
    } else {
        /* m->dst_fd is the old image's fd now */
        close(m->dst_fd);
        m->dst_fd = -1;
        if (m->p.delete_source && unlink(m->source) < 0)
            log_warn("%s: moved, but cannot delete %s: %s", m->b->name, m->source, strerror(errno));
        pthread_mutex_lock(&m->lock);
        m->end_ns = now_ns();
        double secs = (double)(m->end_ns - m->t0_ns) / 1e9;
        log_info("%s: moved to %s in %.2f s (%llu MiB copied, %llu mirrored writes, switch %llu us)",
                 m->b->name, m->target, secs, (unsigned long long)(m->copied >> 20),
                 (unsigned long long)m->mirrored, (unsigned long long)m->switch_us);
        pthread_mutex_unlock(&m->lock);
    }
    close(m->src_fd);
    m->src_fd = -1;
    return NULL;
}

/* ---- lifecycle ----------------------------------------------------------- */

static void move_free(struct blk_move *m)
{
    if (!m)
        return;
    if (m->thread_live)
        pthread_join(m->thread, NULL);
    if (m->uring)
        io_uring_queue_exit(&m->ring);
    if (m->src_fd >= 0)
        close(m->src_fd);
    if (m->dst_fd >= 0)
        close(m->dst_fd);
    free(m->source);
    free(m->target);
    free(m->partial);
    free(m->old_path);
    free((void *)m->bm);
    free(m->bufs);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
    pthread_cond_destroy(&m->range_cond);
    free(m);
}

static bool phase_active(enum blk_move_phase p)
{
    return p == MOVE_COPY || p == MOVE_MIRROR;
}

bool blk_move_active(struct virtio_blk *b)
{
    struct blk_move *m = b->move;
    if (!m)
        return false;
    pthread_mutex_lock(&m->lock);
    bool a = phase_active(m->phase);
    pthread_mutex_unlock(&m->lock);
    return a;
}

/* A move or tracker on b: bitmap, locks, our own read-only fd on the very
 * file the device has open (whatever its name is now). NULL with err. */
static struct blk_move *move_alloc(struct virtio_blk *b, char *err, size_t errlen)
{
    struct blk_move *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->b = b;
    m->src_fd = m->dst_fd = -1;
    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&m->range_cond, NULL);
    m->size = b->id.size;
    m->nblocks = (m->size + MOVE_BLOCK - 1) / MOVE_BLOCK;
    m->nwords = (m->nblocks + 63) / 64;
    m->source = strdup(b->path);
    m->bm = calloc(m->nwords ? m->nwords : 1, sizeof(*m->bm));
    if (!m->source || !m->bm) {
        snprintf(err, errlen, "out of memory");
        move_free(m);
        return NULL;
    }
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", b->fd);
    if ((m->src_fd = open(self, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "cannot reopen %s: %s", b->path, strerror(errno));
        move_free(m);
        return NULL;
    }
    return m;
}

int blk_move_start(struct virtio_blk *b, const struct blk_move_params *p, char *err, size_t errlen)
{
    if (blk_move_active(b)) {
        snprintf(err, errlen, "%s: a move is already in progress", b->name);
        return -1;
    }
    if (!p->target || !p->target[0] || strlen(p->target) >= PATH_MAX - sizeof(MOVE_PARTIAL_SUFFIX)) {
        snprintf(err, errlen, "move-disk needs a target path");
        return -1;
    }
    struct stat cur, st;
    if (fstat(b->fd, &cur) < 0) {
        snprintf(err, errlen, "%s: %s", b->path, strerror(errno));
        return -1;
    }
    if (stat(p->target, &st) == 0) {
        if (st.st_dev == cur.st_dev && st.st_ino == cur.st_ino) {
            snprintf(err, errlen, "%s is the disk's image already", p->target);
            return -1;
        }
        if (!S_ISREG(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a regular file", p->target);
            return -1;
        }
        if (!p->force) {
            snprintf(err, errlen, "%s exists (force replaces it)", p->target);
            return -1;
        }
    }
    struct blk_move *m = move_alloc(b, err, errlen);
    if (!m)
        return -1;
    m->p = *p;
    m->target = strdup(p->target);
    m->partial = malloc(strlen(p->target) + sizeof(MOVE_PARTIAL_SUFFIX));
    if (posix_memalign((void **)&m->bufs, 4096, (size_t)MOVE_QD * MOVE_CHUNK))
        m->bufs = NULL;
    if (!m->target || !m->partial || !m->bufs) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    m->p.target = m->target;
    sprintf(m->partial, "%s%s", p->target, MOVE_PARTIAL_SUFFIX);
    /* a partial file of an earlier, crashed move is ours to replace */
    m->dst_fd = open(m->partial, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, S_ISREG(cur.st_mode) ? cur.st_mode & 0777 : 0600);
    if (m->dst_fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", m->partial, strerror(errno));
        goto fail;
    }
    if (ftruncate(m->dst_fd, (off_t)m->size) < 0) {
        snprintf(err, errlen, "cannot size %s to %llu bytes: %s", m->partial, (unsigned long long)m->size,
                 strerror(errno));
        unlink(m->partial);
        goto fail;
    }
    m->total = data_bytes(m);   /* a walk over the extents: quick, and the progress needs it */
    m->uring = !p->no_uring && io_uring_queue_init(2 * MOVE_QD, &m->ring, 0) == 0;
    m->phase = MOVE_COPY;
    m->t0_ns = m->rate_t_ns = now_ns();

    /* Start tracking with no write in flight: every write that completes
     * from here on is either seen by the bulk copy or marked dirty. */
    hold_device(b);
    struct blk_move *old = b->move;
    b->move = m;
    atomic_store(&m->mode, MODE_TRACK);
    release_device(b);
    move_free(old);

    if (pthread_create(&m->thread, NULL, move_thread, m) != 0) {
        hold_device(b);
        atomic_store(&m->mode, MODE_OFF);
        m->phase = MOVE_FAILED;
        snprintf(m->error, sizeof(m->error), "cannot start the copy thread");
        release_device(b);
        unlink(m->partial);
        snprintf(err, errlen, "cannot start the copy thread");
        return -1;
    }
    m->thread_live = true;
    log_info("%s: moving %s to %s (%llu MiB, io %s%s)", b->name, m->source, m->target,
             (unsigned long long)(m->size >> 20), m->uring ? "io_uring" : "pread",
             p->delete_source ? ", source deleted after the switch" : "");
    return 0;
fail:
    move_free(m);
    return -1;
}

int blk_move_cancel(struct virtio_blk *b, char *err, size_t errlen)
{
    struct blk_move *m = b->move;
    if (!m || !blk_move_active(b)) {
        const char *ph = m ? blk_move_phase_name(m->phase) : "none";
        snprintf(err, errlen, "%s: no move in progress (last: %s)", b->name, ph);
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    atomic_store(&m->cancel, true);
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

bool blk_move_info(struct virtio_blk *b, struct blk_move_info *o)
{
    struct blk_move *m = b->move;
    memset(o, 0, sizeof(*o));
    if (!m)
        return false;
    pthread_mutex_lock(&m->lock);
    o->phase = m->phase;
    snprintf(o->source, sizeof(o->source), "%s", m->source);
    snprintf(o->target, sizeof(o->target), "%s", m->target);
    snprintf(o->error, sizeof(o->error), "%s", m->error);
    o->io = m->uring ? "io_uring" : "pread";
    o->size = m->size;
    o->total_bytes = m->total;
    o->pass0_bytes = m->pass0;
    o->bytes_copied = m->copied;
    o->zero_bytes = m->zeroes;
    o->mirrored_writes = m->mirrored;
    o->pass = m->pass;
    o->bandwidth = m->p.bandwidth;
    o->switch_us = m->switch_us;
    o->delete_source = m->p.delete_source;
    uint64_t end = m->end_ns ? m->end_ns : now_ns();
    o->elapsed_ms = (end - m->t0_ns) / 1000000;
    bool active = phase_active(m->phase);
    /* a finished move: its average; a running one: the last sample, or the
     * average until the first sample */
    if (!active || m->rate_b == 0)
        o->rate = end > m->t0_ns ? (double)m->copied * 1e9 / (double)(end - m->t0_ns) : 0;
    else
        o->rate = m->rate;
    pthread_mutex_unlock(&m->lock);
    o->dirty_blocks = active ? count_dirty(m) : 0;
    return true;
}

void blk_move_destroy(struct virtio_blk *b)
{
    struct blk_move *m = b->move;
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    atomic_store(&m->cancel, true);
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    move_free(m);   /* joins the thread: it removes the partial file */
    b->move = NULL;
}

/* ---- shared-nothing migration (blk_move.h) -------------------------------- */

int blk_track_start(struct virtio_blk *b, char *err, size_t errlen)
{
    if (blk_move_active(b)) {
        snprintf(err, errlen, "disk %s is being moved (move-disk): wait for the move or cancel it first", b->path);
        return -1;
    }
    struct blk_move *m = move_alloc(b, err, errlen);
    if (!m)
        return -1;
    m->total = data_bytes(m);
    /* as for a move: no write in flight while tracking starts */
    hold_device(b);
    atomic_store(&m->mode, MODE_TRACK);
    b->track = m;
    release_device(b);
    return 0;
}

void blk_track_stop(struct virtio_blk *b)
{
    struct blk_move *m = b->track;
    if (!m)
        return;
    hold_device(b);
    b->track = NULL;
    release_device(b);
    move_free(m);
}

uint64_t blk_track_dirty(struct virtio_blk *b)
{
    return b->track ? count_dirty(b->track) : 0;
}

uint64_t blk_track_data_bytes(struct virtio_blk *b)
{
    return b->track ? b->track->total : 0;
}

/* Extents start and end anywhere: widen to whole blocks (never past the
 * chunk, a multiple of blocks), which a migration's destination hashes. */
static void widen(uint64_t size, uint64_t *off, size_t *len)
{
    uint64_t lo = *off / MOVE_BLOCK * MOVE_BLOCK, hi = (*off + *len + MOVE_BLOCK - 1) / MOVE_BLOCK * MOVE_BLOCK;
    *off = lo;
    *len = (size_t)((hi < size ? hi : size) - lo);
}

int blk_track_next(struct virtio_blk *b, struct blk_cursor *c, uint64_t *off, size_t *len)
{
    if (next_chunk(b->track, c, off, len) <= 0)
        return 0;
    widen(b->track->size, off, len);
    return 1;
}

int blk_extents_next(int fd, uint64_t size, struct blk_cursor *c, uint64_t *off, size_t *len)
{
    if (extents_next(fd, size, c, off, len) <= 0)
        return 0;
    widen(size, off, len);
    return 1;
}

int blk_track_read(struct virtio_blk *b, uint8_t *buf, size_t len, uint64_t off)
{
    return io_full(b->track->src_fd, buf, len, off, false);
}

int blk_image_rename(struct virtio_blk *b, const char *path, char *err, size_t errlen)
{
    if (rename(b->path, path) < 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", b->path, path, strerror(errno));
        return -1;
    }
    sync_dir(path);
    char *now = realpath(path, NULL);
    if (!now)
        return 0;   /* the device works on its fd regardless */
    hold_device(b);   /* status readers and the request thread's messages use b->path */
    char *old = b->path;
    b->path = now;
    release_device(b);
    free(old);
    return 0;
}
