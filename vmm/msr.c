#include <stdlib.h>
#include <sys/ioctl.h>

#include "vmm/vm.h"

#define MSR_IA32_MISC_ENABLE 0x1a0
#define MISC_ENABLE_FAST_STRING 0x1ull

/* Boot-time MSRs that firmware would set. The TSC is left alone so KVM
 * keeps all vCPUs' TSCs synchronised. */
int msr_setup_boot(int vcpu_fd)
{
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e[1];
    } m = { .h.nmsrs = 1, .e[0] = { .index = MSR_IA32_MISC_ENABLE, .data = MISC_ENABLE_FAST_STRING } };
    return ioctl(vcpu_fd, KVM_SET_MSRS, &m) == 1 ? 0 : -1;
}
