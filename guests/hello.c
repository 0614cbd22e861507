/* SPDX-License-Identifier: MIT
 * hello: prints one line per vCPU and exits 0. */
#include "rt/rt.h"

static volatile unsigned said_hello;

int gmain(struct ferry_guest_info *info, unsigned cpu)
{
    rt_printf("hello from ferry micro-guest cpu %u ram %llu MiB", cpu,
              (unsigned long long)(info->ram_size >> 20));
    __atomic_fetch_add(&said_hello, 1, __ATOMIC_SEQ_CST);
    if (cpu != 0)
        return 0;
    /* vCPU 0 ends the guest: give the others up to a second to say hello. */
    uint64_t ncpus = info->ncpus ? info->ncpus : 1;
    if (ncpus > RT_MAX_CPUS)
        ncpus = RT_MAX_CPUS;
    if (ncpus > 1) {
        uint64_t deadline = rt_rdtsc() + rt_tsc_khz() * 1000;
        while (__atomic_load_n(&said_hello, __ATOMIC_SEQ_CST) < ncpus && rt_rdtsc() < deadline)
            rt_pause();
        unsigned n = __atomic_load_n(&said_hello, __ATOMIC_SEQ_CST);
        if (n < ncpus)
            rt_printf("hello: only %u of %llu vCPUs ran", n, (unsigned long long)ncpus);
    }
    return 0;
}
