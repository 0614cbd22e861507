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
    /* Pages still to send, one bit per 4 KiB page, per slot: a fetch adds to
     * them and dirty_log_sent takes them off. (Overwriting them at a fetch
     * would lose what devices wrote: those bits exist only here once taken
     * from the device bitmap, while KVM keeps its own until cleared.) */
    uint64_t *bitmap[GMEM_MAX_REGIONS];
    uint64_t *kvm_bits[GMEM_MAX_REGIONS];     /* KVM_GET_DIRTY_LOG's answer */
    uint64_t npages[GMEM_MAX_REGIONS];
    bool fetched;                             /* a first fetch happened */
};

int dirty_log_start(struct dirty_log *d, int kvm_fd, int vm_fd, struct guest_mem *mem,
                    char *err, size_t errlen);
/* Add the slots' dirty bitmaps and the pages devices wrote (gmem_mark_dirty)
 * to the pages still to send; returns their number or -1. */
int64_t dirty_log_fetch(struct dirty_log *d, char *err, size_t errlen);
/* The pages [first, first+n) of slot were sent (same alignment as clear). */
void dirty_log_sent(struct dirty_log *d, int slot, uint64_t first, uint64_t n);
/* Re-protect the pages [first, first+n) of slot whose bits are set in the
 * fetched bitmap (first and n multiples of 64, or n reaching the slot end). */
int dirty_log_clear(struct dirty_log *d, int slot, uint64_t first, uint64_t n, char *err, size_t errlen);
void dirty_log_stop(struct dirty_log *d);

static inline bool dirty_test(const struct dirty_log *d, int slot, uint64_t page)
{
    return d->bitmap[slot][page / 64] >> (page % 64) & 1;
}

#endif
