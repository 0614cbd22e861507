/* The Linux boot_params "zero page" and the e820 memory map it carries. */
#include <stdio.h>
#include <string.h>

#include "boot/bootparams.h"

size_t bp_setup_header_len(const uint8_t *image_head)
{
    size_t end = 0x202 + (size_t)image_head[0x201];
    if (end > 0x290)
        end = 0x290;
    return end - BP_HDR_OFFSET;
}

static int e820_add(struct e820_entry *out, int *n, int max, uint64_t addr, uint64_t size, uint32_t type)
{
    if (size == 0)
        return 0;
    if (*n >= max)
        return -1;
    out[*n] = (struct e820_entry){ .addr = addr, .size = size, .type = type };
    (*n)++;
    return 0;
}

int e820_build(const struct guest_mem *m, struct e820_entry *out, int max)
{
    if (m->nregions < 1 || m->regions[0].gpa != 0 || m->regions[0].size < BP_BIOS_END)
        return -1;
    int n = 0;
    uint64_t low_top = m->regions[0].size;
    if (e820_add(out, &n, max, 0, BP_EBDA_START, E820_RAM) < 0 ||
        e820_add(out, &n, max, BP_EBDA_START, BP_BIOS_END - BP_EBDA_START, E820_RESERVED) < 0 ||
        e820_add(out, &n, max, BP_BIOS_END, low_top - BP_BIOS_END, E820_RAM) < 0)
        return -1;
    uint64_t prev_end = low_top;
    for (int i = 1; i < m->nregions; i++) {
        const struct gmem_region *r = &m->regions[i];
        if (r->gpa < prev_end || r->gpa + r->size < r->gpa)
            return -1;    /* regions must be sorted and disjoint */
        if (e820_add(out, &n, max, r->gpa, r->size, E820_RAM) < 0)
            return -1;
        prev_end = r->gpa + r->size;
    }
    return n;
}

int bootparams_build(struct boot_params *bp, const struct guest_mem *m, const struct bp_config *c,
                     char *err, size_t errlen)
{
    /* At least through cmdline_size (protocol 2.06), at most up to 0x290. */
    if (c->hdr_len < offsetof(struct setup_header, cmdline_size) + 4 ||
        c->hdr_len > 0x290 - BP_HDR_OFFSET) {
        snprintf(err, errlen, "boot_params: setup header of %zu bytes", c->hdr_len);
        return -1;
    }
    memset(bp, 0, sizeof(*bp));
    /* The header may be longer than struct setup_header (newer kernels);
     * those extra bytes go to the same offsets they have in the image. */
    memcpy((uint8_t *)bp + BP_HDR_OFFSET, c->hdr, c->hdr_len);

    int n = e820_build(m, bp->e820_table, E820_MAX_ZEROPAGE);
    if (n < 0) {
        snprintf(err, errlen, "boot_params: guest RAM layout has no valid e820 map");
        return -1;
    }
    bp->e820_entries = (uint8_t)n;

    struct setup_header *h = &bp->hdr;
    h->type_of_loader = BP_LOADER_UNDEFINED;
    /* CAN_USE_HEAP + heap_end_ptr only matter to the real-mode setup code,
     * which the 64-bit entry skips; set them as a conforming loader would.
     * KEEP_SEGMENTS is obsolete (and only ever concerned the 32-bit entry). */
    h->loadflags = (uint8_t)((h->loadflags | CAN_USE_HEAP) & ~KEEP_SEGMENTS);
    h->heap_end_ptr = 0xfe00 - 0x200;
    h->ext_loader_ver = h->ext_loader_type = 0;
    /* Loader-owned fields a stray image byte must not smuggle in. */
    h->hardware_subarch = 0;          /* a normal PC */
    h->hardware_subarch_data = 0;
    h->setup_data = 0;                /* no setup_data chain */
    h->cmd_line_ptr = (uint32_t)c->cmdline_gpa;
    bp->ext_cmd_line_ptr = (uint32_t)(c->cmdline_gpa >> 32);
    if (c->initrd_size) {
        h->ramdisk_image = (uint32_t)c->initrd_gpa;
        h->ramdisk_size = (uint32_t)c->initrd_size;
        bp->ext_ramdisk_image = (uint32_t)(c->initrd_gpa >> 32);
        bp->ext_ramdisk_size = (uint32_t)(c->initrd_size >> 32);
    } else {
        h->ramdisk_image = h->ramdisk_size = 0;
    }
    return 0;
}
