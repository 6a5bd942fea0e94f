#include "arch/x86_64/relocate.hpp"

#include <cstring>
#include <limits>
#include <string>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/zydis.hpp"

namespace uprobe::arch {

namespace {

bool fits_int32(int64_t value) {
    return value >= std::numeric_limits<int32_t>::min() &&
           value <= std::numeric_limits<int32_t>::max();
}

bool fits_int8(int64_t value) { return value >= -128 && value <= 127; }

// Machine code being laid out at a known runtime address.
class Emitter {
public:
    explicit Emitter(uint64_t base) : base_(base) {}

    uint64_t here() const { return base_ + bytes_.size(); }
    size_t size() const { return bytes_.size(); }

    void byte(uint8_t value) { bytes_.push_back(value); }
    void bytes(std::span<const uint8_t> values) {
        bytes_.insert(bytes_.end(), values.begin(), values.end());
    }
    void u32(uint32_t value) {
        for (int i = 0; i < 4; ++i) byte(static_cast<uint8_t>(value >> (8 * i)));
    }
    void u64(uint64_t value) {
        for (int i = 0; i < 8; ++i) byte(static_cast<uint8_t>(value >> (8 * i)));
    }
    void patch_le(size_t offset, uint64_t value, size_t width) {
        for (size_t i = 0; i < width; ++i) bytes_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
    }

    // `jmp rel32` when in reach, else `jmp qword [rip+0]; dq target`.
    void jump_to(uint64_t target) {
        int64_t rel = static_cast<int64_t>(target - (here() + 5));
        if (fits_int32(rel)) {
            byte(0xE9);
            u32(static_cast<uint32_t>(rel));
        } else {
            bytes(std::initializer_list<uint8_t>{0xFF, 0x25, 0, 0, 0, 0});
            u64(target);
        }
    }

    // Stores `return_address` at [rsp-8] and lowers rsp, as a call does,
    // without a scratch register and without touching flags (push and lea
    // leave them alone).
    void push_return_address(uint64_t return_address) {
        if (return_address <= 0x7FFFFFFF) {  // push imm32 sign-extends
            byte(0x68);
            u32(static_cast<uint32_t>(return_address));
            return;
        }
        bytes(std::initializer_list<uint8_t>{0x48, 0x8D, 0x64, 0x24, 0xF8});  // lea rsp,[rsp-8]
        bytes(std::initializer_list<uint8_t>{0xC7, 0x04, 0x24});  // mov dword [rsp], imm32
        u32(static_cast<uint32_t>(return_address));
        bytes(std::initializer_list<uint8_t>{0xC7, 0x44, 0x24, 0x04});  // mov dword [rsp+4], imm32
        u32(static_cast<uint32_t>(return_address >> 32));
    }

    std::vector<uint8_t> take() && { return std::move(bytes_); }

private:
    uint64_t base_;
    std::vector<uint8_t> bytes_;
};

struct Context {
    const detail::Decoded& decoded;
    std::span<const uint8_t> bytes;  // exactly the original instruction
    uint64_t address;
    uint64_t xol_address;
    std::string text;

    const ZydisDecodedInstruction& insn() const { return decoded.insn; }
    uint64_t next() const { return address + insn().length; }

    Error refuse(std::string_view why) const {
        return Error("cannot run '" + text + "' out of line: " + std::string(why));
    }
};

// Why an instruction can never run anywhere but where it is, or "".
std::string_view never_relocatable(const ZydisDecodedInstruction& insn) {
    switch (insn.mnemonic) {
    case ZYDIS_MNEMONIC_INT3:
    case ZYDIS_MNEMONIC_INT:
    case ZYDIS_MNEMONIC_INT1:
    case ZYDIS_MNEMONIC_INTO:
        return "it raises an interrupt, whose handler would see the slot's address";
    case ZYDIS_MNEMONIC_UD0:
    case ZYDIS_MNEMONIC_UD1:
    case ZYDIS_MNEMONIC_UD2:
        return "it is a deliberate invalid-opcode trap";
    case ZYDIS_MNEMONIC_HLT:
        return "it is privileged and faults in user mode";
    case ZYDIS_MNEMONIC_XBEGIN:
        return "the transaction's abort address is RIP-relative and kept by the hardware";
    case ZYDIS_MNEMONIC_IRET:
    case ZYDIS_MNEMONIC_IRETD:
    case ZYDIS_MNEMONIC_IRETQ:
    case ZYDIS_MNEMONIC_SYSRET:
    case ZYDIS_MNEMONIC_SYSEXIT:
    case ZYDIS_MNEMONIC_SYSENTER:
        return "it is a privilege-level transfer";
    default: break;
    }
    if (insn.meta.branch_type == ZYDIS_BRANCH_TYPE_FAR)
        return "far control transfers are not supported";
    return {};
}

const ZydisDecodedOperand* rip_relative_operand(const detail::Decoded& decoded) {
    for (uint8_t i = 0; i < decoded.insn.operand_count; ++i) {
        const ZydisDecodedOperand& operand = decoded.operands[i];
        if (operand.type == ZYDIS_OPERAND_TYPE_MEMORY &&
            (operand.mem.base == ZYDIS_REGISTER_RIP || operand.mem.base == ZYDIS_REGISTER_EIP))
            return &operand;
    }
    return nullptr;
}

const ZydisDecodedOperand* relative_immediate(const detail::Decoded& decoded) {
    for (uint8_t i = 0; i < decoded.insn.operand_count; ++i) {
        const ZydisDecodedOperand& operand = decoded.operands[i];
        if (operand.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && operand.imm.is_relative) return &operand;
    }
    return nullptr;
}

bool ends_control_flow(const ZydisDecodedInstruction& insn) {
    return insn.meta.category == ZYDIS_CATEGORY_RET ||
           insn.meta.category == ZYDIS_CATEGORY_UNCOND_BR;
}

// Writes `code` (the instruction, or an equivalent with the same
// RIP-relative operand layout) at the emitter's position with its
// displacement re-aimed at the operand's original absolute address.
Result<void> emit_rip_relative(const Context& ctx, Emitter& out, std::span<const uint8_t> code,
                               uint64_t absolute) {
    const ZydisDecodedInstruction& insn = ctx.insn();
    if (insn.raw.disp.size != 32) return ctx.refuse("unexpected RIP-relative displacement size");
    uint64_t start = out.here();
    int64_t disp = static_cast<int64_t>(absolute - (start + code.size()));
    if (!fits_int32(disp)) {
        return ctx.refuse("its RIP-relative operand " + detail::hex(absolute) +
                          " is out of ±2 GiB reach of the out-of-line slot at " +
                          detail::hex(ctx.xol_address));
    }
    size_t offset = out.size();
    out.bytes(code);
    out.patch_le(offset + insn.raw.disp.offset, static_cast<uint32_t>(disp), 4);
    return {};
}

Result<void> relocate_rip_relative(const Context& ctx, const ZydisDecodedOperand& operand,
                                   Emitter& out) {
    const ZydisDecodedInstruction& insn = ctx.insn();
    if (operand.mem.base == ZYDIS_REGISTER_EIP)
        return ctx.refuse("32-bit EIP-relative addressing is not supported");
    uint64_t absolute = ctx.next() + static_cast<uint64_t>(operand.mem.disp.value);
    int64_t disp = static_cast<int64_t>(absolute - (out.here() + insn.length));
    if (!fits_int32(disp) && insn.mnemonic == ZYDIS_MNEMONIC_LEA && insn.operand_width == 64 &&
        ctx.decoded.operands[0].type == ZYDIS_OPERAND_TYPE_REGISTER) {
        // lea only computes the address: load it as a constant instead.
        uint8_t reg = static_cast<uint8_t>(ZydisRegisterGetId(ctx.decoded.operands[0].reg.value));
        out.byte(static_cast<uint8_t>(0x48 | (reg >> 3)));  // REX.W (+B)
        out.byte(static_cast<uint8_t>(0xB8 | (reg & 7)));   // mov r64, imm64
        out.u64(absolute);
    } else {
        UPROBE_CHECK(emit_rip_relative(ctx, out, ctx.bytes, absolute));
    }
    if (!ends_control_flow(insn)) out.jump_to(ctx.next());
    return {};
}

Result<void> relocate_relative_branch(const Context& ctx, const ZydisDecodedOperand& operand,
                                      Emitter& out) {
    const ZydisDecodedInstruction& insn = ctx.insn();
    if (insn.attributes & ZYDIS_ATTRIB_HAS_OPERANDSIZE)
        return ctx.refuse("a 16-bit branch truncates the instruction pointer");
    ZyanU64 target = 0;
    if (!ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&insn, &operand, ctx.address, &target)))
        return ctx.refuse("cannot compute its branch target");
    if (insn.mnemonic == ZYDIS_MNEMONIC_JMP) {
        out.jump_to(target);
        return {};
    }
    if (insn.meta.category == ZYDIS_CATEGORY_CALL) {
        out.push_return_address(ctx.next());
        out.jump_to(target);
        return {};
    }
    if (insn.meta.category != ZYDIS_CATEGORY_COND_BR)
        return ctx.refuse("unsupported relative branch");
    // Same condition, aimed at a local stub: cond -> stub, else fall through.
    //   jcc/loop stub ; jmp next ; stub: jmp target
    const auto& imm = insn.raw.imm[0];
    if (!imm.is_relative || (imm.size != 8 && imm.size != 32))
        return ctx.refuse("unexpected branch displacement encoding");
    size_t start = out.size();
    out.bytes(ctx.bytes);
    out.jump_to(ctx.next());
    uint64_t local = out.size() - (start + insn.length);
    out.patch_le(start + imm.offset, local, imm.size / 8);
    out.jump_to(target);
    return {};
}

// call reg / call [mem]: push the original return address, then the same
// operand as an indirect jmp (FF /2 -> FF /4). An rsp-based operand sees rsp
// already lowered by 8, so its displacement grows by 8.
Result<void> relocate_indirect_call(const Context& ctx, Emitter& out) {
    const ZydisDecodedInstruction& insn = ctx.insn();
    const ZydisDecodedOperand& operand = ctx.decoded.operands[0];
    if (insn.attributes & ZYDIS_ATTRIB_HAS_OPERANDSIZE)
        return ctx.refuse("a 16-bit call truncates the instruction pointer");
    size_t modrm_offset = insn.raw.modrm.offset;
    if (!(insn.attributes & ZYDIS_ATTRIB_HAS_MODRM) || modrm_offset == 0 ||
        ctx.bytes[modrm_offset - 1] != 0xFF || insn.raw.modrm.reg != 2)
        return ctx.refuse("unexpected indirect call encoding");
    std::vector<uint8_t> jump(ctx.bytes.begin(), ctx.bytes.end());
    jump[modrm_offset] = static_cast<uint8_t>((jump[modrm_offset] & 0xC7) | (4 << 3));

    if (operand.type == ZYDIS_OPERAND_TYPE_REGISTER) {
        if (operand.reg.value == ZYDIS_REGISTER_RSP)
            return ctx.refuse("its target register is the stack pointer the call moves");
        out.push_return_address(ctx.next());
        out.bytes(jump);
        return {};
    }
    if (operand.type != ZYDIS_OPERAND_TYPE_MEMORY) return ctx.refuse("unexpected call operand");
    if (operand.mem.base == ZYDIS_REGISTER_RIP) {
        uint64_t absolute = ctx.next() + static_cast<uint64_t>(operand.mem.disp.value);
        out.push_return_address(ctx.next());
        return emit_rip_relative(ctx, out, jump, absolute);
    }
    if (operand.mem.index == ZYDIS_REGISTER_RSP || operand.mem.index == ZYDIS_REGISTER_ESP)
        return ctx.refuse("unexpected stack-pointer index");
    if (operand.mem.base != ZYDIS_REGISTER_RSP && operand.mem.base != ZYDIS_REGISTER_ESP) {
        out.push_return_address(ctx.next());
        out.bytes(jump);
        return {};
    }
    // Rebuild [rsp + index*scale + disp + 8]: prefixes, FF, modrm, sib, disp.
    int64_t disp = operand.mem.disp.has_displacement ? operand.mem.disp.value : 0;
    if (operand.mem.index != ZYDIS_REGISTER_NONE)
        return ctx.refuse("its rsp-indexed target may overlap the return address slot");
    if (disp > -16 && disp < 0)
        return ctx.refuse("its target is read from where the return address is pushed");
    int64_t adjusted = disp + 8;
    if (!fits_int32(adjusted)) return ctx.refuse("its stack displacement overflows");
    if (!(insn.attributes & ZYDIS_ATTRIB_HAS_SIB)) return ctx.refuse("unexpected rsp encoding");
    uint8_t mod = fits_int8(adjusted) ? 1 : 2;
    std::vector<uint8_t> rebuilt(ctx.bytes.begin(), ctx.bytes.begin() + modrm_offset);
    rebuilt.push_back(static_cast<uint8_t>((mod << 6) | (4 << 3) | insn.raw.modrm.rm));
    rebuilt.push_back(ctx.bytes[insn.raw.sib.offset]);
    if (mod == 1) {
        rebuilt.push_back(static_cast<uint8_t>(static_cast<int8_t>(adjusted)));
    } else {
        for (int i = 0; i < 4; ++i)
            rebuilt.push_back(static_cast<uint8_t>(static_cast<uint64_t>(adjusted) >> (8 * i)));
    }
    out.push_return_address(ctx.next());
    out.bytes(rebuilt);
    return {};
}

}  // namespace

Result<OutOfLine> relocate(std::span<const uint8_t> insn_bytes, uint64_t address,
                           uint64_t xol_address) {
    detail::Decoded decoded;
    if (!detail::decode(insn_bytes, decoded)) {
        return Error("cannot run the instruction at " + detail::hex(address) +
                     " out of line: cannot decode " +
                     detail::hex_bytes(insn_bytes, kMaxInstructionLength));
    }
    Context ctx{decoded, insn_bytes.first(decoded.insn.length), address, xol_address,
                detail::format(decoded, address, false)};
    const ZydisDecodedInstruction& insn = decoded.insn;

    if (std::string_view why = never_relocatable(insn); !why.empty()) return ctx.refuse(why);

    Emitter out(xol_address);
    const ZydisDecodedOperand* rip_operand = rip_relative_operand(decoded);
    const ZydisDecodedOperand* branch_operand = relative_immediate(decoded);
    if (insn.meta.category == ZYDIS_CATEGORY_CALL && !branch_operand) {
        UPROBE_CHECK(relocate_indirect_call(ctx, out));
    } else if (rip_operand && branch_operand) {
        return ctx.refuse("it has both a RIP-relative operand and a relative branch");
    } else if (rip_operand) {
        UPROBE_CHECK(relocate_rip_relative(ctx, *rip_operand, out));
    } else if (branch_operand) {
        UPROBE_CHECK(relocate_relative_branch(ctx, *branch_operand, out));
    } else {
        out.bytes(ctx.bytes);
        if (!ends_control_flow(insn)) out.jump_to(ctx.next());
    }
    std::vector<uint8_t> code = std::move(out).take();
    if (code.size() > kMaxOutOfLineSize) return ctx.refuse("its out-of-line code does not fit a slot");
    return OutOfLine{std::move(code)};
}

}  // namespace uprobe::arch
