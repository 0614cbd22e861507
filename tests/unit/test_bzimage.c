/* Linux bzImage loader (boot/bzimage.c): synthetic images with every header
 * field a loader checks, good and bad; placement of kernel, initrd, command
 * line and boot_params; and, when FERRY_TEST_BZIMAGE names one, a real
 * distribution kernel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot/boot.h"
#include "boot/bootparams.h"
#include "boot/acpi.h"
#include "vmm/memory.h"

#define MIB         (1ull << 20)
#define RAM_SIZE    (64 * MIB)
#define SETUP_SECTS 4
#define SETUP_SIZE  ((SETUP_SECTS + 1) * 512)
#define PAYLOAD     0x2000
#define IMG_SIZE    (SETUP_SIZE + PAYLOAD)
#define PREF        0x1000000ull
#define INIT_SIZE   0x800000u        /* 8 MiB: kernel area [16, 24) MiB */
#define POISON      0xaa

struct fixture {
    char dir[64];
    char kpath[128];
    char ipath[128];
    uint8_t *ram;
    size_t ram_size;
    struct guest_mem mem;
    uint8_t img[IMG_SIZE];
    char err[512];
};

static struct setup_header *hdr(struct fixture *f)
{
    return (struct setup_header *)(f->img + BP_HDR_OFFSET);
}

static void default_image(uint8_t *b)
{
    memset(b, 0, IMG_SIZE);
    struct setup_header *h = (struct setup_header *)(b + BP_HDR_OFFSET);
    h->setup_sects = SETUP_SECTS;
    h->syssize = PAYLOAD / 16;
    h->boot_flag = 0xaa55;
    b[0x200] = 0xeb;                 /* jmp short to 0x26c: header is 0x1f1..0x26c */
    b[0x201] = 0x6a;
    memcpy(b + 0x202, "HdrS", 4);
    h->version = 0x020f;
    h->loadflags = LOADED_HIGH;
    h->code32_start = 0x100000;
    h->initrd_addr_max = 0x7fffffff;
    h->kernel_alignment = 0x200000;
    h->relocatable_kernel = 1;
    h->min_alignment = 21;
    h->xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
    h->cmdline_size = 2047;
    h->pref_address = PREF;
    h->init_size = INIT_SIZE;
    for (size_t i = 0; i < PAYLOAD; i++)
        b[SETUP_SIZE + i] = (uint8_t)(i * 7 + 3);
}

static uint8_t *map_ram(size_t size)
{
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-test-bz-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->kpath, sizeof(f->kpath), "%s/vmlinuz", f->dir);
    snprintf(f->ipath, sizeof(f->ipath), "%s/initrd", f->dir);
    f->ram_size = RAM_SIZE;
    f->ram = map_ram(f->ram_size);
    memset(f->ram, POISON, f->ram_size);
    gmem_init_fake(&f->mem, RAM_SIZE, f->ram);
    default_image(f->img);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    unlink(f->kpath);
    unlink(f->ipath);
    rmdir(f->dir);
    munmap(f->ram, f->ram_size);
    free(f);
    return 0;
}

static void write_bytes(const char *path, const void *p, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (len)
        assert_int_equal(fwrite(p, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* An initrd of len bytes with a recognisable pattern. */
static uint8_t *write_initrd(struct fixture *f, size_t len)
{
    uint8_t *d = malloc(len);
    assert_non_null(d);
    for (size_t i = 0; i < len; i++)
        d[i] = (uint8_t)(i * 13 + i / 4096);
    write_bytes(f->ipath, d, len);
    return d;
}

static int load_full(struct fixture *f, struct guest_mem *mem, size_t len, const char *initrd,
                     const char *cmdline, int ncpus, struct boot_entry *out)
{
    write_bytes(f->kpath, f->img, len);
    struct boot_params_in in = { .kernel_path = f->kpath, .initrd_path = initrd,
                                 .cmdline = cmdline, .ncpus = ncpus };
    f->err[0] = '\0';
    return linux_load(mem, &in, out, f->err, sizeof(f->err));
}

static int load(struct fixture *f, const char *initrd, const char *cmdline, struct boot_entry *out)
{
    return load_full(f, &f->mem, IMG_SIZE, initrd, cmdline, 2, out);
}

static const struct boot_params *zero_page(const struct fixture *f)
{
    return (const struct boot_params *)(f->ram + BP_ZERO_PAGE_ADDR);
}

static int ram_untouched(const struct fixture *f)
{
    static uint8_t page[4096];
    memset(page, POISON, sizeof(page));
    for (size_t off = 0; off < f->ram_size; off += sizeof(page))
        if (memcmp(f->ram + off, page, sizeof(page)) != 0)
            return 0;
    return 1;
}

static void check_err(const struct fixture *f, const char *want)
{
    if (!strstr(f->err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", f->err, want);
    assert_null(strchr(f->err, '\n'));
}

/* Loading the image's first len bytes must fail with `want`, RAM unchanged. */
static void expect_reject_len(struct fixture *f, size_t len, const char *want)
{
    struct boot_entry out = { .rip = 0x1234 };
    assert_int_equal(load_full(f, &f->mem, len, NULL, "console=ttyS0", 1, &out), -1);
    check_err(f, want);
    assert_non_null(strstr(f->err, f->kpath));
    assert_true(ram_untouched(f));
    assert_int_equal(out.rip, 0x1234);
}

static void expect_reject(struct fixture *f, const char *want)
{
    expect_reject_len(f, IMG_SIZE, want);
}

static void test_load_ok(void **state)
{
    struct fixture *f = *state;
    struct boot_entry out;
    memset(&out, 0x5a, sizeof(out));
    assert_int_equal(load(f, NULL, "console=ttyS0 root=/dev/vda", &out), 0);
    assert_int_equal(out.mode, BOOT_LINUX64);
    assert_int_equal(out.rip, PREF + 0x200);
    assert_int_equal(out.rsi, BP_ZERO_PAGE_ADDR);
    assert_int_equal(out.rdi, 0);

    /* The protected-mode kernel, and nothing after it. */
    assert_memory_equal(f->ram + PREF, f->img + SETUP_SIZE, PAYLOAD);
    assert_int_equal(f->ram[PREF + PAYLOAD], POISON);
    assert_int_equal(f->ram[PREF - 1], POISON);

    const struct boot_params *bp = zero_page(f);
    const struct setup_header *h = &bp->hdr;
    assert_int_equal(h->boot_flag, 0xaa55);
    assert_memory_equal(&h->header, "HdrS", 4);
    assert_int_equal(h->version, 0x020f);
    assert_int_equal(h->setup_sects, SETUP_SECTS);
    assert_int_equal(h->init_size, INIT_SIZE);
    assert_int_equal(h->pref_address, PREF);
    assert_int_equal(h->xloadflags, XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G);
    assert_int_equal(h->type_of_loader, 0xff);
    assert_int_equal(h->loadflags, LOADED_HIGH | CAN_USE_HEAP);
    assert_int_equal(h->heap_end_ptr, 0xfe00 - 0x200);
    assert_int_equal(h->cmd_line_ptr, BP_CMDLINE_ADDR);
    assert_int_equal(bp->ext_cmd_line_ptr, 0);
    assert_int_equal(h->ramdisk_image, 0);
    assert_int_equal(h->ramdisk_size, 0);
    assert_int_equal(h->setup_data, 0);
    assert_int_equal(bp->sentinel, 0);
    assert_int_equal(bp->acpi_rsdp_addr, 0);
    assert_string_equal((const char *)f->ram + BP_CMDLINE_ADDR, "console=ttyS0 root=/dev/vda");

    assert_int_equal(bp->e820_entries, 3);
    assert_int_equal(bp->e820_table[2].addr, 0x100000);
    assert_int_equal(bp->e820_table[2].addr + bp->e820_table[2].size, RAM_SIZE);
    /* Everything else in the zero page outside the header is zero. */
    for (size_t i = 0; i < BP_HDR_OFFSET; i++)
        if (i != offsetof(struct boot_params, e820_entries))
            assert_int_equal(((const uint8_t *)bp)[i], 0);

    /* The ACPI tables (checked in detail by test_acpi). */
    assert_memory_equal(f->ram + ACPI_RSDP_ADDR, "RSD PTR ", 8);
    assert_memory_equal(f->ram + ACPI_MADT_ADDR, "APIC", 4);
}

static void test_null_cmdline(void **state)
{
    struct fixture *f = *state;
    struct boot_entry out;
    assert_int_equal(load(f, NULL, NULL, &out), 0);
    assert_int_equal(zero_page(f)->hdr.cmd_line_ptr, BP_CMDLINE_ADDR);
    assert_string_equal((const char *)f->ram + BP_CMDLINE_ADDR, "");
}

static void test_setup_sects_zero_means_four(void **state)
{
    struct fixture *f = *state;
    hdr(f)->setup_sects = 0;
    struct boot_entry out;
    assert_int_equal(load(f, NULL, "", &out), 0);
    assert_memory_equal(f->ram + PREF, f->img + SETUP_SIZE, PAYLOAD);
}

static void test_missing_file(void **state)
{
    struct fixture *f = *state;
    struct boot_params_in in = { .kernel_path = "/nonexistent/ferry/vmlinuz", .ncpus = 1 };
    struct boot_entry out;
    assert_int_equal(linux_load(&f->mem, &in, &out, f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "kernel /nonexistent/ferry/vmlinuz: cannot open: No such file or directory");
    assert_true(ram_untouched(f));
}

static void test_not_regular(void **state)
{
    struct fixture *f = *state;
    struct boot_params_in in = { .kernel_path = f->dir, .ncpus = 1 };
    struct boot_entry out;
    assert_int_equal(linux_load(&f->mem, &in, &out, f->err, sizeof(f->err)), -1);
    check_err(f, "not a regular file");
}

static void test_bad_boot_flag(void **state)
{
    struct fixture *f = *state;
    hdr(f)->boot_flag = 0x55aa;
    expect_reject(f, "not a bzImage (no 0xAA55 boot flag)");
}

static void test_bad_magic(void **state)
{
    struct fixture *f = *state;
    memcpy(f->img + 0x202, "HdrZ", 4);
    expect_reject(f, "not a bzImage (no HdrS magic)");
}

static void test_protocol_too_old(void **state)
{
    struct fixture *f = *state;
    hdr(f)->version = 0x0204;
    struct boot_entry out;
    assert_int_equal(load(f, NULL, "", &out), -1);
    char want[256];
    snprintf(want, sizeof(want), "kernel %s: boot protocol 2.04 too old (need >= 2.06)", f->kpath);
    assert_string_equal(f->err, want);
    assert_true(ram_untouched(f));
}

static void test_protocol_without_64bit_entry(void **state)
{
    struct fixture *f = *state;
    hdr(f)->version = 0x020a;      /* 2.10: has init_size but no xloadflags */
    expect_reject(f, "boot protocol 2.10 has no 64-bit entry point");
}

static void test_no_xlf_kernel_64(void **state)
{
    struct fixture *f = *state;
    hdr(f)->xloadflags = XLF_CAN_BE_LOADED_ABOVE_4G;
    expect_reject(f, "no 64-bit entry point (XLF_KERNEL_64 not set");
}

static void test_not_loaded_high(void **state)
{
    struct fixture *f = *state;
    hdr(f)->loadflags = 0;
    expect_reject(f, "LOADED_HIGH not set");
}

static void test_truncated(void **state)
{
    struct fixture *f = *state;
    expect_reject_len(f, 0, "truncated");
    expect_reject_len(f, 0x100, "truncated");
    expect_reject_len(f, 0x230, "truncated");            /* header cut short */
    expect_reject_len(f, SETUP_SIZE, "truncated");        /* setup only */
    expect_reject_len(f, SETUP_SIZE + 0x100, "truncated");
    expect_reject_len(f, IMG_SIZE - 16, "header says 8192");  /* syssize covers more */
}

static void test_bad_alignment(void **state)
{
    struct fixture *f = *state;
    hdr(f)->kernel_alignment = 0x300000;
    expect_reject(f, "bad kernel_alignment 0x300000");
}

static void test_load_address(void **state)
{
    struct fixture *f = *state;
    struct boot_entry out;
    /* Relocatable with a low preference: at least 1 MiB, rounded to the alignment. */
    hdr(f)->pref_address = 0x100000;
    assert_int_equal(load(f, NULL, "", &out), 0);
    assert_int_equal(out.rip, 0x200000 + 0x200);
    assert_memory_equal(f->ram + 0x200000, f->img + SETUP_SIZE, PAYLOAD);

    /* Not relocatable: exactly where it wants to be. */
    hdr(f)->relocatable_kernel = 0;
    hdr(f)->pref_address = 0x1100000;
    assert_int_equal(load(f, NULL, "", &out), 0);
    assert_int_equal(out.rip, 0x1100000 + 0x200);

    hdr(f)->pref_address = 0x80000;
    assert_int_equal(load(f, NULL, "", &out), -1);
    check_err(f, "below 1 MiB");
}

static void test_memory_too_small_for_kernel(void **state)
{
    struct fixture *f = *state;
    hdr(f)->init_size = 0x3f98000;  /* a Debian 6.1 kernel: needs up to 16 + 63.6 MiB */
    struct boot_entry out;
    assert_int_equal(load(f, NULL, "", &out), -1);
    assert_string_equal(f->err, "memory 64 MiB too small for kernel (needs 80 MiB)");
    assert_true(ram_untouched(f));

    free(write_initrd(f, 5 * MIB));
    assert_int_equal(load(f, f->ipath, "", &out), -1);
    assert_string_equal(f->err, "memory 64 MiB too small for kernel (needs 80 MiB) + initrd (5 MiB)");
    assert_true(ram_untouched(f));
}

static void test_memory_too_small_for_initrd(void **state)
{
    struct fixture *f = *state;
    hdr(f)->init_size = 47 * MIB;   /* kernel area ends at 63 MiB */
    free(write_initrd(f, 5 * MIB - 100));
    struct boot_entry out;
    assert_int_equal(load(f, f->ipath, "", &out), -1);
    assert_string_equal(f->err, "memory 64 MiB too small for kernel (needs 63 MiB) + initrd (5 MiB)");
    assert_true(ram_untouched(f));

    /* 1 MiB minus a page fits exactly between the kernel and the top. */
    free(write_initrd(f, MIB - 4096));
    assert_int_equal(load(f, f->ipath, "", &out), 0);
    assert_int_equal(zero_page(f)->hdr.ramdisk_image, 63 * MIB + 4096);
}

static void test_initrd_placement(void **state)
{
    struct fixture *f = *state;
    size_t isize = 3 * MIB + 123;
    uint8_t *data = write_initrd(f, isize);
    struct boot_entry out;
    assert_int_equal(load(f, f->ipath, "root=/dev/ram0", &out), 0);
    const struct setup_header *h = &zero_page(f)->hdr;
    uint64_t at = h->ramdisk_image | (uint64_t)zero_page(f)->ext_ramdisk_image << 32;
    assert_int_equal(at & 0xfff, 0);
    assert_int_equal(h->ramdisk_size, isize);
    assert_int_equal(zero_page(f)->ext_ramdisk_size, 0);
    assert_true(at >= PREF + INIT_SIZE);                     /* above the kernel's area */
    assert_true(at + isize <= RAM_SIZE);
    assert_true(at + isize > RAM_SIZE - 4096);               /* as high as it goes */
    assert_memory_equal(f->ram + at, data, isize);

    /* initrd_addr_max is the last byte the initrd may use. */
    hdr(f)->initrd_addr_max = 40 * MIB - 1;
    memset(f->ram, POISON, f->ram_size);
    assert_int_equal(load(f, f->ipath, "", &out), 0);
    at = zero_page(f)->hdr.ramdisk_image;
    assert_true(at + isize - 1 <= 40 * MIB - 1);
    assert_true(at >= PREF + INIT_SIZE);
    assert_int_equal(at & 0xfff, 0);
    assert_memory_equal(f->ram + at, data, isize);
    free(data);

    /* A limit below the end of the kernel leaves no room. */
    hdr(f)->initrd_addr_max = 20 * MIB - 1;
    memset(f->ram, POISON, f->ram_size);
    assert_int_equal(load(f, f->ipath, "", &out), -1);
    check_err(f, "does not fit between the kernel (up to 24 MiB) and its initrd_addr_max 0x13fffff");
    assert_true(ram_untouched(f));
}

static void test_initrd_above_4g(void **state)
{
    struct fixture *f = *state;
    /* Hand-made RAM: 32 MiB at 0 and 16 MiB at 4 GiB. */
    uint8_t *hi = map_ram(16 * MIB);
    struct guest_mem m = { .ram_size = 48 * MIB, .nregions = 2, .base = f->ram, .fd = -1 };
    m.regions[0] = (struct gmem_region){ .gpa = 0, .size = 32 * MIB, .hva = f->ram };
    m.regions[1] = (struct gmem_region){ .gpa = GMEM_4G, .size = 16 * MIB, .hva = hi };
    size_t isize = 12 * MIB;            /* low RAM has 8 MiB free above the kernel */
    uint8_t *data = write_initrd(f, isize);
    struct boot_entry out;
    assert_int_equal(load_full(f, &m, IMG_SIZE, f->ipath, "", 1, &out), 0);
    const struct boot_params *bp = zero_page(f);
    assert_int_equal(bp->hdr.ramdisk_image, 4 * MIB);
    assert_int_equal(bp->ext_ramdisk_image, 1);
    assert_int_equal(bp->hdr.ramdisk_size, isize);
    assert_memory_equal(hi + 4 * MIB, data, isize);
    assert_int_equal(bp->e820_entries, 4);
    assert_int_equal(bp->e820_table[3].addr, GMEM_4G);
    assert_int_equal(bp->e820_table[3].size, 16 * MIB);

    /* A kernel that cannot take an initrd above 4 GiB. */
    hdr(f)->xloadflags = XLF_KERNEL_64;
    assert_int_equal(load_full(f, &m, IMG_SIZE, f->ipath, "", 1, &out), -1);
    assert_string_equal(f->err, "memory 48 MiB too small for kernel (needs 24 MiB) + initrd (12 MiB)");
    free(data);
    munmap(hi, 16 * MIB);
}

static void test_initrd_missing_or_empty(void **state)
{
    struct fixture *f = *state;
    struct boot_entry out;
    assert_int_equal(load(f, "/nonexistent/ferry/initrd", "", &out), -1);
    assert_string_equal(f->err, "initrd /nonexistent/ferry/initrd: cannot open: No such file or directory");
    assert_true(ram_untouched(f));

    write_bytes(f->ipath, "", 0);
    assert_int_equal(load(f, f->ipath, "", &out), -1);
    check_err(f, "empty");
    assert_true(ram_untouched(f));
}

static void test_cmdline_too_long(void **state)
{
    struct fixture *f = *state;
    hdr(f)->cmdline_size = 16;
    struct boot_entry out;
    assert_int_equal(load(f, NULL, "0123456789abcdefX", &out), -1);   /* 17 bytes */
    check_err(f, "command line too long (17 bytes, the kernel accepts at most 16)");
    assert_true(ram_untouched(f));

    assert_int_equal(load(f, NULL, "0123456789abcdef", &out), 0);     /* 16 bytes */
    assert_string_equal((const char *)f->ram + BP_CMDLINE_ADDR, "0123456789abcdef");
}

static void test_too_many_cpus(void **state)
{
    struct fixture *f = *state;
    struct boot_entry out;
    assert_int_equal(load_full(f, &f->mem, IMG_SIZE, NULL, "", ACPI_MAX_CPUS + 1, &out), -1);
    check_err(f, "65 vCPUs out of range (1-64)");
    assert_true(ram_untouched(f));
    assert_int_equal(load_full(f, &f->mem, IMG_SIZE, NULL, "", ACPI_MAX_CPUS, &out), 0);
}

/* A real kernel, e.g. FERRY_TEST_BZIMAGE=/boot/vmlinuz-$(uname -r). */
static void test_real_bzimage(void **state)
{
    struct fixture *f = *state;
    const char *path = getenv("FERRY_TEST_BZIMAGE");
    if (!path || !*path) {
        skip();
        return;
    }
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    struct stat st;
    assert_int_equal(fstat(fileno(fp), &st), 0);
    size_t fsize = (size_t)st.st_size;
    uint8_t *file = malloc(fsize);
    assert_non_null(file);
    assert_int_equal(fread(file, 1, fsize, fp), fsize);
    fclose(fp);

    size_t ram = 512 * MIB;
    uint8_t *buf = map_ram(ram);
    struct guest_mem m;
    gmem_init_fake(&m, ram, buf);
    const char *initrd = getenv("FERRY_TEST_INITRD");
    struct boot_params_in in = { .kernel_path = path, .initrd_path = initrd && *initrd ? initrd : NULL,
                                 .cmdline = "console=ttyS0 panic=-1", .ncpus = 2 };
    struct boot_entry out;
    if (linux_load(&m, &in, &out, f->err, sizeof(f->err)) != 0)
        fail_msg("%s", f->err);
    const struct boot_params *bp = (const void *)(buf + BP_ZERO_PAGE_ADDR);
    const struct setup_header *h = &bp->hdr;
    unsigned sects = h->setup_sects ? h->setup_sects : 4;
    size_t setup = (sects + 1) * 512;
    uint64_t load = out.rip - 0x200;
    print_message("%s: protocol %x, load 0x%llx, init_size 0x%x, payload %zu, initrd 0x%x+%u\n", path,
                  h->version, (unsigned long long)load, h->init_size, fsize - setup, h->ramdisk_image,
                  h->ramdisk_size);
    assert_true(h->version >= 0x020c);
    assert_int_equal(load, h->pref_address);
    assert_memory_equal(buf + load, file + setup, fsize - setup);
    assert_int_equal(h->type_of_loader, 0xff);
    assert_string_equal((const char *)buf + BP_CMDLINE_ADDR, "console=ttyS0 panic=-1");
    if (in.initrd_path)
        assert_true(h->ramdisk_image >= load + h->init_size);
    assert_int_equal(bp->e820_entries, 3);
    free(file);
    munmap(buf, ram);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_cmdline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_setup_sects_zero_means_four, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_regular, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_boot_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_protocol_too_old, setup, teardown),
        cmocka_unit_test_setup_teardown(test_protocol_without_64bit_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_xlf_kernel_64, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_loaded_high, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_alignment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_too_small_for_kernel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_too_small_for_initrd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initrd_placement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initrd_above_4g, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initrd_missing_or_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cmdline_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_cpus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_bzimage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
