/* The architectural state KVM keeps for a VM and its vCPUs, captured and
 * restored with the standard KVM ioctls. Migration describes these structs
 * with state tables (migration/sections.c); this file only moves them in and
 * out of the kernel, in the order KVM requires. */
#ifndef FERRY_KVM_STATE_H
#define FERRY_KVM_STATE_H

#include <stdint.h>
#include <linux/kvm.h>

#define KVM_STATE_MAX_MSRS 256

struct msr_list {
    uint32_t n;
    uint32_t index[KVM_STATE_MAX_MSRS];
};

struct vcpu_kvm_state {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_fpu fpu;
    struct kvm_xsave xsave;
    struct kvm_xcrs xcrs;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    struct kvm_debugregs dregs;
    struct kvm_lapic_state lapic;
    uint32_t nmsrs;
    struct kvm_msr_entry msrs[KVM_STATE_MAX_MSRS];
};

struct vm_kvm_state {
    struct kvm_irqchip pic_master, pic_slave, ioapic;
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
};

/* The MSRs KVM says to migrate (KVM_GET_MSR_INDEX_LIST), keeping only those
 * this vCPU can actually read (KVM_GET_MSRS stops at the first it cannot). */
int msr_list_build(int kvm_fd, int vcpu_fd, struct msr_list *l, char *err, size_t errlen);

/* Each returns 0 or -1 with "KVM_GET_xxx: reason" in err. The VM must be paused. */
int vcpu_state_get(int vcpu_fd, const struct msr_list *l, struct vcpu_kvm_state *s,
                   char *err, size_t errlen);
int vcpu_state_set(int vcpu_fd, const struct vcpu_kvm_state *s, char *err, size_t errlen);
int vm_state_get(int vm_fd, struct vm_kvm_state *s, char *err, size_t errlen);
int vm_state_set(int vm_fd, const struct vm_kvm_state *s, char *err, size_t errlen);

#endif
