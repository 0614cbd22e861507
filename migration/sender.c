/* The source's streams and their sender threads (see sender.h). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/tls.h"
#include "devices/blk_move.h"
#include "devices/virtio_blk.h"
#include "migration/disks.h"
#include "migration/net.h"
#include "migration/sender.h"
#include "vmm/log.h"
#include "vmm/vm.h"

#define CLEAR_UNIT      (1ull << (UNIT_SHIFT - PAGE_SHIFT))   /* pages per unit: 512 */
#define CONNECT_TIMEOUT_MS 10000
#define SEND_TIMEOUT_S  10
#define ACK_TIMEOUT_S   60
#define TICK_MS         200

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- opening the streams --------------------------------------------- */

int sender_read_ack(struct chan *c, char *reason, size_t rlen, char *err, size_t errlen)
{
    struct msg m = { 0 };
    uint32_t status;
    if (msg_read(c, &m, err, errlen) < 0)
        return -1;
    int r = -1;
    if (m.type == MSG_ABORT) {
        char why[200];
        msg_text(&m, 0, why, sizeof(why));
        snprintf(err, errlen, "destination aborted: %s", why);
    } else if (ack_decode(&m, &status, reason, rlen, err, errlen) == 0) {
        r = (int)status;
    }
    msg_free(&m);
    return r;
}

/* Connect stream i (TLS if we have credentials) and introduce it. */
static int open_one(struct sender *s, int i, const char *hello_json, char *err, size_t errlen)
{
    struct migration *mg = s->mg;
    struct stream *st = &s->st[i];
    const char *via = mg->p.nvia ? mg->p.via[i % mg->p.nvia] : NULL;
    st->ch = CHAN_PLAIN(net_connect(mg->p.uri, via, CONNECT_TIMEOUT_MS, err, errlen));
    if (st->ch.fd < 0)
        return -1;
    /* the SYN/SYN-ACK sample: later ones include the TLS handshake's work */
    if (i == 0)
        s->rtt_us = net_rtt_us(st->ch.fd);
    /* a destination that stops reading must not hold the VM (or a cancel)
     * hostage: a send blocked this long fails */
    struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };
    setsockopt(st->ch.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    tv.tv_sec = ACK_TIMEOUT_S;
    setsockopt(st->ch.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (mg->tls && !(st->ch.ssl = tls_handshake(mg->tls, st->ch.fd, false, err, errlen)))
        return -1;

    struct buf b = { 0 };
    int r = i == 0 ? hello_encode(&b, hello_json) : join_encode(&b, s->session, (uint32_t)i);
    if (r == 0 && (msg_write(&st->ch, i == 0 ? MSG_HELLO : MSG_JOIN, b.data, (uint32_t)b.len) < 0 ||
                   chan_flush(&st->ch) < 0)) {
        snprintf(err, errlen, "connection to destination lost while sending %s: %s",
                 i == 0 ? "HELLO" : "JOIN", st->ch.err);
        r = -1;
    }
    buf_free(&b);
    if (r < 0)
        return -1;
    char reason[200] = "";
    int ack = sender_read_ack(&st->ch, reason, sizeof(reason), err, errlen);
    if (ack == ACK_READY)
        return 0;
    if (ack == ACK_REJECTED)
        snprintf(err, errlen, "destination refused the VM: %s", reason);
    else if (ack >= 0)
        snprintf(err, errlen, "unexpected ACK status %d from destination", ack);
    return -1;
}

int sender_open(struct sender *s, const char *hello_json, char *err, size_t errlen)
{
    for (int i = 0; i < s->n; i++) {
        s->st[i] = (struct stream){ .s = s, .index = i, .ch = CHAN_PLAIN(-1), .bw_t0 = now_ns() };
        s->st[i].tx.codec = CODEC_NONE;
    }
    for (int i = 0; i < s->n; i++)
        if (open_one(s, i, hello_json, err, errlen) < 0)
            return -1;
    return 0;
}

/* ---- one stream's share of a round ----------------------------------- */

/* Sleep as needed to keep this stream under its share of the cap. */
static void throttle(struct stream *st, uint64_t cap)
{
    if (!cap)
        return;
    uint64_t t = now_ns();
    if (t - st->bw_t0 >= 1000000000ull) {
        st->bw_t0 = t;
        st->bw_bytes = 0;
        return;
    }
    uint64_t due = st->bw_t0 + st->bw_bytes * 1000000000ull / cap;
    /* sleep in short slices so a cancel is noticed at once */
    while ((t = now_ns()) < due && !atomic_load(&st->s->mg->cancel)) {
        uint64_t left = due - t < 10000000ull ? due - t : 10000000ull;
        nanosleep(&(struct timespec){ .tv_nsec = (long)left }, NULL);
    }
}

static bool stopping(struct sender *s)
{
    return atomic_load(&s->failed) || atomic_load(&s->mg->cancel);
}

/* Count what went out against the cap. */
static void sent_bytes(struct stream *st, uint64_t wire)
{
    st->bw_bytes += wire;
    throttle(st, st->s->mg->p.bandwidth / (uint64_t)st->s->n);
}

/* This stream's lane of each disk: in round 0 the data extents (all-zero
 * pieces stay holes, as the destination's new image starts), later the
 * dirty blocks (all-zero ones as holes: older data may be there). A guest
 * write after a piece's bits were taken marks it again. */
static int send_disks(struct stream *st, bool round0)
{
    struct sender *s = st->s;
    for (int d = 0; s->disks && d < s->vm->cfg.ndisks; d++) {
        struct virtio_blk *b = s->vm->blk[d];
        struct blk_cursor cur = { .dirty = !round0, .lanes = (uint32_t)s->n, .lane = (uint32_t)st->index };
        uint64_t off, wire;
        size_t len;
        while (blk_track_next(b, &cur, &off, &len)) {
            if (stopping(s))
                return -1;
            if (blk_track_read(b, st->dbuf, len, off) < 0) {
                snprintf(st->err, sizeof(st->err), "cannot read %s: %s", b->path, strerror(errno));
                return -1;
            }
            bool zero = blk_buf_zero(st->dbuf, len);
            uint64_t skip = s->mg->p.test_skip_disk_block * DISK_BLOCK;
            if ((zero && round0) || (skip && d == 0 && off <= skip && skip < off + len))
                continue;
            if (disk_blocks_send(&st->ch, (uint32_t)d, off, st->dbuf, len, zero, &wire, st->err,
                                 sizeof(st->err)) < 0)
                return -1;
            st->tx.st.wire_bytes += wire;
            st->tx.st.disk_bytes += zero ? 0 : len;
            sent_bytes(st, wire);
        }
    }
    return 0;
}

static int flush_pages(struct stream *st)
{
    uint64_t before = st->tx.st.wire_bytes;
    st->tx.codec = (enum page_codec)atomic_load(&st->s->codec);
    if (pages_tx_send(&st->tx, &st->ch, st->err, sizeof(st->err)) < 0)
        return -1;
    sent_bytes(st, st->tx.st.wire_bytes - before);
    return 0;
}

/* Send the dirty pages of this stream's units, re-protecting each unit just
 * before reading it. In round 0 all-zero pages are skipped: the destination's
 * RAM starts zeroed; later rounds send them as markers. */
static int send_share(struct stream *st, bool round0)
{
    struct sender *s = st->s;
    struct dirty_log *d = &s->d;
    const struct guest_mem *m = d->mem;
    uint64_t skip = s->mg->p.test_skip_gpa;
    for (int slot = 0; slot < m->nregions; slot++) {
        uint64_t base = m->regions[slot].gpa;
        for (uint64_t first = 0; first < d->npages[slot]; first += CLEAR_UNIT) {
            if (((base >> UNIT_SHIFT) + (first >> (UNIT_SHIFT - PAGE_SHIFT))) % (uint64_t)s->n !=
                (uint64_t)st->index)
                continue;
            uint64_t n = d->npages[slot] - first < CLEAR_UNIT ? d->npages[slot] - first : CLEAR_UNIT;
            bool any = false;
            for (uint64_t w = first / 64; w < (first + n + 63) / 64 && !any; w++)
                any = d->bitmap[slot][w] != 0;
            if (any) {
                if (stopping(s))
                    return -1;
                if (dirty_log_clear(d, slot, first, n, st->err, sizeof(st->err)) < 0)
                    return -1;
                for (uint64_t pg = first; pg < first + n; pg++) {
                    if (!dirty_test(d, slot, pg))
                        continue;
                    uint64_t gpa = base + (pg << PAGE_SHIFT);
                    const uint8_t *p = m->regions[slot].hva + (pg << PAGE_SHIFT);
                    if ((round0 && page_is_zero(p)) || (skip && gpa == skip))
                        continue;
                    if (pages_tx_add(&st->tx, gpa, p) && flush_pages(st) < 0)
                        return -1;
                }
                dirty_log_sent(d, slot, first, n);
            }
            if (round0)
                atomic_fetch_add(&s->scanned, n);
        }
    }
    return flush_pages(st) < 0 ? -1 : send_disks(st, round0);
}

/* SYNC on this stream, then the destination's ACK once it has taken in
 * everything sent before it. */
static int sync_one(struct stream *st)
{
    char reason[200];
    if (msg_write(&st->ch, MSG_SYNC, NULL, 0) < 0 || chan_flush(&st->ch) < 0) {
        snprintf(st->err, sizeof(st->err), "connection to destination lost while sending SYNC: %.150s", st->ch.err);
        return -1;
    }
    int ack = sender_read_ack(&st->ch, reason, sizeof(reason), st->err, sizeof(st->err));
    if (ack == ACK_READY)
        return 0;
    if (ack >= 0)
        snprintf(st->err, sizeof(st->err), "destination answered SYNC with ACK status %d: %.150s", ack, reason);
    return -1;
}

static void *stream_thread(void *arg)
{
    struct stream *st = arg;
    struct sender *s = st->s;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (!s->quit && s->gen == st->gen)
            pthread_cond_wait(&s->go, &s->lock);
        bool quit = s->quit, round0 = s->round0, final = s->final, sync = s->sync;
        unsigned gen = s->gen;
        pthread_mutex_unlock(&s->lock);
        if (quit)
            return NULL;
        int r = sync ? sync_one(st) : send_share(st, round0);
        if (r == 0 && final && st->index > 0 && msg_write(&st->ch, MSG_FLUSH, NULL, 0) < 0) {
            snprintf(st->err, sizeof(st->err), "connection to destination lost while sending FLUSH: %.150s",
                     st->ch.err);
            r = -1;
        }
        if (r == 0 && chan_flush(&st->ch) < 0) {
            snprintf(st->err, sizeof(st->err), "connection to destination lost: %.150s", st->ch.err);
            r = -1;
        }
        if (r < 0 && !atomic_load(&s->mg->cancel) && st->err[0])
            atomic_store(&s->failed, true);
        pthread_mutex_lock(&s->lock);
        st->gen = gen;
        s->done++;
        pthread_cond_broadcast(&s->done_cv);
        pthread_mutex_unlock(&s->lock);
    }
}

int sender_start(struct sender *s, char *err, size_t errlen)
{
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->go, NULL);
    pthread_cond_init(&s->done_cv, NULL);
    for (int i = 0; i < s->n; i++) {
        if (s->disks && posix_memalign((void **)&s->st[i].dbuf, 4096, DISK_CHUNK)) {
            s->st[i].dbuf = NULL;
            snprintf(err, errlen, "out of memory for disk blocks");
            return -1;
        }
        if (pthread_create(&s->st[i].thread, NULL, stream_thread, &s->st[i]) != 0) {
            snprintf(err, errlen, "cannot start the sender threads");
            return -1;
        }
        s->st[i].live = true;
    }
    return 0;
}

/* During a round the destination has nothing to say on stream 0 (it
 * answers only SYNC and COMPLETE): anything there, or its close, means it
 * gave up, and the reason (ACK rejected, ABORT) is read once the threads
 * stopped. Without this a destination that failed while it keeps draining
 * stream 0 would go unnoticed until the next SYNC. */
static bool peer_spoke(struct sender *s)
{
    struct pollfd p = { .fd = s->st[0].ch.fd, .events = POLLIN };
    if (!s->peer_spoke && poll(&p, 1, 0) > 0)
        s->peer_spoke = true;
    return s->peer_spoke;
}

static int run_all(struct sender *s, bool round0, bool final, bool sync, void (*tick)(struct sender *),
                   char *err, size_t errlen)
{
    pthread_mutex_lock(&s->lock);
    s->round0 = round0;
    s->final = final;
    s->sync = sync;
    s->done = 0;
    s->gen++;
    pthread_cond_broadcast(&s->go);
    while (s->done < s->n) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += TICK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&s->done_cv, &s->lock, &until) == ETIMEDOUT && tick) {
            pthread_mutex_unlock(&s->lock);
            tick(s);
            if (peer_spoke(s))
                atomic_store(&s->failed, true);
            pthread_mutex_lock(&s->lock);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (atomic_load(&s->mg->cancel)) {
        snprintf(err, errlen, "cancelled by the operator");
        return -1;
    }
    if (s->peer_spoke) {
        snprintf(err, errlen, "connection to destination lost: it closed stream 0 or gave up mid-round");
        return -1;
    }
    for (int i = 0; i < s->n; i++) {
        if (atomic_load(&s->failed) && s->st[i].err[0]) {
            snprintf(err, errlen, "stream %d: %s", i, s->st[i].err);
            return -1;
        }
    }
    return 0;
}

int sender_round(struct sender *s, bool round0, bool final, void (*tick)(struct sender *),
                 char *err, size_t errlen)
{
    return run_all(s, round0, final, false, tick, err, errlen);
}

int sender_sync(struct sender *s, char *err, size_t errlen)
{
    return run_all(s, false, false, true, NULL, err, errlen);
}

void sender_totals(struct sender *s, struct page_stats *out)
{
    *out = (struct page_stats){ 0 };
    for (int i = 0; i < s->n; i++) {
        const struct page_stats *p = &s->st[i].tx.st;
        out->pages += p->pages;
        out->zero_pages += p->zero_pages;
        out->data_bytes += p->data_bytes;
        out->wire_bytes += p->wire_bytes;
        out->disk_bytes += p->disk_bytes;
    }
}

void sender_close(struct sender *s)
{
    bool any = false;
    for (int i = 0; i < s->n; i++)
        any |= s->st[i].live;
    if (any) {
        pthread_mutex_lock(&s->lock);
        s->quit = true;
        pthread_cond_broadcast(&s->go);
        pthread_mutex_unlock(&s->lock);
    }
    for (int i = 0; i < s->n; i++) {
        if (s->st[i].live)
            pthread_join(s->st[i].thread, NULL);
        s->st[i].live = false;
        pages_tx_free(&s->st[i].tx);
        free(s->st[i].dbuf);
        s->st[i].dbuf = NULL;
        chan_close(&s->st[i].ch);
    }
    if (any) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->go);
        pthread_cond_destroy(&s->done_cv);
    }
}
