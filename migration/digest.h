/* Memory digest for the migration's integrity check.
 *
 * A page's hash is XXH3-64 of its 4 KiB. A chunk's digest (DIGEST_CHUNK of
 * RAM, regions in order, a region's last chunk possibly short) is XXH3-64 of
 * its pages' hashes as little-endian u64s. The destination hashes each page
 * as it lands (pages.c), so its digest costs no pass over RAM; the source
 * hashes its frozen RAM, with several threads. */
#ifndef FERRY_DIGEST_H
#define FERRY_DIGEST_H

#include <stddef.h>
#include <stdint.h>
#include "vmm/memory.h"

#define DIGEST_CHUNK (2ull << 20)

/* Hash of an all-zero page (RAM that never received a page is zero). */
uint64_t digest_zero_page(void);
size_t digest_npages(const struct guest_mem *m);
/* Index of gpa's page among all pages of m (regions in order), or (size_t)-1. */
size_t digest_page_index(const struct guest_mem *m, uint64_t gpa);
/* Per-page hash table for a receiver, every page zero: free() it. */
uint64_t *digest_hashes_new(const struct guest_mem *m);

size_t digest_count(const struct guest_mem *m, uint64_t chunk);
/* Source: hash m's RAM and fill out[digest_count()]; 0 or -1. */
int digest_compute(const struct guest_mem *m, uint64_t chunk, uint64_t *out);
/* Destination: the same digests from the page hashes it recorded. */
void digest_from_hashes(const struct guest_mem *m, uint64_t chunk, const uint64_t *hash, uint64_t *out);
/* GPA of chunk i (for "mismatch at GPA x" messages). */
uint64_t digest_chunk_gpa(const struct guest_mem *m, uint64_t chunk, size_t i);

#endif
