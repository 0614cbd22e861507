/* Guest RAM: anonymous (or file-backed) 2 MiB-aligned host memory, split
 * around the PCI hole below 4 GiB into at most two KVM memslots. */
#ifndef FERRY_VMM_MEMORY_H
#define FERRY_VMM_MEMORY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GMEM_PCI_HOLE_START 0xc0000000ull   /* 3 GiB: RAM above goes to 4 GiB+ */
#define GMEM_4G             0x100000000ull
#define GMEM_MAX_REGIONS    2

struct gmem_region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *hva;
};

struct guest_mem {
    uint64_t ram_size;                   /* total bytes of RAM */
    int nregions;
    struct gmem_region regions[GMEM_MAX_REGIONS];
    uint8_t *base;                       /* one host mapping holding all regions */
    int fd;                              /* backing file (--mem-path) or -1 */
    /* Pages written by the VMM itself (device DMA): KVM's dirty log only sees
     * vCPU writes, so devices report theirs here while migration tracks. */
    uint64_t *dev_dirty[GMEM_MAX_REGIONS];  /* allocated at the first migration, kept */
    atomic_bool dev_tracking;
};

/* Host pointer for [gpa, gpa+len) if it lies inside one RAM region, else NULL. */
void *gmem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/* Highest GPA + 1 of RAM. */
uint64_t gmem_top(const struct guest_mem *m);
/* RAM below the PCI hole (region 0 size). */
uint64_t gmem_low_size(const struct guest_mem *m);

/* Map host memory for `size` bytes of guest RAM (anonymous, or shared on
 * `path` when not NULL). Returns 0 or -errno with a message in err. */
int gmem_init(struct guest_mem *m, uint64_t size, const char *path, char *err, size_t errlen);
void gmem_destroy(struct guest_mem *m);

/* Devices call this after writing guest RAM [gpa, gpa+len) (cheap when no
 * migration is tracking). */
void gmem_mark_dirty(struct guest_mem *m, uint64_t gpa, uint64_t len);

/* A guest_mem over caller-provided buffers, for unit tests. */
void gmem_init_fake(struct guest_mem *m, uint64_t size, uint8_t *buf);
/* Fault all of RAM in now (the kernel zeroes each page on first touch; a
 * destination that does it before the migration does not do it while pages
 * arrive). 0, or -1 with a reason (not enough memory). */
int gmem_prealloc(struct guest_mem *m, char *err, size_t errlen);

#endif
