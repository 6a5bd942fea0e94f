// Jump-table recognition (arch/x86_64/jump_table.hpp) on hand-written
// machine code: each snippet is the shape gcc or clang emits for a switch,
// assembled with GNU as (intel syntax; the source line is beside each
// encoding) and placed at kStart.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "arch/x86_64/jump_table.hpp"

namespace uprobe::arch {
namespace {

constexpr uint64_t kStart = 0x1000;

Result<JumpTable> table_of(const std::vector<uint8_t>& code, uint64_t jump,
                           std::vector<uint64_t> targets = {}) {
    return find_jump_table(code, kStart, jump, targets);
}

void expect_refused(const Result<JumpTable>& table, const std::string& why) {
    ASSERT_FALSE(table.ok());
    EXPECT_NE(table.error().message().find(why), std::string::npos) << table.error().message();
}

// gcc -O2 -fpie, 64-bit index.
const std::vector<uint8_t> kGccPic = {
    0x48, 0x83, 0xff, 0x06,                    // 1000: cmp rdi, 6
    0x77, 0x3e,                                // 1004: ja 0x1044
    0x48, 0x8d, 0x15, 0x00, 0x10, 0x00, 0x00,  // 1006: lea rdx, [rip + 0x1000]  (0x200d)
    0x48, 0x63, 0x04, 0xba,                    // 100d: movsxd rax, dword [rdx + rdi*4]
    0x48, 0x01, 0xd0,                          // 1011: add rax, rdx
    0xff, 0xe0,                                // 1014: jmp rax
};

TEST(JumpTable, GccPicForm) {
    auto table = table_of(kGccPic, 0x1014, {0x1044});
    ASSERT_TRUE(table.ok()) << table.error().message();
    EXPECT_EQ(table->form, JumpTable::Form::Relative);
    EXPECT_EQ(table->table, 0x200du);
    EXPECT_EQ(table->entries, 7u);  // 0..6
    EXPECT_EQ(table->entry_size(), 4u);
}

TEST(JumpTable, ThirtyTwoBitIndexZeroExtended) {
    std::vector<uint8_t> code = {
        0x83, 0xff, 0x06,                          // 1000: cmp edi, 6
        0x77, 0x3e,                                // 1003: ja
        0x48, 0x8d, 0x15, 0x00, 0x10, 0x00, 0x00,  // 1005: lea rdx, [rip + 0x1000]  (0x200c)
        0x89, 0xff,                                // 100c: mov edi, edi
        0x48, 0x63, 0x04, 0xba,                    // 100e: movsxd rax, dword [rdx + rdi*4]
        0x48, 0x01, 0xd0,                          // 1012: add rax, rdx
        0x3e, 0xff, 0xe0,                          // 1015: notrack jmp rax
    };
    auto table = table_of(code, 0x1015);
    ASSERT_TRUE(table.ok()) << table.error().message();
    EXPECT_EQ(table->table, 0x200cu);
    EXPECT_EQ(table->entries, 7u);
    // Without the zero extension the upper half of rdi is unknown.
    std::vector<uint8_t> unextended = code;
    unextended[12] = 0x90;  // mov edi, edi -> nop; nop
    unextended[13] = 0x90;
    expect_refused(table_of(unextended, 0x1015), "does not prove it");
}

TEST(JumpTable, NonPicAbsoluteForm) {
    std::vector<uint8_t> code = {
        0x48, 0x83, 0xff, 0x06,                    // 1000: cmp rdi, 6
        0x77, 0x3e,                                // 1004: ja
        0xff, 0x24, 0xfd, 0x00, 0x30, 0x00, 0x00,  // 1006: jmp qword [rdi*8 + 0x3000]
    };
    auto table = table_of(code, 0x1006);
    ASSERT_TRUE(table.ok()) << table.error().message();
    EXPECT_EQ(table->form, JumpTable::Form::Absolute);
    EXPECT_EQ(table->table, 0x3000u);
    EXPECT_EQ(table->entries, 7u);
    EXPECT_EQ(table->entry_size(), 8u);
    // jae: the bound is exclusive.
    code[3] = 0x07;  // cmp rdi, 7
    code[4] = 0x73;  // jae
    table = table_of(code, 0x1006);
    ASSERT_TRUE(table.ok()) << table.error().message();
    EXPECT_EQ(table->entries, 7u);
}

TEST(JumpTable, ClangCopiesTheIndex) {
    std::vector<uint8_t> code = {
        0x83, 0xff, 0x06,                          // 1000: cmp edi, 6
        0x77, 0x3e,                                // 1003: ja
        0x89, 0xf8,                                // 1005: mov eax, edi
        0x48, 0x8d, 0x0d, 0x00, 0x10, 0x00, 0x00,  // 1007: lea rcx, [rip + 0x1000]  (0x200e)
        0x48, 0x63, 0x04, 0x81,                    // 100e: movsxd rax, dword [rcx + rax*4]
        0x48, 0x01, 0xc8,                          // 1012: add rax, rcx
        0xff, 0xe0,                                // 1015: jmp rax
    };
    auto table = table_of(code, 0x1015);
    ASSERT_TRUE(table.ok()) << table.error().message();
    EXPECT_EQ(table->table, 0x200eu);
    EXPECT_EQ(table->entries, 7u);
}

TEST(JumpTable, BranchToTheTableCode) {
    std::vector<uint8_t> code = {
        0x48, 0x83, 0xff, 0x06,                    // 1000: cmp rdi, 6
        0x76, 0x01,                                // 1004: jbe 0x1007
        0xc3,                                      // 1006: ret
        0x48, 0x8d, 0x15, 0x00, 0x10, 0x00, 0x00,  // 1007: lea rdx, [rip + 0x1000]  (0x200e)
        0x48, 0x63, 0x04, 0xba,                    // 100e: movsxd rax, dword [rdx + rdi*4]
        0x48, 0x01, 0xd0,                          // 1012: add rax, rdx
        0xff, 0xe0,                                // 1015: jmp rax
    };
    auto table = table_of(code, 0x1015, {0x1007});
    ASSERT_TRUE(table.ok()) << table.error().message();
    EXPECT_EQ(table->table, 0x200eu);
    EXPECT_EQ(table->entries, 7u);
    // A second branch to the table code comes without the bound.
    expect_refused(table_of(code, 0x1015, {0x1007, 0x1007}), "another branch jumps into");
}

TEST(JumpTable, IndexChangedAfterTheBoundIsRefused) {
    std::vector<uint8_t> code = {
        0x48, 0x83, 0xff, 0x06,                    // 1000: cmp rdi, 6
        0x77, 0x3e,                                // 1004: ja
        0x48, 0x83, 0xc7, 0x01,                    // 1006: add rdi, 1
        0x48, 0x8d, 0x15, 0x00, 0x10, 0x00, 0x00,  // 100a: lea rdx, [rip + 0x1000]
        0x48, 0x63, 0x04, 0xba,                    // 1011: movsxd rax, dword [rdx + rdi*4]
        0x48, 0x01, 0xd0,                          // 1015: add rax, rdx
        0xff, 0xe0,                                // 1018: jmp rax
    };
    expect_refused(table_of(code, 0x1018), "does not prove it");
}

TEST(JumpTable, BranchIntoThePathIsRefused) {
    // Some other jump lands on the movsxd: there rdi is not bounded.
    expect_refused(table_of(kGccPic, 0x1014, {0x100d}), "another branch jumps into");
}

TEST(JumpTable, NoBoundsCheckIsRefused) {
    std::vector<uint8_t> code = {
        0x48, 0x8d, 0x15, 0x00, 0x10, 0x00, 0x00,  // 1000: lea rdx, [rip + 0x1000]
        0x48, 0x63, 0x04, 0xba,                    // 1007: movsxd rax, dword [rdx + rdi*4]
        0x48, 0x01, 0xd0,                          // 100b: add rax, rdx
        0xff, 0xe0,                                // 100e: jmp rax
    };
    expect_refused(table_of(code, 0x100e), "no bounds check");
    // A computed call target through memory (jmp [rip + X]) is no table either.
    std::vector<uint8_t> through_got = {0x48, 0x83, 0xff, 0x06, 0x77, 0x3e,
                                        0xff, 0x25, 0x00, 0x10, 0x00, 0x00};
    expect_refused(table_of(through_got, 0x1006), "does not prove it");
}

TEST(JumpTable, ByteIndexZeroExtended) {
    // gcc for a switch on an unsigned char.
    std::vector<uint8_t> code = {
        0x40, 0x80, 0xff, 0x06,                    // 1000: cmp dil, 6
        0x77, 0x3e,                                // 1004: ja
        0x48, 0x8d, 0x15, 0x00, 0x10, 0x00, 0x00,  // 1006: lea rdx, [rip + 0x1000]  (0x200d)
        0x40, 0x0f, 0xb6, 0xff,                    // 100d: movzx edi, dil
        0x48, 0x63, 0x04, 0xba,                    // 1011: movsxd rax, dword [rdx + rdi*4]
        0x48, 0x01, 0xd0,                          // 1015: add rax, rdx
        0xff, 0xe0,                                // 1018: jmp rax
    };
    auto table = table_of(code, 0x1018);
    ASSERT_TRUE(table.ok()) << table.error().message();
    EXPECT_EQ(table->table, 0x200du);
    EXPECT_EQ(table->entries, 7u);
    // An unsigned byte bound above 127 (the immediate is encoded as -56).
    std::vector<uint8_t> wide = {
        0x40, 0x80, 0xff, 0xc8,                    // 1000: cmp dil, 200
        0x77, 0x3e,                                // 1004: ja
        0x40, 0x0f, 0xb6, 0xc7,                    // 1006: movzx eax, dil
        0xff, 0x24, 0xc5, 0x00, 0x30, 0x00, 0x00,  // 100a: jmp qword [rax*8 + 0x3000]
    };
    table = table_of(wide, 0x100a);
    ASSERT_TRUE(table.ok()) << table.error().message();
    EXPECT_EQ(table->entries, 201u);
    // ah is bits 8..15 of rax: not an index this analysis knows.
    std::vector<uint8_t> high = {
        0x80, 0xfc, 0x06,                          // 1000: cmp ah, 6
        0x77, 0x3e,                                // 1003: ja
        0x0f, 0xb6, 0xc4,                          // 1005: movzx eax, ah
        0xff, 0x24, 0xc5, 0x00, 0x30, 0x00, 0x00,  // 1008: jmp qword [rax*8 + 0x3000]
    };
    expect_refused(table_of(high, 0x1008), "high byte");
}

TEST(JumpTable, ThirtyTwoBitIndexWrittenJustBeforeTheCompare) {
    // clang: the 32-bit write before the compare zero-extends the index.
    std::vector<uint8_t> code = {
        0x8d, 0x47, 0xff,                          // 1000: lea eax, [rdi - 1]
        0x83, 0xf8, 0x06,                          // 1003: cmp eax, 6
        0x77, 0x3e,                                // 1006: ja
        0xff, 0x24, 0xc5, 0x00, 0x30, 0x00, 0x00,  // 1008: jmp qword [rax*8 + 0x3000]
    };
    auto table = table_of(code, 0x1008);
    ASSERT_TRUE(table.ok()) << table.error().message();
    EXPECT_EQ(table->form, JumpTable::Form::Absolute);
    EXPECT_EQ(table->entries, 7u);
    // Another way into the compare: rax's upper half is unknown there.
    expect_refused(table_of(code, 0x1008, {0x1003}), "does not prove it");
}

TEST(JumpTable, TargetsOfBothForms) {
    JumpTable relative{JumpTable::Form::Relative, 0x2000, 3};
    std::vector<uint8_t> offsets = {0x10, 0, 0, 0, 0xf0, 0xff, 0xff, 0xff, 0, 0, 0, 0};  // +16, -16, 0
    auto targets = jump_table_targets(relative, offsets);
    ASSERT_TRUE(targets.ok()) << targets.error().message();
    EXPECT_EQ(*targets, (std::vector<uint64_t>{0x2010, 0x1ff0, 0x2000}));
    JumpTable absolute{JumpTable::Form::Absolute, 0x3000, 2};
    std::vector<uint8_t> addresses = {0x34, 0x12, 0, 0, 0, 0, 0, 0, 0x78, 0x56, 0, 0, 0, 0, 0, 0};
    targets = jump_table_targets(absolute, addresses);
    ASSERT_TRUE(targets.ok()) << targets.error().message();
    EXPECT_EQ(*targets, (std::vector<uint64_t>{0x1234, 0x5678}));
    EXPECT_FALSE(jump_table_targets(absolute, std::span(addresses).first(8)).ok());
}

}  // namespace
}  // namespace uprobe::arch
