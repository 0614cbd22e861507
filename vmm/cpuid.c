/* CPUID: what KVM supports, filtered per vCPU. The filter is the single
 * place where a cluster CPU baseline will later mask features. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/vm.h"

struct kvm_cpuid2 *cpuid_supported(int kvm_fd, char *err, size_t errlen)
{
    for (unsigned n = 64; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
        if (!c)
            break;
        c->nent = n;
        if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
            return c;
        int e = errno;
        free(c);
        if (e != E2BIG) {
            snprintf(err, errlen, "KVM_GET_SUPPORTED_CPUID: %s", strerror(e));
            return NULL;
        }
    }
    snprintf(err, errlen, "KVM_GET_SUPPORTED_CPUID: too many entries");
    return NULL;
}

#define CPUID1_ECX_HYPERVISOR (1u << 31)

void cpuid_filter(struct kvm_cpuid2 *c, int vcpu_id, int ncpus)
{
    for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        switch (e->function) {
        case 1:
            /* initial APIC id and logical processor count */
            e->ebx = (e->ebx & 0x0000ffff) | ((uint32_t)vcpu_id << 24) | ((uint32_t)ncpus << 16);
            e->ecx |= CPUID1_ECX_HYPERVISOR;
            break;
        case 0xb:
        case 0x1f:
            e->edx = (uint32_t)vcpu_id;  /* x2APIC id */
            break;
        case 0xa:
            /* no guest PMU: counters do not migrate between hosts */
            e->eax = e->ebx = e->ecx = e->edx = 0;
            break;
        }
    }
}

static const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
    for (unsigned i = 0; i < c->nent; i++)
        if (c->entries[i].function == fn && c->entries[i].index == idx)
            return &c->entries[i];
    return NULL;
}

/* Feature words a guest may have seen and relies on keeping. */
static const struct feature_word {
    uint32_t fn, idx;
    int reg;  /* 0 eax, 1 ebx, 2 ecx, 3 edx */
} feature_words[] = {
    { 1, 0, 2 }, { 1, 0, 3 }, { 7, 0, 1 }, { 7, 0, 2 }, { 7, 0, 3 }, { 0xd, 1, 0 },
    { 0x80000001, 0, 2 }, { 0x80000001, 0, 3 },
};

static uint32_t reg_of(const struct kvm_cpuid_entry2 *e, int reg)
{
    if (!e)
        return 0;
    return reg == 0 ? e->eax : reg == 1 ? e->ebx : reg == 2 ? e->ecx : e->edx;
}

int cpuid_check_compatible(const struct kvm_cpuid2 *want, const struct kvm_cpuid2 *have,
                           char *err, size_t errlen)
{
    static const char *regs[] = { "eax", "ebx", "ecx", "edx" };
    for (size_t i = 0; i < sizeof(feature_words) / sizeof(feature_words[0]); i++) {
        const struct feature_word *w = &feature_words[i];
        uint32_t need = reg_of(cpuid_find(want, w->fn, w->idx), w->reg);
        uint32_t got = reg_of(cpuid_find(have, w->fn, w->idx), w->reg);
        if (need & ~got) {
            snprintf(err, errlen, "this host's CPU lacks features the VM uses: CPUID leaf 0x%x.%u %s bits 0x%08x",
                     w->fn, w->idx, regs[w->reg], need & ~got);
            return -1;
        }
    }
    return 0;
}
