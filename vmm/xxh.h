/* XXH3 for Ferry's hashes (page and block hashes, digests, the plaintext
 * frame checksum): include this instead of <xxhash.h>. It maps the XXH3
 * names to libxxhash's x86 dispatch, AVX2/AVX-512 when the CPU has them:
 * Debian's default entry points are SSE2, here 3x slower one-shot (16 against
 * 45 GB/s on 64 KiB) and 8x slower streaming (5.5 against 45 GB/s). The
 * hashes are the same either way. */
#ifndef FERRY_XXH_H
#define FERRY_XXH_H

#define XXH_STATIC_LINKING_ONLY   /* XXH3_state_t on the stack */
#include <xxhash.h>
#include <xxh_x86dispatch.h>

#endif
