/* vCPUs: one thread each running KVM_RUN and dispatching exits to devices. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "boot/x86.h"
#include "vmm/log.h"
#include "vmm/vm.h"

int vcpu_create(struct vm *vm, int id, char *err, size_t errlen)
{
    struct vcpu *v = &vm->vcpus[id];
    v->vm = vm;
    v->id = id;
    v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
    if (v->fd < 0) {
        snprintf(err, errlen, "KVM_CREATE_VCPU %d: %s", id, strerror(errno));
        return -1;
    }
    int sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    v->run = sz > 0 ? mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0) : MAP_FAILED;
    if (v->run == MAP_FAILED) {
        snprintf(err, errlen, "cannot map vCPU %d run area: %s", id, strerror(errno));
        return -1;
    }

    size_t csz = sizeof(*vm->cpuid) + vm->cpuid->nent * sizeof(vm->cpuid->entries[0]);
    struct kvm_cpuid2 *c = malloc(csz);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(c, vm->cpuid, csz);
    cpuid_filter(c, id, vm->ncpus);
    v->cpu_flags = x86_cpu_flags(c);
    int r = ioctl(v->fd, KVM_SET_CPUID2, c);
    free(c);
    if (r < 0) {
        snprintf(err, errlen, "KVM_SET_CPUID2 on vCPU %d: %s", id, strerror(errno));
        return -1;
    }
    if (msr_setup_boot(v->fd) < 0)
        log_warn("vCPU %d: could not set boot MSRs", id);
    return 0;
}

/* Registers at power-on. Linux starts only the boot vCPU (the others wait for
 * INIT/SIPI in the in-kernel LAPIC); every micro-guest vCPU starts at entry. */
int vcpu_setup_boot(struct vcpu *v, char *err, size_t errlen)
{
    const struct boot_entry *b = &v->vm->boot;
    bool user = b->mode == BOOT_MICROGUEST;
    if (!user && v->id != 0)
        return 0;

    struct kvm_sregs sregs;
    struct kvm_regs regs = { .rflags = 0x2, .rip = b->rip, .rsi = b->rsi, .rdi = b->rdi };
    struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };
    if (user)
        regs.rsi = (uint64_t)v->id;
    if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
        goto fail;
    x86_sregs_long_mode(&sregs, user, v->cpu_flags);
    if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0 || ioctl(v->fd, KVM_SET_REGS, &regs) < 0 ||
        ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
        goto fail;
    if (v->id != 0) {
        struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
        if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
            goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "vCPU %d: cannot set boot registers: %s", v->id, strerror(errno));
    return -1;
}

void vcpu_kick(struct vcpu *v)
{
    /* immediate_exit covers the window before the thread re-enters KVM_RUN;
     * the signal interrupts a KVM_RUN already in progress. */
    v->run->immediate_exit = 1;
    if (v->started)
        pthread_kill(v->thread, SIGUSR1);
}

static void vcpu_report(struct vcpu *v, const char *what)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    if (ioctl(v->fd, KVM_GET_REGS, &r) == 0 && ioctl(v->fd, KVM_GET_SREGS, &s) == 0)
        log_err("vCPU %d: %s at rip=0x%llx rsp=0x%llx cs=0x%x cr0=0x%llx cr3=0x%llx cr4=0x%llx", v->id,
                what, (unsigned long long)r.rip, (unsigned long long)r.rsp, s.cs.selector,
                (unsigned long long)s.cr0, (unsigned long long)s.cr3, (unsigned long long)s.cr4);
    else
        log_err("vCPU %d: %s", v->id, what);
}

/* Returns false when the vCPU thread must stop. */
static bool vcpu_handle_exit(struct vcpu *v)
{
    struct vm *vm = v->vm;
    struct kvm_run *run = v->run;
    char why[96];

    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
            if (!bus_access(&vm->pio, run->io.port, data, run->io.size,
                            run->io.direction == KVM_EXIT_IO_OUT))
                log_debug("unhandled port %s 0x%x", run->io.direction ? "write" : "read", run->io.port);
        return true;
    }
    case KVM_EXIT_MMIO:
        if (!bus_access(&vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
                        run->mmio.is_write))
            log_debug("unhandled MMIO %s 0x%llx", run->mmio.is_write ? "write" : "read",
                      (unsigned long long)run->mmio.phys_addr);
        return true;
    case KVM_EXIT_INTR:
        return true;
    case KVM_EXIT_SHUTDOWN:
        if (vm->boot.mode == BOOT_MICROGUEST) {
            vcpu_report(v, "triple fault (guest crashed)");
            vm_request_stop(vm, STOP_ERROR, 2);
        } else {
            log_info("guest reset (triple fault)");
            vm_request_stop(vm, STOP_RESET, 0);
        }
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
            vm_request_stop(vm, STOP_RESET, 0);
        else
            vm_request_stop(vm, STOP_POWEROFF, 0);
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        snprintf(why, sizeof(why), "VM entry failed (reason 0x%llx)",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        snprintf(why, sizeof(why), "KVM internal error (suberror %u)", run->internal.suberror);
        break;
    default:
        snprintf(why, sizeof(why), "unexpected exit reason %u", run->exit_reason);
        break;
    }
    vcpu_report(v, why);
    vm_request_stop(vm, STOP_ERROR, 2);
    return false;
}

/* Park this vCPU while a pause is requested (migration, `pause`). */
static void vcpu_park(struct vcpu *v)
{
    struct vm *vm = v->vm;
    pthread_mutex_lock(&vm->lock);
    vm->nparked++;
    pthread_cond_broadcast(&vm->cond);
    while (vm->pause_req && !atomic_load(&vm->stopping))
        pthread_cond_wait(&vm->cond, &vm->lock);
    vm->nparked--;
    v->run->immediate_exit = 0;
    pthread_mutex_unlock(&vm->lock);
}

void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    struct vm *vm = v->vm;

    while (!atomic_load(&vm->stopping)) {
        if (__atomic_load_n(&vm->pause_req, __ATOMIC_ACQUIRE)) {
            /* KVM finishes an I/O or MMIO exit (retires the OUT, loads an
             * IN's data) only on the next KVM_RUN: enter once with
             * immediate_exit set, which completes it and returns EINTR
             * without running guest code, so a saved state is consistent. */
            v->run->immediate_exit = 1;
            ioctl(v->fd, KVM_RUN, 0);
            vcpu_park(v);
            continue;
        }
        int r = ioctl(v->fd, KVM_RUN, 0), e = errno;
        throttle_vcpu(v);
        if (r < 0) {
            if (e == EINTR || e == EAGAIN) {
                if (!__atomic_load_n(&vm->pause_req, __ATOMIC_ACQUIRE))
                    v->run->immediate_exit = 0;
                continue;
            }
            char why[96];
            snprintf(why, sizeof(why), "KVM_RUN failed: %s", strerror(e));
            vcpu_report(v, why);
            vm_request_stop(vm, STOP_ERROR, 2);
            break;
        }
        if (!vcpu_handle_exit(v))
            break;
    }
    return NULL;
}
