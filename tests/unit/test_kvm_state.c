/* Guest time across a migration: the TSC and kvmclock move on by the time in
 * flight, the state section keeps the TSC rate, and a restored vCPU keeps its
 * TSC-deadline timer armed (on this machine's /dev/kvm). */
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <cmocka.h>

#include "migration/kvm_state.h"
#include "migration/sections.h"
#include "vmm/vm.h"

static void test_tsc_advance(void **state)
{
    (void)state;
    assert_int_equal(tsc_advance(1000, 0, 2500000), 1000);
    assert_int_equal(tsc_advance(0, 1000000000ull, 2500000), 2500000000ull);  /* 1 s at 2.5 GHz */
    assert_int_equal(tsc_advance(7, 3000000ull, 1000), 3007);                 /* 3 ms at 1 MHz */
    /* an hour at 5 GHz: the product overflows 64 bits, the result does not */
    assert_int_equal(tsc_advance(1ull << 40, 3600ull * 1000000000ull, 5000000),
                     (1ull << 40) + 3600ull * 5000000000ull);
}

static void test_advance_moves_only_tsc(void **state)
{
    (void)state;
    static struct vcpu_kvm_state s;
    s.nmsrs = 3;
    s.msrs[0] = (struct kvm_msr_entry){ .index = 0x1a0, .data = 1 };
    s.msrs[1] = (struct kvm_msr_entry){ .index = MSR_IA32_TSC, .data = 100 };
    s.msrs[2] = (struct kvm_msr_entry){ .index = MSR_IA32_TSC_DEADLINE, .data = 500 };
    vcpu_state_advance_tsc(&s, 2000000, 1000);  /* 2 ms at 1 MHz */
    assert_int_equal(s.msrs[0].data, 1);
    assert_int_equal(s.msrs[1].data, 2100);
    assert_int_equal(s.msrs[2].data, 500);     /* a deadline is a moment, not a duration */
}

static void test_vm_section_keeps_clock(void **state)
{
    (void)state;
    static struct vm_kvm_state in, out;
    in.clock = (struct kvm_clock_data){ .clock = 123456789, .flags = KVM_CLOCK_REALTIME, .realtime = 42 };
    in.tsc_khz = 2893299;
    struct buf b = { 0 };
    assert_int_equal(vmstate_save(&vmstate_vm, &in, &b), 0);
    struct rbuf r = RBUF(b.data, b.len);
    char err[256] = "";
    assert_int_equal(vmstate_load(&vmstate_vm, &out, &r, err, sizeof(err)), 0);
    assert_int_equal(out.clock.clock, 123456789);
    assert_int_equal(out.clock.flags, KVM_CLOCK_REALTIME);
    assert_int_equal(out.clock.realtime, 42);
    assert_int_equal(out.tsc_khz, 2893299);
    buf_free(&b);
}

/* A vCPU whose LAPIC timer is in TSC-deadline mode, restored with
 * vcpu_state_set, still has its deadline: KVM drops a deadline written before
 * the LAPIC is, so the restore must write it after. */
static void test_restore_keeps_tsc_deadline(void **state)
{
    (void)state;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        skip();
    int vmfd = ioctl(kvm, KVM_CREATE_VM, 0);
    assert_true(vmfd >= 0);
    assert_int_equal(ioctl(vmfd, KVM_CREATE_IRQCHIP, 0), 0);
    int cpu = ioctl(vmfd, KVM_CREATE_VCPU, 0);
    assert_true(cpu >= 0);
    char err[256] = "";
    struct kvm_cpuid2 *c = cpuid_supported(kvm, err, sizeof(err));
    assert_non_null(c);
    cpuid_filter(c, 0, 1);
    int has_deadline = 0;
    for (unsigned i = 0; i < c->nent; i++)
        if (c->entries[i].function == 1)
            has_deadline = !!(c->entries[i].ecx & (1u << 24));
    assert_int_equal(ioctl(cpu, KVM_SET_CPUID2, c), 0);
    free(c);
    if (!has_deadline)
        skip();

    static struct msr_list l;
    assert_int_equal(msr_list_build(kvm, cpu, &l, err, sizeof(err)), 0);
    static struct vcpu_kvm_state s;
    assert_int_equal(vcpu_state_get(cpu, &l, &s, err, sizeof(err)), 0);
    int dl = -1;
    for (uint32_t i = 0; i < s.nmsrs; i++)
        if (s.msrs[i].index == MSR_IA32_TSC_DEADLINE)
            dl = (int)i;
    assert_true(dl >= 0);
    /* LVT timer (0x320): TSC-deadline mode (bits 18:17 = 2), vector 0xec; a
     * deadline far in the future so it does not fire and clear itself */
    uint32_t lvtt = (2u << 17) | 0xec;
    memcpy(&s.lapic.regs[0x320], &lvtt, sizeof(lvtt));
    uint32_t svr = 0x1ff;  /* APIC software-enabled */
    memcpy(&s.lapic.regs[0xf0], &svr, sizeof(svr));
    s.msrs[dl].data = 1ull << 62;
    assert_int_equal(vcpu_state_set(cpu, &s, err, sizeof(err)), 0);

    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e;
    } m = { .h.nmsrs = 1, .e.index = MSR_IA32_TSC_DEADLINE };
    assert_int_equal(ioctl(cpu, KVM_GET_MSRS, &m), 1);
    assert_int_equal(m.e.data, 1ull << 62);
    close(cpu);
    close(vmfd);
    close(kvm);
}

/* A destination that cannot run the guest's TSC at the source's rate says so
 * in one line (and the VM stays on the source); one that can, does. */
static void test_tsc_rate(void **state)
{
    (void)state;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        skip();
    int vmfd = ioctl(kvm, KVM_CREATE_VM, 0);
    assert_true(vmfd >= 0);
    int cpu = ioctl(vmfd, KVM_CREATE_VCPU, 0);
    assert_true(cpu >= 0);
    uint32_t here = vcpu_tsc_khz(cpu);
    if (!here)
        skip();
    char err[256] = "";
    assert_int_equal(vcpu_tsc_khz_set(vmfd, cpu, here, err, sizeof(err)), 0);   /* same rate: nothing to do */
    assert_int_equal(vcpu_tsc_khz_set(vmfd, cpu, 0, err, sizeof(err)), 0);      /* an old source: no rate sent */
    /* slower or faster than this host by far more than KVM's 250 ppm: only
     * TSC scaling can (KVM would take the faster one and emulate it, badly) */
    bool scaling = ioctl(vmfd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0;
    uint32_t wants[] = { here / 2, here + here / 100 };
    for (int i = 0; i < 2; i++) {
        uint32_t want = wants[i];
        int rc = vcpu_tsc_khz_set(vmfd, cpu, want, err, sizeof(err));
        if (scaling && rc == 0) {
            assert_int_equal(vcpu_tsc_khz(cpu), want);
            assert_int_equal(vcpu_tsc_khz_set(vmfd, cpu, here, err, sizeof(err)), 0);
            continue;
        }
        assert_int_equal(rc, -1);
        char expect[128];
        snprintf(expect, sizeof(expect), "the guest's TSC runs at %u kHz and KVM here cannot run it", want);
        assert_non_null(strstr(err, expect));
        assert_null(strchr(err, '\n'));
        assert_int_equal(vcpu_tsc_khz(cpu), here);   /* unchanged */
    }
    /* within the tolerance KVM runs the host's rate and reports the one asked for */
    assert_int_equal(vcpu_tsc_khz_set(vmfd, cpu, here + here / 10000, err, sizeof(err)), 0);
    close(cpu);
    close(vmfd);
    close(kvm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tsc_advance),
        cmocka_unit_test(test_advance_moves_only_tsc),
        cmocka_unit_test(test_vm_section_keeps_clock),
        cmocka_unit_test(test_restore_keeps_tsc_deadline),
        cmocka_unit_test(test_tsc_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
