/* Memory digest: per-page XXH3, combined per chunk (see digest.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration/digest.h"
#include "vmm/xxh.h"

#define DIGEST_MAX_THREADS 16
#define PG 4096ull

uint64_t digest_zero_page(void)
{
    static const uint8_t zeros[PG];
    static uint64_t h;   /* a benign race: every thread computes the same value */
    if (!h)
        h = XXH3_64bits(zeros, sizeof(zeros));
    return h;
}

size_t digest_npages(const struct guest_mem *m)
{
    size_t n = 0;
    for (int i = 0; i < m->nregions; i++)
        n += m->regions[i].size / PG;
    return n;
}

size_t digest_page_index(const struct guest_mem *m, uint64_t gpa)
{
    size_t base = 0;
    for (int r = 0; r < m->nregions; r++) {
        const struct gmem_region *g = &m->regions[r];
        if (gpa >= g->gpa && gpa - g->gpa < g->size)
            return base + (gpa - g->gpa) / PG;
        base += g->size / PG;
    }
    return (size_t)-1;
}

uint64_t *digest_hashes_new(const struct guest_mem *m)
{
    size_t n = digest_npages(m);
    uint64_t *h = malloc((n ? n : 1) * sizeof(*h)), z = digest_zero_page();
    for (size_t i = 0; h && i < n; i++)
        h[i] = z;
    return h;
}

size_t digest_count(const struct guest_mem *m, uint64_t chunk)
{
    size_t n = 0;
    for (int i = 0; i < m->nregions; i++)
        n += (m->regions[i].size + chunk - 1) / chunk;
    return n;
}

/* Chunk i as (first page index, page count, GPA). */
static void chunk_at(const struct guest_mem *m, uint64_t chunk, size_t i, size_t *page,
                     size_t *npages, uint64_t *gpa)
{
    size_t base = 0;
    for (int r = 0; r < m->nregions; r++) {
        size_t n = (m->regions[r].size + chunk - 1) / chunk;
        if (i < n) {
            uint64_t off = i * chunk, left = m->regions[r].size - off;
            *page = base + off / PG;
            *npages = (left < chunk ? left : chunk) / PG;
            *gpa = m->regions[r].gpa + off;
            return;
        }
        i -= n;
        base += m->regions[r].size / PG;
    }
    *page = *npages = 0;
    *gpa = 0;
}

uint64_t digest_chunk_gpa(const struct guest_mem *m, uint64_t chunk, size_t i)
{
    size_t page, n;
    uint64_t gpa;
    chunk_at(m, chunk, i, &page, &n, &gpa);
    return gpa;
}

static uint64_t combine(const uint64_t *hash, size_t n)
{
    uint64_t le[512];
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (size_t done = 0; done < n;) {
        size_t k = n - done < 512 ? n - done : 512;
        for (size_t j = 0; j < k; j++)
            le[j] = htole64(hash[done + j]);
        XXH3_64bits_update(&st, le, k * sizeof(*le));
        done += k;
    }
    return XXH3_64bits_digest(&st);
}

void digest_from_hashes(const struct guest_mem *m, uint64_t chunk, const uint64_t *hash, uint64_t *out)
{
    size_t n = digest_count(m, chunk);
    for (size_t i = 0; i < n; i++) {
        size_t page, np;
        uint64_t gpa;
        chunk_at(m, chunk, i, &page, &np, &gpa);
        out[i] = combine(hash + page, np);
    }
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
    uint64_t h[512];
    for (size_t i = j->first; i < j->end; i++) {
        size_t page, np;
        uint64_t gpa;
        chunk_at(j->m, j->chunk, i, &page, &np, &gpa);
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        for (size_t done = 0; done < np;) {
            size_t k = np - done < 512 ? np - done : 512;
            const uint8_t *p = gmem_ptr(j->m, gpa + done * PG, k * PG);
            for (size_t q = 0; q < k; q++)
                h[q] = htole64(XXH3_64bits(p + q * PG, PG));
            XXH3_64bits_update(&st, h, k * sizeof(*h));
            done += k;
        }
        j->out[i] = XXH3_64bits_digest(&st);
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
