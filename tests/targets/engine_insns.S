# Functions whose probed instruction is each a hard case for out-of-line
# execution. Labels *_site mark probed instructions inside a function; the
# test finds their offsets with nm.
        .text
        .data
        .balign 8
        .globl insn_value
insn_value:
        .quad 0x1122334455667788
        .text

#define FUNC(name) .globl name; .type name,@function; name:
#define END(name) .size name, .-name

FUNC(riprel_load)
        movq insn_value(%rip), %rax
        ret
END(riprel_load)

FUNC(riprel_store)
        movq %rdi, insn_value(%rip)
        ret
END(riprel_store)

FUNC(helper41)
        movl $41, %eax
        ret
END(helper41)

FUNC(call_rel)
        call helper41
        addq $1, %rax
        ret
END(call_rel)

FUNC(jmp_rel)
        jmp 1f
        movl $0, %eax
        ret
1:      movl $5, %eax
        ret
END(jmp_rel)

FUNC(jcc_fn)
        testq %rdi, %rdi
        .globl jcc_fn_site
jcc_fn_site:
        jz 1f
        movl $1, %eax
        ret
        .globl jcc_fn_target
jcc_fn_target:
1:      movl $2, %eax
        ret
END(jcc_fn)

FUNC(loop_fn)
        movq %rdi, %rcx
        xorl %eax, %eax
1:      addq $1, %rax
        .globl loop_fn_site
loop_fn_site:
        loop 1b
        ret
END(loop_fn)

FUNC(ret_fn)
        ret
END(ret_fn)

FUNC(push_rip)
        pushq insn_value(%rip)
        popq %rax
        ret
END(push_rip)

FUNC(rep_movsb_fn)
        movq %rdx, %rcx
        .globl rep_movsb_site
rep_movsb_site:
        rep movsb
        ret
END(rep_movsb_fn)

FUNC(syscall_getpid)
        movl $39, %eax
        .globl syscall_site
syscall_site:
        syscall
        ret
END(syscall_getpid)

FUNC(cpuid_fn)
        pushq %rbx
        xorl %eax, %eax
        .globl cpuid_site
cpuid_site:
        cpuid
        movl %ebx, %eax
        popq %rbx
        ret
END(cpuid_fn)

# Loads rflags from %rdi and returns what the instruction after the site
# sees: the arithmetic flags and DF must pass through a probe unchanged.
FUNC(flags_roundtrip)
        pushq %rdi
        popfq
        .globl flags_site
flags_site:
        pushfq
        popq %rax
        andq $0xcd5, %rax
        cld
        ret
END(flags_roundtrip)

# Never called: no instruction of a probe may run out of line in its place.
FUNC(trap_fn)
        ud2
END(trap_fn)

        .section .note.GNU-stack,"",@progbits
