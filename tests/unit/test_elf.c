/* Micro-guest ELF loader (boot/elf.c): a well-formed image loads, and every
 * malformed one is rejected with a one-line reason before guest RAM changes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "boot/boot.h"
#include "ferry-guest-abi.h"
#include "vmm/memory.h"

#define RAM_SIZE   (4ull << 20)
#define TEXT_ADDR  0x200000ull
#define DATA_ADDR  0x201000ull
#define DATA_MEMSZ 0x2000ull
#define POISON     0xaa

/* A small valid image: text (RX, 16 bytes) and data (RW, 8 bytes + bss). */
struct image {
    Elf64_Ehdr eh;
    Elf64_Phdr ph[2];
    uint8_t text[16];
    uint8_t data[8];
};

struct fixture {
    char dir[64];
    char path[128];
    uint8_t *ram;
    struct guest_mem mem;
    struct image img;
    char err[512];
};

static void default_image(struct image *im)
{
    memset(im, 0, sizeof(*im));
    memcpy(im->eh.e_ident, ELFMAG, SELFMAG);
    im->eh.e_ident[EI_CLASS] = ELFCLASS64;
    im->eh.e_ident[EI_DATA] = ELFDATA2LSB;
    im->eh.e_ident[EI_VERSION] = EV_CURRENT;
    im->eh.e_type = ET_EXEC;
    im->eh.e_machine = EM_X86_64;
    im->eh.e_version = EV_CURRENT;
    im->eh.e_entry = TEXT_ADDR + 4;
    im->eh.e_phoff = offsetof(struct image, ph);
    im->eh.e_ehsize = sizeof(Elf64_Ehdr);
    im->eh.e_phentsize = sizeof(Elf64_Phdr);
    im->eh.e_phnum = 2;
    im->ph[0] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_flags = PF_R | PF_X,
                              .p_offset = offsetof(struct image, text),
                              .p_vaddr = TEXT_ADDR, .p_paddr = TEXT_ADDR,
                              .p_filesz = sizeof(im->text), .p_memsz = sizeof(im->text),
                              .p_align = 0x1000 };
    im->ph[1] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_flags = PF_R | PF_W,
                              .p_offset = offsetof(struct image, data),
                              .p_vaddr = DATA_ADDR, .p_paddr = DATA_ADDR,
                              .p_filesz = sizeof(im->data), .p_memsz = DATA_MEMSZ,
                              .p_align = 0x1000 };
    for (size_t i = 0; i < sizeof(im->text); i++)
        im->text[i] = (uint8_t)(0x90 + i);
    for (size_t i = 0; i < sizeof(im->data); i++)
        im->data[i] = (uint8_t)(0x10 + i);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-test-elf-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/guest.elf", f->dir);
    f->ram = malloc(RAM_SIZE);
    assert_non_null(f->ram);
    memset(f->ram, POISON, RAM_SIZE);
    gmem_init_fake(&f->mem, RAM_SIZE, f->ram);
    default_image(&f->img);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f->ram);
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

/* Write f->img (its first len bytes) and load it. */
static int load_len(struct fixture *f, size_t len, const char *cmdline, struct boot_entry *out)
{
    write_bytes(f->path, &f->img, len);
    struct boot_params_in in = { .kernel_path = f->path, .cmdline = cmdline, .ncpus = 2,
                                 .tsc_khz = 2500000 };
    f->err[0] = '\0';
    return microguest_load(&f->mem, &in, out, f->err, sizeof(f->err));
}

static int load(struct fixture *f, const char *cmdline, struct boot_entry *out)
{
    return load_len(f, sizeof(f->img), cmdline, out);
}

static int ram_untouched(const struct fixture *f)
{
    for (uint64_t i = 0; i < RAM_SIZE; i++)
        if (f->ram[i] != POISON)
            return 0;
    return 1;
}

/* Load must fail with `want` in the message, one line, and RAM unchanged. */
static void expect_reject(struct fixture *f, size_t len, const char *want)
{
    struct boot_entry out = { .rip = 0x1234 };
    assert_int_equal(load_len(f, len, "x=1", &out), -1);
    if (!strstr(f->err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", f->err, want);
    assert_non_null(strstr(f->err, f->path));
    assert_null(strchr(f->err, '\n'));
    assert_true(ram_untouched(f));
    assert_int_equal(out.rip, 0x1234);
}

static void test_load_ok(void **state)
{
    struct fixture *f = *state;
    struct boot_entry out;
    memset(&out, 0x5a, sizeof(out));
    assert_int_equal(load(f, "mib=64 passes=3", &out), 0);
    assert_int_equal(out.mode, BOOT_MICROGUEST);
    assert_int_equal(out.rip, TEXT_ADDR + 4);
    assert_int_equal(out.rdi, FERRY_GUEST_INFO_ADDR);
    assert_int_equal(out.rsi, 0);

    assert_memory_equal(f->ram + TEXT_ADDR, f->img.text, sizeof(f->img.text));
    assert_memory_equal(f->ram + DATA_ADDR, f->img.data, sizeof(f->img.data));
    for (uint64_t i = sizeof(f->img.data); i < DATA_MEMSZ; i++)
        assert_int_equal(f->ram[DATA_ADDR + i], 0);               /* bss zeroed */
    assert_int_equal(f->ram[TEXT_ADDR + sizeof(f->img.text)], POISON);   /* nothing more */
    assert_int_equal(f->ram[DATA_ADDR + DATA_MEMSZ], POISON);

    const struct ferry_guest_info *info = (const void *)(f->ram + FERRY_GUEST_INFO_ADDR);
    assert_int_equal(info->magic, FERRY_GUEST_INFO_MAGIC);
    assert_int_equal(info->ram_size, RAM_SIZE);
    assert_int_equal(info->ram_below_4g, RAM_SIZE);
    assert_int_equal(info->tsc_khz, 2500000);
    assert_int_equal(info->ncpus, 2);
    assert_string_equal(info->cmdline, "mib=64 passes=3");
    for (size_t i = strlen(info->cmdline); i < FERRY_GUEST_CMDLINE_MAX; i++)
        assert_int_equal(info->cmdline[i], 0);
}

static void test_null_cmdline_and_ncpus(void **state)
{
    struct fixture *f = *state;
    write_bytes(f->path, &f->img, sizeof(f->img));
    struct boot_params_in in = { .kernel_path = f->path, .cmdline = NULL, .ncpus = 0 };
    struct boot_entry out;
    assert_int_equal(microguest_load(&f->mem, &in, &out, f->err, sizeof(f->err)), 0);
    const struct ferry_guest_info *info = (const void *)(f->ram + FERRY_GUEST_INFO_ADDR);
    assert_string_equal(info->cmdline, "");
    assert_int_equal(info->ncpus, 1);
}

static void test_cmdline_limit(void **state)
{
    struct fixture *f = *state;
    char *cl = malloc(FERRY_GUEST_CMDLINE_MAX + 1);
    assert_non_null(cl);
    memset(cl, 'a', FERRY_GUEST_CMDLINE_MAX);
    cl[FERRY_GUEST_CMDLINE_MAX] = '\0';
    struct boot_entry out;
    assert_int_equal(load(f, cl, &out), -1);          /* 2048 chars + NUL: too long */
    assert_non_null(strstr(f->err, "command line too long"));
    assert_true(ram_untouched(f));

    cl[FERRY_GUEST_CMDLINE_MAX - 1] = '\0';          /* 2047 chars: fits */
    assert_int_equal(load(f, cl, &out), 0);
    const struct ferry_guest_info *info = (const void *)(f->ram + FERRY_GUEST_INFO_ADDR);
    assert_int_equal(strlen(info->cmdline), FERRY_GUEST_CMDLINE_MAX - 1);
    free(cl);
}

static void test_is_elf(void **state)
{
    struct fixture *f = *state;
    write_bytes(f->path, &f->img, sizeof(f->img));
    assert_true(boot_is_elf(f->path));
    write_bytes(f->path, "MZ\0\0HdrS", 8);
    assert_false(boot_is_elf(f->path));
    write_bytes(f->path, "\177EL", 3);
    assert_false(boot_is_elf(f->path));
    write_bytes(f->path, "", 0);
    assert_false(boot_is_elf(f->path));
    assert_false(boot_is_elf("/nonexistent/ferry/guest.elf"));
    /* a 32-bit ELF still counts as ELF: the ELF loader then gives the reason */
    f->img.eh.e_ident[EI_CLASS] = ELFCLASS32;
    write_bytes(f->path, &f->img, sizeof(f->img));
    assert_true(boot_is_elf(f->path));
}

static void test_missing_file(void **state)
{
    struct fixture *f = *state;
    struct boot_params_in in = { .kernel_path = "/nonexistent/ferry/guest.elf" };
    struct boot_entry out;
    assert_int_equal(microguest_load(&f->mem, &in, &out, f->err, sizeof(f->err)), -1);
    assert_non_null(strstr(f->err, "No such file"));
}

static void test_not_elf(void **state)
{
    struct fixture *f = *state;
    f->img.eh.e_ident[0] = 'M';
    expect_reject(f, sizeof(f->img), "not an ELF64 x86-64 executable");
}

static void test_wrong_class(void **state)
{
    struct fixture *f = *state;
    f->img.eh.e_ident[EI_CLASS] = ELFCLASS32;
    expect_reject(f, sizeof(f->img), "not an ELF64 x86-64 executable");
}

static void test_big_endian(void **state)
{
    struct fixture *f = *state;
    f->img.eh.e_ident[EI_DATA] = ELFDATA2MSB;
    expect_reject(f, sizeof(f->img), "not an ELF64 x86-64 executable");
}

static void test_wrong_machine(void **state)
{
    struct fixture *f = *state;
    f->img.eh.e_machine = EM_AARCH64;
    expect_reject(f, sizeof(f->img), "not an ELF64 x86-64 executable");
}

static void test_not_exec(void **state)
{
    struct fixture *f = *state;
    f->img.eh.e_type = ET_DYN;
    expect_reject(f, sizeof(f->img), "not ET_EXEC");
}

static void test_truncated_header(void **state)
{
    struct fixture *f = *state;
    expect_reject(f, 40, "truncated");
    expect_reject(f, 0, "truncated");
}

static void test_truncated_segment(void **state)
{
    struct fixture *f = *state;
    /* the data segment's 8 file bytes end past EOF */
    expect_reject(f, sizeof(f->img) - 4, "truncated");
}

static void test_truncated_phdrs(void **state)
{
    struct fixture *f = *state;
    expect_reject(f, offsetof(struct image, ph) + sizeof(Elf64_Phdr) + 10, "outside the file");
}

static void test_bad_phoff(void **state)
{
    struct fixture *f = *state;
    f->img.eh.e_phoff = 1u << 20;
    expect_reject(f, sizeof(f->img), "program headers");
    f->img.eh.e_phoff = UINT64_MAX - 8;   /* offset + size overflows */
    expect_reject(f, sizeof(f->img), "program headers");
    f->img.eh.e_phoff = 8;                /* overlaps the ELF header */
    expect_reject(f, sizeof(f->img), "program headers");
}

static void test_bad_phentsize_phnum(void **state)
{
    struct fixture *f = *state;
    f->img.eh.e_phentsize = 32;
    expect_reject(f, sizeof(f->img), "program header size");
    default_image(&f->img);
    f->img.eh.e_phnum = 0;
    expect_reject(f, sizeof(f->img), "program header count");
    f->img.eh.e_phnum = 0xffff;
    expect_reject(f, sizeof(f->img), "program header count");
}

static void test_filesz_gt_memsz(void **state)
{
    struct fixture *f = *state;
    f->img.ph[1].p_memsz = 4;
    expect_reject(f, sizeof(f->img), "segment 1: file size 8 > memory size 4");
}

static void test_segment_offset_outside_file(void **state)
{
    struct fixture *f = *state;
    f->img.ph[0].p_offset = UINT64_MAX - 4;
    expect_reject(f, sizeof(f->img), "truncated (segment 0");
}

static void test_outside_ram(void **state)
{
    struct fixture *f = *state;
    f->img.ph[1].p_paddr = f->img.ph[1].p_vaddr = RAM_SIZE - 0x1000;   /* memsz 0x2000 */
    expect_reject(f, sizeof(f->img), "segment 1 outside guest RAM");
    f->img.ph[1].p_paddr = f->img.ph[1].p_vaddr = 1ull << 40;
    expect_reject(f, sizeof(f->img), "segment 1 outside guest RAM");
}

static void test_address_overflow(void **state)
{
    struct fixture *f = *state;
    f->img.ph[1].p_paddr = f->img.ph[1].p_vaddr = UINT64_MAX - 0xfff;
    expect_reject(f, sizeof(f->img), "segment 1: address");
}

static void test_below_reserved_top(void **state)
{
    struct fixture *f = *state;
    f->img.ph[0].p_paddr = f->img.ph[0].p_vaddr = FERRY_GUEST_RESERVED_TOP - 0x1000;
    f->img.eh.e_entry = f->img.ph[0].p_vaddr;
    expect_reject(f, sizeof(f->img), "segment 0 at 0xff000 is below 0x100000");
    /* the info block's page is reserved too */
    f->img.ph[0].p_paddr = f->img.ph[0].p_vaddr = FERRY_GUEST_INFO_ADDR;
    f->img.eh.e_entry = f->img.ph[0].p_vaddr;
    expect_reject(f, sizeof(f->img), "below 0x100000");
}

static void test_vaddr_ne_paddr(void **state)
{
    struct fixture *f = *state;
    f->img.ph[1].p_vaddr = 0xffffffff80000000ull;
    expect_reject(f, sizeof(f->img), "identity-mapped");
}

static void test_overlap(void **state)
{
    struct fixture *f = *state;
    f->img.ph[1].p_paddr = f->img.ph[1].p_vaddr = TEXT_ADDR + 8;
    expect_reject(f, sizeof(f->img), "segments 0 and 1 overlap");
}

static void test_bad_entry(void **state)
{
    struct fixture *f = *state;
    f->img.eh.e_entry = DATA_ADDR;           /* inside a non-executable segment */
    expect_reject(f, sizeof(f->img), "entry point 0x201000");
    f->img.eh.e_entry = 0;
    expect_reject(f, sizeof(f->img), "entry point");
}

static void test_no_load_segments(void **state)
{
    struct fixture *f = *state;
    f->img.ph[0].p_type = PT_NOTE;
    f->img.ph[1].p_type = PT_NULL;
    expect_reject(f, sizeof(f->img), "no loadable segments");
}

static void test_ignores_other_segments(void **state)
{
    struct fixture *f = *state;
    /* Non-PT_LOAD headers are not validated as segments. */
    f->img.ph[1] = (Elf64_Phdr){ .p_type = PT_GNU_STACK, .p_paddr = 1, .p_vaddr = 2,
                                 .p_filesz = 100, .p_memsz = 1 };
    struct boot_entry out;
    assert_int_equal(load(f, "", &out), 0);
    assert_memory_equal(f->ram + TEXT_ADDR, f->img.text, sizeof(f->img.text));
    assert_int_equal(f->ram[DATA_ADDR], POISON);
}

static void test_ram_above_4g(void **state)
{
    struct fixture *f = *state;
    /* 3 GiB + 64 MiB: RAM is [0, 3 GiB) and [4 GiB, 4 GiB + 64 MiB). A sparse
     * mapping, so only the pages the loader writes cost memory. */
    uint64_t size = GMEM_PCI_HOLE_START + (64ull << 20);
    uint8_t *buf = mmap(NULL, size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    assert_true(buf != MAP_FAILED);
    struct guest_mem mem;
    gmem_init_fake(&mem, size, buf);

    /* data segment in the high region */
    f->img.ph[1].p_paddr = f->img.ph[1].p_vaddr = GMEM_4G + 0x1000;
    write_bytes(f->path, &f->img, sizeof(f->img));
    struct boot_params_in in = { .kernel_path = f->path, .cmdline = "a=b", .ncpus = 1 };
    struct boot_entry out;
    assert_int_equal(microguest_load(&mem, &in, &out, f->err, sizeof(f->err)), 0);
    const struct ferry_guest_info *info = (const void *)(buf + FERRY_GUEST_INFO_ADDR);
    assert_int_equal(info->ram_size, size);
    assert_int_equal(info->ram_below_4g, GMEM_PCI_HOLE_START);
    assert_memory_equal(buf + GMEM_PCI_HOLE_START + 0x1000, f->img.data, sizeof(f->img.data));

    /* a segment in the PCI hole, or straddling its start, is not RAM */
    f->img.ph[1].p_paddr = f->img.ph[1].p_vaddr = GMEM_PCI_HOLE_START + 0x1000;
    write_bytes(f->path, &f->img, sizeof(f->img));
    assert_int_equal(microguest_load(&mem, &in, &out, f->err, sizeof(f->err)), -1);
    assert_non_null(strstr(f->err, "segment 1 outside guest RAM"));
    f->img.ph[1].p_paddr = f->img.ph[1].p_vaddr = GMEM_PCI_HOLE_START - 0x1000;
    write_bytes(f->path, &f->img, sizeof(f->img));
    assert_int_equal(microguest_load(&mem, &in, &out, f->err, sizeof(f->err)), -1);
    assert_non_null(strstr(f->err, "segment 1 outside guest RAM"));
    munmap(buf, size);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_cmdline_and_ncpus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cmdline_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_is_elf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_elf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_class, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_endian, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_machine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_exec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_phdrs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_phoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_phentsize_phnum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filesz_gt_memsz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segment_offset_outside_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outside_ram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_address_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_below_reserved_top, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vaddr_ne_paddr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_load_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ignores_other_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ram_above_4g, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
