#include "probe/fetch.hpp"

#include <sys/uio.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>
#include <algorithm>
#include <vector>

#include "arch/x86_64/registers.hpp"
#include "base/strings.hpp"

namespace uprobe::probe {
namespace {

// Slots of user_regs_struct read as uint64_t[] (sys/user.h order).
constexpr uint8_t kRsp = 19;
constexpr uint8_t kRax = 10;

using RegisterName = arch::RegisterRef;

// Probe specs name registers as perf probe does, after the kernel's
// pt_regs: %ax, %di, %sp, %ip are the full 64-bit registers (the x86 16-bit
// meaning is rarely wanted in a probe: write %di:u16 for it).
std::optional<RegisterName> find_register(std::string_view name) {
    static const std::pair<std::string_view, std::string_view> pt_regs[] = {
        {"ax", "rax"}, {"bx", "rbx"}, {"cx", "rcx"}, {"dx", "rdx"}, {"si", "rsi"},
        {"di", "rdi"}, {"bp", "rbp"}, {"sp", "rsp"}, {"ip", "rip"}, {"flags", "rflags"},
    };
    for (const auto& [perf, full] : pt_regs)
        if (name == perf) return arch::register_by_name(full);
    return arch::register_by_name(name);
}

std::optional<uint8_t> xmm_index(std::string_view name) {
    if (name.size() < 4 || name.substr(0, 3) != "xmm") return std::nullopt;
    auto n = parse_uint(name.substr(3));
    if (!n || *n > 15) return std::nullopt;
    return static_cast<uint8_t>(*n);
}

Error unknown_register(std::string_view name) {
    static const std::vector<std::string> names = {
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
        "eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "rip", "rflags", "xmm0"};
    std::string message = "unknown register '" + std::string(name) + "'";
    auto near = closest(name, names);
    if (!near.empty()) message += " (did you mean '" + near[0] + "'?)";
    message += "; valid: rax..rdi, rbp, rsp, r8..r15 and their eax/ax/al/ah, r8d/r8w/r8b forms, rip, rflags, "
               "fs_base, gs_base, xmm0..xmm15";
    return Error(message);
}


class Builder {
public:
    explicit Builder(FetchProgram& p) : p_(p) {}
    Result<void> add(FetchStep step) {
        if (p_.step_count >= FetchProgram::kMaxSteps) return Error("fetch expression too deep");
        p_.steps[p_.step_count++] = step;
        return {};
    }
    // Loads a named register, truncated and shifted to its width.
    Result<void> load_register(const RegisterName& r) {
        UPROBE_CHECK(add({FetchOp::LoadRegister, static_cast<uint8_t>(r.slot), r.size, r.shift, 0}));
        return {};
    }

private:
    FetchProgram& p_;
};

struct Natural {  // what the fetch itself says about its value
    uint8_t size = 8;
    bool is_signed = false;
    bool is_float = false;
};

Result<Natural> compile_into(const Fetch& fetch, const CompileContext& context, FetchProgram& program);

Result<Natural> compile_sdt_arg(const elf::SdtArg& arg, const CompileContext& context, FetchProgram& program) {
    Builder b(program);
    Natural natural{arg.size, arg.is_signed, arg.is_float};
    const auto& op = arg.operand;
    switch (op.kind) {
    case elf::SdtOperand::Kind::Immediate:
        UPROBE_CHECK(b.add({FetchOp::LoadConst, 0, 8, 0, op.imm}));
        return natural;
    case elf::SdtOperand::Kind::Register: {
        if (auto xmm = xmm_index(op.reg)) {
            program.needs_fpregs = true;
            UPROBE_CHECK(b.add({FetchOp::LoadXmm, *xmm, 8, 0, 0}));
            return natural;
        }
        auto r = find_register(op.reg);
        if (!r) return unknown_register(op.reg);
        UPROBE_CHECK(b.load_register(*r));
        return natural;
    }
    case elf::SdtOperand::Kind::Memory: {
        if (!op.symbol.empty()) {
            if (!context.symbol_address) return Error("symbol '" + op.symbol + "' cannot be looked up here");
            UPROBE_TRY(uint64_t address, context.symbol_address(op.symbol));
            UPROBE_CHECK(b.add({FetchOp::LoadConst, 0, 8, 0,
                                static_cast<int64_t>(address + context.load_bias) + op.disp}));
        } else if (op.reg == "rip") {
            return Error("rip-relative SDT operand without a symbol ('" + arg.text + "') is not supported");
        } else if (op.reg.empty()) {
            UPROBE_CHECK(b.add({FetchOp::LoadConst, 0, 8, 0, op.disp}));
        } else {
            auto base = find_register(op.reg);
            if (!base || base->size != 8) return unknown_register(op.reg);
            UPROBE_CHECK(b.load_register(*base));
            UPROBE_CHECK(b.add({FetchOp::AddConst, 0, 8, 0, op.disp}));
        }
        if (!op.index.empty()) {
            auto index = find_register(op.index);
            if (!index || index->size != 8) return unknown_register(op.index);
            UPROBE_CHECK(b.add({FetchOp::AddRegister, static_cast<uint8_t>(index->slot), 8, op.scale, 0}));
        }
        UPROBE_CHECK(b.add({FetchOp::Deref, 0, arg.size, 0, 0}));
        return natural;
    }
    }
    return Error("bad SDT operand");
}

Result<Natural> compile_into(const Fetch& fetch, const CompileContext& context, FetchProgram& program) {
    Builder b(program);
    switch (fetch.kind) {
    case FetchKind::Register: {
        if (auto xmm = xmm_index(fetch.reg)) {
            program.needs_fpregs = true;
            UPROBE_CHECK(b.add({FetchOp::LoadXmm, *xmm, 8, 0, 0}));
            return Natural{8, false, true};
        }
        auto r = find_register(fetch.reg);
        if (!r) return unknown_register(fetch.reg);
        UPROBE_CHECK(b.load_register(*r));
        return Natural{r->size, false, false};
    }
    case FetchKind::Arg: {
        if (fetch.index == 0) return Error("$arg numbers start at 1");
        if (context.site && context.site->marker) {
            const auto& marker = *context.site->marker;
            std::string which = "marker " + marker.provider + ":" + marker.name;
            // marker.args is empty when any argument failed to parse; one
            // unreadable argument spoils only itself, so read them one by one.
            std::vector<std::string_view> words;
            for (size_t at = 0; at < marker.args_text.size();) {
                size_t end = marker.args_text.find_first_of(" \t", at);
                if (end == std::string::npos) end = marker.args_text.size();
                if (end > at) words.push_back(std::string_view(marker.args_text).substr(at, end - at));
                at = end + 1;
            }
            size_t count = marker.args.empty() ? words.size() : marker.args.size();
            if (fetch.index > count)
                return Error(which + " has " + std::to_string(count) + (count == 1 ? " argument" : " arguments") +
                             ", so there is no $arg" + std::to_string(fetch.index));
            if (!marker.args.empty()) return compile_sdt_arg(marker.args[fetch.index - 1], context, program);
            auto parsed = elf::parse_sdt_arg(words[fetch.index - 1]);
            if (!parsed) return Error(which + ": " + parsed.error().message());
            return compile_sdt_arg(*parsed, context, program);
        }
        if (fetch.index <= 6) {
            UPROBE_CHECK(b.load_register(*arch::argument_register(fetch.index)));
        } else {
            // At function entry the 7th argument is just above the return address.
            UPROBE_CHECK(b.add({FetchOp::LoadRegister, kRsp, 8, 0, 0}));
            UPROBE_CHECK(b.add({FetchOp::AddConst, 0, 8, 0, static_cast<int64_t>(8 * (fetch.index - 6))}));
            UPROBE_CHECK(b.add({FetchOp::Deref, 0, 8, 0, 0}));
        }
        return Natural{};
    }
    case FetchKind::RetVal:
        UPROBE_CHECK(b.add({FetchOp::LoadRegister, kRax, 8, 0, 0}));
        return Natural{};
    case FetchKind::Stack:
        UPROBE_CHECK(b.add({FetchOp::LoadRegister, kRsp, 8, 0, 0}));
        UPROBE_CHECK(b.add({FetchOp::AddConst, 0, 8, 0, static_cast<int64_t>(8 * uint64_t{fetch.index})}));
        UPROBE_CHECK(b.add({FetchOp::Deref, 0, 8, 0, 0}));
        return Natural{};
    case FetchKind::Memory: {
        if (!fetch.inner) return Error("memory fetch without an address");
        UPROBE_TRY([[maybe_unused]] Natural inner, compile_into(*fetch.inner, context, program));
        if (fetch.offset != 0) UPROBE_CHECK(b.add({FetchOp::AddConst, 0, 8, 0, fetch.offset}));
        UPROBE_CHECK(b.add({FetchOp::Deref, 0, 8, 0, 0}));
        return Natural{};
    }
    case FetchKind::Address:
        UPROBE_CHECK(b.add({FetchOp::LoadConst, 0, 8, 0, static_cast<int64_t>(fetch.address + context.load_bias)}));
        UPROBE_CHECK(b.add({FetchOp::Deref, 0, 8, 0, 0}));
        return Natural{};
    case FetchKind::Symbol: {
        if (!context.symbol_address) return Error("symbol '" + fetch.symbol + "' cannot be looked up here");
        UPROBE_TRY(uint64_t address, context.symbol_address(fetch.symbol));
        UPROBE_CHECK(b.add({FetchOp::LoadConst, 0, 8, 0,
                            static_cast<int64_t>(address + context.load_bias) + fetch.offset}));
        UPROBE_CHECK(b.add({FetchOp::Deref, 0, 8, 0, 0}));
        return Natural{};
    }
    case FetchKind::Comm:
    case FetchKind::Pid:
    case FetchKind::Tid:
        return Natural{};
    case FetchKind::Duration:
        return Natural{};
    case FetchKind::Entry:
        return Error("@entry() is only valid as a whole argument");
    case FetchKind::Params: return Error("$params needs DWARF, which is not supported yet");
    case FetchKind::Vars: return Error("$vars needs DWARF, which is not supported yet");
    case FetchKind::DwarfVar: return Error("'" + fetch.expr + "' needs DWARF, which is not supported yet");
    }
    return Error("unknown fetch kind");
}

uint8_t size_of(ValueType t) {
    switch (t) {
    case ValueType::S8: case ValueType::U8: case ValueType::X8: return 1;
    case ValueType::S16: case ValueType::U16: case ValueType::X16: return 2;
    case ValueType::S32: case ValueType::U32: case ValueType::X32: case ValueType::F32: return 4;
    default: return 8;
    }
}

FetchFormat format_of(ValueType t) {
    switch (t) {
    case ValueType::S8: case ValueType::S16: case ValueType::S32: case ValueType::S64: return FetchFormat::Signed;
    case ValueType::X8: case ValueType::X16: case ValueType::X32: case ValueType::X64: return FetchFormat::Hex;
    case ValueType::F32: case ValueType::F64: return FetchFormat::Float;
    case ValueType::String: return FetchFormat::String;
    default: return FetchFormat::Unsigned;
    }
}

std::string hex(uint64_t v) {
    char text[32];
    std::snprintf(text, sizeof text, "0x%" PRIx64, v);
    return text;
}

}  // namespace

Result<FetchProgram> compile_fetch(const ArgSpec& arg, const CompileContext& context) {
    const Fetch& fetch = arg.fetch;
    if (fetch.kind == FetchKind::Entry) {
        if (!fetch.inner) return Error("arg '" + arg.name + "': @entry() without a fetch");
        if (fetch.inner->kind == FetchKind::Entry || fetch.inner->kind == FetchKind::Duration)
            return Error("arg '" + arg.name + "': @entry() of " + to_string(*fetch.inner) + " has no meaning");
        ArgSpec at_entry{arg.name, *fetch.inner, arg.type};
        UPROBE_TRY(FetchProgram program, compile_fetch(at_entry, context));
        program.at_entry = true;
        return program;
    }
    FetchProgram program;
    auto natural = compile_into(fetch, context, program);
    if (!natural) return natural.error().context("arg '" + arg.name + "'");
    switch (fetch.kind) {
    case FetchKind::Comm: program.format = FetchFormat::Comm; return program;
    case FetchKind::Pid: program.format = FetchFormat::Pid; return program;
    case FetchKind::Tid: program.format = FetchFormat::Tid; return program;
    case FetchKind::Duration: program.format = FetchFormat::Duration; return program;
    default: break;
    }
    FetchStep* last = program.step_count ? &program.steps[program.step_count - 1] : nullptr;
    if (arg.type == ValueType::Default) {
        program.value_size = natural->size;
        program.format = natural->is_float ? FetchFormat::Float
                         : natural->is_signed ? FetchFormat::Signed
                                              : FetchFormat::Unsigned;
        return program;
    }
    program.format = format_of(arg.type);
    if (arg.type == ValueType::String) {
        // As the kernel's probe fetches do: "+0(%di):string" is the string
        // stored at di+0, so the final load becomes the string read. An
        // argument's value is the pointer itself, even when it had to be
        // loaded from memory (an SDT "8@-40(%rbp)", a 7th $arg, a $stack
        // slot): the string is read where that pointer points.
        bool value_is_pointer = fetch.kind == FetchKind::Arg || fetch.kind == FetchKind::Stack;
        if (last && last->op == FetchOp::Deref && !value_is_pointer) --program.step_count;
        return program;
    }
    program.value_size = size_of(arg.type);
    if ((arg.type == ValueType::F32 || arg.type == ValueType::F64) && fetch.kind == FetchKind::RetVal) {
        program.steps[0] = {FetchOp::LoadXmm, 0, 8, 0, 0};
        program.needs_fpregs = true;
    }
    // A typed memory read reads exactly the bytes of the type, so a small
    // value at the end of a mapping is still readable.
    if (last && last->op == FetchOp::Deref && fetch.kind != FetchKind::Arg) last->size = program.value_size;
    return program;
}

size_t ProcessMemoryReader::read(uint64_t address, void* out, size_t size) {
    // One iovec per page, so a fault ends the read at the page boundary
    // instead of failing the whole read (process_vm_readv(2)).
    constexpr uint64_t kPage = 4096;
    iovec remote[8];
    int count = 0;
    uint64_t at = address;
    size_t left = size;
    while (left > 0 && count < 8) {
        size_t chunk = static_cast<size_t>(std::min<uint64_t>(left, kPage - (at % kPage)));
        remote[count++] = {reinterpret_cast<void*>(at), chunk};
        at += chunk;
        left -= chunk;
    }
    iovec local{out, size - left};
    ssize_t n = ::process_vm_readv(pid_, &local, 1, remote, static_cast<unsigned long>(count), 0);
    return n < 0 ? 0 : static_cast<size_t>(n);
}

Value evaluate(const FetchProgram& program, const user_regs_struct& regs, MemoryReader& memory,
               const FetchContext& context) {
    switch (program.format) {
    case FetchFormat::Comm: return Value::make_string(std::string(context.comm), false);
    case FetchFormat::Pid: return Value::make_signed(context.pid);
    case FetchFormat::Tid: return Value::make_signed(context.tid);
    case FetchFormat::Duration:
        if (!context.duration_ns) return Value::make_error("$duration only exists at a return");
        return Value::make_unsigned(*context.duration_ns);
    default: break;
    }
    uint64_t words[sizeof(user_regs_struct) / 8];
    std::memcpy(words, &regs, sizeof words);
    uint64_t acc = 0;
    for (uint8_t i = 0; i < program.step_count && i < FetchProgram::kMaxSteps; ++i) {
        const FetchStep& s = program.steps[i];
        switch (s.op) {
        case FetchOp::LoadRegister: {
            uint64_t v = s.slot < std::size(words) ? words[s.slot] : 0;
            v >>= s.size == 1 ? s.scale : 0;  // ah/bh/ch/dh: shift stored in scale
            acc = s.size >= 8 ? v : v & ((uint64_t{1} << (8 * s.size)) - 1);
            break;
        }
        case FetchOp::LoadXmm: {
            if (!context.fpregs) return Value::make_error("floating-point registers unavailable");
            std::memcpy(&acc, reinterpret_cast<const uint8_t*>(context.fpregs->xmm_space) + 16 * (s.slot & 15), 8);
            break;
        }
        case FetchOp::LoadConst: acc = static_cast<uint64_t>(s.imm); break;
        case FetchOp::AddRegister: acc += (s.slot < std::size(words) ? words[s.slot] : 0) * s.scale; break;
        case FetchOp::AddConst: acc += static_cast<uint64_t>(s.imm); break;
        case FetchOp::Deref: {
            uint64_t v = 0;
            size_t size = s.size > 8 ? 8 : s.size;
            if (memory.read(acc, &v, size) != size) return Value::make_error("bad address " + hex(acc));
            acc = v;
            break;
        }
        }
    }
    if (program.format == FetchFormat::String) {
        std::string text(context.string_max, '\0');
        size_t got = memory.read(acc, text.data(), text.size());
        if (got == 0 && context.string_max > 0) return Value::make_error("bad address " + hex(acc));
        size_t end = text.find('\0');
        if (end != std::string::npos && end < got) return Value::make_string(text.substr(0, end), false);
        text.resize(got);
        return Value::make_string(std::move(text), true);
    }
    return number_value(program, acc);
}

Value number_value(const FetchProgram& program, uint64_t acc) {
    uint8_t size = program.value_size;
    if (size < 8) acc &= (uint64_t{1} << (8 * size)) - 1;
    switch (program.format) {
    case FetchFormat::Signed: {
        int shift = 64 - 8 * size;
        return Value::make_signed(static_cast<int64_t>(acc << shift) >> shift);
    }
    case FetchFormat::Hex: return Value::make_hex(acc);
    case FetchFormat::Float: {
        if (size == 4) {
            float f;
            uint32_t bits = static_cast<uint32_t>(acc);
            std::memcpy(&f, &bits, 4);
            return Value::make_float(f);
        }
        double d;
        std::memcpy(&d, &acc, 8);
        return Value::make_float(d);
    }
    default: return Value::make_unsigned(acc);
    }
}

}  // namespace uprobe::probe
