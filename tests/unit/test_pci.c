/* PCI (devices/pci.c) through ports 0xCF8/0xCFC as Linux's conf1 driver
 * uses them: the type-1 probe, the host bridge, BAR allocation and sizing,
 * command-register decoding, MMIO dispatch; and the modern virtio-pci
 * transport (devices/virtio_pci.c) on top: capability list, feature
 * negotiation, queue setup, MSI-X masking and pending bits, reset, and its
 * state table round trip. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "devices/pci.h"
#include "devices/virtio_pci.h"
#include "tests/unit/virtio_bar.h"

static struct pci_host host;

static void outl(uint16_t port, uint32_t v)
{
    uint8_t d[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    pci_pio(&host, port - PCI_CONFIG_PORT, d, 4, true);
}

static uint32_t inl(uint16_t port)
{
    uint8_t d[4];
    pci_pio(&host, port - PCI_CONFIG_PORT, d, 4, false);
    return (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
}

static uint32_t cfg_addr(unsigned slot, unsigned reg)
{
    return 0x80000000u | slot << 11 | (reg & 0xfc);
}

static uint32_t cfgr32(unsigned slot, unsigned reg)
{
    outl(0xcf8, cfg_addr(slot, reg));
    return inl(0xcfc);
}

static uint16_t cfgr16(unsigned slot, unsigned reg)
{
    outl(0xcf8, cfg_addr(slot, reg));
    uint8_t d[2];
    pci_pio(&host, 4 + (reg & 3), d, 2, false);
    return (uint16_t)(d[0] | d[1] << 8);
}

static uint8_t cfgr8(unsigned slot, unsigned reg)
{
    outl(0xcf8, cfg_addr(slot, reg));
    uint8_t d;
    pci_pio(&host, 4 + (reg & 3), &d, 1, false);
    return d;
}

static void cfgw32(unsigned slot, unsigned reg, uint32_t v)
{
    outl(0xcf8, cfg_addr(slot, reg));
    outl(0xcfc, v);
}

static void cfgw16(unsigned slot, unsigned reg, uint16_t v)
{
    outl(0xcf8, cfg_addr(slot, reg));
    uint8_t d[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
    pci_pio(&host, 4 + (reg & 3), d, 2, true);
}

/* ---- a plain test device with two BARs ---- */

struct fake {
    struct pci_dev d;
    uint8_t bar0[256];
    int remaps;
    uint64_t last_remap;
};
static struct fake fk;

static void fake_bar_io(struct pci_dev *d, int bar, uint64_t off, uint8_t *data, uint32_t len, bool w)
{
    struct fake *f = d->opaque;
    if (bar != 0)
        return;
    if (w)
        memcpy(f->bar0 + off, data, len);
    else
        memcpy(data, f->bar0 + off, len);
}

static void fake_remap(struct pci_dev *d, int bar, uint64_t addr)
{
    struct fake *f = d->opaque;
    if (bar == 0) {
        f->remaps++;
        f->last_remap = addr;
    }
}

static int setup(void **state)
{
    pci_host_init(&host);
    memset(&fk, 0, sizeof(fk));
    pci_dev_init(&fk.d, 0x1234, 0x5678, 0x01800002, 0x1af4, 0x42);
    pci_dev_add_bar(&fk.d, 0, 256);
    pci_dev_add_bar(&fk.d, 2, 0x100000);
    fk.d.name = "fake";
    fk.d.opaque = &fk;
    fk.d.bar_io = fake_bar_io;
    fk.d.bar_remap = fake_remap;
    char err[128];
    assert_int_equal(pci_register(&host, &fk.d, err, sizeof(err)), 0);
    return 0;
}

static void test_type1_probe(void **state)
{
    /* Linux: outb(0x01, 0xCFB); tmp = inl(0xCF8); outl(0x80000000, 0xCF8); inl(0xCF8) == 0x80000000 */
    uint8_t one = 1;
    pci_pio(&host, 3, &one, 1, true);
    outl(0xcf8, 0x80000000u);
    assert_int_equal(inl(0xcf8), 0x80000000u);
    /* host bridge: class 06/00 at 00:00.0 */
    assert_int_equal(cfgr16(0, PCI_CLASS_DEVICE), 0x0600);
    assert_int_equal(cfgr8(0, PCI_HEADER_TYPE), 0);
}

static void test_absent(void **state)
{
    assert_int_equal(cfgr32(7, 0), 0xffffffffu);
    outl(0xcf8, 0x80010000u);   /* bus 1 */
    assert_int_equal(inl(0xcfc), 0xffffffffu);
    outl(0xcf8, 0x00000800u | 0);  /* enable bit clear */
    assert_int_equal(inl(0xcfc), 0xffffffffu);
    outl(0xcf8, 0x80000900u);   /* function 1 of slot 1 */
    assert_int_equal(inl(0xcfc), 0xffffffffu);
}

static void test_identity(void **state)
{
    assert_int_equal(fk.d.slot, 1);
    assert_int_equal(cfgr32(1, 0), 0x56781234u);
    assert_int_equal(cfgr32(1, 8), 0x01800002u);
    assert_int_equal(cfgr16(1, PCI_SUBSYS_ID), 0x42);
    /* read-only fields ignore writes */
    cfgw32(1, 0, 0);
    assert_int_equal(cfgr32(1, 0), 0x56781234u);
}

static void test_bar_allocation_and_sizing(void **state)
{
    uint32_t b0 = cfgr32(1, PCI_BAR0), b2 = cfgr32(1, PCI_BAR0 + 8);
    assert_int_equal(b0, PCI_MMIO_BASE);
    assert_int_equal(b2 % 0x100000, 0);          /* naturally aligned */
    assert_true(b2 >= PCI_MMIO_BASE + 256);
    assert_int_equal(cfgr32(1, PCI_BAR0 + 4), 0);   /* no BAR 1 */
    assert_true(cfgr16(1, PCI_COMMAND) & PCI_CMD_MEM);
    assert_int_equal(fk.last_remap, PCI_MMIO_BASE);

    /* sizing as Linux does it: decoding off, all ones, read, restore */
    cfgw16(1, PCI_COMMAND, 0);
    assert_int_equal(fk.last_remap, 0);
    cfgw32(1, PCI_BAR0, 0xffffffffu);
    assert_int_equal(cfgr32(1, PCI_BAR0), 0xffffff00u);   /* 256 bytes, 32-bit memory */
    cfgw32(1, PCI_BAR0 + 8, 0xffffffffu);
    assert_int_equal(cfgr32(1, PCI_BAR0 + 8), 0xfff00000u);
    cfgw32(1, PCI_BAR0 + 4, 0xffffffffu);
    assert_int_equal(cfgr32(1, PCI_BAR0 + 4), 0);
    cfgw32(1, PCI_BAR0, b0);
    cfgw32(1, PCI_BAR0 + 8, b2);
    int before = fk.remaps;
    cfgw16(1, PCI_COMMAND, PCI_CMD_MEM | PCI_CMD_MASTER);
    assert_int_equal(fk.remaps, before + 1);
    assert_int_equal(fk.last_remap, b0);
    assert_int_equal(cfgr16(1, PCI_COMMAND), PCI_CMD_MEM | PCI_CMD_MASTER);
}

static void test_mmio_dispatch(void **state)
{
    uint8_t v[4] = { 1, 2, 3, 4 }, r[4];
    pci_mmio(&host, 0x10, v, 4, true);
    assert_memory_equal(fk.bar0 + 0x10, v, 4);
    pci_mmio(&host, 0x10, r, 4, false);
    assert_memory_equal(r, v, 4);
    /* nothing decodes between the BARs: all ones */
    pci_mmio(&host, 0x200, r, 4, false);
    assert_int_equal(r[0], 0xff);
    /* moved BAR: the old address goes dead, the new one decodes */
    cfgw32(1, PCI_BAR0, PCI_MMIO_BASE + 0x8000);
    assert_int_equal(fk.last_remap, PCI_MMIO_BASE + 0x8000);
    pci_mmio(&host, 0x10, r, 4, false);
    assert_int_equal(r[0], 0xff);
    pci_mmio(&host, 0x8010, r, 4, false);
    assert_memory_equal(r, v, 4);
    /* decoding off: dead */
    cfgw16(1, PCI_COMMAND, 0);
    pci_mmio(&host, 0x8010, r, 4, false);
    assert_int_equal(r[0], 0xff);
}

static void test_caps(void **state)
{
    struct pci_dev d;
    pci_dev_init(&d, 1, 2, 0, 0, 0);
    uint8_t a = pci_dev_add_cap(&d, 0x11, 12), b = pci_dev_add_cap(&d, 0x09, 17), c = pci_dev_add_cap(&d, 0x09, 16);
    assert_int_equal(a, 0x40);
    assert_int_equal(b, 0x4c);
    assert_int_equal(c, 0x60);   /* 0x4c + 17 rounded up to a dword */
    assert_int_equal(d.cfg[PCI_CAP_PTR], a);
    assert_int_equal(d.cfg[a + 1], b);
    assert_int_equal(d.cfg[b + 1], c);
    assert_int_equal(d.cfg[c + 1], 0);
    assert_true(pci_get16(d.cfg, PCI_STATUS) & PCI_STATUS_CAPS);
    assert_int_equal(pci_dev_add_cap(&d, 0x09, 200), 0);   /* does not fit */
}

static void test_host_state(void **state)
{
    struct pci_host_state s;
    char err[200];
    outl(0xcf8, cfg_addr(1, 0x10));
    assert_int_equal(pci_host_state_save(&host, &s, err, sizeof(err)), 0);
    struct buf out = { 0 };
    assert_int_equal(vmstate_save(&vmstate_pci_host, &s, &out), 0);
    struct pci_host_state t;
    memset(&t, 0, sizeof(t));
    struct rbuf in = RBUF(out.data, out.len);
    assert_int_equal(vmstate_load(&vmstate_pci_host, &t, &in, err, sizeof(err)), 0);
    outl(0xcf8, 0);
    assert_int_equal(pci_host_state_load(&host, &t, err, sizeof(err)), 0);
    assert_int_equal(inl(0xcf8), cfg_addr(1, 0x10));
    /* a bridge with another identity is refused */
    t.bridge_cfg[0] ^= 1;
    assert_int_equal(pci_host_state_load(&host, &t, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not the same device"));
    buf_free(&out);
}

/* ---- virtio-pci --------------------------------------------------------- */

#define RAM (1u << 20)
static uint8_t ram[RAM] __attribute__((aligned(4096)));
static struct guest_mem mem;
static struct virtio_pci vp;
static uint8_t devcfg[8] = { 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 };
static int resets, oks;

static void v_reset(void *o) { resets++; }
static void v_ok(void *o) { oks++; }
static const struct virtio_dev_ops vops = { .reset = v_reset, .driver_ok = v_ok };

static uint64_t bar0;

static void bw(uint32_t off, uint32_t len, uint64_t v) { bar_write(&host, bar0, off, len, v); }
static uint64_t br(uint32_t off, uint32_t len) { return bar_read(&host, bar0, off, len); }

static int vsetup(void **state)
{
    char err[160];
    pci_host_init(&host);
    memset(ram, 0, sizeof(ram));
    gmem_init_fake(&mem, RAM, ram);
    resets = oks = 0;
    assert_int_equal(virtio_pci_init(&vp, "vtest", 2, 0x0100, (1ull << 9) | (1ull << VIRTIO_F_INDIRECT_DESC),
                                     2, 64, devcfg, sizeof(devcfg), &vops, NULL, -1, &mem, err, sizeof(err)), 0);
    assert_int_equal(pci_register(&host, &vp.pci, err, sizeof(err)), 0);
    bar0 = cfgr32(vp.pci.slot, PCI_BAR0) & ~0xfull;
    return 0;
}

static int vteardown(void **state)
{
    virtio_pci_destroy(&vp);
    return 0;
}

static void test_virtio_identity_and_caps(void **state)
{
    unsigned s = vp.pci.slot;
    assert_int_equal(cfgr16(s, PCI_VENDOR_ID), 0x1af4);
    assert_int_equal(cfgr16(s, PCI_DEVICE_ID), 0x1042);
    assert_int_equal(cfgr8(s, PCI_REVISION_ID), 1);
    assert_true(cfgr16(s, PCI_SUBSYS_ID) >= 0x40);
    assert_int_equal(bar0, PCI_MMIO_BASE);
    /* walk the capability list: MSI-X and the four virtio structures */
    int seen[6] = { 0 }, msix = 0;
    for (unsigned p = cfgr8(s, PCI_CAP_PTR); p; p = cfgr8(s, p + 1)) {
        uint8_t id = cfgr8(s, p);
        if (id == PCI_CAP_ID_MSIX) {
            msix = (int)p;
            assert_int_equal(cfgr16(s, p + 2) & 0x7ff, 2);        /* 3 vectors */
            assert_int_equal(cfgr32(s, p + 4), VIRTIO_PCI_MSIX_OFF);
            assert_int_equal(cfgr32(s, p + 8), VIRTIO_PCI_PBA_OFF);
        } else if (id == PCI_CAP_ID_VNDR) {
            uint8_t type = cfgr8(s, p + 3);
            assert_true(type >= 1 && type <= 4);
            seen[type]++;
            assert_int_equal(cfgr8(s, p + 4), 0);                 /* BAR 0 */
            if (type == 2)
                assert_int_equal(cfgr32(s, p + 16), VIRTIO_PCI_NOTIFY_MULT);
            if (type == 4)
                assert_int_equal(cfgr32(s, p + 12), sizeof(devcfg));
        }
    }
    assert_true(msix);
    for (int t = 1; t <= 4; t++)
        assert_int_equal(seen[t], 1);
}

/* The Linux modern driver's sequence. */
static void driver_init(void)
{
    bw(0x14, 1, 0);                          /* reset */
    bw(0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE);
    bw(0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    bw(0x00, 4, 1);
    assert_int_equal(br(0x04, 4), 1);        /* VERSION_1 */
    bw(0x00, 4, 0);
    assert_int_equal(br(0x04, 4), (1u << 9) | (1u << VIRTIO_F_INDIRECT_DESC));
    bw(0x08, 4, 0);
    bw(0x0c, 4, 1u << 9);
    bw(0x08, 4, 1);
    bw(0x0c, 4, 1);
    bw(0x14, 1, 0x0b);
    assert_int_equal(br(0x14, 1), 0x0b);     /* FEATURES_OK accepted */
}

static void test_virtio_features(void **state)
{
    driver_init();
    assert_int_equal(vp.driver_features, (1ull << 9) | (1ull << VIRTIO_F_VERSION_1));
    assert_int_equal(br(0x12, 2), 2);         /* num_queues */
    /* a driver without VERSION_1 is refused */
    bw(0x14, 1, 0);
    bw(0x14, 1, 3);
    bw(0x08, 4, 0);
    bw(0x0c, 4, 1u << 9);
    bw(0x14, 1, 0x0b);
    assert_int_equal(br(0x14, 1) & VIRTIO_STATUS_FEATURES_OK, 0);
    /* nor one asking for what we do not offer */
    bw(0x14, 1, 0);
    bw(0x14, 1, 3);
    bw(0x08, 4, 0);
    bw(0x0c, 4, 1u << 3);
    bw(0x08, 4, 1);
    bw(0x0c, 4, 1);
    bw(0x14, 1, 0x0b);
    assert_int_equal(br(0x14, 1) & VIRTIO_STATUS_FEATURES_OK, 0);
}

static void test_virtio_queue_setup(void **state)
{
    driver_init();
    bw(0x16, 2, 1);                           /* queue 1 */
    assert_int_equal(br(0x18, 2), 64);        /* max size */
    bw(0x18, 2, 48);                          /* not a power of two: ignored */
    assert_int_equal(br(0x18, 2), 64);
    bw(0x18, 2, 32);
    assert_int_equal(br(0x1e, 2), 1);         /* notify offset */
    bw(0x20, 4, 0x1000); bw(0x24, 4, 0);
    bw(0x28, 8, 0x2000);                      /* 64-bit access */
    bw(0x30, 4, 0x3000); bw(0x34, 4, 0);
    bw(0x1a, 2, 2);
    assert_int_equal(br(0x1a, 2), 2);
    bw(0x1a, 2, 7);                           /* no such vector */
    assert_int_equal(br(0x1a, 2), VIRTIO_MSI_NO_VECTOR);
    bw(0x1a, 2, 1);
    bw(0x1c, 2, 1);
    assert_int_equal(br(0x1c, 2), 1);
    assert_true(virtq_ready(&vp.vq[1]));
    assert_int_equal(vp.vq[1].size, 32);
    assert_true(vp.vq[1].indirect == false);  /* not negotiated */
    /* enabled queues are frozen */
    bw(0x20, 4, 0x9000);
    assert_int_equal(br(0x20, 4), 0x1000);
    bw(0x14, 1, 0x0f);
    assert_int_equal(oks, 1);
    /* queue out of range reads as absent */
    bw(0x16, 2, 5);
    assert_int_equal(br(0x18, 2), 0);
    /* device config */
    assert_int_equal(br(VIRTIO_PCI_DEVCFG_OFF + 4, 4), 0x88776655u);
    bw(VIRTIO_PCI_DEVCFG_OFF, 1, 0);          /* read-only */
    assert_int_equal(br(VIRTIO_PCI_DEVCFG_OFF, 1), 0x11);
    /* reset forgets the queues and tells the device */
    int r = resets;
    bw(0x14, 1, 0);
    assert_int_equal(resets, r + 1);
    assert_int_equal(br(0x14, 1), 0);
    bw(0x16, 2, 1);
    assert_int_equal(br(0x1c, 2), 0);
    assert_int_equal(br(0x18, 2), 64);
    assert_false(virtq_ready(&vp.vq[1]));
}

static void test_virtio_bad_ring_needs_reset(void **state)
{
    driver_init();
    bw(0x16, 2, 0);
    bw(0x20, 8, RAM - 16);                    /* descriptor table past RAM */
    bw(0x28, 8, 0x2000);
    bw(0x30, 8, 0x3000);
    bw(0x1c, 2, 1);
    assert_int_equal(br(0x1c, 2), 0);
    assert_true(br(0x14, 1) & VIRTIO_STATUS_NEEDS_RESET);
}

static void test_msix(void **state)
{
    unsigned s = vp.pci.slot;
    uint8_t cap = vp.msix_cap;
    driver_init();
    bw(0x16, 2, 0);
    bw(0x1a, 2, 1);
    /* table entry 1 */
    bw(VIRTIO_PCI_MSIX_OFF + 16, 4, 0xfee00000);
    bw(VIRTIO_PCI_MSIX_OFF + 20, 4, 0);
    bw(VIRTIO_PCI_MSIX_OFF + 24, 4, 0x4041);
    assert_int_equal(br(VIRTIO_PCI_MSIX_OFF + 28, 4), 1);   /* masked from reset */
    /* MSI-X off: nothing is sent */
    pthread_mutex_lock(&vp.lock);
    virtio_pci_notify_queue(&vp, 0);
    pthread_mutex_unlock(&vp.lock);
    assert_int_equal(vp.msis_sent, 0);
    /* enabled, entry masked: pending */
    cfgw16(s, cap + 2, 0x8000);
    assert_true(vp.msix_enabled);
    pthread_mutex_lock(&vp.lock);
    virtio_pci_notify_queue(&vp, 0);
    pthread_mutex_unlock(&vp.lock);
    assert_int_equal(vp.msis_sent, 0);
    assert_int_equal(br(VIRTIO_PCI_PBA_OFF, 4), 2);
    /* unmask: the pending message goes out */
    bw(VIRTIO_PCI_MSIX_OFF + 28, 4, 0);
    assert_int_equal(vp.msis_sent, 1);
    assert_int_equal(br(VIRTIO_PCI_PBA_OFF, 4), 0);
    pthread_mutex_lock(&vp.lock);
    virtio_pci_notify_queue(&vp, 0);
    pthread_mutex_unlock(&vp.lock);
    assert_int_equal(vp.msis_sent, 2);
    /* function mask */
    cfgw16(s, cap + 2, 0xc000);
    pthread_mutex_lock(&vp.lock);
    virtio_pci_notify_queue(&vp, 0);
    pthread_mutex_unlock(&vp.lock);
    assert_int_equal(vp.msis_sent, 2);
    cfgw16(s, cap + 2, 0x8000);
    assert_int_equal(vp.msis_sent, 3);
    assert_int_equal(br(VIRTIO_PCI_MSIX_OFF + 24, 4), 0x4041);
    /* the table size is read-only in message control */
    assert_int_equal(cfgr16(s, cap + 2), 0x8002);
}

static void test_isr_read_clears(void **state)
{
    pthread_mutex_lock(&vp.lock);
    virtio_pci_notify_queue(&vp, 0);
    pthread_mutex_unlock(&vp.lock);
    assert_int_equal(br(VIRTIO_PCI_ISR_OFF, 1), 1);
    assert_int_equal(br(VIRTIO_PCI_ISR_OFF, 1), 0);
}

static void test_virtio_state_round_trip(void **state)
{
    char err[200];
    driver_init();
    bw(0x16, 2, 1);
    bw(0x18, 2, 16);
    bw(0x20, 8, 0x1000);
    bw(0x28, 8, 0x2000);
    bw(0x30, 8, 0x3000);
    bw(0x1a, 2, 2);
    bw(0x1c, 2, 1);
    bw(0x10, 2, 0);
    bw(0x14, 1, 0x0f);
    bw(VIRTIO_PCI_MSIX_OFF + 32, 4, 0xfee01000);
    bw(VIRTIO_PCI_MSIX_OFF + 40, 4, 0x55);
    cfgw16(vp.pci.slot, vp.msix_cap + 2, 0x8000);
    vp.vq[1].last_avail_idx = 7;
    vp.vq[1].used_idx = 6;

    struct virtio_pci_state *s = calloc(1, sizeof(*s)), *t = calloc(1, sizeof(*t));
    virtio_pci_save(&vp, s);
    struct buf out = { 0 };
    assert_int_equal(vmstate_save(&vmstate_virtio_pci, s, &out), 0);
    struct rbuf in = RBUF(out.data, out.len);
    assert_int_equal(vmstate_load(&vmstate_virtio_pci, t, &in, err, sizeof(err)), 0);
    assert_memory_equal(s, t, sizeof(*s));

    /* load into a freshly reset device */
    bw(0x14, 1, 0);
    cfgw16(vp.pci.slot, vp.msix_cap + 2, 0);
    assert_int_equal(virtio_pci_load(&vp, t, err, sizeof(err)), 0);
    assert_int_equal(br(0x14, 1), 0x0f);
    assert_true(virtq_ready(&vp.vq[1]));
    assert_int_equal(vp.vq[1].size, 16);
    assert_int_equal(vp.vq[1].last_avail_idx, 7);
    assert_int_equal(vp.vq[1].used_idx, 6);
    assert_int_equal(vp.queue_vector[1], 2);
    assert_true(vp.msix_enabled);
    assert_int_equal(br(VIRTIO_PCI_MSIX_OFF + 40, 4), 0x55);
    assert_int_equal(cfgr16(vp.pci.slot, vp.msix_cap + 2), 0x8002);

    /* invalid states are refused and change nothing */
    struct virtio_pci_state bad = *t;
    bad.q[1].desc = RAM - 16;
    assert_int_equal(virtio_pci_load(&vp, &bad, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "queue 1"));
    bad = *t;
    bad.pci_cfg[PCI_DEVICE_ID] = 0x41;
    assert_int_equal(virtio_pci_load(&vp, &bad, err, sizeof(err)), -1);
    bad = *t;
    bad.driver_features |= 1ull << 40;
    assert_int_equal(virtio_pci_load(&vp, &bad, err, sizeof(err)), -1);
    bad = *t;
    bad.q[0].msix_vector = 9;
    assert_int_equal(virtio_pci_load(&vp, &bad, err, sizeof(err)), -1);
    assert_int_equal(vp.vq[1].last_avail_idx, 7);
    buf_free(&out);
    free(s);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_type1_probe, setup),
        cmocka_unit_test_setup(test_absent, setup),
        cmocka_unit_test_setup(test_identity, setup),
        cmocka_unit_test_setup(test_bar_allocation_and_sizing, setup),
        cmocka_unit_test_setup(test_mmio_dispatch, setup),
        cmocka_unit_test(test_caps),
        cmocka_unit_test_setup(test_host_state, setup),
        cmocka_unit_test_setup_teardown(test_virtio_identity_and_caps, vsetup, vteardown),
        cmocka_unit_test_setup_teardown(test_virtio_features, vsetup, vteardown),
        cmocka_unit_test_setup_teardown(test_virtio_queue_setup, vsetup, vteardown),
        cmocka_unit_test_setup_teardown(test_virtio_bad_ring_needs_reset, vsetup, vteardown),
        cmocka_unit_test_setup_teardown(test_msix, vsetup, vteardown),
        cmocka_unit_test_setup_teardown(test_isr_read_clears, vsetup, vteardown),
        cmocka_unit_test_setup_teardown(test_virtio_state_round_trip, vsetup, vteardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
