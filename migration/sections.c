/* State tables for KVM's architectural state and Ferry's devices. The
 * kernel's own ABI structs are described field by field where the fields are
 * meaningful on their own, and as fixed byte blocks where the kernel defines
 * an opaque image (LAPIC registers, XSAVE area, irqchip, vCPU events). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>

#include "migration/sections.h"
#include "vmm/log.h"

static const struct vmstate_field seg_fields[] = {
    VMSTATE_U64(struct kvm_segment, base), VMSTATE_U32(struct kvm_segment, limit),
    VMSTATE_U16(struct kvm_segment, selector), VMSTATE_U8(struct kvm_segment, type),
    VMSTATE_U8(struct kvm_segment, present), VMSTATE_U8(struct kvm_segment, dpl),
    VMSTATE_U8(struct kvm_segment, db), VMSTATE_U8(struct kvm_segment, s),
    VMSTATE_U8(struct kvm_segment, l), VMSTATE_U8(struct kvm_segment, g),
    VMSTATE_U8(struct kvm_segment, avl), VMSTATE_U8(struct kvm_segment, unusable),
    VMSTATE_END,
};
static const struct vmstate_desc vmstate_seg = { "segment", 1, 1, seg_fields, sizeof(struct kvm_segment) };

static const struct vmstate_field dtable_fields[] = {
    VMSTATE_U64(struct kvm_dtable, base), VMSTATE_U16(struct kvm_dtable, limit), VMSTATE_END,
};
static const struct vmstate_desc vmstate_dtable = { "dtable", 1, 1, dtable_fields, sizeof(struct kvm_dtable) };

#define R(m) VMSTATE_U64(struct kvm_regs, m)
static const struct vmstate_field regs_fields[] = {
    R(rax), R(rbx), R(rcx), R(rdx), R(rsi), R(rdi), R(rsp), R(rbp), R(r8), R(r9), R(r10),
    R(r11), R(r12), R(r13), R(r14), R(r15), R(rip), R(rflags), VMSTATE_END,
};
#undef R
static const struct vmstate_desc vmstate_regs = { "regs", 1, 1, regs_fields, sizeof(struct kvm_regs) };

#define SEG(m) VMSTATE_STRUCT(struct kvm_sregs, m, vmstate_seg)
#define S64(m) VMSTATE_U64(struct kvm_sregs, m)
static const struct vmstate_field sregs_fields[] = {
    SEG(cs), SEG(ds), SEG(es), SEG(fs), SEG(gs), SEG(ss), SEG(tr), SEG(ldt),
    VMSTATE_STRUCT(struct kvm_sregs, gdt, vmstate_dtable),
    VMSTATE_STRUCT(struct kvm_sregs, idt, vmstate_dtable),
    S64(cr0), S64(cr2), S64(cr3), S64(cr4), S64(cr8), S64(efer), S64(apic_base),
    VMSTATE_ARRAY_U64(struct kvm_sregs, interrupt_bitmap), VMSTATE_END,
};
#undef SEG
#undef S64
static const struct vmstate_desc vmstate_sregs = { "sregs", 1, 1, sregs_fields, sizeof(struct kvm_sregs) };

static const struct vmstate_field fpu_fields[] = {
    VMSTATE_BYTES(struct kvm_fpu, fpr), VMSTATE_U16(struct kvm_fpu, fcw),
    VMSTATE_U16(struct kvm_fpu, fsw), VMSTATE_U8(struct kvm_fpu, ftwx),
    VMSTATE_U16(struct kvm_fpu, last_opcode), VMSTATE_U64(struct kvm_fpu, last_ip),
    VMSTATE_U64(struct kvm_fpu, last_dp), VMSTATE_BYTES(struct kvm_fpu, xmm),
    VMSTATE_U32(struct kvm_fpu, mxcsr), VMSTATE_END,
};
static const struct vmstate_desc vmstate_fpu = { "fpu", 1, 1, fpu_fields, sizeof(struct kvm_fpu) };

static const struct vmstate_field xcr_fields[] = {
    VMSTATE_U32(struct kvm_xcr, xcr), VMSTATE_U64(struct kvm_xcr, value), VMSTATE_END,
};
static const struct vmstate_desc vmstate_xcr = { "xcr", 1, 1, xcr_fields, sizeof(struct kvm_xcr) };
static const struct vmstate_field xcrs_fields[] = {
    VMSTATE_U32(struct kvm_xcrs, flags),
    VMSTATE_VARRAY_U32_STRUCT(struct kvm_xcrs, xcrs, nr_xcrs, KVM_MAX_XCRS, vmstate_xcr),
    VMSTATE_END,
};
static const struct vmstate_desc vmstate_xcrs = { "xcrs", 1, 1, xcrs_fields, sizeof(struct kvm_xcrs) };

static const struct vmstate_field dregs_fields[] = {
    VMSTATE_ARRAY_U64(struct kvm_debugregs, db), VMSTATE_U64(struct kvm_debugregs, dr6),
    VMSTATE_U64(struct kvm_debugregs, dr7), VMSTATE_U64(struct kvm_debugregs, flags),
    VMSTATE_END,
};
static const struct vmstate_desc vmstate_dregs = { "debugregs", 1, 1, dregs_fields, sizeof(struct kvm_debugregs) };

static const struct vmstate_field msr_fields[] = {
    VMSTATE_U32(struct kvm_msr_entry, index), VMSTATE_U64(struct kvm_msr_entry, data), VMSTATE_END,
};
static const struct vmstate_desc vmstate_msr = { "msr", 1, 1, msr_fields, sizeof(struct kvm_msr_entry) };

static const struct vmstate_field cpu_fields[] = {
    VMSTATE_U32(struct cpu_section, id),
    VMSTATE_STRUCT(struct cpu_section, s.regs, vmstate_regs),
    VMSTATE_STRUCT(struct cpu_section, s.sregs, vmstate_sregs),
    VMSTATE_STRUCT(struct cpu_section, s.fpu, vmstate_fpu),
    VMSTATE_ARRAY_U32(struct cpu_section, s.xsave.region),
    VMSTATE_STRUCT(struct cpu_section, s.xcrs, vmstate_xcrs),
    VMSTATE_BYTES(struct cpu_section, s.events),
    VMSTATE_U32(struct cpu_section, s.mp.mp_state),
    VMSTATE_STRUCT(struct cpu_section, s.dregs, vmstate_dregs),
    VMSTATE_BYTES(struct cpu_section, s.lapic.regs),
    VMSTATE_VARRAY_U32_STRUCT(struct cpu_section, s.msrs, s.nmsrs, KVM_STATE_MAX_MSRS, vmstate_msr),
    VMSTATE_END,
};
const struct vmstate_desc vmstate_cpu = { "cpu", 1, 1, cpu_fields, sizeof(struct cpu_section) };

static const struct vmstate_field pit_channel_fields[] = {
    VMSTATE_U32(struct kvm_pit_channel_state, count),
    VMSTATE_U16(struct kvm_pit_channel_state, latched_count),
    VMSTATE_U8(struct kvm_pit_channel_state, count_latched),
    VMSTATE_U8(struct kvm_pit_channel_state, status_latched),
    VMSTATE_U8(struct kvm_pit_channel_state, status),
    VMSTATE_U8(struct kvm_pit_channel_state, read_state),
    VMSTATE_U8(struct kvm_pit_channel_state, write_state),
    VMSTATE_U8(struct kvm_pit_channel_state, write_latch),
    VMSTATE_U8(struct kvm_pit_channel_state, rw_mode),
    VMSTATE_U8(struct kvm_pit_channel_state, mode),
    VMSTATE_U8(struct kvm_pit_channel_state, bcd),
    VMSTATE_U8(struct kvm_pit_channel_state, gate),
    VMSTATE_U64(struct kvm_pit_channel_state, count_load_time),
    VMSTATE_END,
};
static const struct vmstate_desc vmstate_pit_channel = {
    "pit-channel", 1, 1, pit_channel_fields, sizeof(struct kvm_pit_channel_state) };

static const struct vmstate_field vm_fields[] = {
    VMSTATE_BYTES(struct vm_kvm_state, pic_master.chip),
    VMSTATE_BYTES(struct vm_kvm_state, pic_slave.chip),
    VMSTATE_BYTES(struct vm_kvm_state, ioapic.chip),
    VMSTATE_ARRAY_STRUCT(struct vm_kvm_state, pit.channels, vmstate_pit_channel),
    VMSTATE_U32(struct vm_kvm_state, pit.flags),
    VMSTATE_U64(struct vm_kvm_state, clock.clock),
    /* v2: the host's wall clock at save, so the destination can move the
     * guest clock forward by the time the VM spent in flight */
    VMSTATE_U32_V(struct vm_kvm_state, clock.flags, 2),
    VMSTATE_U64_V(struct vm_kvm_state, clock.realtime, 2),
    /* v3: the guest's TSC rate, which the destination must keep */
    VMSTATE_U32_V(struct vm_kvm_state, tsc_khz, 3),
    VMSTATE_END,
};
const struct vmstate_desc vmstate_vm = { "vm", 3, 1, vm_fields, sizeof(struct vm_kvm_state) };

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int sections_save(struct vm *vm, struct buf *out, char *err, size_t errlen)
{
    /* The vCPUs first, then kvmclock, and each TSC moved on to the clock's
     * instant: the destination advances both from that one instant, and a
     * TSC read earlier than kvmclock by the ioctls between them (0.65 ms in
     * the loaded lab) would put the guest's TSC and kvmclock that far apart,
     * which Linux's clocksource watchdog calls an unstable TSC. */
    struct cpu_section *cs = calloc((size_t)vm->ncpus, sizeof(*cs));
    uint64_t *t_read = calloc((size_t)vm->ncpus, sizeof(*t_read));
    struct vm_kvm_state vs;
    int rc = -1;
    if (!cs || !t_read)
        goto nomem;
    for (int i = 0; i < vm->ncpus; i++) {
        cs[i].id = (uint32_t)i;
        if (vcpu_state_get(vm->vcpus[i].fd, &vm->msrs, &cs[i].s, err, errlen) < 0)
            goto out;
        t_read[i] = realtime_ns();   /* the MSRs are the last thing vcpu_state_get reads */
    }
    if (vm_state_get(vm->fd, vm->vcpus[0].fd, &vs, err, errlen) < 0)
        goto out;
    for (int i = 0; i < vm->ncpus; i++)
        if ((vs.clock.flags & KVM_CLOCK_REALTIME) && vs.clock.realtime > t_read[i])
            vcpu_state_advance_tsc(&cs[i].s, vs.clock.realtime - t_read[i], vs.tsc_khz);
    log_info("guest clock saved: kvmclock %.6f s at host time %.6f s (flags 0x%x), vCPU 0's TSC %llu at %u kHz",
             vs.clock.clock / 1e9, vs.clock.realtime / 1e9, vs.clock.flags,
             (unsigned long long)vcpu_state_tsc(&cs[0].s), vs.tsc_khz);
    if (vmstate_save(&vmstate_vm, &vs, out) < 0)
        goto nomem;
    for (int i = 0; i < vm->ncpus; i++)
        if (vmstate_save(&vmstate_cpu, &cs[i], out) < 0)
            goto nomem;
    rc = 0;
    goto out;
nomem:
    snprintf(err, errlen, "cannot encode VM state: out of memory");
out:
    free(cs);
    free(t_read);
    if (rc < 0)
        return -1;
    for (int i = 0; i < vm->nmig_devs; i++) {
        const struct mig_device *d = &vm->mig_devs[i];
        void *st = calloc(1, d->state_size);
        if (!st)
            goto dev_nomem;
        int r = d->save(d->opaque, st, err, errlen);
        if (r == 0 && vmstate_save(d->desc, st, out) < 0) {
            snprintf(err, errlen, "cannot encode state section '%s'", d->desc->name);
            r = -1;
        }
        free(st);
        if (r < 0)
            return -1;
    }
    return 0;
dev_nomem:
    snprintf(err, errlen, "cannot encode VM state: out of memory");
    return -1;
}

int staged_init(struct staged_state *st, const struct vm *vm)
{
    memset(st, 0, sizeof(*st));
    st->cpu = calloc((size_t)vm->ncpus, sizeof(*st->cpu));
    st->cpu_seen = calloc((size_t)vm->ncpus, sizeof(*st->cpu_seen));
    if (!st->cpu || !st->cpu_seen)
        return -1;
    for (int i = 0; i < vm->nmig_devs; i++)
        if (!(st->dev[i] = calloc(1, vm->mig_devs[i].state_size)))
            return -1;
    return 0;
}

void staged_free(struct staged_state *st)
{
    free(st->cpu);
    free(st->cpu_seen);
    for (int i = 0; i < VM_MAX_MIG_DEVICES; i++)
        free(st->dev[i]);
    memset(st, 0, sizeof(*st));
}

static int once(bool *seen, const char *what, char *err, size_t errlen)
{
    if (*seen) {
        snprintf(err, errlen, "state section '%s' sent twice", what);
        return -1;
    }
    *seen = true;
    return 0;
}

int sections_parse(struct staged_state *st, const struct vm *vm, const uint8_t *p, size_t len,
                   char *err, size_t errlen)
{
    int ncpus = vm->ncpus;
    struct rbuf in = RBUF(p, len);
    struct cpu_section *cs = NULL;
    int rc = -1;
    while (rbuf_left(&in)) {
        char name[256];
        if (vmstate_peek_name(&in, name) < 0) {
            snprintf(err, errlen, "malformed state section header");
            goto out;
        }
        if (!strcmp(name, "vm")) {
            if (once(&st->have_vm, name, err, errlen) < 0 ||
                vmstate_load(&vmstate_vm, &st->vm, &in, err, errlen) < 0)
                goto out;
        } else if (!strcmp(name, "cpu")) {
            if (!cs && !(cs = calloc(1, sizeof(*cs)))) {
                snprintf(err, errlen, "out of memory");
                goto out;
            }
            if (vmstate_load(&vmstate_cpu, cs, &in, err, errlen) < 0)
                goto out;
            if (cs->id >= (uint32_t)ncpus) {
                snprintf(err, errlen, "state for vCPU %u but the VM has %d", cs->id, ncpus);
                goto out;
            }
            if (once(&st->cpu_seen[cs->id], "cpu", err, errlen) < 0)
                goto out;
            st->cpu[cs->id] = *cs;
            st->ncpus_seen++;
        } else {
            int i = 0;
            while (i < vm->nmig_devs && strcmp(vm->mig_devs[i].desc->name, name))
                i++;
            if (i == vm->nmig_devs) {
                snprintf(err, errlen, "unknown state section '%s' (a device this VM does not have)", name);
                goto out;
            }
            if (once(&st->dev_seen[i], name, err, errlen) < 0 ||
                vmstate_load(vm->mig_devs[i].desc, st->dev[i], &in, err, errlen) < 0)
                goto out;
        }
    }
    rc = 0;
out:
    free(cs);
    return rc;
}

/* The vCPUs, with their TSCs at the source's rate and moved on by the time
 * the VM spent in flight, so that they agree with kvmclock, which
 * vm_state_set moves on by the same time (see migration/kvm_state.h). */
static int cpus_apply(struct vm *vm, const struct staged_state *st, char *err, size_t errlen)
{
    /* 0 (no move) when the source sent no wall time, or the clocks disagree */
    uint64_t since = (st->vm.clock.flags & KVM_CLOCK_REALTIME) ? st->vm.clock.realtime : 0;
    for (int i = 0; i < vm->ncpus; i++) {
        int fd = vm->vcpus[i].fd;
        if (vcpu_tsc_khz_set(vm->fd, fd, st->vm.tsc_khz, err, errlen) < 0 ||
            vcpu_state_set_moved(fd, &st->cpu[i].s, since, vcpu_tsc_khz(fd), err, errlen) < 0)   /* the rate just set */
            return -1;
    }
    return 0;
}

/* How far the restored kvmclock and vCPU 0's TSC are from the source's
 * values moved on by the time in flight: one line, a warning past 5 ms (a
 * guest whose clock jumps here sees it in CLOCK_MONOTONIC). */
static void clock_report(struct vm *vm, const struct staged_state *st)
{
    const struct kvm_clock_data *src = &st->vm.clock;
    struct kvm_clock_data now = { 0 };
    if (!(src->flags & KVM_CLOCK_REALTIME)) {
        log_info("guest clock restored as saved (the source sent no host time: the guest's clock "
                 "falls behind by the pause)");
        return;
    }
    if (ioctl(vm->fd, KVM_GET_CLOCK, &now) < 0) {
        log_warn("guest clock restored; cannot read it back: KVM_GET_CLOCK: %s", strerror(errno));
        return;
    }
    uint64_t tsc = vcpu_tsc_read(vm->vcpus[0].fd), tsc0 = vcpu_state_tsc(&st->cpu[0].s);
    uint64_t rt = (now.flags & KVM_CLOCK_REALTIME) ? now.realtime : realtime_ns();
    double flight = ((double)rt - (double)src->realtime) / 1e6;
    double clock_off = ((double)now.clock - (double)src->clock) / 1e6 - flight;
    double tsc_off = st->vm.tsc_khz ? ((double)tsc - (double)tsc0) / st->vm.tsc_khz - flight : 0;
    bool bad = clock_off > 5 || clock_off < -5 || tsc_off > 5 || tsc_off < -5;
    log_msg(bad ? LOG_WARN : LOG_INFO, "guest clock restored after %.1f ms in flight: kvmclock %+.3f ms, "
            "vCPU 0's TSC %+.3f ms from the source's moved on by that (kvmclock %.6f s, TSC %llu, flags 0x%x)",
            flight, clock_off, tsc_off, now.clock / 1e9, (unsigned long long)tsc, now.flags);
}

int sections_apply(struct vm *vm, const struct staged_state *st, char *err, size_t errlen)
{
    if (!st->have_vm || st->ncpus_seen != (uint32_t)vm->ncpus) {
        snprintf(err, errlen, "incomplete state: vm section %s, %u of %d vCPUs",
                 st->have_vm ? "present" : "missing", st->ncpus_seen, vm->ncpus);
        return -1;
    }
    for (int i = 0; i < vm->nmig_devs; i++) {
        if (!st->dev_seen[i]) {
            snprintf(err, errlen, "incomplete state: no section for device '%s'", vm->mig_devs[i].desc->name);
            return -1;
        }
    }
    if (cpus_apply(vm, st, err, errlen) < 0 || vm_state_set(vm->fd, &st->vm, err, errlen) < 0)
        return -1;
    clock_report(vm, st);
    for (int i = 0; i < vm->nmig_devs; i++) {
        const struct mig_device *d = &vm->mig_devs[i];
        if (d->load(d->opaque, st->dev[i], err, errlen) < 0)
            return -1;
    }
    return 0;
}
