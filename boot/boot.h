/* Loaders put an image into guest RAM and say how the boot vCPU starts. */
#ifndef FERRY_BOOT_H
#define FERRY_BOOT_H

#include <stddef.h>
#include <stdint.h>
#include "vmm/memory.h"

enum boot_mode {
    BOOT_LINUX64,      /* Linux x86 64-bit boot protocol: CPL0 long mode, rsi = boot_params */
    BOOT_MICROGUEST,   /* Ferry micro-guest (include/ferry-guest-abi.h): CPL3 long mode */
};

struct boot_entry {
    enum boot_mode mode;
    uint64_t rip;
    uint64_t rsi;      /* BOOT_LINUX64: GPA of boot_params */
    uint64_t rdi;      /* BOOT_MICROGUEST: GPA of struct ferry_guest_info */
};

struct boot_params_in {
    const char *kernel_path;
    const char *initrd_path;   /* may be NULL */
    const char *cmdline;       /* may be NULL */
    int ncpus;
    uint64_t tsc_khz;          /* micro-guests only */
};

/* True when the file at path looks like an ELF64 (micro-guest) rather than a bzImage. */
int boot_is_elf(const char *path);

/* Each returns 0 or -1 with a one-line reason in err (no trailing newline). */
int linux_load(struct guest_mem *mem, const struct boot_params_in *in,
               struct boot_entry *out, char *err, size_t errlen);
int microguest_load(struct guest_mem *mem, const struct boot_params_in *in,
                    struct boot_entry *out, char *err, size_t errlen);

#endif
