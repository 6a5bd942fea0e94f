// x86-64 register names for the fetch language, SDT operands and DWARF
// locations, mapped onto the kernel's struct user_regs_struct (what
// PTRACE_GETREGS fills and what the agent's trampoline saves in the same
// layout).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

struct user_regs_struct;

namespace uprobe::arch {

struct RegisterRef {
    uint16_t slot = 0;  // index into user_regs_struct viewed as uint64_t[]
    uint8_t size = 8;   // bytes: 1, 2, 4 or 8
    uint8_t shift = 0;  // 8 for ah/bh/ch/dh

    friend bool operator==(const RegisterRef&, const RegisterRef&) = default;
};

// rax eax ax al ah, rdi edi di dil, r8..r15 with d/w/b (or l) suffixes,
// rip/eip/ip, rsp, rbp, rflags/eflags/flags, fs_base/gs_base, orig_rax;
// case-insensitive, with or without a leading '%' (AT&T, as in SDT notes).
std::optional<RegisterRef> register_by_name(std::string_view name);

// System V AMD64 integer arguments: 1->rdi 2->rsi 3->rdx 4->rcx 5->r8 6->r9;
// nullopt beyond 6 (those are on the stack).
std::optional<RegisterRef> argument_register(unsigned n);

// DWARF x86-64 numbering (System V ABI, figure 3.36): 0 rax, 1 rdx, 2 rcx,
// 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 return address (rip).
std::optional<RegisterRef> register_by_dwarf(unsigned dwarf_regno);

RegisterRef return_register();  // rax
RegisterRef stack_pointer();
RegisterRef instruction_pointer();

// The zero-extended value of the (sub-)register. `ref` must come from this
// header's functions.
uint64_t read_register(const struct user_regs_struct& regs, RegisterRef ref);

}  // namespace uprobe::arch
