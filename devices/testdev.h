/* The micro-guest test device (include/ferry-guest-abi.h): output lines,
 * results, exit status, host time and TSC stamps, all over one MMIO page. */
#ifndef FERRY_TESTDEV_H
#define FERRY_TESTDEV_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include "vmm/memory.h"

struct testdev {
    struct guest_mem *mem;
    FILE *out;                                /* where PRINT lines go */
    void (*exit)(void *opaque, int status);   /* guest asked to exit */
    void *opaque;
    pthread_mutex_t lock;
    uint64_t result;                          /* last RESULT value */
    uint64_t stamp_tsc, stamp_ns;             /* last STAMP: guest TSC, host ns */
};

void testdev_init(struct testdev *t, struct guest_mem *mem, FILE *out,
                  void (*exit_fn)(void *, int), void *opaque);
void testdev_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

#endif
