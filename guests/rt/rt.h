/* SPDX-License-Identifier: MIT
 * Ferry micro-guest runtime: freestanding helpers for programs run by
 * ferry-vmm at CPL3 (include/ferry-guest-abi.h).
 *
 * Every test-device access is a VM exit (~25 us on PVM): print once per line
 * and keep rt_time_ns() / rt_print*() out of hot loops; use rt_rdtsc() there.
 *
 * A guest provides `int gmain(struct ferry_guest_info *info, unsigned cpu)`.
 * It runs on every vCPU with its own 16 KiB stack; when it returns on vCPU 0
 * (or with a non-zero value on any vCPU) the guest exits with that status;
 * other vCPUs returning 0 park in a pause loop.
 */
#ifndef FERRY_GUEST_RT_H
#define FERRY_GUEST_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry-guest-abi.h"

#define RT_MAX_CPUS   64
#define RT_STACK_SIZE 16384
#define RT_PRINT_MAX  256     /* longest line rt_printf() emits */

/* Exit statuses used by the runtime itself. */
#define RT_EXIT_BADARG  2     /* malformed or out-of-range argument */
#define RT_EXIT_BADINFO 3     /* struct ferry_guest_info has a wrong magic */

int gmain(struct ferry_guest_info *info, unsigned cpu);

/* Set by the start code before gmain() runs. */
extern struct ferry_guest_info *rt_info;
/* Image bounds from link.ld (the image spans [__image_start, __image_end)). */
extern char __image_start[], __image_end[];

/* ---- test device (each call is one VM exit) ---- */
__attribute__((noreturn)) void rt_exit(uint64_t status);
void rt_result(uint64_t value);
uint64_t rt_time_ns(void);
void rt_stamp(uint64_t tsc);
/* Give the vCPU's core back for up to ns (at most 1 ms): what HLT would do. */
void rt_sleep_ns(uint64_t ns);
/* Print one line (a trailing newline is dropped; embedded newlines split it). */
void rt_puts(const char *s);
__attribute__((format(printf, 1, 2))) void rt_printf(const char *fmt, ...);
/* Print the message, then exit with status. */
__attribute__((format(printf, 2, 3), noreturn)) void rt_die(uint64_t status, const char *fmt, ...);

/* ---- formatting: %d %i %u %x %X %c %s %p %%, flags '-' '0', width,
 *      length modifiers l ll z; returns the length it wanted to write ---- */
int rt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
__attribute__((format(printf, 3, 4))) int rt_snprintf(char *buf, size_t size, const char *fmt, ...);

/* ---- time ---- */
static inline uint64_t rt_rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void rt_pause(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void rt_barrier(void) { __asm__ volatile("" ::: "memory"); }
/* TSC frequency: info->tsc_khz, or calibrated against the TIME register
 * (about 20 ms, a few exits) when the VMM left it 0. */
uint64_t rt_tsc_khz(void);
/* Convert TSC ticks to nanoseconds / milliseconds without overflow. */
uint64_t rt_tsc_to_ns(uint64_t ticks);

/* ---- command line: whitespace-separated key=value words in info->cmdline ---- */
/* The value of key (a pointer into the cmdline, ending at whitespace/NUL) and
 * its length, or NULL when absent. A bare word "key" has an empty value. */
const char *rt_arg(const char *key, size_t *len);
/* Unsigned number: decimal, 0x hex, optional exponent (1e9) or binary suffix
 * K/M/G/T. Absent -> def; malformed -> rt_die(RT_EXIT_BADARG). */
uint64_t rt_arg_u64(const char *key, uint64_t def);

/* ---- libc bits the compiler may call ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif
