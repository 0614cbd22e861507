/* MP tables (boot/mptable.c): parsed back the way a guest kernel would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "boot/mptable.h"
#include "vmm/memory.h"

#define RAM_SIZE (2ull << 20)
#define POISON   0xaa

static uint8_t sum(const uint8_t *p, size_t len)
{
    uint8_t s = 0;
    for (size_t i = 0; i < len; i++)
        s = (uint8_t)(s + p[i]);
    return s;
}

/* Find the floating pointer as Linux does (16-byte steps over 0xf0000-0xfffff). */
static const struct mpf_intel *scan(const uint8_t *ram)
{
    for (uint64_t a = 0xf0000; a < 0x100000; a += 16) {
        const struct mpf_intel *mpf = (const void *)(ram + a);
        if (memcmp(mpf->signature, "_MP_", 4) == 0 && mpf->length == 1 &&
            sum(ram + a, 16) == 0 && (mpf->specification == 1 || mpf->specification == 4))
            return mpf;
    }
    return NULL;
}

static void check_table(int ncpus)
{
    uint8_t *ram = malloc(RAM_SIZE);
    assert_non_null(ram);
    memset(ram, POISON, RAM_SIZE);
    struct guest_mem m;
    gmem_init_fake(&m, RAM_SIZE, ram);
    char err[256];
    assert_int_equal(mptable_write(&m, ncpus, err, sizeof(err)), 0);

    const struct mpf_intel *mpf = scan(ram);
    assert_non_null(mpf);
    assert_ptr_equal(mpf, ram + MPTABLE_ADDR);
    assert_int_equal(mpf->specification, 4);
    assert_int_equal(mpf->feature1, 0);            /* a config table follows */
    assert_int_equal(mpf->feature2, 0);            /* virtual wire mode */
    assert_int_equal(mpf->physptr, MPTABLE_CONFIG_ADDR);

    const uint8_t *cfg = ram + mpf->physptr;
    const struct mpc_table *mpc = (const void *)cfg;
    assert_memory_equal(mpc->signature, "PCMP", 4);
    assert_int_equal(mpc->spec, 4);
    assert_int_equal(sum(cfg, mpc->length), 0);
    assert_int_equal(mpc->lapic, 0xfee00000);
    assert_int_equal(mpc->oemcount, MPTABLE_NUM_ENTRIES(ncpus));
    assert_int_equal(mpc->ext_length, 0);
    /* header, processors, bus + IOAPIC + 15 IRQs + 2 LINTs of 8 bytes each */
    assert_int_equal(mpc->length, 44 + ncpus * 20 + (1 + 1 + 15 + 2) * 8);
    /* Nothing written past the table. */
    assert_int_equal(ram[mpf->physptr + mpc->length], POISON);

    int ncpu = 0, nbsp = 0, nbus = 0, nioapic = 0, nint = 0, nlint = 0, last_type = 0;
    int pin_of_irq[16];
    uint8_t ioapic_id = 0xff;
    for (int i = 0; i < 16; i++)
        pin_of_irq[i] = -1;
    const uint8_t *p = cfg + sizeof(*mpc), *end = cfg + mpc->length;
    for (int i = 0; i < mpc->oemcount; i++) {
        assert_true(p < end);
        assert_true(*p >= last_type);              /* entries grouped by type, in order */
        last_type = *p;
        switch (*p) {
        case MP_PROCESSOR: {
            const struct mpc_cpu *c = (const void *)p;
            assert_int_equal(c->apicid, ncpu);
            assert_int_equal(c->apicver, 0x14);
            assert_true(c->cpuflag & MP_CPU_ENABLED);
            if (c->cpuflag & MP_CPU_BSP) {
                assert_int_equal(c->apicid, 0);
                nbsp++;
            }
            assert_int_equal((c->cpufeature >> 8) & 0xf, 6);   /* family 6 */
            assert_true(c->featureflag & (1u << 9));             /* APIC */
            ncpu++;
            p += sizeof(*c);
            break;
        }
        case MP_BUS: {
            const struct mpc_bus *b = (const void *)p;
            assert_int_equal(b->busid, 0);
            assert_memory_equal(b->bustype, "ISA   ", 6);
            nbus++;
            p += sizeof(*b);
            break;
        }
        case MP_IOAPIC: {
            const struct mpc_ioapic *io = (const void *)p;
            assert_int_equal(io->apicid, ncpus);
            assert_int_equal(io->apicver, 0x11);
            assert_int_equal(io->flags & 1, 1);
            assert_int_equal(io->apicaddr, 0xfec00000);
            ioapic_id = io->apicid;
            nioapic++;
            p += sizeof(*io);
            break;
        }
        case MP_INTSRC: {
            const struct mpc_intsrc *s = (const void *)p;
            assert_int_equal(s->irqtype, MP_INT_INT);
            assert_int_equal(s->srcbus, 0);
            assert_true(s->srcbusirq < 16);
            assert_int_equal(s->dstapic, ioapic_id);
            assert_int_equal(pin_of_irq[s->srcbusirq], -1);
            pin_of_irq[s->srcbusirq] = s->dstirq;
            nint++;
            p += sizeof(*s);
            break;
        }
        case MP_LINTSRC: {
            const struct mpc_intsrc *s = (const void *)p;
            assert_int_equal(s->dstapic, 0xff);
            if (nlint == 0) {
                assert_int_equal(s->irqtype, MP_INT_EXTINT);
                assert_int_equal(s->dstirq, 0);
            } else {
                assert_int_equal(s->irqtype, MP_INT_NMI);
                assert_int_equal(s->dstirq, 1);
            }
            nlint++;
            p += sizeof(*s);
            break;
        }
        default:
            fail_msg("unknown MP entry type %u", *p);
        }
    }
    assert_ptr_equal(p, end);
    assert_int_equal(ncpu, ncpus);
    assert_int_equal(nbsp, 1);
    assert_int_equal(nbus, 1);
    assert_int_equal(nioapic, 1);
    assert_int_equal(nint, 15);
    assert_int_equal(nlint, 2);
    assert_int_equal(pin_of_irq[0], 0);     /* the PIT: KVM's default routing, GSI 0 -> pin 0 */
    assert_int_equal(pin_of_irq[2], -1);            /* the cascade has no entry */
    for (int irq = 1; irq < 16; irq++)
        if (irq != 2)
            assert_int_equal(pin_of_irq[irq], irq);
    free(ram);
}

static void test_one_cpu(void **state)
{
    (void)state;
    check_table(1);
}

static void test_four_cpus(void **state)
{
    (void)state;
    check_table(4);
}

static void test_max_cpus(void **state)
{
    (void)state;
    check_table(MPTABLE_MAX_CPUS);
}

static void test_cpu_count_limits(void **state)
{
    (void)state;
    uint8_t *ram = malloc(RAM_SIZE);
    assert_non_null(ram);
    memset(ram, POISON, RAM_SIZE);
    struct guest_mem m;
    gmem_init_fake(&m, RAM_SIZE, ram);
    char err[256];
    assert_int_equal(mptable_write(&m, MPTABLE_MAX_CPUS + 1, err, sizeof(err)), -1);
    assert_string_equal(err, "MP table: 65 vCPUs out of range (1-64)");
    assert_int_equal(mptable_write(&m, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "out of range"));
    for (size_t i = 0; i < RAM_SIZE; i++)
        if (ram[i] != POISON)
            fail_msg("RAM changed at 0x%zx", i);
    free(ram);
}

static void test_ram_too_small(void **state)
{
    (void)state;
    uint8_t ram[4096];
    struct guest_mem m;
    gmem_init_fake(&m, sizeof(ram), ram);
    char err[256];
    assert_int_equal(mptable_write(&m, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not cover"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_cpu),
        cmocka_unit_test(test_four_cpus),
        cmocka_unit_test(test_max_cpus),
        cmocka_unit_test(test_cpu_count_limits),
        cmocka_unit_test(test_ram_too_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
