#include "arch/x86_64/decode.hpp"

#include "arch/x86_64/zydis.hpp"

namespace uprobe::arch {

namespace {

Error undecodable(std::span<const uint8_t> code, uint64_t address) {
    if (code.empty()) return Error("no instruction bytes at " + detail::hex(address));
    return Error("cannot decode the instruction at " + detail::hex(address) + " (bytes " +
                 detail::hex_bytes(code, kMaxInstructionLength) + ")");
}

}  // namespace

Result<Instruction> decode_one(std::span<const uint8_t> code, uint64_t address, Syntax syntax) {
    detail::Decoded decoded;
    if (!detail::decode(code, decoded)) return undecodable(code, address);
    return Instruction{address, decoded.insn.length,
                       detail::format(decoded, address, syntax == Syntax::att)};
}

Result<std::vector<uint64_t>> instruction_boundaries(std::span<const uint8_t> code,
                                                     uint64_t address) {
    std::vector<uint64_t> starts;
    size_t offset = 0;
    detail::Decoded decoded;
    while (offset < code.size()) {
        std::span<const uint8_t> rest = code.subspan(offset);
        if (!detail::decode(rest, decoded)) return undecodable(rest, address + offset);
        starts.push_back(address + offset);
        offset += decoded.insn.length;
    }
    return starts;
}

Result<BranchInfo> classify_branch(std::span<const uint8_t> code, uint64_t address) {
    detail::Decoded decoded;
    if (!detail::decode(code, decoded)) return undecodable(code, address);
    const ZydisDecodedInstruction& insn = decoded.insn;
    BranchInfo info;
    switch (insn.meta.category) {
    case ZYDIS_CATEGORY_RET: info.is_ret = true; break;
    case ZYDIS_CATEGORY_CALL: info.is_call = true; break;
    case ZYDIS_CATEGORY_UNCOND_BR: info.is_jump = true; break;
    case ZYDIS_CATEGORY_COND_BR:
        info.is_jump = true;
        info.is_conditional = true;
        break;
    default: return info;
    }
    if (info.is_ret) return info;
    // IS_RELATIVE also covers RIP-relative memory; only a relative immediate
    // makes a direct branch.
    for (uint8_t i = 0; i < insn.operand_count_visible; ++i) {
        const ZydisDecodedOperand& operand = decoded.operands[i];
        ZyanU64 target = 0;
        if (operand.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && operand.imm.is_relative &&
            ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&insn, &operand, address, &target))) {
            info.target = target;
            return info;
        }
    }
    info.is_indirect = decoded.operands[0].type != ZYDIS_OPERAND_TYPE_POINTER;
    return info;
}

}  // namespace uprobe::arch
