/* virtio-blk: raw image backend and request thread (see virtio_blk.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/falloc.h>

#include "devices/blk_move.h"
#include "devices/virtio_blk.h"
#include "vmm/log.h"
#include "vmm/xxh.h"

#define SECTOR 512ull
#define FP_SPAN (1ull << 20)
#define SEG_MAX (VIRTIO_BLK_QUEUE_SIZE - 2)
#define MAX_DISCARD_SECTORS (1u << 22)   /* 2 GiB per range */

/* virtio_blk_config offsets */
enum { CFG_CAPACITY = 0, CFG_SIZE_MAX = 8, CFG_SEG_MAX = 12, CFG_BLK_SIZE = 20, CFG_NUM_QUEUES = 34,
       CFG_MAX_DISCARD = 36, CFG_MAX_DISCARD_SEG = 40, CFG_DISCARD_ALIGN = 44, CFG_MAX_WZ = 48,
       CFG_MAX_WZ_SEG = 52, CFG_WZ_UNMAP = 56, CFG_LEN = 60 };

struct virtio_blk_req {
    struct virtq_elem e;
    uint8_t status;
    uint32_t written;     /* bytes written into the in buffers, status byte included */
};

/* ---- the image ---------------------------------------------------------- */

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

/* Size and fingerprint of the open image. 0, or -1 with a reason. */
static int identify(int fd, const char *path, struct disk_id *id, char *err, size_t errlen)
{
    struct stat st;
    uint64_t size = 0;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "disk %s: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode)) {
        size = (uint64_t)st.st_size;
    } else if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
            snprintf(err, errlen, "disk %s: cannot read the device size: %s", path, strerror(errno));
            return -1;
        }
    } else {
        snprintf(err, errlen, "disk %s: not a regular file or block device", path);
        return -1;
    }
    if (size < SECTOR) {
        snprintf(err, errlen, "disk %s: %llu bytes, smaller than one 512-byte sector", path,
                 (unsigned long long)size);
        return -1;
    }
    /* fingerprint: XXH3 over the first and last MiB, then the size */
    size_t span = size < FP_SPAN ? (size_t)size : (size_t)FP_SPAN;
    uint8_t *buf = malloc(span);
    XXH3_state_t *xs = XXH3_createState();
    int r = buf && xs ? 0 : -1;
    errno = r ? ENOMEM : 0;
    if (!r)
        XXH3_64bits_reset(xs);
    if (!r && (r = read_full(fd, buf, span, 0)) == 0)
        XXH3_64bits_update(xs, buf, span);
    if (!r && (r = read_full(fd, buf, span, size - span)) == 0)
        XXH3_64bits_update(xs, buf, span);
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(size >> (8 * i));
    if (!r) {
        XXH3_64bits_update(xs, le, sizeof(le));
        id->fingerprint = XXH3_64bits_digest(xs);
    }
    free(buf);
    if (xs)
        XXH3_freeState(xs);
    if (r < 0) {
        snprintf(err, errlen, "disk %s: cannot read it: %s", path, errno ? strerror(errno) : "short read");
        return -1;
    }
    id->size = size;
    return 0;
}

int disk_open(const char *path, bool readonly, struct disk_id *id, char *err, size_t errlen)
{
    int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "disk %s: %s", path, strerror(errno));
        return -1;
    }
    if (identify(fd, path, id, err, errlen) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int virtio_blk_identify(struct virtio_blk *b, struct disk_id *id, char *err, size_t errlen)
{
    return identify(b->fd, b->path, id, err, errlen);
}

/* ---- requests ------------------------------------------------------------ */

/* iovecs over the segments [first, first + n) of e, skipping `skip` bytes and
 * covering at most `limit`. Returns the count, *bytes the length covered. */
static int build_iov(const struct virtq_elem *e, uint32_t first, uint32_t n, uint64_t skip, uint64_t limit,
                     struct iovec *iov, uint64_t *bytes)
{
    int cnt = 0;
    *bytes = 0;
    for (uint32_t k = first; k < first + n && *bytes < limit; k++) {
        const struct virtq_seg *s = &e->seg[k];
        if (skip >= s->len) {
            skip -= s->len;
            continue;
        }
        uint64_t len = s->len - skip;
        if (len > limit - *bytes)
            len = limit - *bytes;
        iov[cnt++] = (struct iovec){ (uint8_t *)s->hva + skip, (size_t)len };
        *bytes += len;
        skip = 0;
    }
    return cnt;
}

/* preadv/pwritev until done (short transfers continue). */
static int rw_full(int fd, struct iovec *iov, int cnt, uint64_t off, bool write)
{
    while (cnt > 0) {
        ssize_t n = write ? pwritev(fd, iov, cnt, (off_t)off) : preadv(fd, iov, cnt, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        off += (uint64_t)n;
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* *moff, *mlen: the range it changed (0 bytes when none), for a disk move. */
static uint8_t do_discard(struct virtio_blk *b, const struct virtq_elem *e, bool zeroes, uint64_t *moff,
                          uint64_t *mlen)
{
    *moff = *mlen = 0;
    if (b->readonly)
        return VIRTIO_BLK_S_IOERR;
    uint64_t dlen = e->out_bytes - 16;
    if (dlen != 16)       /* max_discard_seg = max_write_zeroes_seg = 1 */
        return VIRTIO_BLK_S_UNSUPP;
    uint8_t r[16];
    if (virtq_read_out(e, 16, r, 16) != 16)
        return VIRTIO_BLK_S_IOERR;
    uint64_t sector = le64_load(r);
    uint32_t nsec = le32_load(r + 8), flags = le32_load(r + 12);
    uint64_t cap = b->id.size / SECTOR;
    if (nsec > MAX_DISCARD_SECTORS || sector > cap || nsec > cap - sector || (flags & ~1u) ||
        (!zeroes && flags))
        return VIRTIO_BLK_S_IOERR;
    off_t off = (off_t)(sector * SECTOR), len = (off_t)((uint64_t)nsec * SECTOR);
    if (!len)
        return VIRTIO_BLK_S_OK;
    *moff = (uint64_t)off;
    *mlen = (uint64_t)len;
    if (!zeroes)  /* a hint: failing to punch is fine */
        return fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0 ||
               errno == EOPNOTSUPP ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    if (fallocate(b->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) == 0 ||
        fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
        return VIRTIO_BLK_S_OK;
    /* no hole punching here: write zeroes */
    static const uint8_t zero[65536];
    while (len > 0) {
        size_t n = len < (off_t)sizeof(zero) ? (size_t)len : sizeof(zero);
        ssize_t w = pwrite(b->fd, zero, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return VIRTIO_BLK_S_IOERR;
        off += w;
        len -= w;
    }
    return VIRTIO_BLK_S_OK;
}

/* Execute one request (no lock held; guest data buffers are written here,
 * the status byte only at completion). */
static void execute(struct virtio_blk *b, struct virtio_blk_req *r)
{
    const struct virtq_elem *e = &r->e;
    struct iovec iov[VIRTQ_MAX_SEGS];
    uint8_t hdr[16];
    r->written = 1;
    b->nreqs++;
    if (virtq_read_out(e, 0, hdr, sizeof(hdr)) != sizeof(hdr)) {
        r->status = VIRTIO_BLK_S_IOERR;
        return;
    }
    uint32_t type = le32_load(hdr);
    uint64_t sector = le64_load(hdr + 8);
    uint64_t din = e->in_bytes - 1;           /* device-writable data before the status byte */
    uint64_t dout = e->out_bytes - sizeof(hdr);
    uint64_t bytes;
    int cnt;
    r->status = VIRTIO_BLK_S_OK;
    switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool wr = type == VIRTIO_BLK_T_OUT;
        uint64_t len = wr ? dout : din;
        if ((wr && b->readonly) || len % SECTOR || sector > b->id.size / SECTOR ||
            len > b->id.size - sector * SECTOR) {
            r->status = VIRTIO_BLK_S_IOERR;
            break;
        }
        cnt = wr ? build_iov(e, 0, e->nout, sizeof(hdr), len, iov, &bytes)
                 : build_iov(e, e->nout, e->nin, 0, len, iov, &bytes);
        /* a disk move: tracked (dirty bitmap) or mirrored to the new image
         * before the request completes (blk_move.h) */
        struct blk_move *mv = wr ? b->move : NULL;
        int mfd = blk_move_write_begin(mv, sector * SECTOR, len, true);
        struct iovec miov[VIRTQ_MAX_SEGS];
        if (mfd >= 0)
            memcpy(miov, iov, (size_t)cnt * sizeof(*iov));   /* rw_full consumes iov */
        int rr = rw_full(b->fd, iov, cnt, sector * SECTOR, wr);
        if (mv) {
            int saved = errno, merr = 0;
            if (mfd >= 0 && rr == 0 && rw_full(mfd, miov, cnt, sector * SECTOR, true) < 0)
                merr = errno ? errno : EIO;
            blk_move_write_end(mv, sector * SECTOR, len, mfd, merr, rr == 0);
            errno = saved;
        }
        if (wr)   /* a migration copying the disk: marked after the write, as for a move */
            blk_move_write_end(b->track, sector * SECTOR, len, -1, 0, true);
        if (rr < 0) {
            if (!b->nerrors++)
                log_warn("%s: %s at sector %llu: %s", b->name, wr ? "write" : "read",
                         (unsigned long long)sector, strerror(errno));
            r->status = VIRTIO_BLK_S_IOERR;
            break;
        }
        if (!wr) {
            virtq_mark_written(&b->vp.vq[0], e, len);
            r->written += (uint32_t)len;
        } else {
            atomic_store(&b->unflushed, true);
        }
        break;
    }
    case VIRTIO_BLK_T_FLUSH:
        atomic_store(&b->unflushed, false);
        if (!b->readonly && fdatasync(b->fd) < 0) {
            atomic_store(&b->unflushed, true);
            r->status = VIRTIO_BLK_S_IOERR;
        } else if (!b->readonly) {
            blk_move_flush(b->move);
        }
        break;
    case VIRTIO_BLK_T_GET_ID: {
        uint64_t n = din < VIRTIO_BLK_ID_BYTES ? din : VIRTIO_BLK_ID_BYTES;
        cnt = build_iov(e, e->nout, e->nin, 0, n, iov, &bytes);
        const char *src = b->serial;
        for (int k = 0; k < cnt; k++) {
            memcpy(iov[k].iov_base, src, iov[k].iov_len);
            src += iov[k].iov_len;
        }
        virtq_mark_written(&b->vp.vq[0], e, n);
        r->written += (uint32_t)n;
        break;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
        uint64_t doff, dlen;
        r->status = do_discard(b, e, type == VIRTIO_BLK_T_WRITE_ZEROES, &doff, &dlen);
        blk_move_write_end(b->move, doff, dlen, -1, 0, true);   /* tracked, never mirrored */
        blk_move_write_end(b->track, doff, dlen, -1, 0, true);
        atomic_store(&b->unflushed, true);
        break;
    }
    default:
        r->status = VIRTIO_BLK_S_UNSUPP;
        break;
    }
}

/* Write the status byte, return the chain (vp.lock held, inside the gate). */
static void complete(struct virtio_blk *b, struct virtio_blk_req *r)
{
    struct virtq *q = &b->vp.vq[0];
    const struct virtq_elem *e = &r->e;
    const struct virtq_seg *last = &e->seg[e->nout + e->nin - 1];
    *((uint8_t *)last->hva + last->len - 1) = r->status;
    gmem_mark_dirty(q->mem, last->gpa + last->len - 1, 1);
    virtq_push(q, e->head, r->written);
}

/* ---- the thread ---------------------------------------------------------- */

/* Take up to a batch of requests (vp.lock held, inside the gate). */
static uint16_t take(struct virtio_blk *b)
{
    struct virtq *q = &b->vp.vq[0];
    uint16_t n = 0;
    if (!virtio_pci_driver_ok(&b->vp) || !b->vp.queue_enabled[0])
        return 0;
    while (n < VIRTIO_BLK_BATCH) {
        char err[160];
        struct virtio_blk_req *r = &b->reqs[n];
        int got = virtq_pop(q, &r->e, err, sizeof(err));
        if (got < 0) {
            log_warn("%s: request queue: %s; the device needs a reset", b->name, err);
            virtio_pci_set_needs_reset(&b->vp);
            break;
        }
        if (!got)
            break;
        if (r->e.nin == 0) {
            /* no room for a status byte: nothing can be reported */
            log_warn("%s: request without a writable status byte", b->name);
            virtio_pci_set_needs_reset(&b->vp);
            break;
        }
        n++;
    }
    return n;
}

/* Process the queue until it is empty. false when the VM is stopping. */
static bool process(struct virtio_blk *b)
{
    struct virtio_pci *vp = &b->vp;
    for (;;) {
        if (!vm_gate_enter(&b->gate))
            return false;
        pthread_mutex_lock(&vp->lock);
        if (b->held) {
            /* a disk move is switching images: its release wakes us */
            pthread_mutex_unlock(&vp->lock);
            vm_gate_leave(&b->gate);
            return true;
        }
        uint16_t n = take(b);
        bool more = false;
        if (!n)
            more = virtq_arm_notify(&vp->vq[0]) && !vp->vq[0].broken;
        uint32_t gen = vp->reset_gen;
        b->busy = n > 0;
        pthread_mutex_unlock(&vp->lock);
        vm_gate_leave(&b->gate);
        if (!n) {
            if (more)
                continue;
            return true;
        }

        for (uint16_t i = 0; i < n; i++)
            execute(b, &b->reqs[i]);

        pthread_mutex_lock(&vp->lock);
        b->busy = false;
        b->npending = n;
        pthread_cond_broadcast(&vp->cond);
        pthread_mutex_unlock(&vp->lock);

        /* complete: blocks while the VM is paused (migration may take the
         * state meanwhile, and hands these requests to the destination) */
        if (!vm_gate_enter(&b->gate))
            return false;
        pthread_mutex_lock(&vp->lock);
        if (gen == vp->reset_gen && b->npending == n) {
            struct virtq *q = &vp->vq[0];
            uint16_t old = q->used_idx;
            for (uint16_t i = 0; i < n; i++)
                complete(b, &b->reqs[i]);
            if (virtq_need_interrupt(q, old))
                virtio_pci_notify_queue(vp, 0);
        }
        b->npending = 0;
        pthread_mutex_unlock(&vp->lock);
        vm_gate_leave(&b->gate);
    }
}

static void *worker(void *arg)
{
    struct virtio_blk *b = arg;
    struct pollfd p[2] = { { .fd = b->vp.kick_fd[0], .events = POLLIN },
                           { .fd = b->io.wake_fd, .events = POLLIN } };
    while (!io_thread_stopping(&b->io)) {
        if (!process(b))
            break;
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        io_drain(p[0].fd);
        io_drain(p[1].fd);
    }
    return NULL;
}

/* ---- transport callbacks (vp.lock held) ----------------------------------- */

static void blk_reset(void *opaque)
{
    struct virtio_blk *b = opaque;
    while (b->busy)
        pthread_cond_wait(&b->vp.cond, &b->vp.lock);
    b->npending = 0;   /* executed but not completed: dropped with the queue */
}

static void blk_driver_ok(void *opaque)
{
    io_thread_wake(&((struct virtio_blk *)opaque)->io);
}

static const struct virtio_dev_ops blk_ops = { .reset = blk_reset, .driver_ok = blk_driver_ok };

/* ---- construction -------------------------------------------------------- */

static void build_config(struct virtio_blk *b)
{
    uint8_t *c = b->config;
    memset(c, 0, sizeof(b->config));
    uint64_t cap = b->id.size / SECTOR;
    pci_set32(c, CFG_CAPACITY, (uint32_t)cap);
    pci_set32(c, CFG_CAPACITY + 4, (uint32_t)(cap >> 32));
    pci_set32(c, CFG_SEG_MAX, SEG_MAX);
    pci_set32(c, CFG_BLK_SIZE, SECTOR);
    pci_set16(c, CFG_NUM_QUEUES, 1);
    pci_set32(c, CFG_MAX_DISCARD, MAX_DISCARD_SECTORS);
    pci_set32(c, CFG_MAX_DISCARD_SEG, 1);
    pci_set32(c, CFG_DISCARD_ALIGN, 8);
    pci_set32(c, CFG_MAX_WZ, MAX_DISCARD_SECTORS);
    pci_set32(c, CFG_MAX_WZ_SEG, 1);
    c[CFG_WZ_UNMAP] = 1;
}

void virtio_blk_set_serial(struct virtio_blk *b, const char *path)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t blen = strlen(base);   /* NUL-padded, not terminated when 20 long */
    memset(b->serial, 0, sizeof(b->serial));
    memcpy(b->serial, base, blen < sizeof(b->serial) ? blen : sizeof(b->serial));
}

int virtio_blk_create(struct virtio_blk *b, int index, const char *path, bool readonly,
                      const struct disk_id *expect, int vm_fd, struct guest_mem *mem,
                      const struct vm_gate *gate, char *err, size_t errlen)
{
    memset(b, 0, sizeof(*b));
    b->fd = -1;
    snprintf(b->name, sizeof(b->name), "virtio-blk%d", index);
    io_thread_init(&b->io, b->name);
    b->readonly = readonly;
    b->gate = *gate;
    if ((b->fd = disk_open(path, readonly, &b->id, err, errlen)) < 0)
        return -1;
    if (expect && expect->size != b->id.size) {
        snprintf(err, errlen, "disk %s: not the same file as on the source (size/fingerprint differ): "
                 "%llu bytes here, %llu there", path, (unsigned long long)b->id.size,
                 (unsigned long long)expect->size);
        goto fail;
    }
    if (expect && expect->fingerprint != b->id.fingerprint) {
        /* The guest may have written the first or last MiB since the source
         * looked: decide at the switchover, when the disk is quiet. */
        log_info("disk %s: content fingerprint differs from the source's at the handshake; "
                 "checking again at the switchover", path);
        b->recheck = true;
    }
    /* absolute: the destination of a migration opens the same path */
    b->path = realpath(path, NULL);
    if (!b->path)
        b->path = strdup(path);
    if (!b->path ||
        !(b->reqs = calloc(VIRTIO_BLK_BATCH, sizeof(*b->reqs)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    virtio_blk_set_serial(b, path);
    build_config(b);
    uint64_t features = (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
                        (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_F_INDIRECT_DESC) |
                        (1ull << VIRTIO_F_EVENT_IDX);
    features |= readonly ? 1ull << VIRTIO_BLK_F_RO
                         : (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
    if (virtio_pci_init(&b->vp, b->name, VIRTIO_ID_BLOCK, 0x0100, features, 1, VIRTIO_BLK_QUEUE_SIZE,
                        b->config, CFG_LEN, &blk_ops, b, vm_fd, mem, err, errlen) < 0)
        goto fail;
    b->section = vmstate_virtio_blk;
    b->section.name = b->name;
    if (io_thread_start(&b->io, worker, b, err, errlen) < 0)
        goto fail;
    return 0;
fail:
    virtio_blk_destroy(b);
    return -1;
}

void virtio_blk_destroy(struct virtio_blk *b)
{
    blk_move_destroy(b);   /* a move not yet switched leaves the disk on its image */
    blk_track_stop(b);
    io_thread_stop(&b->io, &b->gate);
    virtio_pci_destroy(&b->vp);
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
    free(b->path);
    free(b->reqs);
    b->path = NULL;
    b->reqs = NULL;
}

/* ---- migration ----------------------------------------------------------- */

static const struct vmstate_field blk_fields[] = {
    VMSTATE_STRUCT(struct virtio_blk_state, vp, vmstate_virtio_pci),
    VMSTATE_U64(struct virtio_blk_state, capacity),
    VMSTATE_U8(struct virtio_blk_state, readonly),
    VMSTATE_U64(struct virtio_blk_state, fingerprint),
    VMSTATE_END,
};
const struct vmstate_desc vmstate_virtio_blk = { "virtio-blk", 1, 1, blk_fields, sizeof(struct virtio_blk_state) };

int virtio_blk_state_save(void *opaque, void *state, char *err, size_t errlen)
{
    struct virtio_blk *b = opaque;
    struct virtio_blk_state *s = state;
    /* The vCPUs are paused: wait for the requests being executed; the thread
     * takes no new ones and completes none until the VM resumes. */
    pthread_mutex_lock(&b->vp.lock);
    while (b->busy)
        pthread_cond_wait(&b->vp.cond, &b->vp.lock);
    uint16_t handback = b->npending;
    pthread_mutex_unlock(&b->vp.lock);
    virtio_pci_save(&b->vp, &s->vp);
    s->vp.q[0].last_avail_idx = (uint16_t)(s->vp.q[0].last_avail_idx - handback);
    s->capacity = b->id.size / SECTOR;
    s->readonly = b->readonly;
    struct disk_id now;
    if (identify(b->fd, b->path, &now, err, errlen) < 0)
        return -1;
    s->fingerprint = now.fingerprint;
    /* the destination reads the image through its own page cache (maybe on
     * another host): what the guest wrote must be on the storage first;
     * unless a shared-nothing migration copies it (b->track): then the
     * destination gets the blocks on the stream and syncs its own copy, and
     * this flush would only lengthen the pause */
    if (!b->track && atomic_exchange(&b->unflushed, false) && fdatasync(b->fd) < 0) {
        atomic_store(&b->unflushed, true);
        snprintf(err, errlen, "%s: cannot flush %s: %s", b->name, b->path, strerror(errno));
        return -1;
    }
    return 0;
}

int virtio_blk_state_load(void *opaque, const void *state, char *err, size_t errlen)
{
    struct virtio_blk *b = opaque;
    const struct virtio_blk_state *s = state;
    if (s->capacity != b->id.size / SECTOR || s->readonly != b->readonly) {
        snprintf(err, errlen, "%s: disk %s has %llu sectors%s here, %llu%s on the source", b->name, b->path,
                 (unsigned long long)(b->id.size / SECTOR), b->readonly ? " (read-only)" : "",
                 (unsigned long long)s->capacity, s->readonly ? " (read-only)" : "");
        return -1;
    }
    if (b->recheck) {
        struct disk_id now;
        if (identify(b->fd, b->path, &now, err, errlen) < 0)
            return -1;
        if (now.fingerprint != s->fingerprint) {
            snprintf(err, errlen, "disk %s: not the same file as on the source (size/fingerprint differ): "
                     "fingerprint %016llx here, %016llx there", b->path,
                     (unsigned long long)now.fingerprint, (unsigned long long)s->fingerprint);
            return -1;
        }
    }
    if (virtio_pci_load(&b->vp, &s->vp, err, errlen) < 0)
        return -1;
    b->recheck = false;
    io_thread_wake(&b->io);   /* requests handed back by the source, or kicked before the switchover */
    return 0;
}
