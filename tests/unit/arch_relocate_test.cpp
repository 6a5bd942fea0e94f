// Relocation table: hand-encoded instructions (SDM vol. 2 encodings), the
// slot code decoded again with Zydis here, and its meaning checked: the
// operand still names the same absolute address, branches reach the same
// targets, calls push the original return address, refusals say why.
// arch_exec_test runs many of the same cases for real.
#include <Zydis/Zydis.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "arch/x86_64/relocate.hpp"

namespace {

using Bytes = std::vector<uint8_t>;
using uprobe::arch::relocate;

struct Decoded {
    uint64_t address;
    ZydisDecodedInstruction insn;
    ZydisDecodedOperand operands[ZYDIS_MAX_OPERAND_COUNT];
    Bytes bytes;

    uint64_t next() const { return address + insn.length; }
    // Absolute target of a rel branch or a RIP-relative memory operand.
    uint64_t absolute(int operand) const {
        ZyanU64 out = 0;
        EXPECT_TRUE(ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&insn, &operands[operand], address, &out)));
        return out;
    }
};

std::vector<Decoded> decode_all(const Bytes& code, uint64_t address) {
    ZydisDecoder decoder;
    ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    std::vector<Decoded> out;
    size_t offset = 0;
    while (offset < code.size()) {
        Decoded d{};
        d.address = address + offset;
        if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, code.data() + offset, code.size() - offset,
                                                 &d.insn, d.operands)))
            break;
        d.bytes.assign(code.begin() + offset, code.begin() + offset + d.insn.length);
        offset += d.insn.length;
        out.push_back(d);
        if (d.insn.mnemonic == ZYDIS_MNEMONIC_JMP && d.operands[0].type == ZYDIS_OPERAND_TYPE_MEMORY &&
            d.operands[0].mem.base == ZYDIS_REGISTER_RIP && d.operands[0].mem.disp.value == 0)
            offset += 8;  // jmp [rip+0]; dq target
    }
    return out;
}

// Where a slot's jmp goes: rel32 target or the quad after `jmp [rip+0]`.
uint64_t jump_target(const Decoded& d, const Bytes& code, uint64_t xol) {
    EXPECT_EQ(d.insn.mnemonic, ZYDIS_MNEMONIC_JMP);
    if (d.operands[0].type == ZYDIS_OPERAND_TYPE_IMMEDIATE) return d.absolute(0);
    uint64_t quad = 0;
    size_t at = d.next() - xol;
    for (int i = 0; i < 8; ++i) quad |= uint64_t{code.at(at + i)} << (8 * i);
    return quad;
}

Bytes le32(int64_t value) {
    Bytes out;
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(value) >> (8 * i)));
    return out;
}

Bytes cat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const Bytes& part : parts) out.insert(out.end(), part.begin(), part.end());
    return out;
}

constexpr uint64_t kOrig = 0x555555556000;
constexpr uint64_t kNearXol = 0x555555570000;
constexpr uint64_t kFarXol = 0x7FFFF7FF0000;

struct RipCase {
    const char* name;
    Bytes prefix;  // bytes up to and including ModRM
    Bytes suffix;  // immediate after the displacement
    ZydisMnemonic mnemonic;
    bool jumps_back;
};

TEST(Relocate, RipRelativeOperandsKeepTheirAbsoluteAddress) {
    const RipCase cases[] = {
        {"mov rax,[rip+X]", {0x48, 0x8B, 0x05}, {}, ZYDIS_MNEMONIC_MOV, true},
        {"cmp dword [rip+X],5", {0x83, 0x3D}, {0x05}, ZYDIS_MNEMONIC_CMP, true},
        {"mov qword [rip+X],imm32", {0x48, 0xC7, 0x05}, {0x78, 0x56, 0x34, 0x12}, ZYDIS_MNEMONIC_MOV, true},
        {"lea rax,[rip+X]", {0x48, 0x8D, 0x05}, {}, ZYDIS_MNEMONIC_LEA, true},
        {"vmovdqu ymm0,[rip+X] (VEX)", {0xC5, 0xFE, 0x6F, 0x05}, {}, ZYDIS_MNEMONIC_VMOVDQU, true},
        {"vmovdqu64 zmm0,[rip+X] (EVEX)", {0x62, 0xF1, 0xFE, 0x48, 0x6F, 0x05}, {}, ZYDIS_MNEMONIC_VMOVDQU64, true},
        {"lock cmpxchg [rip+X],ecx", {0xF0, 0x0F, 0xB1, 0x0D}, {}, ZYDIS_MNEMONIC_CMPXCHG, true},
        {"mov rax,fs:[rip+X]", {0x64, 0x48, 0x8B, 0x05}, {}, ZYDIS_MNEMONIC_MOV, true},
        {"push [rip+X]", {0xFF, 0x35}, {}, ZYDIS_MNEMONIC_PUSH, true},
        {"jmp [rip+X]", {0xFF, 0x25}, {}, ZYDIS_MNEMONIC_JMP, false},
        {"roundsd xmm0,[rip+X],4", {0x66, 0x0F, 0x3A, 0x0B, 0x05}, {0x04}, ZYDIS_MNEMONIC_ROUNDSD, true},
    };
    for (const RipCase& c : cases) {
        SCOPED_TRACE(c.name);
        for (int64_t disp : {int64_t{0x1234}, int64_t{-0x40000}}) {
            Bytes insn = cat({c.prefix, le32(disp), c.suffix});
            uint64_t absolute = kOrig + insn.size() + static_cast<uint64_t>(disp);
            auto out = relocate(insn, kOrig, kNearXol);
            ASSERT_TRUE(out.ok()) << out.error().message();
            EXPECT_LE(out->code.size(), uprobe::arch::kMaxOutOfLineSize);
            auto slot = decode_all(out->code, kNearXol);
            ASSERT_GE(slot.size(), 1u);
            EXPECT_EQ(slot[0].insn.mnemonic, c.mnemonic);
            EXPECT_EQ(slot[0].insn.length, insn.size());
            int mem = -1;
            for (int i = 0; i < slot[0].insn.operand_count; ++i)
                if (slot[0].operands[i].type == ZYDIS_OPERAND_TYPE_MEMORY &&
                    slot[0].operands[i].mem.base == ZYDIS_REGISTER_RIP)
                    mem = i;
            ASSERT_GE(mem, 0);
            EXPECT_EQ(slot[0].absolute(mem), absolute);
            // Everything but the displacement is unchanged (prefixes, immediates).
            EXPECT_EQ(Bytes(slot[0].bytes.begin(), slot[0].bytes.begin() + c.prefix.size()), c.prefix);
            EXPECT_EQ(Bytes(slot[0].bytes.end() - c.suffix.size(), slot[0].bytes.end()), c.suffix);
            if (c.jumps_back) {
                ASSERT_EQ(slot.size(), 2u);
                EXPECT_EQ(jump_target(slot[1], out->code, kNearXol), kOrig + insn.size());
                EXPECT_EQ(slot[1].insn.length, 5);  // rel32 in reach
            } else {
                EXPECT_EQ(slot.size(), 1u);
            }
        }
    }
}

TEST(Relocate, LeaOutOfReachBecomesMovImm64) {
    Bytes insn = cat({{0x4C, 0x8D, 0x1D}, le32(0x100)});  // lea r11,[rip+0x100]
    auto out = relocate(insn, kOrig, kFarXol);
    ASSERT_TRUE(out.ok()) << out.error().message();
    auto slot = decode_all(out->code, kFarXol);
    ASSERT_EQ(slot.size(), 2u);
    EXPECT_EQ(slot[0].insn.mnemonic, ZYDIS_MNEMONIC_MOV);
    EXPECT_EQ(slot[0].operands[0].reg.value, ZYDIS_REGISTER_R11);
    EXPECT_EQ(slot[0].operands[1].imm.value.u, kOrig + 7 + 0x100);
    EXPECT_EQ(jump_target(slot[1], out->code, kFarXol), kOrig + 7);
    EXPECT_EQ(slot[1].insn.length, 6);  // jmp [rip+0] + quad
}

TEST(Relocate, RipRelativeDataOutOfReachIsRefused) {
    Bytes insn = cat({{0x48, 0x8B, 0x05}, le32(0x100)});
    auto out = relocate(insn, kOrig, kFarXol);
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.error().message().find("cannot run 'mov rax, [0x"), std::string::npos)
        << out.error().message();
    EXPECT_NE(out.error().message().find("out of ±2 GiB reach"), std::string::npos);
}

TEST(Relocate, CallRel32PushesOriginalReturnAddress) {
    // High addresses: lea rsp,[rsp-8]; mov dword [rsp],lo; mov dword [rsp+4],hi; jmp target
    Bytes insn = cat({{0xE8}, le32(0x1000)});
    auto out = relocate(insn, kOrig, kNearXol);
    ASSERT_TRUE(out.ok());
    auto slot = decode_all(out->code, kNearXol);
    ASSERT_EQ(slot.size(), 4u);
    EXPECT_EQ(slot[0].insn.mnemonic, ZYDIS_MNEMONIC_LEA);
    EXPECT_EQ(slot[0].operands[0].reg.value, ZYDIS_REGISTER_RSP);
    EXPECT_EQ(slot[0].operands[1].mem.base, ZYDIS_REGISTER_RSP);
    EXPECT_EQ(slot[0].operands[1].mem.disp.value, -8);
    EXPECT_EQ(slot[1].insn.mnemonic, ZYDIS_MNEMONIC_MOV);
    EXPECT_EQ(slot[1].operands[0].mem.disp.value, 0);
    EXPECT_EQ(slot[1].operands[1].imm.value.u, (kOrig + 5) & 0xFFFFFFFF);
    EXPECT_EQ(slot[2].operands[0].mem.disp.value, 4);
    EXPECT_EQ(slot[2].operands[1].imm.value.u, (kOrig + 5) >> 32);
    EXPECT_EQ(jump_target(slot[3], out->code, kNearXol), kOrig + 5 + 0x1000);

    // Below 2 GiB (non-PIE): push imm32 says the same in one instruction.
    auto low = relocate(insn, 0x401000, 0x500000);
    ASSERT_TRUE(low.ok());
    auto low_slot = decode_all(low->code, 0x500000);
    ASSERT_EQ(low_slot.size(), 2u);
    EXPECT_EQ(low_slot[0].insn.mnemonic, ZYDIS_MNEMONIC_PUSH);
    EXPECT_EQ(low_slot[0].operands[0].imm.value.u, 0x401005u);
    EXPECT_EQ(jump_target(low_slot[1], low->code, 0x500000), 0x402005u);

    // Far slot: absolute jump to the target.
    auto far = relocate(insn, kOrig, kFarXol);
    ASSERT_TRUE(far.ok());
    auto far_slot = decode_all(far->code, kFarXol);
    EXPECT_EQ(jump_target(far_slot.back(), far->code, kFarXol), kOrig + 5 + 0x1000);
}

TEST(Relocate, IndirectCallsBecomePushAndJump) {
    struct Case {
        const char* name;
        Bytes insn;
        int64_t expected_disp;  // of the jmp's memory operand, when rsp-based
    };
    const Case cases[] = {
        {"call rax", {0xFF, 0xD0}, 0},
        {"call [rsp+8]", {0xFF, 0x54, 0x24, 0x08}, 16},
        {"call [rsp]", {0xFF, 0x14, 0x24}, 8},
        {"call [rsp+0x7c]", {0xFF, 0x54, 0x24, 0x7C}, 0x84},
        {"call [rbx+0x10]", {0xFF, 0x53, 0x10}, 0x10},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        auto out = relocate(c.insn, kOrig, kNearXol);
        ASSERT_TRUE(out.ok()) << out.error().message();
        auto slot = decode_all(out->code, kNearXol);
        ASSERT_EQ(slot.size(), 4u);
        EXPECT_EQ(slot[1].operands[1].imm.value.u, (kOrig + c.insn.size()) & 0xFFFFFFFF);
        const Decoded& jmp = slot[3];
        EXPECT_EQ(jmp.insn.mnemonic, ZYDIS_MNEMONIC_JMP);
        EXPECT_EQ(jmp.operands[0].type, c.insn[1] == 0xD0 ? ZYDIS_OPERAND_TYPE_REGISTER : ZYDIS_OPERAND_TYPE_MEMORY);
        if (jmp.operands[0].type == ZYDIS_OPERAND_TYPE_MEMORY) {
            EXPECT_EQ(jmp.operands[0].mem.disp.value, c.expected_disp);
        }
    }
    Bytes call_rip = cat({{0xFF, 0x15}, le32(0x2000)});
    auto out = relocate(call_rip, kOrig, kNearXol);
    ASSERT_TRUE(out.ok());
    auto slot = decode_all(out->code, kNearXol);
    ASSERT_EQ(slot.size(), 4u);
    EXPECT_EQ(slot[3].insn.mnemonic, ZYDIS_MNEMONIC_JMP);
    EXPECT_EQ(slot[3].absolute(0), kOrig + 6 + 0x2000);
}

TEST(Relocate, ConditionalBranchesUseALocalStub) {
    struct Case {
        const char* name;
        Bytes insn;
        uint64_t target;
    };
    const Case cases[] = {
        {"jne rel8", {0x75, 0x20}, kOrig + 2 + 0x20},
        {"jl rel32", cat({{0x0F, 0x8C}, le32(-0x3000)}), kOrig + 6 - 0x3000},
        {"loop", {0xE2, 0xF0}, kOrig + 2 - 0x10},
        {"loopne", {0xE0, 0x10}, kOrig + 2 + 0x10},
        {"jrcxz", {0xE3, 0x10}, kOrig + 2 + 0x10},
        {"jecxz", {0x67, 0xE3, 0x10}, kOrig + 3 + 0x10},
    };
    for (uint64_t xol : {kNearXol, kFarXol}) {
        for (const Case& c : cases) {
            SCOPED_TRACE(c.name);
            auto out = relocate(c.insn, kOrig, xol);
            ASSERT_TRUE(out.ok()) << out.error().message();
            auto slot = decode_all(out->code, xol);
            ASSERT_EQ(slot.size(), 3u);
            // Same condition and prefixes, aimed at the stub after the jump back.
            EXPECT_EQ(slot[0].insn.length, c.insn.size());
            EXPECT_EQ(Bytes(slot[0].bytes.begin(), slot[0].bytes.end() - (c.insn[0] == 0x0F ? 4 : 1)),
                      Bytes(c.insn.begin(), c.insn.end() - (c.insn[0] == 0x0F ? 4 : 1)));
            EXPECT_EQ(slot[0].absolute(0), slot[2].address);
            EXPECT_EQ(jump_target(slot[1], out->code, xol), kOrig + c.insn.size());
            EXPECT_EQ(jump_target(slot[2], out->code, xol), c.target);
        }
    }
}

TEST(Relocate, VerbatimAndTerminalInstructions) {
    struct Case {
        const char* name;
        Bytes insn;
        bool jumps_back;
    };
    const Case cases[] = {
        {"push rbp", {0x55}, true},
        {"endbr64", {0xF3, 0x0F, 0x1E, 0xFA}, true},
        {"syscall", {0x0F, 0x05}, true},
        {"cpuid", {0x0F, 0xA2}, true},
        {"rep movsb", {0xF3, 0xA4}, true},
        {"rep stosq", {0xF3, 0x48, 0xAB}, true},
        {"repe cmpsb", {0xF3, 0xA6}, true},
        {"repne scasb", {0xF2, 0xAE}, true},
        {"mov rax, fs:0x28", {0x64, 0x48, 0x8B, 0x04, 0x25, 0x28, 0, 0, 0}, true},
        {"lock xadd [rdi],eax", {0xF0, 0x0F, 0xC1, 0x07}, true},
        {"ret", {0xC3}, false},
        {"ret 8", {0xC2, 0x08, 0x00}, false},
        {"jmp rax", {0xFF, 0xE0}, false},
        {"notrack jmp [rax]", {0x3E, 0xFF, 0x20}, false},
    };
    for (uint64_t xol : {kNearXol, kFarXol}) {
        for (const Case& c : cases) {
            SCOPED_TRACE(c.name);
            auto out = relocate(c.insn, kOrig, xol);
            ASSERT_TRUE(out.ok()) << out.error().message();
            ASSERT_GE(out->code.size(), c.insn.size());
            EXPECT_EQ(Bytes(out->code.begin(), out->code.begin() + c.insn.size()), c.insn);
            if (!c.jumps_back) {
                EXPECT_EQ(out->code.size(), c.insn.size());
                continue;
            }
            auto slot = decode_all(out->code, xol);
            ASSERT_EQ(slot.size(), 2u);
            EXPECT_EQ(jump_target(slot[1], out->code, xol), kOrig + c.insn.size());
            EXPECT_EQ(slot[1].insn.length, xol == kNearXol ? 5 : 6);
        }
    }
}

TEST(Relocate, ExtraTrailingBytesAreIgnored) {
    auto out = relocate(Bytes{0x55, 0x48, 0x89, 0xE5}, kOrig, kNearXol);  // push rbp; mov rbp,rsp
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->code.size(), 1u + 5u);
}

TEST(Relocate, RefusalsSayWhy) {
    struct Case {
        Bytes insn;
        const char* message_start;
    };
    const Case cases[] = {
        {{0xCC}, "cannot run 'int3' out of line: "},
        {{0xCD, 0x80}, "cannot run 'int 0x80' out of line: "},
        {{0x0F, 0x0B}, "cannot run 'ud2' out of line: "},
        {{0xF4}, "cannot run 'hlt' out of line: "},
        {cat({{0xC7, 0xF8}, le32(0x10)}), "cannot run 'xbegin "},
        {{0xFF, 0xD4}, "cannot run 'call rsp' out of line: "},
        {{0xFF, 0x54, 0x24, 0xF8}, "cannot run 'call [rsp-0x08]' out of line: "},
        {{0xFF, 0x28}, "cannot run 'jmp far "},
        {{0x48, 0xCF}, "cannot run 'iretq' out of line: "},
        {{0x0F, 0xFF}, "cannot run the instruction at 0x555555556000 out of line: cannot decode 0f ff"},
        {{}, "cannot run the instruction at 0x555555556000 out of line: cannot decode"},
    };
    for (const Case& c : cases) {
        auto out = relocate(c.insn, kOrig, kNearXol);
        ASSERT_FALSE(out.ok()) << c.message_start;
        EXPECT_EQ(out.error().message().rfind(c.message_start, 0), 0u) << out.error().message();
        EXPECT_EQ(out.error().message().find('\n'), std::string::npos);
    }
}

}  // namespace
