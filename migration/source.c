/* Source side of pre-copy live migration.
 *
 * Round 0 copies all RAM while the guest runs; each later round copies what
 * the guest dirtied meanwhile, over all streams at once (sender.c). After
 * each dirty sync the engine predicts the pause needed to send the rest
 * (dirty bytes / measured throughput, plus the round trips of the hand-over);
 * once that meets the target it pauses the vCPUs, sends the last pages and
 * the state, and hands the VM over. Until the destination's ACK(resumed) the
 * VM is ours: every failure resumes it here. The memory digest is compared
 * after the hand-over (or, with verify=strict, inside the pause).
 *
 * Shared-nothing (storage_to): the disks travel on the same streams, their
 * data extents in round 0 and the blocks the guest wrote since in each later
 * round (blk_move's tracker), the last ones in the pause; the pause's
 * prediction counts the dirty disk bytes with the dirty pages, and each disk's
 * digest is checked with the memory's. */
#include <errno.h>
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
#include "migration/digest.h"
#include "migration/disks.h"
#include "migration/net.h"
#include "migration/sections.h"
#include "migration/sender.h"
#include "migration/stream.h"
#include "vmm/log.h"
#include "vmm/vm.h"

#define ACK_TIMEOUT_S 60              /* for the destination's answers at switchover */
/* The first aim for the last pages: the pause takes up to 1.5x their
 * predicted time, plus about 1 ms to stop, send the state and start: 5 ms. */
#define DOWNTIME_AIM_MS 3ull
#define THROTTLE_FROM_ROUND 2         /* auto-converge: rounds missing the aim before slowing */
#define THROTTLE_START 20             /* percent of the time the vCPUs are held, at first */
#define THROTTLE_STEP 10              /* and more each round that still misses the aim */
#define RATE_MIN_ROUND (32u << 20)   /* the smallest round that updates the rate estimate */
#define PLAN_RATE (1250000000ull)     /* 10 Gbit/s: the rate a window is sized for without a cap */

struct engine {
    struct sender s;
    uint64_t ctl_bytes;               /* control messages written */
    /* auto compression (auto_compress) */
    uint64_t t_last_tick, data_last_tick;
    double cpu_last, rate_before;
    int auto_state, ticks_in_state;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void mig_params_default(struct mig_params *p)
{
    memset(p, 0, sizeof(*p));
    p->downtime_ms = 50;
    p->max_time_ms = 300000;
    p->max_rounds = 60;
    p->verify = VERIFY_AFTER;
    p->compress = COMPRESS_AUTO;
    p->auto_converge = true;
}

const char *mig_phase_name(enum mig_phase ph)
{
    static const char *n[] = { "none", "setup", "precopy", "switchover", "completed", "failed",
                               "cancelled", "in-doubt" };
    return n[ph];
}

static void set_phase(struct migration *mg, enum mig_phase ph)
{
    pthread_mutex_lock(&mg->lock);
    mg->s.phase = ph;
    pthread_mutex_unlock(&mg->lock);
}

static void publish(struct engine *e)
{
    struct page_stats t;
    sender_totals(&e->s, &t);
    struct migration *mg = e->s.mg;
    pthread_mutex_lock(&mg->lock);
    mg->s.bytes_sent = t.wire_bytes + e->ctl_bytes;
    mg->s.data_bytes = t.data_bytes;
    mg->s.pages_sent = t.pages;
    mg->s.zero_pages = t.zero_pages;
    mg->s.scanned_pages = atomic_load(&e->s.scanned);
    mg->s.codec = atomic_load(&e->s.codec);
    mg->s.disk_bytes = t.disk_bytes;
    pthread_mutex_unlock(&mg->lock);
}

/* Dirty disk blocks now (shared-nothing), all disks. */
static uint64_t disk_dirty(struct engine *e)
{
    uint64_t n = 0;
    for (int d = 0; e->s.disks && d < e->s.vm->cfg.ndisks; d++)
        n += blk_track_dirty(e->s.vm->blk[d]);
    return n;
}

/* Compression switches itself on when the link, not the CPU, limits the
 * migration. The sender threads idling for the socket suggest it, but on a
 * fast link they may wait for a busy receiver instead; so compression gets a
 * trial, and stays only if it moved more page data per second than sending
 * the pages raw did. A slow link (under 50 MB/s of pages with lz4) tries zstd. */
enum { AUTO_WATCH, AUTO_TRIAL, AUTO_DONE };

static void auto_compress(struct engine *e)
{
    struct sender *s = &e->s;
    struct page_stats t;
    sender_totals(s, &t);
    double cpu = 0;
    for (int i = 0; i < s->n; i++) {
        clockid_t cid;
        struct timespec ts;
        if (pthread_getcpuclockid(s->st[i].thread, &cid) == 0 && clock_gettime(cid, &ts) == 0)
            cpu += (double)ts.tv_sec + ts.tv_nsec / 1e9;
    }
    uint64_t now = now_ns();
    double dt = (double)(now - e->t_last_tick) / 1e9;
    /* disk data counts too: it shares the link (and is never compressed) */
    double busy = (cpu - e->cpu_last) / dt / s->n,
           rate = (double)(t.data_bytes + t.disk_bytes - e->data_last_tick) / dt;
    bool valid = e->t_last_tick && e->ticks_in_state++ > 0;   /* a whole tick in this state */
    e->cpu_last = cpu;
    e->t_last_tick = now;
    e->data_last_tick = t.data_bytes + t.disk_bytes;
    if (s->mg->p.compress != COMPRESS_AUTO || !valid || e->auto_state == AUTO_DONE)
        return;
    int codec = atomic_load(&s->codec);
    if (e->auto_state == AUTO_WATCH) {
        if (busy < 0.5) {
            e->rate_before = rate;
            e->auto_state = AUTO_TRIAL;
            e->ticks_in_state = 0;
            atomic_store(&s->codec, codec == CODEC_NONE ? CODEC_LZ4 : CODEC_ZSTD);
        }
        return;
    }
    /* AUTO_TRIAL: keep the codec only if it paid */
    bool better = rate > 1.2 * e->rate_before;
    log_info("migration: %s moved %.0f MB/s of pages, against %.0f MB/s before: %s",
             page_codec_name(codec), rate / 1e6, e->rate_before / 1e6, better ? "keeping it" : "dropping it");
    e->ticks_in_state = 0;
    if (!better) {
        atomic_store(&s->codec, codec == CODEC_LZ4 ? CODEC_NONE : CODEC_LZ4);
        e->auto_state = AUTO_DONE;
    } else {
        e->auto_state = codec == CODEC_LZ4 && rate < 50e6 ? AUTO_WATCH : AUTO_DONE;
    }
}

static void tick(struct sender *s)
{
    struct engine *e = (struct engine *)s;   /* the sender is the engine's first member */
    publish(e);
    auto_compress(e);
}

static int send_ctl(struct engine *e, uint16_t type, const void *p, size_t len, char *err, size_t errlen)
{
    struct chan *c = &e->s.st[0].ch;
    if (msg_write(c, type, p, (uint32_t)len) < 0 || chan_flush(c) < 0) {
        snprintf(err, errlen, "connection to destination lost while sending %s: %s", msg_type_name(type),
                 c->err);
        return -1;
    }
    e->ctl_bytes += MSG_HEADER_SIZE + len;
    return 0;
}

static int read_ack(struct engine *e, char *reason, size_t rlen, char *err, size_t errlen)
{
    return sender_read_ack(&e->s.st[0].ch, reason, rlen, err, errlen);
}

/* HELLO's JSON: the VM's configuration plus this migration's session. */
static char *hello_json(struct engine *e, char *err, size_t errlen)
{
    char *cfg = vm_config_json(e->s.vm);
    json_object *o = cfg ? json_tokener_parse(cfg) : NULL;
    free(cfg);
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char hex[2 * SESSION_ID_LEN + 1];
    for (int i = 0; i < SESSION_ID_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", e->s.session[i]);
    json_object *mig = json_object_new_object();
    json_object_object_add(mig, "session", json_object_new_string(hex));
    json_object_object_add(mig, "streams", json_object_new_int(e->s.n));
    json_object_object_add(mig, "verify", json_object_new_string(
        e->s.mg->p.verify == VERIFY_OFF ? "off" : e->s.mg->p.verify == VERIFY_STRICT ? "strict" : "after"));
    json_object_object_add(o, "migration", mig);
    json_object *disks;
    if (e->s.disks && json_object_object_get_ex(o, "disks", &disks))
        for (size_t i = 0; i < json_object_array_length(disks); i++)
            json_object_object_add(json_object_array_get_idx(disks, i), "copy_to",
                                   json_object_new_string(e->s.mg->p.storage_to[i]));
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return s;
}

/* Streams: as asked, else one per core up to 4 (each stream's TLS runs on
 * its own core), at least one per migration address. */
static int pick_streams(const struct mig_params *p)
{
    if (p->streams)
        return p->streams;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n = cpus < 1 ? 1 : cpus > 4 ? 4 : (int)cpus;
    return n < p->nvia ? p->nvia : n;
}

static int connect_all(struct engine *e, char *err, size_t errlen)
{
    struct migration *mg = e->s.mg;
    if (getrandom(e->s.session, SESSION_ID_LEN, 0) != SESSION_ID_LEN) {
        snprintf(err, errlen, "cannot pick a session id: %s", strerror(errno));
        return -1;
    }
    char *hello = hello_json(e, err, errlen);
    if (!hello)
        return -1;
    int r = sender_open(&e->s, hello, err, errlen);
    free(hello);
    if (r < 0)
        return -1;
    int rtt = e->s.rtt_us;
    char note[320] = "";
    for (int i = 0; i < e->s.n; i++)
        net_size_window(e->s.st[i].ch.fd, true, (mg->p.bandwidth ? mg->p.bandwidth : PLAN_RATE) / (uint64_t)e->s.n,
                        rtt, i ? (char[320]){ 0 } : note, 320);
    pthread_mutex_lock(&mg->lock);
    mg->s.streams = e->s.n;
    mg->s.rtt_us = rtt;
    snprintf(mg->s.window_note, sizeof(mg->s.window_note), "%s", note);
    snprintf(mg->s.cipher, sizeof(mg->s.cipher), "%s",
             e->s.st[0].ch.ssl ? tls_cipher(e->s.st[0].ch.ssl) : "none (--insecure)");
    pthread_mutex_unlock(&mg->lock);
    if (note[0])
        log_warn("migration: %s", note);
    return 0;
}

/* The next vCPU throttle: at least THROTTLE_STEP more than now, or at once
 * what brings the guest's dirtying to half the link, assuming it dirties in
 * proportion to the time it runs (dirty_bps is the rate seen under `pct`). */
static int throttle_next(int pct, double dirty_bps, double link_bps)
{
    int next = pct ? pct + THROTTLE_STEP : THROTTLE_START;
    double unthrottled = dirty_bps / (1.0 - pct / 100.0);
    if (unthrottled > 0 && link_bps > 0) {
        double want = 100.0 * (1.0 - 0.5 * link_bps / unthrottled);
        if (want > next)
            next = (int)want + 1;
    }
    return next > THROTTLE_MAX ? THROTTLE_MAX : next;
}

/* Pre-copy rounds until the predicted pause meets the target. 0 = switch over. */
static int precopy(struct engine *e, char *err, size_t errlen)
{
    struct migration *mg = e->s.mg;
    const struct mig_params *p = &mg->p;
    uint64_t t_start = now_ns(), t_prev_sync = 0;
    double throughput = 0, rtt_ms = mg->s.rtt_us / 1000.0;
    bool drained = false;
    int throttle = 0;
    unsigned stuck_rounds = 0;
    bool stuck = false;
    unsigned spent = 0;               /* stuck rounds with the throttle at its maximum */
    int64_t prev_dirty = 0;
    for (uint32_t round = 0;; round++) {
        uint64_t t_sync = now_ns();
        int64_t dirty = dirty_log_fetch(&e->s.d, err, errlen);
        if (dirty < 0)
            return -1;
        uint64_t dblocks = disk_dirty(e), dirty_bytes = (uint64_t)dirty * PAGE_SIZE + dblocks * DISK_BLOCK;
        if (round > 0) {
            double secs = (double)(t_sync - t_prev_sync) / 1e9;
            /* The pause: the last pages, then COMPLETE -> ACK -> COMMIT -> ACK,
             * two round trips. The target bounds the part pre-copy can shrink,
             * the pages; the round trips are the link's floor (300 ms at 150
             * ms RTT), shown in the prediction but not held against it. */
            /* A compression trial still running is dropped at the
             * switchover (see there): the last pages then go raw, at the
             * rate measured before the trial, not at the trial's. */
            double rate = throughput;
            if (e->auto_state == AUTO_TRIAL && e->rate_before > 0 && e->rate_before < rate)
                rate = e->rate_before;
            double pages_ms = rate > 0 ? (double)dirty_bytes / rate * 1000.0 : 1e9;
            double predicted = pages_ms + 2 * rtt_ms;
            pthread_mutex_lock(&mg->lock);
            mg->s.round = round;
            mg->s.remaining_pages = (dirty_bytes + PAGE_SIZE - 1) / PAGE_SIZE;
            mg->s.disk_dirty_blocks = dblocks;
            mg->s.dirty_rate = secs > 0 ? (double)dirty_bytes / PAGE_SIZE / secs : 0;
            mg->s.predicted_downtime_ms = predicted;
            mg->s.elapsed_ms = (t_sync - t_start) / 1000000;
            pthread_mutex_unlock(&mg->lock);
            /* A round that did not even halve the last pages is stuck:
             * the guest dirties about as fast as the link moves. (Not
             * judged again on the second look after draining.) */
            if (!drained) {
                stuck = prev_dirty == 0 || (int64_t)dirty_bytes * 2 > prev_dirty;
                prev_dirty = (int64_t)dirty_bytes;   /* disk blocks count: a slower guest writes less too */
                /* While the throttle can still slow the guest, it and not
                 * a longer pause answers a stuck round. Stuck 3 times with
                 * the vCPUs all but stopped, what dirties memory is not
                 * (only) the vCPUs, say a NIC receiving into guest RAM:
                 * more rounds would only spend the round budget. */
                stuck_rounds += stuck && round >= THROTTLE_FROM_ROUND && !p->auto_converge;
                spent += stuck && throttle >= THROTTLE_MAX;
            }
            /* Aim at a pause of a few ms first. A guest that converges, by
             * itself or slowed, keeps that aim however many rounds it takes;
             * without auto-converge a stuck one gets it doubled every 3
             * stuck rounds, up to downtime_ms, and with it the exhausted
             * throttle makes it downtime_ms: short pauses where the link
             * allows them, and convergence where it does not. */
            double target = (double)p->downtime_ms;
            bool exhausted = spent >= 3;
            if (!exhausted && stuck_rounds / 3 < 4 && (double)(DOWNTIME_AIM_MS << (stuck_rounds / 3)) < target)
                target = (double)(DOWNTIME_AIM_MS << (stuck_rounds / 3));
            log_debug("migration: round %u: %llu pages and %llu disk blocks dirty, %.0f MB/s, last pages %.1f ms, "
                      "aim %.0f ms, vCPUs slowed %d%%%s", round, (unsigned long long)dirty,
                      (unsigned long long)dblocks, rate / 1e6, pages_ms, target, throttle,
                      drained ? " (after draining)" : exhausted ? " (the throttle is exhausted)" : "");
            if (pages_ms <= target) {
                if (drained)
                    return 0;
                /* Before pausing, let the destination take in what the
                 * sockets still hold, then look at the dirty pages again.
                 * The throttle stays on: lifted here, the guest dirtied at
                 * full speed for the drain's few ms, which the pause then
                 * had to send (at 25% dirty about 2.5 ms of link). The
                 * pause ends a throttle sleep at once. */
                uint64_t t_drain = now_ns();
                if (sender_sync(&e->s, err, errlen) < 0)
                    return -1;
                log_debug("migration: drained in %.1f ms", (now_ns() - t_drain) / 1e6);
                drained = true;
                round--;
                continue;
            }
            /* Auto-converge: from round 2, a guest whose last pages miss
             * the target and are stuck is slowed, more each such round.
             * One that converges on its own (or once slowed enough) is left
             * alone: a slowed service is slow for its users too, so no more
             * than convergence needs. */
            if (p->auto_converge && round >= THROTTLE_FROM_ROUND && pages_ms > target && stuck &&
                throttle < THROTTLE_MAX) {
                throttle = throttle_next(throttle, mg->s.dirty_rate * PAGE_SIZE, throughput);
                pthread_mutex_lock(&mg->lock);
                mg->s.throttle_pct = throttle;
                pthread_mutex_unlock(&mg->lock);
            }
            if (throttle)
                throttle_set(e->s.vm, throttle);
            bool out_of_rounds = p->max_rounds && round >= p->max_rounds;
            bool out_of_time = p->max_time_ms && (t_sync - t_start) / 1000000 >= p->max_time_ms;
            if (out_of_rounds || out_of_time) {
                if (p->force) {
                    log_warn("migration: %s reached; switching over with a predicted pause of %.0f ms",
                             out_of_rounds ? "round limit" : "time limit", predicted);
                    return 0;
                }
                snprintf(err, errlen,
                         "not converging after %u rounds (%.1f s): the guest dirties %.0f MB/s, the link "
                         "moves %.0f MB/s, predicted pause %.0f ms (the last pages %.0f ms > target %llu ms), vCPUs slowed "
                         "%d%% (raise downtime_ms or bandwidth, or use force)",
                         round, (double)(t_sync - t_start) / 1e9, mg->s.dirty_rate * PAGE_SIZE / 1e6,
                         throughput / 1e6, predicted, pages_ms, (unsigned long long)p->downtime_ms, throttle);
                return -1;
            }
        }
        t_prev_sync = t_sync;
        drained = false;
        struct page_stats before, after;
        sender_totals(&e->s, &before);
        uint64_t t0 = now_ns();
        if (sender_round(&e->s, round == 0, false, tick, err, errlen) < 0)
            return -1;
        sender_totals(&e->s, &after);
        /* page and disk data per second: what the pause will have to move */
        uint64_t sent = after.data_bytes + after.disk_bytes - before.data_bytes - before.disk_bytes,
                 dt = now_ns() - t0;
        /* small rounds say little about the link (much of one still sits
         * in the socket buffers when it "ends"): keep the previous estimate */
        if (dt && (sent >= RATE_MIN_ROUND || throughput == 0))
            throughput = (double)sent * 1e9 / (double)dt;
        publish(e);
        pthread_mutex_lock(&mg->lock);
        mg->s.throughput = throughput;
        pthread_mutex_unlock(&mg->lock);
    }
}

/* Each disk's digest (shared-nothing), read from the quiet image. */
static int send_disk_digests(struct engine *e, char *err, size_t errlen)
{
    for (int d = 0; e->s.disks && d < e->s.vm->cfg.ndisks; d++) {
        struct virtio_blk *b = e->s.vm->blk[d];
        struct buf m = { 0 };
        int rc = disk_digest_encode(&m, (uint32_t)d, b->fd, b->id.size, err, errlen);
        if (rc == 0)
            rc = send_ctl(e, MSG_DISK_DIGEST, m.data, m.len, err, errlen);
        buf_free(&m);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The source's digest of its (paused) RAM in a DIGEST message, after the
 * disks' (the destination answers once, for all). */
static int send_digest(struct engine *e, char *err, size_t errlen)
{
    if (send_disk_digests(e, err, errlen) < 0)
        return -1;
    const struct guest_mem *mem = &e->s.vm->mem;
    size_t n = digest_count(mem, DIGEST_CHUNK);
    uint64_t *dig = malloc(n * sizeof(*dig));
    struct buf b = { 0 };
    int rc = -1;
    if (!dig || digest_compute(mem, DIGEST_CHUNK, dig) < 0 || digest_encode(&b, DIGEST_CHUNK, dig, n) < 0)
        snprintf(err, errlen, "cannot compute the memory digest");
    else
        rc = send_ctl(e, MSG_DIGEST, b.data, b.len, err, errlen);
    buf_free(&b);
    free(dig);
    return rc;
}

/* After the hand-over: the frozen RAM's digest against the pages the
 * destination received. The VM runs there whatever the answer; a mismatch
 * is an alarm for the operator, on both sides. */
static void verify_after(struct engine *e)
{
    struct migration *mg = e->s.mg;
    char err[256] = "", reason[200] = "", res[200];
    uint64_t t0 = now_ns();
    int st = send_digest(e, err, sizeof(err)) < 0 ? -1 : read_ack(e, reason, sizeof(reason), err, sizeof(err));
    if (st == ACK_VERIFIED) {
        snprintf(res, sizeof(res), "match");
    } else if (st == ACK_MISMATCH) {
        snprintf(res, sizeof(res), "MISMATCH: %s", reason);
        bool disk = !strncmp(reason, "disk", 4);
        log_err("%s DIGEST MISMATCH after the hand-over: %s; the VM runs on the destination with "
                "%s that differs from this host's copy", disk ? "DISK" : "MEMORY", reason, disk ? "a disk" : "memory");
    } else {
        snprintf(res, sizeof(res), "unknown: %s", st >= 0 ? "unexpected answer" : err);
        log_warn("migration: the digest could not be compared after the hand-over: %s", res + 9);
    }
    pthread_mutex_lock(&mg->lock);
    snprintf(mg->s.verify_result, sizeof(mg->s.verify_result), "%s", res);
    mg->s.verify_ms = (now_ns() - t0) / 1000000;
    pthread_mutex_unlock(&mg->lock);
}

/* Pause, send the rest and the state, and hand over. Returns 0 when the
 * destination runs the VM; -1 when it cannot (the caller resumes here); -2
 * when COMMIT went out but no confirmation came back (in doubt). */
static int switchover(struct engine *e, uint64_t *t_pause, char *err, size_t errlen)
{
    struct vm *vm = e->s.vm;
    struct migration *mg = e->s.mg;
    set_phase(mg, MIG_SWITCHOVER);
    if (e->auto_state == AUTO_TRIAL)   /* an unfinished trial proved nothing */
        atomic_store(&e->s.codec, atomic_load(&e->s.codec) == CODEC_ZSTD ? CODEC_LZ4 : CODEC_NONE);
    *t_pause = now_ns();
    vm_pause(vm);
    uint64_t t_paused = now_ns(), t_saved = 0, t_final = 0, t_state = 0, t_complete = 0;
    struct page_stats before, after;
    sender_totals(&e->s, &before);
    struct buf state = { 0 };
    int rc = -1;
    /* State first: saving drains the devices' in-flight I/O (a disk read
     * still landing in guest RAM), and what that writes must be in the last
     * dirty pass. The stream still carries the pages before the state. */
    if (sections_save(vm, &state, err, errlen) < 0)
        goto fail;
    t_saved = now_ns();
    if (dirty_log_fetch(&e->s.d, err, errlen) < 0 || sender_round(&e->s, false, true, NULL, err, errlen) < 0)
        goto fail;
    t_final = now_ns();
    if (send_ctl(e, MSG_STATE, state.data, state.len, err, errlen) < 0)
        goto fail;
    t_state = now_ns();
    if (mg->p.verify == VERIFY_STRICT) {
        if (send_digest(e, err, errlen) < 0)
            goto fail;
        pthread_mutex_lock(&mg->lock);
        mg->s.verify_ms = (now_ns() - t_state) / 1000000;
        pthread_mutex_unlock(&mg->lock);
    }
    if (send_ctl(e, MSG_COMPLETE, NULL, 0, err, errlen) < 0)
        goto fail;
    t_complete = now_ns();
    sender_totals(&e->s, &after);
    pthread_mutex_lock(&mg->lock);
    mg->s.final_pages = after.pages - before.pages;
    pthread_mutex_unlock(&mg->lock);
    publish(e);

    /* The destination loads everything (strict: and compares), then says READY. */
    char reason[200] = "";
    int st = read_ack(e, reason, sizeof(reason), err, errlen);
    if (st != ACK_READY) {
        if (st == ACK_REJECTED)
            snprintf(err, errlen, "destination rejected the VM: %s", reason);
        else if (st >= 0)
            snprintf(err, errlen, "unexpected ACK status %d after COMPLETE", st);
        goto fail;   /* the destination cannot run without COMMIT: resume here */
    }
    /* COMMIT hands the VM over. If it cannot be written the peer is gone and
     * never saw it; once written, only ACK(resumed) or an operator decides. */
    if (send_ctl(e, MSG_COMMIT, NULL, 0, err, errlen) < 0)
        goto fail;
    st = read_ack(e, reason, sizeof(reason), err, errlen);
    if (st == ACK_RESUMED) {
        uint64_t t_ack = now_ns();
        pthread_mutex_lock(&mg->lock);
        mg->s.pause_us = (t_paused - *t_pause) / 1000;
        mg->s.final_us = (t_final - t_saved) / 1000;
        mg->s.state_us = (t_saved - t_paused + t_state - t_final) / 1000;
        mg->s.ack_us = (t_ack - t_complete) / 1000;
        mg->s.downtime_ms = (t_ack - *t_pause) / 1000000;
        if (mg->p.verify == VERIFY_STRICT)
            snprintf(mg->s.verify_result, sizeof(mg->s.verify_result), "match (in the pause)");
        pthread_mutex_unlock(&mg->lock);
        rc = 0;
    } else {
        char why[256];
        snprintf(why, sizeof(why), "%s", st >= 0 ? "unexpected answer" : err);
        snprintf(err, errlen, "the VM was handed over (COMMIT sent) but the destination did not confirm "
                 "(%s): it stays paused here and may be running there; check the destination, then "
                 "`resume` here only if it does not run the VM", why);
        rc = -2;
    }
fail:
    buf_free(&state);
    return rc;
}

/* Shared-nothing: track every disk's writes from before the first extent
 * is read, so that no write escapes both the walk and the bitmap. */
static int track_disks(struct engine *e, char *err, size_t errlen)
{
    struct vm *vm = e->s.vm;
    uint64_t total = 0;
    for (int d = 0; e->s.disks && d < vm->cfg.ndisks; d++) {
        if (blk_track_start(vm->blk[d], err, errlen) < 0)
            return -1;
        total += blk_track_data_bytes(vm->blk[d]);
    }
    pthread_mutex_lock(&e->s.mg->lock);
    e->s.mg->s.disk_total = total;
    pthread_mutex_unlock(&e->s.mg->lock);
    return 0;
}

/* The link broke while we wrote: a destination that gave up (a full or
 * failing disk, a bad message) said why on stream 0 before it closed, and
 * that is the reason the operator needs, not "connection reset". */
static void explain_loss(struct engine *e, char *err, size_t errlen)
{
    struct chan *c = &e->s.st[0].ch;
    if ((!e->s.peer_spoke && !strstr(err, "connection to destination lost")) || c->fd < 0)
        return;
    struct timeval tv = { .tv_sec = 2 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char reason[200] = "", why[256] = "";
    int st = sender_read_ack(c, reason, sizeof(reason), why, sizeof(why));
    if (st == ACK_REJECTED)
        snprintf(err, errlen, "destination refused the VM: %s", reason);
    else if (st < 0 && !strncmp(why, "destination aborted", 19))
        snprintf(err, errlen, "%s", why);
}

static void *source_thread(void *arg)
{
    struct vm *vm = arg;
    struct migration *mg = &vm->mig;
    struct engine e = { .s = { .vm = vm, .mg = mg, .n = pick_streams(&mg->p) } };
    char err[512] = "";
    uint64_t t_start = now_ns(), t_pause = 0;
    int rc = -1;

    e.s.disks = mg->p.nstorage > 0;
    if (track_disks(&e, err, sizeof(err)) == 0 && connect_all(&e, err, sizeof(err)) == 0 &&
        dirty_log_start(&e.s.d, vm->kvm_fd, vm->fd, &vm->mem, err, sizeof(err)) == 0 &&
        sender_start(&e.s, err, sizeof(err)) == 0) {
        if (mg->p.compress != COMPRESS_AUTO)
            atomic_store(&e.s.codec, mg->p.compress);
        set_phase(mg, MIG_PRECOPY);
        if (precopy(&e, err, sizeof(err)) == 0)
            rc = switchover(&e, &t_pause, err, sizeof(err));
    }
    if (rc == 0 && mg->p.verify == VERIFY_AFTER)
        verify_after(&e);
    uint64_t t_end = now_ns();
    bool cancelled = atomic_load(&mg->cancel);
    if (rc == -1 && e.s.st[0].ch.fd >= 0) {
        char why[300];
        snprintf(why, sizeof(why), "source: %s", cancelled ? "cancelled by the operator" : err);
        msg_write(&e.s.st[0].ch, MSG_ABORT, why, (uint32_t)strlen(why));  /* best effort */
        chan_flush(&e.s.st[0].ch);
        if (!cancelled)
            explain_loss(&e, err, sizeof(err));
    }
    publish(&e);
    sender_close(&e.s);
    dirty_log_stop(&e.s.d);
    throttle_set(vm, 0);   /* before a failed migration resumes the VM: full speed again */
    for (int d = 0; e.s.disks && d < vm->cfg.ndisks; d++)
        blk_track_stop(vm->blk[d]);
    pthread_mutex_lock(&mg->lock);
    mg->s.total_ms = (t_end - t_start) / 1000000;
    mg->s.elapsed_ms = mg->s.total_ms;
    if (rc == 0) {
        mg->s.phase = MIG_COMPLETED;
        mg->s.remaining_pages = 0;
        mg->s.disk_dirty_blocks = 0;
        if (mg->p.verify == VERIFY_OFF)
            snprintf(mg->s.verify_result, sizeof(mg->s.verify_result), "off");
    } else {
        mg->s.phase = rc == -2 ? MIG_IN_DOUBT : cancelled ? MIG_CANCELLED : MIG_FAILED;
        snprintf(mg->s.error, sizeof(mg->s.error), "%s", cancelled ? "cancelled by the operator" : err);
    }
    struct mig_stats st = mg->s;
    pthread_mutex_unlock(&mg->lock);

    if (rc == 0) {
        log_info("migration to %s completed: downtime %llu ms (stop %.1f, last pages %.1f, state %.1f, "
                 "destination %.1f ms), total %llu ms, %llu rounds, %d stream(s), %s, %llu MiB sent "
                 "(%llu MiB of pages, %s), %llu pages (%llu zero, %llu in the pause), verify: %s, "
                 "vCPUs slowed up to %d%%",
                 mg->p.uri, (unsigned long long)st.downtime_ms, st.pause_us / 1e3, st.final_us / 1e3,
                 st.state_us / 1e3, st.ack_us / 1e3, (unsigned long long)st.total_ms,
                 (unsigned long long)st.round, st.streams, st.cipher,
                 (unsigned long long)(st.bytes_sent >> 20), (unsigned long long)(st.data_bytes >> 20),
                 page_codec_name(st.codec), (unsigned long long)st.pages_sent,
                 (unsigned long long)st.zero_pages, (unsigned long long)st.final_pages, st.verify_result,
                 st.throttle_pct);
        vm_request_stop(vm, STOP_MIGRATED, 0);
    } else if (rc == -2) {
        log_err("migration in doubt: %s", st.error);
    } else {
        if (t_pause)
            vm_resume(vm);  /* the switchover paused it */
        log_warn("migration to %s %s: %s; the VM keeps running here", mg->p.uri,
                 cancelled ? "cancelled" : "failed", st.error);
    }
    return NULL;
}
int migration_start(struct vm *vm, const struct mig_params *p, char *err, size_t errlen)
{
    struct migration *mg = &vm->mig;
    pthread_mutex_lock(&mg->lock);
    enum mig_phase ph = mg->s.phase;
    bool busy = ph == MIG_SETUP || ph == MIG_PRECOPY || ph == MIG_SWITCHOVER || ph == MIG_IN_DOUBT;
    pthread_mutex_unlock(&mg->lock);
    if (busy) {
        snprintf(err, errlen, "a migration is already %s", mig_phase_name(ph));
        return -1;
    }
    if (vm->state != VM_RUNNING) {
        snprintf(err, errlen, "VM is %s: only a running VM can be migrated", vm_state_name(vm->state));
        return -1;
    }
    migration_reap(vm);
    pthread_mutex_lock(&mg->lock);
    mg->p = *p;
    memset(&mg->s, 0, sizeof(mg->s));
    mg->s.phase = MIG_SETUP;
    mg->t_start_ns = now_ns();
    atomic_store(&mg->cancel, false);
    pthread_mutex_unlock(&mg->lock);
    if (pthread_create(&mg->thread, NULL, source_thread, vm) != 0) {
        set_phase(mg, MIG_FAILED);
        snprintf(err, errlen, "cannot start the migration thread");
        return -1;
    }
    mg->thread_live = true;
    log_info("migrating to %s (downtime target %llu ms)", p->uri, (unsigned long long)p->downtime_ms);
    return 0;
}
int migration_cancel(struct vm *vm, char *err, size_t errlen)
{
    struct migration *mg = &vm->mig;
    pthread_mutex_lock(&mg->lock);
    int rc = 0;
    if (mg->s.phase == MIG_SETUP || mg->s.phase == MIG_PRECOPY) {
        /* the thread notices within one batch, tells the destination (ABORT)
         * and keeps the VM running here */
        atomic_store(&mg->cancel, true);
    } else {
        snprintf(err, errlen, mg->s.phase == MIG_SWITCHOVER
                 ? "too late to cancel: the switchover is under way"
                 : "no migration in progress (%s)", mig_phase_name(mg->s.phase));
        rc = -1;
    }
    pthread_mutex_unlock(&mg->lock);
    return rc;
}
void migration_reap(struct vm *vm)
{
    struct migration *mg = &vm->mig;
    if (mg->thread_live) {
        pthread_join(mg->thread, NULL);
        mg->thread_live = false;
    }
}

/* The destination's view of the migration that brought this VM. */
static void incoming_status(struct vm *vm, json_object *o)
{
    struct migration *mg = &vm->mig;
    pthread_mutex_lock(&mg->lock);
    struct mig_incoming in = mg->in;
    pthread_mutex_unlock(&mg->lock);
    if (!in.done)
        return;
    json_object *i = json_object_new_object();
    json_object_object_add(i, "streams", json_object_new_int(in.streams));
    json_object_object_add(i, "cipher", json_object_new_string(in.cipher));
    json_object_object_add(i, "rtt_ms", json_object_new_double(in.rtt_us / 1000.0));
    json_object *peers = json_object_new_array();
    for (int k = 0; k < in.streams && k < MIG_MAX_STREAMS; k++)
        json_object_array_add(peers, json_object_new_string(in.peers[k]));
    json_object_object_add(i, "peers", peers);
    json_object_object_add(i, "pages", json_object_new_int64((int64_t)in.pages));
    json_object_object_add(i, "zero_pages", json_object_new_int64((int64_t)in.zero_pages));
    json_object_object_add(i, "data_bytes", json_object_new_int64((int64_t)in.data_bytes));
    json_object_object_add(i, "wire_bytes", json_object_new_int64((int64_t)in.wire_bytes));
    json_object_object_add(i, "disk_bytes", json_object_new_int64((int64_t)in.disk_bytes));
    json_object_object_add(i, "verify_result", json_object_new_string(in.verify_result));
    json_object_object_add(o, "incoming", i);
}

void migration_status(struct vm *vm, json_object *o)
{
    struct migration *mg = &vm->mig;
    pthread_mutex_lock(&mg->lock);
    struct mig_stats s = mg->s;
    struct mig_params p = mg->p;
    if (s.phase == MIG_SETUP || s.phase == MIG_PRECOPY || s.phase == MIG_SWITCHOVER)
        s.elapsed_ms = (now_ns() - mg->t_start_ns) / 1000000;
    pthread_mutex_unlock(&mg->lock);
    json_object_object_add(o, "phase", json_object_new_string(mig_phase_name(s.phase)));
    incoming_status(vm, o);
    if (s.phase == MIG_NONE)
        return;
    json_object_object_add(o, "destination", json_object_new_string(p.uri));
    json_object_object_add(o, "round", json_object_new_int64(s.round));
    json_object_object_add(o, "bytes_sent", json_object_new_int64((int64_t)s.bytes_sent));
    json_object_object_add(o, "pages_sent", json_object_new_int64((int64_t)s.pages_sent));
    json_object_object_add(o, "zero_pages", json_object_new_int64((int64_t)s.zero_pages));
    json_object_object_add(o, "ram_bytes", json_object_new_int64((int64_t)vm->mem.ram_size));
    json_object_object_add(o, "scanned_bytes", json_object_new_int64((int64_t)(s.scanned_pages * PAGE_SIZE)));
    json_object_object_add(o, "remaining_bytes", json_object_new_int64((int64_t)(s.remaining_pages * PAGE_SIZE)));
    json_object_object_add(o, "throughput_mbps", json_object_new_double(s.throughput * 8 / 1e6));
    json_object_object_add(o, "dirty_rate_mbps", json_object_new_double(s.dirty_rate * PAGE_SIZE * 8 / 1e6));
    json_object_object_add(o, "predicted_downtime_ms", json_object_new_double(s.predicted_downtime_ms));
    json_object_object_add(o, "throttle_pct", json_object_new_int(s.throttle_pct));
    json_object_object_add(o, "downtime_target_ms", json_object_new_int64((int64_t)p.downtime_ms));
    json_object_object_add(o, "elapsed_ms", json_object_new_int64((int64_t)s.elapsed_ms));
    json_object_object_add(o, "streams", json_object_new_int(s.streams));
    json_object_object_add(o, "cipher", json_object_new_string(s.cipher));
    json_object_object_add(o, "rtt_ms", json_object_new_double(s.rtt_us / 1000.0));
    if (s.window_note[0])
        json_object_object_add(o, "tcp_window", json_object_new_string(s.window_note));
    if (p.nstorage) {
        json_object *to = json_object_new_array();
        for (int d = 0; d < p.nstorage; d++)
            json_object_array_add(to, json_object_new_string(p.storage_to[d]));
        json_object_object_add(o, "storage_to", to);
        json_object_object_add(o, "disk_total_bytes", json_object_new_int64((int64_t)s.disk_total));
        json_object_object_add(o, "disk_bytes_sent", json_object_new_int64((int64_t)s.disk_bytes));
        json_object_object_add(o, "disk_dirty_blocks", json_object_new_int64((int64_t)s.disk_dirty_blocks));
        json_object_object_add(o, "disk_block_size", json_object_new_int64(DISK_BLOCK));
    }
    json_object_object_add(o, "compression", json_object_new_string(page_codec_name(s.codec)));
    json_object_object_add(o, "data_bytes", json_object_new_int64((int64_t)s.data_bytes));
    json_object_object_add(o, "compression_ratio",
                           json_object_new_double(s.data_bytes ? (double)s.bytes_sent / (double)s.data_bytes : 1));
    json_object_object_add(o, "verify", json_object_new_string(
        p.verify == VERIFY_OFF ? "off" : p.verify == VERIFY_STRICT ? "strict" : "after"));
    if (s.verify_result[0])
        json_object_object_add(o, "verify_result", json_object_new_string(s.verify_result));
    if (s.phase == MIG_COMPLETED) {
        json_object_object_add(o, "downtime_ms", json_object_new_int64((int64_t)s.downtime_ms));
        json_object_object_add(o, "verify_ms", json_object_new_int64((int64_t)s.verify_ms));
        json_object *b = json_object_new_object();
        json_object_object_add(b, "stop_vcpus", json_object_new_int64((int64_t)s.pause_us));
        json_object_object_add(b, "last_pages", json_object_new_int64((int64_t)s.final_us));
        json_object_object_add(b, "state", json_object_new_int64((int64_t)s.state_us));
        json_object_object_add(b, "verify", json_object_new_int64(p.verify == VERIFY_STRICT ? (int64_t)s.verify_ms * 1000 : 0));
        json_object_object_add(b, "destination", json_object_new_int64((int64_t)s.ack_us));
        json_object_object_add(o, "pause_breakdown_us", b);
        json_object_object_add(o, "total_ms", json_object_new_int64((int64_t)s.total_ms));
        json_object_object_add(o, "final_pages", json_object_new_int64((int64_t)s.final_pages));
    }
    if (s.error[0])
        json_object_object_add(o, "error", json_object_new_string(s.error));
}
