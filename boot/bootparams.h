/* The Linux x86 boot protocol as the bzImage loader sees it: the setup
 * header, the boot_params "zero page" and its e820 memory map, and where
 * ferry-vmm puts them in guest RAM (Documentation/arch/x86/boot.rst and
 * zero-page.rst). Layouts are spelled out here (not taken from kernel
 * headers) and pinned by static assertions. */
#ifndef FERRY_BOOT_BOOTPARAMS_H
#define FERRY_BOOT_BOOTPARAMS_H

#include <stddef.h>
#include <stdint.h>
#include "vmm/memory.h"

/* Guest-physical layout of a Linux boot (all below 1 MiB except the kernel
 * and the initrd). boot/x86.h owns 0x500 (GDT), 0x1000 (TSS) and
 * 0x9000..0x1b000 (page tables); acpi.h owns 0xe0000-0xe1fff. */
#define BP_ZERO_PAGE_ADDR   0x7000ull     /* struct boot_params, 4 KiB (rsi at entry) */
#define BP_CMDLINE_ADDR     0x20000ull    /* NUL-terminated kernel command line */
#define BP_CMDLINE_AREA     0x10000ull    /* bytes reserved for it, NUL included */
#define BP_EBDA_START       0x9fc00ull    /* e820: RAM below, reserved from here... */
#define BP_BIOS_END         0x100000ull   /* ...up to 1 MiB (EBDA, VGA hole, BIOS, ACPI tables) */
#define BP_KERNEL_MIN_ADDR  0x100000ull   /* lowest load address ever used */

/* Setup header (boot.rst), at offset 0x1f1 of the bzImage and of boot_params. */
#define BP_HDR_OFFSET       0x1f1
#define BP_BOOT_FLAG        0xaa55        /* at 0x1fe */
#define BP_HDRS_MAGIC       0x53726448u   /* "HdrS" at 0x202 */
#define BP_MIN_VERSION      0x0206        /* cmdline_size; 64-bit entry needs 2.12 (xloadflags) */
#define BP_XLOADFLAGS_VERSION 0x020c

/* loadflags */
#define LOADED_HIGH         0x01
#define KASLR_FLAG          0x02
#define QUIET_FLAG          0x20
#define KEEP_SEGMENTS       0x40
#define CAN_USE_HEAP        0x80
/* xloadflags */
#define XLF_KERNEL_64                   0x01
#define XLF_CAN_BE_LOADED_ABOVE_4G      0x02
#define XLF_EFI_HANDOVER_32             0x04
#define XLF_EFI_HANDOVER_64             0x08
#define XLF_EFI_KEXEC                   0x10

#define BP_LOADER_UNDEFINED 0xff          /* type_of_loader: "no assigned id" */
#define BP_STARTUP64_OFFSET 0x200         /* 64-bit entry: load address + 0x200 */

struct setup_header {
    uint8_t  setup_sects;          /* 0x1f1 */
    uint16_t root_flags;           /* 0x1f2 */
    uint32_t syssize;              /* 0x1f4: protected-mode code in 16-byte units */
    uint16_t ram_size;             /* 0x1f8 */
    uint16_t vid_mode;             /* 0x1fa */
    uint16_t root_dev;             /* 0x1fc */
    uint16_t boot_flag;            /* 0x1fe: 0xaa55 */
    uint16_t jump;                 /* 0x200: jmp short; high byte = header length - 0x202 + 0x200 */
    uint32_t header;               /* 0x202: "HdrS" */
    uint16_t version;              /* 0x206 */
    uint32_t realmode_swtch;       /* 0x208 */
    uint16_t start_sys_seg;        /* 0x20c */
    uint16_t kernel_version;       /* 0x20e */
    uint8_t  type_of_loader;       /* 0x210 */
    uint8_t  loadflags;            /* 0x211 */
    uint16_t setup_move_size;      /* 0x212 */
    uint32_t code32_start;         /* 0x214 */
    uint32_t ramdisk_image;        /* 0x218 */
    uint32_t ramdisk_size;         /* 0x21c */
    uint32_t bootsect_kludge;      /* 0x220 */
    uint16_t heap_end_ptr;         /* 0x224 */
    uint8_t  ext_loader_ver;       /* 0x226 */
    uint8_t  ext_loader_type;      /* 0x227 */
    uint32_t cmd_line_ptr;         /* 0x228 */
    uint32_t initrd_addr_max;      /* 0x22c: highest byte the initrd may occupy */
    uint32_t kernel_alignment;     /* 0x230 */
    uint8_t  relocatable_kernel;   /* 0x234 */
    uint8_t  min_alignment;        /* 0x235 */
    uint16_t xloadflags;           /* 0x236 */
    uint32_t cmdline_size;         /* 0x238: max command line length, NUL excluded */
    uint32_t hardware_subarch;     /* 0x23c */
    uint64_t hardware_subarch_data;/* 0x240 */
    uint32_t payload_offset;       /* 0x248 */
    uint32_t payload_length;       /* 0x24c */
    uint64_t setup_data;           /* 0x250 */
    uint64_t pref_address;         /* 0x258 */
    uint32_t init_size;            /* 0x260: linear memory the kernel needs from its load address */
    uint32_t handover_offset;      /* 0x264 */
    uint32_t kernel_info_offset;   /* 0x268 */
} __attribute__((packed));

#define E820_RAM       1
#define E820_RESERVED  2
#define E820_MAX_ZEROPAGE 128

struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} __attribute__((packed));

struct boot_params {
    uint8_t  screen_info[0x40];        /* 0x000 */
    uint8_t  apm_bios_info[0x14];      /* 0x040 */
    uint8_t  _pad2[4];                 /* 0x054 */
    uint64_t tboot_addr;               /* 0x058 */
    uint8_t  ist_info[0x10];           /* 0x060 */
    uint64_t acpi_rsdp_addr;           /* 0x070 */
    uint8_t  _pad3[8];                 /* 0x078 */
    uint8_t  hd0_info[16];             /* 0x080 */
    uint8_t  hd1_info[16];             /* 0x090 */
    uint8_t  sys_desc_table[0x10];     /* 0x0a0 */
    uint8_t  olpc_ofw_header[0x10];    /* 0x0b0 */
    uint32_t ext_ramdisk_image;        /* 0x0c0: bits 63:32 of the initrd address */
    uint32_t ext_ramdisk_size;         /* 0x0c4 */
    uint32_t ext_cmd_line_ptr;         /* 0x0c8 */
    uint8_t  _pad4[112];               /* 0x0cc */
    uint32_t cc_blob_address;          /* 0x13c */
    uint8_t  edid_info[0x80];          /* 0x140 */
    uint8_t  efi_info[0x20];           /* 0x1c0 */
    uint32_t alt_mem_k;                /* 0x1e0 */
    uint32_t scratch;                  /* 0x1e4 */
    uint8_t  e820_entries;             /* 0x1e8 */
    uint8_t  eddbuf_entries;           /* 0x1e9 */
    uint8_t  edd_mbr_sig_buf_entries;  /* 0x1ea */
    uint8_t  kbd_status;               /* 0x1eb */
    uint8_t  secure_boot;              /* 0x1ec */
    uint8_t  _pad5[2];                 /* 0x1ed */
    uint8_t  sentinel;                 /* 0x1ef: must stay 0 (else the kernel scrubs fields) */
    uint8_t  _pad6[1];                 /* 0x1f0 */
    struct setup_header hdr;           /* 0x1f1 */
    uint8_t  _pad7[0x290 - 0x1f1 - sizeof(struct setup_header)];
    uint32_t edd_mbr_sig_buffer[16];   /* 0x290 */
    struct e820_entry e820_table[E820_MAX_ZEROPAGE]; /* 0x2d0 */
    uint8_t  _pad8[48];                /* 0xcd0 */
    uint8_t  eddbuf[6 * 82];           /* 0xd00 */
    uint8_t  _pad9[276];               /* 0xeec */
} __attribute__((packed));

_Static_assert(sizeof(struct setup_header) == 0x26c - 0x1f1, "setup_header layout");
_Static_assert(offsetof(struct boot_params, ext_ramdisk_image) == 0x0c0, "boot_params layout");
_Static_assert(offsetof(struct boot_params, e820_entries) == 0x1e8, "boot_params layout");
_Static_assert(offsetof(struct boot_params, hdr) == 0x1f1, "boot_params layout");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "boot_params layout");
_Static_assert(offsetof(struct boot_params, eddbuf) == 0xd00, "boot_params layout");
_Static_assert(sizeof(struct boot_params) == 4096, "boot_params is one page");

/* Bytes of setup header a bzImage declares: from 0x1f1 to 0x202 plus the
 * jump offset at 0x201, capped at the header area of boot_params (0x290). */
size_t bp_setup_header_len(const uint8_t *image_head);

/* The e820 map for guest RAM m: [0, 0x9fc00) RAM, [0x9fc00, 1 MiB) reserved,
 * [1 MiB, end of region 0) RAM, then each further region as RAM. Sorted,
 * non-overlapping. Returns the number of entries, or -1 when they do not
 * fit in max or region 0 does not start at 0 and cover 1 MiB. */
int e820_build(const struct guest_mem *m, struct e820_entry *out, int max);

/* What the loader decided; everything bootparams_build needs. */
struct bp_config {
    const uint8_t *hdr;        /* setup header bytes from the image (at its 0x1f1) */
    size_t hdr_len;            /* bp_setup_header_len() */
    uint64_t cmdline_gpa;      /* 0: no command line */
    uint64_t initrd_gpa;       /* ignored when initrd_size is 0 */
    uint64_t initrd_size;
};

/* Fill bp (a zero page) for guest RAM m: zeroed, setup header copied, loader
 * fields set, e820 from e820_build. 0, or -1 with a one-line reason. */
int bootparams_build(struct boot_params *bp, const struct guest_mem *m, const struct bp_config *c,
                     char *err, size_t errlen);

#endif
