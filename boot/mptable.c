/* MP tables (Intel MultiProcessor Specification 1.4) in the BIOS area. */
#include <stdio.h>
#include <string.h>

#include "boot/mptable.h"

/* A plausible CPUID.1 for the processor entries (Linux only logs them):
 * family 6, model 15, stepping 1; FPU, TSC, MSR, PAE, CX8, APIC. */
#define MP_CPU_SIGNATURE 0x000006f1u
#define MP_CPU_FEATURES  ((1u << 0) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 9))

static uint8_t checksum(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + b[i]);
    return (uint8_t)-sum;
}

static size_t table_size(int ncpus)
{
    return sizeof(struct mpf_intel) + sizeof(struct mpc_table) +
           (size_t)ncpus * sizeof(struct mpc_cpu) + sizeof(struct mpc_bus) +
           sizeof(struct mpc_ioapic) + 17 * sizeof(struct mpc_intsrc);
}

int mptable_write(struct guest_mem *m, int ncpus, char *err, size_t errlen)
{
    if (ncpus < 1 || ncpus > MPTABLE_MAX_CPUS) {
        snprintf(err, errlen, "MP table: %d vCPUs out of range (1-%d)", ncpus, MPTABLE_MAX_CPUS);
        return -1;
    }
    size_t total = table_size(ncpus);
    uint8_t *base = gmem_ptr(m, MPTABLE_ADDR, total);
    if (!base) {
        snprintf(err, errlen, "MP table: guest RAM does not cover 0x%llx-0x%llx",
                 (unsigned long long)MPTABLE_ADDR, (unsigned long long)(MPTABLE_ADDR + total));
        return -1;
    }
    memset(base, 0, total);

    struct mpc_table *mpc = (struct mpc_table *)(base + sizeof(struct mpf_intel));
    uint8_t *p = (uint8_t *)(mpc + 1);
    uint8_t ioapic_id = (uint8_t)ncpus;

    for (int i = 0; i < ncpus; i++) {
        struct mpc_cpu c = {
            .type = MP_PROCESSOR, .apicid = (uint8_t)i, .apicver = MPTABLE_LAPIC_VERSION,
            .cpuflag = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0),
            .cpufeature = MP_CPU_SIGNATURE, .featureflag = MP_CPU_FEATURES,
        };
        memcpy(p, &c, sizeof(c));
        p += sizeof(c);
    }

    struct mpc_bus bus = { .type = MP_BUS, .busid = MPTABLE_ISA_BUS_ID };
    memcpy(bus.bustype, "ISA   ", 6);
    memcpy(p, &bus, sizeof(bus));
    p += sizeof(bus);

    struct mpc_ioapic io = { .type = MP_IOAPIC, .apicid = ioapic_id, .apicver = MPTABLE_IOAPIC_VERSION,
                             .flags = 1, .apicaddr = MPTABLE_IOAPIC_ADDR };
    memcpy(p, &io, sizeof(io));
    p += sizeof(io);

    /* ISA IRQs 0-15 on IOAPIC pins; IRQ 2 is the 8259 cascade and has none.
     * Flags 0: ISA bus defaults (edge, active high). */
    for (int irq = 0; irq < 16; irq++) {
        if (irq == 2)
            continue;
        struct mpc_intsrc s = { .type = MP_INTSRC, .irqtype = MP_INT_INT, .irqflag = 0,
                                .srcbus = MPTABLE_ISA_BUS_ID, .srcbusirq = (uint8_t)irq,
                                .dstapic = ioapic_id,
                                .dstirq = (uint8_t)(irq == 0 ? MPTABLE_IRQ0_PIN : irq) };
        memcpy(p, &s, sizeof(s));
        p += sizeof(s);
    }

    /* Virtual wire: the 8259 on every CPU's LINT0 (ExtINT), NMI on LINT1. */
    struct mpc_intsrc lint[2] = {
        { .type = MP_LINTSRC, .irqtype = MP_INT_EXTINT, .srcbus = MPTABLE_ISA_BUS_ID,
          .srcbusirq = 0, .dstapic = 0xff, .dstirq = 0 },
        { .type = MP_LINTSRC, .irqtype = MP_INT_NMI, .srcbus = MPTABLE_ISA_BUS_ID,
          .srcbusirq = 0, .dstapic = 0xff, .dstirq = 1 },
    };
    memcpy(p, lint, sizeof(lint));
    p += sizeof(lint);

    memcpy(mpc->signature, "PCMP", 4);
    mpc->length = (uint16_t)(p - (uint8_t *)mpc);
    mpc->spec = 4;
    memcpy(mpc->oem, "FERRY   ", 8);
    memcpy(mpc->productid, "FERRY-VMM   ", 12);
    mpc->oemcount = (uint16_t)MPTABLE_NUM_ENTRIES(ncpus);
    mpc->lapic = MPTABLE_LAPIC_ADDR;
    mpc->checksum = checksum(mpc, mpc->length);

    struct mpf_intel *mpf = (struct mpf_intel *)base;
    memcpy(mpf->signature, "_MP_", 4);
    mpf->physptr = (uint32_t)MPTABLE_CONFIG_ADDR;
    mpf->length = 1;
    mpf->specification = 4;
    mpf->checksum = checksum(mpf, sizeof(*mpf));
    return 0;
}
