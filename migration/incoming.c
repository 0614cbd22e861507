/* Destination side: receive one VM. Everything that arrives is validated
 * before use; the VM's vCPUs start only after the whole stream arrived, the
 * memory digest matched, the state loaded into KVM and the source was told. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migration/digest.h"
#include "migration/net.h"
#include "migration/sections.h"
#include "migration/stream.h"
#include "vmm/log.h"
#include "vmm/vm.h"

struct receiver {
    struct vm *vm;
    int fd;
    bool vm_created;
    struct staged_state st;
    bool have_state;
    uint64_t *digest;
    size_t ndigest;
    uint64_t chunk;
    struct stream_stats stats;
    /* Our own digest is computed while the source computes its own: RAM is
     * final once STATE arrives (the last pages precede it). */
    pthread_t hasher;
    bool hashing;
    uint64_t *mine;
    int hash_rc;
    uint8_t *touched;        /* per digest chunk: did any page arrive? (RAM starts zeroed) */
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int put_page(uint64_t gpa, const void *data, void *ctx, char *err, size_t errlen)
{
    struct receiver *r = ctx;
    uint8_t *dst = gmem_ptr(&r->vm->mem, gpa, MIG_PAGE_SIZE);
    if (!dst) {
        snprintf(err, errlen, "page at GPA 0x%llx is outside guest RAM", (unsigned long long)gpa);
        return -1;
    }
    if (data)
        memcpy(dst, data, MIG_PAGE_SIZE);
    else
        memset(dst, 0, MIG_PAGE_SIZE);
    size_t chunk = digest_chunk_index(&r->vm->mem, DIGEST_CHUNK, gpa);
    if (r->touched && chunk != (size_t)-1)
        r->touched[chunk] = 1;
    return 0;
}

static void send_ack(int fd, uint32_t status, const char *reason)
{
    struct buf b = { 0 };
    if (ack_encode(&b, status, reason) == 0)
        msg_write(fd, MSG_ACK, b.data, (uint32_t)b.len);
    buf_free(&b);
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
        vm_config_from_json(json, &cfg, &cpuid, err, errlen) < 0)
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
    if (cpuid_check_compatible(cpuid, have, err, errlen) < 0)
        goto out;
    cfg.incoming = true;
    cfg.cpuid = cpuid;
    r->vm_created = true;
    if (vm_create(r->vm, &cfg, err, errlen) < 0)
        goto out;
    r->touched = calloc(digest_count(&r->vm->mem, DIGEST_CHUNK), 1);
    if (staged_init(&r->st, r->vm) < 0 || !r->touched) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    log_info("incoming VM: %llu MiB, %d vCPU(s), %s", (unsigned long long)(cfg.mem_size >> 20),
             cfg.ncpus, cfg.boot_mode == BOOT_LINUX64 ? "linux" : "micro-guest");
    rc = 0;
out:
    if (rc < 0 && cfg.kernel != local->kernel)
        free((char *)cfg.kernel);  /* strdup'ed from the stream; kept by the VM on success */
    free(json);
    free(cpuid);
    free(have);
    return rc;
}

static void *hash_thread(void *arg)
{
    struct receiver *r = arg;
    r->mine = malloc(digest_count(&r->vm->mem, DIGEST_CHUNK) * sizeof(*r->mine));
    /* chunks no page landed in are still all zero: their digest is known
     * without reading (or, for a file-backed RAM, allocating) them */
    r->hash_rc = r->mine ? digest_compute_skip(&r->vm->mem, DIGEST_CHUNK, r->mine, r->touched) : -1;
    return NULL;
}

static void hash_start(struct receiver *r)
{
    r->hashing = pthread_create(&r->hasher, NULL, hash_thread, r) == 0;
}

static int hash_join(struct receiver *r)
{
    if (!r->hashing)
        return -1;
    pthread_join(r->hasher, NULL);
    r->hashing = false;
    return r->hash_rc;
}

static int verify_digest(struct receiver *r, char *err, size_t errlen)
{
    const struct guest_mem *mem = &r->vm->mem;
    size_t n = digest_count(mem, r->chunk);
    if (n != r->ndigest || r->chunk != DIGEST_CHUNK) {
        snprintf(err, errlen, "memory digest covers %zu chunks of %llu bytes, expected %zu of %llu",
                 r->ndigest, (unsigned long long)r->chunk, n, (unsigned long long)DIGEST_CHUNK);
        return -1;
    }
    if (hash_join(r) < 0) {
        snprintf(err, errlen, "cannot compute the memory digest");
        return -1;
    }
    const uint64_t *mine = r->mine;  /* written by the hasher: read after the join */
    for (size_t i = 0; i < n; i++) {
        if (mine[i] != r->digest[i]) {
            snprintf(err, errlen, "memory digest mismatch at GPA 0x%llx (chunk %zu of %zu)",
                     (unsigned long long)digest_chunk_gpa(mem, r->chunk, i), i, n);
            return -1;
        }
    }
    return 0;
}

/* The message loop after HELLO. Returns 0 once the VM may run. */
static int receive(struct receiver *r, char *err, size_t errlen)
{
    bool verified = false;
    for (;;) {
        struct msg m = { 0 };
        if (msg_read(r->fd, &m, err, errlen) < 0)
            return -1;
        int rc = 0;
        switch (m.type) {
        case MSG_MEM_PAGES:
            if (r->have_state) {
                snprintf(err, errlen, "memory pages after the device state");
                rc = -1;
                break;
            }
            rc = pages_batch_parse(&m, put_page, r, &r->stats, err, errlen);
            break;
        case MSG_STATE:
            if (r->have_state) {
                snprintf(err, errlen, "a second STATE message");
                rc = -1;
                break;
            }
            rc = sections_parse(&r->st, r->vm, m.payload, m.len, err, errlen);
            r->have_state = rc == 0;
            if (rc == 0)
                hash_start(r);
            break;
        case MSG_DIGEST:
            free(r->digest);
            r->digest = NULL;
            rc = digest_decode(&m, &r->chunk, &r->digest, &r->ndigest, err, errlen);
            if (rc == 0 && (r->chunk == 0 || r->chunk % MIG_PAGE_SIZE)) {
                snprintf(err, errlen, "bad digest chunk size %llu", (unsigned long long)r->chunk);
                rc = -1;
            }
            break;
        case MSG_COMPLETE: {
            uint64_t t0 = now_ms();
            if (!r->have_state) {
                snprintf(err, errlen, "COMPLETE before any device state");
                rc = -1;
            } else if (r->digest) {
                rc = verify_digest(r, err, errlen);
                verified = rc == 0;
            }
            if (rc == 0)
                rc = sections_apply(r->vm, &r->st, err, errlen);
            msg_free(&m);
            if (rc < 0)
                return -1;
            log_info("incoming migration complete: %llu pages (%llu zero), memory %s (%llu ms)",
                     (unsigned long long)r->stats.pages, (unsigned long long)r->stats.zero_pages,
                     verified ? "digest verified" : "not verified", (unsigned long long)(now_ms() - t0));
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

int migration_incoming(struct vm *vm, const struct vm_config *cfg, const char *addr,
                       int (*start)(struct vm *), char *err, size_t errlen)
{
    struct receiver r = { .vm = vm, .fd = -1 };
    int lfd = net_listen(addr, err, errlen);
    if (lfd < 0)
        return -1;
    log_info("waiting for an incoming migration on %s (port %d)", addr, net_local_port(lfd));
    r.fd = net_accept(lfd, -1, err, errlen);
    close(lfd);
    if (r.fd < 0)
        return -1;

    struct msg m = { 0 };
    int rc = -1;
    if (msg_read(r.fd, &m, err, errlen) < 0)
        goto out;
    if (m.type != MSG_HELLO) {
        snprintf(err, errlen, "expected HELLO, got %s", msg_type_name(m.type));
        send_ack(r.fd, ACK_REJECTED, err);
        goto out;
    }
    if (on_hello(&r, &m, cfg, err, errlen) < 0) {
        send_ack(r.fd, ACK_REJECTED, err);
        goto out;
    }
    send_ack(r.fd, ACK_READY, "");
    if (receive(&r, err, errlen) < 0) {
        send_ack(r.fd, ACK_REJECTED, err);
        goto out;
    }
    /* Verified and loaded: wait for the source to hand the VM over. Without
     * COMMIT the source may resume it, so this copy must never run. */
    send_ack(r.fd, ACK_READY, "");
    msg_free(&m);
    if (msg_read(r.fd, &m, err, errlen) < 0)
        goto out;
    if (m.type != MSG_COMMIT) {
        if (m.type == MSG_ABORT) {
            char why[256];
            msg_text(&m, 0, why, sizeof(why));
            snprintf(err, errlen, "source aborted the migration: %s", why);
        } else {
            snprintf(err, errlen, "expected COMMIT, got %s", msg_type_name(m.type));
        }
        goto out;
    }
    /* The VM is ours now, whatever happens to this connection. Its vCPUs
     * start before RESUMED goes out, so the pause the source measures ends
     * when the VM runs here, not when it could. */
    if (start(vm) < 0) {
        snprintf(err, errlen, "cannot start the VM's vCPUs");
        goto out;
    }
    send_ack(r.fd, ACK_RESUMED, "");
    rc = 0;
out:
    msg_free(&m);
    if (r.hashing)
        hash_join(&r);
    if (r.vm_created)
        staged_free(&r.st);
    free(r.digest);
    free(r.mine);
    free(r.touched);
    close(r.fd);
    return rc;
}
