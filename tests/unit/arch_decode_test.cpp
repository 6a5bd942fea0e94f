// Decoding: known encodings (SDM vol. 2) and instruction boundaries of a
// function of this binary compared with what objdump -d says about it.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "arch/x86_64/decode.hpp"

extern "C" __attribute__((noinline, used)) long arch_test_sample(long n, const long* values) {
    long sum = 0;
    for (long i = 0; i < n; ++i) {
        if (values[i] > 100) sum += values[i] * 3;
        else if (values[i] < -5) sum -= values[i] / 7;
        else sum ^= values[i] << 2;
    }
    return sum;
}

namespace {

using Bytes = std::vector<uint8_t>;
using namespace uprobe::arch;

TEST(Decode, KnownEncodings) {
    auto push = decode_one(Bytes{0x55, 0x48, 0x89, 0xE5}, 0x1000);
    ASSERT_TRUE(push.ok());
    EXPECT_EQ(push->length, 1);
    EXPECT_EQ(push->text, "push rbp");
    EXPECT_EQ(push->address, 0x1000u);
    auto att = decode_one(Bytes{0x48, 0x89, 0xE5}, 0x1001, Syntax::att);
    ASSERT_TRUE(att.ok());
    EXPECT_EQ(att->length, 3);
    EXPECT_EQ(att->text, "mov %rsp, %rbp");
    // e8 rel32: the text shows the absolute target 0x1005 + 0x10.
    auto call = decode_one(Bytes{0xE8, 0x10, 0, 0, 0}, 0x1000);
    ASSERT_TRUE(call.ok());
    EXPECT_EQ(call->text, "call 0x0000000000001015");
    // 15-byte maximum: lock add qword [rax+rbx*8+0x12345678], 0x12345678 with
    // redundant prefixes is 16 bytes and invalid.
    Bytes too_long = {0x66, 0x66, 0x66, 0x66, 0x66, 0xF0, 0x48, 0x81, 0x84, 0xD8,
                      0x78, 0x56, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12};
    EXPECT_FALSE(decode_one(too_long, 0x1000).ok());
}

TEST(Decode, ErrorsNameTheAddress) {
    auto truncated = decode_one(Bytes{0x48, 0x8B}, 0x4000);
    ASSERT_FALSE(truncated.ok());
    EXPECT_NE(truncated.error().message().find("0x4000"), std::string::npos);
    EXPECT_FALSE(decode_one(Bytes{}, 0x4000).ok());
    // 55 (push rbp) then 06 (invalid in 64-bit mode) at 0x2001.
    auto sweep = instruction_boundaries(Bytes{0x55, 0x06, 0x90}, 0x2000);
    ASSERT_FALSE(sweep.ok());
    EXPECT_NE(sweep.error().message().find("0x2001"), std::string::npos) << sweep.error().message();
}

TEST(Decode, BoundariesOfKnownBytes) {
    // push rbp; mov rbp,rsp; mov eax,1; pop rbp; ret  (1 + 3 + 5 + 1 + 1 bytes)
    Bytes code = {0x55, 0x48, 0x89, 0xE5, 0xB8, 1, 0, 0, 0, 0x5D, 0xC3};
    auto starts = instruction_boundaries(code, 0x401000);
    ASSERT_TRUE(starts.ok());
    EXPECT_EQ(*starts, (std::vector<uint64_t>{0x401000, 0x401001, 0x401004, 0x401009, 0x40100a}));
}

// objdump -d --disassemble=arch_test_sample on this very binary; link-time
// addresses, so compared as offsets from the symbol.
TEST(Decode, BoundariesMatchObjdump) {
    std::string command = "objdump -d --insn-width=16 --disassemble=arch_test_sample /proc/" +
                          std::to_string(getpid()) + "/exe";
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
    ASSERT_TRUE(pipe) << command;
    std::regex symbol_line(R"(^([0-9a-f]+) <arch_test_sample>:)");
    std::regex insn_line(R"(^\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+))");
    uint64_t symbol = 0;
    std::vector<uint64_t> offsets;
    uint64_t end = 0;
    char buffer[1024];
    while (fgets(buffer, sizeof buffer, pipe.get())) {
        std::string line(buffer);
        std::smatch m;
        if (std::regex_search(line, m, symbol_line)) {
            symbol = std::stoull(m[1], nullptr, 16);
        } else if (symbol && std::regex_search(line, m, insn_line)) {
            uint64_t at = std::stoull(m[1], nullptr, 16);
            offsets.push_back(at - symbol);
            end = at - symbol + m[2].length() / 3;
        }
    }
    ASSERT_GT(offsets.size(), 10u) << "objdump gave no disassembly; is binutils installed?";
    auto base = reinterpret_cast<uint64_t>(&arch_test_sample);
    std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(base), end);
    auto starts = instruction_boundaries(bytes, base);
    ASSERT_TRUE(starts.ok()) << starts.error().message();
    std::vector<uint64_t> ours;
    for (uint64_t s : *starts) ours.push_back(s - base);
    EXPECT_EQ(ours, offsets);
}

TEST(Classify, BranchShapes) {
    auto ret = classify_branch(Bytes{0xC3}, 0x1000);
    ASSERT_TRUE(ret.ok());
    EXPECT_TRUE(ret->is_ret);
    EXPECT_FALSE(ret->is_jump || ret->is_call);

    auto ret_imm = classify_branch(Bytes{0xC2, 0x08, 0x00}, 0x1000);
    EXPECT_TRUE(ret_imm->is_ret);

    auto call = classify_branch(Bytes{0xE8, 0xFB, 0xFF, 0xFF, 0xFF}, 0x1000);  // call 0x1000
    EXPECT_TRUE(call->is_call);
    EXPECT_FALSE(call->is_indirect);
    EXPECT_EQ(call->target, 0x1000u);

    auto call_rax = classify_branch(Bytes{0xFF, 0xD0}, 0x1000);
    EXPECT_TRUE(call_rax->is_call);
    EXPECT_TRUE(call_rax->is_indirect);
    EXPECT_FALSE(call_rax->target.has_value());

    auto je = classify_branch(Bytes{0x74, 0x10}, 0x1000);  // je 0x1012
    EXPECT_TRUE(je->is_jump && je->is_conditional);
    EXPECT_EQ(je->target, 0x1012u);

    auto jmp = classify_branch(Bytes{0xE9, 0x00, 0x01, 0x00, 0x00}, 0x1000);  // jmp 0x1105
    EXPECT_TRUE(jmp->is_jump);
    EXPECT_FALSE(jmp->is_conditional);
    EXPECT_EQ(jmp->target, 0x1105u);

    auto jmp_mem = classify_branch(Bytes{0xFF, 0x25, 0x10, 0, 0, 0}, 0x1000);  // jmp [rip+0x10]
    EXPECT_TRUE(jmp_mem->is_jump && jmp_mem->is_indirect);
    EXPECT_FALSE(jmp_mem->target.has_value());

    auto loop = classify_branch(Bytes{0xE2, 0xFE}, 0x1000);  // loop 0x1000
    EXPECT_TRUE(loop->is_jump && loop->is_conditional);
    EXPECT_EQ(loop->target, 0x1000u);

    auto nop = classify_branch(Bytes{0x90}, 0x1000);
    EXPECT_FALSE(nop->is_ret || nop->is_jump || nop->is_call);
    EXPECT_FALSE(classify_branch(Bytes{0x0F}, 0x1000).ok());
}

}  // namespace
