/* vmm/cpuid.c's mask (--cpu-features, a cluster's CPU baseline): the guest
 * sees only the listed named features, unnamed bits stay as KVM gives them,
 * an unknown name is refused and changes nothing, and an incoming VM is
 * checked only for the features its guest could see. The mask is process
 * state, so the tests run in this order. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vmm/vm.h"

#define SSE2 (1u << 26)      /* leaf 1 EDX */
#define EDX1_UNNAMED ((1u << 10) | (1u << 20))
#define ECX1_UNNAMED (1u << 16)
#define HYPERVISOR (1u << 31)
#define AVX2 (1u << 5)       /* leaf 7 EBX */
#define AVX512F (1u << 16)
#define LM (1u << 29)        /* 0x80000001 EDX */

/* Every register of leaves 1, 7.0 and 0x80000001 all ones: what a host
 * with every feature would report. */
static struct kvm_cpuid2 *all_features(void)
{
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 3 * sizeof(c->entries[0]));
    static const uint32_t fns[] = { 1, 7, 0x80000001 };
    c->nent = 3;
    for (int i = 0; i < 3; i++)
        c->entries[i] = (struct kvm_cpuid_entry2){ .function = fns[i], .eax = ~0u, .ebx = ~0u,
                                                   .ecx = ~0u, .edx = ~0u };
    return c;
}

static struct kvm_cpuid_entry2 *leaf(struct kvm_cpuid2 *c, uint32_t fn)
{
    for (unsigned i = 0; i < c->nent; i++)
        if (c->entries[i].function == fn)
            return &c->entries[i];
    fail_msg("no leaf 0x%x", fn);
    return NULL;
}

static void test_no_mask_keeps_every_feature(void **state)
{
    struct kvm_cpuid2 *c = all_features();
    cpuid_filter(c, 0, 1);
    assert_int_equal(leaf(c, 1)->edx, ~0u);
    assert_int_equal(leaf(c, 7)->ebx, ~0u);
    assert_int_equal(leaf(c, 0x80000001)->edx, ~0u);
    free(c);
}

static void test_mask_leaves_only_listed_features(void **state)
{
    char err[256];
    assert_int_equal(cpuid_mask_set("sse2,avx2,lm", err, sizeof(err)), 0);
    struct kvm_cpuid2 *c = all_features();
    cpuid_filter(c, 1, 2);
    assert_int_equal(leaf(c, 1)->edx, SSE2 | EDX1_UNNAMED);
    /* the hypervisor bit is ours, not the host's: always set */
    assert_int_equal(leaf(c, 1)->ecx, ECX1_UNNAMED | HYPERVISOR);
    assert_int_equal(leaf(c, 7)->ebx, AVX2);
    assert_int_equal(leaf(c, 1)->ebx >> 24, 1);   /* APIC id still set */
    assert_int_equal(leaf(c, 0x80000001)->edx & (LM | (1u << 20)), LM);   /* nx masked */
    free(c);
}

static void test_unknown_feature_refused_mask_unchanged(void **state)
{
    char err[256];
    assert_int_equal(cpuid_mask_set("sse2,avx9000", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "unknown CPU feature 'avx9000'"));
    assert_int_equal(cpuid_mask_set("sse2,,lm", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "unknown CPU feature ''"));
    struct kvm_cpuid2 *c = all_features();
    cpuid_filter(c, 0, 1);
    assert_int_equal(leaf(c, 7)->ebx, AVX2);   /* still the earlier mask */
    free(c);
}

/* The source sends its unfiltered CPUID: a destination lacking a feature
 * the mask hides takes the VM; one lacking a visible feature refuses. */
static void test_incoming_checked_against_visible_features(void **state)
{
    char err[256];
    struct kvm_cpuid2 *want = all_features(), *have = all_features();
    leaf(have, 7)->ebx &= ~AVX512F;
    assert_int_equal(cpuid_check_compatible(want, have, err, sizeof(err)), 0);
    leaf(have, 7)->ebx &= ~AVX2;
    assert_int_equal(cpuid_check_compatible(want, have, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "leaf 0x7.0 ebx bits 0x00000020"));
    free(want);
    free(have);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_mask_keeps_every_feature),
        cmocka_unit_test(test_mask_leaves_only_listed_features),
        cmocka_unit_test(test_unknown_feature_refused_mask_unchanged),
        cmocka_unit_test(test_incoming_checked_against_visible_features),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
