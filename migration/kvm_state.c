#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>

#include "migration/kvm_state.h"

#define TRY(fd, req, arg, name)                                                   \
    do {                                                                          \
        if (ioctl((fd), (req), (arg)) < 0) {                                      \
            snprintf(err, errlen, "%s: %s", (name), strerror(errno));           \
            return -1;                                                            \
        }                                                                         \
    } while (0)

int msr_list_build(int kvm_fd, int vcpu_fd, struct msr_list *l, char *err, size_t errlen)
{
    struct {
        struct kvm_msr_list h;
        uint32_t idx[1024];
    } all = { .h.nmsrs = 1024 };
    TRY(kvm_fd, KVM_GET_MSR_INDEX_LIST, &all, "KVM_GET_MSR_INDEX_LIST");
    l->n = 0;
    for (uint32_t i = 0; i < all.h.nmsrs && l->n < KVM_STATE_MAX_MSRS; i++) {
        struct {
            struct kvm_msrs h;
            struct kvm_msr_entry e;
        } one = { .h.nmsrs = 1, .e.index = all.idx[i] };
        if (ioctl(vcpu_fd, KVM_GET_MSRS, &one) == 1)
            l->index[l->n++] = all.idx[i];
    }
    return 0;
}

static int msrs_io(int vcpu_fd, unsigned long req, struct kvm_msr_entry *e, uint32_t n,
                   const char *name, char *err, size_t errlen)
{
    struct kvm_msrs *m = malloc(sizeof(*m) + n * sizeof(*e));
    if (!m) {
        snprintf(err, errlen, "%s: out of memory", name);
        return -1;
    }
    m->nmsrs = n;
    m->pad = 0;
    memcpy(m->entries, e, n * sizeof(*e));
    int r = ioctl(vcpu_fd, req, m);
    if (r == (int)n)
        memcpy(e, m->entries, n * sizeof(*e));
    free(m);
    if (r != (int)n) {
        if (r < 0)
            snprintf(err, errlen, "%s: %s", name, strerror(errno));
        else
            snprintf(err, errlen, "%s: MSR 0x%x rejected", name, e[r].index);
        return -1;
    }
    return 0;
}

/* Where IA32_TSC is among n saved MSRs, or -1. */
static int tsc_index(const struct kvm_msr_entry *e, uint32_t n)
{
    for (uint32_t i = 0; i < n && i < KVM_STATE_MAX_MSRS; i++)
        if (e[i].index == MSR_IA32_TSC)
            return (int)i;
    return -1;
}

int vcpu_state_get(int fd, const struct msr_list *l, struct vcpu_kvm_state *s,
                   char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    TRY(fd, KVM_GET_REGS, &s->regs, "KVM_GET_REGS");
    TRY(fd, KVM_GET_SREGS, &s->sregs, "KVM_GET_SREGS");
    TRY(fd, KVM_GET_FPU, &s->fpu, "KVM_GET_FPU");
    TRY(fd, KVM_GET_XSAVE, &s->xsave, "KVM_GET_XSAVE");
    TRY(fd, KVM_GET_XCRS, &s->xcrs, "KVM_GET_XCRS");
    TRY(fd, KVM_GET_VCPU_EVENTS, &s->events, "KVM_GET_VCPU_EVENTS");
    TRY(fd, KVM_GET_MP_STATE, &s->mp, "KVM_GET_MP_STATE");
    TRY(fd, KVM_GET_DEBUGREGS, &s->dregs, "KVM_GET_DEBUGREGS");
    TRY(fd, KVM_GET_LAPIC, &s->lapic, "KVM_GET_LAPIC");
    s->nmsrs = l->n;
    for (uint32_t i = 0; i < l->n; i++)
        s->msrs[i].index = l->index[i];
    return msrs_io(fd, KVM_GET_MSRS, s->msrs, s->nmsrs, "KVM_GET_MSRS", err, errlen);
}

/* Order matters: sregs (EFER, APIC base) before MSRs and the LAPIC; XCRs
 * before XSAVE; events and MP state last so nothing overwrites them. */
int vcpu_state_set(int fd, const struct vcpu_kvm_state *s, char *err, size_t errlen)
{
    return vcpu_state_set_moved(fd, s, 0, 0, err, errlen);
}

int vcpu_state_set_moved(int fd, const struct vcpu_kvm_state *s, uint64_t since_realtime, uint32_t khz,
                         char *err, size_t errlen)
{
    TRY(fd, KVM_SET_SREGS, &s->sregs, "KVM_SET_SREGS");
    TRY(fd, KVM_SET_REGS, &s->regs, "KVM_SET_REGS");
    if (s->xcrs.nr_xcrs)  /* none on CPUs without XSAVE, where KVM refuses the call */
        TRY(fd, KVM_SET_XCRS, &s->xcrs, "KVM_SET_XCRS");
    TRY(fd, KVM_SET_XSAVE, &s->xsave, "KVM_SET_XSAVE");
    struct kvm_msr_entry msrs[KVM_STATE_MAX_MSRS];
    uint32_t n = s->nmsrs < KVM_STATE_MAX_MSRS ? s->nmsrs : KVM_STATE_MAX_MSRS;
    memcpy(msrs, s->msrs, n * sizeof(msrs[0]));
    if (since_realtime) {
        /* the time in flight read just before the TSC is written: each
         * ioctl between the two would leave the TSC that much behind kvmclock */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
        int t = tsc_index(msrs, n);
        if (t >= 0 && ns > since_realtime)
            msrs[t].data = tsc_advance(msrs[t].data, ns - since_realtime, khz);
    }
    if (msrs_io(fd, KVM_SET_MSRS, msrs, n, "KVM_SET_MSRS", err, errlen) < 0)
        return -1;
    TRY(fd, KVM_SET_LAPIC, &s->lapic, "KVM_SET_LAPIC");
    /* KVM ignores a TSC deadline written while the LAPIC timer is not in
     * TSC-deadline mode, and KVM_SET_LAPIC does not carry the deadline: the
     * write above was dropped. Without this second write the vCPU's next
     * timer interrupt never comes, and a NOHZ guest's timers on that vCPU
     * stall until something programs an earlier one. */
    for (uint32_t i = 0; i < n; i++)
        if (msrs[i].index == MSR_IA32_TSC_DEADLINE &&
            msrs_io(fd, KVM_SET_MSRS, &msrs[i], 1, "KVM_SET_MSRS (TSC deadline)", err, errlen) < 0)
            return -1;
    TRY(fd, KVM_SET_DEBUGREGS, &s->dregs, "KVM_SET_DEBUGREGS");
    TRY(fd, KVM_SET_VCPU_EVENTS, &s->events, "KVM_SET_VCPU_EVENTS");
    TRY(fd, KVM_SET_MP_STATE, &s->mp, "KVM_SET_MP_STATE");
    return 0;
}

int vm_state_get(int fd, int vcpu0_fd, struct vm_kvm_state *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
    s->pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    s->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    TRY(fd, KVM_GET_IRQCHIP, &s->pic_master, "KVM_GET_IRQCHIP (PIC master)");
    TRY(fd, KVM_GET_IRQCHIP, &s->pic_slave, "KVM_GET_IRQCHIP (PIC slave)");
    TRY(fd, KVM_GET_IRQCHIP, &s->ioapic, "KVM_GET_IRQCHIP (IOAPIC)");
    TRY(fd, KVM_GET_PIT2, &s->pit, "KVM_GET_PIT2");
    TRY(fd, KVM_GET_CLOCK, &s->clock, "KVM_GET_CLOCK");
    s->tsc_khz = vcpu_tsc_khz(vcpu0_fd);
    return 0;
}

int vm_state_set(int fd, const struct vm_kvm_state *s, char *err, size_t errlen)
{
    /* chip_id is not part of the migrated state (only the chip images are):
     * without it every KVM_SET_IRQCHIP would load the PIC master */
    struct kvm_irqchip chip = s->pic_master;
    chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
    TRY(fd, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP (PIC master)");
    chip = s->pic_slave;
    chip.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    TRY(fd, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP (PIC slave)");
    chip = s->ioapic;
    chip.chip_id = KVM_IRQCHIP_IOAPIC;
    TRY(fd, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP (IOAPIC)");
    TRY(fd, KVM_SET_PIT2, &s->pit, "KVM_SET_PIT2");
    /* With KVM_CLOCK_REALTIME, KVM advances the clock by the wall time since
     * the source read it: the guest's clock does not fall behind by the
     * downtime (hosts are expected to keep NTP time, as for any migration). */
    struct kvm_clock_data c = { .clock = s->clock.clock };
    if ((s->clock.flags & KVM_CLOCK_REALTIME) &&
        (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK) & KVM_CLOCK_REALTIME)) {
        c.flags = KVM_CLOCK_REALTIME;
        c.realtime = s->clock.realtime;
    }
    TRY(fd, KVM_SET_CLOCK, &c, "KVM_SET_CLOCK");
    return 0;
}

uint64_t tsc_advance(uint64_t tsc, uint64_t ns, uint32_t khz)
{
    return tsc + (uint64_t)((unsigned __int128)ns * khz / 1000000u);
}

void vcpu_state_advance_tsc(struct vcpu_kvm_state *s, uint64_t ns, uint32_t khz)
{
    int t = tsc_index(s->msrs, s->nmsrs);
    if (t >= 0)
        s->msrs[t].data = tsc_advance(s->msrs[t].data, ns, khz);
}

uint64_t vcpu_state_tsc(const struct vcpu_kvm_state *s)
{
    int t = tsc_index(s->msrs, s->nmsrs);
    return t >= 0 ? s->msrs[t].data : 0;
}

uint64_t vcpu_tsc_read(int vcpu_fd)
{
    struct kvm_msr_entry e = { .index = MSR_IA32_TSC };
    char err[64];
    return msrs_io(vcpu_fd, KVM_GET_MSRS, &e, 1, "KVM_GET_MSRS (TSC)", err, sizeof(err)) < 0 ? 0 : e.data;
}

uint32_t vcpu_tsc_khz(int vcpu_fd)
{
    int khz = ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0);
    return khz > 0 ? (uint32_t)khz : 0;
}

/* Within this of the host's rate, KVM runs the guest's TSC at the host's
 * rate and reports the rate asked for (its tsc_tolerance_ppm default). */
#define TSC_TOLERANCE_PPM 250u

int vcpu_tsc_khz_set(int vm_fd, int vcpu_fd, uint32_t khz, char *err, size_t errlen)
{
    uint32_t here = vcpu_tsc_khz(vcpu_fd);
    if (!khz || khz == here)
        return 0;
    /* Without TSC scaling KVM accepts a faster rate and emulates it by
     * moving the TSC on at guest entries: the guest's TSC then stalls and
     * jumps, and in the lab its clock stepped 14.7 s across a migration.
     * Only KVM's tolerance is safe there. */
    uint64_t diff = khz > here ? khz - here : here - khz;
    bool scaling = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0;
    int r = -1, e = 0;
    if (scaling || diff * 1000000u <= (uint64_t)here * TSC_TOLERANCE_PPM) {
        r = ioctl(vcpu_fd, KVM_SET_TSC_KHZ, (unsigned long)khz);
        e = errno;
    }
    /* read back: some KVMs accept a rate they do not apply */
    if (r < 0 || vcpu_tsc_khz(vcpu_fd) != khz) {
        snprintf(err, errlen, "the guest's TSC runs at %u kHz and KVM here cannot run it at that rate "
                 "(this host: %u kHz, no TSC scaling)%s%s", khz, here, e ? ": " : "", e ? strerror(e) : "");
        /* KVM records the rate asked for even when it refuses it */
        ioctl(vcpu_fd, KVM_SET_TSC_KHZ, (unsigned long)here);
        return -1;
    }
    return 0;
}
