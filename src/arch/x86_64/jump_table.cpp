#include "arch/x86_64/jump_table.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "arch/x86_64/zydis.hpp"

namespace uprobe::arch {

namespace {

constexpr ZydisMachineMode kMode = ZYDIS_MACHINE_MODE_LONG_64;
// Straight-line code between the bounds check and the jump: compilers put
// a handful of instructions there; a long stretch is not this pattern.
constexpr size_t kMaxPathInstructions = 24;

struct Located {
    uint64_t address = 0;
    detail::Decoded decoded;
};

// What the analysis knows about one general register (by its 64-bit name).
struct Known {
    enum class Kind : uint8_t {
        Bounded,  // the low `width` bits, unsigned, are <= bound (the rest unknown)
        Address,  // value == address (lea reg, [rip + X])
        Entry,    // sign-extended dword of the table at `address`, index <= bound
        Target,   // Entry + the table's address: where a relative table jumps
    };
    Kind kind = Kind::Bounded;
    uint64_t bound = 0;
    uint64_t address = 0;
    unsigned width = 64;
};

using Registers = std::map<ZydisRegister, Known>;

ZydisRegister family(ZydisRegister reg) {
    return ZydisRegisterGetLargestEnclosing(kMode, reg);
}
bool is_gpr64(ZydisRegister reg) {
    return ZydisRegisterGetClass(reg) == ZYDIS_REGCLASS_GPR64;
}
bool is_gpr32(ZydisRegister reg) {
    return ZydisRegisterGetClass(reg) == ZYDIS_REGCLASS_GPR32;
}
// A general register that holds the low bits of its 64-bit register (not
// ah..dh, which are bits 8..15).
bool is_low_gpr(ZydisRegister reg) {
    switch (ZydisRegisterGetClass(reg)) {
        case ZYDIS_REGCLASS_GPR64:
        case ZYDIS_REGCLASS_GPR32:
        case ZYDIS_REGCLASS_GPR16:
            return true;
        case ZYDIS_REGCLASS_GPR8:
            return reg != ZYDIS_REGISTER_AH && reg != ZYDIS_REGISTER_BH && reg != ZYDIS_REGISTER_CH &&
                   reg != ZYDIS_REGISTER_DH;
        default:
            return false;
    }
}
unsigned width_of(ZydisRegister reg) {
    return ZydisRegisterGetWidth(kMode, reg);
}

std::optional<Known> known(const Registers& regs, ZydisRegister reg) {
    auto it = regs.find(family(reg));
    if (it == regs.end()) return std::nullopt;
    return it->second;
}

// The bound of the value read from `reg` (any width), when one is proven:
// its bits are all bounded bits, and the bound fits in them.
std::optional<uint64_t> bound_of(const Registers& regs, ZydisRegister reg) {
    if (!is_low_gpr(reg)) return std::nullopt;
    auto k = known(regs, reg);
    unsigned width = width_of(reg);
    if (!k || k->kind != Known::Kind::Bounded || k->width < width) return std::nullopt;
    if (width < 64 && k->bound >= (uint64_t{1} << width)) return std::nullopt;
    return k->bound;
}

// The index of a memory operand as a proven bound, or nullopt.
std::optional<uint64_t> bounded_index(const Registers& regs, const ZydisDecodedOperandMem& mem) {
    if (mem.index == ZYDIS_REGISTER_NONE || !is_gpr64(mem.index)) return std::nullopt;
    return bound_of(regs, mem.index);
}

bool plain_segment(const ZydisDecodedOperandMem& mem) {
    return mem.segment != ZYDIS_REGISTER_FS && mem.segment != ZYDIS_REGISTER_GS;
}

bool is_branch(const ZydisDecodedInstruction& insn) {
    switch (insn.meta.category) {
        case ZYDIS_CATEGORY_RET:
        case ZYDIS_CATEGORY_CALL:
        case ZYDIS_CATEGORY_UNCOND_BR:
        case ZYDIS_CATEGORY_COND_BR:
        case ZYDIS_CATEGORY_SYSCALL:
        case ZYDIS_CATEGORY_INTERRUPT:
        case ZYDIS_CATEGORY_SYSTEM:
            return true;
        default:
            return false;
    }
}

// One instruction on the path from the bound to the jump: updates what is
// known about the registers it writes.
void step(const Located& at, Registers& regs) {
    const ZydisDecodedInstruction& insn = at.decoded.insn;
    const ZydisDecodedOperand* op = at.decoded.operands;
    std::optional<Known> result;
    ZydisRegister written = ZYDIS_REGISTER_NONE;
    bool two_registers = insn.operand_count_visible >= 2 && op[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
                         op[1].type == ZYDIS_OPERAND_TYPE_REGISTER;
    auto whole = [](uint64_t bound) { return Known{Known::Kind::Bounded, bound, 0, 64}; };
    if (insn.mnemonic == ZYDIS_MNEMONIC_MOV && two_registers) {
        written = op[0].reg.value;
        if (is_gpr64(op[0].reg.value) && is_gpr64(op[1].reg.value)) {
            result = known(regs, op[1].reg.value);
        } else if (is_gpr32(op[0].reg.value) && is_gpr32(op[1].reg.value)) {
            // A 32-bit write zero-extends (SDM vol. 1, 3.4.1.1): the bound
            // now holds for the whole register.
            if (auto bound = bound_of(regs, op[1].reg.value)) result = whole(*bound);
        }
    } else if ((insn.mnemonic == ZYDIS_MNEMONIC_MOVZX || insn.mnemonic == ZYDIS_MNEMONIC_MOVSX ||
                insn.mnemonic == ZYDIS_MNEMONIC_MOVSXD) &&
               two_registers && (is_gpr64(op[0].reg.value) || is_gpr32(op[0].reg.value))) {
        written = op[0].reg.value;
        auto bound = bound_of(regs, op[1].reg.value);
        // Sign extension keeps the value when the bound leaves the sign bit clear.
        bool sign = insn.mnemonic != ZYDIS_MNEMONIC_MOVZX;
        if (bound && (!sign || *bound < (uint64_t{1} << (width_of(op[1].reg.value) - 1))))
            result = whole(*bound);
    } else if (insn.mnemonic == ZYDIS_MNEMONIC_LEA && op[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
               op[1].type == ZYDIS_OPERAND_TYPE_MEMORY) {
        written = op[0].reg.value;
        ZyanU64 address = 0;
        if (is_gpr64(written) && op[1].mem.base == ZYDIS_REGISTER_RIP &&
            op[1].mem.index == ZYDIS_REGISTER_NONE &&
            ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&insn, &op[1], at.address, &address)))
            result = Known{Known::Kind::Address, 0, address, 64};
    } else if (insn.mnemonic == ZYDIS_MNEMONIC_MOVSXD && op[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
               op[1].type == ZYDIS_OPERAND_TYPE_MEMORY) {
        written = op[0].reg.value;
        const ZydisDecodedOperandMem& mem = op[1].mem;
        auto base = mem.base == ZYDIS_REGISTER_NONE ? std::nullopt : known(regs, mem.base);
        auto bound = bounded_index(regs, mem);
        if (is_gpr64(written) && op[1].size == 32 && plain_segment(mem) && mem.scale == 4 && bound && base &&
            base->kind == Known::Kind::Address)
            result =
                Known{Known::Kind::Entry, *bound, base->address + static_cast<uint64_t>(mem.disp.value), 64};
    } else if (insn.mnemonic == ZYDIS_MNEMONIC_ADD && two_registers && is_gpr64(op[0].reg.value) &&
               is_gpr64(op[1].reg.value)) {
        written = op[0].reg.value;
        auto a = known(regs, op[0].reg.value), b = known(regs, op[1].reg.value);
        if (a && b && a->kind == Known::Kind::Address && b->kind == Known::Kind::Entry) std::swap(a, b);
        if (a && b && a->kind == Known::Kind::Entry && b->kind == Known::Kind::Address &&
            a->address == b->address)
            result = Known{Known::Kind::Target, a->bound, a->address, 64};
    }
    // Everything the instruction writes (flags aside) is unknown after it,
    // except the one result recognised above.
    for (uint8_t i = 0; i < insn.operand_count; ++i)
        if (op[i].type == ZYDIS_OPERAND_TYPE_REGISTER && (op[i].actions & ZYDIS_OPERAND_ACTION_MASK_WRITE))
            regs.erase(family(op[i].reg.value));
    if (result && written != ZYDIS_REGISTER_NONE) regs[family(written)] = *result;
}

// The jump itself, given what is known before it.
Result<JumpTable> at_jump(const Located& jump, const Registers& regs) {
    const ZydisDecodedOperand& op = jump.decoded.operands[0];
    if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
        auto k = known(regs, op.reg.value);
        if (is_gpr64(op.reg.value) && k && k->kind == Known::Kind::Target)
            return JumpTable{JumpTable::Form::Relative, k->address, k->bound + 1};
        return Error("its register is not a table entry plus the table's address after the bounds check");
    }
    if (op.type == ZYDIS_OPERAND_TYPE_MEMORY && op.size == 64) {
        const ZydisDecodedOperandMem& mem = op.mem;
        auto bound = bounded_index(regs, mem);
        if (!bound || mem.scale != 8 || !plain_segment(mem))
            return Error("its index is not the bounded switch value scaled by 8");
        uint64_t table = static_cast<uint64_t>(mem.disp.value);
        if (mem.base != ZYDIS_REGISTER_NONE) {
            auto base = known(regs, mem.base);
            if (!base || base->kind != Known::Kind::Address)
                return Error("its base is not a known table address");
            table += base->address;
        }
        return JumpTable{JumpTable::Form::Absolute, table, *bound + 1};
    }
    return Error("it is not a jump through a register or a table in memory");
}

}  // namespace

Result<JumpTable> find_jump_table(std::span<const uint8_t> code, uint64_t start, uint64_t jump,
                                  const std::vector<uint64_t>& branch_targets) {
    std::vector<Located> insns;
    for (size_t offset = 0; offset < code.size();) {
        Located& at = insns.emplace_back();
        at.address = start + offset;
        if (!detail::decode(code.subspan(offset), at.decoded))
            return Error("cannot decode the instruction at " + detail::hex(at.address));
        offset += at.decoded.insn.length;
    }
    auto index_of = [&](uint64_t address) -> std::optional<size_t> {
        auto it = std::lower_bound(insns.begin(), insns.end(), address,
                                   [](const Located& l, uint64_t a) { return l.address < a; });
        if (it == insns.end() || it->address != address) return std::nullopt;
        return static_cast<size_t>(it - insns.begin());
    };
    auto jump_index = index_of(jump);
    if (!jump_index || insns[*jump_index].decoded.insn.meta.category != ZYDIS_CATEGORY_UNCOND_BR)
        return Error("no indirect jmp at " + detail::hex(jump));

    std::optional<Error> nearest;
    // Bounds checks nearest the jump first: `cmp IDX, N` then jcc.
    for (size_t i = *jump_index; i-- > 1;) {
        const Located& cmp = insns[i - 1];
        const Located& branch = insns[i];
        const ZydisDecodedOperand* c = cmp.decoded.operands;
        if (cmp.decoded.insn.mnemonic != ZYDIS_MNEMONIC_CMP || c[0].type != ZYDIS_OPERAND_TYPE_REGISTER ||
            c[1].type != ZYDIS_OPERAND_TYPE_IMMEDIATE)
            continue;
        ZydisMnemonic jcc = branch.decoded.insn.mnemonic;
        bool falls_into_table = jcc == ZYDIS_MNEMONIC_JNBE || jcc == ZYDIS_MNEMONIC_JNB;  // ja, jae
        bool jumps_to_table = jcc == ZYDIS_MNEMONIC_JBE || jcc == ZYDIS_MNEMONIC_JB;
        if (!falls_into_table && !jumps_to_table) continue;
        bool inclusive = jcc == ZYDIS_MNEMONIC_JNBE || jcc == ZYDIS_MNEMONIC_JBE;  // IDX <= N, else IDX < N
        auto fail = [&](const std::string& why) {
            if (!nearest)
                nearest =
                    Error("the bounds check at " + detail::hex(cmp.address) + " does not prove it: " + why);
        };
        ZydisRegister index = c[0].reg.value;
        if (!is_low_gpr(index)) {
            fail("it compares a high byte register");
            continue;
        }
        // The immediate is sign-extended to the register's width; ja/jae
        // compare that unsigned.
        const unsigned width = width_of(index);
        uint64_t limit = c[1].imm.value.u;
        if (width < 64) limit &= (uint64_t{1} << width) - 1;
        if (limit < (inclusive ? 0u : 1u) || limit >= kMaxJumpTableEntries) {
            fail("its bound " + std::to_string(limit) + " is not a table size");
            continue;
        }
        uint64_t bound = limit - (inclusive ? 0 : 1);
        uint64_t path_start = branch.address + branch.decoded.insn.length;
        if (jumps_to_table) {
            ZyanU64 target = 0;
            if (!ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&branch.decoded.insn, &branch.decoded.operands[0],
                                                       branch.address, &target)))
                continue;
            path_start = target;
        }
        auto first = index_of(path_start);
        if (!first || *first > *jump_index || *jump_index - *first > kMaxPathInstructions) continue;
        // The bound holds at the jump only if the path has no other way in.
        bool entered = false;
        for (uint64_t target : branch_targets) {
            bool into_path = target > path_start && target <= jump;
            entered |= into_path;
        }
        auto at_start = std::count(branch_targets.begin(), branch_targets.end(), path_start);
        if (entered || at_start != (jumps_to_table ? 1 : 0)) {
            fail("another branch jumps into the code between it and the jump");
            continue;
        }
        Registers regs;
        regs[family(index)] = Known{Known::Kind::Bounded, bound, 0, width};
        // A 32-bit index written by the instruction just before the compare
        // (clang: `lea eax, [rdi - 1]; cmp eax, 6`) has a zero upper half,
        // unless a branch can reach the compare from elsewhere.
        if (width == 32 && i >= 2 &&
            std::count(branch_targets.begin(), branch_targets.end(), cmp.address) == 0) {
            const Located& before = insns[i - 2];
            const ZydisDecodedOperand& dest = before.decoded.operands[0];
            if (before.decoded.insn.operand_count_visible >= 1 && dest.type == ZYDIS_OPERAND_TYPE_REGISTER &&
                (dest.actions & ZYDIS_OPERAND_ACTION_MASK_WRITE) && is_gpr32(dest.reg.value) &&
                family(dest.reg.value) == family(index) && !is_branch(before.decoded.insn))
                regs[family(index)].width = 64;
        }
        bool straight = true;
        for (size_t k = *first; k < *jump_index; ++k) {
            if (is_branch(insns[k].decoded.insn)) {
                straight = false;
                break;
            }
            step(insns[k], regs);
        }
        if (!straight) {
            fail("a branch lies between it and the jump");
            continue;
        }
        auto table = at_jump(insns[*jump_index], regs);
        if (!table) {
            fail(table.error().message());
            continue;
        }
        return table;
    }
    if (nearest) return *nearest;
    return Error("no bounds check (cmp IDX, N; ja) before it");
}

Result<std::vector<uint64_t>> jump_table_targets(const JumpTable& table, std::span<const uint8_t> bytes) {
    if (bytes.size() != table.entries * table.entry_size())
        return Error("the jump table at " + detail::hex(table.table) + " is cut short");
    std::vector<uint64_t> targets;
    targets.reserve(table.entries);
    for (uint64_t i = 0; i < table.entries; ++i) {
        if (table.form == JumpTable::Form::Absolute) {
            uint64_t address = 0;
            std::memcpy(&address, bytes.data() + 8 * i, 8);
            targets.push_back(address);
        } else {
            int32_t offset = 0;
            std::memcpy(&offset, bytes.data() + 4 * i, 4);
            targets.push_back(table.table + static_cast<uint64_t>(static_cast<int64_t>(offset)));
        }
    }
    return targets;
}

}  // namespace uprobe::arch
