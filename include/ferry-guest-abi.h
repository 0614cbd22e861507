/* SPDX-License-Identifier: MIT
 * The contract between ferry-vmm and Ferry micro-guests (guests/).
 *
 * Micro-guests are freestanding ELF64 programs linked at FERRY_GUEST_LOAD_ADDR.
 * ferry-vmm enters them in 64-bit mode at CPL3 (so they run natively on PVM as
 * well as on VMX/SVM) with:
 *   - every GPA below max(4 GiB, top of RAM) identity-mapped with 2 MiB pages,
 *     P|RW|US at every level (the test device page included);
 *   - a 64-bit TSS whose I/O bitmap allows all ports (so CPL3 may use the UART);
 *   - rdi = GPA of struct ferry_guest_info, rsi = vCPU index, rsp = 0
 *     (the runtime sets its own stack), rflags = 0x2.
 * There is no IDT: a guest exception ends in a shutdown, reported by the VMM.
 */
#ifndef FERRY_GUEST_ABI_H
#define FERRY_GUEST_ABI_H

#include <stdint.h>

#define FERRY_GUEST_LOAD_ADDR   0x200000ull   /* 2 MiB: link address of guests */
#define FERRY_GUEST_INFO_ADDR   0x30000ull    /* struct ferry_guest_info */
#define FERRY_GUEST_INFO_MAGIC  0x4f464e4959525246ull /* "FRRYINFO" */
#define FERRY_GUEST_CMDLINE_MAX 2048

/* Guest RAM below this GPA is reserved for the VMM (page tables, GDT, TSS, info).
 * Guests keep their data above the end of their image. */
#define FERRY_GUEST_RESERVED_TOP 0x100000ull

struct ferry_guest_info {
    uint64_t magic;          /* FERRY_GUEST_INFO_MAGIC */
    uint64_t ram_size;       /* bytes of guest RAM */
    uint64_t ram_below_4g;   /* RAM is [0, ram_below_4g) and [4 GiB, 4 GiB + rest) */
    uint64_t tsc_khz;        /* guest TSC frequency */
    uint64_t ncpus;          /* number of vCPUs */
    char cmdline[FERRY_GUEST_CMDLINE_MAX]; /* ferry-vmm --append string, NUL-terminated */
};

/* The test device: one 4 KiB MMIO page with no memslot behind it, so every
 * access is a KVM_EXIT_MMIO. Registers are 64-bit, accessed with 8-byte moves. */
#define FERRY_TESTDEV_ADDR     0xfe000000ull
#define FERRY_TESTDEV_EXIT     0x00  /* W: guest exits; value = exit status (0 = success) */
#define FERRY_TESTDEV_PRINT    0x08  /* W: GPA of a NUL-terminated string to print (one line) */
#define FERRY_TESTDEV_RESULT   0x10  /* W: a value to report (logged as "testdev: result N") */
#define FERRY_TESTDEV_TIME_NS  0x18  /* R: host CLOCK_MONOTONIC in ns (also a timestamp event) */
#define FERRY_TESTDEV_STAMP    0x20  /* W: a guest TSC stamp, recorded by the VMM (downtime check) */
#define FERRY_TESTDEV_SLEEP    0x28  /* W: idle this vCPU for up to N ns (at most 1 ms): a CPL3 guest's HLT */
#define FERRY_TESTDEV_SLEEP_MAX_NS 1000000ull

#endif
