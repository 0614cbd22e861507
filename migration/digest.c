#include <pthread.h>
#include <unistd.h>
#include <xxh_x86dispatch.h>

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

struct job {
    const struct guest_mem *m;
    uint64_t chunk;
    uint64_t *out;
    size_t first, end;
};

static void *hash_range(void *arg)
{
    struct job *j = arg;
    for (size_t i = j->first; i < j->end; i++) {
        size_t len = 0;
        uint64_t gpa;
        const uint8_t *p = chunk_at(j->m, j->chunk, i, &len, &gpa);
        j->out[i] = XXH3_64bits_dispatch(p, len);  /* AVX2/AVX-512 when the CPU has them */
    }
    return NULL;
}

int digest_compute(const struct guest_mem *m, uint64_t chunk, uint64_t *out)
{
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
        jobs[t] = (struct job){ m, chunk, out, n * t / nt, n * (t + 1) / nt };
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
