/* Split virtqueues (virtio 1.x, 2.7): the device side. The rings live in
 * guest RAM; every address the guest gives is bounds-checked with gmem_ptr
 * before use, descriptors are copied before they are interpreted, and a
 * malformed ring marks the queue broken instead of being trusted.
 *
 * Not thread-safe: one thread (or one lock) per queue. */
#ifndef FERRY_VIRTQUEUE_H
#define FERRY_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/memory.h"

#define VIRTQ_MAX_SIZE   32768   /* split ring limit */
#define VIRTQ_MAX_SEGS   512     /* buffers in one chain (direct + indirect) */

#define VIRTQ_DESC_F_NEXT      1
#define VIRTQ_DESC_F_WRITE     2
#define VIRTQ_DESC_F_INDIRECT  4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY     1

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX     29

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

/* One buffer of a chain, already translated to a host pointer. */
struct virtq_seg {
    void *hva;
    uint64_t gpa;
    uint32_t len;
};

/* A popped chain: the driver's readable buffers (out) come first, then the
 * device-writable ones (in). */
struct virtq_elem {
    uint16_t head;
    uint32_t nout, nin;
    uint64_t out_bytes, in_bytes;
    struct virtq_seg seg[VIRTQ_MAX_SEGS];   /* out: [0, nout), in: [nout, nout + nin) */
};

struct virtq {
    /* Set by the driver through the transport; these and the two indices
     * below are what migrates. */
    uint16_t size;
    uint64_t desc_gpa, avail_gpa, used_gpa;
    uint16_t last_avail_idx;   /* next avail entry the device takes */
    uint16_t used_idx;         /* the used->idx the device last published */

    /* Runtime, from virtq_map. */
    struct guest_mem *mem;
    bool indirect, event_idx;  /* negotiated features */
    uint8_t *desc, *avail, *used;  /* NULL until mapped */
    bool broken;
};

/* Check and translate the ring addresses (size a power of two up to
 * VIRTQ_MAX_SIZE, alignment, every ring inside RAM). 0, or -1 with a reason
 * (the queue stays unmapped). */
int virtq_map(struct virtq *q, struct guest_mem *mem, char *err, size_t errlen);
void virtq_unmap(struct virtq *q);
static inline bool virtq_ready(const struct virtq *q) { return q->desc && !q->broken; }

/* Take the next available chain: 1, 0 when none is available, -1 when the
 * ring is malformed (the queue is then marked broken; err says why). */
int virtq_pop(struct virtq *q, struct virtq_elem *e, char *err, size_t errlen);
/* Chains available but not yet taken. */
uint16_t virtq_pending(const struct virtq *q);

/* Return a chain to the used ring with `len` bytes written into its in
 * buffers, and publish the new used index (marks the touched ring bytes
 * dirty). */
void virtq_push(struct virtq *q, uint16_t head, uint32_t len);
/* Mark the first `bytes` of e's in buffers dirty (after writing them). */
void virtq_mark_written(struct virtq *q, const struct virtq_elem *e, uint64_t bytes);
/* After pushes that moved used_idx from old_used: does the driver want an
 * interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX)? */
bool virtq_need_interrupt(struct virtq *q, uint16_t old_used);
/* With EVENT_IDX: ask for a notification at the next avail entry. Returns
 * true if entries arrived meanwhile (process them before sleeping). */
bool virtq_arm_notify(struct virtq *q);

/* Copy up to len bytes from e's out buffers starting at byte off; returns the
 * count copied. */
size_t virtq_read_out(const struct virtq_elem *e, size_t off, void *dst, size_t len);
/* Copy up to len bytes into e's in buffers starting at byte off (marking them
 * dirty); returns the count copied. */
size_t virtq_write_in(struct virtq *q, const struct virtq_elem *e, size_t off, const void *src, size_t len);

#endif
