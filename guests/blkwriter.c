/* SPDX-License-Identifier: MIT
 * blkwriter: writes numbered 4 KiB blocks to a virtio-blk disk, pass after
 * pass, with a minimal polled virtio-pci driver of its own (no interrupts:
 * the queue's MSI-X vector stays unset and the used ring is polled).
 *
 * Block i of pass (generation) g holds, in every qword k:
 *   k = 0: BLKWRITER_MAGIC, k = 1: i, k = 2: g, k >= 3: (g << 32 | i) ^ k
 * so a block is valid only when it is whole, and at any instant the disk
 * reads as generation G up to a cursor and G-1 after it (0 = never written,
 * all zero). The host checks that (tests/func/move-disk.sh).
 *
 * Arguments: disk=N (the Nth virtio-blk function, default 0), blocks=N
 * (default: the whole disk), passes=N (0 = until stopped), rate=N (writes/s,
 * 0 = as fast as it goes), report=N (a progress line every N writes,
 * default 512), check=1 (after the last pass, read every block back through
 * the device and check it; exit 1 on a bad block).
 *
 * Progress: "blkwriter progress gen=G block=B writes=W lat_p50_us=X
 * lat_p99_us=Y" where W writes have completed (block B of generation G was
 * the last), latencies over the lines' interval. */
#include "rt/rt.h"

#define BLKWRITER_MAGIC 0x31305452574b4c42ull   /* "BLKWRT01" */
#define BS 4096u
#define QSZ 16u

/* virtio-pci modern common configuration (virtio 1.x, 4.1.4.3) */
enum { CC_DFSEL = 0x00, CC_DF = 0x04, CC_GFSEL = 0x08, CC_GF = 0x0c, CC_STATUS = 0x14, CC_QSEL = 0x16,
       CC_QSIZE = 0x18, CC_QMSIX = 0x1a, CC_QENABLE = 0x1c, CC_QNOFF = 0x1e, CC_QDESC = 0x20,
       CC_QAVAIL = 0x28, CC_QUSED = 0x30 };
#define NOTIFY_OFF 0x3000u   /* ferry's layout: notify_off_multiplier 4 (devices/virtio_pci.h) */
#define DEVCFG_OFF 0x2000u

static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static uint32_t pci_read(unsigned dev, unsigned reg)
{
    outl(0xcf8, 0x80000000u | dev << 11 | (reg & 0xfc));
    return inl(0xcfc);
}

static volatile uint8_t *bar;
static inline void w8(unsigned off, uint8_t v) { *(volatile uint8_t *)(bar + off) = v; }
static inline void w16(unsigned off, uint16_t v) { *(volatile uint16_t *)(bar + off) = v; }
static inline void w32(unsigned off, uint32_t v) { *(volatile uint32_t *)(bar + off) = v; }
static inline uint8_t r8(unsigned off) { return *(volatile uint8_t *)(bar + off); }
static inline uint16_t r16(unsigned off) { return *(volatile uint16_t *)(bar + off); }
static inline uint32_t r32(unsigned off) { return *(volatile uint32_t *)(bar + off); }
static void w64(unsigned off, uint64_t v)
{
    w32(off, (uint32_t)v);
    w32(off + 4, (uint32_t)(v >> 32));
}

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct req_hdr { uint32_t type, reserved; uint64_t sector; };

/* The ring and buffers live in RAM above the image (GPA = VA). */
#define RING_GPA 0x1000000ull   /* 16 MiB */
static volatile struct desc *desc;
static volatile uint16_t *avail;    /* flags, idx, ring[QSZ] */
static volatile uint16_t *used;     /* flags, idx, then {u32 id, u32 len}[QSZ] */
static struct req_hdr *hdr;
static volatile uint8_t *status;
static uint64_t *data;
static uint16_t avail_idx, notify_off;

/* One request, polled to completion: returns the status byte. */
static uint8_t request(uint32_t type, uint64_t sector)
{
    hdr->type = type;
    hdr->reserved = 0;
    hdr->sector = sector;
    *status = 0xff;
    desc[0] = (struct desc){ (uint64_t)(uintptr_t)hdr, sizeof(*hdr), 1, 1 };
    desc[1] = (struct desc){ (uint64_t)(uintptr_t)data, BS, (uint16_t)(1 | (type == 0 ? 2 : 0)), 2 };
    desc[2] = (struct desc){ (uint64_t)(uintptr_t)status, 1, 2, 0 };
    avail[2 + avail_idx % QSZ] = 0;
    rt_barrier();
    avail_idx++;
    avail[1] = avail_idx;
    rt_barrier();
    w16(NOTIFY_OFF + 4u * notify_off, 0);
    while (used[1] != avail_idx)
        rt_pause();
    rt_barrier();
    return *status;
}

static void fill(uint64_t *q, uint64_t blk, uint64_t gen)
{
    q[0] = BLKWRITER_MAGIC;
    q[1] = blk;
    q[2] = gen;
    for (unsigned k = 3; k < BS / 8; k++)
        q[k] = (gen << 32 | blk) ^ k;
}

/* Find the disk, bring the device up with one 16-entry queue. */
static uint64_t setup(unsigned which)
{
    unsigned found = 0;
    for (unsigned dev = 0; dev < 32; dev++) {
        uint32_t id = pci_read(dev, 0);
        if (id != (0x1042u << 16 | 0x1af4u))   /* virtio 1.x block device */
            continue;
        if (found++ != which)
            continue;
        bar = (volatile uint8_t *)(uintptr_t)(pci_read(dev, 0x10) & ~0xfu);
        break;
    }
    if (!bar)
        rt_die(1, "blkwriter: no virtio-blk disk %u on the PCI bus", which);
    w8(CC_STATUS, 0);
    while (r8(CC_STATUS))
        rt_pause();
    w8(CC_STATUS, 1);
    w8(CC_STATUS, 1 | 2);
    w32(CC_DFSEL, 1);
    if (!(r32(CC_DF) & 1))
        rt_die(1, "blkwriter: the device does not offer VIRTIO_F_VERSION_1");
    w32(CC_GFSEL, 0);
    w32(CC_GF, 0);
    w32(CC_GFSEL, 1);
    w32(CC_GF, 1);     /* VERSION_1 only: no indirect, no event index */
    w8(CC_STATUS, 1 | 2 | 8);
    if (!(r8(CC_STATUS) & 8))
        rt_die(1, "blkwriter: FEATURES_OK refused");
    w16(CC_QSEL, 0);
    if (r16(CC_QSIZE) < QSZ)
        rt_die(1, "blkwriter: queue too small");
    w16(CC_QSIZE, QSZ);
    w16(CC_QMSIX, 0xffff);
    notify_off = r16(CC_QNOFF);
    uint8_t *ring = (uint8_t *)(uintptr_t)RING_GPA;
    memset(ring, 0, 4 * 4096);
    desc = (volatile struct desc *)ring;
    avail = (volatile uint16_t *)(ring + 0x1000);
    used = (volatile uint16_t *)(ring + 0x2000);
    hdr = (struct req_hdr *)(ring + 0x3000);
    status = ring + 0x3100;
    data = (uint64_t *)(ring + 0x4000);
    avail[0] = 1;      /* VIRTQ_AVAIL_F_NO_INTERRUPT: we poll */
    w64(CC_QDESC, (uint64_t)(uintptr_t)desc);
    w64(CC_QAVAIL, (uint64_t)(uintptr_t)avail);
    w64(CC_QUSED, (uint64_t)(uintptr_t)used);
    w16(CC_QENABLE, 1);
    w8(CC_STATUS, 1 | 2 | 8 | 4);
    uint64_t cap = (uint64_t)r32(DEVCFG_OFF) | (uint64_t)r32(DEVCFG_OFF + 4) << 32;
    return cap * 512 / BS;
}

/* Write latencies of the current report interval, in microseconds. */
#define LAT_MAX 20000u
static uint32_t lat_hist[LAT_MAX + 1];

static uint64_t percentile(uint64_t n, unsigned pct)
{
    uint64_t want = (n * pct + 99) / 100, seen = 0;
    for (unsigned us = 0; us <= LAT_MAX; us++) {
        seen += lat_hist[us];
        if (seen >= want && want)
            return us;
    }
    return 0;
}

int gmain(struct ferry_guest_info *info, unsigned cpu)
{
    if (cpu != 0)
        return 0;
    unsigned which = (unsigned)rt_arg_u64("disk", 0);
    uint64_t passes = rt_arg_u64("passes", 0), rate = rt_arg_u64("rate", 0);
    uint64_t report = rt_arg_u64("report", 512), check = rt_arg_u64("check", 0);
    if (!report)
        report = 1;
    uint64_t nblocks = setup(which);
    uint64_t blocks = rt_arg_u64("blocks", nblocks);
    if (!blocks || blocks > nblocks)
        rt_die(RT_EXIT_BADARG, "blkwriter: blocks=%llu: the disk has %llu", (unsigned long long)blocks,
               (unsigned long long)nblocks);
    uint64_t khz = rt_tsc_khz();
    rt_printf("blkwriter: %llu blocks of %u bytes, passes=%llu rate=%llu", (unsigned long long)blocks, BS,
              (unsigned long long)passes, (unsigned long long)rate);

    uint64_t writes = 0, interval = 0, t_start = rt_rdtsc();
    for (uint64_t gen = 1; !passes || gen <= passes; gen++) {
        for (uint64_t blk = 0; blk < blocks; blk++) {
            if (rate) {   /* pace: the n-th write not before n / rate seconds */
                uint64_t due = t_start + writes * khz * 1000 / rate;
                while (rt_rdtsc() < due)
                    rt_pause();
            }
            fill(data, blk, gen);
            uint64_t t0 = rt_rdtsc();
            uint8_t st = request(1, blk * (BS / 512));
            uint64_t us = (rt_rdtsc() - t0) * 1000 / khz;
            if (st != 0)
                rt_die(1, "blkwriter: write of block %llu gen %llu failed: status %u", (unsigned long long)blk,
                       (unsigned long long)gen, st);
            lat_hist[us > LAT_MAX ? LAT_MAX : us]++;
            writes++;
            if (++interval == report) {
                rt_printf("blkwriter progress gen=%llu block=%llu writes=%llu lat_p50_us=%llu lat_p99_us=%llu",
                          (unsigned long long)gen, (unsigned long long)blk, (unsigned long long)writes,
                          (unsigned long long)percentile(interval, 50),
                          (unsigned long long)percentile(interval, 99));
                memset(lat_hist, 0, sizeof(lat_hist));
                interval = 0;
            }
        }
    }
    if (check) {
        for (uint64_t blk = 0; blk < blocks; blk++) {
            uint8_t st = request(0, blk * (BS / 512));
            if (st != 0)
                rt_die(1, "blkwriter: read of block %llu failed: status %u", (unsigned long long)blk, st);
            uint64_t want[3] = { BLKWRITER_MAGIC, blk, passes };
            for (unsigned k = 0; k < BS / 8; k++) {
                uint64_t w = k < 3 ? want[k] : (passes << 32 | blk) ^ k;
                if (data[k] != w)
                    rt_die(1, "blkwriter: block %llu qword %u reads 0x%llx, expected 0x%llx",
                           (unsigned long long)blk, k, (unsigned long long)data[k], (unsigned long long)w);
            }
        }
        rt_printf("blkwriter: read back %llu blocks ok", (unsigned long long)blocks);
    }
    rt_printf("blkwriter done writes=%llu", (unsigned long long)writes);
    return 0;
}
