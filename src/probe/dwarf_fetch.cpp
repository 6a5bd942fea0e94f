#include "probe/dwarf_fetch.hpp"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <libelf.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <optional>

#include "arch/x86_64/registers.hpp"
#include "base/strings.hpp"
#include "dwarf/debug_info.hpp"
#include "elf/binary.hpp"
#include "probe/resolve.hpp"

namespace uprobe::probe {

// ---------------------------------------------------------------------------
// Call frame information

struct CallFrames::Impl {
    struct File {
        int fd = -1;
        Elf* elf = nullptr;
        Dwarf* dwarf = nullptr;
    };
    File binary, debug;
    Dwarf_CFI* eh_frame = nullptr;     // owned (dwarf_getcfi_elf)
    Dwarf_CFI* debug_frame = nullptr;  // owned by debug.dwarf

    ~Impl() {
        if (eh_frame) dwarf_cfi_end(eh_frame);
        for (File* f : {&binary, &debug}) {
            if (f->dwarf) dwarf_end(f->dwarf);
            if (f->elf) elf_end(f->elf);
            if (f->fd >= 0) ::close(f->fd);
        }
    }
};

CallFrames::CallFrames(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CallFrames::~CallFrames() = default;

Result<std::unique_ptr<CallFrames>> CallFrames::open(const std::string& binary_path, const std::string& debug_path) {
    elf_version(EV_CURRENT);
    auto impl = std::make_unique<Impl>();
    auto open_file = [](const std::string& path, Impl::File& f) {
        f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (f.fd >= 0) f.elf = elf_begin(f.fd, ELF_C_READ_MMAP, nullptr);
        return f.elf != nullptr;
    };
    if (open_file(binary_path, impl->binary)) impl->eh_frame = dwarf_getcfi_elf(impl->binary.elf);
    // .debug_frame lives with the DWARF: in the debug file, or in an
    // unstripped binary compiled without .eh_frame.
    Impl::File& dwarf_file = !debug_path.empty() && debug_path != binary_path ? impl->debug : impl->binary;
    if (&dwarf_file == &impl->binary || open_file(debug_path, impl->debug)) {
        if (dwarf_file.elf) {
            dwarf_file.dwarf = dwarf_begin_elf(dwarf_file.elf, DWARF_C_READ, nullptr);
            if (dwarf_file.dwarf) impl->debug_frame = dwarf_getcfi(dwarf_file.dwarf);
        }
    }
    if (!impl->eh_frame && !impl->debug_frame)
        return Error("no call frame information (.eh_frame or .debug_frame) in " + binary_path);
    return std::unique_ptr<CallFrames>(new CallFrames(std::move(impl)));
}

Result<CfaRule> CallFrames::cfa_at(uint64_t vaddr) const {
    for (Dwarf_CFI* cfi : {impl_->eh_frame, impl_->debug_frame}) {
        if (!cfi) continue;
        Dwarf_Frame* frame = nullptr;
        if (dwarf_cfi_addrframe(cfi, vaddr, &frame) != 0 || !frame) continue;
        Dwarf_Op* ops = nullptr;
        size_t count = 0;
        std::optional<CfaRule> rule;
        // libdw describes a register+offset rule as one DW_OP_bregN.
        if (dwarf_frame_cfa(frame, &ops, &count) == 0 && count == 1) {
            uint8_t atom = ops[0].atom;
            if (atom >= DW_OP_breg0 && atom <= DW_OP_breg31)
                rule = CfaRule{unsigned(atom - DW_OP_breg0), int64_t(ops[0].number)};
            else if (atom == DW_OP_bregx)
                rule = CfaRule{unsigned(ops[0].number), int64_t(ops[0].number2)};
        }
        std::free(frame);
        if (rule) return *rule;
        return Error(fmt::format("the frame address at {:#x} is a DWARF expression (not supported)", vaddr));
    }
    return Error(fmt::format("no call frame information covers {:#x}", vaddr));
}

// ---------------------------------------------------------------------------
// Compiling locations

namespace {

using dwarf::DebugInfo;
using dwarf::Type;
using Op = DebugInfo::Op;

Result<void> append(FetchProgram& p, FetchStep step) {
    // Consecutive constant additions fold, so deep field paths stay short.
    if (step.op == FetchOp::AddConst && p.step_count > 0) {
        FetchStep& last = p.steps[p.step_count - 1];
        if (last.op == FetchOp::AddConst || last.op == FetchOp::LoadConst) {
            last.imm = int64_t(uint64_t(last.imm) + uint64_t(step.imm));
            return {};
        }
    }
    if (step.op == FetchOp::AddConst && step.imm == 0) return {};
    if (p.step_count >= FetchProgram::kMaxSteps) return Error("expression too deep for a fetch program");
    p.steps[p.step_count++] = step;
    return {};
}

FetchProgram constant_program(uint64_t value) {
    FetchProgram p;
    p.steps[0] = {FetchOp::LoadConst, 0, 8, 0, int64_t(value)};
    p.step_count = 1;
    return p;
}

// A DWARF register's value as a program (x86-64 psABI numbering).
Result<FetchProgram> register_program(unsigned dwarf_register) {
    FetchProgram p;
    if (dwarf_register >= 17 && dwarf_register <= 32) {
        p.steps[0] = {FetchOp::LoadXmm, uint8_t(dwarf_register - 17), 8, 0, 0};
        p.step_count = 1;
        p.needs_fpregs = true;
        return p;
    }
    auto reg = arch::register_by_dwarf(dwarf_register);
    if (!reg) return Error(fmt::format("DWARF register {} is not supported", dwarf_register));
    p.steps[0] = {FetchOp::LoadRegister, uint8_t(reg->slot), 8, 0, 0};
    p.step_count = 1;
    return p;
}

// Where a value lives, from its location expression.
struct Piece {
    enum class Kind { Memory, Register, Value, Bytes, Missing };
    Kind kind = Kind::Missing;
    FetchProgram program;        // Memory: the address; Register, Value: the value
    std::vector<Arith> arith;    // Value: applied after the program
    std::vector<uint8_t> bytes;  // Bytes
    uint64_t size = 0;           // bytes covered; 0: the whole value (sole piece)
    std::string why;             // Missing
};

struct Place {
    std::vector<Piece> pieces;
    uint64_t offset = 0;  // where the value starts within the pieces

    static Place missing(std::string why) {
        Place p;
        p.pieces.push_back({Piece::Kind::Missing, {}, {}, {}, 0, std::move(why)});
        return p;
    }
    static Place memory(FetchProgram address) {
        Place p;
        p.pieces.push_back({Piece::Kind::Memory, address, {}, {}, 0, {}});
        return p;
    }
};

using SiteEnv = VariableSite;

// One value of the symbolic DWARF stack: a constant or a computed value.
struct StackValue {
    bool is_const = false;
    uint64_t value = 0;
    FetchProgram program;
    std::vector<Arith> arith;  // after the program; then it is no address

    FetchProgram as_program() const { return is_const ? constant_program(value) : program; }
};

Result<StackValue> cfa_value(const SiteEnv& env) {
    if (!env.frames) return Error("no call frame information for the frame base");
    UPROBE_TRY(CfaRule rule, env.frames->cfa_at(env.vaddr));
    UPROBE_TRY(FetchProgram p, register_program(rule.dwarf_register));
    UPROBE_CHECK(append(p, {FetchOp::AddConst, 0, 8, 0, rule.offset}));
    return StackValue{false, 0, p, {}};
}

Result<StackValue> register_plus(unsigned dwarf_register, int64_t offset) {
    UPROBE_TRY(FetchProgram p, register_program(dwarf_register));
    if (p.steps[0].op == FetchOp::LoadXmm) return Error("an address in an xmm register is not supported");
    UPROBE_CHECK(append(p, {FetchOp::AddConst, 0, 8, 0, offset}));
    return StackValue{false, 0, p, {}};
}

std::string op_name(uint8_t atom) { return fmt::format("DW_OP 0x{:02x}", atom); }

Result<void> add_const(StackValue& v, uint64_t add) {
    if (v.is_const) v.value += add;
    else if (!v.arith.empty()) v.arith.push_back({Arith::Op::Add, add});
    else UPROBE_CHECK(append(v.program, {FetchOp::AddConst, 0, 8, 0, int64_t(add)}));
    return {};
}

Result<Place> compile_location(const std::vector<Op>& ops, const std::vector<Op>& frame_base, const SiteEnv& env,
                               int depth = 0);

// DW_AT_frame_base evaluates to an address; a register location there
// (DW_OP_reg6, older compilers) means the register's value.
Result<StackValue> frame_base_value(const std::vector<Op>& frame_base, const SiteEnv& env, int depth) {
    if (frame_base.empty()) return Error("the function has no frame base here");
    if (depth > 2) return Error("frame base refers to itself");
    UPROBE_TRY(Place base, compile_location(frame_base, {}, env, depth + 1));
    if (base.pieces.size() != 1) return Error("a frame base in pieces is not supported");
    const Piece& piece = base.pieces[0];
    if (!piece.arith.empty()) return Error("a computed frame base is not supported");
    switch (piece.kind) {
    case Piece::Kind::Memory:
    case Piece::Kind::Register:
    case Piece::Kind::Value: return StackValue{false, 0, piece.program, {}};
    default: return Error("unusable frame base");
    }
}

Result<Place> compile_location(const std::vector<Op>& ops, const std::vector<Op>& frame_base, const SiteEnv& env,
                               int depth) {
    std::vector<StackValue> stack;
    Place place;
    std::optional<Piece> current;  // set by reg/stack_value/implicit_value, closed by piece
    auto need = [&](size_t n, uint8_t atom) -> Result<void> {
        if (stack.size() < n) return Error(fmt::format("malformed location expression ({} on a short stack)", op_name(atom)));
        return {};
    };
    auto close_piece = [&](uint64_t size) -> Result<void> {
        Piece piece;
        if (current) {
            piece = std::move(*current);
        } else if (!stack.empty()) {
            if (!stack.back().arith.empty()) return Error("a computed address is not supported");
            piece.kind = Piece::Kind::Memory;
            piece.program = stack.back().as_program();
        } else {
            piece.kind = Piece::Kind::Missing;
            piece.why = "optimized out";
        }
        piece.size = size;
        place.pieces.push_back(std::move(piece));
        current.reset();
        stack.clear();
        return {};
    };
    for (size_t i = 0; i < ops.size(); ++i) {
        const Op& op = ops[i];
        uint8_t a = op.atom;
        if (current && a != DW_OP_piece) return Error("malformed location expression (operation after a register)");
        if (a >= DW_OP_lit0 && a <= DW_OP_lit31) {
            stack.push_back({true, uint64_t(a - DW_OP_lit0), {}, {}});
        } else if (a >= DW_OP_breg0 && a <= DW_OP_breg31) {
            UPROBE_TRY(StackValue v, register_plus(a - DW_OP_breg0, int64_t(op.number)));
            stack.push_back(v);
        } else if (a >= DW_OP_reg0 && a <= DW_OP_reg31) {
            UPROBE_TRY(FetchProgram p, register_program(a - DW_OP_reg0));
            current = Piece{Piece::Kind::Register, p, {}, {}, 0, {}};
        } else {
            switch (a) {
            case DW_OP_addr: stack.push_back({true, op.number + env.load_bias, {}, {}}); break;
            case DW_OP_const1u: case DW_OP_const2u: case DW_OP_const4u: case DW_OP_const8u:
            case DW_OP_const1s: case DW_OP_const2s: case DW_OP_const4s: case DW_OP_const8s:
            case DW_OP_constu: case DW_OP_consts:
                stack.push_back({true, op.number, {}, {}});
                break;
            case DW_OP_bregx: {
                UPROBE_TRY(StackValue v, register_plus(unsigned(op.number), int64_t(op.number2)));
                stack.push_back(v);
                break;
            }
            case DW_OP_regx: {
                UPROBE_TRY(FetchProgram p, register_program(unsigned(op.number)));
                current = Piece{Piece::Kind::Register, p, {}, {}, 0, {}};
                break;
            }
            case DW_OP_fbreg: {
                UPROBE_TRY(StackValue base, frame_base_value(frame_base, env, depth));
                UPROBE_CHECK(add_const(base, op.number));
                stack.push_back(base);
                break;
            }
            case DW_OP_call_frame_cfa: {
                UPROBE_TRY(StackValue v, cfa_value(env));
                stack.push_back(v);
                break;
            }
            case DW_OP_plus_uconst: {
                UPROBE_CHECK(need(1, a));
                UPROBE_CHECK(add_const(stack.back(), op.number));
                break;
            }
            case DW_OP_plus:
            case DW_OP_minus: {
                UPROBE_CHECK(need(2, a));
                StackValue rhs = stack.back();
                stack.pop_back();
                StackValue& lhs = stack.back();
                if (!rhs.is_const && a == DW_OP_plus && lhs.is_const) std::swap(lhs, rhs);
                if (!rhs.is_const) return Error("adding two run-time values is not supported");
                UPROBE_CHECK(add_const(lhs, a == DW_OP_plus ? rhs.value : uint64_t(0) - rhs.value));
                break;
            }
            case DW_OP_neg: case DW_OP_not: case DW_OP_and: case DW_OP_or: case DW_OP_xor:
            case DW_OP_mul: case DW_OP_shl: case DW_OP_shr: case DW_OP_shra: {
                bool unary = a == DW_OP_neg || a == DW_OP_not;
                UPROBE_CHECK(need(unary ? 1 : 2, a));
                StackValue rhs = stack.back();
                if (!unary) stack.pop_back();
                StackValue& lhs = stack.back();
                bool commutes = a == DW_OP_mul || a == DW_OP_and || a == DW_OP_or || a == DW_OP_xor;
                if (!unary && lhs.is_const && !rhs.is_const && commutes) std::swap(lhs, rhs);
                if (!lhs.is_const && (unary || rhs.is_const)) {
                    // A run-time value with a constant operand: applied at the hit.
                    Arith::Op arith = a == DW_OP_neg ? Arith::Op::Neg : a == DW_OP_not ? Arith::Op::Not
                                      : a == DW_OP_and ? Arith::Op::And : a == DW_OP_or ? Arith::Op::Or
                                      : a == DW_OP_xor ? Arith::Op::Xor : a == DW_OP_mul ? Arith::Op::Mul
                                      : a == DW_OP_shl ? Arith::Op::Shl : a == DW_OP_shr ? Arith::Op::Shr
                                                       : Arith::Op::Sar;
                    lhs.arith.push_back({arith, unary ? 0 : rhs.value});
                    break;
                }
                if (!lhs.is_const || !rhs.is_const)
                    return Error(fmt::format("arithmetic ({}) on two run-time values is not supported", op_name(a)));
                uint64_t x = lhs.value, y = rhs.value;
                switch (a) {
                case DW_OP_neg: x = uint64_t(0) - x; break;
                case DW_OP_not: x = ~x; break;
                case DW_OP_and: x &= y; break;
                case DW_OP_or: x |= y; break;
                case DW_OP_xor: x ^= y; break;
                case DW_OP_mul: x *= y; break;
                case DW_OP_shl: x = y < 64 ? x << y : 0; break;
                case DW_OP_shr: x = y < 64 ? x >> y : 0; break;
                default: x = uint64_t(int64_t(x) >> std::min<uint64_t>(y, 63)); break;
                }
                lhs.value = x;
                break;
            }
            case DW_OP_deref:
            case DW_OP_deref_size: {
                UPROBE_CHECK(need(1, a));
                uint64_t size = a == DW_OP_deref ? 8 : op.number;
                if (size != 1 && size != 2 && size != 4 && size != 8)
                    return Error(fmt::format("DW_OP_deref_size {} is not supported", size));
                StackValue& top = stack.back();
                if (!top.arith.empty()) return Error("a computed address is not supported");
                top.program = top.as_program();
                top.is_const = false;
                UPROBE_CHECK(append(top.program, {FetchOp::Deref, 0, uint8_t(size), 0, 0}));
                break;
            }
            case DW_OP_dup: UPROBE_CHECK(need(1, a)); stack.push_back(stack.back()); break;
            case DW_OP_drop: UPROBE_CHECK(need(1, a)); stack.pop_back(); break;
            case DW_OP_over: UPROBE_CHECK(need(2, a)); stack.push_back(stack[stack.size() - 2]); break;
            case DW_OP_swap: UPROBE_CHECK(need(2, a)); std::swap(stack.back(), stack[stack.size() - 2]); break;
            case DW_OP_stack_value:
                UPROBE_CHECK(need(1, a));
                current = Piece{Piece::Kind::Value, stack.back().as_program(), stack.back().arith, {}, 0, {}};
                break;
            case DW_OP_implicit_value:
                current = Piece{Piece::Kind::Bytes, {}, {}, op.block, 0, {}};
                break;
            case DW_OP_piece: UPROBE_CHECK(close_piece(op.number)); break;
            case DW_OP_entry_value:
            case DW_OP_GNU_entry_value: {
                // The value a register had when the function was entered:
                // known only at the entry itself, where nothing has run yet.
                unsigned reg = 0;
                if (op.nested.size() == 1 && op.nested[0].atom >= DW_OP_reg0 && op.nested[0].atom <= DW_OP_reg31)
                    reg = op.nested[0].atom - DW_OP_reg0;
                else if (op.nested.size() == 1 && op.nested[0].atom == DW_OP_regx)
                    reg = unsigned(op.nested[0].number);
                else
                    return Error("entry value unavailable");
                if (!env.at_function_entry) return Error("entry value unavailable");
                UPROBE_TRY(FetchProgram p, register_program(reg));
                stack.push_back({false, 0, p, {}});
                break;
            }
            default: return Error(fmt::format("unsupported location ({})", op_name(a)));
            }
        }
    }
    if (place.pieces.empty() || current || !stack.empty()) UPROBE_CHECK(close_piece(0));
    return place;
}

// ---------------------------------------------------------------------------
// Reading leaves from a place

struct Leaf {
    FetchProgram program;
    std::vector<Arith> arith;  // applied before the shift
    uint8_t shift = 0;         // bits below the value in what the program yields
};

uint8_t read_size(uint64_t bytes) { return bytes <= 1 ? 1 : bytes <= 2 ? 2 : bytes <= 4 ? 4 : 8; }

// The `size` bytes at `offset` of the value at `place`, as a program.
Result<Leaf> read_bytes(const Place& place, uint64_t offset, uint64_t size) {
    if (size == 0 || size > 8) return Error(fmt::format("{}-byte values are not supported", size));
    uint64_t at = place.offset + offset;
    uint64_t start = 0;
    for (const Piece& piece : place.pieces) {
        bool last = &piece == &place.pieces.back();
        uint64_t end = piece.size ? start + piece.size : UINT64_MAX;
        if (at >= end && !last) {
            start = end;
            continue;
        }
        if (at < start || at + size > end) return Error("a value split across DWARF pieces is not supported");
        uint64_t rel = at - start;
        Leaf leaf;
        switch (piece.kind) {
        case Piece::Kind::Missing: return Error(piece.why);
        case Piece::Kind::Memory:
            leaf.program = piece.program;
            UPROBE_CHECK(append(leaf.program, {FetchOp::AddConst, 0, 8, 0, int64_t(rel)}));
            UPROBE_CHECK(append(leaf.program, {FetchOp::Deref, 0, read_size(size), 0, 0}));
            break;
        case Piece::Kind::Register:
        case Piece::Kind::Value:
            if (rel + size > 8) return Error("a value beyond its register is not supported");
            leaf.program = piece.program;
            leaf.arith = piece.arith;
            leaf.shift = uint8_t(rel * 8);
            break;
        case Piece::Kind::Bytes: {
            if (rel + size > piece.bytes.size()) return Error("constant value too short");
            uint64_t v = 0;
            std::memcpy(&v, piece.bytes.data() + rel, size);
            leaf.program = constant_program(v);
            break;
        }
        }
        leaf.program.format = FetchFormat::Unsigned;
        leaf.program.value_size = 8;
        return leaf;
    }
    return Error("optimized out");
}

// The address of the value at `place`, when it is in memory.
Result<FetchProgram> address_of(const Place& place) {
    if (place.pieces.size() != 1 || place.pieces[0].kind != Piece::Kind::Memory)
        return Error("not in memory (in a register or a constant)");
    FetchProgram p = place.pieces[0].program;
    UPROBE_CHECK(append(p, {FetchOp::AddConst, 0, 8, 0, int64_t(place.offset)}));
    return p;
}

Place narrow(const Place& place, uint64_t offset) {
    Place out = place;
    if (out.pieces.size() == 1 && out.pieces[0].kind == Piece::Kind::Memory) {
        if (append(out.pieces[0].program, {FetchOp::AddConst, 0, 8, 0, int64_t(offset)})) return out;
    }
    out.offset += offset;
    return out;
}

// The pointer stored at `place`, as the address of what it points to.
Result<Place> deref_pointer(const Place& place) {
    UPROBE_TRY(Leaf leaf, read_bytes(place, 0, 8));
    if (leaf.shift || !leaf.arith.empty()) return Error("a computed pointer is not supported");
    return Place::memory(leaf.program);
}

bool is_char(const Type* t) {
    return t && t->kind == Type::Kind::Base && t->byte_size == 1 &&
           (t->encoding == Type::Encoding::SignedChar || t->encoding == Type::Encoding::UnsignedChar);
}

ValueNode error_node(std::string label, std::string why) {
    ValueNode n;
    n.kind = ValueNode::Kind::Error;
    n.label = std::move(label);
    n.error = std::move(why);
    return n;
}

ValueNode scalar_node(std::string label, const Place& place, const Type* type, uint64_t offset, uint64_t size,
                      uint32_t bit_offset = 0, uint32_t bit_size = 0) {
    uint64_t bytes = bit_size ? (bit_offset % 8 + bit_size + 7) / 8 : size;
    auto leaf = read_bytes(place, offset + (bit_size ? bit_offset / 8 : 0), read_size(bytes));
    if (!leaf) return error_node(std::move(label), leaf.error().message());
    ValueNode n;
    n.kind = ValueNode::Kind::Scalar;
    n.label = std::move(label);
    n.type = type;
    n.program = leaf->program;
    n.arith = leaf->arith;
    n.bit_shift = uint8_t(leaf->shift + (bit_size ? bit_offset % 8 : 0));
    n.bit_width = uint8_t(bit_size ? bit_size : 8 * size);
    return n;
}

ValueNode string_node(std::string label, Result<FetchProgram> address, uint64_t limit) {
    if (!address) return error_node(std::move(label), address.error().message());
    ValueNode n;
    n.kind = ValueNode::Kind::String;
    n.label = std::move(label);
    n.program = *address;
    n.program.format = FetchFormat::String;
    n.string_limit = limit;
    return n;
}

// The value of `type` at `place`, as a tree of leaves.
ValueNode value_node(std::string label, const Place& place, const Type* type, int depth) {
    if (!type) return error_node(std::move(label), "unknown type");
    switch (type->kind) {
    case Type::Kind::Base:
    case Type::Kind::Enum:
        if (type->byte_size == 0 || type->byte_size > 8)
            return error_node(std::move(label), fmt::format("{}-byte {} is not supported", type->byte_size, type->display()));
        return scalar_node(std::move(label), place, type, 0, type->byte_size);
    case Type::Kind::Pointer: {
        if (is_char(type->target)) {
            auto leaf = read_bytes(place, 0, 8);
            if (!leaf) return error_node(std::move(label), leaf.error().message());
            if (leaf->shift || !leaf->arith.empty()) return error_node(std::move(label), "a computed pointer is not supported");
            return string_node(std::move(label), leaf->program, 0);
        }
        return scalar_node(std::move(label), place, type, 0, 8);
    }
    case Type::Kind::Struct:
    case Type::Kind::Union:
    case Type::Kind::Class: {
        ValueNode n;
        n.kind = ValueNode::Kind::Aggregate;
        n.label = std::move(label);
        n.type = type;
        if (type->declaration) return error_node(std::move(n.label), "incomplete type " + type->display());
        if (depth >= kMaxStructDepth) return n;  // shown as {...}
        for (const auto& m : type->members) {
            if (m.bit_size) {
                n.children.push_back(scalar_node(m.name, place, m.type, m.offset, 0, m.bit_offset, m.bit_size));
                continue;
            }
            ValueNode child = value_node(m.name, narrow(place, m.offset), m.type, depth + 1);
            // Anonymous struct/union members show their fields in line.
            if (m.name.empty() && child.kind == ValueNode::Kind::Aggregate) {
                for (auto& c : child.children) n.children.push_back(std::move(c));
                continue;
            }
            n.children.push_back(std::move(child));
        }
        return n;
    }
    case Type::Kind::Array: {
        const Type* element = type->target;
        if (is_char(element)) return string_node(std::move(label), address_of(place), type->count.value_or(0));
        if (!element || element->byte_size == 0) return error_node(std::move(label), "array of unknown element size");
        ValueNode n;
        n.kind = ValueNode::Kind::Array;
        n.label = std::move(label);
        n.type = type;
        uint64_t count = type->count.value_or(0);
        for (uint64_t i = 0; i < std::min(count, kMaxArrayElements); ++i)
            n.children.push_back(value_node("", narrow(place, i * element->byte_size), element, depth + 1));
        n.string_limit = count;  // elements in the array, to mark truncation
        return n;
    }
    default: return error_node(std::move(label), "cannot show a value of type " + type->display());
    }
}

// ---------------------------------------------------------------------------
// Paths: NAME, *p, p->f, s.f, a[3]

struct PathStep {
    enum class Kind { Field, ArrowField, Index } kind;
    std::string name;
    uint64_t index = 0;
};

struct Path {
    int derefs = 0;
    std::string root;
    std::vector<PathStep> steps;
};

Result<Path> parse_path(std::string_view text) {
    Path path;
    size_t i = 0;
    auto bad = [&](std::string_view why) {
        return Error(fmt::format("cannot parse '{}' at column {}: {}", text, i + 1, why));
    };
    auto ident = [&]() -> std::string {
        size_t start = i;
        while (i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_')) ++i;
        return std::string(text.substr(start, i - start));
    };
    while (i < text.size() && text[i] == '*') ++path.derefs, ++i;
    path.root = ident();
    if (path.root.empty() || std::isdigit(static_cast<unsigned char>(path.root[0]))) return bad("expected a variable name");
    while (i < text.size()) {
        if (text[i] == '.') {
            ++i;
            std::string name = ident();
            if (name.empty()) return bad("expected a field name");
            path.steps.push_back({PathStep::Kind::Field, name, 0});
        } else if (text.substr(i, 2) == "->") {
            i += 2;
            std::string name = ident();
            if (name.empty()) return bad("expected a field name");
            path.steps.push_back({PathStep::Kind::ArrowField, name, 0});
        } else if (text[i] == '[') {
            ++i;
            size_t start = i;
            while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
            if (start == i || i >= text.size() || text[i] != ']') return bad("expected [NUMBER]");
            auto n = parse_uint(text.substr(start, i - start));
            if (!n) return bad("index too large");
            ++i;
            path.steps.push_back({PathStep::Kind::Index, "", *n});
        } else {
            return bad("expected '.', '->' or '['");
        }
    }
    return path;
}

// A field by name, looking through anonymous struct/union members.
const Type::Member* find_member(const Type* aggregate, const std::string& name, uint64_t& offset, int depth = 0) {
    if (depth > 8) return nullptr;  // corrupt DWARF may nest a type in itself
    for (const auto& m : aggregate->members) {
        if (m.name == name) {
            offset += m.offset;
            return &m;
        }
        if (m.name.empty() && m.type && !m.type->members.empty()) {
            uint64_t inner = offset + m.offset;
            if (const auto* found = find_member(m.type, name, inner, depth + 1)) {
                offset = inner;
                return found;
            }
        }
    }
    return nullptr;
}

std::string field_names(const Type* aggregate) {
    std::string out;
    for (const auto& m : aggregate->members)
        if (!m.name.empty()) out += (out.empty() ? "" : ", ") + m.name;
    return out;
}

bool is_aggregate(const Type* t) {
    return t && (t->kind == Type::Kind::Struct || t->kind == Type::Kind::Union || t->kind == Type::Kind::Class);
}

// Follows `path` from the root variable's place and type. Type errors
// (no such field, '.' on a pointer) fail compilation; a place that cannot
// be read becomes a Missing piece, shown as an error value at each hit.
Result<std::pair<Place, const Type*>> follow(const Path& path, Place place, const Type* type) {
    std::string so_far = path.root;
    auto go_into = [&](const std::string& field) -> Result<void> {
        if (!is_aggregate(type))
            return Error(fmt::format("'{}' is {}, not a struct", so_far, type ? type->display() : "of unknown type"));
        if (type->declaration) return Error(fmt::format("'{}' has the incomplete type {}", so_far, type->display()));
        uint64_t offset = 0;
        const Type::Member* m = find_member(type, field, offset);
        if (!m)
            return Error(fmt::format("{} has no field '{}' (fields: {})", type->display(), field, field_names(type)));
        if (m->bit_size) return Error(fmt::format("'{}.{}' is a bit-field; show the whole struct instead", so_far, field));
        place = narrow(place, offset);
        type = m->type;
        return {};
    };
    auto pointee = [&](std::string_view what) -> Result<void> {
        if (!type || type->kind != Type::Kind::Pointer)
            return Error(fmt::format("'{}' is {}, not a pointer ({})", so_far, type ? type->display() : "of unknown type", what));
        if (!type->target) return Error(fmt::format("'{}' is a void pointer", so_far));
        auto pointed = deref_pointer(place);
        place = pointed ? *pointed : Place::missing(pointed.error().message());
        type = type->target;
        return {};
    };
    for (const auto& step : path.steps) {
        switch (step.kind) {
        case PathStep::Kind::Field:
            if (type && type->kind == Type::Kind::Pointer)
                return Error(fmt::format("'{}' is a pointer: write {}->{}", so_far, so_far, step.name));
            UPROBE_CHECK(go_into(step.name));
            so_far += "." + step.name;
            break;
        case PathStep::Kind::ArrowField:
            if (is_aggregate(type))
                return Error(fmt::format("'{}' is not a pointer: write {}.{}", so_far, so_far, step.name));
            UPROBE_CHECK(pointee("->"));
            UPROBE_CHECK(go_into(step.name));
            so_far += "->" + step.name;
            break;
        case PathStep::Kind::Index:
            if (type && type->kind == Type::Kind::Array) {
                if (type->count && step.index >= *type->count)
                    return Error(fmt::format("index {} is out of bounds of '{}' ({})", step.index, so_far, type->display()));
                type = type->target;
            } else {
                UPROBE_CHECK(pointee("[]"));
            }
            if (!type || type->byte_size == 0) return Error(fmt::format("'{}' has elements of unknown size", so_far));
            place = narrow(place, step.index * type->byte_size);
            so_far += fmt::format("[{}]", step.index);
            break;
        }
    }
    for (int i = 0; i < path.derefs; ++i) {
        UPROBE_CHECK(pointee("*"));
        so_far = "*" + so_far;
    }
    return std::make_pair(place, type);
}

// ---------------------------------------------------------------------------
// Formatting at a hit

Value text_value(std::string text) {
    Value v;
    v.kind = Value::Kind::Text;
    v.text = std::move(text);
    return v;
}

Value format_bits(uint64_t bits, unsigned width, const Type* type, ValueType as) {
    auto sign_extend = [&](uint64_t x) {
        return width >= 64 ? int64_t(x) : int64_t(x << (64 - width)) >> (64 - width);
    };
    switch (as) {
    case ValueType::S8: case ValueType::S16: case ValueType::S32: case ValueType::S64:
        return Value::make_signed(sign_extend(bits));
    case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64:
        return Value::make_unsigned(bits);
    case ValueType::X8: case ValueType::X16: case ValueType::X32: case ValueType::X64:
        return Value::make_hex(bits);
    default: break;
    }
    if (!type) return Value::make_unsigned(bits);
    if (type->kind == Type::Kind::Pointer) return Value::make_hex(bits);
    if (type->kind == Type::Kind::Enum) {
        bool is_signed = type->is_signed() || (type->target && type->target->is_signed());
        int64_t value = is_signed ? sign_extend(bits) : int64_t(bits);
        for (const auto& [n, name] : type->enumerators)
            if (n == value) return text_value(name);
        return is_signed ? Value::make_signed(value) : Value::make_unsigned(bits);
    }
    switch (type->encoding) {
    case Type::Encoding::Float:
        if (width == 32) {
            float f;
            uint32_t b = uint32_t(bits);
            std::memcpy(&f, &b, 4);
            return Value::make_float(f);
        } else {
            double d;
            std::memcpy(&d, &bits, 8);
            return Value::make_float(d);
        }
    case Type::Encoding::Bool: {
        Value v;
        v.kind = Value::Kind::Bool;
        v.u = bits != 0;
        return v;
    }
    case Type::Encoding::SignedChar:
    case Type::Encoding::UnsignedChar:
        if (width == 8) {
            int64_t c = type->encoding == Type::Encoding::SignedChar ? sign_extend(bits) : int64_t(bits);
            if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') return text_value(fmt::format("'{}'", char(c)));
            return type->encoding == Type::Encoding::SignedChar ? Value::make_signed(c) : Value::make_unsigned(bits);
        }
        [[fallthrough]];
    case Type::Encoding::Signed: return type->is_signed() ? Value::make_signed(sign_extend(bits)) : Value::make_unsigned(bits);
    default: return Value::make_unsigned(bits);
    }
}

uint64_t apply(const std::vector<Arith>& arith, uint64_t x) {
    for (const auto& a : arith) {
        uint64_t y = a.imm;
        switch (a.op) {
        case Arith::Op::Add: x += y; break;
        case Arith::Op::Mul: x *= y; break;
        case Arith::Op::Shl: x = y < 64 ? x << y : 0; break;
        case Arith::Op::Shr: x = y < 64 ? x >> y : 0; break;
        case Arith::Op::Sar: x = uint64_t(int64_t(x) >> std::min<uint64_t>(y, 63)); break;
        case Arith::Op::And: x &= y; break;
        case Arith::Op::Or: x |= y; break;
        case Arith::Op::Xor: x ^= y; break;
        case Arith::Op::Neg: x = uint64_t(0) - x; break;
        case Arith::Op::Not: x = ~x; break;
        }
    }
    return x;
}

Value evaluate_node(const ValueNode& node, const LeafValue& leaf, const FetchContext& context) {
    switch (node.kind) {
    case ValueNode::Kind::Error: return Value::make_error(node.error);
    case ValueNode::Kind::Scalar: {
        Value raw = leaf(node.program, context);
        if (raw.kind == Value::Kind::Error) return raw;
        uint64_t bits = apply(node.arith, raw.u) >> std::min<unsigned>(node.bit_shift, 63);
        unsigned width = node.bit_width ? std::min<unsigned>(node.bit_width, 64) : 64;
        if (width < 64) bits &= (uint64_t{1} << width) - 1;
        return format_bits(bits, width, node.type, node.as);
    }
    case ValueNode::Kind::String: {
        FetchContext bounded = context;
        if (node.string_limit) bounded.string_max = std::min<size_t>(context.string_max, node.string_limit);
        Value v = leaf(node.program, bounded);
        // A full char[N] holds no NUL and is not cut.
        if (node.string_limit && v.kind == Value::Kind::String && v.text.size() == node.string_limit)
            v.truncated = false;
        return v;
    }
    case ValueNode::Kind::Aggregate:
    case ValueNode::Kind::Array: {
        bool array = node.kind == ValueNode::Kind::Array;
        if (!array && node.children.empty() && node.type && !node.type->members.empty()) return text_value("{...}");
        std::string text = array ? "[" : "{";
        for (size_t i = 0; i < node.children.size(); ++i) {
            const ValueNode& c = node.children[i];
            if (i) text += ", ";
            if (!array) text += (c.label.empty() ? std::string("?") : c.label) + "=";
            text += format_value(evaluate_node(c, leaf, context));
        }
        if (array && node.string_limit > node.children.size()) text += ", ...";
        text += array ? "]" : "}";
        return text_value(std::move(text));
    }
    }
    return Value::make_error("unknown value");
}

bool node_needs_fpregs(const ValueNode& n) {
    if (n.program.needs_fpregs) return true;
    for (const auto& c : n.children)
        if (node_needs_fpregs(c)) return true;
    return false;
}

std::string site_name(const Site& site) {
    if (site.function.empty()) return fmt::format("{:#x}", site.vaddr);
    return site.source.empty() ? fmt::format("{}+{}", site.function, site.function_offset)
                               : fmt::format("{} ({})", site.source, site.function);
}

// The value of one variable at the site, or an error node saying why not.
ValueNode variable_node(const DebugInfo::Variable& v, const SiteEnv& env, const Path* path) {
    Place place;
    if (v.optimized_out) {
        place = Place::missing("optimized out");
    } else if (v.location.empty() && v.has_const_value) {
        place.pieces.push_back({Piece::Kind::Bytes, {}, {}, std::vector<uint8_t>(8), 0, {}});
        std::memcpy(place.pieces[0].bytes.data(), &v.const_value, 8);
    } else {
        auto compiled = compile_location(v.location, v.frame_base, env);
        place = compiled ? *compiled : Place::missing(compiled.error().message());
    }
    if (!path) return value_node(v.name, place, v.type, 0);
    auto followed = follow(*path, place, v.type);
    if (!followed) return error_node(v.name, followed.error().message());  // compile_arg checked the path first
    return value_node(v.name, followed->first, followed->second, 0);
}

}  // namespace

std::string dwarf_name(std::string_view demangled) {
    if (auto paren = demangled.find('('); paren != std::string_view::npos) demangled = demangled.substr(0, paren);
    if (auto colons = demangled.rfind("::"); colons != std::string_view::npos) demangled = demangled.substr(colons + 2);
    return std::string(demangled);
}

// ---------------------------------------------------------------------------

ValueNode compile_variable(const dwarf::DebugInfo::Variable& variable, const VariableSite& site) {
    return variable_node(variable, site, nullptr);
}

bool ArgProgram::needs_fpregs() const {
    if (!is_dwarf) return plain.needs_fpregs;
    for (const auto& [name, node] : values)
        if (node_needs_fpregs(node)) return true;
    return false;
}

DwarfSource dwarf_source(Resolver& resolver, const std::string& path) {
    DwarfSource source;
    source.debug_info = resolver.debug_info(path);
    if (!source.debug_info) source.missing = resolver.debug_info_error(path);
    source.frames = resolver.call_frames(path);
    return source;
}

bool wants_return_type(const ArgSpec& arg) {
    return arg.fetch.kind == FetchKind::RetVal && arg.type == ValueType::Default;
}

namespace {

// A bare $retval of a function whose DWARF return type is float or double
// reads xmm0, where the System V ABI returns it (psABI 3.2.3), as if the
// user had written :f32/:f64. Without DWARF, or for any other type, it
// stays %rax; an explicit :TYPE always wins.
ArgSpec with_return_type(const ArgSpec& arg, const CompileContext& context, const DwarfSource& dwarf) {
    if (!context.at_return || !wants_return_type(arg) || !dwarf.debug_info || !context.site ||
        !context.site->function_vaddr)
        return arg;
    const dwarf::Type* type = dwarf.debug_info->return_type(context.site->function_vaddr);
    if (!type || type->kind != dwarf::Type::Kind::Base || type->encoding != dwarf::Type::Encoding::Float) return arg;
    // long double (16 bytes) comes back in st0, which fetches cannot read.
    if (type->byte_size != 4 && type->byte_size != 8) return arg;
    ArgSpec typed = arg;
    typed.type = type->byte_size == 4 ? ValueType::F32 : ValueType::F64;
    return typed;
}

}  // namespace

bool is_dwarf_arg(const ArgSpec& arg) {
    auto kind = arg.fetch.kind;
    return kind == FetchKind::DwarfVar || kind == FetchKind::Params || kind == FetchKind::Vars;
}

Result<ArgProgram> compile_arg(const ArgSpec& arg, const CompileContext& context, const DwarfSource& dwarf) {
    ArgProgram out;
    if (!is_dwarf_arg(arg)) {
        UPROBE_TRY(out.plain, compile_fetch(with_return_type(arg, context, dwarf), context));
        return out;
    }
    out.is_dwarf = true;
    auto fail = [&](std::string why) { return Error(fmt::format("arg '{}': {}", arg.name, why)); };
    if (!context.site) return fail("no probe site");
    const Site& site = *context.site;
    if (!dwarf.debug_info) return fail("needs debug info: " + (dwarf.missing.empty() ? "none found" : dwarf.missing));
    if (arg.type != ValueType::Default && arg.fetch.kind != FetchKind::DwarfVar)
        return fail("a :TYPE applies to one variable, not to " + to_string(arg.fetch));
    auto vars = dwarf.debug_info->variables_at(site.vaddr, dwarf_name(site.function));
    if (!vars) return fail(vars.error().message());

    SiteEnv env;
    env.vaddr = site.vaddr;
    env.load_bias = context.load_bias;
    env.frames = dwarf.frames;
    env.at_function_entry = site.function_vaddr != 0 && site.vaddr == site.function_vaddr;

    if (arg.fetch.kind != FetchKind::DwarfVar) {
        bool params_only = arg.fetch.kind == FetchKind::Params;
        for (const auto& v : *vars) {
            if (params_only && !v.is_parameter) continue;
            out.values.emplace_back(v.name, variable_node(v, env, nullptr));
        }
        return out;
    }

    auto path = parse_path(arg.fetch.expr);
    if (!path) return fail(path.error().message());
    const DebugInfo::Variable* root = nullptr;
    for (const auto& v : *vars)
        if (v.name == path->root) root = &v;
    // Not a local or parameter: a global (or a static of the unit).
    std::optional<DebugInfo::Variable> global;
    if (!root && (global = dwarf.debug_info->global_variable(site.vaddr, path->root))) root = &*global;
    if (!root) {
        std::string names;
        for (const auto& v : *vars) names += (names.empty() ? "" : ", ") + v.name;
        return fail(fmt::format("no variable '{}' at {}; in scope: {}", path->root, site_name(site),
                                names.empty() ? "none" : names));
    }
    // Type errors in the path are the user's to fix before anything runs.
    UPROBE_CHECK(follow(*path, Place::missing(""), root->type).context("arg '" + arg.name + "'"));
    ValueNode node = variable_node(*root, env, &*path);
    node.label = arg.name;
    if (arg.type == ValueType::String) {
        if (node.kind == ValueNode::Kind::Scalar) {
            node.kind = ValueNode::Kind::String;
            node.program.format = FetchFormat::String;
            if (node.bit_shift) return fail(":string needs a pointer-sized value");
        } else if (node.kind != ValueNode::Kind::String && node.kind != ValueNode::Kind::Error) {
            return fail(":string needs a pointer or char array");
        }
    } else if (arg.type != ValueType::Default) {
        if (arg.type == ValueType::F32 || arg.type == ValueType::F64)
            return fail("DWARF variables take their float type from DWARF; :f32/:f64 apply to registers");
        if (node.kind != ValueNode::Kind::Scalar && node.kind != ValueNode::Kind::Error)
            return fail(":" + std::string(to_string(arg.type)) + " needs a scalar value");
        node.as = arg.type;
    }
    out.values.emplace_back(arg.name, std::move(node));
    return out;
}

void evaluate_arg(const std::string& name, const ArgProgram& program, const LeafValue& leaf,
                  const FetchContext& context, std::vector<EventArg>& out) {
    if (!program.is_dwarf) {
        out.push_back(EventArg{name, leaf(program.plain, context)});
        return;
    }
    for (const auto& [value_name, node] : program.values)
        out.push_back(EventArg{value_name, evaluate_node(node, leaf, context)});
}

void evaluate_arg(const std::string& name, const ArgProgram& program, const user_regs_struct& regs,
                  MemoryReader& memory, const FetchContext& context, std::vector<EventArg>& out) {
    evaluate_arg(
        name, program,
        [&](const FetchProgram& leaf, const FetchContext& leaf_context) { return evaluate(leaf, regs, memory, leaf_context); },
        context, out);
}

namespace {

// In evaluate_node's order: Error nodes and elided structs have no leaf.
void collect_leaves(const ValueNode& node, std::vector<const FetchProgram*>& out) {
    switch (node.kind) {
    case ValueNode::Kind::Error: return;
    case ValueNode::Kind::Scalar:
    case ValueNode::Kind::String: out.push_back(&node.program); return;
    case ValueNode::Kind::Aggregate:
    case ValueNode::Kind::Array:
        for (const auto& c : node.children) collect_leaves(c, out);
        return;
    }
}

}  // namespace

void leaf_programs(const ArgProgram& program, std::vector<const FetchProgram*>& out) {
    if (!program.is_dwarf) {
        out.push_back(&program.plain);
        return;
    }
    for (const auto& [value_name, node] : program.values) collect_leaves(node, out);
}

}  // namespace uprobe::probe
