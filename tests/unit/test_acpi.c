/* ACPI: the tables a Linux guest parses (checksums, lengths, pointers, the
 * MADT against the vCPU count, \_S5 in the DSDT) and the PM1 registers
 * (write-1-to-clear status, the power button's SCI, S5 power-off). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "boot/acpi.h"
#include "devices/acpi_pm.h"

#define RAM (2u << 20)

static uint32_t u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* A table at gpa: its signature, a length inside RAM and a zero byte sum. */
static const uint8_t *table(const uint8_t *ram, uint64_t gpa, const char *sig)
{
    assert_true(gpa > 0 && gpa < RAM);
    const uint8_t *t = ram + gpa;
    assert_memory_equal(t, sig, 4);
    assert_true(u32(t + 4) >= 36 && gpa + u32(t + 4) <= RAM);
    assert_int_equal(acpi_sum(t, u32(t + 4)), 0);
    return t;
}

static void check_tables(int ncpus)
{
    uint8_t *ram = calloc(1, RAM);
    assert_non_null(ram);
    struct guest_mem m;
    gmem_init_fake(&m, RAM, ram);
    char err[256] = "";
    assert_int_equal(acpi_write(&m, ncpus, err, sizeof(err)), 0);

    const uint8_t *rsdp = ram + ACPI_RSDP_ADDR;
    assert_memory_equal(rsdp, "RSD PTR ", 8);
    assert_int_equal(acpi_sum(rsdp, 20), 0);
    assert_int_equal(rsdp[15], 2);                 /* ACPI 2.0+: the XSDT */
    assert_int_equal(u32(rsdp + 20), 36);
    assert_int_equal(acpi_sum(rsdp, 36), 0);

    const uint8_t *xsdt = table(ram, u64(rsdp + 24), "XSDT");
    assert_int_equal(u32(xsdt + 4), 36 + 2 * 8);
    const uint8_t *fadt = table(ram, u64(xsdt + 36), "FACP");
    const uint8_t *madt = table(ram, u64(xsdt + 44), "APIC");

    assert_int_equal(u32(fadt + 4), 276);
    assert_int_equal(fadt[8], 6);
    uint64_t dsdt_gpa = u64(fadt + 140);            /* X_DSDT */
    assert_int_equal(u32(fadt + 40), dsdt_gpa);     /* DSDT agrees */
    assert_int_equal(fadt[46] | fadt[47] << 8, ACPI_SCI_IRQ);
    assert_int_equal(u32(fadt + 56), ACPI_PM1_EVT_PORT);
    assert_int_equal(u32(fadt + 64), ACPI_PM1_CNT_PORT);
    assert_int_equal(fadt[88], 4);                  /* PM1_EVT_LEN */
    assert_int_equal(fadt[89], 2);                  /* PM1_CNT_LEN */
    assert_int_equal(u32(fadt + 112) & (1u << 4), 0);   /* a fixed power button */
    const uint8_t *facs = ram + u64(fadt + 132);
    assert_memory_equal(facs, "FACS", 4);
    assert_int_equal(u64(fadt + 132) % 64, 0);

    const uint8_t *dsdt = table(ram, dsdt_gpa, "DSDT");
    uint32_t dlen = u32(dsdt + 4);
    /* \_S5 is a Package of SLP_TYP values: NameOp, "_S5_", PackageOp */
    const uint8_t *s5 = NULL;
    for (uint32_t i = 36; i + 8 < dlen && !s5; i++)
        if (!memcmp(dsdt + i, "_S5_", 4))
            s5 = dsdt + i + 4;
    assert_non_null(s5);
    assert_int_equal(s5[0], 0x12);                  /* PackageOp */
    assert_int_equal(s5[3], 0x0a);                  /* BytePrefix */
    assert_int_equal(s5[4], ACPI_PM_SLP_TYP_S5);
    assert_true(memmem(dsdt, dlen, "PCI0", 4) != NULL);

    /* MADT: one enabled local APIC per vCPU with ids 0..n-1, one IOAPIC, the
     * SCI's level/active-high override */
    int lapics = 0, ioapics = 0, sci_level = 0;
    uint32_t mlen = u32(madt + 4);
    assert_int_equal(u32(madt + 36), ACPI_LAPIC_ADDR);
    for (uint32_t off = 44; off < mlen;) {
        const uint8_t *e = madt + off;
        assert_true(e[1] >= 2 && off + e[1] <= mlen);
        if (e[0] == 0) {
            assert_int_equal(e[3], lapics);
            assert_int_equal(u32(e + 4) & 1, 1);
            lapics++;
        } else if (e[0] == 1) {
            assert_int_equal(u32(e + 4), ACPI_IOAPIC_ADDR);
            ioapics++;
        } else if (e[0] == 2 && e[3] == ACPI_SCI_IRQ) {
            sci_level = (e[8] & 0xf) == 0xd;
        }
        off += e[1];
    }
    assert_int_equal(lapics, ncpus);
    assert_int_equal(ioapics, 1);
    assert_true(sci_level);
    free(ram);
}

static void test_tables_1cpu(void **state) { (void)state; check_tables(1); }
static void test_tables_2cpus(void **state) { (void)state; check_tables(2); }
static void test_tables_max(void **state) { (void)state; check_tables(ACPI_MAX_CPUS); }

static void test_too_many_cpus(void **state)
{
    (void)state;
    uint8_t *ram = calloc(1, RAM);
    struct guest_mem m;
    gmem_init_fake(&m, RAM, ram);
    char err[256] = "";
    assert_int_equal(acpi_write(&m, ACPI_MAX_CPUS + 1, err, sizeof(err)), -1);
    assert_string_equal(err, "ACPI: 65 vCPUs out of range (1-64)");
    free(ram);
}

/* ---- PM1 registers ---- */

static int sci_level, sci_calls, powered_off;
static void sci(void *o, int level) { (void)o; sci_level = level; sci_calls++; }
static void poweroff(void *o) { (void)o; powered_off++; }

static uint16_t rd(struct acpi_pm *pm, uint64_t off)
{
    uint8_t b[2];
    acpi_pm_io(pm, off, b, 2, false);
    return (uint16_t)(b[0] | b[1] << 8);
}

static void wr(struct acpi_pm *pm, uint64_t off, uint16_t v)
{
    uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
    acpi_pm_io(pm, off, b, 2, true);
}

static void test_power_button(void **state)
{
    (void)state;
    struct acpi_pm pm;
    sci_level = sci_calls = powered_off = 0;
    acpi_pm_init(&pm, sci, poweroff, NULL);
    assert_int_equal(rd(&pm, 4) & ACPI_PM_SCI_EN, ACPI_PM_SCI_EN);   /* always ACPI mode */

    acpi_pm_power_button(&pm);                   /* pending, not enabled: no SCI */
    assert_int_equal(rd(&pm, 0) & ACPI_PM_PWRBTN, ACPI_PM_PWRBTN);
    assert_int_equal(sci_level, 0);
    wr(&pm, 2, ACPI_PM_PWRBTN);                  /* the guest enables it: SCI */
    assert_int_equal(sci_level, 1);
    wr(&pm, 0, 0);                               /* writing 0 clears nothing */
    assert_int_equal(sci_level, 1);
    wr(&pm, 0, ACPI_PM_PWRBTN);                  /* write 1 to clear: SCI drops */
    assert_int_equal(rd(&pm, 0) & ACPI_PM_PWRBTN, 0);
    assert_int_equal(sci_level, 0);

    /* a 32-bit access covering status and enable, as ACPICA may do */
    acpi_pm_power_button(&pm);
    uint8_t b[4];
    acpi_pm_io(&pm, 0, b, 4, false);
    assert_int_equal(b[1] & 1, 1);               /* PWRBTN_STS */
    assert_int_equal(b[3] & 1, 1);               /* PWRBTN_EN */
    wr(&pm, 2, 0xffff);                          /* only the known enable bits stick */
    assert_int_equal(rd(&pm, 2), ACPI_PM_EN_MASK);
    assert_int_equal(powered_off, 0);
}

static void test_s5_powers_off(void **state)
{
    (void)state;
    struct acpi_pm pm;
    powered_off = 0;
    acpi_pm_init(&pm, sci, poweroff, NULL);
    wr(&pm, 4, (uint16_t)(ACPI_PM_SCI_EN | (3u << 10)));      /* SLP_TYP alone: nothing */
    wr(&pm, 4, (uint16_t)(ACPI_PM_SCI_EN | (3u << 10) | ACPI_PM_SLP_EN));   /* S3: not ours */
    assert_int_equal(powered_off, 0);
    assert_int_equal(rd(&pm, 4) & ACPI_PM_SLP_EN, 0);          /* write-only */
    wr(&pm, 4, (uint16_t)(ACPI_PM_SCI_EN | (ACPI_PM_SLP_TYP_S5 << 10) | ACPI_PM_SLP_EN));
    assert_int_equal(powered_off, 1);
}

static void test_state_migrates_sci(void **state)
{
    (void)state;
    struct acpi_pm a, b;
    acpi_pm_init(&a, sci, poweroff, NULL);
    wr(&a, 2, ACPI_PM_PWRBTN);
    acpi_pm_power_button(&a);
    struct acpi_pm_regs st;
    char err[64];
    assert_int_equal(acpi_pm_state_save(&a, &st, err, sizeof(err)), 0);
    sci_level = 0;
    acpi_pm_init(&b, sci, poweroff, NULL);
    assert_int_equal(acpi_pm_state_load(&b, &st, err, sizeof(err)), 0);
    assert_int_equal(sci_level, 1);              /* the pending press reaches the destination */
    assert_int_equal(rd(&b, 2), ACPI_PM_PWRBTN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables_1cpu),
        cmocka_unit_test(test_tables_2cpus),
        cmocka_unit_test(test_tables_max),
        cmocka_unit_test(test_too_many_cpus),
        cmocka_unit_test(test_power_button),
        cmocka_unit_test(test_s5_powers_off),
        cmocka_unit_test(test_state_migrates_sci),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
