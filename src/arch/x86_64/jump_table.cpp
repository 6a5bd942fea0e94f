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
        Bounded,       // value <= bound
        BoundedLow32,  // low 32 bits <= bound; the upper half is unknown
        Address,       // value == address (lea reg, [rip + X])
        Entry,         // sign-extended dword of the table at `address`, index <= bound
        Target,        // Entry + the table's address: where a relative table jumps
    };
    Kind kind = Kind::Bounded;
    uint64_t bound = 0;
    uint64_t address = 0;
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

std::optional<Known> known(const Registers& regs, ZydisRegister reg) {
    auto it = regs.find(family(reg));
    if (it == regs.end()) return std::nullopt;
    return it->second;
}

// The index of a memory operand as a proven bound, or nullopt.
std::optional<uint64_t> bounded_index(const Registers& regs, const ZydisDecodedOperandMem& mem) {
    if (mem.index == ZYDIS_REGISTER_NONE || !is_gpr64(mem.index)) return std::nullopt;
    auto k = known(regs, mem.index);
    if (!k || k->kind != Known::Kind::Bounded) return std::nullopt;
    return k->bound;
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
    if (insn.mnemonic == ZYDIS_MNEMONIC_MOV && two_registers) {
        written = op[0].reg.value;
        auto from = known(regs, op[1].reg.value);
        if (is_gpr64(op[0].reg.value) && is_gpr64(op[1].reg.value)) {
            result = from;
        } else if (is_gpr32(op[0].reg.value) && is_gpr32(op[1].reg.value) && from &&
                   (from->kind == Known::Kind::Bounded || from->kind == Known::Kind::BoundedLow32)) {
            // A 32-bit write zero-extends (SDM vol. 1, 3.4.1.1): the bound
            // (< 2^32) now holds for the whole register.
            result = Known{Known::Kind::Bounded, from->bound, 0};
        }
    } else if (insn.mnemonic == ZYDIS_MNEMONIC_MOVSXD && two_registers && is_gpr64(op[0].reg.value) &&
               is_gpr32(op[1].reg.value)) {
        written = op[0].reg.value;
        auto from = known(regs, op[1].reg.value);
        // An unsigned bound below 2^31 means the sign bit is clear.
        if (from && (from->kind == Known::Kind::Bounded || from->kind == Known::Kind::BoundedLow32) &&
            from->bound < (uint64_t{1} << 31))
            result = Known{Known::Kind::Bounded, from->bound, 0};
    } else if (insn.mnemonic == ZYDIS_MNEMONIC_LEA && op[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
               op[1].type == ZYDIS_OPERAND_TYPE_MEMORY) {
        written = op[0].reg.value;
        ZyanU64 address = 0;
        if (is_gpr64(written) && op[1].mem.base == ZYDIS_REGISTER_RIP &&
            op[1].mem.index == ZYDIS_REGISTER_NONE &&
            ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&insn, &op[1], at.address, &address)))
            result = Known{Known::Kind::Address, 0, address};
    } else if (insn.mnemonic == ZYDIS_MNEMONIC_MOVSXD && op[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
               op[1].type == ZYDIS_OPERAND_TYPE_MEMORY) {
        written = op[0].reg.value;
        const ZydisDecodedOperandMem& mem = op[1].mem;
        auto base = mem.base == ZYDIS_REGISTER_NONE ? std::nullopt : known(regs, mem.base);
        auto bound = bounded_index(regs, mem);
        if (is_gpr64(written) && op[1].size == 32 && plain_segment(mem) && mem.scale == 4 && bound && base &&
            base->kind == Known::Kind::Address)
            result = Known{Known::Kind::Entry, *bound, base->address + static_cast<uint64_t>(mem.disp.value)};
    } else if (insn.mnemonic == ZYDIS_MNEMONIC_ADD && two_registers && is_gpr64(op[0].reg.value) &&
               is_gpr64(op[1].reg.value)) {
        written = op[0].reg.value;
        auto a = known(regs, op[0].reg.value), b = known(regs, op[1].reg.value);
        if (a && b && a->kind == Known::Kind::Address && b->kind == Known::Kind::Entry) std::swap(a, b);
        if (a && b && a->kind == Known::Kind::Entry && b->kind == Known::Kind::Address &&
            a->address == b->address)
            result = Known{Known::Kind::Target, a->bound, a->address};
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
        int64_t limit = c[1].imm.is_signed ? c[1].imm.value.s : static_cast<int64_t>(c[1].imm.value.u);
        if (!is_gpr64(index) && !is_gpr32(index)) {
            fail("it compares a partial register");
            continue;
        }
        if (limit < (inclusive ? 0 : 1) || static_cast<uint64_t>(limit) >= kMaxJumpTableEntries) {
            fail("its bound " + std::to_string(limit) + " is not a table size");
            continue;
        }
        uint64_t bound = static_cast<uint64_t>(limit) - (inclusive ? 0 : 1);
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
        regs[family(index)] =
            Known{is_gpr64(index) ? Known::Kind::Bounded : Known::Kind::BoundedLow32, bound, 0};
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
