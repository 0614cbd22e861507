/* Live migration of a running VM (pre-copy), both ends. The protocol is in
 * docs/migration-protocol.md; the source owns the VM until the destination
 * acknowledges it resumed. */
#ifndef FERRY_MIGRATE_H
#define FERRY_MIGRATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <json-c/json.h>

#include <openssl/ssl.h>

struct vm;
struct vm_config;
struct kvm_cpuid2;

enum mig_phase {
    MIG_NONE, MIG_SETUP, MIG_PRECOPY, MIG_SWITCHOVER, MIG_COMPLETED, MIG_FAILED, MIG_CANCELLED,
    MIG_IN_DOUBT,   /* no answer after COMPLETE: VM paused here, may run there */
};

#define MIG_MAX_STREAMS 8
#define MIG_MAX_VIA     4
#define MIG_MAX_DISKS   4             /* = VM_MAX_DISKS */

/* When the memory digest is compared (docs/migration-protocol.md, "Verification"). */
enum mig_verify {
    VERIFY_OFF,
    VERIFY_AFTER,     /* default: after the hand-over, outside the pause; a mismatch is an alarm */
    VERIFY_STRICT,    /* in the pause, before COMMIT: a mismatch keeps the VM on the source */
};

enum mig_compress { COMPRESS_AUTO = -1 };   /* else an enum page_codec (pages.h) */

struct mig_params {
    char uri[256];
    int streams;                 /* connections (0: automatic) */
    char via[MIG_MAX_VIA][64];   /* local addresses the streams leave from, round robin */
    int nvia;
    int compress;                /* COMPRESS_AUTO or an enum page_codec */
    enum mig_verify verify;
    uint64_t test_skip_gpa;      /* test hook: never send this page (0: off) */
    uint64_t test_skip_disk_block;   /* test hook: never send the piece of disk 0 holding this
                                        64 KiB block (0: off) */
    uint64_t downtime_ms;        /* switch over once the predicted pause is this short */
    uint64_t bandwidth;          /* bytes/s cap, 0 = unlimited */
    uint64_t max_time_ms;        /* give up pre-copy after this long (0 = no limit) */
    uint32_t max_rounds;         /* give up after this many rounds */
    bool force;                  /* at a limit, switch over anyway instead of failing */
    bool auto_converge;          /* slow the vCPUs of a guest the link cannot keep up with */
    /* shared-nothing: the image path of each disk on the destination, in
     * disk order (nstorage 0: shared storage, the same path there) */
    char storage_to[MIG_MAX_DISKS][1024];
    int nstorage;
};

struct mig_stats {
    enum mig_phase phase;
    uint32_t round;
    uint64_t bytes_sent, pages_sent, zero_pages;
    uint64_t remaining_pages;     /* dirty at the last sync */
    uint64_t scanned_pages;       /* round 0: pages looked at so far (zero pages are skipped) */
    double throughput;            /* bytes/s, last round */
    double dirty_rate;            /* pages/s, last round */
    double predicted_downtime_ms;
    int throttle_pct;             /* auto-converge: the share of time the vCPUs are held */
    uint64_t elapsed_ms, total_ms, downtime_ms, verify_ms;
    /* where the pause went, in microseconds: stopping the vCPUs, the last
     * pages, saving+sending state, waiting for the destination's ACK */
    uint64_t pause_us, final_us, state_us, ack_us;
    uint64_t final_pages;         /* sent while paused */
    uint64_t data_bytes;          /* page data before compression */
    /* shared-nothing: the disks' data bytes at the start, disk data sent,
     * dirty disk blocks at the last sync */
    uint64_t disk_total, disk_bytes, disk_dirty_blocks;
    int streams, rtt_us;
    int codec;                    /* enum page_codec in use */
    char cipher[64];              /* negotiated TLS cipher, or "none (--insecure)" */
    char window_note[320];        /* the kernel caps the TCP window: how to raise it */
    char verify_result[200];      /* "match", "mismatch: ...", "off", or "" (pending) */
    char error[256];
};

/* What the destination saw of the migration that brought the VM here. */
struct mig_incoming {
    bool done;
    int streams, rtt_us;
    char cipher[64];
    char peers[MIG_MAX_STREAMS][64];   /* the source address of each stream */
    uint64_t pages, zero_pages, data_bytes, wire_bytes;
    uint64_t disk_bytes;               /* disk data received (shared-nothing) */
    char verify_result[200];
};

struct migration {
    pthread_mutex_t lock;        /* guards params and stats */
    struct mig_params p;
    struct mig_stats s;
    pthread_t thread;
    bool thread_live;
    atomic_bool cancel;
    uint64_t t_start_ns;         /* CLOCK_MONOTONIC at migrate */
    SSL_CTX *tls;                /* client credentials; NULL: plaintext (--insecure) */
    bool insecure;               /* the operator chose plaintext */
    struct mig_incoming in;
};

void mig_params_default(struct mig_params *p);
const char *mig_phase_name(enum mig_phase ph);

/* Source: start migrating vm in a thread of its own (0, or -1 with err). */
int migration_start(struct vm *vm, const struct mig_params *p, char *err, size_t errlen);
int migration_cancel(struct vm *vm, char *err, size_t errlen);
void migration_status(struct vm *vm, json_object *out);
/* Join a finished migration thread (at exit). */
void migration_reap(struct vm *vm);

/* Destination: listen on addr, receive one VM into vm (created from the
 * stream's configuration and cfg's local options) over TLS with tls's
 * credentials (NULL: plaintext). Once the source hands it over (COMMIT),
 * start(vm) runs it and the source is told it resumed; then the memory digest
 * is compared unless the source turned verification off. On failure before
 * COMMIT nothing ran. */
int migration_incoming(struct vm *vm, const struct vm_config *cfg, const char *addr, SSL_CTX *tls,
                       int (*start)(struct vm *), char *err, size_t errlen);

/* VM configuration carried in HELLO. */
char *vm_config_json(struct vm *vm);
int vm_config_from_json(const char *json, struct vm_config *cfg, struct kvm_cpuid2 **cpuid,
                        char *err, size_t errlen);

#endif
