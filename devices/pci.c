/* PCI host bridge, configuration mechanism #1 and BAR dispatch (see pci.h). */
#include <stdio.h>
#include <string.h>

#include "devices/pci.h"

#define CF8_ENABLE 0x80000000u

void pci_dev_init(struct pci_dev *d, uint16_t vendor, uint16_t device, uint32_t class_rev,
                  uint16_t subsys_vendor, uint16_t subsys_id)
{
    memset(d->cfg, 0, sizeof(d->cfg));
    memset(d->wmask, 0, sizeof(d->wmask));
    memset(d->bar_size, 0, sizeof(d->bar_size));
    d->cap_end = 0x40;
    pci_set16(d->cfg, PCI_VENDOR_ID, vendor);
    pci_set16(d->cfg, PCI_DEVICE_ID, device);
    pci_set32(d->cfg, PCI_REVISION_ID, class_rev);  /* revision, prog-if, subclass, class */
    pci_set16(d->cfg, PCI_SUBSYS_VENDOR, subsys_vendor);
    pci_set16(d->cfg, PCI_SUBSYS_ID, subsys_id);
    /* command: memory, bus master and INTx-disable are the guest's to set */
    pci_set16(d->wmask, PCI_COMMAND, PCI_CMD_MEM | PCI_CMD_MASTER | PCI_CMD_INTX_OFF);
    d->wmask[PCI_INT_LINE] = 0xff;
}

void pci_dev_add_bar(struct pci_dev *d, int bar, uint32_t size)
{
    d->bar_size[bar] = size;
    /* 32-bit, non-prefetchable memory BAR: the type bits read as 0 */
    pci_set32(d->wmask, PCI_BAR0 + 4 * (unsigned)bar, ~(size - 1));
}

uint8_t pci_dev_add_cap(struct pci_dev *d, uint8_t id, uint8_t len)
{
    /* capabilities live in 0x40..0xff, dword aligned, linked from 0x34 */
    unsigned at = d->cap_end ? d->cap_end : 0x40, last = 0;
    for (unsigned p = d->cfg[PCI_CAP_PTR]; p; p = d->cfg[p + 1])
        last = p;
    if (len < 2 || at + len > PCI_CFG_SIZE)
        return 0;
    d->cfg[at] = id;
    d->cfg[at + 1] = 0;
    if (last)
        d->cfg[last + 1] = (uint8_t)at;
    else
        d->cfg[PCI_CAP_PTR] = (uint8_t)at;
    pci_set16(d->cfg, PCI_STATUS, pci_get16(d->cfg, PCI_STATUS) | PCI_STATUS_CAPS);
    d->cap_end = (uint16_t)((at + len + 3) & ~3u);
    return (uint8_t)at;
}

void pci_host_init(struct pci_host *h)
{
    memset(h, 0, sizeof(*h));
    pthread_mutex_init(&h->lock, NULL);
    h->mmio_next = PCI_MMIO_BASE;
    /* Host bridge: class 06/00/00, as Linux's conf1 sanity check expects. */
    pci_dev_init(&h->bridge, 0x8086, 0x29c0, 0x06000000, 0x1af4, 0x1100);
    h->bridge.name = "host-bridge";
    h->bridge.host = h;
    h->bridge.slot = 0;
    h->slots[0] = &h->bridge;
}

/* Where BAR `bar` decodes now, or 0. */
static uint64_t bar_decode_addr(const struct pci_dev *d, int bar)
{
    if (!d->bar_size[bar] || !(pci_get16(d->cfg, PCI_COMMAND) & PCI_CMD_MEM))
        return 0;
    uint64_t a = pci_get32(d->cfg, PCI_BAR0 + 4 * (unsigned)bar) & ~0xfull;
    if (!a || a + d->bar_size[bar] > 0x100000000ull)
        return 0;
    return a;
}

/* Recompute every BAR's mapping; tell the device what moved (lock held). */
static void remap(struct pci_dev *d)
{
    for (int b = 0; b < PCI_NUM_BARS; b++) {
        uint64_t a = bar_decode_addr(d, b);
        if (a != d->mapped[b]) {
            d->mapped[b] = a;
            if (d->bar_remap)
                d->bar_remap(d, b, a);
        }
    }
}

int pci_register(struct pci_host *h, struct pci_dev *d, char *err, size_t errlen)
{
    pthread_mutex_lock(&h->lock);
    int slot = 1;
    while (slot < PCI_MAX_SLOTS && h->slots[slot])
        slot++;
    if (slot == PCI_MAX_SLOTS) {
        pthread_mutex_unlock(&h->lock);
        snprintf(err, errlen, "%s: no free PCI slot", d->name);
        return -1;
    }
    uint64_t next = h->mmio_next;
    for (int b = 0; b < PCI_NUM_BARS; b++) {
        uint64_t sz = d->bar_size[b];
        if (!sz)
            continue;
        if (sz < 16 || (sz & (sz - 1))) {
            pthread_mutex_unlock(&h->lock);
            snprintf(err, errlen, "%s: BAR %d size %llu is not a power of two >= 16", d->name, b,
                     (unsigned long long)sz);
            return -1;
        }
        next = (next + sz - 1) & ~(sz - 1);  /* naturally aligned */
        if (next + sz > PCI_MMIO_BASE + PCI_MMIO_SIZE) {
            pthread_mutex_unlock(&h->lock);
            snprintf(err, errlen, "%s: PCI memory window full", d->name);
            return -1;
        }
        pci_set32(d->cfg, PCI_BAR0 + 4 * (unsigned)b, (uint32_t)next);
        next += sz;
    }
    h->mmio_next = next;
    d->host = h;
    d->slot = (uint8_t)slot;
    memset(d->mapped, 0, sizeof(d->mapped));
    pci_set16(d->cfg, PCI_COMMAND, pci_get16(d->cfg, PCI_COMMAND) | PCI_CMD_MEM);
    h->slots[slot] = d;
    remap(d);
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static uint32_t cfg_read_locked(struct pci_host *h, unsigned slot, uint32_t off, uint32_t len)
{
    struct pci_dev *d = slot < PCI_MAX_SLOTS ? h->slots[slot] : NULL;
    if (!d || off + len > PCI_CFG_SIZE)
        return len == 4 ? 0xffffffffu : (1u << (8 * len)) - 1;
    uint32_t v = 0;
    for (uint32_t i = 0; i < len; i++)
        v |= (uint32_t)d->cfg[off + i] << (8 * i);
    return v;
}

static void cfg_write_locked(struct pci_host *h, unsigned slot, uint32_t off, uint32_t len, uint32_t val)
{
    struct pci_dev *d = slot < PCI_MAX_SLOTS ? h->slots[slot] : NULL;
    if (!d || off + len > PCI_CFG_SIZE)
        return;
    for (uint32_t i = 0; i < len; i++) {
        uint8_t m = d->wmask[off + i], b = (uint8_t)(val >> (8 * i));
        d->cfg[off + i] = (uint8_t)((d->cfg[off + i] & ~m) | (b & m));
    }
    if (off < PCI_BAR0 + 4 * PCI_NUM_BARS && off + len > PCI_COMMAND)
        remap(d);  /* command or a BAR changed */
    if (d->cfg_written)
        d->cfg_written(d, off, len);
}

uint32_t pci_cfg_read(struct pci_host *h, uint8_t slot, uint32_t off, uint32_t len)
{
    pthread_mutex_lock(&h->lock);
    uint32_t v = cfg_read_locked(h, slot, off, len);
    pthread_mutex_unlock(&h->lock);
    return v;
}

void pci_cfg_write(struct pci_host *h, uint8_t slot, uint32_t off, uint32_t len, uint32_t val)
{
    pthread_mutex_lock(&h->lock);
    cfg_write_locked(h, slot, off, len, val);
    pthread_mutex_unlock(&h->lock);
}

uint32_t le_get(const uint8_t *p, uint32_t len)
{
    uint32_t v = 0;
    for (uint32_t i = 0; i < len && i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

void le_put(uint8_t *p, uint32_t len, uint64_t v)
{
    for (uint32_t i = 0; i < len; i++)
        p[i] = i < 8 ? (uint8_t)(v >> (8 * i)) : 0;
}

void pci_pio(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct pci_host *h = opaque;
    pthread_mutex_lock(&h->lock);
    if (offset < 4) {
        /* the address latch: a 32-bit access at 0xCF8 (byte accesses, as
         * Linux's type-1 probe makes at 0xCFB, neither latch nor decode) */
        if (offset == 0 && len == 4) {
            if (is_write)
                h->addr = le_get(data, 4) & 0x80fffffcu;
            else
                le_put(data, 4, h->addr);
        } else if (!is_write) {
            le_put(data, len, 0xffffffffu);
        }
    } else {
        uint32_t a = h->addr;
        uint32_t reg = (a & 0xfc) + (uint32_t)(offset - 4);
        unsigned bus = (a >> 16) & 0xff, slot = (a >> 11) & 0x1f, fn = (a >> 8) & 7;
        bool ok = (a & CF8_ENABLE) && bus == 0 && fn == 0 && len <= 4 && reg + len <= PCI_CFG_SIZE;
        if (is_write) {
            if (ok)
                cfg_write_locked(h, slot, reg, len, le_get(data, len));
        } else {
            le_put(data, len, ok ? cfg_read_locked(h, slot, reg, len) : 0xffffffffu);
        }
    }
    pthread_mutex_unlock(&h->lock);
}

void pci_mmio(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct pci_host *h = opaque;
    uint64_t addr = PCI_MMIO_BASE + offset;
    struct pci_dev *hit = NULL;
    int bar = -1;
    uint64_t off = 0;
    pthread_mutex_lock(&h->lock);
    for (int s = 1; s < PCI_MAX_SLOTS && !hit; s++) {
        struct pci_dev *d = h->slots[s];
        for (int b = 0; d && b < PCI_NUM_BARS; b++) {
            if (d->mapped[b] && addr >= d->mapped[b] && addr - d->mapped[b] < d->bar_size[b]) {
                hit = d;
                bar = b;
                off = addr - d->mapped[b];
                break;
            }
        }
    }
    pthread_mutex_unlock(&h->lock);
    if (hit && off + len <= hit->bar_size[bar] && hit->bar_io) {
        hit->bar_io(hit, bar, off, data, len, is_write);
    } else if (!is_write) {
        memset(data, 0xff, len);
    }
}

/* ---- migration ---------------------------------------------------------- */

static const struct vmstate_field pci_host_fields[] = {
    VMSTATE_U32(struct pci_host_state, addr),
    VMSTATE_BYTES(struct pci_host_state, bridge_cfg),
    VMSTATE_END,
};
const struct vmstate_desc vmstate_pci_host = { "pci", 1, 1, pci_host_fields, sizeof(struct pci_host_state) };

int pci_host_state_save(void *opaque, void *state, char *err, size_t errlen)
{
    struct pci_host *h = opaque;
    struct pci_host_state *s = state;
    pthread_mutex_lock(&h->lock);
    s->addr = h->addr;
    memcpy(s->bridge_cfg, h->bridge.cfg, PCI_CFG_SIZE);
    pthread_mutex_unlock(&h->lock);
    return 0;
}

int pci_host_state_load(void *opaque, const void *state, char *err, size_t errlen)
{
    struct pci_host *h = opaque;
    const struct pci_host_state *s = state;
    if (pci_cfg_check(&h->bridge, s->bridge_cfg, err, errlen) < 0)
        return -1;
    pthread_mutex_lock(&h->lock);
    h->addr = s->addr & 0x80fffffcu;
    pthread_mutex_unlock(&h->lock);
    pci_cfg_install(&h->bridge, s->bridge_cfg);
    return 0;
}

int pci_cfg_check(const struct pci_dev *d, const uint8_t *cfg, char *err, size_t errlen)
{
    for (unsigned i = 0; i < PCI_CFG_SIZE; i++) {
        if ((cfg[i] ^ d->cfg[i]) & ~d->wmask[i]) {
            snprintf(err, errlen, "%s: PCI config byte 0x%02x differs from this device's "
                     "(0x%02x, here 0x%02x): not the same device", d->name ? d->name : "pci",
                     i, cfg[i], d->cfg[i]);
            return -1;
        }
    }
    return 0;
}

void pci_cfg_install(struct pci_dev *d, const uint8_t *cfg)
{
    struct pci_host *h = d->host;
    if (h)
        pthread_mutex_lock(&h->lock);
    memcpy(d->cfg, cfg, PCI_CFG_SIZE);
    if (h) {
        remap(d);
        pthread_mutex_unlock(&h->lock);
    }
}
