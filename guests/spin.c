/* SPDX-License-Identifier: MIT
 * spin: the CPL3 loop benchmark. Times `iters=` (default 1e9) iterations of
 * a `dec rcx; jnz` loop with the host clock (TIME register) and the TSC. */
#include "rt/rt.h"

/* x.yyy with three decimals of num/den, integer math only. */
static void fmt_milli(char *buf, size_t n, uint64_t num, uint64_t den)
{
    uint64_t milli = den ? num * 1000 / den : 0;   /* num < 1.8e16: fine */
    rt_snprintf(buf, n, "%llu.%03llu", (unsigned long long)(milli / 1000),
                (unsigned long long)(milli % 1000));
}

int gmain(struct ferry_guest_info *info, unsigned cpu)
{
    if (cpu != 0)
        return 0;
    uint64_t iters = rt_arg_u64("iters", 1000000000ull);
    if (iters == 0)
        rt_die(RT_EXIT_BADARG, "spin: iters must be > 0");
    rt_tsc_khz();   /* calibrate (if needed) before timing */

    uint64_t n0 = rt_time_ns();
    uint64_t t0 = rt_rdtsc();
    uint64_t c = iters;
    __asm__ volatile("1: dec %0\n\tjnz 1b" : "+c"(c) : : "cc");
    uint64_t t1 = rt_rdtsc();
    uint64_t n1 = rt_time_ns();

    uint64_t ns = n1 - n0, ticks = t1 - t0;
    char ns_it[32], tsc_ns_it[32], cyc_it[32];
    fmt_milli(ns_it, sizeof(ns_it), ns, iters);
    fmt_milli(tsc_ns_it, sizeof(tsc_ns_it), rt_tsc_to_ns(ticks), iters);
    fmt_milli(cyc_it, sizeof(cyc_it), ticks, iters);
    rt_printf("spin: iters=%llu ns_per_iter=%s tsc_ns_per_iter=%s cycles_per_iter=%s total_ms=%llu",
              (unsigned long long)iters, ns_it, tsc_ns_it, cyc_it,
              (unsigned long long)(ns / 1000000));
    rt_result(ns);
    return 0;
}
