/* Disk images on the migration streams: DISK_BLOCKS and DISK_DIGEST (see disks.h). */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <pthread.h>

#include "devices/blk_move.h"
#include "migration/disks.h"
#include "vmm/xxh.h"

#define BLOCKS_PER_CHUNK (DISK_CHUNK / DISK_BLOCK)
#define DIGEST_THREADS 4   /* the image is read in parallel by up to this many */

static const uint8_t zeros[DISK_BLOCK];

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

static void put_head(uint8_t *h, uint32_t d, uint32_t flags, uint64_t off, uint64_t len)
{
    uint32_t v32 = htole32(d);
    memcpy(h, &v32, 4);
    v32 = htole32(flags);
    memcpy(h + 4, &v32, 4);
    uint64_t v64 = htole64(off);
    memcpy(h + 8, &v64, 8);
    v64 = htole64(len);
    memcpy(h + 16, &v64, 8);
}

/* A chunk's digest from its blocks' hashes. */
static uint64_t chunk_digest(const uint64_t *hash, size_t n)
{
    return XXH3_64bits(hash, n * sizeof(*hash));
}

static size_t nchunks(uint64_t size)
{
    return (size_t)((size + DISK_CHUNK - 1) / DISK_CHUNK);
}

/* ---- source ---------------------------------------------------------------- */

int disk_blocks_send(struct chan *c, uint32_t d, uint64_t off, const uint8_t *buf, size_t len, bool zero,
                     uint64_t *wire, char *err, size_t errlen)
{
    uint8_t h[DISK_HEAD];
    put_head(h, d, zero ? DISK_F_ZERO : 0, off, len);
    struct iovec iov[2] = { { h, DISK_HEAD }, { (void *)buf, zero ? 0 : len } };
    if (msg_writev(c, MSG_DISK_BLOCKS, iov, zero ? 1 : 2, zero ? 1 : 2) < 0) {
        snprintf(err, errlen, "connection to destination lost while sending disk blocks: %.150s", c->err);
        return -1;
    }
    *wire = MSG_HEADER_SIZE + DISK_HEAD + (zero ? 0 : len);
    return 0;
}

/* The digest of a share of an image's chunks, [first, end), one thread. */
struct digest_job {
    int fd;
    uint64_t size;
    size_t first, end;
    uint64_t *out;      /* per chunk */
    uint8_t *buf;       /* DISK_CHUNK */
    int err;            /* errno, or -1 for a short file; 0 = fine */
};

/* Blocks [lo, hi) of chunk `off` (len bytes) read from the image and hashed. */
static int hash_run(struct digest_job *j, uint64_t off, size_t len, size_t lo, size_t hi, uint64_t *hash)
{
    size_t a = lo * DISK_BLOCK, b = hi * DISK_BLOCK < len ? hi * DISK_BLOCK : len;
    for (size_t got = a; got < b;) {
        ssize_t n = pread(j->fd, j->buf + got, b - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            j->err = n ? errno : -1;
            return -1;
        }
        got += (size_t)n;
    }
    for (size_t p = a; p < b; p += DISK_BLOCK)
        hash[p / DISK_BLOCK] = XXH3_64bits(j->buf + p, b - p < DISK_BLOCK ? b - p : DISK_BLOCK);
    return 0;
}

/* Holes read as zeroes: their blocks get the zero block's hash without being
 * read (a quarter of a typical image, or most of a fresh one). */
static void *digest_range(void *arg)
{
    struct digest_job *j = arg;
    uint64_t zfull = XXH3_64bits(zeros, DISK_BLOCK), lo = 0, hi = 0;
    for (size_t c = j->first; c < j->end && !j->err; c++) {
        uint64_t off = (uint64_t)c * DISK_CHUNK, hash[BLOCKS_PER_CHUNK];
        size_t len = j->size - off < DISK_CHUNK ? (size_t)(j->size - off) : DISK_CHUNK;
        size_t nb = (len + DISK_BLOCK - 1) / DISK_BLOCK, blk = 0;
        for (size_t i = 0; i < nb; i++)
            hash[i] = len - i * DISK_BLOCK < DISK_BLOCK ? XXH3_64bits(zeros, len - i * DISK_BLOCK) : zfull;
        while (blk < nb && !j->err) {
            /* found again only once past it: SEEK_HOLE walks the whole extent */
            if (off + blk * DISK_BLOCK >= hi)
                blk_data_extent(j->fd, j->size, off + blk * DISK_BLOCK, &lo, &hi);
            if (lo >= off + len)
                break;
            size_t first = lo > off ? (size_t)((lo - off) / DISK_BLOCK) : blk;
            size_t last = hi >= off + len ? nb : (size_t)((hi - off + DISK_BLOCK - 1) / DISK_BLOCK);
            if (first < blk)
                first = blk;
            if (hash_run(j, off, len, first, last, hash) < 0)
                break;
            blk = last;
        }
        j->out[c] = chunk_digest(hash, nb);
    }
    return NULL;
}

int disk_digest_encode(struct buf *b, uint32_t d, int fd, uint64_t size, char *err, size_t errlen)
{
    size_t n = nchunks(size), nt = 0, started = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t want = cpus < 1 ? 1 : cpus > DIGEST_THREADS ? DIGEST_THREADS : (size_t)cpus;
    struct digest_job jobs[DIGEST_THREADS];
    pthread_t th[DIGEST_THREADS];
    uint64_t *out = malloc((n ? n : 1) * sizeof(*out));
    int rc = out && buf_reserve(b, 16 + 8 * n) == 0 ? 0 : -1;
    /* the image read in parallel: after the hand-over the pause is over, and
     * the digest is what the migration's end waits for */
    for (size_t t = 0; rc == 0 && t < want; t++) {
        jobs[t] = (struct digest_job){ fd, size, n * t / want, n * (t + 1) / want, out, malloc(DISK_CHUNK), 0 };
        if (!jobs[t].buf) {
            rc = -1;
            break;
        }
        nt++;
        if (t + 1 == want || pthread_create(&th[t], NULL, digest_range, &jobs[t]) != 0) {
            jobs[t].end = n;   /* the last share (or the rest) runs here */
            digest_range(&jobs[t]);
            break;
        }
        started++;
    }
    for (size_t t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    int e = 0;
    for (size_t t = 0; t < nt; t++) {
        e = e ? e : jobs[t].err;
        free(jobs[t].buf);
    }
    if (rc < 0 || !out) {
        snprintf(err, errlen, "out of memory for the disk digest");
        rc = -1;
    } else if (e) {
        snprintf(err, errlen, "cannot read the disk for its digest: %s", e > 0 ? strerror(e) : "short file");
        rc = -1;
    } else {
        buf_put_u32(b, d);   /* cannot fail: reserved above */
        buf_put_u32(b, 0);
        buf_put_u64(b, size);
        for (size_t i = 0; i < n; i++)
            buf_put_u64(b, out[i]);
    }
    free(out);
    return rc;
}

/* ---- destination --------------------------------------------------------------- */

int disk_sink_add(struct disk_sink *s, int fd, const char *path, uint64_t size)
{
    if (s->n >= DISKS_MAX)
        return -1;
    uint64_t nb = (size + DISK_BLOCK - 1) / DISK_BLOCK;
    uint64_t *h = malloc((nb ? nb : 1) * sizeof(*h));
    if (!h)
        return -1;
    /* nothing received yet: the new image is a hole, zeroes */
    uint64_t full = XXH3_64bits(zeros, DISK_BLOCK);
    for (uint64_t i = 0; i < nb; i++)
        h[i] = full;
    if (nb && size % DISK_BLOCK)
        h[nb - 1] = XXH3_64bits(zeros, size % DISK_BLOCK);
    s->fd[s->n] = fd;
    s->path[s->n] = path;
    s->size[s->n] = size;
    s->hash[s->n] = h;
    s->n++;
    return 0;
}

void disk_sink_free(struct disk_sink *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->hash[i]);
    s->n = 0;
}

static int write_full(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int disks_rx_recv(struct disks_rx *rx, struct disk_sink *s, struct chan *c, struct msg *m, char *err,
                  size_t errlen)
{
    uint8_t h[DISK_HEAD];
    struct iovec iov[2] = { { h, DISK_HEAD }, { NULL, 0 } };
    size_t got;
    if (m->len < DISK_HEAD) {
        snprintf(err, errlen, "DISK_BLOCKS: payload of %u bytes has no head", m->len);
        return -1;
    }
    if (msg_read_into(c, m, iov, 1, &got, err, errlen) < 0)
        return -1;
    uint32_t d = get32(h), flags = get32(h + 4);
    uint64_t off = get64(h + 8), len = get64(h + 16);
    bool zero = flags & DISK_F_ZERO;
    /* whole blocks of one chunk of a disk we receive, and the body it says */
    if (d >= (uint32_t)s->n || (flags & ~DISK_F_ZERO) || off % DISK_BLOCK || !len || len > DISK_CHUNK ||
        off >= s->size[d] || len > s->size[d] - off || (off / DISK_CHUNK != (off + len - 1) / DISK_CHUNK) ||
        ((off + len) % DISK_BLOCK && off + len != s->size[d]) || m->len != DISK_HEAD + (zero ? 0 : len)) {
        snprintf(err, errlen, "DISK_BLOCKS: bad piece (disk %u, flags 0x%x, %llu bytes at %llu) in %u bytes", d,
                 flags, (unsigned long long)len, (unsigned long long)off, m->len);
        return -1;
    }
    if (!zero) {
        if (!rx->buf && !(rx->buf = malloc(DISK_CHUNK))) {
            snprintf(err, errlen, "out of memory for disk blocks");
            return -1;
        }
        iov[1] = (struct iovec){ rx->buf, len };
        if (msg_read_into(c, m, &iov[1], 1, &got, err, errlen) < 0)
            return -1;
    }
    if (msg_check_sum(c, m, iov, zero ? 1 : 2, err, errlen) < 0)
        return -1;
    int r = zero ? fallocate(s->fd[d], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len)
                 : write_full(s->fd[d], rx->buf, len, off);
    if (r < 0 && zero && errno == EOPNOTSUPP) {   /* no hole punching: write the zeroes */
        r = 0;
        for (uint64_t p = 0; r == 0 && p < len; p += DISK_BLOCK)
            r = write_full(s->fd[d], zeros, len - p < DISK_BLOCK ? len - p : DISK_BLOCK, off + p);
    }
    if (r < 0) {
        snprintf(err, errlen, "cannot write %s: %s", s->path[d], strerror(errno));
        return -1;
    }
    for (uint64_t p = 0; p < len; p += DISK_BLOCK) {
        size_t n = len - p < DISK_BLOCK ? (size_t)(len - p) : DISK_BLOCK;
        s->hash[d][(off + p) / DISK_BLOCK] = XXH3_64bits(zero ? zeros : rx->buf + p, n);
    }
    rx->bytes += len;
    rx->wire_bytes += MSG_HEADER_SIZE + m->len;
    return 0;
}

void disks_rx_free(struct disks_rx *rx)
{
    free(rx->buf);
    rx->buf = NULL;
}

int disk_digest_check(const struct disk_sink *s, const struct msg *m, char *err, size_t errlen)
{
    if (m->len < 16) {
        snprintf(err, errlen, "DISK_DIGEST: payload of %u bytes", m->len);
        return -1;
    }
    uint32_t d = get32(m->payload);
    uint64_t size = get64(m->payload + 8);
    if (d >= (uint32_t)s->n || get32(m->payload + 4) || size != s->size[d] ||
        m->len != 16 + nchunks(size) * 8ull) {
        snprintf(err, errlen, "DISK_DIGEST: bad head (disk %u, %llu bytes) in %u bytes", d,
                 (unsigned long long)size, m->len);
        return -1;
    }
    uint64_t nb = (size + DISK_BLOCK - 1) / DISK_BLOCK;
    for (size_t i = 0; i < nchunks(size); i++) {
        uint64_t first = (uint64_t)i * BLOCKS_PER_CHUNK;
        size_t n = nb - first < BLOCKS_PER_CHUNK ? (size_t)(nb - first) : BLOCKS_PER_CHUNK;
        if (chunk_digest(s->hash[d] + first, n) != get64(m->payload + 16 + i * 8)) {
            snprintf(err, errlen, "disk digest mismatch: disk %u (%s) at offset %llu (chunk %zu of %zu)", d,
                     s->path[d], (unsigned long long)i * DISK_CHUNK, i, nchunks(size));
            return -1;
        }
    }
    return 0;
}
