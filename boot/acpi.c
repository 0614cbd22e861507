/* ACPI tables (ACPI 6.x layouts), built in guest RAM at boot; see acpi.h. */
#include <stdio.h>
#include <string.h>

#include "boot/acpi.h"
#include "boot/dsdt_aml.h"   /* dsdt_aml_code[]: boot/dsdt.asl compiled by iasl */

struct __attribute__((packed)) sdt_header {
    char sig[4];
    uint32_t length;
    uint8_t revision, checksum;
    char oem_id[6], oem_table_id[8];
    uint32_t oem_revision;
    char creator_id[4];
    uint32_t creator_revision;
};

struct __attribute__((packed)) gas {   /* Generic Address Structure */
    uint8_t space, bit_width, bit_offset, access_size;
    uint64_t address;
};

struct __attribute__((packed)) rsdp {
    char sig[8];
    uint8_t checksum;
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt;
    uint32_t length;
    uint64_t xsdt;
    uint8_t ext_checksum, reserved[3];
};

struct __attribute__((packed)) fadt {
    struct sdt_header h;
    uint32_t facs, dsdt;
    uint8_t reserved0, pm_profile;
    uint16_t sci_int;
    uint32_t smi_cmd;
    uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
    uint32_t pm1a_evt, pm1b_evt, pm1a_cnt, pm1b_cnt, pm2_cnt, pm_tmr, gpe0, gpe1;
    uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len, gpe0_len, gpe1_len, gpe1_base, cst_cnt;
    uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
    uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
    uint16_t iapc_boot_arch;
    uint8_t reserved1;
    uint32_t flags;
    struct gas reset_reg;
    uint8_t reset_value;
    uint16_t arm_boot_arch;
    uint8_t minor_revision;
    uint64_t x_facs, x_dsdt;
    struct gas x_pm1a_evt, x_pm1b_evt, x_pm1a_cnt, x_pm1b_cnt, x_pm2_cnt, x_pm_tmr, x_gpe0, x_gpe1;
    struct gas sleep_control, sleep_status;
    uint64_t hypervisor_id;
};

#define FADT_WBINVD          (1u << 0)
#define FADT_SLP_BUTTON      (1u << 5)    /* set: no fixed-feature sleep button */
#define BOOT_LEGACY_DEVICES  (1u << 0)    /* UART, RTC, PIT on the ISA ports */
#define BOOT_8042            (1u << 1)
#define BOOT_NO_VGA          (1u << 2)

#define MADT_LAPIC     0
#define MADT_IOAPIC    1
#define MADT_ISO       2
#define MADT_LAPIC_NMI 4
#define MADT_PCAT_COMPAT 1u
#define ISO_ACTIVE_HIGH 0x1
#define ISO_LEVEL       0xc

uint8_t acpi_sum(const void *p, size_t len)
{
    uint8_t s = 0;
    for (size_t i = 0; i < len; i++)
        s = (uint8_t)(s + ((const uint8_t *)p)[i]);
    return s;
}

static void header(struct sdt_header *h, const char *sig, uint32_t len, uint8_t rev)
{
    memcpy(h->sig, sig, 4);
    h->length = len;
    h->revision = rev;
    memcpy(h->oem_id, "FERRY ", 6);
    memcpy(h->oem_table_id, "FERRYVM ", 8);
    h->oem_revision = 1;
    memcpy(h->creator_id, "FRRY", 4);
    h->creator_revision = 1;
}

static void seal(void *table)
{
    struct sdt_header *h = table;
    h->checksum = 0;
    h->checksum = (uint8_t)-acpi_sum(table, h->length);
}

static void fadt_build(struct fadt *f)
{
    memset(f, 0, sizeof(*f));
    header(&f->h, "FACP", sizeof(*f), 6);
    f->facs = (uint32_t)ACPI_FACS_ADDR;
    f->x_facs = ACPI_FACS_ADDR;
    f->dsdt = (uint32_t)ACPI_DSDT_ADDR;
    f->x_dsdt = ACPI_DSDT_ADDR;
    f->sci_int = ACPI_SCI_IRQ;
    /* no SMI_CMD: the platform is always in ACPI mode (SCI_EN reads 1) */
    f->pm1a_evt = ACPI_PM1_EVT_PORT;
    f->pm1_evt_len = 4;
    f->pm1a_cnt = ACPI_PM1_CNT_PORT;
    f->pm1_cnt_len = 2;
    f->x_pm1a_evt = (struct gas){ .space = 1, .bit_width = 32, .access_size = 2, .address = ACPI_PM1_EVT_PORT };
    f->x_pm1a_cnt = (struct gas){ .space = 1, .bit_width = 16, .access_size = 2, .address = ACPI_PM1_CNT_PORT };
    f->p_lvl2_lat = 101;     /* > 100: no C2 */
    f->p_lvl3_lat = 1001;    /* > 1000: no C3 */
    f->century = 0x32;       /* the CMOS RTC's century register */
    f->iapc_boot_arch = BOOT_LEGACY_DEVICES | BOOT_8042 | BOOT_NO_VGA;
    f->flags = FADT_WBINVD | FADT_SLP_BUTTON;   /* power button: fixed feature */
    f->minor_revision = 0;
    memcpy(&f->hypervisor_id, "FERRY\0\0", 8);
    seal(f);
}

/* MADT: header, local APIC address, flags, then the entries. */
static size_t madt_build(uint8_t *t, int ncpus)
{
    uint8_t *p = t + sizeof(struct sdt_header);
    uint32_t lapic = ACPI_LAPIC_ADDR, flags = MADT_PCAT_COMPAT;
    memcpy(p, &lapic, 4);
    memcpy(p + 4, &flags, 4);
    p += 8;
    for (int i = 0; i < ncpus; i++) {
        uint8_t e[8] = { MADT_LAPIC, 8, (uint8_t)i, (uint8_t)i, 1 /* enabled */ };
        memcpy(p, e, 8);
        p += 8;
    }
    uint8_t io[12] = { MADT_IOAPIC, 12, (uint8_t)ncpus /* IOAPIC id after the CPUs' */ };
    uint32_t addr = ACPI_IOAPIC_ADDR;
    memcpy(io + 4, &addr, 4);   /* GSI base 0 */
    memcpy(p, io, 12);
    p += 12;
    static const struct { uint8_t irq; uint32_t gsi; uint16_t flags; } iso[] = {
        { 0, ACPI_IRQ0_GSI, 0 },
        { ACPI_SCI_IRQ, ACPI_SCI_IRQ, ISO_ACTIVE_HIGH | ISO_LEVEL },   /* the SCI is level */
    };
    for (size_t i = 0; i < sizeof(iso) / sizeof(iso[0]); i++) {
        uint8_t e[10] = { MADT_ISO, 10, 0 /* ISA */, iso[i].irq };
        memcpy(e + 4, &iso[i].gsi, 4);
        memcpy(e + 8, &iso[i].flags, 2);
        memcpy(p, e, 10);
        p += 10;
    }
    uint8_t nmi[6] = { MADT_LAPIC_NMI, 6, 0xff /* all CPUs */, 0, 0, 1 /* LINT1 */ };
    memcpy(p, nmi, 6);
    p += 6;
    size_t len = (size_t)(p - t);
    header((struct sdt_header *)t, "APIC", (uint32_t)len, 5);
    seal(t);
    return len;
}

int acpi_write(struct guest_mem *m, int ncpus, char *err, size_t errlen)
{
    if (ncpus < 1 || ncpus > ACPI_MAX_CPUS) {
        snprintf(err, errlen, "ACPI: %d vCPUs out of range (1-%d)", ncpus, ACPI_MAX_CPUS);
        return -1;
    }
    uint64_t end = ACPI_DSDT_ADDR + sizeof(dsdt_aml_code);
    uint8_t *base = gmem_ptr(m, ACPI_RSDP_ADDR, end - ACPI_RSDP_ADDR);
    if (!base) {
        snprintf(err, errlen, "ACPI: guest RAM does not cover 0x%llx-0x%llx",
                 (unsigned long long)ACPI_RSDP_ADDR, (unsigned long long)end);
        return -1;
    }
    memset(base, 0, end - ACPI_RSDP_ADDR);
#define AT(gpa) (base + ((gpa) - ACPI_RSDP_ADDR))
    memcpy(AT(ACPI_DSDT_ADDR), dsdt_aml_code, sizeof(dsdt_aml_code));

    /* FACS: no checksum; a firmware waking vector and global lock nobody uses */
    uint8_t *facs = AT(ACPI_FACS_ADDR);
    uint32_t facs_len = 64;
    memcpy(facs, "FACS", 4);
    memcpy(facs + 4, &facs_len, 4);
    facs[32] = 2;   /* version */

    struct fadt f;
    fadt_build(&f);
    memcpy(AT(ACPI_FADT_ADDR), &f, sizeof(f));

    _Static_assert(ACPI_MADT_ADDR + sizeof(struct sdt_header) + 8 + 8 * ACPI_MAX_CPUS + 12 + 20 + 6 <=
                   ACPI_DSDT_ADDR, "MADT overlaps the DSDT");
    _Static_assert(sizeof(struct fadt) == 276, "FADT (ACPI 6) is 276 bytes");
    _Static_assert(ACPI_FADT_ADDR + sizeof(struct fadt) <= ACPI_MADT_ADDR, "FADT overlaps the MADT");
    madt_build(AT(ACPI_MADT_ADDR), ncpus);

    struct { struct sdt_header h; uint64_t entry[2]; } __attribute__((packed)) x;
    memset(&x, 0, sizeof(x));
    header(&x.h, "XSDT", sizeof(x), 1);
    x.entry[0] = ACPI_FADT_ADDR;
    x.entry[1] = ACPI_MADT_ADDR;
    seal(&x);
    memcpy(AT(ACPI_XSDT_ADDR), &x, sizeof(x));

    struct rsdp r = { .revision = 2, .length = sizeof(r), .xsdt = ACPI_XSDT_ADDR };
    memcpy(r.sig, "RSD PTR ", 8);
    memcpy(r.oem_id, "FERRY ", 6);
    r.checksum = (uint8_t)-acpi_sum(&r, 20);          /* ACPI 1.0 part */
    r.ext_checksum = (uint8_t)-acpi_sum(&r, sizeof(r));
    memcpy(AT(ACPI_RSDP_ADDR), &r, sizeof(r));
#undef AT
    return 0;
}
