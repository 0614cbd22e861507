#include <pthread.h>
#include <unistd.h>
#include <xxh_x86dispatch.h>
#include <xxhash.h>

#include "migration/digest.h"

#define DIGEST_MAX_THREADS 16

size_t digest_count(const struct guest_mem *m, uint64_t chunk)
{
    size_t n = 0;
    for (int i = 0; i < m->nregions; i++)
        n += (m->regions[i].size + chunk - 1) / chunk;
    return n;
}

/* Chunk i as (host pointer, length). */
static const uint8_t *chunk_at(const struct guest_mem *m, uint64_t chunk, size_t i, size_t *len,
                               uint64_t *gpa)
{
    for (int r = 0; r < m->nregions; r++) {
        size_t n = (m->regions[r].size + chunk - 1) / chunk;
        if (i < n) {
            uint64_t off = i * chunk;
            uint64_t left = m->regions[r].size - off;
            *len = left < chunk ? left : chunk;
            *gpa = m->regions[r].gpa + off;
            return m->regions[r].hva + off;
        }
        i -= n;
    }
    return NULL;
}

uint64_t digest_chunk_gpa(const struct guest_mem *m, uint64_t chunk, size_t i)
{
    size_t len;
    uint64_t gpa = 0;
    chunk_at(m, chunk, i, &len, &gpa);
    return gpa;
}

size_t digest_chunk_index(const struct guest_mem *m, uint64_t chunk, uint64_t gpa)
{
    size_t base = 0;
    for (int r = 0; r < m->nregions; r++) {
        const struct gmem_region *g = &m->regions[r];
        if (gpa >= g->gpa && gpa - g->gpa < g->size)
            return base + (gpa - g->gpa) / chunk;
        base += (g->size + chunk - 1) / chunk;
    }
    return (size_t)-1;
}

struct job {
    const struct guest_mem *m;
    uint64_t chunk;
    uint64_t *out;
    size_t first, end;
    const uint8_t *touched;
    uint64_t zero_full;          /* digest of an all-zero chunk of full size */
};

static uint64_t zero_digest(size_t len)
{
    static const uint8_t zeros[64 << 10];
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    for (size_t off = 0; off < len; off += sizeof(zeros))
        XXH3_64bits_update(st, zeros, len - off < sizeof(zeros) ? len - off : sizeof(zeros));
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static void *hash_range(void *arg)
{
    struct job *j = arg;
    for (size_t i = j->first; i < j->end; i++) {
        size_t len = 0;
        uint64_t gpa;
        const uint8_t *p = chunk_at(j->m, j->chunk, i, &len, &gpa);
        if (j->touched && !j->touched[i])
            j->out[i] = len == j->chunk ? j->zero_full : zero_digest(len);
        else
            j->out[i] = XXH3_64bits_dispatch(p, len);  /* AVX2/AVX-512 when the CPU has them */
    }
    return NULL;
}

int digest_compute(const struct guest_mem *m, uint64_t chunk, uint64_t *out)
{
    return digest_compute_skip(m, chunk, out, NULL);
}

int digest_compute_skip(const struct guest_mem *m, uint64_t chunk, uint64_t *out,
                        const uint8_t *touched)
{
    uint64_t zero_full = touched ? zero_digest(chunk) : 0;
    size_t n = digest_count(m, chunk);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = cpus < 1 ? 1 : cpus > DIGEST_MAX_THREADS ? DIGEST_MAX_THREADS : (size_t)cpus;
    if (nt > n)
        nt = n ? n : 1;
    struct job jobs[DIGEST_MAX_THREADS];
    pthread_t th[DIGEST_MAX_THREADS];
    size_t started = 0;
    int rc = 0;
    for (size_t t = 0; t < nt; t++) {
        jobs[t] = (struct job){ m, chunk, out, n * t / nt, n * (t + 1) / nt, touched, zero_full };
        if (t == nt - 1 || pthread_create(&th[t], NULL, hash_range, &jobs[t]) != 0) {
            /* the last share (or any that failed to get a thread) runs here */
            jobs[t].end = n;
            hash_range(&jobs[t]);
            break;
        }
        started++;
    }
    for (size_t t = 0; t < started; t++)
        rc |= pthread_join(th[t], NULL);
    return rc ? -1 : 0;
}
