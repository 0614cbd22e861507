/* SPDX-License-Identifier: MIT
 * dirtier: rewrites a working set generation after generation (see dirtier.h).
 *
 * Arguments (info->cmdline, key=value):
 *   mib=64          working-set size in MiB
 *   base=0x1000000  GPA of the working set (4 KiB aligned, above the image)
 *   stride=0        0: one qword per page; S: every S-th qword (1 = whole page)
 *   rate=0          pages per second (0 = as fast as possible), paced with rdtsc
 *   passes=0        passes to run (0 = forever)
 *   warm=0          1: write the first pass at full speed, pace the later ones
 *   report_ms=      0: one line per pass; else at most one line per report_ms
 *                   (default 0 when passes > 0, 1000 when running forever)
 * Each pass writes every page (no exits in the loop), then reads them all back
 * and checks generation g. Exits 0 after `passes` passes, 1 on a mismatch.
 *
 * Paced passes also print, at most once per report_ms while writing:
 *   dirtier progress pass=G page=P max_gap_us=M
 * Progress line (one per pass or per report_ms):
 *   dirtier pass=G pages=N ok pages_per_s=R ns_per_page=X.YY verify_ns_per_page=V max_gap_us=M
 * pages_per_s/ns_per_page cover the write loops since the previous line;
 * max_gap_us is the largest gap between consecutive TSC readings since the
 * previous line (see dirtier.h: it shows VM pauses and migration downtime). */
#include <stdbool.h>

#include "rt/rt.h"
#include "dirtier.h"

static volatile struct dirtier_hdr *hdr;
static uint8_t *ws;
static uint64_t npages;
static unsigned step;

/* Rate pacing: a TSC deadline advanced by hz/rate ticks per page (Bresenham). */
static uint64_t rate, tpp_int, tpp_rem, acc, deadline, slack, sleep_ticks, tsc_khz;

/* Gap tracking: the previous TSC reading, the largest gap since the last
 * progress line, and since the start (ticks). One rdtsc per page. */
static uint64_t gap_prev, gap_max, gap_max_all;
static uint64_t cur_gen;

static inline uint64_t gap_tick(void)
{
    uint64_t now = rt_rdtsc();
    uint64_t d = now - gap_prev;
    if (__builtin_expect(d > gap_max, 0)) {
        gap_max = d;
        if (d > gap_max_all) {
            gap_max_all = d;
            hdr->max_gap_ns = rt_tsc_to_ns(d);
            hdr->max_gap_at = cur_gen;
        }
    }
    gap_prev = now;
    return now;
}

static inline void pace(void)
{
    deadline += tpp_int;
    acc += tpp_rem;
    if (acc >= rate) {
        acc -= rate;
        deadline++;
    }
    uint64_t now = gap_tick();
    if (now > deadline + slack) {
        deadline = now;           /* fell behind: do not burst to catch up */
        return;
    }
    /* Ahead of the schedule by more than half a millisecond: give the core
     * back until the deadline (the host's migration threads share it); a
     * smaller lead is let stand, so the rate holds on average. */
    while (deadline > now + sleep_ticks) {
        rt_sleep_ns((deadline - now) * 1000000ull / tsc_khz);
        now = gap_tick();
    }
}

static inline void write_page(uint64_t p, uint64_t gen)
{
    volatile uint64_t *q = (volatile uint64_t *)(ws + p * DIRTIER_PAGE);
    uint64_t v = dirtier_stamp(gen, p);
    if (p == 0) {
        q[0] = v;                 /* the header lives in the rest of page 0 */
        return;
    }
    for (unsigned i = 0; i < DIRTIER_QWORDS; i += step)
        q[i] = v;
}

/* Mid-pass progress for slow (paced) passes: one line per report interval
 * (its own clock: the per-pass "ok" lines keep theirs). */
static uint64_t report_ticks, t_report, t_progress;

static void report_progress(uint64_t gen, uint64_t page)
{
    uint64_t now = rt_rdtsc();
    if (!report_ticks || now - t_progress < report_ticks)
        return;
    rt_printf("dirtier progress pass=%llu page=%llu max_gap_us=%llu", (unsigned long long)gen,
              (unsigned long long)page, (unsigned long long)(rt_tsc_to_ns(gap_max) / 1000));
    gap_max = 0;
    t_progress = gap_tick();
}

static void write_pass(uint64_t gen, bool paced)
{
    cur_gen = gen;
    hdr->gen = gen;               /* before the first stamp of this generation */
    rt_barrier();
    if (paced) {
        deadline = gap_tick();    /* pace the writes; verification time does not count */
        for (uint64_t p = 0; p < npages; p++) {
            pace();
            write_page(p, gen);
            report_progress(gen, p);
        }
    } else {
        for (uint64_t p = 0; p < npages; p++) {
            gap_tick();
            write_page(p, gen);
        }
    }
}

static void verify_pass(uint64_t gen)
{
    for (uint64_t p = 0; p < npages; p++) {
        const volatile uint64_t *q = (const volatile uint64_t *)(ws + p * DIRTIER_PAGE);
        uint64_t want = dirtier_stamp(gen, p);
        unsigned lim = p == 0 ? 1 : DIRTIER_QWORDS;
        gap_tick();
        for (unsigned i = 0; i < lim; i += step) {
            uint64_t got = q[i];
            if (got != want)
                rt_die(1, "dirtier: pass=%llu page %llu (gpa 0x%llx) qword %u holds 0x%llx expected 0x%llx",
                       (unsigned long long)gen, (unsigned long long)p,
                       (unsigned long long)(uintptr_t)q, i, (unsigned long long)got,
                       (unsigned long long)want);
        }
    }
    hdr->verified = gen;
}

static void fmt_rate(char *buf, size_t n, uint64_t pages, uint64_t ns)
{
    uint64_t ps = ns ? pages * 1000000000ull / ns : 0;   /* pages < 1.8e10: fine */
    uint64_t npp100 = pages ? ns * 100 / pages : 0;
    rt_snprintf(buf, n, "pages_per_s=%llu ns_per_page=%llu.%02llu", (unsigned long long)ps,
                (unsigned long long)(npp100 / 100), (unsigned long long)(npp100 % 100));
}

static int in_ram(const struct ferry_guest_info *info, uint64_t gpa, uint64_t len)
{
    uint64_t low = info->ram_below_4g, high = info->ram_size - info->ram_below_4g;
    if (gpa + len < gpa)
        return 0;
    if (gpa + len <= low)
        return 1;
    return gpa >= 0x100000000ull && gpa + len <= 0x100000000ull + high;
}

int gmain(struct ferry_guest_info *info, unsigned cpu)
{
    if (cpu != 0)
        return 0;
    uint64_t mib = rt_arg_u64("mib", 64);
    uint64_t base = rt_arg_u64("base", DIRTIER_BASE_DEFAULT);
    uint64_t stride = rt_arg_u64("stride", 0);
    uint64_t passes = rt_arg_u64("passes", 0);
    uint64_t report_ms = rt_arg_u64("report_ms", passes ? 0 : 1000);
    rate = rt_arg_u64("rate", 0);
    bool warm = rt_arg_u64("warm", 0) != 0;   /* first pass unpaced: fill the working set fast */

    uint64_t image_end = (uint64_t)(uintptr_t)__image_end;
    if (mib == 0 || mib > (1ull << 20))
        rt_die(RT_EXIT_BADARG, "dirtier: mib=%llu out of range", (unsigned long long)mib);
    npages = mib << 8;
    if (base % DIRTIER_PAGE || base < image_end)
        rt_die(RT_EXIT_BADARG, "dirtier: base=0x%llx must be 4 KiB aligned and >= image end 0x%llx",
               (unsigned long long)base, (unsigned long long)image_end);
    if (!in_ram(info, base, mib << 20))
        rt_die(RT_EXIT_BADARG, "dirtier: working set [0x%llx, +%llu MiB) is not inside guest RAM (%llu MiB)",
               (unsigned long long)base, (unsigned long long)mib,
               (unsigned long long)(info->ram_size >> 20));
    if (stride > DIRTIER_QWORDS)
        rt_die(RT_EXIT_BADARG, "dirtier: stride=%llu: at most %u qwords", (unsigned long long)stride,
               DIRTIER_QWORDS);
    step = dirtier_step(stride);

    uint64_t khz = rt_tsc_khz();
    if (rate) {
        uint64_t hz = khz * 1000;
        tpp_int = hz / rate;
        tpp_rem = hz % rate;
        slack = khz * 10;           /* 10 ms */
        sleep_ticks = khz / 2;      /* 0.5 ms */
        tsc_khz = khz;
    }

    ws = (uint8_t *)(uintptr_t)base;
    hdr = (volatile struct dirtier_hdr *)(ws + DIRTIER_HDR_OFFSET);
    if (hdr->magic == DIRTIER_MAGIC)
        rt_printf("dirtier: note: working set already holds a dirtier header (gen=%llu); "
                  "checker assumes the dirtier started on zeroed RAM", (unsigned long long)hdr->gen);
    hdr->magic = 0;
    rt_barrier();
    hdr->base = base;
    hdr->npages = npages;
    hdr->stride = stride;
    hdr->passes = passes;
    hdr->gen = 0;
    hdr->done = 0;
    hdr->verified = 0;
    hdr->tsc_khz = khz;
    hdr->max_gap_ns = 0;
    hdr->max_gap_at = 0;
    rt_barrier();
    hdr->magic = DIRTIER_MAGIC;

    rt_printf("dirtier: start base=0x%llx mib=%llu pages=%llu stride=%llu rate=%llu passes=%llu tsc_khz=%llu",
              (unsigned long long)base, (unsigned long long)mib, (unsigned long long)npages,
              (unsigned long long)stride, (unsigned long long)rate, (unsigned long long)passes,
              (unsigned long long)khz);

    report_ticks = report_ms * khz;
    uint64_t t_start = rt_rdtsc();
    t_report = t_progress = t_start;
    gap_prev = t_start;
    uint64_t write_ticks = 0, wt_report = 0, pages_report = 0;
    for (uint64_t g = 1; passes == 0 || g <= passes; g++) {
        uint64_t t0 = rt_rdtsc();
        write_pass(g, rate && !(warm && g == 1));
        uint64_t t1 = rt_rdtsc();
        verify_pass(g);
        uint64_t t2 = rt_rdtsc();
        write_ticks += t1 - t0;
        wt_report += t1 - t0;
        pages_report += npages;
        if (report_ticks == 0 || t2 - t_report >= report_ticks || g == passes || (warm && g == 1)) {
            char r[96];
            fmt_rate(r, sizeof(r), pages_report, rt_tsc_to_ns(wt_report));
            rt_printf("dirtier pass=%llu pages=%llu ok %s verify_ns_per_page=%llu max_gap_us=%llu",
                      (unsigned long long)g, (unsigned long long)npages, r,
                      (unsigned long long)(rt_tsc_to_ns(t2 - t1) / npages),
                      (unsigned long long)(rt_tsc_to_ns(gap_max) / 1000));
            gap_max = 0;            /* the print (a VM exit) counts in the next window */
            t_report = gap_tick();
            wt_report = 0;
            pages_report = 0;
        }
    }
    hdr->done = 1;
    char r[96];
    fmt_rate(r, sizeof(r), passes * npages, rt_tsc_to_ns(write_ticks));
    rt_printf("dirtier: done passes=%llu pages=%llu %s total_ms=%llu max_gap_us=%llu",
              (unsigned long long)passes, (unsigned long long)npages, r,
              (unsigned long long)(rt_tsc_to_ns(rt_rdtsc() - t_start) / 1000000),
              (unsigned long long)(rt_tsc_to_ns(gap_max_all) / 1000));
    return 0;
}
