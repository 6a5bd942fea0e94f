// Arguments by DWARF name: `count`, `req->len`, `s.field`, `arr[3]`,
// `*ptr`, `$params`, `$vars`, compiled for one probe site into fetch
// programs, and their values formatted by their DWARF types.
//
// A variable's DWARF location expression (the one in effect at the site's
// address) is evaluated symbolically at compile time into a *place*: memory
// at an address the program computes, a register, a computed value
// (DW_OP_stack_value), constant bytes (DW_OP_implicit_value,
// DW_AT_const_value), or pieces of these (DW_OP_piece). Each scalar leaf of
// the value's type (a struct is shown field by field) becomes one
// FetchProgram; at a hit the leaves are evaluated and composed into one
// Value (a number, a string, or Value::Text such as `{a=1, b=0x10}`).
//
// What is decided at compile time fails the probe with one line (a name
// not in scope lists the names that are); what is only known at the hit
// (an optimized-out variable, an unreadable address) becomes an error
// value for that argument alone — the probe still fires.
#pragma once

#include <sys/user.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/function_ref.hpp"
#include "dwarf/debug_info.hpp"
#include "probe/fetch.hpp"
#include "uprobe/event.hpp"
#include "uprobe/result.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::probe {

class Resolver;

// CFA = value of `dwarf_register` + offset, the canonical frame address
// rule in effect at one address (DWARF 5 section 6.4).
struct CfaRule {
    unsigned dwarf_register = 0;
    int64_t offset = 0;
};

// Call frame information of one object, for DW_OP_call_frame_cfa (gcc's
// frame base). .eh_frame of the binary is used first (a stripped binary
// keeps it), else .debug_frame of its debug file.
class CallFrames {
public:
    ~CallFrames();
    CallFrames(const CallFrames&) = delete;
    CallFrames& operator=(const CallFrames&) = delete;

    // `debug_path` may be empty or the binary itself. Fails when neither
    // file has call frame information.
    static Result<std::unique_ptr<CallFrames>> open(const std::string& binary_path, const std::string& debug_path);

    // Fails when no FDE covers `vaddr` or its CFA is an expression rather
    // than register + offset.
    Result<CfaRule> cfa_at(uint64_t vaddr) const;

private:
    struct Impl;
    explicit CallFrames(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Integer arithmetic DWARF applies to a register's value before it is the
// variable's (gcc: "rbx << 32 >> 32 (arithmetic) * 3" for a long computed
// from an int), applied after the leaf's program.
struct Arith {
    enum class Op : uint8_t { Add, Mul, Shl, Shr, Sar, And, Or, Xor, Neg, Not };
    Op op = Op::Add;
    uint64_t imm = 0;
};

// One value to show, as a tree whose leaves are fetch programs. Types
// point into the DebugInfo that compiled them, which must outlive this.
struct ValueNode {
    enum class Kind {
        Scalar,     // program yields the raw bits (zero-extended); type formats them
        String,     // program yields the address of a NUL-terminated string
        Aggregate,  // children are fields: {a=1, b=2}
        Array,      // children are elements: [1, 2, 3]
        Error,      // known at compile time: "optimized out", "entry value unavailable"
    };
    Kind kind = Kind::Error;
    std::string label;                   // field name in an aggregate
    const dwarf::Type* type = nullptr;   // Scalar: how to show the bits
    FetchProgram program;
    std::vector<Arith> arith;            // Scalar: applied to what the program yields
    uint8_t bit_shift = 0;               // Scalar: bits to drop below the value
    uint8_t bit_width = 0;               // Scalar: value width in bits (0: 8 * size)
    uint64_t string_limit = 0;           // String: char[N] holds at most N bytes
    ValueType as = ValueType::Default;   // Scalar: the user's :TYPE, over the DWARF type
    std::string error;                   // Error
    std::vector<ValueNode> children;     // Aggregate, Array
};

// One argument of a probe compiled for one site: the plain fetch program
// of a register/memory/$argN argument, or the values of a DWARF argument
// ($params and $vars give one named value per variable).
struct ArgProgram {
    bool is_dwarf = false;
    FetchProgram plain;  // !is_dwarf
    std::vector<std::pair<std::string, ValueNode>> values;  // is_dwarf

    bool needs_fpregs() const;
};

// Everything DWARF compilation needs about the object of a site.
struct DwarfSource {
    const dwarf::DebugInfo* debug_info = nullptr;  // nullptr: `missing` says why
    const CallFrames* frames = nullptr;            // nullptr: frame bases fail at compile time
    std::string missing;
};

// The DWARF view of the object at `path`, from the resolver's cache.
DwarfSource dwarf_source(Resolver& resolver, const std::string& path);

// Whether `arg` names DWARF variables (and so needs compile_arg's DWARF path).
bool is_dwarf_arg(const ArgSpec& arg);

// Whether `arg` is a bare $retval, whose type compile_arg takes from the
// function's DWARF return type at a return probe (`context.at_return`)
// when `dwarf` has it (float/double: xmm0).
bool wants_return_type(const ArgSpec& arg);

// Compiles one argument at `context.site`. Non-DWARF arguments compile
// exactly as compile_fetch does. Errors are one line naming the argument.
Result<ArgProgram> compile_arg(const ArgSpec& arg, const CompileContext& context, const DwarfSource& dwarf);

// What a variable's location depends on besides its DWARF.
struct VariableSite {
    uint64_t vaddr = 0;              // link-time address of the probe
    uint64_t load_bias = 0;          // for DW_OP_addr
    bool at_function_entry = false;  // DW_OP_entry_value(reg) is the register itself
    const CallFrames* frames = nullptr;  // for DW_OP_call_frame_cfa; nullptr: unavailable
};

// One variable's value at a site (the building block of compile_arg, and
// bytes in, tree out for tests and fuzzing). Never fails: what cannot be
// compiled is an Error node saying why ("optimized out", "unsupported
// location (DW_OP 0x..)").
ValueNode compile_variable(const dwarf::DebugInfo::Variable& variable, const VariableSite& site);

// Evaluates one argument and appends its named value(s) to `out`. Never
// fails as a whole.
void evaluate_arg(const std::string& name, const ArgProgram& program, const user_regs_struct& regs,
                  MemoryReader& memory, const FetchContext& context, std::vector<EventArg>& out);

// The raw value of one leaf program, from wherever it was run: the inline
// engine's agent runs the leaves in the traced program and records their
// results, which the tracer then formats with the same DWARF types.
using LeafValue = FunctionRef<Value(const FetchProgram& leaf, const FetchContext& context)>;

// evaluate_arg with the leaves' values from `leaf`, asked for in the order
// leaf_programs lists them.
void evaluate_arg(const std::string& name, const ArgProgram& program, const LeafValue& leaf,
                  const FetchContext& context, std::vector<EventArg>& out);

// Appends the leaf programs of `program` to `out`, in evaluation order.
void leaf_programs(const ArgProgram& program, std::vector<const FetchProgram*>& out);

// The DW_AT_name of a function from its demangled symbol name: "f" for
// "ns::f(int)" (the scope a function-entry probe's variables come from).
std::string dwarf_name(std::string_view demangled);

// Fields of nested structs beyond this depth are shown as {...}.
inline constexpr int kMaxStructDepth = 3;
// Arrays show at most this many elements, then "...".
inline constexpr uint64_t kMaxArrayElements = 16;

}  // namespace uprobe::probe
