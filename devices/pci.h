/* PCI: one bus (0) behind a host bridge at 00:00.0, configuration mechanism
 * #1 (address latch at port 0xCF8, data at 0xCFC-0xCFF), and 32-bit memory
 * BARs allocated, as firmware would, in a window of the MMIO hole.
 *
 * A device fills its 256-byte configuration space and says which bits the
 * guest may write (wmask); BAR sizing (write all ones, read the size mask)
 * then works by itself. Memory accesses to the window are dispatched to the
 * BAR that decodes them. The guest may move BARs: the device hears of it
 * (bar_remap) to move what it registered with KVM (ioeventfds).
 *
 * Locking: the host's lock covers the latch and every device's config space;
 * callbacks into the device run under it (take device locks inside it, never
 * the other way round). BAR MMIO is dispatched without it held. */
#ifndef FERRY_PCI_H
#define FERRY_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/vmstate.h"

#define PCI_CONFIG_PORT   0xcf8      /* 0xCF8 address latch, 0xCFC-0xCFF data */
#define PCI_CONFIG_PORTS  8
#define PCI_MMIO_BASE     0xe0000000ull   /* BAR window (inside the PCI hole) */
#define PCI_MMIO_SIZE     0x10000000ull   /* 256 MiB: below the IOAPIC at 0xfec00000 */
#define PCI_MAX_SLOTS     32
#define PCI_CFG_SIZE      256
#define PCI_NUM_BARS      6

/* configuration space registers */
#define PCI_VENDOR_ID     0x00
#define PCI_DEVICE_ID     0x02
#define PCI_COMMAND       0x04
#define PCI_STATUS        0x06
#define PCI_REVISION_ID   0x08
#define PCI_CLASS_PROG    0x09
#define PCI_CLASS_DEVICE  0x0a
#define PCI_HEADER_TYPE   0x0e
#define PCI_BAR0          0x10
#define PCI_SUBSYS_VENDOR 0x2c
#define PCI_SUBSYS_ID     0x2e
#define PCI_CAP_PTR       0x34
#define PCI_INT_LINE      0x3c
#define PCI_INT_PIN       0x3d

#define PCI_CMD_IO        0x0001
#define PCI_CMD_MEM       0x0002
#define PCI_CMD_MASTER    0x0004
#define PCI_CMD_INTX_OFF  0x0400
#define PCI_STATUS_CAPS   0x0010

#define PCI_CAP_ID_MSIX   0x11
#define PCI_CAP_ID_VNDR   0x09

struct pci_dev {
    /* Migratable: the whole configuration space (BARs, command, capability
     * registers). Described by vmstate_pci_cfg for devices' sections. */
    uint8_t cfg[PCI_CFG_SIZE];
    /* Set up by the device before pci_register; never change afterwards. */
    uint8_t wmask[PCI_CFG_SIZE];     /* guest-writable bits */
    uint32_t bar_size[PCI_NUM_BARS]; /* power of two >= 16, 0 = no BAR */
    uint16_t cap_end;                /* next free capability offset */
    const char *name;
    void *opaque;
    /* Memory access inside BAR `bar` at offset `off` (no host lock held). */
    void (*bar_io)(struct pci_dev *d, int bar, uint64_t off, uint8_t *data, uint32_t len, bool is_write);
    /* After the guest wrote config bytes [off, off+len) (host lock held). */
    void (*cfg_written)(struct pci_dev *d, uint32_t off, uint32_t len);
    /* BAR `bar` now decodes at addr, or at nothing (addr 0) (host lock held). */
    void (*bar_remap)(struct pci_dev *d, int bar, uint64_t addr);

    /* Filled by pci_register. */
    struct pci_host *host;
    uint8_t slot;
    uint64_t mapped[PCI_NUM_BARS];   /* current decoding address, 0 = none */
};

struct pci_host {
    pthread_mutex_t lock;
    uint32_t addr;                   /* 0xCF8 latch (migrates) */
    struct pci_dev *slots[PCI_MAX_SLOTS];
    struct pci_dev bridge;           /* 00:00.0 */
    uint64_t mmio_next;              /* next free address for BARs */
};

void pci_host_init(struct pci_host *h);
/* Put d in the next free slot and give its BARs addresses (decoding enabled,
 * as firmware leaves them). 0, or -1 with a reason. */
int pci_register(struct pci_host *h, struct pci_dev *d, char *err, size_t errlen);

/* bus_io_fn for ports 0xCF8-0xCFF (opaque = host, offset from 0xCF8). */
void pci_pio(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
/* bus_io_fn for the BAR window (opaque = host, offset from PCI_MMIO_BASE). */
void pci_mmio(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

/* Direct config access (bus 0), as through 0xCFC; for tests and devices. */
uint32_t pci_cfg_read(struct pci_host *h, uint8_t slot, uint32_t off, uint32_t len);
void pci_cfg_write(struct pci_host *h, uint8_t slot, uint32_t off, uint32_t len, uint32_t val);

/* Config space helpers for building a device (little-endian). */
static inline void pci_set8(uint8_t *c, unsigned off, uint8_t v) { c[off] = v; }
static inline void pci_set16(uint8_t *c, unsigned off, uint16_t v)
{
    c[off] = (uint8_t)v;
    c[off + 1] = (uint8_t)(v >> 8);
}
static inline void pci_set32(uint8_t *c, unsigned off, uint32_t v)
{
    pci_set16(c, off, (uint16_t)v);
    pci_set16(c, off + 2, (uint16_t)(v >> 16));
}
static inline uint16_t pci_get16(const uint8_t *c, unsigned off) { return le16_load(c + off); }
static inline uint32_t pci_get32(const uint8_t *c, unsigned off) { return le32_load(c + off); }

/* Standard type-0 header; a 32-bit memory BAR of `size` bytes at `bar`. */
void pci_dev_init(struct pci_dev *d, uint16_t vendor, uint16_t device, uint32_t class_rev,
                  uint16_t subsys_vendor, uint16_t subsys_id);
void pci_dev_add_bar(struct pci_dev *d, int bar, uint32_t size);
/* Append a capability of len bytes (id set, next linked); returns its offset
 * or 0 when the space is full. The device fills the rest and its wmask. */
uint8_t pci_dev_add_cap(struct pci_dev *d, uint8_t id, uint8_t len);

/* Migration. The host's section ("pci": the latch and the bridge's config
 * space), and for devices: check a loaded config space fits d (same identity,
 * read-only bits unchanged), and install it (BARs remapped). */
struct pci_host_state {
    uint32_t addr;
    uint8_t bridge_cfg[PCI_CFG_SIZE];
};
extern const struct vmstate_desc vmstate_pci_host;
int pci_host_state_save(void *opaque, void *state, char *err, size_t errlen);
int pci_host_state_load(void *opaque, const void *state, char *err, size_t errlen);
#define pci_host_mig_device(h) ((struct mig_device){ &vmstate_pci_host, sizeof(struct pci_host_state), \
                                                     (h), pci_host_state_save, pci_host_state_load, NULL })

int pci_cfg_check(const struct pci_dev *d, const uint8_t *cfg, char *err, size_t errlen);
void pci_cfg_install(struct pci_dev *d, const uint8_t *cfg);

/* Little-endian register access for device emulation: up to 4 bytes read
 * (the rest ignored), `len` bytes written (bytes past 8 are zero). */
uint32_t le_get(const uint8_t *p, uint32_t len);
void le_put(uint8_t *p, uint32_t len, uint64_t v);

#endif
