# A probe site shorter than a 5-byte jump: `mov %rdi, %rax; ret` (4 bytes).
# The kernel single-steps it; the inline engine falls back to int3.
    .text
    .globl site_short
    .type site_short, @function
site_short:
    mov %rdi, %rax
    ret
    .size site_short, .-site_short
    .section .note.GNU-stack,"",@progbits
