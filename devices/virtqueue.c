/* Split virtqueue, device side (see virtqueue.h). Ring layout (virtio 1.x):
 *   desc   16 * size bytes, 16-byte aligned
 *   avail  flags u16, idx u16, ring[size] u16, used_event u16   (2-aligned)
 *   used   flags u16, idx u16, ring[size] {u32 id, u32 len}, avail_event u16 (4-aligned)
 * The host is little-endian like the rings. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "devices/virtqueue.h"

static size_t avail_bytes(uint16_t size) { return 6 + 2 * (size_t)size; }
static size_t used_bytes(uint16_t size) { return 6 + 8 * (size_t)size; }

static uint16_t load16_acquire(const uint8_t *p)
{
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

static uint16_t load16(const uint8_t *p)
{
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}

static void store16_release(uint8_t *p, uint16_t v)
{
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}

int virtq_map(struct virtq *q, struct guest_mem *mem, char *err, size_t errlen)
{
    virtq_unmap(q);
    q->mem = mem;
    q->broken = false;
    if (!q->size || q->size > VIRTQ_MAX_SIZE || (q->size & (q->size - 1))) {
        snprintf(err, errlen, "queue size %u is not a power of two up to %u", q->size, VIRTQ_MAX_SIZE);
        return -1;
    }
    if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3)) {
        snprintf(err, errlen, "misaligned ring (desc 0x%llx, avail 0x%llx, used 0x%llx)",
                 (unsigned long long)q->desc_gpa, (unsigned long long)q->avail_gpa,
                 (unsigned long long)q->used_gpa);
        return -1;
    }
    uint8_t *d = gmem_ptr(mem, q->desc_gpa, 16ull * q->size);
    uint8_t *a = gmem_ptr(mem, q->avail_gpa, avail_bytes(q->size));
    uint8_t *u = gmem_ptr(mem, q->used_gpa, used_bytes(q->size));
    if (!d || !a || !u) {
        snprintf(err, errlen, "ring outside guest RAM (desc 0x%llx, avail 0x%llx, used 0x%llx, size %u)",
                 (unsigned long long)q->desc_gpa, (unsigned long long)q->avail_gpa,
                 (unsigned long long)q->used_gpa, q->size);
        return -1;
    }
    q->desc = d;
    q->avail = a;
    q->used = u;
    return 0;
}

void virtq_unmap(struct virtq *q)
{
    q->desc = q->avail = q->used = NULL;
}

uint16_t virtq_pending(const struct virtq *q)
{
    if (!virtq_ready(q))
        return 0;
    return (uint16_t)(load16_acquire(q->avail + 2) - q->last_avail_idx);
}

static int fail(struct virtq *q, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct virtq *q, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    q->broken = true;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int virtq_pop(struct virtq *q, struct virtq_elem *e, char *err, size_t errlen)
{
    if (!virtq_ready(q))
        return 0;
    uint16_t avail_idx = load16_acquire(q->avail + 2);
    uint16_t n = (uint16_t)(avail_idx - q->last_avail_idx);
    if (!n)
        return 0;
    if (n > q->size)
        return fail(q, err, errlen, "avail index %u is %u entries ahead of the ring size", avail_idx, n);
    uint16_t head = load16(q->avail + 4 + 2 * (q->last_avail_idx & (q->size - 1)));
    if (head >= q->size)
        return fail(q, err, errlen, "avail entry names descriptor %u of %u", head, q->size);

    e->head = head;
    e->nout = e->nin = 0;
    e->out_bytes = e->in_bytes = 0;
    const uint8_t *table = q->desc;
    uint32_t tsize = q->size, i = head, seen = 0;
    bool indirect = false;
    for (;;) {
        if (++seen > tsize)
            return fail(q, err, errlen, "descriptor chain from %u loops (more than %u links)", head, tsize);
        struct virtq_desc d;
        memcpy(&d, table + 16 * (size_t)i, sizeof(d));
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (!q->indirect)
                return fail(q, err, errlen, "indirect descriptor %u without the feature", i);
            if (indirect)
                return fail(q, err, errlen, "nested indirect descriptor at %u", i);
            if (d.flags & VIRTQ_DESC_F_NEXT)
                return fail(q, err, errlen, "indirect descriptor %u also has NEXT", i);
            if (!d.len || d.len % 16 || d.len / 16 > VIRTQ_MAX_SIZE)
                return fail(q, err, errlen, "indirect table of %u bytes at descriptor %u", d.len, i);
            const uint8_t *t = gmem_ptr(q->mem, d.addr, d.len);
            if (!t)
                return fail(q, err, errlen, "indirect table of descriptor %u outside RAM (%u bytes)", i, d.len);
            table = t;
            tsize = d.len / 16;
            i = 0;
            seen = 0;
            indirect = true;
            continue;
        }
        if (d.len) {
            void *hva = gmem_ptr(q->mem, d.addr, d.len);
            if (!hva)
                return fail(q, err, errlen, "descriptor %u: buffer outside RAM (%u bytes)", i, d.len);
            if (e->nout + e->nin == VIRTQ_MAX_SEGS)
                return fail(q, err, errlen, "chain from %u has more than %u buffers", head, VIRTQ_MAX_SEGS);
            struct virtq_seg *s = &e->seg[e->nout + e->nin];
            *s = (struct virtq_seg){ .hva = hva, .gpa = d.addr, .len = d.len };
            if (d.flags & VIRTQ_DESC_F_WRITE) {
                e->nin++;
                e->in_bytes += d.len;
            } else {
                if (e->nin)
                    return fail(q, err, errlen, "descriptor %u: readable buffer after a writable one", i);
                e->nout++;
                e->out_bytes += d.len;
            }
        }
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            break;
        if (d.next >= tsize)
            return fail(q, err, errlen, "descriptor %u: next %u out of range", i, d.next);
        i = d.next;
    }
    q->last_avail_idx++;
    return 1;
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t len)
{
    if (!q->used)
        return;
    uint32_t slot = q->used_idx & (q->size - 1);
    uint8_t *el = q->used + 4 + 8 * (size_t)slot;
    uint32_t v[2] = { head, len };
    memcpy(el, v, sizeof(v));
    q->used_idx++;
    store16_release(q->used + 2, q->used_idx);
    gmem_mark_dirty(q->mem, q->used_gpa + 4 + 8ull * slot, 8);
    gmem_mark_dirty(q->mem, q->used_gpa + 2, 2);
}

void virtq_mark_written(struct virtq *q, const struct virtq_elem *e, uint64_t bytes)
{
    for (uint32_t k = 0; k < e->nin && bytes; k++) {
        const struct virtq_seg *s = &e->seg[e->nout + k];
        uint64_t n = bytes < s->len ? bytes : s->len;
        gmem_mark_dirty(q->mem, s->gpa, n);
        bytes -= n;
    }
}

bool virtq_need_interrupt(struct virtq *q, uint16_t old_used)
{
    if (!q->avail || old_used == q->used_idx)
        return false;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  /* used idx visible before reading the driver's wish */
    if (q->event_idx) {
        uint16_t event = load16(q->avail + 4 + 2 * (size_t)q->size);
        return (uint16_t)(q->used_idx - event - 1) < (uint16_t)(q->used_idx - old_used);
    }
    return !(load16(q->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

bool virtq_arm_notify(struct virtq *q)
{
    if (!virtq_ready(q))
        return false;
    if (q->event_idx) {
        store16_release(q->used + 4 + 8 * (size_t)q->size, q->last_avail_idx);
        gmem_mark_dirty(q->mem, q->used_gpa + 4 + 8ull * q->size, 2);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);  /* avail_event visible before re-reading avail idx */
    }
    return virtq_pending(q) != 0;
}

size_t virtq_read_out(const struct virtq_elem *e, size_t off, void *dst, size_t len)
{
    size_t done = 0;
    for (uint32_t k = 0; k < e->nout && done < len; k++) {
        const struct virtq_seg *s = &e->seg[k];
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        size_t n = s->len - off < len - done ? s->len - off : len - done;
        memcpy((uint8_t *)dst + done, (const uint8_t *)s->hva + off, n);
        done += n;
        off = 0;
    }
    return done;
}

size_t virtq_write_in(struct virtq *q, const struct virtq_elem *e, size_t off, const void *src, size_t len)
{
    size_t done = 0;
    for (uint32_t k = 0; k < e->nin && done < len; k++) {
        const struct virtq_seg *s = &e->seg[e->nout + k];
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        size_t n = s->len - off < len - done ? s->len - off : len - done;
        memcpy((uint8_t *)s->hva + off, (const uint8_t *)src + done, n);
        gmem_mark_dirty(q->mem, s->gpa + off, n);
        done += n;
        off = 0;
    }
    return done;
}
