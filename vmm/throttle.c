/* Auto-converge (throttle.h). The ticker only forces an exit once a slice;
 * each vCPU measures how long it ran since its last sleep and sleeps its
 * share itself, so the duty cycle holds whatever the exits in between.
 * "Ran" is the vCPU thread's CPU time, not the wall clock: a guest idling in
 * HLT (a service waiting for requests) dirties nothing and is not held, so
 * it still answers at once; QEMU's throttle sleeps on the wall clock, and a
 * 99% throttle there turns every request into a one-second wait. */
#include <signal.h>
#include <time.h>

#include "vmm/throttle.h"
#include "vmm/vm.h"

/* 2 ms: the most the guest runs between two sleeps. It bounds what a slowed
 * guest dirties in a short last round at full speed: 10 ms let a guest that
 * dirties 700 MB/s write 7 MB (about 7 ms of link) whatever the throttle. */
#define SLICE_NS 2000000ull
/* 20 ms: the most it sleeps at once, which is what the guest's users see as a
 * stall. Above 90% the run slice shrinks instead: at 99% a 2 ms slice meant
 * 198 ms sleeps, and a stock Linux guest's 1 ms sampler in the lab saw 332 ms
 * gaps around a 15 ms pause. */
#define HOLD_NS 20000000ull

static uint64_t slice_ns(int pct)
{
    uint64_t s = HOLD_NS * (uint64_t)(100 - pct) / (uint64_t)pct;
    return s < SLICE_NS ? s : SLICE_NS;
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* vm->cond runs on CLOCK_REALTIME: a deadline `ns` from now on that clock. */
static struct timespec deadline_in(uint64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ns += (uint64_t)ts.tv_nsec;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    return ts;
}

static void *ticker(void *arg)
{
    struct vm *vm = arg;
    pthread_mutex_lock(&vm->lock);
    int pct;
    while ((pct = atomic_load(&vm->throttle.pct)) > 0 && !atomic_load(&vm->stopping)) {
        struct timespec until = deadline_in(slice_ns(pct));
        pthread_cond_timedwait(&vm->cond, &vm->lock, &until);
        if (vm->pause_req)
            continue;   /* parked vCPUs need no kick */
        for (int i = 0; i < vm->ncpus; i++)
            if (vm->vcpus[i].started)
                vcpu_kick(&vm->vcpus[i]);
    }
    pthread_mutex_unlock(&vm->lock);
    return NULL;
}

void throttle_set(struct vm *vm, int pct)
{
    struct throttle *t = &vm->throttle;
    pct = pct < 0 ? 0 : pct > THROTTLE_MAX ? THROTTLE_MAX : pct;
    pthread_mutex_lock(&vm->lock);
    atomic_store(&t->pct, pct);
    pthread_cond_broadcast(&vm->cond);   /* sleepers and the ticker look again */
    pthread_mutex_unlock(&vm->lock);
    if (pct > 0 && !t->ticking)
        t->ticking = pthread_create(&t->ticker, NULL, ticker, vm) == 0;
    else if (pct == 0 && t->ticking) {
        pthread_join(t->ticker, NULL);
        t->ticking = false;
    }
}

void throttle_vcpu(struct vcpu *v)
{
    struct vm *vm = v->vm;
    int pct = atomic_load(&vm->throttle.pct);
    if (pct <= 0) {   /* every exit passes here: no clock read when off */
        v->throttle_t0 = 0;
        return;
    }
    uint64_t now = clock_ns(CLOCK_MONOTONIC);
    if (!v->throttle_t0) {
        v->throttle_t0 = now;
        v->throttle_cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
        return;
    }
    uint64_t slice = slice_ns(pct);
    if (now - v->throttle_t0 < slice)
        return;
    /* At most a slice counts: a vCPU the ticker could not kick for long (a
     * loaded host) must not then sleep for 99 times that at once. */
    uint64_t ran = clock_ns(CLOCK_THREAD_CPUTIME_ID) - v->throttle_cpu0;
    ran = ran > slice ? slice : ran;
    struct timespec until = deadline_in(ran * (uint64_t)pct / (uint64_t)(100 - pct));
    pthread_mutex_lock(&vm->lock);
    while (!vm->pause_req && !atomic_load(&vm->stopping) && atomic_load(&vm->throttle.pct) == pct &&
           pthread_cond_timedwait(&vm->cond, &vm->lock, &until) == 0)
        ;
    pthread_mutex_unlock(&vm->lock);
    v->throttle_t0 = clock_ns(CLOCK_MONOTONIC);
    v->throttle_cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
}
