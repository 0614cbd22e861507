/* Auto-converge: slowing the vCPUs of a guest that dirties memory faster
 * than a migration moves it (VMware's SDPS, QEMU's auto-converge). At pct,
 * each vCPU sleeps pct/(100-pct) of the CPU time it ran, a slice at a time
 * (at most 2 ms run, at most 20 ms asleep):
 * a busy guest runs (100-pct)% of the wall clock and dirties that much less;
 * an idle one is not held. */
#ifndef FERRY_THROTTLE_H
#define FERRY_THROTTLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define THROTTLE_MAX 99

struct throttle {
    atomic_int pct;          /* 0: off */
    pthread_t ticker;        /* kicks the vCPUs out of KVM_RUN once a slice */
    bool ticking;
};

struct vm;
struct vcpu;

/* Migration thread only. pct 0 (or less) ends the throttle: sleeping vCPUs
 * wake at once and the ticker is gone when this returns. */
void throttle_set(struct vm *vm, int pct);
/* vCPU thread, after each return from KVM_RUN: sleep this vCPU's share. A
 * pause, a stop or a change of pct ends the sleep early. */
void throttle_vcpu(struct vcpu *v);

#endif
