/* Destination: receive one VM. Everything that arrives is validated before
 * use; the VM's vCPUs start only after every stream delivered its pages,
 * the state loaded into KVM and the source handed the VM over (COMMIT).
 * Each stream has a thread that reads its pages straight into guest RAM;
 * stream 0, read here, also carries the control messages.
 *
 * Shared-nothing (HELLO's disks carry "copy_to"): each image is received into
 * COPY_TO.ferry-partial, which the VM's disk opens; it becomes COPY_TO only
 * once the VM is ours (COMMIT), and a migration that fails before removes it,
 * so COPY_TO never names a half-received image. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/tls.h"
#include "devices/blk_move.h"
#include "devices/virtio_blk.h"
#include "migration/digest.h"
#include "migration/disks.h"
#include "migration/net.h"
#include "migration/pages.h"
#include "migration/sections.h"
#include "migration/stream.h"
#include "vmm/log.h"
#include "vmm/vm.h"

#define JOIN_TIMEOUT_MS 10000         /* for the other streams after HELLO */
#define DIGEST_TIMEOUT_S 120          /* for the source's digest after the hand-over */
#define PEER_TIMEOUT_S 30             /* for a new connection's handshake and first message */
#define WAKE_MS 100                   /* stream 0's reader looks at the page streams */
#define PEER_GRACE_MS 2000            /* see wait_control() */
#define DRAIN_MS 3000                 /* after a failure: for the source to read why and close */

struct receiver;

struct rstream {
    struct receiver *r;
    int index;
    struct chan ch;
    struct pages_rx rx;
    struct disks_rx drx;
    pthread_t thread;
    bool live;
    int rc;
    bool peer_gone;                   /* it failed because the source closed it */
    char err[256];
};

struct receiver {
    struct vm *vm;
    SSL_CTX *tls;
    int lfd;
    bool vm_created;
    struct staged_state st;
    bool have_state;
    uint64_t *hash;                   /* each page's XXH3 as received */
    uint64_t *digest;                 /* the source's (strict: before COMPLETE) */
    size_t ndigest;
    uint64_t chunk;
    char verify[16];                  /* "after", "strict" or "off", from HELLO */
    uint8_t session[SESSION_ID_LEN];
    int n;
    struct rstream s[MIG_MAX_STREAMS];
    atomic_int failed;                /* the first page stream that failed on its own, or -1 */
    atomic_bool stopping;             /* we are shutting the streams down: failures are ours */
    uint64_t grace_end;               /* a page stream the source closed: its reason on stream 0 until then */
    /* shared-nothing */
    struct disk_sink sink;            /* the images being received (fds ours) */
    char *partial[DISKS_MAX];         /* COPY_TO.ferry-partial, created here */
    char *src_path[DISKS_MAX];        /* the image's path on the source */
    struct msg ddigest[DISKS_MAX];    /* verify=strict: the source's DISK_DIGESTs, checked at COMPLETE */
    int nddigest;
    bool committed;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void send_ack(struct chan *c, uint32_t status, const char *reason)
{
    struct buf b = { 0 };
    if (ack_encode(&b, status, reason) == 0 && msg_write(c, MSG_ACK, b.data, (uint32_t)b.len) == 0)
        chan_flush(c);
    buf_free(&b);
}

/* "migration": {"session", "streams", "verify"} from HELLO's JSON. */
static int session_from_json(struct receiver *r, const char *json, char *err, size_t errlen)
{
    json_object *o = json_tokener_parse(json), *mig, *v;
    int rc = -1;
    if (!o || !json_object_object_get_ex(o, "migration", &mig)) {
        snprintf(err, errlen, "HELLO has no \"migration\" session (a source older than protocol 2?)");
        goto out;
    }
    const char *hex = json_object_object_get_ex(mig, "session", &v) ? json_object_get_string(v) : "";
    int n = json_object_object_get_ex(mig, "streams", &v) ? json_object_get_int(v) : 0;
    const char *verify = json_object_object_get_ex(mig, "verify", &v) ? json_object_get_string(v) : "";
    if (strlen(hex) != 2 * SESSION_ID_LEN || n < 1 || n > MIG_MAX_STREAMS ||
        (strcmp(verify, "after") && strcmp(verify, "strict") && strcmp(verify, "off"))) {
        snprintf(err, errlen, "HELLO: bad migration session (streams 1..%d, verify after|strict|off)",
                 MIG_MAX_STREAMS);
        goto out;
    }
    for (int i = 0; i < SESSION_ID_LEN; i++) {
        unsigned b;
        if (sscanf(hex + 2 * i, "%2x", &b) != 1) {
            snprintf(err, errlen, "HELLO: bad session id");
            goto out;
        }
        r->session[i] = (uint8_t)b;
    }
    r->n = n;
    snprintf(r->verify, sizeof(r->verify), "%s", verify);
    rc = 0;
out:
    json_object_put(o);
    return rc;
}

/* Shared-nothing: create each disk's COPY_TO.ferry-partial, sized as the
 * source's image (sparse), for the disk to open; all disks or none. */
static int create_disks(struct receiver *r, struct vm_config *cfg, char *err, size_t errlen)
{
    for (int i = 0; i < cfg->ndisks; i++) {
        struct vm_disk *vd = &cfg->disks[i];
        if (!vd->copy_to != !cfg->disks[0].copy_to) {
            snprintf(err, errlen, "HELLO: \"copy_to\" on some disks only");
            return -1;
        }
        if (!vd->copy_to)
            continue;
        struct stat st;
        if (vd->copy_to[0] != '/' || strlen(vd->copy_to) > 4000) {
            snprintf(err, errlen, "disk %d: destination image path must be absolute: %s", i, vd->copy_to);
            return -1;
        }
        for (int k = 0; k < i; k++) {
            if (!strcmp(cfg->disks[k].copy_to, vd->copy_to)) {
                snprintf(err, errlen, "disks %d and %d: the same destination image %s", k, i, vd->copy_to);
                return -1;
            }
        }
        if (stat(vd->copy_to, &st) == 0 && !S_ISREG(st.st_mode)) {
            snprintf(err, errlen, "disk %d: %s exists and is not a regular file", i, vd->copy_to);
            return -1;
        }
        char *partial = malloc(strlen(vd->copy_to) + sizeof(MOVE_PARTIAL_SUFFIX));
        if (!partial) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        sprintf(partial, "%s%s", vd->copy_to, MOVE_PARTIAL_SUFFIX);
        /* a partial file of an earlier, killed migration is ours to replace */
        int fd = open(partial, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            snprintf(err, errlen, "cannot create %s: %s", partial, strerror(errno));
            free(partial);
            return -1;
        }
        r->partial[i] = partial;
        if (ftruncate(fd, (off_t)vd->size) < 0 || disk_sink_add(&r->sink, fd, partial, vd->size) < 0) {
            snprintf(err, errlen, "cannot size %s to %llu bytes: %s", partial, (unsigned long long)vd->size,
                     strerror(errno ? errno : ENOMEM));
            close(fd);
            return -1;
        }
        char *path = strdup(partial);
        if (!path) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        r->src_path[i] = (char *)vd->path;   /* the disk's serial, as the guest knows it */
        vd->path = path;
    }
    return 0;
}

/* HELLO: build the VM the source describes, if this host can run it. */
static int on_hello(struct receiver *r, const struct msg *m, const struct vm_config *local,
                    char *err, size_t errlen)
{
    uint32_t version;
    char *json = NULL;
    struct kvm_cpuid2 *cpuid = NULL, *have = NULL;
    struct vm_config cfg = *local;
    int rc = -1;
    if (hello_decode(m, &version, &json, err, errlen) < 0 ||
        vm_config_from_json(json, &cfg, &cpuid, err, errlen) < 0 || session_from_json(r, json, err, errlen) < 0)
        goto out;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    have = kvm >= 0 ? cpuid_supported(kvm, err, errlen) : NULL;
    if (kvm >= 0)
        close(kvm);
    if (!have) {
        if (kvm < 0)
            snprintf(err, errlen, "cannot open /dev/kvm");
        goto out;
    }
    if (cpuid_check_compatible(cpuid, have, err, errlen) < 0 || create_disks(r, &cfg, err, errlen) < 0)
        goto out;
    cfg.incoming = true;
    cfg.cpuid = cpuid;
    r->vm_created = true;
    if (vm_create(r->vm, &cfg, err, errlen) < 0)
        goto out;
    for (int i = 0; i < r->sink.n; i++) {
        r->sink.path[i] = r->vm->blk[i]->path;
        virtio_blk_set_serial(r->vm->blk[i], r->src_path[i]);
    }
    r->hash = digest_hashes_new(&r->vm->mem);
    if (staged_init(&r->st, r->vm) < 0 || !r->hash) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    log_info("incoming VM: %llu MiB, %d vCPU(s), %s, %d stream(s)", (unsigned long long)(cfg.mem_size >> 20),
             cfg.ncpus, cfg.boot_mode == BOOT_LINUX64 ? "linux" : "micro-guest", r->n);
    rc = 0;
out:
    if (rc < 0 && cfg.kernel != local->kernel)
        free((char *)cfg.kernel);  /* strdup'ed from the stream; kept by the VM on success */
    free(json);
    free(cpuid);
    free(have);
    return rc;
}

/* ---- connections -------------------------------------------------------- */

static void peer_name(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[64] = "?";
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
        else
            snprintf(host, sizeof(host), "local");
    }
    snprintf(out, len, "%s", host);
}

static void set_timeout(int fd, int secs)
{
    struct timeval tv = { .tv_sec = secs };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Accept one connection and set up TLS on it. */
static int accept_chan(struct receiver *r, struct chan *c, int timeout_ms, char *err, size_t errlen)
{
    *c = CHAN_PLAIN(net_accept(r->lfd, timeout_ms, err, errlen));
    if (c->fd < 0)
        return -1;
    /* a peer that connects and says nothing must not hold the destination;
     * once it introduced itself, TCP keepalive watches it (net.c) */
    set_timeout(c->fd, PEER_TIMEOUT_S);
    if (r->tls && !(c->ssl = tls_handshake(r->tls, c->fd, true, err, errlen))) {
        chan_close(c);
        return -1;
    }
    return 0;
}

static void *stream_thread(void *arg);

/* The other streams: each must JOIN with this migration's session. Strays
 * (another session, a repeated index, not a Ferry stream) are refused and
 * closed; the wait goes on for the real ones until the deadline. */
static int accept_joins(struct receiver *r, char *err, size_t errlen)
{
    uint64_t deadline = now_ms() + JOIN_TIMEOUT_MS;
    for (int joined = 1; joined < r->n;) {
        uint64_t t = now_ms();
        if (t >= deadline) {
            snprintf(err, errlen, "only %d of the source's %d streams connected within %d s", joined, r->n,
                     JOIN_TIMEOUT_MS / 1000);
            return -1;
        }
        struct chan c;
        char why[256];
        if (accept_chan(r, &c, (int)(deadline - t), why, sizeof(why)) < 0) {
            log_warn("incoming migration: refused a connection: %s", why);
            continue;
        }
        struct msg m = { 0 };
        uint8_t session[SESSION_ID_LEN];
        uint32_t idx = 0;
        int ok = msg_read(&c, &m, why, sizeof(why)) == 0 && join_decode(&m, session, &idx, why, sizeof(why)) == 0;
        msg_free(&m);
        if (ok && (memcmp(session, r->session, SESSION_ID_LEN) || idx < 1 || idx >= (uint32_t)r->n ||
                   r->s[idx].live)) {
            snprintf(why, sizeof(why), "stray connection: not a stream of this migration");
            ok = 0;
        }
        if (!ok) {
            log_warn("incoming migration: refused a connection: %s", why);
            send_ack(&c, ACK_REJECTED, why);
            chan_close(&c);
            continue;
        }
        struct rstream *s = &r->s[idx];
        set_timeout(c.fd, 0);    /* a stream may idle for a whole round */
        s->ch = c;
        send_ack(&s->ch, ACK_READY, "");
        if (pthread_create(&s->thread, NULL, stream_thread, s) != 0) {
            snprintf(err, errlen, "cannot start a receiver thread");
            return -1;
        }
        s->live = true;
        joined++;
    }
    return 0;
}

/* Streams 1..n-1: pages until FLUSH. A stream that fails is seen by the
 * control loop on stream 0 (wait_control). */
static void *stream_thread(void *arg)
{
    struct rstream *s = arg;
    struct receiver *r = s->r;
    for (;;) {
        struct msg m = { 0 };
        if (msg_read_header(&s->ch, &m, s->err, sizeof(s->err)) < 0) {
            s->peer_gone = m.error == MSG_E_EOF || m.error == MSG_E_IO || m.error == MSG_E_TRUNCATED;
            break;
        }
        if (m.type == MSG_MEM_PAGES) {
            if (pages_rx_recv(&s->rx, &s->ch, &m, s->err, sizeof(s->err)) < 0)
                break;
            continue;
        }
        if (m.type == MSG_DISK_BLOCKS) {
            if (disks_rx_recv(&s->drx, &r->sink, &s->ch, &m, s->err, sizeof(s->err)) < 0)
                break;
            continue;
        }
        if (m.type == MSG_FLUSH && m.len == 0)
            return NULL;  /* rc 0: all this stream's pages are in */
        if (m.type == MSG_SYNC && m.len == 0) {
            send_ack(&s->ch, ACK_READY, "");  /* only this thread writes to this stream */
            continue;
        }
        snprintf(s->err, sizeof(s->err), "unexpected %s message on a page stream", msg_type_name(m.type));
        break;
    }
    s->rc = -1;
    int none = -1;
    if (!atomic_load(&r->stopping))
        atomic_compare_exchange_strong(&r->failed, &none, s->index);  /* wait_control() sees it */
    return NULL;
}

/* Join the page streams (stop: shut them first, the migration failed).
 * Returns -1 with the reason of the first stream that failed on its own. */
static int join_streams(struct receiver *r, bool stop, char *err, size_t errlen)
{
    if (stop) {
        atomic_store(&r->stopping, true);
        for (int i = 1; i < r->n; i++)
            if (r->s[i].live)
                shutdown(r->s[i].ch.fd, SHUT_RDWR);
    }
    for (int i = 1; i < r->n; i++) {
        if (r->s[i].live)
            pthread_join(r->s[i].thread, NULL);
        r->s[i].live = false;
    }
    int f = atomic_load(&r->failed);
    if (f > 0) {
        snprintf(err, errlen, "stream %d: %s", f, r->s[f].err);
        return -1;
    }
    return 0;
}

/* ---- digest ------------------------------------------------------------- */

/* Compare the source's digest with the pages received; 0, or -1 with where. */
static int compare_digest(struct receiver *r, char *err, size_t errlen)
{
    const struct guest_mem *mem = &r->vm->mem;
    size_t n = digest_count(mem, DIGEST_CHUNK);
    if (n != r->ndigest || r->chunk != DIGEST_CHUNK) {
        snprintf(err, errlen, "memory digest covers %zu chunks of %llu bytes, expected %zu of %llu",
                 r->ndigest, (unsigned long long)r->chunk, n, (unsigned long long)DIGEST_CHUNK);
        return -1;
    }
    uint64_t *mine = malloc(n * sizeof(*mine));
    if (!mine) {
        snprintf(err, errlen, "out of memory for the memory digest");
        return -1;
    }
    digest_from_hashes(mem, DIGEST_CHUNK, r->hash, mine);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (mine[i] != r->digest[i]) {
            snprintf(err, errlen, "memory digest mismatch at GPA 0x%llx (chunk %zu of %zu)",
                     (unsigned long long)digest_chunk_gpa(mem, DIGEST_CHUNK, i), i, n);
            rc = -1;
        }
    }
    free(mine);
    return rc;
}

static int on_digest(struct receiver *r, const struct msg *m, char *err, size_t errlen)
{
    free(r->digest);
    r->digest = NULL;
    return digest_decode(m, &r->chunk, &r->digest, &r->ndigest, err, errlen);
}

/* After the hand-over (verify=after): the VM runs; compare the source's
 * digest of its frozen RAM with what arrived, and raise the alarm on a
 * mismatch. */
static void verify_after(struct receiver *r)
{
    struct chan *c = &r->s[0].ch;
    struct timeval tv = { .tv_sec = DIGEST_TIMEOUT_S };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct msg m = { 0 };
    char err[256], res[200], disk_err[256] = "";
    int disks = 0, rd;
    /* each disk's DISK_DIGEST (shared-nothing), then the memory's DIGEST */
    while ((rd = msg_read(c, &m, err, sizeof(err))) == 0 && m.type == MSG_DISK_DIGEST && disks < r->sink.n) {
        if (disk_digest_check(&r->sink, &m, err, sizeof(err)) < 0 && !disk_err[0])
            snprintf(disk_err, sizeof(disk_err), "%s", err);
        disks++;
        msg_free(&m);
    }
    if (rd == 0 && (disks != r->sink.n || m.type != MSG_DIGEST)) {
        snprintf(err, sizeof(err), "%d disk digest(s) for %d disk(s), then %s", disks, r->sink.n,
                 msg_type_name(m.type));
        rd = -1;
    }
    if (rd < 0 || on_digest(r, &m, err, sizeof(err)) < 0) {
        snprintf(res, sizeof(res), "unknown: %.150s", err);
        log_warn("incoming migration: the memory digest could not be compared: %s", err);
    } else if (disk_err[0]) {
        snprintf(res, sizeof(res), "MISMATCH: %.150s", disk_err);
        log_err("DISK DIGEST MISMATCH after the hand-over: %s; the VM runs here with a disk that "
                "differs from the source's copy", disk_err);
        send_ack(c, ACK_MISMATCH, disk_err);
    } else if (compare_digest(r, err, sizeof(err)) < 0) {
        snprintf(res, sizeof(res), "MISMATCH: %.150s", err);
        log_err("MEMORY DIGEST MISMATCH after the hand-over: %s; the VM runs here with memory that "
                "differs from the source's copy", err);
        send_ack(c, ACK_MISMATCH, err);
    } else {
        snprintf(res, sizeof(res), "match");
        log_info("incoming migration: memory digest verified after the hand-over");
        send_ack(c, ACK_VERIFIED, "");
    }
    msg_free(&m);
    pthread_mutex_lock(&r->vm->mig.lock);
    snprintf(r->vm->mig.in.verify_result, sizeof(r->vm->mig.in.verify_result), "%s", res);
    pthread_mutex_unlock(&r->vm->mig.lock);
}

/* ---- shared-nothing disks --------------------------------------------------- */

/* Before accepting the VM: the received images must be durable (the source
 * stops its VM, and with it its copy, after the hand-over). */
static int sync_disks(struct receiver *r, char *err, size_t errlen)
{
    for (int i = 0; i < r->sink.n; i++) {
        if (fdatasync(r->sink.fd[i]) < 0) {
            snprintf(err, errlen, "cannot sync %s: %s", r->sink.path[i], strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* The VM is ours: each image takes its name. A failing rename leaves the
 * VM running on the partial name (it must run: the source let go). */
static void commit_disks(struct receiver *r)
{
    char err[512];
    for (int i = 0; i < r->sink.n; i++) {
        if (blk_image_rename(r->vm->blk[i], r->vm->cfg.disks[i].copy_to, err, sizeof(err)) < 0)
            log_err("incoming migration: %s; the VM runs on that file", err);
        r->sink.path[i] = r->vm->blk[i]->path;
    }
}

/* ---- the control loop on stream 0 ---------------------------------------- */

/* Wait until stream 0 has a message to read, or a page stream failed (then
 * -1 with its reason). Polled rather than woken by shutting stream 0: under
 * TLS that cut a record in half, OpenSSL answered with a decode_error alert,
 * and our ACK(rejected) with the reason (say, the disk is full) never reached
 * the source. A page stream the source closed is no reason of its own: the
 * source says why on stream 0 (a cancel's ABORT), so that is read first. */
static int wait_control(struct receiver *r, char *err, size_t errlen)
{
    struct chan *c = &r->s[0].ch;
    for (;;) {
        int f = atomic_load(&r->failed);
        if (f > 0 && !r->grace_end)
            r->grace_end = now_ms() + (r->s[f].peer_gone ? PEER_GRACE_MS : 0);
        if (f > 0 && now_ms() >= r->grace_end)
            return join_streams(r, true, err, errlen);
        if (c->ssl && SSL_has_pending(c->ssl))
            return 0;
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int n = poll(&p, 1, WAKE_MS);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            snprintf(err, errlen, "migration stream: poll: %s", strerror(errno));
            return -1;
        }
    }
}

/* Messages after HELLO until COMPLETE. Returns 0 once the VM may run. */
static int receive(struct receiver *r, char *err, size_t errlen)
{
    struct chan *c = &r->s[0].ch;
    for (;;) {
        struct msg m = { 0 };
        if (wait_control(r, err, errlen) < 0 || msg_read_header(c, &m, err, errlen) < 0)
            return -1;
        if (m.type == MSG_MEM_PAGES) {
            if (r->have_state) {
                snprintf(err, errlen, "memory pages after the device state");
                return -1;
            }
            if (pages_rx_recv(&r->s[0].rx, c, &m, err, errlen) < 0)
                return -1;
            continue;
        }
        if (m.type == MSG_DISK_BLOCKS) {
            if (r->have_state) {
                snprintf(err, errlen, "disk blocks after the device state");
                return -1;
            }
            if (disks_rx_recv(&r->s[0].drx, &r->sink, c, &m, err, errlen) < 0)
                return -1;
            continue;
        }
        if (m.type == MSG_SYNC && m.len == 0) {
            /* the pause is near: write the received images back now, so
             * that the sync at COMPLETE (in the pause) has little left */
            if (sync_disks(r, err, errlen) < 0)
                return -1;
            send_ack(c, ACK_READY, "");
            continue;
        }
        size_t got;
        void *payload = malloc(m.len ? m.len : 1);
        struct iovec v = { payload, m.len };
        m.payload = payload;
        if (!payload) {
            snprintf(err, errlen, "out of memory for a %u-byte %s message", m.len, msg_type_name(m.type));
            return -1;
        }
        if (msg_read_into(c, &m, &v, 1, &got, err, errlen) < 0 || msg_check_sum(c, &m, &v, 1, err, errlen) < 0)
            return -1;
        int rc = 0;
        switch (m.type) {
        case MSG_STATE:
            if (r->have_state) {
                snprintf(err, errlen, "a second STATE message");
                rc = -1;
                break;
            }
            rc = sections_parse(&r->st, r->vm, m.payload, m.len, err, errlen);
            r->have_state = rc == 0;
            break;
        case MSG_DIGEST:
            if (strcmp(r->verify, "strict")) {
                snprintf(err, errlen, "DIGEST before COMPLETE, but the source said verify=%s", r->verify);
                rc = -1;
            } else {
                rc = on_digest(r, &m, err, errlen);
            }
            break;
        case MSG_DISK_DIGEST:
            /* checked at COMPLETE, once the other streams delivered their blocks */
            if (strcmp(r->verify, "strict") || r->nddigest == r->sink.n) {
                snprintf(err, errlen, "unexpected DISK_DIGEST before COMPLETE (verify=%s, %d disk(s) received)",
                         r->verify, r->sink.n);
                rc = -1;
            } else {
                r->ddigest[r->nddigest++] = m;
                continue;   /* kept: not freed here */
            }
            break;
        case MSG_COMPLETE: {
            uint64_t t0 = now_ms(), t_join = 0;
            if (!r->have_state) {
                snprintf(err, errlen, "COMPLETE before any device state");
                rc = -1;
            } else if (join_streams(r, false, err, errlen) < 0) {
                rc = -1;
            } else if (!strcmp(r->verify, "strict")) {
                rc = r->digest && r->nddigest == r->sink.n ? compare_digest(r, err, errlen) : -1;
                if (rc < 0 && !(r->digest && r->nddigest == r->sink.n))
                    snprintf(err, errlen, "verify=strict but no DIGEST (or not one per disk) before COMPLETE");
                for (int i = 0; rc == 0 && i < r->nddigest; i++)
                    rc = disk_digest_check(&r->sink, &r->ddigest[i], err, errlen);
            }
            if (rc == 0)
                rc = sync_disks(r, err, errlen);
            t_join = now_ms();
            if (rc == 0)
                rc = sections_apply(r->vm, &r->st, err, errlen);
            msg_free(&m);
            if (rc < 0)
                return -1;
            log_info("incoming migration complete: memory %s (streams drained in %llu ms, state loaded in %llu ms)",
                     !strcmp(r->verify, "strict") ? "digest verified" : "to be verified after the hand-over",
                     (unsigned long long)(t_join - t0), (unsigned long long)(now_ms() - t_join));
            return 0;
        }
        case MSG_ABORT: {
            char why[256];
            msg_text(&m, 0, why, sizeof(why));
            snprintf(err, errlen, "source aborted the migration: %s", why);
            rc = -1;
            break;
        }
        default:
            snprintf(err, errlen, "unexpected %s message during migration", msg_type_name(m.type));
            rc = -1;
        }
        msg_free(&m);
        if (rc < 0)
            return -1;
    }
}

/* Wait for COMMIT; 0 when the VM is ours. */
static int await_commit(struct receiver *r, char *err, size_t errlen)
{
    struct msg m = { 0 };
    int rc = -1;
    if (msg_read(&r->s[0].ch, &m, err, errlen) < 0)
        return -1;
    if (m.type == MSG_COMMIT) {
        rc = 0;
    } else if (m.type == MSG_ABORT) {
        char why[256];
        msg_text(&m, 0, why, sizeof(why));
        snprintf(err, errlen, "source aborted the migration: %s", why);
    } else {
        snprintf(err, errlen, "expected COMMIT, got %s", msg_type_name(m.type));
    }
    msg_free(&m);
    return rc;
}

static void record(struct receiver *r)
{
    struct mig_incoming *in = &r->vm->mig.in;
    pthread_mutex_lock(&r->vm->mig.lock);
    in->done = true;
    in->streams = r->n;
    in->rtt_us = net_rtt_us(r->s[0].ch.fd);
    snprintf(in->cipher, sizeof(in->cipher), "%s", r->s[0].ch.ssl ? tls_cipher(r->s[0].ch.ssl) : "none (--insecure)");
    for (int i = 0; i < r->n; i++) {
        const struct page_stats *p = &r->s[i].rx.st;
        peer_name(r->s[i].ch.fd, in->peers[i], sizeof(in->peers[i]));
        in->pages += p->pages;
        in->zero_pages += p->zero_pages;
        in->data_bytes += p->data_bytes;
        in->wire_bytes += p->wire_bytes + r->s[i].drx.wire_bytes;
        in->disk_bytes += r->s[i].drx.bytes;
    }
    snprintf(in->verify_result, sizeof(in->verify_result), "%s",
             !strcmp(r->verify, "strict") ? "match (in the pause)" : !strcmp(r->verify, "off") ? "off" : "pending");
    pthread_mutex_unlock(&r->vm->mig.lock);
}

static int run(struct receiver *r, const struct vm_config *cfg, int (*start)(struct vm *),
               char *err, size_t errlen)
{
    struct chan *c = &r->s[0].ch;
    struct msg m = { 0 };
    if (accept_chan(r, c, -1, err, errlen) < 0 || msg_read(c, &m, err, errlen) < 0)
        return -1;
    int rc = -1;
    if (m.type != MSG_HELLO)
        snprintf(err, errlen, "expected HELLO, got %s", msg_type_name(m.type));
    else
        rc = on_hello(r, &m, cfg, err, errlen);
    msg_free(&m);
    for (int i = 0; rc == 0 && i < r->n; i++)
        r->s[i].rx = (struct pages_rx){ .mem = &r->vm->mem, .hash = r->hash };
    if (rc < 0)
        goto reject;
    set_timeout(c->fd, 0);
    send_ack(c, ACK_READY, "");
    if (accept_joins(r, err, errlen) < 0 || receive(r, err, errlen) < 0)
        goto reject;
    /* Loaded: wait for the source to hand the VM over. Without COMMIT the
     * source may resume it, so this copy must never run. */
    send_ack(c, ACK_READY, "");
    if (await_commit(r, err, errlen) < 0)
        return -1;
    r->committed = true;
    commit_disks(r);
    /* The VM is ours now, whatever happens to this connection. Its vCPUs
     * start before RESUMED goes out, so the pause the source measures ends
     * when the VM runs here, not when it could. */
    if (start(r->vm) < 0) {
        snprintf(err, errlen, "cannot start the VM's vCPUs");
        return -1;
    }
    send_ack(c, ACK_RESUMED, "");
    record(r);
    if (!strcmp(r->verify, "after"))
        verify_after(r);
    return 0;
reject:
    send_ack(c, ACK_REJECTED, err);
    return -1;
}

/* After a failure before COMMIT (our ACK(rejected) or ABORT went out on
 * stream 0): reset the page streams, so that a source blocked writing one
 * fails at once, but keep reading stream 0 for a while, so that the source
 * stops and reads our reason there rather than a reset. */
static void let_source_know(struct receiver *r)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    for (int i = 1; i < r->n; i++) {
        if (r->s[i].ch.fd >= 0)
            setsockopt(r->s[i].ch.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        chan_close(&r->s[i].ch);
    }
    int fd = r->s[0].ch.fd;
    if (fd < 0)
        return;
    static char sink[65536];
    uint64_t end = now_ms() + DRAIN_MS;
    set_timeout(fd, 1);
    for (uint64_t t = now_ms(); t < end; t = now_ms()) {
        ssize_t n = recv(fd, sink, sizeof(sink), 0);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            break;
        if (n == 0)
            break;   /* the source closed (nothing here shuts stream 0 any more) */
    }
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

int migration_incoming(struct vm *vm, const struct vm_config *cfg, const char *addr, SSL_CTX *tls,
                       int (*start)(struct vm *), char *err, size_t errlen)
{
    struct receiver r = { .vm = vm, .tls = tls, .n = 1, .failed = -1 };
    for (int i = 0; i < MIG_MAX_STREAMS; i++)
        r.s[i] = (struct rstream){ .r = &r, .index = i, .ch = CHAN_PLAIN(-1) };
    r.lfd = net_listen(addr, err, errlen);
    if (r.lfd < 0)
        return -1;
    log_info("waiting for an incoming migration on %s (port %d, %s)", addr, net_local_port(r.lfd),
             tls ? "TLS" : "plaintext: --insecure");
    int rc = run(&r, cfg, start, err, errlen);
    close(r.lfd);
    join_streams(&r, true, (char[8]){ 0 }, 8);   /* after a failure: stop the readers */
    if (rc < 0 && !r.committed)
        let_source_know(&r);
    for (int i = 0; i < MIG_MAX_STREAMS; i++) {
        pages_rx_free(&r.s[i].rx);
        disks_rx_free(&r.s[i].drx);
        chan_close(&r.s[i].ch);
    }
    for (int i = 0; i < DISKS_MAX; i++) {
        /* never ours: no half-received image is left behind */
        if (r.partial[i] && !r.committed && unlink(r.partial[i]) < 0 && errno != ENOENT)
            log_warn("incoming migration: cannot remove %s: %s", r.partial[i], strerror(errno));
        free(r.partial[i]);
        free(r.src_path[i]);
        if (i < r.sink.n)
            close(r.sink.fd[i]);
    }
    for (int i = 0; i < r.nddigest; i++)
        msg_free(&r.ddigest[i]);
    disk_sink_free(&r.sink);
    if (r.vm_created)
        staged_free(&r.st);
    free(r.digest);
    free(r.hash);
    return rc;
}
