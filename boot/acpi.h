/* ACPI tables for Linux guests: RSDP, XSDT, FACS, FADT (PM1 event and control
 * blocks, fixed power button, SCI on IRQ 9), MADT (one local APIC per vCPU,
 * the IOAPIC, ISA overrides) and the DSDT (boot/dsdt.asl: PCI host bridge,
 * \_S5). They replace the MP table. */
#ifndef FERRY_BOOT_ACPI_H
#define FERRY_BOOT_ACPI_H

#include <stddef.h>
#include <stdint.h>
#include "vmm/memory.h"

/* In the BIOS area Linux scans for the RSDP (0xe0000-0xfffff, e820-reserved). */
#define ACPI_RSDP_ADDR   0xe0000ull
#define ACPI_XSDT_ADDR   0xe0040ull
#define ACPI_FACS_ADDR   0xe00c0ull    /* 64-byte aligned */
#define ACPI_FADT_ADDR   0xe0100ull
#define ACPI_MADT_ADDR   0xe0300ull
#define ACPI_DSDT_ADDR   0xe1000ull
#define ACPI_MAX_CPUS    64

#define ACPI_PM1_EVT_PORT 0x600    /* PM1a status (2 bytes), enable (2 bytes) */
#define ACPI_PM1_CNT_PORT 0x604    /* PM1a control (2 bytes) */
#define ACPI_SCI_IRQ      9
#define ACPI_LAPIC_ADDR   0xfee00000u
#define ACPI_IOAPIC_ADDR  0xfec00000u
/* ISA IRQ 0 (the PIT) reaches IOAPIC pin 0: KVM's default GSI routing (no
 * KVM_SET_GSI_ROUTING) sends GSI n to pin n, unlike a PC's pin 2. Measured in
 * the nested lab with a Debian 6.1 guest: pin 2 leaves jiffies stuck during
 * boot; pin 0 ticks. The MADT says so with an override 0 -> 0. */
#define ACPI_IRQ0_GSI     0

/* Writes every table into guest RAM; -1 with a one-line reason. */
int acpi_write(struct guest_mem *m, int ncpus, char *err, size_t errlen);

/* The byte sum of a table; a valid table sums to 0. */
uint8_t acpi_sum(const void *p, size_t len);

#endif
