// Register names against the kernel's struct user_regs_struct layout
// (sys/user.h), the System V calling convention and DWARF numbering
// (System V AMD64 ABI, figure 3.36).
#include <gtest/gtest.h>
#include <sys/user.h>

#include <cstddef>

#include "arch/x86_64/registers.hpp"

namespace {

using uprobe::arch::RegisterRef;

constexpr uint16_t slot(size_t offset) { return static_cast<uint16_t>(offset / 8); }
#define SLOT(field) slot(offsetof(struct user_regs_struct, field))

TEST(Registers, NamesOfEverySize) {
    using uprobe::arch::register_by_name;
    EXPECT_EQ(register_by_name("rax"), (RegisterRef{SLOT(rax), 8, 0}));
    EXPECT_EQ(register_by_name("eax"), (RegisterRef{SLOT(rax), 4, 0}));
    EXPECT_EQ(register_by_name("ax"), (RegisterRef{SLOT(rax), 2, 0}));
    EXPECT_EQ(register_by_name("al"), (RegisterRef{SLOT(rax), 1, 0}));
    EXPECT_EQ(register_by_name("ah"), (RegisterRef{SLOT(rax), 1, 8}));
    EXPECT_EQ(register_by_name("%dil"), (RegisterRef{SLOT(rdi), 1, 0}));
    EXPECT_EQ(register_by_name("%edi"), (RegisterRef{SLOT(rdi), 4, 0}));
    EXPECT_EQ(register_by_name("di"), (RegisterRef{SLOT(rdi), 2, 0}));
    EXPECT_EQ(register_by_name("r8"), (RegisterRef{SLOT(r8), 8, 0}));
    EXPECT_EQ(register_by_name("r10d"), (RegisterRef{SLOT(r10), 4, 0}));
    EXPECT_EQ(register_by_name("r15w"), (RegisterRef{SLOT(r15), 2, 0}));
    EXPECT_EQ(register_by_name("r12b"), (RegisterRef{SLOT(r12), 1, 0}));
    EXPECT_EQ(register_by_name("r12l"), (RegisterRef{SLOT(r12), 1, 0}));
    EXPECT_EQ(register_by_name("%RSP"), (RegisterRef{SLOT(rsp), 8, 0}));
    EXPECT_EQ(register_by_name("rbp"), (RegisterRef{SLOT(rbp), 8, 0}));
    EXPECT_EQ(register_by_name("rip"), (RegisterRef{SLOT(rip), 8, 0}));
    EXPECT_EQ(register_by_name("eip"), (RegisterRef{SLOT(rip), 4, 0}));
    EXPECT_EQ(register_by_name("ip"), (RegisterRef{SLOT(rip), 2, 0}));
    EXPECT_EQ(register_by_name("eflags")->slot, SLOT(eflags));
    EXPECT_EQ(register_by_name("flags")->slot, SLOT(eflags));
    EXPECT_EQ(register_by_name("fs_base"), (RegisterRef{SLOT(fs_base), 8, 0}));
    EXPECT_EQ(register_by_name("gs_base"), (RegisterRef{SLOT(gs_base), 8, 0}));
    for (const char* bad : {"", "%", "r16", "r8x", "rax ", "eaxx", "xmm0", "fs", "r1"})
        EXPECT_FALSE(register_by_name(bad).has_value()) << bad;
}

TEST(Registers, SystemVArguments) {
    using uprobe::arch::argument_register;
    const uint16_t expected[] = {SLOT(rdi), SLOT(rsi), SLOT(rdx), SLOT(rcx), SLOT(r8), SLOT(r9)};
    for (unsigned n = 1; n <= 6; ++n) EXPECT_EQ(argument_register(n), (RegisterRef{expected[n - 1], 8, 0}));
    EXPECT_FALSE(argument_register(0).has_value());
    EXPECT_FALSE(argument_register(7).has_value());
}

TEST(Registers, DwarfNumbers) {
    using uprobe::arch::register_by_dwarf;
    const uint16_t expected[] = {SLOT(rax), SLOT(rdx), SLOT(rcx), SLOT(rbx), SLOT(rsi), SLOT(rdi),
                                 SLOT(rbp), SLOT(rsp), SLOT(r8),  SLOT(r9),  SLOT(r10), SLOT(r11),
                                 SLOT(r12), SLOT(r13), SLOT(r14), SLOT(r15), SLOT(rip)};
    for (unsigned n = 0; n <= 16; ++n) EXPECT_EQ(register_by_dwarf(n)->slot, expected[n]) << n;
    EXPECT_FALSE(register_by_dwarf(17).has_value());  // xmm0
}

TEST(Registers, FixedRoles) {
    EXPECT_EQ(uprobe::arch::return_register().slot, SLOT(rax));
    EXPECT_EQ(uprobe::arch::stack_pointer().slot, SLOT(rsp));
    EXPECT_EQ(uprobe::arch::instruction_pointer().slot, SLOT(rip));
}

TEST(Registers, ReadZeroExtendsSubRegisters) {
    struct user_regs_struct regs {};
    regs.rax = 0x1122334455667788;
    regs.r9 = 0xFFFFFFFFFFFFFF80;
    regs.rip = 0x7F0000401234;
    using uprobe::arch::read_register;
    using uprobe::arch::register_by_name;
    EXPECT_EQ(read_register(regs, *register_by_name("rax")), 0x1122334455667788u);
    EXPECT_EQ(read_register(regs, *register_by_name("eax")), 0x55667788u);
    EXPECT_EQ(read_register(regs, *register_by_name("ax")), 0x7788u);
    EXPECT_EQ(read_register(regs, *register_by_name("al")), 0x88u);
    EXPECT_EQ(read_register(regs, *register_by_name("ah")), 0x77u);
    EXPECT_EQ(read_register(regs, *register_by_name("r9b")), 0x80u);
    EXPECT_EQ(read_register(regs, *register_by_name("r9d")), 0xFFFFFF80u);
    EXPECT_EQ(read_register(regs, uprobe::arch::instruction_pointer()), 0x7F0000401234u);
    EXPECT_EQ(read_register(regs, RegisterRef{1000, 8, 0}), 0u);
}

}  // namespace
