/* Source side of pre-copy live migration.
 *
 * Round 0 copies all RAM while the guest runs; each later round copies what
 * the guest dirtied meanwhile. After each dirty sync the engine predicts the
 * pause needed to send the rest (dirty bytes / measured throughput); once that
 * meets the target it pauses the vCPUs, sends the last pages, the state and a
 * memory digest, and waits for the destination's ACK(resumed). Until that ACK
 * the VM is ours: every failure resumes it here. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migration/digest.h"
#include "migration/dirty.h"
#include "migration/net.h"
#include "migration/sections.h"
#include "migration/stream.h"
#include "vmm/log.h"
#include "vmm/vm.h"

#define BATCH_BYTES   (1u << 20)      /* MEM_PAGES payload per message */
#define CLEAR_CHUNK   16384ull        /* pages re-protected at once (64 MiB) */
#define ACK_TIMEOUT_S 60              /* for the destination's answers at switchover */
#define CONNECT_TIMEOUT_MS 10000
#define SEND_TIMEOUT_S 10

struct sender {
    struct vm *vm;
    struct migration *mg;
    int fd;
    struct buf batch;
    struct stream_stats st;
    uint64_t wire_bytes;              /* everything written, headers included */
    uint64_t bw_t0, bw_bytes;         /* bandwidth-cap window */
    uint64_t scanned;                 /* round 0 progress, in pages */
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
    p->verify = true;
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

static void publish(struct sender *s)
{
    pthread_mutex_lock(&s->mg->lock);
    s->mg->s.bytes_sent = s->wire_bytes;
    s->mg->s.pages_sent = s->st.pages;
    s->mg->s.zero_pages = s->st.zero_pages;
    s->mg->s.scanned_pages = s->scanned;
    pthread_mutex_unlock(&s->mg->lock);
}

/* Sleep as needed to keep the average rate under the cap (1 s windows). */
static void throttle(struct sender *s, uint64_t cap)
{
    if (!cap)
        return;
    uint64_t t = now_ns();
    if (t - s->bw_t0 >= 1000000000ull) {
        s->bw_t0 = t;
        s->bw_bytes = 0;
        return;
    }
    uint64_t due = s->bw_t0 + s->bw_bytes * 1000000000ull / cap;
    /* sleep in short slices so a cancel is noticed at once */
    while ((t = now_ns()) < due && !atomic_load(&s->mg->cancel)) {
        uint64_t left = due - t < 10000000ull ? due - t : 10000000ull;
        nanosleep(&(struct timespec){ .tv_nsec = (long)left }, NULL);
    }
}

static int send_msg(struct sender *s, uint16_t type, const void *p, size_t len, char *err, size_t errlen)
{
    int r = msg_write(s->fd, type, p, (uint32_t)len);
    if (r < 0) {
        snprintf(err, errlen, "connection to destination lost while sending %s: %s",
                 msg_type_name(type), strerror(-r));
        return -1;
    }
    s->wire_bytes += MSG_HEADER_SIZE + len;
    s->bw_bytes += MSG_HEADER_SIZE + len;
    return 0;
}

static int flush_batch(struct sender *s, char *err, size_t errlen)
{
    if (!s->batch.len)
        return 0;
    int r = send_msg(s, MSG_MEM_PAGES, s->batch.data, s->batch.len, err, errlen);
    s->batch.len = 0;
    publish(s);
    throttle(s, s->mg->p.bandwidth);
    return r;
}

static int send_page(struct sender *s, uint64_t gpa, const void *page, char *err, size_t errlen)
{
    if (atomic_load(&s->mg->cancel)) {
        snprintf(err, errlen, "cancelled by the operator");
        return -1;
    }
    int r = pages_batch_add(&s->batch, gpa, page, &s->st);
    if (r == -E2BIG) {
        if (flush_batch(s, err, errlen) < 0)
            return -1;
        r = pages_batch_add(&s->batch, gpa, page, &s->st);
    }
    if (r < 0) {
        snprintf(err, errlen, "cannot queue page 0x%llx: %s", (unsigned long long)gpa, strerror(-r));
        return -1;
    }
    return s->batch.len >= BATCH_BYTES ? flush_batch(s, err, errlen) : 0;
}

/* Send every page marked dirty in the fetched log, re-protecting each chunk
 * just before reading it. In round 0 all-zero pages are skipped: the
 * destination's RAM starts zeroed. Returns 0, or -1 (error or cancel). */
static int send_dirty(struct sender *s, struct dirty_log *d, bool round0, char *err, size_t errlen)
{
    const struct guest_mem *m = d->mem;
    for (int slot = 0; slot < m->nregions; slot++) {
        for (uint64_t first = 0; first < d->npages[slot]; first += CLEAR_CHUNK) {
            uint64_t n = d->npages[slot] - first < CLEAR_CHUNK ? d->npages[slot] - first : CLEAR_CHUNK;
            bool any = false;
            for (uint64_t w = first / 64; w < (first + n + 63) / 64 && !any; w++)
                any = d->bitmap[slot][w] != 0;
            if (!any)
                continue;
            if (dirty_log_clear(d, slot, first, n, err, errlen) < 0)
                return -1;
            for (uint64_t pg = first; pg < first + n; pg++) {
                if (!dirty_test(d, slot, pg))
                    continue;
                const uint8_t *p = m->regions[slot].hva + (pg << PAGE_SHIFT);
                if (round0 && page_is_zero(p))
                    continue;
                if (send_page(s, m->regions[slot].gpa + (pg << PAGE_SHIFT), p, err, errlen) < 0)
                    return -1;
            }
            dirty_log_sent(d, slot, first, n);
            if (round0) {
                s->scanned += n;
                publish(s);
            }
        }
    }
    return flush_batch(s, err, errlen);
}

/* Read the destination's ACK; returns its status, or -1 (err set; *timeout
 * tells a silent peer from a closed one). */
static int read_ack(int fd, bool *timeout, char *reason, size_t rlen, char *err, size_t errlen)
{
    struct msg m = { 0 };
    uint32_t status;
    *timeout = false;
    if (msg_read(fd, &m, err, errlen) < 0) {
        *timeout = m.error == MSG_E_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
        return -1;
    }
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

static int handshake(struct sender *s, char *err, size_t errlen)
{
    char *cfg = vm_config_json(s->vm);
    struct buf b = { 0 };
    int r = cfg && hello_encode(&b, cfg) == 0 ? send_msg(s, MSG_HELLO, b.data, b.len, err, errlen) : -1;
    if (!cfg)
        snprintf(err, errlen, "out of memory");
    free(cfg);
    buf_free(&b);
    if (r < 0)
        return -1;
    bool timeout;
    char reason[200] = "";
    int st = read_ack(s->fd, &timeout, reason, sizeof(reason), err, errlen);
    if (st == ACK_READY)
        return 0;
    if (st == ACK_REJECTED)
        snprintf(err, errlen, "destination refused the VM: %s", reason);
    else if (st >= 0)
        snprintf(err, errlen, "unexpected ACK status %d from destination", st);
    return -1;
}

/* Pre-copy rounds until the predicted pause meets the target. 0 = switch over. */
static int precopy(struct sender *s, struct dirty_log *d, char *err, size_t errlen)
{
    struct migration *mg = s->mg;
    const struct mig_params *p = &mg->p;
    uint64_t t_start = now_ns(), t_prev_sync = 0;
    double throughput = 0;
    for (uint32_t round = 0;; round++) {
        uint64_t t_sync = now_ns();
        int64_t dirty = dirty_log_fetch(d, err, errlen);
        if (dirty < 0)
            return -1;
        if (round > 0) {
            double secs = (double)(t_sync - t_prev_sync) / 1e9;
            double predicted = throughput > 0 ? (double)dirty * PAGE_SIZE / throughput * 1000.0 : 1e9;
            pthread_mutex_lock(&mg->lock);
            mg->s.round = round;
            mg->s.remaining_pages = (uint64_t)dirty;
            mg->s.dirty_rate = secs > 0 ? (double)dirty / secs : 0;
            mg->s.predicted_downtime_ms = predicted;
            mg->s.elapsed_ms = (t_sync - t_start) / 1000000;
            pthread_mutex_unlock(&mg->lock);
            if (predicted <= (double)p->downtime_ms)
                return 0;
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
                         "moves %.0f MB/s, predicted pause %.0f ms > target %llu ms; the VM keeps running here "
                         "(raise downtime_ms or bandwidth, or use force)",
                         round, (double)(t_sync - t_start) / 1e9, mg->s.dirty_rate * PAGE_SIZE / 1e6,
                         throughput / 1e6, predicted, (unsigned long long)p->downtime_ms);
                return -1;
            }
        }
        t_prev_sync = t_sync;
        uint64_t b0 = s->wire_bytes, t0 = now_ns();
        if (send_dirty(s, d, round == 0, err, errlen) < 0)
            return -1;
        uint64_t sent = s->wire_bytes - b0, dt = now_ns() - t0;
        /* small rounds say little about the link: keep the previous estimate */
        if (dt && (sent >= (4u << 20) || throughput == 0))
            throughput = (double)sent * 1e9 / (double)dt;
        pthread_mutex_lock(&mg->lock);
        mg->s.throughput = throughput;
        pthread_mutex_unlock(&mg->lock);
    }
}

/* Pause, send the rest and the state, and hand over. Returns 0 when the
 * destination runs the VM; -1 when it cannot (the caller resumes here); -2
 * when COMMIT went out but no confirmation came back (in doubt). */
static int switchover(struct sender *s, struct dirty_log *d, uint64_t *t_pause, char *err, size_t errlen)
{
    struct vm *vm = s->vm;
    struct migration *mg = s->mg;
    set_phase(mg, MIG_SWITCHOVER);
    *t_pause = now_ns();
    vm_pause(vm);
    uint64_t t_paused = now_ns(), t_saved = 0, t_final = 0, t_state = 0, t_complete = 0;
    uint64_t pages_before = s->st.pages;
    struct buf state = { 0 };
    uint64_t *dig = NULL;
    int rc = -1;
    /* State first: saving drains the devices' in-flight I/O (a disk read
     * still landing in guest RAM), and what that writes must be in the last
     * dirty pass. The stream still carries the pages before the state. */
    if (sections_save(vm, &state, err, errlen) < 0)
        goto fail;
    t_saved = now_ns();
    if (dirty_log_fetch(d, err, errlen) < 0 || send_dirty(s, d, false, err, errlen) < 0)
        goto fail;
    t_final = now_ns();
    if (send_msg(s, MSG_STATE, state.data, state.len, err, errlen) < 0)
        goto fail;
    t_state = now_ns();
    if (mg->p.verify) {
        uint64_t t0 = now_ns();
        size_t n = digest_count(&vm->mem, DIGEST_CHUNK);
        struct buf b = { 0 };
        if (!(dig = malloc(n * sizeof(*dig))) || digest_compute(&vm->mem, DIGEST_CHUNK, dig) < 0 ||
            digest_encode(&b, DIGEST_CHUNK, dig, n) < 0) {
            snprintf(err, errlen, "cannot compute the memory digest");
            buf_free(&b);
            goto fail;
        }
        int r = send_msg(s, MSG_DIGEST, b.data, b.len, err, errlen);
        buf_free(&b);
        if (r < 0)
            goto fail;
        pthread_mutex_lock(&mg->lock);
        mg->s.verify_ms = (now_ns() - t0) / 1000000;
        pthread_mutex_unlock(&mg->lock);
    }
    if (send_msg(s, MSG_COMPLETE, NULL, 0, err, errlen) < 0)
        goto fail;
    t_complete = now_ns();
    pthread_mutex_lock(&mg->lock);
    mg->s.final_pages = s->st.pages - pages_before;
    pthread_mutex_unlock(&mg->lock);
    publish(s);

    /* The destination verifies and loads everything, then says READY. */
    struct timeval tv = { .tv_sec = ACK_TIMEOUT_S };
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    bool timeout;
    char reason[200] = "";
    int st = read_ack(s->fd, &timeout, reason, sizeof(reason), err, errlen);
    if (st != ACK_READY) {
        if (st == ACK_REJECTED)
            snprintf(err, errlen, "destination rejected the VM: %s", reason);
        else if (st >= 0)
            snprintf(err, errlen, "unexpected ACK status %d after COMPLETE", st);
        goto fail;   /* the destination cannot run without COMMIT: resume here */
    }
    /* COMMIT hands the VM over. If it cannot be written the peer is gone and
     * never saw it; once written, only ACK(resumed) or an operator decides. */
    if (send_msg(s, MSG_COMMIT, NULL, 0, err, errlen) < 0)
        goto fail;
    st = read_ack(s->fd, &timeout, reason, sizeof(reason), err, errlen);
    if (st == ACK_RESUMED) {
        uint64_t t_ack = now_ns();
        pthread_mutex_lock(&mg->lock);
        mg->s.pause_us = (t_paused - *t_pause) / 1000;
        mg->s.final_us = (t_final - t_saved) / 1000;
        mg->s.state_us = (t_saved - t_paused + t_state - t_final) / 1000;
        mg->s.ack_us = (t_ack - t_complete) / 1000;
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
    free(dig);
    buf_free(&state);
    return rc;
}

static void *source_thread(void *arg)
{
    struct vm *vm = arg;
    struct migration *mg = &vm->mig;
    struct sender s = { .vm = vm, .mg = mg, .fd = -1, .bw_t0 = now_ns() };
    struct dirty_log d = { 0 };
    char err[512] = "";
    uint64_t t_start = now_ns(), t_pause = 0;
    int rc = -1;

    s.fd = net_connect(mg->p.uri, CONNECT_TIMEOUT_MS, err, sizeof(err));
    if (s.fd >= 0) {
        /* a destination that stops reading must not hold the VM (or a
         * cancel) hostage: a send blocked this long fails */
        struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };
        setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        tv.tv_sec = ACK_TIMEOUT_S;
        setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    pthread_mutex_lock(&mg->lock);
    mg->fd = s.fd;
    pthread_mutex_unlock(&mg->lock);
    if (s.fd >= 0 && handshake(&s, err, sizeof(err)) == 0 &&
        dirty_log_start(&d, vm->kvm_fd, vm->fd, &vm->mem, err, sizeof(err)) == 0) {
        set_phase(mg, MIG_PRECOPY);
        if (precopy(&s, &d, err, sizeof(err)) == 0)
            rc = switchover(&s, &d, &t_pause, err, sizeof(err));
    }
    uint64_t t_end = now_ns();
    bool cancelled = atomic_load(&mg->cancel);
    if (rc == -1 && s.fd >= 0) {
        char why[300];
        snprintf(why, sizeof(why), "source: %s", cancelled ? "cancelled by the operator" : err);
        msg_write(s.fd, MSG_ABORT, why, (uint32_t)strlen(why));  /* best effort */
    }
    dirty_log_stop(&d);
    pthread_mutex_lock(&mg->lock);
    if (mg->fd >= 0)
        close(mg->fd);
    mg->fd = -1;
    mg->s.total_ms = (t_end - t_start) / 1000000;
    mg->s.elapsed_ms = mg->s.total_ms;
    mg->s.bytes_sent = s.wire_bytes;
    if (rc == 0) {
        mg->s.phase = MIG_COMPLETED;
        mg->s.downtime_ms = (t_end - t_pause) / 1000000;
        mg->s.remaining_pages = 0;
    } else {
        mg->s.phase = rc == -2 ? MIG_IN_DOUBT : cancelled ? MIG_CANCELLED : MIG_FAILED;
        snprintf(mg->s.error, sizeof(mg->s.error), "%s", cancelled ? "cancelled by the operator" : err);
    }
    struct mig_stats st = mg->s;
    pthread_mutex_unlock(&mg->lock);
    buf_free(&s.batch);

    if (rc == 0) {
        log_info("migration to %s completed: downtime %llu ms (stop %.1f, last pages %.1f, state %.1f, "
                 "verify %llu, destination %.1f ms), total %llu ms, "
                 "%llu rounds, %llu MiB sent, %llu pages (%llu zero, %llu in the pause)",
                 mg->p.uri, (unsigned long long)st.downtime_ms, st.pause_us / 1e3, st.final_us / 1e3,
                 st.state_us / 1e3, (unsigned long long)st.verify_ms, st.ack_us / 1e3,
                 (unsigned long long)st.total_ms, (unsigned long long)st.round,
                 (unsigned long long)(st.bytes_sent >> 20), (unsigned long long)st.pages_sent,
                 (unsigned long long)st.zero_pages, (unsigned long long)st.final_pages);
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
    json_object_object_add(o, "downtime_target_ms", json_object_new_int64((int64_t)p.downtime_ms));
    json_object_object_add(o, "elapsed_ms", json_object_new_int64((int64_t)s.elapsed_ms));
    if (s.phase == MIG_COMPLETED) {
        json_object_object_add(o, "downtime_ms", json_object_new_int64((int64_t)s.downtime_ms));
        json_object_object_add(o, "verify_ms", json_object_new_int64((int64_t)s.verify_ms));
        json_object *b = json_object_new_object();
        json_object_object_add(b, "stop_vcpus", json_object_new_int64((int64_t)s.pause_us));
        json_object_object_add(b, "last_pages", json_object_new_int64((int64_t)s.final_us));
        json_object_object_add(b, "state", json_object_new_int64((int64_t)s.state_us));
        json_object_object_add(b, "verify", json_object_new_int64((int64_t)s.verify_ms * 1000));
        json_object_object_add(b, "destination", json_object_new_int64((int64_t)s.ack_us));
        json_object_object_add(o, "pause_breakdown_us", b);
        json_object_object_add(o, "total_ms", json_object_new_int64((int64_t)s.total_ms));
        json_object_object_add(o, "final_pages", json_object_new_int64((int64_t)s.final_pages));
    }
    if (s.error[0])
        json_object_object_add(o, "error", json_object_new_string(s.error));
}
