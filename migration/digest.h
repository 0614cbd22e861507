/* Whole-memory digest for the switchover integrity check: XXH3-64 of every
 * fixed-size chunk of guest RAM, regions in order (a region's last chunk may
 * be short), hashed by several threads. */
#ifndef FERRY_DIGEST_H
#define FERRY_DIGEST_H

#include <stddef.h>
#include <stdint.h>
#include "vmm/memory.h"

#define DIGEST_CHUNK (2ull << 20)

size_t digest_count(const struct guest_mem *m, uint64_t chunk);
/* Fill out[digest_count()] ; returns 0 or -1 (out of memory / threads). */
int digest_compute(const struct guest_mem *m, uint64_t chunk, uint64_t *out);
/* Like digest_compute, but chunks whose touched[i] is 0 are known to be all
 * zero and get the zero digest without being read (touched may be NULL). */
int digest_compute_skip(const struct guest_mem *m, uint64_t chunk, uint64_t *out,
                        const uint8_t *touched);
/* Index of the chunk holding gpa, or (size_t)-1 outside RAM. */
size_t digest_chunk_index(const struct guest_mem *m, uint64_t chunk, uint64_t gpa);
/* GPA of chunk i (for "mismatch at GPA x" messages). */
uint64_t digest_chunk_gpa(const struct guest_mem *m, uint64_t chunk, size_t i);

#endif
