/* boot/x86.c's registers for a micro-guest follow the vCPU's CPUID: KVM
 * refuses CR4.FSGSBASE that the CPUID lacks, and only an AMD vCPU gets its
 * TSS as available (QEMU's emulated CPU checks port I/O only in such a TSS;
 * VMX requires busy). Linux guests (CPL0) keep the busy TSS everywhere. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <cmocka.h>

#include "boot/x86.h"

#define CR4_FSGSBASE (1u << 16)

/* A CPUID with the given vendor (leaf 0 EBX) and leaf 7 EBX. */
static struct kvm_cpuid2 *cpuid(uint32_t vendor_ebx, uint32_t leaf7_ebx)
{
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 2 * sizeof(c->entries[0]));
    c->nent = 2;
    c->entries[0] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 0xd, .ebx = vendor_ebx };
    c->entries[1] = (struct kvm_cpuid_entry2){ .function = 7, .ebx = leaf7_ebx };
    return c;
}

static struct kvm_sregs regs(uint32_t vendor, uint32_t leaf7, bool user)
{
    struct kvm_cpuid2 *c = cpuid(vendor, leaf7);
    struct kvm_sregs s = { 0 };
    x86_sregs_long_mode(&s, user, x86_cpu_flags(c));
    free(c);
    return s;
}

#define INTEL 0x756e6547u   /* "Genu" */
#define AMD   0x68747541u   /* "Auth" */

static void intel_with_fsgsbase(void **state)
{
    (void)state;
    struct kvm_sregs s = regs(INTEL, 1, true);
    assert_true(s.cr4 & CR4_FSGSBASE);
    assert_int_equal(s.tr.type, 0xb);
    assert_int_equal(s.cs.dpl, 3);
}

static void amd_without_fsgsbase(void **state)
{
    (void)state;
    struct kvm_sregs s = regs(AMD, 0, true);
    assert_false(s.cr4 & CR4_FSGSBASE);
    assert_int_equal(s.tr.type, 0x9);
    assert_int_equal(s.tr.limit, X86_TSS_LIMIT);
}

static void linux_keeps_busy_tss(void **state)
{
    (void)state;
    struct kvm_sregs s = regs(AMD, 1, false);
    assert_int_equal(s.tr.type, 0xb);
    assert_false(s.cr4 & CR4_FSGSBASE);   /* a stock kernel sets CR4 itself */
    assert_int_equal(s.cs.dpl, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(intel_with_fsgsbase),
        cmocka_unit_test(amd_without_fsgsbase),
        cmocka_unit_test(linux_keeps_busy_tss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
