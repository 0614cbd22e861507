/* Micro-guest loader: a static ELF64 x86-64 executable (include/ferry-guest-abi.h)
 * whose PT_LOAD segments are copied to their physical addresses in guest RAM,
 * plus struct ferry_guest_info at FERRY_GUEST_INFO_ADDR. Every field of the
 * file is validated before use; errors are one line in err. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot/boot.h"
#include "ferry-guest-abi.h"

#define ELF_MAX_PHNUM 64

int boot_is_elf(const char *path)
{
    unsigned char m[SELFMAG];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = pread(fd, m, sizeof(m), 0);
    close(fd);
    return n == (ssize_t)sizeof(m) && memcmp(m, ELFMAG, SELFMAG) == 0;
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

static int check_ehdr(const Elf64_Ehdr *eh, uint64_t fsize, const char *path, char *err, size_t errlen)
{
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_ident[EI_DATA] != ELFDATA2LSB || eh->e_ident[EI_VERSION] != EV_CURRENT ||
        eh->e_machine != EM_X86_64 || eh->e_type != ET_EXEC || eh->e_version != EV_CURRENT) {
        const char *why = memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ? "no ELF magic"
                        : eh->e_ident[EI_CLASS] != ELFCLASS64 ? "not ELF64"
                        : eh->e_ident[EI_DATA] != ELFDATA2LSB ? "not little-endian"
                        : eh->e_machine != EM_X86_64 ? "not x86-64"
                        : eh->e_type != ET_EXEC ? "not ET_EXEC (static, non-PIE executable required)"
                        : "bad ELF version";
        snprintf(err, errlen, "kernel %s: not an ELF64 x86-64 executable (%s)", path, why);
        return -1;
    }
    if (eh->e_ehsize < sizeof(Elf64_Ehdr)) {
        snprintf(err, errlen, "kernel %s: bad ELF header size %u", path, eh->e_ehsize);
        return -1;
    }
    if (eh->e_phentsize != sizeof(Elf64_Phdr)) {
        snprintf(err, errlen, "kernel %s: bad program header size %u (want %zu)", path,
                 eh->e_phentsize, sizeof(Elf64_Phdr));
        return -1;
    }
    if (eh->e_phnum == 0 || eh->e_phnum > ELF_MAX_PHNUM) {
        snprintf(err, errlen, "kernel %s: bad program header count %u (1..%d)", path, eh->e_phnum,
                 ELF_MAX_PHNUM);
        return -1;
    }
    uint64_t phsize = (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr);
    if (eh->e_phoff < sizeof(Elf64_Ehdr) || eh->e_phoff > fsize || phsize > fsize - eh->e_phoff) {
        snprintf(err, errlen, "kernel %s: program headers at offset %llu (+%llu) outside the file (%llu bytes)",
                 path, (unsigned long long)eh->e_phoff, (unsigned long long)phsize,
                 (unsigned long long)fsize);
        return -1;
    }
    return 0;
}

static int check_phdr(const struct guest_mem *mem, const Elf64_Phdr *ph, int i, uint64_t fsize,
                      const char *path, char *err, size_t errlen)
{
    if (ph->p_filesz > ph->p_memsz) {
        snprintf(err, errlen, "kernel %s: segment %d: file size %llu > memory size %llu", path, i,
                 (unsigned long long)ph->p_filesz, (unsigned long long)ph->p_memsz);
        return -1;
    }
    if (ph->p_offset > fsize || ph->p_filesz > fsize - ph->p_offset) {
        snprintf(err, errlen, "kernel %s: truncated (segment %d: bytes %llu+%llu beyond the file's %llu)",
                 path, i, (unsigned long long)ph->p_offset, (unsigned long long)ph->p_filesz,
                 (unsigned long long)fsize);
        return -1;
    }
    if (ph->p_vaddr != ph->p_paddr) {
        snprintf(err, errlen, "kernel %s: segment %d: vaddr 0x%llx != paddr 0x%llx (micro-guests run identity-mapped)",
                 path, i, (unsigned long long)ph->p_vaddr, (unsigned long long)ph->p_paddr);
        return -1;
    }
    if (ph->p_paddr + ph->p_memsz < ph->p_paddr) {
        snprintf(err, errlen, "kernel %s: segment %d: address 0x%llx + size %llu overflows", path, i,
                 (unsigned long long)ph->p_paddr, (unsigned long long)ph->p_memsz);
        return -1;
    }
    if (ph->p_paddr < FERRY_GUEST_RESERVED_TOP) {
        snprintf(err, errlen, "kernel %s: segment %d at 0x%llx is below 0x%llx (reserved for the VMM)",
                 path, i, (unsigned long long)ph->p_paddr, (unsigned long long)FERRY_GUEST_RESERVED_TOP);
        return -1;
    }
    if (!gmem_ptr(mem, ph->p_paddr, ph->p_memsz)) {
        snprintf(err, errlen, "kernel %s: segment %d outside guest RAM ([0x%llx, 0x%llx), RAM %llu MiB)",
                 path, i, (unsigned long long)ph->p_paddr,
                 (unsigned long long)(ph->p_paddr + ph->p_memsz),
                 (unsigned long long)(mem->ram_size >> 20));
        return -1;
    }
    return 0;
}

int microguest_load(struct guest_mem *mem, const struct boot_params_in *in,
                    struct boot_entry *out, char *err, size_t errlen)
{
    const char *path = in->kernel_path;
    const char *cmdline = in->cmdline ? in->cmdline : "";
    size_t cmdlen = strlen(cmdline);
    if (cmdlen >= FERRY_GUEST_CMDLINE_MAX) {
        snprintf(err, errlen, "kernel %s: command line too long (%zu bytes, at most %d)", path, cmdlen,
                 FERRY_GUEST_CMDLINE_MAX - 1);
        return -1;
    }
    struct ferry_guest_info *info = gmem_ptr(mem, FERRY_GUEST_INFO_ADDR, sizeof(*info));
    if (!info) {
        snprintf(err, errlen, "kernel %s: guest RAM too small for the guest info block", path);
        return -1;
    }

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "kernel %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "kernel %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "kernel %s: not a regular file", path);
        goto out;
    }
    uint64_t fsize = (uint64_t)st.st_size;

    Elf64_Ehdr eh;
    if (fsize < sizeof(eh)) {
        snprintf(err, errlen, "kernel %s: truncated (%llu bytes, an ELF64 header needs %zu)", path,
                 (unsigned long long)fsize, sizeof(eh));
        goto out;
    }
    if (read_at(fd, &eh, sizeof(eh), 0) < 0) {
        snprintf(err, errlen, "kernel %s: %s", path, errno ? strerror(errno) : "truncated");
        goto out;
    }
    if (check_ehdr(&eh, fsize, path, err, errlen) < 0)
        goto out;

    Elf64_Phdr ph[ELF_MAX_PHNUM];
    if (read_at(fd, ph, (size_t)eh.e_phnum * sizeof(Elf64_Phdr), eh.e_phoff) < 0) {
        snprintf(err, errlen, "kernel %s: %s", path, errno ? strerror(errno) : "truncated");
        goto out;
    }

    /* Validate everything before touching guest RAM. */
    int nload = 0, entry_ok = 0;
    for (int i = 0; i < eh.e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD)
            continue;
        if (check_phdr(mem, &ph[i], i, fsize, path, err, errlen) < 0)
            goto out;
        for (int j = 0; j < i; j++) {
            if (ph[j].p_type != PT_LOAD || ph[j].p_memsz == 0 || ph[i].p_memsz == 0)
                continue;
            if (ph[i].p_paddr < ph[j].p_paddr + ph[j].p_memsz &&
                ph[j].p_paddr < ph[i].p_paddr + ph[i].p_memsz) {
                snprintf(err, errlen, "kernel %s: segments %d and %d overlap", path, j, i);
                goto out;
            }
        }
        if (ph[i].p_memsz > 0)
            nload++;
        if ((ph[i].p_flags & PF_X) && eh.e_entry >= ph[i].p_vaddr &&
            eh.e_entry - ph[i].p_vaddr < ph[i].p_memsz)
            entry_ok = 1;
    }
    if (nload == 0) {
        snprintf(err, errlen, "kernel %s: no loadable segments", path);
        goto out;
    }
    if (!entry_ok) {
        snprintf(err, errlen, "kernel %s: entry point 0x%llx is not inside an executable segment", path,
                 (unsigned long long)eh.e_entry);
        goto out;
    }

    for (int i = 0; i < eh.e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD || ph[i].p_memsz == 0)
            continue;
        uint8_t *dst = gmem_ptr(mem, ph[i].p_paddr, ph[i].p_memsz);
        if (read_at(fd, dst, (size_t)ph[i].p_filesz, ph[i].p_offset) < 0) {
            snprintf(err, errlen, "kernel %s: segment %d: %s", path, i,
                     errno ? strerror(errno) : "truncated");
            goto out;
        }
        memset(dst + ph[i].p_filesz, 0, (size_t)(ph[i].p_memsz - ph[i].p_filesz));
    }

    memset(info, 0, sizeof(*info));
    info->magic = FERRY_GUEST_INFO_MAGIC;
    info->ram_size = mem->ram_size;
    info->ram_below_4g = gmem_low_size(mem);
    info->tsc_khz = in->tsc_khz;
    info->ncpus = in->ncpus > 0 ? (uint64_t)in->ncpus : 1;
    memcpy(info->cmdline, cmdline, cmdlen + 1);

    memset(out, 0, sizeof(*out));
    out->mode = BOOT_MICROGUEST;
    out->rip = eh.e_entry;
    out->rdi = FERRY_GUEST_INFO_ADDR;
    rc = 0;
out:
    close(fd);
    return rc;
}
