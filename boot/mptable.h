/* Intel MultiProcessor Specification 1.4 tables: how a Linux guest without
 * ACPI finds its CPUs, the IOAPIC and the ISA interrupt routing. */
#ifndef FERRY_BOOT_MPTABLE_H
#define FERRY_BOOT_MPTABLE_H

#include <stddef.h>
#include <stdint.h>
#include "vmm/memory.h"

/* The floating pointer sits at the start of the BIOS area Linux scans
 * (0xf0000-0xfffff, e820-reserved); the configuration table follows it. */
#define MPTABLE_ADDR        0xf0000ull
#define MPTABLE_CONFIG_ADDR (MPTABLE_ADDR + 16)
#define MPTABLE_MAX_CPUS    64
#define MPTABLE_LAPIC_ADDR  0xfee00000u
#define MPTABLE_IOAPIC_ADDR 0xfec00000u
#define MPTABLE_LAPIC_VERSION  0x14    /* KVM's in-kernel LAPIC */
#define MPTABLE_IOAPIC_VERSION 0x11    /* KVM's in-kernel IOAPIC */
/* IOAPIC input that ISA IRQ 0 (the PIT) is wired to. KVM's default GSI
 * routing (no KVM_SET_GSI_ROUTING) sends GSI n to IOAPIC pin n and to the
 * 8259, so the PIT lands on pin 0, not on pin 2 as on a real PC/QEMU
 * (QEMU installs its own routing GSI 0 -> pin 2). Measured in the nested
 * lab with a Debian 6.1 guest: pin 2 here leaves jiffies stuck during
 * boot (13 timer interrupts in 50 s); pin 0 ticks. Change this to 2 only
 * together with a KVM_SET_GSI_ROUTING table routing GSI 0 to pin 2.
 * Every other ISA IRQ n (n != 2) is on pin n. */
#define MPTABLE_IRQ0_PIN    0
#define MPTABLE_ISA_BUS_ID  0

/* Entry types */
#define MP_PROCESSOR  0
#define MP_BUS        1
#define MP_IOAPIC     2
#define MP_INTSRC     3
#define MP_LINTSRC    4
/* Interrupt types (I/O and local interrupt entries) */
#define MP_INT_INT    0
#define MP_INT_NMI    1
#define MP_INT_SMI    2
#define MP_INT_EXTINT 3
/* Processor flags */
#define MP_CPU_ENABLED 0x01
#define MP_CPU_BSP     0x02

struct mpf_intel {              /* floating pointer structure, 16 bytes */
    char signature[4];          /* "_MP_" */
    uint32_t physptr;           /* configuration table */
    uint8_t length;             /* in 16-byte units: 1 */
    uint8_t specification;      /* 4 = version 1.4 */
    uint8_t checksum;           /* all 16 bytes sum to 0 */
    uint8_t feature1;           /* 0: a configuration table is present */
    uint8_t feature2;           /* bit 7 IMCRP: 0 = virtual wire mode */
    uint8_t feature3, feature4, feature5;
} __attribute__((packed));

struct mpc_table {              /* configuration table header, 44 bytes */
    char signature[4];          /* "PCMP" */
    uint16_t length;            /* header + base entries */
    uint8_t spec;               /* 4 */
    uint8_t checksum;           /* all `length` bytes sum to 0 */
    char oem[8];
    char productid[12];
    uint32_t oemptr;
    uint16_t oemsize;
    uint16_t oemcount;          /* number of base entries */
    uint32_t lapic;             /* local APIC address */
    uint16_t ext_length;
    uint8_t ext_checksum;
    uint8_t reserved;
} __attribute__((packed));

struct mpc_cpu {                /* 20 bytes */
    uint8_t type;
    uint8_t apicid;
    uint8_t apicver;
    uint8_t cpuflag;
    uint32_t cpufeature;        /* CPUID.1 signature: stepping, model, family */
    uint32_t featureflag;       /* CPUID.1 EDX */
    uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus {                /* 8 bytes */
    uint8_t type;
    uint8_t busid;
    char bustype[6];
} __attribute__((packed));

struct mpc_ioapic {             /* 8 bytes */
    uint8_t type;
    uint8_t apicid;
    uint8_t apicver;
    uint8_t flags;              /* bit 0: usable */
    uint32_t apicaddr;
} __attribute__((packed));

struct mpc_intsrc {             /* 8 bytes: I/O (type 3) and local (type 4) interrupts */
    uint8_t type;
    uint8_t irqtype;
    uint16_t irqflag;           /* polarity bits 1:0, trigger bits 3:2; 0 = bus default */
    uint8_t srcbus;
    uint8_t srcbusirq;
    uint8_t dstapic;            /* IOAPIC id, or local APIC id (0xff = all) */
    uint8_t dstirq;             /* IOAPIC pin, or LINT0/LINT1 */
} __attribute__((packed));

_Static_assert(sizeof(struct mpf_intel) == 16, "MP floating pointer");
_Static_assert(sizeof(struct mpc_table) == 44, "MP config table header");
_Static_assert(sizeof(struct mpc_cpu) == 20, "MP processor entry");
_Static_assert(sizeof(struct mpc_bus) == 8 && sizeof(struct mpc_ioapic) == 8 &&
               sizeof(struct mpc_intsrc) == 8, "MP entries");

/* Base entries for n CPUs: n processors, 1 bus, 1 IOAPIC, 15 ISA IRQs, 2 LINTs. */
#define MPTABLE_NUM_ENTRIES(n) ((n) + 1 + 1 + 15 + 2)

/* Write the floating pointer and configuration table for ncpus vCPUs
 * (APIC ids 0..ncpus-1, vCPU 0 the BSP, IOAPIC id ncpus) at MPTABLE_ADDR.
 * 0, or -1 with a one-line reason in err. */
int mptable_write(struct guest_mem *m, int ncpus, char *err, size_t errlen);

#endif
