/* SPDX-License-Identifier: MIT
 * Micro-guest entry (include/ferry-guest-abi.h): rdi = GPA of struct
 * ferry_guest_info, rsi = vCPU index, rsp = 0, CPL3, identity-mapped.
 *
 * Each vCPU gets RT_STACK_SIZE bytes of stack from .stacks (not part of .bss,
 * so vCPU 0 zeroing .bss cannot clobber a stack another vCPU already uses).
 * vCPU 0 zeroes .bss and publishes rt_info; the others wait for it. */

#define RT_MAX_CPUS      64
#define RT_STACK_SHIFT   14          /* 16 KiB: keep in sync with rt.h */

    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    mov     %rdi, %r12              /* info */
    mov     %rsi, %r13              /* vCPU index */
    cmp     $RT_MAX_CPUS, %r13
    jae     .Lpark                  /* no stack for it: stay out of the way */

    lea     1(%r13), %rax
    shl     $RT_STACK_SHIFT, %rax
    lea     rt_stacks(%rip), %rsp
    add     %rax, %rsp              /* top of this vCPU's stack, 16-byte aligned */
    xor     %ebp, %ebp

    test    %r13, %r13
    jnz     .Lwait
    cld
    lea     __bss_start(%rip), %rdi
    lea     __bss_end(%rip), %rcx
    sub     %rdi, %rcx
    xor     %eax, %eax
    rep stosb
    mov     %r12, rt_info(%rip)
    movl    $1, rt_bss_ready(%rip)
    jmp     .Lgo
.Lwait:
    pause
    cmpl    $0, rt_bss_ready(%rip)
    je      .Lwait
.Lgo:
    mov     %r12, %rdi
    mov     %r13, %rsi
    call    rt_main                 /* does not return */
.Lpark:
    pause
    jmp     .Lpark
    .size _start, . - _start

    .section .data, "aw", @progbits
    .balign 4
rt_bss_ready:
    .long 0

    .section .stacks, "aw", @nobits
    .balign 4096
    .globl rt_stacks
rt_stacks:
    .space RT_MAX_CPUS << RT_STACK_SHIFT

    .section .note.GNU-stack, "", @progbits
