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
    uint32_t tsc_khz;          /* the guest's TSC frequency (0: not known) */
};

#define MSR_IA32_TSC          0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0

/* The MSRs KVM says to migrate (KVM_GET_MSR_INDEX_LIST), keeping only those
 * this vCPU can actually read (KVM_GET_MSRS stops at the first it cannot). */
int msr_list_build(int kvm_fd, int vcpu_fd, struct msr_list *l, char *err, size_t errlen);

/* Each returns 0 or -1 with "KVM_GET_xxx: reason" in err. The VM must be paused. */
int vcpu_state_get(int vcpu_fd, const struct msr_list *l, struct vcpu_kvm_state *s,
                   char *err, size_t errlen);
int vcpu_state_set(int vcpu_fd, const struct vcpu_kvm_state *s, char *err, size_t errlen);
/* The same, with the TSC moved on by the wall time since since_realtime (ns,
 * CLOCK_REALTIME; 0: as saved) at khz, measured just before it is written. */
int vcpu_state_set_moved(int fd, const struct vcpu_kvm_state *s, uint64_t since_realtime, uint32_t khz,
                         char *err, size_t errlen);
int vm_state_get(int vm_fd, int vcpu0_fd, struct vm_kvm_state *s, char *err, size_t errlen);
int vm_state_set(int vm_fd, const struct vm_kvm_state *s, char *err, size_t errlen);

/* Guest time across a migration. The source saved kvmclock together with its
 * host's CLOCK_REALTIME; the VM then spent a while in flight. KVM_SET_CLOCK
 * (KVM_CLOCK_REALTIME) moves kvmclock on by that time, and the guest's TSC
 * must move on by the same time, or a guest whose clocksource is the TSC
 * falls behind by every pause and its deadline timers drift from kvmclock.
 * The TSC is restored as an absolute value, so hosts whose TSCs differ (other
 * boot times, other offsets) need nothing more; a different TSC frequency is
 * set with KVM_SET_TSC_KHZ (vcpu_tsc_khz_set), which needs TSC scaling.
 * Both ends take the TSC at kvmclock's instant: the source moves each saved
 * TSC on to the moment it read kvmclock (sections_save), the destination
 * measures the time in flight just before it writes the TSC
 * (vcpu_state_set_moved): each ioctl's worth of difference would otherwise
 * put TSC and kvmclock apart, and Linux's clocksource watchdog marks the TSC
 * unstable at a fraction of a millisecond. */
/* The TSC value `ns` nanoseconds after `tsc` at `khz` kHz. */
uint64_t tsc_advance(uint64_t tsc, uint64_t ns, uint32_t khz);
/* Moves the MSR_IA32_TSC entry of `s` on by `ns` at `khz` (no-op without one). */
void vcpu_state_advance_tsc(struct vcpu_kvm_state *s, uint64_t ns, uint32_t khz);
/* The vCPU's TSC frequency in kHz, or 0 if KVM does not say. */
uint32_t vcpu_tsc_khz(int vcpu_fd);
/* Runs the vCPU's TSC at `khz`; -1 with a one-line reason when KVM cannot. */
int vcpu_tsc_khz_set(int vm_fd, int vcpu_fd, uint32_t khz, char *err, size_t errlen);
/* The TSC in `s` (0 if it holds none). */
uint64_t vcpu_state_tsc(const struct vcpu_kvm_state *s);
/* The vCPU's TSC now, as userspace reads it (KVM_GET_MSRS); 0 on failure. */
uint64_t vcpu_tsc_read(int vcpu_fd);

#endif
