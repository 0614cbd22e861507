/* KVM dirty page tracking for pre-copy. With KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
 * fetching the log is cheap and pages are re-protected only when we clear
 * them, chunk by chunk, just before sending that chunk: a write after the
 * clear dirties the page again, so nothing is ever lost. */
#ifndef FERRY_DIRTY_H
#define FERRY_DIRTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "vmm/memory.h"

#define PAGE_SIZE 4096ull
#define PAGE_SHIFT 12

struct dirty_log {
    int vm_fd;
    struct guest_mem *mem;
    bool manual;                              /* manual protect (clear on demand) */
    uint64_t *bitmap[GMEM_MAX_REGIONS];       /* one bit per 4 KiB page, per slot */
    uint64_t npages[GMEM_MAX_REGIONS];
    bool fetched;                             /* a first fetch happened */
};

int dirty_log_start(struct dirty_log *d, int kvm_fd, int vm_fd, struct guest_mem *mem,
                    char *err, size_t errlen);
/* Fetch the dirty bitmaps of all slots, merged with the pages devices wrote
 * (gmem_mark_dirty); returns the number of dirty pages or -1. */
int64_t dirty_log_fetch(struct dirty_log *d, char *err, size_t errlen);
/* Re-protect the pages [first, first+n) of slot whose bits are set in the
 * fetched bitmap (first and n multiples of 64, or n reaching the slot end). */
int dirty_log_clear(struct dirty_log *d, int slot, uint64_t first, uint64_t n, char *err, size_t errlen);
void dirty_log_stop(struct dirty_log *d);

static inline bool dirty_test(const struct dirty_log *d, int slot, uint64_t page)
{
    return d->bitmap[slot][page / 64] >> (page % 64) & 1;
}

#endif
