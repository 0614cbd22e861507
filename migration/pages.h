/* MEM_PAGES: guest pages on the wire (protocol 2).
 *
 *   u32 n (1..PAGES_MAX), u8 codec (enum page_codec), u8[3] 0,
 *   n x u64 entry: the page's GPA (4 KiB aligned) | flags in the low bits
 *       (PAGE_F_ZERO: an all-zero page, no data follows),
 *   body: the data of the other pages in entry order, 4096 bytes each; with
 *       a codec, those bytes as one compressed block.
 *
 * The sender gathers the body straight from guest RAM (no staging copy), and
 * the receiver reads it straight into guest RAM. The frame checksum covers
 * only the head and entries: the pages are read from a running guest, which
 * may change one while it is on its way (dirty logging makes the sender send
 * it again), so the body is checked by TLS and by the memory digest instead. */
#ifndef FERRY_PAGES_H
#define FERRY_PAGES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "migration/chan.h"
#include "migration/stream.h"
#include "vmm/memory.h"

#define PAGES_MAX    256          /* pages per message: 1 MiB of data */
#define PAGE_F_ZERO  0x1ull
#define PAGES_HEAD   8

enum page_codec { CODEC_NONE, CODEC_LZ4, CODEC_ZSTD, CODEC_MAX = CODEC_ZSTD };

const char *page_codec_name(enum page_codec c);
/* "off"/"none", "lz4", "zstd" -> codec; -1 when unknown. */
int page_codec_parse(const char *s);

struct page_stats {
    uint64_t pages, zero_pages;
    uint64_t data_bytes;          /* page data before compression */
    uint64_t wire_bytes;          /* everything written or read, headers included */
    uint64_t disk_bytes;          /* disk data in DISK_BLOCKS (disks.h), holes not counted */
};

/* True when the 4 KiB page holds only zero bytes. */
bool page_is_zero(const void *page);

/* ---- sender ---------------------------------------------------------- */

struct pages_tx {
    uint32_t n, ndata;
    uint8_t head[PAGES_HEAD];
    uint64_t ent[PAGES_MAX];
    struct iovec iov[2 + PAGES_MAX];   /* head, entries, then runs of data pages */
    int niov;
    const uint8_t *run_end;            /* where the last data run ends (to extend it) */
    enum page_codec codec;             /* for the next message */
    uint8_t *zin, *zout;               /* compression buffers, allocated on first use */
    void *zctx;                        /* ZSTD_CCtx */
    struct page_stats st;
};

/* Queue the page at gpa (hva: its bytes in guest RAM, read at send time).
 * Returns true when the message is full: send it. */
bool pages_tx_add(struct pages_tx *tx, uint64_t gpa, const void *hva);
/* Send what is queued (nothing if empty). 0, or -1 with a reason. */
int pages_tx_send(struct pages_tx *tx, struct chan *c, char *err, size_t errlen);
void pages_tx_free(struct pages_tx *tx);

/* ---- receiver -------------------------------------------------------- */

struct pages_rx {
    struct guest_mem *mem;
    uint64_t *hash;                /* XXH3 of each page of mem as received (digest.h) */
    uint64_t ent[PAGES_MAX];
    struct iovec iov[PAGES_MAX];
    uint8_t *zin, *zout;
    void *zctx;                    /* ZSTD_DCtx */
    struct page_stats st;
};

/* After msg_read_header returned a MEM_PAGES header in m: validate the
 * entries, read the pages into guest RAM and record their hashes. 0, or -1
 * with a reason (the stream is then out of sync: drop it). */
int pages_rx_recv(struct pages_rx *rx, struct chan *c, struct msg *m, char *err, size_t errlen);
void pages_rx_free(struct pages_rx *rx);

#endif
