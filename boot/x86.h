/* Long-mode scaffolding in guest RAM shared by both boot paths: a GDT, a
 * 64-bit TSS with an all-ports-allowed I/O bitmap, and identity page tables. */
#ifndef FERRY_BOOT_X86_H
#define FERRY_BOOT_X86_H

#include <stdbool.h>
#include <linux/kvm.h>
#include "vmm/memory.h"

#define X86_GDT_ADDR    0x0500ull
#define X86_TSS_ADDR    0x1000ull   /* 0x68 header + 8 KiB I/O bitmap + 1 */
#define X86_TSS_LIMIT   (0x68 + 8192)
#define X86_PML4_ADDR   0x9000ull
#define X86_PDPT_ADDR   0xa000ull
#define X86_PD_ADDR     0xb000ull   /* one page per GiB mapped */
#define X86_PD_MAX      16          /* maps at most 16 GiB with 2 MiB pages */

#define X86_SEL_KCODE   0x10
#define X86_SEL_KDATA   0x18
#define X86_SEL_UDATA   0x2b        /* index 5, RPL 3 */
#define X86_SEL_UCODE   0x33        /* index 6, RPL 3 */
#define X86_SEL_TSS     0x38

/* Write GDT, TSS and identity page tables covering max(4 GiB, top of RAM).
 * `user` sets U/S on every level (micro-guests run at CPL3). */
int x86_write_tables(struct guest_mem *m, bool user, char *err, size_t errlen);

/* What the vCPU's CPUID says that the registers must follow (x86_cpu_flags). */
#define X86_CPU_FSGSBASE 1u   /* CR4.FSGSBASE allowed: KVM refuses it otherwise */
#define X86_CPU_AMD      2u   /* AuthenticAMD: the TSS may be loaded as available */
unsigned x86_cpu_flags(const struct kvm_cpuid2 *c);

/* Special registers for 64-bit mode with the tables above: CPL0 (Linux) or CPL3. */
void x86_sregs_long_mode(struct kvm_sregs *s, bool user, unsigned cpu_flags);

#endif
