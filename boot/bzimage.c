/* Linux bzImage loader, 64-bit boot protocol (Documentation/arch/x86/boot.rst).
 *
 * Guest-physical layout:
 *   0x7000            boot_params (zero page); rsi at entry
 *   0x20000           kernel command line
 *   0x9fc00-0xfffff   e820-reserved: EBDA/BIOS area; ACPI tables at 0xe0000
 *   pref_address      protected-mode kernel (16 MiB for stock kernels),
 *                     followed by its init_size working area
 *   top of low RAM    initrd, page aligned, below initrd_addr_max
 * The vCPU enters startup_64 at load address + 0x200 in long mode (boot/x86.c).
 * Every field is validated, and every placement checked, before guest RAM
 * is written; errors are one line in err. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot/boot.h"
#include "boot/bootparams.h"
#include "boot/acpi.h"

#define MIB        (1ull << 20)
#define PAGE_MASK  0xfffull
#define HEAD_LEN   0x400      /* boot sector + first setup sector: the whole header */

struct bzimage {
    uint8_t head[HEAD_LEN];
    struct setup_header h;    /* zero-extended copy of the image's header */
    size_t hdr_len;
    uint64_t fsize;
    uint64_t setup_size;      /* boot sector + setup sectors */
    uint64_t payload;         /* protected-mode kernel bytes in the file */
    uint64_t load;            /* GPA of the protected-mode kernel */
    uint64_t need;            /* bytes from load the kernel needs (init_size) */
};

static uint64_t mib_up(uint64_t n)
{
    return (n + MIB - 1) / MIB;
}

/* Read exactly len bytes at off; 0, or -1 with errno (0 on a short file). */
static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = 0;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Open a regular file; fd or -1 with err set. */
static int open_file(const char *what, const char *path, uint64_t *size, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s %s: cannot open: %s", what, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s %s: not a regular file", what, path);
        close(fd);
        return -1;
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

static int parse_header(int fd, const char *path, struct bzimage *b, char *err, size_t errlen)
{
    memset(b->head, 0, sizeof(b->head));
    size_t want = b->fsize < HEAD_LEN ? (size_t)b->fsize : HEAD_LEN;
    if (b->fsize < 0x206) {
        snprintf(err, errlen, "kernel %s: truncated (%llu bytes, no room for a setup header)", path,
                 (unsigned long long)b->fsize);
        return -1;
    }
    if (read_at(fd, b->head, want, 0) < 0) {
        snprintf(err, errlen, "kernel %s: %s", path, errno ? strerror(errno) : "truncated");
        return -1;
    }
    const uint8_t *hd = b->head;
    uint16_t boot_flag = (uint16_t)(hd[0x1fe] | hd[0x1ff] << 8);
    if (boot_flag != BP_BOOT_FLAG) {
        snprintf(err, errlen, "kernel %s: not a bzImage (no 0xAA55 boot flag)", path);
        return -1;
    }
    if (memcmp(hd + 0x202, "HdrS", 4) != 0) {
        snprintf(err, errlen, "kernel %s: not a bzImage (no HdrS magic)", path);
        return -1;
    }
    uint16_t version = (uint16_t)(hd[0x206] | hd[0x207] << 8);
    if (version < BP_MIN_VERSION) {
        snprintf(err, errlen, "kernel %s: boot protocol %u.%02u too old (need >= 2.06)", path,
                 version >> 8, version & 0xff);
        return -1;
    }
    b->hdr_len = bp_setup_header_len(hd);
    if (b->hdr_len < offsetof(struct setup_header, cmdline_size) + 4) {
        snprintf(err, errlen, "kernel %s: setup header of %zu bytes too short for protocol %u.%02u",
                 path, b->hdr_len, version >> 8, version & 0xff);
        return -1;
    }
    if (b->fsize < BP_HDR_OFFSET + b->hdr_len) {
        snprintf(err, errlen, "kernel %s: truncated (%llu bytes, setup header ends at 0x%zx)", path,
                 (unsigned long long)b->fsize, BP_HDR_OFFSET + b->hdr_len);
        return -1;
    }
    memset(&b->h, 0, sizeof(b->h));
    memcpy(&b->h, hd + BP_HDR_OFFSET,
           b->hdr_len < sizeof(b->h) ? b->hdr_len : sizeof(b->h));
    const struct setup_header *h = &b->h;

    if (!(h->loadflags & LOADED_HIGH)) {
        snprintf(err, errlen, "kernel %s: not a bzImage (zImage: LOADED_HIGH not set)", path);
        return -1;
    }
    if (version < BP_XLOADFLAGS_VERSION) {
        snprintf(err, errlen, "kernel %s: boot protocol %u.%02u has no 64-bit entry point (need >= 2.12 with XLF_KERNEL_64)",
                 path, version >> 8, version & 0xff);
        return -1;
    }
    if (!(h->xloadflags & XLF_KERNEL_64)) {
        snprintf(err, errlen, "kernel %s: no 64-bit entry point (XLF_KERNEL_64 not set in xloadflags 0x%x)",
                 path, h->xloadflags);
        return -1;
    }

    unsigned sects = h->setup_sects ? h->setup_sects : 4;
    b->setup_size = (uint64_t)(sects + 1) * 512;
    if (b->fsize <= b->setup_size + BP_STARTUP64_OFFSET) {
        snprintf(err, errlen, "kernel %s: truncated (%llu bytes, the setup code alone takes %llu)", path,
                 (unsigned long long)b->fsize, (unsigned long long)b->setup_size);
        return -1;
    }
    b->payload = b->fsize - b->setup_size;
    if ((uint64_t)h->syssize * 16 > b->payload) {
        snprintf(err, errlen, "kernel %s: truncated (%llu bytes of kernel after the setup code, header says %llu)",
                 path, (unsigned long long)b->payload, (unsigned long long)h->syssize * 16);
        return -1;
    }

    /* Load where the kernel prefers (its LOAD_PHYSICAL_ADDR): a relocatable
     * kernel may go anywhere aligned, but decompresses to at least there
     * anyway, and a non-relocatable one moves itself there. */
    uint64_t load = h->pref_address;
    if (h->relocatable_kernel) {
        uint64_t align = h->kernel_alignment;
        if (align == 0 || (align & (align - 1)) != 0) {
            snprintf(err, errlen, "kernel %s: bad kernel_alignment 0x%llx (not a power of two)", path,
                     (unsigned long long)align);
            return -1;
        }
        if (load < BP_KERNEL_MIN_ADDR)
            load = BP_KERNEL_MIN_ADDR;
        load = (load + align - 1) & ~(align - 1);
    } else if (load < BP_KERNEL_MIN_ADDR) {
        snprintf(err, errlen, "kernel %s: non-relocatable kernel with load address 0x%llx below 1 MiB", path,
                 (unsigned long long)load);
        return -1;
    }
    if (load >= GMEM_4G) {
        snprintf(err, errlen, "kernel %s: load address 0x%llx above 4 GiB", path, (unsigned long long)load);
        return -1;
    }
    b->load = load;
    b->need = h->init_size > b->payload ? h->init_size : b->payload;
    return 0;
}

/* Decide where the initrd goes: high in RAM below 4 GiB, under
 * initrd_addr_max and above the kernel's working area; above 4 GiB only
 * when it does not fit there and the kernel allows it. */
static int place_initrd(const struct guest_mem *mem, const struct bzimage *b, const char *initrd_path,
                        uint64_t isize, uint64_t *gpa, char *err, size_t errlen)
{
    uint64_t low_top = gmem_low_size(mem);
    uint64_t kernel_end = b->load + b->need;
    uint64_t max = b->h.initrd_addr_max ? b->h.initrd_addr_max : 0x37ffffffu;  /* pre-2.03 default */
    uint64_t limit = low_top < max + 1 ? low_top : max + 1;
    uint64_t top = limit & ~PAGE_MASK;
    if (top >= kernel_end && top - kernel_end >= isize) {
        uint64_t at = (top - isize) & ~PAGE_MASK;
        if (at >= kernel_end) {
            *gpa = at;
            return 0;
        }
    }
    if (b->h.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G) {
        for (int i = mem->nregions - 1; i >= 1; i--) {
            const struct gmem_region *r = &mem->regions[i];
            if (r->size < isize)
                continue;
            uint64_t at = (r->gpa + r->size - isize) & ~PAGE_MASK;
            if (at >= r->gpa) {
                *gpa = at;
                return 0;
            }
        }
    }
    if (low_top <= max + 1)
        snprintf(err, errlen, "memory %llu MiB too small for kernel (needs %llu MiB) + initrd (%llu MiB)",
                 (unsigned long long)(mem->ram_size >> 20), (unsigned long long)mib_up(kernel_end),
                 (unsigned long long)mib_up(isize));
    else
        snprintf(err, errlen, "initrd %s (%llu MiB) does not fit between the kernel (up to %llu MiB) and its initrd_addr_max 0x%llx",
                 initrd_path, (unsigned long long)mib_up(isize), (unsigned long long)mib_up(kernel_end),
                 (unsigned long long)max);
    return -1;
}

int linux_load(struct guest_mem *mem, const struct boot_params_in *in,
               struct boot_entry *out, char *err, size_t errlen)
{
    const char *path = in->kernel_path;
    const char *cmdline = in->cmdline ? in->cmdline : "";
    int ncpus = in->ncpus > 0 ? in->ncpus : 1;
    int kfd = -1, ifd = -1, rc = -1;
    struct bzimage bz;
    struct boot_params bp;
    struct bzimage *b = &bz;

    if (ncpus > ACPI_MAX_CPUS) {
        snprintf(err, errlen, "ACPI: %d vCPUs out of range (1-%d)", ncpus, ACPI_MAX_CPUS);
        return -1;
    }
    kfd = open_file("kernel", path, &b->fsize, err, errlen);
    if (kfd < 0)
        return -1;
    if (parse_header(kfd, path, b, err, errlen) < 0)
        goto out;

    size_t cmdlen = strlen(cmdline);
    uint64_t cmdmax = b->h.cmdline_size;
    if (cmdmax > BP_CMDLINE_AREA - 1)
        cmdmax = BP_CMDLINE_AREA - 1;
    if (cmdlen > cmdmax) {
        snprintf(err, errlen, "kernel %s: command line too long (%zu bytes, the kernel accepts at most %llu)",
                 path, cmdlen, (unsigned long long)cmdmax);
        goto out;
    }

    uint64_t low_top = gmem_low_size(mem);
    uint64_t isize = 0, igpa = 0;
    if (in->initrd_path) {
        ifd = open_file("initrd", in->initrd_path, &isize, err, errlen);
        if (ifd < 0)
            goto out;
        if (isize == 0) {
            snprintf(err, errlen, "initrd %s: empty file", in->initrd_path);
            goto out;
        }
    }
    if (b->load + b->need > low_top) {
        if (isize)
            snprintf(err, errlen, "memory %llu MiB too small for kernel (needs %llu MiB) + initrd (%llu MiB)",
                     (unsigned long long)(mem->ram_size >> 20),
                     (unsigned long long)mib_up(b->load + b->need), (unsigned long long)mib_up(isize));
        else
            snprintf(err, errlen, "memory %llu MiB too small for kernel (needs %llu MiB)",
                     (unsigned long long)(mem->ram_size >> 20),
                     (unsigned long long)mib_up(b->load + b->need));
        goto out;
    }
    if (isize && place_initrd(mem, b, in->initrd_path, isize, &igpa, err, errlen) < 0)
        goto out;

    uint8_t *kdst = gmem_ptr(mem, b->load, b->payload);
    uint8_t *idst = isize ? gmem_ptr(mem, igpa, isize) : NULL;
    char *cdst = gmem_ptr(mem, BP_CMDLINE_ADDR, cmdlen + 1);
    void *zdst = gmem_ptr(mem, BP_ZERO_PAGE_ADDR, sizeof(bp));
    if (!kdst || (isize && !idst) || !cdst || !zdst) {
        snprintf(err, errlen, "kernel %s: guest RAM layout does not hold the boot areas", path);
        goto out;
    }
    struct bp_config cfg = {
        .hdr = b->head + BP_HDR_OFFSET, .hdr_len = b->hdr_len,
        .cmdline_gpa = BP_CMDLINE_ADDR, .initrd_gpa = igpa, .initrd_size = isize,
    };
    if (bootparams_build(&bp, mem, &cfg, err, errlen) < 0)
        goto out;

    /* Validation done: write guest RAM. */
    if (read_at(kfd, kdst, (size_t)b->payload, b->setup_size) < 0) {
        snprintf(err, errlen, "kernel %s: %s", path, errno ? strerror(errno) : "truncated while reading");
        goto out;
    }
    if (isize && read_at(ifd, idst, (size_t)isize, 0) < 0) {
        snprintf(err, errlen, "initrd %s: %s", in->initrd_path,
                 errno ? strerror(errno) : "truncated while reading");
        goto out;
    }
    memcpy(cdst, cmdline, cmdlen + 1);
    memcpy(zdst, &bp, sizeof(bp));
    if (acpi_write(mem, ncpus, err, errlen) < 0)
        goto out;

    memset(out, 0, sizeof(*out));
    out->mode = BOOT_LINUX64;
    out->rip = b->load + BP_STARTUP64_OFFSET;
    out->rsi = BP_ZERO_PAGE_ADDR;
    rc = 0;
out:
    if (ifd >= 0)
        close(ifd);
    close(kfd);
    return rc;
}
