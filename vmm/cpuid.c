/* CPUID: what KVM supports, filtered per vCPU. The filter is the single
 * place where a cluster CPU baseline (--cpu-features) masks features. */
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

static const struct kvm_cpuid_entry2 *cpuid_find(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
    for (unsigned i = 0; i < c->nent; i++)
        if (c->entries[i].function == fn && c->entries[i].index == idx)
            return &c->entries[i];
    return NULL;
}

/* The feature words a guest may have seen and relies on keeping across a
 * migration, with the Linux names of their bits (ferryd reports a host's
 * features by these names; --cpu-features takes them). */
const struct cpuid_word cpuid_words[] = {
    { 1, 0, 3, { "fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", NULL,
                 "sep", "mtrr", "pge", "mca", "cmov", "pat", "pse36", "pn", "clflush", NULL,
                 "dts", "acpi", "mmx", "fxsr", "sse", "sse2", "ss", "ht", "tm", "ia64", "pbe" } },
    { 1, 0, 2, { "pni", "pclmulqdq", "dtes64", "monitor", "ds_cpl", "vmx", "smx", "est", "tm2",
                 "ssse3", "cid", "sdbg", "fma", "cx16", "xtpr", "pdcm", NULL, "pcid", "dca",
                 "sse4_1", "sse4_2", "x2apic", "movbe", "popcnt", "tsc_deadline_timer", "aes",
                 "xsave", "osxsave", "avx", "f16c", "rdrand", "hypervisor" } },
    { 7, 0, 1, { "fsgsbase", "tsc_adjust", "sgx", "bmi1", "hle", "avx2", "fdp_excptn_only",
                 "smep", "bmi2", "erms", "invpcid", "rtm", "cqm", "zero_fcs_fds", "mpx", "rdt_a",
                 "avx512f", "avx512dq", "rdseed", "adx", "smap", "avx512ifma", "pcommit",
                 "clflushopt", "clwb", "intel_pt", "avx512pf", "avx512er", "avx512cd", "sha_ni",
                 "avx512bw", "avx512vl" } },
    { 7, 0, 2, { "prefetchwt1", "avx512vbmi", "umip", "pku", "ospke", "waitpkg", "avx512_vbmi2",
                 "cet_ss", "gfni", "vaes", "vpclmulqdq", "avx512_vnni", "avx512_bitalg", "tme",
                 "avx512_vpopcntdq", NULL, "la57", NULL, NULL, NULL, NULL, NULL, "rdpid",
                 "key_locker", "bus_lock_detect", "cldemote", NULL, "movdiri", "movdir64b",
                 "enqcmd", "sgx_lc", "pks" } },
    { 7, 0, 3, { NULL, NULL, "avx512_4vnniw", "avx512_4fmaps", "fsrm", "uintr", NULL, NULL,
                 "avx512_vp2intersect", NULL, "md_clear", NULL, NULL, NULL, "serialize",
                 "hybrid_cpu", "tsxldtrk", NULL, "pconfig", NULL, "ibt", NULL, "amx_bf16",
                 "avx512_fp16", "amx_tile", "amx_int8", "spec_ctrl", "intel_stibp", "flush_l1d",
                 "arch_capabilities", "core_capabilities", "spec_ctrl_ssbd" } },
    { 0xd, 1, 0, { "xsaveopt", "xsavec", "xgetbv1", "xsaves" } },
    { 0x80000001, 0, 2, { "lahf_lm", "cmp_legacy", "svm", "extapic", "cr8_legacy", "abm",
                          "sse4a", "misalignsse", "3dnowprefetch", "osvw", "ibs", "xop",
                          "skinit", "wdt", NULL, "lwp", "fma4", "tce", NULL, "nodeid_msr", NULL,
                          "tbm", "topoext", "perfctr_core", "perfctr_nb", NULL, "bpext", "ptsc",
                          "perfctr_llc", "mwaitx" } },
    /* AMD mirrors leaf 1's EDX bits here; only the extended ones are named */
    { 0x80000001, 0, 3, { [11] = "syscall", [20] = "nx", [22] = "mmxext", [25] = "fxsr_opt",
                          [26] = "pdpe1gb", [27] = "rdtscp", [29] = "lm", [30] = "3dnowext",
                          [31] = "3dnow" } },
};
const size_t cpuid_nwords = sizeof(cpuid_words) / sizeof(cpuid_words[0]);

uint32_t cpuid_word_value(const struct kvm_cpuid2 *c, const struct cpuid_word *w)
{
    const struct kvm_cpuid_entry2 *e = cpuid_find(c, w->fn, w->idx);
    if (!e)
        return 0;
    return w->reg == 0 ? e->eax : w->reg == 1 ? e->ebx : w->reg == 2 ? e->ecx : e->edx;
}

/* --cpu-features: per feature word, the bits the guest may see. Unnamed
 * bits (reserved, or AMD's mirror of leaf 1 in 0x80000001 EDX) are left
 * as KVM reports them: a baseline speaks only of named features. */
static bool mask_on;
static uint32_t mask_allowed[sizeof(cpuid_words) / sizeof(cpuid_words[0])];

static uint32_t named_bits(const struct cpuid_word *w)
{
    uint32_t m = 0;
    for (int b = 0; b < 32; b++)
        if (w->bits[b])
            m |= 1u << b;
    return m;
}

/* The bits of word i the guest sees: all without a mask. */
static uint32_t visible(size_t i)
{
    return mask_on ? mask_allowed[i] | ~named_bits(&cpuid_words[i]) : ~0u;
}

int cpuid_mask_set(const char *list, char *err, size_t errlen)
{
    uint32_t allowed[sizeof(mask_allowed) / sizeof(mask_allowed[0])] = { 0 };
    const char *p = list;
    do {
        size_t n = strcspn(p, ",");
        bool found = false;
        for (size_t i = 0; i < cpuid_nwords && n; i++)
            for (int b = 0; b < 32; b++)
                if (cpuid_words[i].bits[b] && strlen(cpuid_words[i].bits[b]) == n &&
                    !strncmp(cpuid_words[i].bits[b], p, n)) {
                    allowed[i] |= 1u << b;
                    found = true;
                }
        if (!found) {
            snprintf(err, errlen, "unknown CPU feature '%.*s' (names as ferryd reports them in"
                     " cpu.kvm_features, comma-separated)", (int)(n > 64 ? 64 : n), p);
            return -1;
        }
        p += n;
    } while (*p++);
    memcpy(mask_allowed, allowed, sizeof(allowed));
    mask_on = true;
    return 0;
}

#define CPUID1_ECX_HYPERVISOR (1u << 31)

static uint32_t *reg_ptr(struct kvm_cpuid_entry2 *e, int reg)
{
    return reg == 0 ? &e->eax : reg == 1 ? &e->ebx : reg == 2 ? &e->ecx : &e->edx;
}

void cpuid_filter(struct kvm_cpuid2 *c, int vcpu_id, int ncpus)
{
    for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        for (size_t w = 0; w < cpuid_nwords; w++)
            if (cpuid_words[w].fn == e->function && cpuid_words[w].idx == e->index)
                *reg_ptr(e, cpuid_words[w].reg) &= visible(w);
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

/* An incoming VM's CPUID is the source's unfiltered set: with a mask, only
 * the features the guest could see must be here. */
int cpuid_check_compatible(const struct kvm_cpuid2 *want, const struct kvm_cpuid2 *have,
                           char *err, size_t errlen)
{
    static const char *regs[] = { "eax", "ebx", "ecx", "edx" };
    for (size_t i = 0; i < cpuid_nwords; i++) {
        const struct cpuid_word *w = &cpuid_words[i];
        uint32_t need = cpuid_word_value(want, w) & visible(i);
        uint32_t got = cpuid_word_value(have, w);
        if (need & ~got) {
            snprintf(err, errlen, "this host's CPU lacks features the VM uses: CPUID leaf 0x%x.%u %s bits 0x%08x",
                     w->fn, w->idx, regs[w->reg], need & ~got);
            return -1;
        }
    }
    return 0;
}
