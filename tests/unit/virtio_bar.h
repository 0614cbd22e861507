/* Driver-side access to a virtio-pci device's BAR 0 through the PCI host's
 * MMIO window, as a guest's loads and stores would reach it (unit tests). */
#ifndef FERRY_TEST_VIRTIO_BAR_H
#define FERRY_TEST_VIRTIO_BAR_H

#include <stdint.h>

#include "devices/pci.h"

static inline void bar_write(struct pci_host *h, uint64_t bar0, uint32_t off, uint32_t len, uint64_t v)
{
    uint8_t d[8];
    for (unsigned i = 0; i < 8; i++)
        d[i] = (uint8_t)(v >> (8 * i));
    pci_mmio(h, bar0 - PCI_MMIO_BASE + off, d, len, true);
}

static inline uint64_t bar_read(struct pci_host *h, uint64_t bar0, uint32_t off, uint32_t len)
{
    uint8_t d[8] = { 0 };
    pci_mmio(h, bar0 - PCI_MMIO_BASE + off, d, len, false);
    uint64_t v = 0;
    for (unsigned i = 0; i < len; i++)
        v |= (uint64_t)d[i] << (8 * i);
    return v;
}

#endif
