// parse_sdt_arg: the operand forms sys/sdt.h's assembler templates produce
// (AT&T syntax, see the GNU as manual's "i386-Memory"), and the ones we
// refuse.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "elf/sdt.hpp"

namespace uprobe::elf {
namespace {

using Kind = SdtOperand::Kind;
using ::testing::HasSubstr;

struct RegisterCase {
    const char* text;
    uint8_t size;
    bool is_signed;
    const char* reg;
};

TEST(SdtArg, Registers) {
    const RegisterCase cases[] = {
        {"-4@%edi", 4, true, "edi"}, {"8@%rax", 8, false, "rax"}, {"-8@%r12", 8, true, "r12"},
        {"1@%dil", 1, false, "dil"}, {"-2@%r9w", 2, true, "r9w"}, {"1@%ah", 1, false, "ah"},
        {"4@%r15d", 4, false, "r15d"}, {"%rbx", 8, false, "rbx"},  // no N@: 8 bytes unsigned
    };
    for (const auto& c : cases) {
        auto arg = parse_sdt_arg(c.text);
        ASSERT_TRUE(arg.ok()) << c.text << ": " << arg.error().message();
        EXPECT_EQ(arg->size, c.size) << c.text;
        EXPECT_EQ(arg->is_signed, c.is_signed) << c.text;
        EXPECT_FALSE(arg->is_float) << c.text;
        EXPECT_EQ(arg->operand.kind, Kind::Register) << c.text;
        EXPECT_EQ(arg->operand.reg, c.reg) << c.text;
        EXPECT_EQ(arg->text, c.text);
    }
}

TEST(SdtArg, Immediates) {
    auto five = parse_sdt_arg("4@$5");
    ASSERT_TRUE(five.ok());
    EXPECT_EQ(five->operand.kind, Kind::Immediate);
    EXPECT_EQ(five->operand.imm, 5);
    EXPECT_EQ(five->size, 4);

    auto negative = parse_sdt_arg("-4@$-1");
    ASSERT_TRUE(negative.ok());
    EXPECT_EQ(negative->operand.imm, -1);
    EXPECT_TRUE(negative->is_signed);

    auto hex = parse_sdt_arg("8@$0x10");
    ASSERT_TRUE(hex.ok());
    EXPECT_EQ(hex->operand.imm, 16);
}

TEST(SdtArg, MemoryForms) {
    auto frame = parse_sdt_arg("8@-16(%rbp)");
    ASSERT_TRUE(frame.ok());
    EXPECT_EQ(frame->operand.kind, Kind::Memory);
    EXPECT_EQ(frame->operand.reg, "rbp");
    EXPECT_EQ(frame->operand.disp, -16);
    EXPECT_EQ(frame->operand.index, "");

    auto stack = parse_sdt_arg("-4@112(%rsp)");
    ASSERT_TRUE(stack.ok());
    EXPECT_EQ(stack->operand.reg, "rsp");
    EXPECT_EQ(stack->operand.disp, 112);
    EXPECT_TRUE(stack->is_signed);

    auto indexed = parse_sdt_arg("8@(%rax,%rdx,8)");
    ASSERT_TRUE(indexed.ok());
    EXPECT_EQ(indexed->operand.reg, "rax");
    EXPECT_EQ(indexed->operand.index, "rdx");
    EXPECT_EQ(indexed->operand.scale, 8);
    EXPECT_EQ(indexed->operand.disp, 0);

    auto index_only = parse_sdt_arg("4@0x20(,%rcx,4)");
    ASSERT_TRUE(index_only.ok());
    EXPECT_EQ(index_only->operand.reg, "");
    EXPECT_EQ(index_only->operand.index, "rcx");
    EXPECT_EQ(index_only->operand.scale, 4);
    EXPECT_EQ(index_only->operand.disp, 0x20);

    auto symbol = parse_sdt_arg("-8@foo+8(%rip)");
    ASSERT_TRUE(symbol.ok());
    EXPECT_EQ(symbol->operand.kind, Kind::Memory);
    EXPECT_EQ(symbol->operand.reg, "rip");
    EXPECT_EQ(symbol->operand.symbol, "foo");
    EXPECT_EQ(symbol->operand.disp, 8);
    EXPECT_TRUE(symbol->is_signed);

    auto plain_symbol = parse_sdt_arg("-8@elf_test_counter(%rip)");
    ASSERT_TRUE(plain_symbol.ok());
    EXPECT_EQ(plain_symbol->operand.symbol, "elf_test_counter");
    EXPECT_EQ(plain_symbol->operand.disp, 0);

    auto absolute = parse_sdt_arg("4@counter-4");
    ASSERT_TRUE(absolute.ok());
    EXPECT_EQ(absolute->operand.kind, Kind::Memory);
    EXPECT_EQ(absolute->operand.reg, "");
    EXPECT_EQ(absolute->operand.symbol, "counter");
    EXPECT_EQ(absolute->operand.disp, -4);

    auto address = parse_sdt_arg("8@0x601040");
    ASSERT_TRUE(address.ok());
    EXPECT_EQ(address->operand.kind, Kind::Memory);
    EXPECT_EQ(address->operand.disp, 0x601040);
}

TEST(SdtArg, FloatingPoint) {
    auto arg = parse_sdt_arg("8f@%xmm1");
    ASSERT_TRUE(arg.ok()) << arg.error().message();
    EXPECT_TRUE(arg->is_float);
    EXPECT_EQ(arg->size, 8);
    EXPECT_EQ(arg->operand.reg, "xmm1");
}

TEST(SdtArg, RefusesUnknownForms) {
    const std::pair<const char*, const char*> cases[] = {
        {"8@%st0", "unsupported register %st0"},
        {"8@%foo", "unsupported register %foo"},
        {"3@%eax", "size must be 1, 2, 4 or 8"},
        {"16@%eax", "size must be 1, 2, 4 or 8"},
        {"8@", "missing operand"},
        {"", "empty argument"},
        {"8@%fs:0x28", "segment-relative"},
        {"8@(%rax", "expected ')'"},
        {"8@(%rax,%rdx,3)", "scale must be 1, 2, 4 or 8"},
        {"8@$sym", "immediate must be a number"},
        {"8@%rip", "instruction pointer"},
        {"8@(%rax,%rsp)", "cannot be an index register"},
        {"8@%eax junk", "unexpected text"},
        {"8@()", "memory operand without a register"},
    };
    for (const auto& [text, why] : cases) {
        auto arg = parse_sdt_arg(text);
        ASSERT_FALSE(arg.ok()) << text;
        EXPECT_THAT(arg.error().message(), HasSubstr(why)) << text;
        EXPECT_EQ(arg.error().message().find('\n'), std::string::npos);
    }
}

TEST(SdtArgs, SplitsOnSpaces) {
    auto args = parse_sdt_args("8@%r14 8@%rax -4@%ebp");
    ASSERT_TRUE(args.ok());
    ASSERT_EQ(args->size(), 3u);
    EXPECT_EQ((*args)[0].operand.reg, "r14");
    EXPECT_EQ((*args)[2].operand.reg, "ebp");
    EXPECT_EQ((*args)[2].size, 4);

    auto none = parse_sdt_args("");
    ASSERT_TRUE(none.ok());
    EXPECT_TRUE(none->empty());

    auto bad = parse_sdt_args("8@%rax 8@%st0");
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(bad.error().message(), HasSubstr("%st0"));
}

}  // namespace
}  // namespace uprobe::elf
