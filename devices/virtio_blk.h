/* virtio-blk over modern virtio-pci, backed by a raw image file (or block
 * device). One request queue, processed by a thread of the device's own
 * (woken by the queue's ioeventfd): a vCPU never waits for the disk.
 *
 * Requests: read, write, flush, get-id, discard and write-zeroes (these two
 * punch holes; not offered read-only). A read-only disk fails writes with
 * VIRTIO_BLK_S_IOERR and advertises VIRTIO_BLK_F_RO.
 *
 * Migration: the section "virtio-blkN" carries the PCI config space, the
 * transport (status, features, MSI-X, queues with their indices) and the
 * disk's geometry. Saving waits for the request being executed; requests the
 * thread finished but could not complete because the VM paused are handed
 * back (the saved last_avail_idx excludes them) and the destination executes
 * them again: reads and writes are idempotent. The disk itself is not copied
 * (shared storage): the destination opens the same path, and vm_config's
 * "disks" (size + content fingerprint) make sure it is the same file: a size
 * mismatch refuses the VM at once; a fingerprint mismatch may be the guest
 * writing the disk meanwhile, so it is checked again against the fingerprint
 * the source takes at the switchover (disk quiet) and refused then.
 *
 * Disk move (blk_move.h): while a move runs, the request thread tells it
 * about every write (dirty bitmap, or a mirror write to the new image before
 * the request completes); the move swaps fd and path with the thread held
 * between two batches (vp.lock, !busy). */
#ifndef FERRY_VIRTIO_BLK_H
#define FERRY_VIRTIO_BLK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/io_thread.h"
#include "devices/virtio_pci.h"
#include "migration/vmstate.h"

#define VIRTIO_ID_BLOCK      2
#define VIRTIO_BLK_QUEUE_SIZE 256
#define VIRTIO_BLK_BATCH     32       /* requests taken from the ring at once */

/* request types and status */
#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20

/* feature bits */
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* The image's identity as migration checks it: size and an XXH3 of its
 * first and last MiB (st_dev/st_ino mean nothing on another host). */
struct disk_id {
    uint64_t size;
    uint64_t fingerprint;
};
/* Open path (read-only or not) and identify it. Returns the fd, or -1 with a
 * one-line reason. */
int disk_open(const char *path, bool readonly, struct disk_id *id, char *err, size_t errlen);

struct virtio_blk_req;
struct blk_move;

struct virtio_blk {
    struct virtio_pci vp;
    char name[24];                 /* "virtio-blk0": PCI name and state section */
    char *path;
    int fd;
    bool readonly;
    struct disk_id id;
    bool recheck;                  /* incoming: fingerprint differed at HELLO */
    char serial[VIRTIO_BLK_ID_BYTES];
    uint8_t config[64];            /* struct virtio_blk_config */
    struct vm_gate gate;

    struct io_thread io;           /* executes the requests */
    atomic_bool unflushed;         /* written since the last flush */
    /* under vp.lock */
    bool busy;                     /* the thread executes requests it took */
    bool held;                     /* a disk move holds the thread: take nothing */
    uint16_t npending;             /* executed, not yet completed (VM paused) */
    struct virtio_blk_req *reqs;   /* the thread's batch */

    struct blk_move *move;         /* the current or last disk move (blk_move.h); set with the
                                      request thread held */
    struct blk_move *track;        /* a shared-nothing migration's write tracker (blk_move.h);
                                      set with the request thread held */
    struct vmstate_desc section;   /* vmstate_virtio_blk, named after the device */
    uint64_t nreqs, nerrors;       /* statistics */
};

/* Open the image, build the device, start its thread. index names it
 * ("virtio-blkN"). expect, when not NULL, is the identity the disk must have
 * (incoming migration). 0 or -1 with a one-line reason. */
int virtio_blk_create(struct virtio_blk *b, int index, const char *path, bool readonly,
                      const struct disk_id *expect, int vm_fd, struct guest_mem *mem,
                      const struct vm_gate *gate, char *err, size_t errlen);
/* The serial (GET_ID) from path's file name: at create, and on an incoming
 * shared-nothing disk the source's, whatever the file is called here. */
void virtio_blk_set_serial(struct virtio_blk *b, const char *path);
/* The disk's identity now (its content changes while the guest runs). */
int virtio_blk_identify(struct virtio_blk *b, struct disk_id *id, char *err, size_t errlen);
/* Stop the thread, close everything (after the VM stopped). */
void virtio_blk_destroy(struct virtio_blk *b);

/* Migration (struct mig_device hooks, opaque = struct virtio_blk *). */
struct virtio_blk_state {
    struct virtio_pci_state vp;
    uint64_t capacity;             /* sectors: must match */
    uint8_t readonly;              /* must match */
    uint64_t fingerprint;          /* of the quiesced disk, for a destination that rechecks */
};
extern const struct vmstate_desc vmstate_virtio_blk;   /* template: each device renames a copy */
int virtio_blk_state_save(void *opaque, void *state, char *err, size_t errlen);
int virtio_blk_state_load(void *opaque, const void *state, char *err, size_t errlen);
#define virtio_blk_mig_device(b) ((struct mig_device){ &(b)->section, sizeof(struct virtio_blk_state), \
                                                       (b), virtio_blk_state_save, virtio_blk_state_load, NULL })

#endif
