/* boot_params zero page and e820 map (boot/bootparams.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "boot/bootparams.h"
#include "vmm/memory.h"

#define MIB (1ull << 20)
#define GIB (1ull << 30)

/* Sorted by address, non-overlapping, non-empty; returns total RAM bytes. */
static uint64_t check_map(const struct e820_entry *e, int n)
{
    uint64_t ram = 0;
    for (int i = 0; i < n; i++) {
        assert_true(e[i].size > 0);
        assert_true(e[i].type == E820_RAM || e[i].type == E820_RESERVED);
        if (i > 0)
            assert_true(e[i].addr >= e[i - 1].addr + e[i - 1].size);
        if (e[i].type == E820_RAM)
            ram += e[i].size;
    }
    return ram;
}

static void expect_entry(const struct e820_entry *e, uint64_t addr, uint64_t end, uint32_t type)
{
    assert_int_equal(e->addr, addr);
    assert_int_equal(e->addr + e->size, end);
    assert_int_equal(e->type, type);
}

static void test_e820_256m(void **state)
{
    (void)state;
    struct guest_mem m;
    gmem_init_fake(&m, 256 * MIB, NULL);     /* e820 never touches RAM */
    struct e820_entry e[E820_MAX_ZEROPAGE];
    int n = e820_build(&m, e, E820_MAX_ZEROPAGE);
    assert_int_equal(n, 3);
    expect_entry(&e[0], 0, 0x9fc00, E820_RAM);
    expect_entry(&e[1], 0x9fc00, 0x100000, E820_RESERVED);
    expect_entry(&e[2], 0x100000, 256 * MIB, E820_RAM);
    assert_int_equal(check_map(e, n), 256 * MIB - (0x100000 - 0x9fc00));
}

static void test_e820_4g_two_regions(void **state)
{
    (void)state;
    /* What ferry-vmm makes of 4 GiB: 3 GiB below the PCI hole, 1 GiB at 4 GiB. */
    struct guest_mem m = { .ram_size = 4 * GIB, .nregions = 2, .fd = -1 };
    m.regions[0] = (struct gmem_region){ .gpa = 0, .size = GMEM_PCI_HOLE_START };
    m.regions[1] = (struct gmem_region){ .gpa = GMEM_4G, .size = 4 * GIB - GMEM_PCI_HOLE_START };
    struct e820_entry e[E820_MAX_ZEROPAGE];
    int n = e820_build(&m, e, E820_MAX_ZEROPAGE);
    assert_int_equal(n, 4);
    expect_entry(&e[0], 0, 0x9fc00, E820_RAM);
    expect_entry(&e[1], 0x9fc00, 0x100000, E820_RESERVED);
    expect_entry(&e[2], 0x100000, GMEM_PCI_HOLE_START, E820_RAM);
    expect_entry(&e[3], GMEM_4G, GMEM_4G + GIB, E820_RAM);
    assert_int_equal(check_map(e, n), 4 * GIB - (0x100000 - 0x9fc00));
    /* Nothing in the PCI hole (IOAPIC, LAPIC, test device). */
    for (int i = 0; i < n; i++)
        assert_true(e[i].addr + e[i].size <= GMEM_PCI_HOLE_START || e[i].addr >= GMEM_4G);
}

static void test_e820_gmem_layout(void **state)
{
    (void)state;
    /* Through the real layout code: 6 GiB splits at the PCI hole too. */
    struct guest_mem m;
    void *res = mmap(NULL, 6 * GIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    assert_true(res != MAP_FAILED);
    gmem_init_fake(&m, 6 * GIB, res);
    struct e820_entry e[8];
    int n = e820_build(&m, e, 8);
    assert_int_equal(n, m.nregions == 2 ? 4 : 3);
    check_map(e, n);
    assert_int_equal(e[n - 1].addr + e[n - 1].size, gmem_top(&m));
    munmap(res, 6 * GIB);
}

static void test_e820_limits(void **state)
{
    (void)state;
    struct guest_mem m;
    gmem_init_fake(&m, 2 * MIB, NULL);
    struct e820_entry e[4];
    assert_int_equal(e820_build(&m, e, 3), 3);
    assert_int_equal(e820_build(&m, e, 2), -1);    /* does not fit */
    m.regions[0].size = 512 * 1024;                 /* RAM must cover the BIOS area */
    assert_int_equal(e820_build(&m, e, 4), -1);
}

static void make_header(uint8_t *img)
{
    memset(img, 0, 0x400);
    struct setup_header *h = (struct setup_header *)(img + BP_HDR_OFFSET);
    h->setup_sects = 27;
    h->boot_flag = 0xaa55;
    img[0x200] = 0xeb;
    img[0x201] = 0x6a;
    memcpy(img + 0x202, "HdrS", 4);
    h->version = 0x020f;
    h->loadflags = LOADED_HIGH | KEEP_SEGMENTS;
    h->cmdline_size = 2047;
    h->xloadflags = XLF_KERNEL_64;
    h->init_size = 0x1234000;
    h->pref_address = 0x1000000;
    h->setup_data = 0xdeadbeef;          /* loader-owned: must be cleared */
    h->hardware_subarch = 3;
    img[0x26c] = 0x77;                   /* beyond the declared header: not copied */
}

static void test_bootparams_fields(void **state)
{
    (void)state;
    uint8_t img[0x400];
    make_header(img);
    assert_int_equal(bp_setup_header_len(img), 0x26c - 0x1f1);

    struct guest_mem m;
    gmem_init_fake(&m, 256 * MIB, NULL);
    struct boot_params *bp = malloc(sizeof(*bp));
    assert_non_null(bp);
    memset(bp, 0xee, sizeof(*bp));
    struct bp_config c = { .hdr = img + BP_HDR_OFFSET, .hdr_len = bp_setup_header_len(img),
                           .cmdline_gpa = BP_CMDLINE_ADDR, .initrd_gpa = 0x5a00000,
                           .initrd_size = 0x123456 };
    char err[256];
    assert_int_equal(bootparams_build(bp, &m, &c, err, sizeof(err)), 0);

    const struct setup_header *h = &bp->hdr;
    assert_int_equal(h->setup_sects, 27);
    assert_int_equal(h->boot_flag, 0xaa55);
    assert_int_equal(h->header, BP_HDRS_MAGIC);
    assert_int_equal(h->version, 0x020f);
    assert_int_equal(h->init_size, 0x1234000);
    assert_int_equal(h->pref_address, 0x1000000);
    assert_int_equal(h->type_of_loader, 0xff);
    assert_int_equal(h->loadflags, LOADED_HIGH | CAN_USE_HEAP);
    assert_int_equal(h->heap_end_ptr, 0xfe00 - 0x200);
    assert_int_equal(h->cmd_line_ptr, BP_CMDLINE_ADDR);
    assert_int_equal(h->ramdisk_image, 0x5a00000);
    assert_int_equal(h->ramdisk_size, 0x123456);
    assert_int_equal(h->setup_data, 0);
    assert_int_equal(h->hardware_subarch, 0);
    assert_int_equal(bp->ext_ramdisk_image, 0);
    assert_int_equal(bp->ext_ramdisk_size, 0);
    assert_int_equal(bp->ext_cmd_line_ptr, 0);
    assert_int_equal(bp->sentinel, 0);
    assert_int_equal(((uint8_t *)bp)[0x26c], 0);
    assert_int_equal(bp->e820_entries, 3);
    expect_entry(&bp->e820_table[2], 0x100000, 256 * MIB, E820_RAM);
    /* The rest of the page is zero. */
    for (size_t i = offsetof(struct boot_params, e820_table) + 3 * sizeof(struct e820_entry);
         i < sizeof(*bp); i++)
        assert_int_equal(((uint8_t *)bp)[i], 0);

    /* An initrd above 4 GiB uses the ext_ fields; none leaves them 0. */
    c.initrd_gpa = GMEM_4G + 0x200000;
    assert_int_equal(bootparams_build(bp, &m, &c, err, sizeof(err)), 0);
    assert_int_equal(bp->hdr.ramdisk_image, 0x200000);
    assert_int_equal(bp->ext_ramdisk_image, 1);
    c.initrd_size = 0;
    assert_int_equal(bootparams_build(bp, &m, &c, err, sizeof(err)), 0);
    assert_int_equal(bp->hdr.ramdisk_image, 0);
    assert_int_equal(bp->hdr.ramdisk_size, 0);
    assert_int_equal(bp->ext_ramdisk_image, 0);

    /* A header too short for protocol 2.06 is refused. */
    c.hdr_len = 0x30;
    assert_int_equal(bootparams_build(bp, &m, &c, err, sizeof(err)), -1);
    free(bp);
}

static void test_header_len_cap(void **state)
{
    (void)state;
    uint8_t img[0x400] = { 0 };
    img[0x201] = 0xff;                     /* claims to run to 0x301 */
    assert_int_equal(bp_setup_header_len(img), 0x290 - 0x1f1);
    img[0x201] = 0x66;                     /* 2.12-era header ending at 0x268 */
    assert_int_equal(bp_setup_header_len(img), 0x268 - 0x1f1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e820_256m),
        cmocka_unit_test(test_e820_4g_two_regions),
        cmocka_unit_test(test_e820_gmem_layout),
        cmocka_unit_test(test_e820_limits),
        cmocka_unit_test(test_bootparams_fields),
        cmocka_unit_test(test_header_len_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
