# Probe sites whose first instruction decides how the kernel handles a
# uprobe there: it emulates `push %rbp` (cheap) but single-steps `lea`
# (expensive). Both compute a + b.
    .text
    .globl site_push
    .type site_push, @function
site_push:
    push %rbp
    mov %rsp, %rbp
    lea (%rdi,%rsi), %rax
    pop %rbp
    ret
    .size site_push, .-site_push

    .globl site_lea
    .type site_lea, @function
site_lea:
    lea (%rdi,%rsi), %rax
    ret
    .size site_lea, .-site_lea
    .section .note.GNU-stack,"",@progbits
