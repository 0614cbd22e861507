/* Guest RAM. One host mapping holds all of RAM; KVM sees it as one memslot
 * below the PCI hole and, for larger guests, a second one at 4 GiB. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <stdatomic.h>
#include <unistd.h>

#include "vmm/memory.h"

#define HUGE_2M (2ull << 20)

static void layout(struct guest_mem *m, uint64_t size)
{
    uint64_t low = size < GMEM_PCI_HOLE_START ? size : GMEM_PCI_HOLE_START;
    m->ram_size = size;
    m->nregions = 1;
    m->regions[0] = (struct gmem_region){ .gpa = 0, .size = low, .hva = m->base };
    if (size > low) {
        m->nregions = 2;
        m->regions[1] = (struct gmem_region){ .gpa = GMEM_4G, .size = size - low,
                                              .hva = m->base + low };
    }
}

int gmem_init(struct guest_mem *m, uint64_t size, const char *path, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->fd = -1;
    if (size < HUGE_2M || size % HUGE_2M) {
        snprintf(err, errlen, "memory size %llu MiB: must be a multiple of 2 MiB and at least 2 MiB",
                 (unsigned long long)(size >> 20));
        return -EINVAL;
    }
    /* Over-allocate by 2 MiB and trim so the guest mapping is 2 MiB aligned:
     * transparent huge pages then back guest 2 MiB pages one to one. */
    uint8_t *raw = mmap(NULL, size + HUGE_2M, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        snprintf(err, errlen, "cannot reserve %llu MiB of guest memory: %s",
                 (unsigned long long)(size >> 20), strerror(errno));
        return -errno;
    }
    uint8_t *aligned = (uint8_t *)(((uintptr_t)raw + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
    if (aligned > raw)
        munmap(raw, (size_t)(aligned - raw));
    munmap(aligned + size, (size_t)(raw + HUGE_2M - aligned));

    int flags = MAP_FIXED | MAP_NORESERVE;
    int fd = -1;
    if (path) {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
            int e = errno;
            snprintf(err, errlen, "memory file %s: %s", path, strerror(e));
            if (fd >= 0)
                close(fd);
            munmap(aligned, size);
            return -e;
        }
        flags |= MAP_SHARED;
    } else {
        flags |= MAP_PRIVATE | MAP_ANONYMOUS;
    }
    if (mmap(aligned, size, PROT_READ | PROT_WRITE, flags, fd, 0) == MAP_FAILED) {
        int e = errno;
        snprintf(err, errlen, "cannot map %llu MiB of guest memory: %s",
                 (unsigned long long)(size >> 20), strerror(e));
        if (fd >= 0)
            close(fd);
        munmap(aligned, size);
        return -e;
    }
    madvise(aligned, size, MADV_HUGEPAGE);  /* best effort */
    m->base = aligned;
    m->fd = fd;
    layout(m, size);
    return 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23    /* Linux 5.14 */
#endif

int gmem_prealloc(struct guest_mem *m, char *err, size_t errlen)
{
    if (madvise(m->base, m->ram_size, MADV_POPULATE_WRITE) == 0)
        return 0;
    if (errno != EINVAL) {
        snprintf(err, errlen, "cannot preallocate %llu MiB of guest memory: %s",
                 (unsigned long long)(m->ram_size >> 20), strerror(errno));
        return -1;
    }
    for (uint64_t off = 0; off < m->ram_size; off += 4096)   /* older kernels */
        ((volatile uint8_t *)m->base)[off] = 0;
    return 0;
}

void gmem_init_fake(struct guest_mem *m, uint64_t size, uint8_t *buf)
{
    memset(m, 0, sizeof(*m));
    m->fd = -1;
    m->base = buf;
    layout(m, size);
}

void gmem_destroy(struct guest_mem *m)
{
    if (m->base)
        munmap(m->base, m->ram_size);
    if (m->fd >= 0)
        close(m->fd);
    for (int i = 0; i < GMEM_MAX_REGIONS; i++) {
        free(m->dev_dirty[i]);
        m->dev_dirty[i] = NULL;
    }
    m->base = NULL;
    m->fd = -1;
}

void *gmem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < m->nregions; i++) {
        const struct gmem_region *r = &m->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
            return r->hva + (gpa - r->gpa);
    }
    return NULL;
}

uint64_t gmem_top(const struct guest_mem *m)
{
    const struct gmem_region *r = &m->regions[m->nregions - 1];
    return r->gpa + r->size;
}

uint64_t gmem_low_size(const struct guest_mem *m)
{
    return m->regions[0].size;
}

void gmem_mark_dirty(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
    if (!len || !atomic_load(&m->dev_tracking))
        return;
    for (int i = 0; i < m->nregions; i++) {
        const struct gmem_region *r = &m->regions[i];
        uint64_t *bits = m->dev_dirty[i];
        if (!bits || gpa < r->gpa || gpa - r->gpa >= r->size)
            continue;
        uint64_t first = (gpa - r->gpa) >> 12;
        uint64_t last = (gpa - r->gpa + len - 1) >> 12;
        if (last >= r->size >> 12)
            last = (r->size >> 12) - 1;
        for (uint64_t pg = first; pg <= last; pg++)
            __atomic_fetch_or(&bits[pg / 64], 1ull << (pg % 64), __ATOMIC_RELAXED);
    }
}
