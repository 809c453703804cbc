/* A function without unwind information, as OpenBLAS's and MKL's kernels are: no
 * .cfi directives (so no .eh_frame entry), no frame pointer kept, and a 20 KB buffer
 * on the stack, its pointer aligned down to a page (OpenBLAS's Haswell dgemm keeps
 * ~28 KB there). The buffer is never written: it lies over whatever frames earlier
 * calls left there. spin_no_cfi(n) counts n down. */
    .text
    .globl  spin_no_cfi
    .type   spin_no_cfi, @function
spin_no_cfi:
    push    %rbp
    push    %rbx
    mov     %rsp, %rbp
    sub     $20480, %rsp
    and     $-4096, %rsp
    mov     %rdi, %rcx
1:  mov     %rcx, (%rsp)
    dec     %rcx
    jnz     1b
    mov     %rbp, %rsp
    pop     %rbx
    pop     %rbp
    ret
    .size   spin_no_cfi, .-spin_no_cfi
    .section .note.GNU-stack,"",@progbits
