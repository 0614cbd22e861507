#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

#include "migration/dirty.h"

static int set_logging(const struct dirty_log *d, bool on)
{
    for (int i = 0; i < d->mem->nregions; i++) {
        const struct gmem_region *r = &d->mem->regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = (uint32_t)i, .flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0,
            .guest_phys_addr = r->gpa, .memory_size = r->size, .userspace_addr = (uintptr_t)r->hva,
        };
        if (ioctl(d->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
            return -1;
    }
    return 0;
}

int dirty_log_start(struct dirty_log *d, int kvm_fd, int vm_fd, struct guest_mem *mem,
                    char *err, size_t errlen)
{
    memset(d, 0, sizeof(*d));
    d->vm_fd = vm_fd;
    d->mem = mem;
    for (int i = 0; i < mem->nregions; i++) {
        d->npages[i] = mem->regions[i].size >> PAGE_SHIFT;
        size_t words = (d->npages[i] + 63) / 64;
        d->bitmap[i] = calloc(words, sizeof(uint64_t));
        d->kvm_bits[i] = calloc(words, sizeof(uint64_t));
        if (!mem->dev_dirty[i])
            mem->dev_dirty[i] = calloc(words, sizeof(uint64_t));
        else
            memset(mem->dev_dirty[i], 0, words * sizeof(uint64_t));
        if (!d->bitmap[i] || !d->kvm_bits[i] || !mem->dev_dirty[i]) {
            snprintf(err, errlen, "dirty log: out of memory");
            dirty_log_stop(d);
            return -1;
        }
    }
    /* INITIALLY_SET: the first fetch reports every page dirty, so round 0 is
     * the full copy, and KVM write-protects lazily as we clear. */
    int caps = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    uint64_t want = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;
    if (caps > 0 && ((uint64_t)caps & want) == want) {
        struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args[0] = want };
        d->manual = ioctl(vm_fd, KVM_ENABLE_CAP, &cap) == 0;
    }
    atomic_store(&mem->dev_tracking, true);
    if (set_logging(d, true) < 0) {
        snprintf(err, errlen, "cannot enable dirty logging: %s", strerror(errno));
        dirty_log_stop(d);
        return -1;
    }
    return 0;
}

int64_t dirty_log_fetch(struct dirty_log *d, char *err, size_t errlen)
{
    int64_t total = 0;
    for (int i = 0; i < d->mem->nregions; i++) {
        struct kvm_dirty_log log = { .slot = (uint32_t)i, .dirty_bitmap = d->kvm_bits[i] };
        if (ioctl(d->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
            snprintf(err, errlen, "KVM_GET_DIRTY_LOG: %s", strerror(errno));
            return -1;
        }
        uint64_t words = (d->npages[i] + 63) / 64;
        if (!d->manual && !d->fetched) {
            /* without INITIALLY_SET the first round must still copy everything */
            memset(d->bitmap[i], 0xff, words * sizeof(uint64_t));
            if (d->npages[i] % 64)
                d->bitmap[i][words - 1] = (1ull << (d->npages[i] % 64)) - 1;
        }
        uint64_t *dev = d->mem->dev_dirty[i];
        for (uint64_t w = 0; w < words; w++) {
            d->bitmap[i][w] |= d->kvm_bits[i][w] | __atomic_exchange_n(&dev[w], 0, __ATOMIC_RELAXED);
            total += __builtin_popcountll(d->bitmap[i][w]);
        }
    }
    d->fetched = true;
    return total;
}

int dirty_log_clear(struct dirty_log *d, int slot, uint64_t first, uint64_t n, char *err, size_t errlen)
{
    if (!d->manual)
        return 0;  /* KVM_GET_DIRTY_LOG already re-protected everything */
    struct kvm_clear_dirty_log c = {
        .slot = (uint32_t)slot, .first_page = first, .num_pages = (uint32_t)n,
        .dirty_bitmap = &d->bitmap[slot][first / 64],
    };
    if (ioctl(d->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0) {
        snprintf(err, errlen, "KVM_CLEAR_DIRTY_LOG: %s", strerror(errno));
        return -1;
    }
    return 0;
}

void dirty_log_sent(struct dirty_log *d, int slot, uint64_t first, uint64_t n)
{
    uint64_t end = (first + n + 63) / 64;
    memset(&d->bitmap[slot][first / 64], 0, (end - first / 64) * sizeof(uint64_t));
}

void dirty_log_stop(struct dirty_log *d)
{
    if (d->mem) {
        set_logging(d, false);
        atomic_store(&d->mem->dev_tracking, false);
    }
    for (int i = 0; i < GMEM_MAX_REGIONS; i++) {
        free(d->bitmap[i]);
        free(d->kvm_bits[i]);
        d->bitmap[i] = d->kvm_bits[i] = NULL;
    }
}
