#!/usr/bin/env python3
"""Write a fake Linux bzImage for the functional tests.

The setup header follows Documentation/arch/x86/boot.rst; the protected-mode
part is `payload` bytes whose 64-bit entry point (offset 0x200) holds a tiny
program (--probe) that checks what the boot protocol handed it and reports
through the Ferry test device:

    status = (cmdline[0] - '0') + (ramdisk_size ? initrd[0] : 0)
    status = 99 if boot_params.e820_entries == 0

so `--append 7` with an initrd starting with byte 5 exits 12.
"""
import argparse
import struct
import sys

# mov 0x228(%rsi),%eax; movzbl (%rax),%ecx; sub $0x30,%ecx; mov 0x218(%rsi),%eax;
# mov 0x21c(%rsi),%edx; test %edx,%edx; je 1f; movzbl (%rax),%eax; add %eax,%ecx;
# 1: movzbl 0x1e8(%rsi),%eax; test %eax,%eax; jne 2f; mov $99,%ecx;
# 2: mov $0xfe000000,%edx; mov %rcx,(%rdx); 3: hlt; jmp 3b
PROBE = bytes.fromhex(
    "8b86280200000fb60883e9308b86180200008b961c02000085d274050fb60001c1"
    "0fb686e801000085c07505b963000000ba000000fe48890af4ebfd")


def num(s):
    return int(s, 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--version", type=num, default=0x020f, help="boot protocol (0x020f = 2.15)")
    ap.add_argument("--setup-sects", type=num, default=4)
    ap.add_argument("--loadflags", type=num, default=0x01, help="LOADED_HIGH")
    ap.add_argument("--xloadflags", type=num, default=0x03, help="XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G")
    ap.add_argument("--init-size", type=num, default=1 << 20)
    ap.add_argument("--pref-address", type=num, default=0x1000000)
    ap.add_argument("--payload", type=num, default=4096, help="protected-mode kernel bytes")
    ap.add_argument("--syssize", type=num, default=None, help="default: payload / 16")
    ap.add_argument("--truncate", type=num, default=None, help="cut the file to this many bytes")
    ap.add_argument("--probe", action="store_true", help="put the probe program at the 64-bit entry")
    a = ap.parse_args()

    setup = bytearray((a.setup_sects + 1) * 512)
    hdr_end = 0x268                      # through init_size (0x260) and handover_offset
    setup[0x1f1] = a.setup_sects
    struct.pack_into("<I", setup, 0x1f4, a.payload // 16 if a.syssize is None else a.syssize)
    struct.pack_into("<H", setup, 0x1fe, 0xAA55)
    setup[0x200] = 0xEB                  # jmp short over the header
    setup[0x201] = hdr_end - 0x202
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, a.version)
    setup[0x211] = a.loadflags
    struct.pack_into("<I", setup, 0x22c, 0x7fffffff)         # initrd_addr_max
    struct.pack_into("<I", setup, 0x230, 0x200000)           # kernel_alignment
    setup[0x234] = 1                                         # relocatable_kernel
    struct.pack_into("<H", setup, 0x236, a.xloadflags)
    struct.pack_into("<I", setup, 0x238, 2047)               # cmdline_size
    struct.pack_into("<Q", setup, 0x258, a.pref_address)
    struct.pack_into("<I", setup, 0x260, a.init_size)

    payload = bytearray(a.payload)
    if a.probe:
        if a.payload < 0x200 + len(PROBE):
            sys.exit("mkbzimage: --payload too small for --probe")
        payload[0x200:0x200 + len(PROBE)] = PROBE
    data = bytes(setup + payload)
    if a.truncate is not None:
        data = data[:a.truncate]
    with open(a.out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
