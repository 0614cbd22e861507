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

struct vm;
struct vm_config;
struct kvm_cpuid2;

enum mig_phase {
    MIG_NONE, MIG_SETUP, MIG_PRECOPY, MIG_SWITCHOVER, MIG_COMPLETED, MIG_FAILED, MIG_CANCELLED,
    MIG_IN_DOUBT,   /* no answer after COMPLETE: VM paused here, may run there */
};

struct mig_params {
    char uri[256];
    uint64_t downtime_ms;        /* switch over once the predicted pause is this short */
    uint64_t bandwidth;          /* bytes/s cap, 0 = unlimited */
    uint64_t max_time_ms;        /* give up pre-copy after this long (0 = no limit) */
    uint32_t max_rounds;         /* give up after this many rounds */
    bool force;                  /* at a limit, switch over anyway instead of failing */
    bool verify;                 /* whole-memory digest at switchover */
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
    uint64_t elapsed_ms, total_ms, downtime_ms, verify_ms;
    /* where the pause went, in microseconds: stopping the vCPUs, the last
     * pages, saving+sending state, waiting for the destination's ACK */
    uint64_t pause_us, final_us, state_us, ack_us;
    uint64_t final_pages;         /* sent while paused */
    char error[256];
};

struct migration {
    pthread_mutex_t lock;        /* guards params and stats */
    struct mig_params p;
    struct mig_stats s;
    pthread_t thread;
    bool thread_live;
    atomic_bool cancel;
    int fd;
    uint64_t t_start_ns;         /* CLOCK_MONOTONIC at migrate */
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
 * stream's configuration and cfg's local options). Once the source hands it
 * over (COMMIT), start(vm) runs it and the source is told it resumed. On
 * failure before COMMIT nothing ran. */
int migration_incoming(struct vm *vm, const struct vm_config *cfg, const char *addr,
                       int (*start)(struct vm *), char *err, size_t errlen);

/* VM configuration carried in HELLO. */
char *vm_config_json(struct vm *vm);
int vm_config_from_json(const char *json, struct vm_config *cfg, struct kvm_cpuid2 **cpuid,
                        char *err, size_t errlen);

#endif
