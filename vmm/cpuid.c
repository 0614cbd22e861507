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
