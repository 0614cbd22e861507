/* SPDX-License-Identifier: MIT
 * Working-set layout shared by the dirtier and checker micro-guests.
 *
 * The working set is `npages` 4 KiB pages at GPA `base`. In generation g
 * (pass g = 1, 2, ...) page p holds the stamp (g << 32) | p in qword 0 and,
 * with stride S (1..511), in every S-th qword after it. Page 0 carries only
 * qword 0: its bytes from DIRTIER_HDR_OFFSET hold struct dirtier_hdr.
 * Generation 0 means "never written" (all zero).
 *
 * Write order within a pass is page 0..N-1, qword 0..511, and hdr.gen is set
 * to g before the first stamp of pass g, so at any instant the stamps read in
 * that order are gen G up to a cursor and gen G-1 after it (G = hdr.gen).
 *
 * Downtime cross-check: the dirtier reads the TSC once per page while it
 * writes and verifies (and on every spin of its rate pacing), so the largest
 * gap between two consecutive readings bounds how long the guest was stopped
 * (a VM pause or a migration's stop-and-copy; the TSC keeps running). Each
 * progress line reports the largest gap since the previous line as
 * max_gap_us=N; hdr.max_gap_ns keeps the largest since the start. */
#ifndef FERRY_GUEST_DIRTIER_H
#define FERRY_GUEST_DIRTIER_H

#include <stdint.h>

#define DIRTIER_MAGIC       0x3152454954524944ull  /* "DIRTIER1" */
#define DIRTIER_HDR_OFFSET  64                     /* inside page 0 of the working set */
#define DIRTIER_PAGE        4096ull
#define DIRTIER_QWORDS      512u
#define DIRTIER_BASE_DEFAULT 0x1000000ull          /* 16 MiB */

struct dirtier_hdr {
    uint64_t magic;     /* DIRTIER_MAGIC */
    uint64_t base;      /* GPA of the working set (= this page) */
    uint64_t npages;    /* pages in the working set */
    uint64_t stride;    /* 0: qword 0 only; S: qwords 0, S, 2S, ... < 512 */
    uint64_t passes;    /* requested passes (0 = forever) */
    uint64_t gen;       /* generation being written (= pass number); 0 before pass 1 */
    uint64_t done;      /* 1 once all `passes` passes were written and verified */
    uint64_t verified;  /* last generation the dirtier verified */
    /* since version 2 of the header (fields appended; magic unchanged): */
    uint64_t tsc_khz;    /* TSC frequency the dirtier used */
    uint64_t max_gap_ns; /* largest gap between consecutive TSC readings since the start */
    uint64_t max_gap_at; /* generation being written or verified when it happened */
};

static inline uint64_t dirtier_stamp(uint64_t gen, uint64_t page)
{
    return (gen << 32) | (page & 0xffffffffull);
}

/* Qword step within pages 1..N-1 (DIRTIER_QWORDS = qword 0 only). */
static inline unsigned dirtier_step(uint64_t stride)
{
    return stride == 0 || stride >= DIRTIER_QWORDS ? DIRTIER_QWORDS : (unsigned)stride;
}

#endif
