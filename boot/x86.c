#include <stdio.h>
#include <string.h>

#include "boot/x86.h"

#define PTE_P   0x1ull
#define PTE_RW  0x2ull
#define PTE_US  0x4ull
#define PTE_PS  0x80ull

#define CR0_PE 0x1ull
#define CR0_MP 0x2ull
#define CR0_ET 0x10ull
#define CR0_NE 0x20ull
#define CR0_WP 0x10000ull
#define CR0_AM 0x40000ull
#define CR0_PG 0x80000000ull
#define CR4_PAE 0x20ull
#define CR4_OSFXSR 0x200ull
#define CR4_OSXMMEXCPT 0x400ull
#define CR4_FSGSBASE 0x10000ull
#define EFER_SCE 0x1ull
#define EFER_LME 0x100ull
#define EFER_LMA 0x400ull
#define EFER_NXE 0x800ull

/* GDT descriptor: flat base 0, limit 4 GiB. */
static uint64_t gdt_entry(unsigned type, unsigned dpl, unsigned l, unsigned db)
{
    uint64_t d = 0xffffull;                    /* limit 15:0 */
    d |= (uint64_t)(type | 0x10 | (dpl << 5) | 0x80) << 40; /* type, S, DPL, P */
    d |= 0xfull << 48;                         /* limit 19:16 */
    d |= (uint64_t)((l << 1) | (db << 2) | 0x8) << 52; /* L, D/B, G */
    return d;
}

int x86_write_tables(struct guest_mem *m, bool user, char *err, size_t errlen)
{
    uint64_t top = gmem_top(m);
    uint64_t map = top > GMEM_4G ? top : GMEM_4G;
    uint64_t npd = (map + (1ull << 30) - 1) >> 30;
    if (npd > X86_PD_MAX) {
        snprintf(err, errlen, "memory above %d GiB cannot be identity-mapped for boot", X86_PD_MAX);
        return -1;
    }
    uint64_t *gdt = gmem_ptr(m, X86_GDT_ADDR, 10 * 8);
    uint8_t *tss = gmem_ptr(m, X86_TSS_ADDR, X86_TSS_LIMIT + 1);
    uint64_t *pml4 = gmem_ptr(m, X86_PML4_ADDR, 4096);
    uint64_t *pdpt = gmem_ptr(m, X86_PDPT_ADDR, 4096);
    uint64_t *pd = gmem_ptr(m, X86_PD_ADDR, npd * 4096);
    if (!gdt || !tss || !pml4 || !pdpt || !pd) {
        snprintf(err, errlen, "guest memory too small for boot page tables");
        return -1;
    }

    memset(gdt, 0, 10 * 8);
    gdt[2] = gdt_entry(0xb, 0, 1, 0);   /* 0x10 kernel code, 64-bit */
    gdt[3] = gdt_entry(0x3, 0, 0, 1);   /* 0x18 kernel data */
    gdt[5] = gdt_entry(0x3, 3, 0, 1);   /* 0x28 user data */
    gdt[6] = gdt_entry(0xb, 3, 1, 0);   /* 0x30 user code, 64-bit */
    /* 0x38: 16-byte 64-bit TSS descriptor (type 0xb = busy) */
    uint64_t base = X86_TSS_ADDR, limit = X86_TSS_LIMIT;
    gdt[7] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x8bull << 40) |
             (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt[8] = base >> 32;

    /* TSS: I/O map base right after the 0x68-byte header, bitmap all zero
     * (every port allowed from CPL3), terminated by an 0xff byte. */
    memset(tss, 0, X86_TSS_LIMIT + 1);
    tss[0x66] = 0x68;
    tss[X86_TSS_LIMIT] = 0xff;

    uint64_t flags = PTE_P | PTE_RW | (user ? PTE_US : 0);
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    pml4[0] = X86_PDPT_ADDR | flags;
    for (uint64_t g = 0; g < npd; g++) {
        pdpt[g] = (X86_PD_ADDR + g * 4096) | flags;
        for (uint64_t i = 0; i < 512; i++)
            pd[g * 512 + i] = ((g << 30) + (i << 21)) | flags | PTE_PS;
    }
    return 0;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t dpl, uint8_t l, uint8_t db)
{
    *s = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
                               .present = 1, .dpl = dpl, .db = db, .s = 1, .l = l, .g = 1 };
}

unsigned x86_cpu_flags(const struct kvm_cpuid2 *c)
{
    unsigned f = 0;
    for (unsigned i = 0; i < c->nent; i++) {
        const struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (e->function == 7 && e->index == 0 && (e->ebx & 1))
            f |= X86_CPU_FSGSBASE;
        if (e->function == 0 && e->ebx == 0x68747541)   /* "Auth"enticAMD */
            f |= X86_CPU_AMD;
    }
    return f;
}

void x86_sregs_long_mode(struct kvm_sregs *s, bool user, unsigned cpu_flags)
{
    unsigned dpl = user ? 3 : 0;
    seg(&s->cs, user ? X86_SEL_UCODE : X86_SEL_KCODE, 0xb, dpl, 1, 0);
    seg(&s->ds, user ? X86_SEL_UDATA : X86_SEL_KDATA, 0x3, dpl, 0, 1);
    s->es = s->fs = s->gs = s->ss = s->ds;
    /* A loaded TSS is busy (type 11), and VMX insists on it. QEMU's emulated
     * CPU checks a CPL3 port access against the I/O bitmap only in a TSS of
     * type 9 (available), and raises #GP otherwise; AMD's SVM and CPUs take
     * either, so an AMD vCPU gets 9 (the micro-guests' PCI config ports). */
    s->tr = (struct kvm_segment){ .base = X86_TSS_ADDR, .limit = X86_TSS_LIMIT, .selector = X86_SEL_TSS,
                                  .type = user && (cpu_flags & X86_CPU_AMD) ? 0x9 : 0xb, .present = 1 };
    s->ldt = (struct kvm_segment){ .selector = 0, .type = 0x2, .present = 1, .limit = 0xffff,
                                   .unusable = 1 };
    s->gdt.base = X86_GDT_ADDR;
    s->gdt.limit = 10 * 8 - 1;
    s->idt.base = 0;
    s->idt.limit = 0;
    s->cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
    s->cr3 = X86_PML4_ADDR;
    s->cr4 = CR4_PAE | (user ? CR4_OSFXSR | CR4_OSXMMEXCPT | (cpu_flags & X86_CPU_FSGSBASE ? CR4_FSGSBASE : 0) : 0);
    s->efer = EFER_LME | EFER_LMA | (user ? EFER_SCE | EFER_NXE : 0);
}
