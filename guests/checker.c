/* SPDX-License-Identifier: MIT
 * checker: verifies a working set the dirtier left in RAM (ferry-vmm
 * --mem-path keeps RAM in a file across runs). Reads struct dirtier_hdr at
 * base (base=, default 16 MiB) and checks that the stamps, read in write
 * order, are generation G up to one cursor and G-1 after it (G = hdr.gen;
 * generation 0 = never written = zero), and that every stamp's low 32 bits
 * are its page index. expect_done=1 also requires the dirtier to have
 * finished all its passes. Prints "checker: N pages ok gen=G ..." and exits
 * 0, or prints the first bad page and exits 1. */
#include "rt/rt.h"
#include "dirtier.h"

static int in_ram(const struct ferry_guest_info *info, uint64_t gpa, uint64_t len)
{
    uint64_t low = info->ram_below_4g, high = info->ram_size - info->ram_below_4g;
    if (gpa + len < gpa)
        return 0;
    if (gpa + len <= low)
        return 1;
    return gpa >= 0x100000000ull && gpa + len <= 0x100000000ull + high;
}

/* The stamp generation G-1 leaves: zero for generation 0 (never written). */
static inline uint64_t prev_stamp(uint64_t gen, uint64_t p)
{
    return gen <= 1 ? 0 : dirtier_stamp(gen - 1, p);
}

int gmain(struct ferry_guest_info *info, unsigned cpu)
{
    if (cpu != 0)
        return 0;
    uint64_t base = rt_arg_u64("base", DIRTIER_BASE_DEFAULT);
    uint64_t expect_done = rt_arg_u64("expect_done", 0);
    if (base % DIRTIER_PAGE || base < (uint64_t)(uintptr_t)__image_end || !in_ram(info, base, DIRTIER_PAGE))
        rt_die(RT_EXIT_BADARG, "checker: base=0x%llx is not a page of guest RAM above the image",
               (unsigned long long)base);

    const volatile struct dirtier_hdr *hdr =
        (const volatile struct dirtier_hdr *)(uintptr_t)(base + DIRTIER_HDR_OFFSET);
    if (hdr->magic != DIRTIER_MAGIC)
        rt_die(1, "checker: no dirtier header at 0x%llx (magic 0x%llx)",
               (unsigned long long)(base + DIRTIER_HDR_OFFSET), (unsigned long long)hdr->magic);
    uint64_t npages = hdr->npages, stride = hdr->stride, gen = hdr->gen, done = hdr->done;
    if (hdr->base != base || npages == 0 || npages > (1ull << 32) || stride > DIRTIER_QWORDS ||
        gen > 0xffffffffull || !in_ram(info, base, npages * DIRTIER_PAGE))
        rt_die(1, "checker: bad dirtier header: base=0x%llx npages=%llu stride=%llu gen=%llu (RAM %llu MiB)",
               (unsigned long long)hdr->base, (unsigned long long)npages,
               (unsigned long long)stride, (unsigned long long)gen,
               (unsigned long long)(info->ram_size >> 20));
    if (expect_done && !done)
        rt_die(1, "checker: dirtier did not finish (gen=%llu of passes=%llu)", (unsigned long long)gen,
               (unsigned long long)hdr->passes);
    unsigned step = dirtier_step(stride);

    /* Walk the stamps in write order: gen G, then (after the cursor) gen G-1. */
    const uint8_t *ws = (const uint8_t *)(uintptr_t)base;
    int after_cursor = gen == 0;   /* nothing written yet: everything is "old" */
    uint64_t cursor_page = gen == 0 ? 0 : npages;
    unsigned cursor_qword = 0;
    for (uint64_t p = 0; p < npages; p++) {
        const volatile uint64_t *q = (const volatile uint64_t *)(ws + p * DIRTIER_PAGE);
        uint64_t cur = dirtier_stamp(gen, p), old = prev_stamp(gen, p);
        unsigned lim = p == 0 ? 1 : DIRTIER_QWORDS;
        for (unsigned i = 0; i < lim; i += step) {
            uint64_t v = q[i];
            if (!after_cursor && v == cur)
                continue;
            if (v == old) {
                if (!after_cursor) {
                    after_cursor = 1;
                    cursor_page = p;
                    cursor_qword = i;
                }
                continue;
            }
            if (after_cursor)
                rt_die(1, "checker: page %llu (gpa 0x%llx) qword %u holds 0x%llx expected 0x%llx "
                       "(gen %llu after the cursor at page %llu)",
                       (unsigned long long)p, (unsigned long long)(uintptr_t)q, i,
                       (unsigned long long)v, (unsigned long long)old,
                       (unsigned long long)(gen ? gen - 1 : 0), (unsigned long long)cursor_page);
            rt_die(1, "checker: page %llu (gpa 0x%llx) qword %u holds 0x%llx expected 0x%llx or 0x%llx "
                   "(gen %llu or %llu)",
                   (unsigned long long)p, (unsigned long long)(uintptr_t)q, i, (unsigned long long)v,
                   (unsigned long long)cur, (unsigned long long)old, (unsigned long long)gen,
                   (unsigned long long)(gen ? gen - 1 : 0));
        }
    }
    if (done && after_cursor)
        rt_die(1, "checker: header says done but pages from %llu on are still gen %llu",
               (unsigned long long)cursor_page, (unsigned long long)(gen - 1));
    rt_printf("checker: %llu pages ok gen=%llu cursor=%llu cursor_qword=%u done=%llu stride=%llu",
              (unsigned long long)npages, (unsigned long long)gen, (unsigned long long)cursor_page,
              cursor_qword, (unsigned long long)done, (unsigned long long)stride);
    rt_result(gen);
    return 0;
}
