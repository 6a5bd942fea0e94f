// DWARF debug information of one object file: source lines, functions
// (out-of-line and inlined), variables in scope and their types.
//
// DebugInfo reads a PATH that holds DWARF — the binary itself or its
// separate debug file (objcopy --only-keep-debug); finding that file is
// elf::Binary's job. Every address in and out is a link-time virtual
// address of the object, which a separate debug file shares with the
// stripped binary.
//
// Indexes (line blocks, functions) are built lazily, once, on first use;
// queries never re-walk the whole DWARF. Calls are thread-safe.
//
// Corrupt DWARF is bad input, not a bug: libdw reports it through error
// returns, each of which becomes an Error "corrupt DWARF in PATH: ..." or,
// where the interface has no error channel, an empty answer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "uprobe/result.hpp"

namespace uprobe::dwarf {

// A type from DWARF, with const/volatile/restrict and typedefs peeled off
// (the outermost typedef's name is kept for display). Types live as long as
// the DebugInfo that made them; links between them are plain pointers, so
// self-referencing structs (a list node pointing to itself) are fine.
struct Type {
    enum class Kind { Void, Base, Pointer, Struct, Union, Class, Enum, Array, Function, Other };
    enum class Encoding { None, Signed, Unsigned, Float, Bool, SignedChar, UnsignedChar };

    struct Member {
        std::string name;       // empty for anonymous struct/union members
        uint64_t offset = 0;    // bytes from the start of the aggregate
        const Type* type = nullptr;
        uint32_t bit_size = 0;  // bit-fields only: width, and the distance in
        uint32_t bit_offset = 0;  // bits of the lowest bit from `offset`
    };

    Kind kind = Kind::Other;
    std::string name;          // "int", "struct req", "enum color"; empty for
                               // pointers and arrays (see display())
    std::string typedef_name;  // "size_t" when reached through a typedef
    uint64_t byte_size = 0;    // 0 when unknown (void, incomplete types)
    Encoding encoding = Encoding::None;  // Base and Enum
    const Type* target = nullptr;  // Pointer: pointee (nullptr = void);
                                   // Array: element; Enum: underlying, if given
    std::vector<Member> members;   // Struct, Union, Class
    std::vector<std::pair<int64_t, std::string>> enumerators;  // Enum
    std::optional<uint64_t> count;  // Array: element count; none when flexible
    bool declaration = false;  // incomplete struct/union/enum (no members known)

    // C-ish display: "struct req *", "int", "char[16]", "size_t".
    std::string display() const;
    // Whether values of this type are signed integers (Signed, SignedChar).
    bool is_signed() const;
};

class DebugInfo {
public:
    ~DebugInfo();
    DebugInfo(const DebugInfo&) = delete;
    DebugInfo& operator=(const DebugInfo&) = delete;

    // Fails with "no DWARF in PATH" when the file has no .debug_info, and
    // "corrupt DWARF in PATH: ..." when its unit headers do not parse.
    static Result<std::unique_ptr<DebugInfo>> open(const std::string& path);

    const std::string& path() const { return path_; }

    // One probe-able address of a source line.
    struct LineSite {
        uint64_t vaddr = 0;
        std::string file;       // full path as in DWARF
        uint32_t line = 0;
        std::string function;   // containing function, the inlined one if inlined
        bool inlined = false;
    };

    // Every address where `line` of `file` starts: one per block of line-table
    // rows for that line (so inlined copies, unrolled copies and the several
    // pieces of a `for` line each count once), at the first is_stmt row of
    // the block. `file` is a basename or a path suffix ("main.c",
    // "src/main.c"). Sorted by address. Errors name the nearest lines that
    // have code, or source files with close names.
    Result<std::vector<LineSite>> line_sites(std::string_view file, uint32_t line) const;

    // A function's declaration line and every line with code in its body
    // (out-of-line and inlined instances; lines of functions inlined into it
    // are left out), sorted by line then address. For FUNC:RELLINE.
    struct FunctionLines {
        std::string name;
        std::string file;       // declaration file, full path
        uint32_t decl_line = 0;
        std::vector<LineSite> lines;
    };
    // `function` is a DW_AT_name or a linkage name.
    Result<FunctionLines> function_lines(std::string_view function) const;

    // One copy of a function's code.
    struct FunctionInstance {
        std::string name;          // DW_AT_name
        std::string linkage_name;  // mangled name, or empty
        std::string file;          // the CU's primary source file (for FUNC@FILE)
        std::string decl_file;     // where the function is declared
        uint32_t decl_line = 0;
        uint64_t entry = 0;        // low_pc; inlined: DW_AT_entry_pc or lowest range start
        std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end)
        bool inlined = false;
    };
    // The out-of-line instance and every inlined instance of each function
    // whose name or linkage name matches (a glob, or an exact name). Sorted by
    // entry address. Empty when nothing matches (or on corrupt DWARF).
    std::vector<FunctionInstance> function_instances(std::string_view name_or_glob) const;

    // Names of all functions with code, for "did you mean" suggestions.
    std::vector<std::string> function_names() const;

    // The address just past the prologue of the function starting at
    // `function_entry` (where -O0 code has spilled its arguments to their
    // stack homes), as gdb and perf probe choose it: the second line-table
    // address in the function, or the entry itself when there is none.
    // nullopt when no function starts there.
    std::optional<uint64_t> post_prologue(uint64_t function_entry) const;

    // The return type of the out-of-line function starting at
    // `function_entry` (DW_AT_type of its subprogram, through
    // DW_AT_specification and DW_AT_abstract_origin). nullptr when no
    // function starts there or it returns void.
    const Type* return_type(uint64_t function_entry) const;

    // One operation of a DWARF location expression (a copy of Dwarf_Op, plus
    // the data libdw keeps behind pointers).
    struct Op {
        uint8_t atom = 0;
        uint64_t number = 0;
        uint64_t number2 = 0;
        uint64_t offset = 0;
        std::vector<Op> nested;      // DW_OP_entry_value: the inner expression
        std::vector<uint8_t> block;  // DW_OP_implicit_value: the value bytes
    };

    struct Variable {
        std::string name;
        bool is_parameter = false;
        const Type* type = nullptr;  // owned by this DebugInfo; nullptr if unknown
        std::string type_name;       // type->display(), or "?"
        std::vector<Op> location;    // the expression that applies at the address
        bool optimized_out = false;  // no location there and no constant value
        bool has_const_value = false;
        int64_t const_value = 0;
        std::vector<Op> frame_base;  // DW_AT_frame_base of the containing subprogram
        std::string scope;           // function or inlined function name
    };
    // Parameters and locals of the innermost function at `vaddr` (the inlined
    // one when `vaddr` is in inlined code), from every lexical block that
    // contains `vaddr`, innermost first; a name shadowed by an inner block is
    // listed once. Fails only when no function contains `vaddr` (or on
    // corrupt DWARF).
    // `function`, when given, picks the innermost instance of that function
    // (by DW_AT_name) containing `vaddr` instead of the innermost function:
    // a probe on f's entry means f's parameters, even where the compiler
    // inlined a callee at f's first instruction. Falls back to the
    // innermost function when none has that name.
    Result<std::vector<Variable>> variables_at(uint64_t vaddr, std::string_view function = {}) const;
    // A variable of static storage named `name` declared at file scope (a
    // global, or a static of a unit): the unit containing `vaddr` first,
    // then every unit. Its location is then DW_OP_addr (link-time).
    std::optional<Variable> global_variable(uint64_t vaddr, std::string_view name) const;

    // For `uprobe list --vars`: "DW_OP_fbreg -20", "reg5 (rdi)",
    // "entry_value(reg5 (rdi))", "const 3", "optimized out".
    static std::string describe(const std::vector<Op>& ops);
    // "rdi" for DWARF register 5 (x86-64 psABI numbering); "" when unknown.
    static std::string_view register_name(unsigned dwarf_register);

    // The source file and line of an address.
    std::optional<std::pair<std::string, uint32_t>> source_of(uint64_t vaddr) const;

    // Every source file that has code, full paths, sorted.
    std::vector<std::string> source_files() const;

private:
    struct Impl;
    explicit DebugInfo(std::string path, std::unique_ptr<Impl> impl);

    std::string path_;
    std::unique_ptr<Impl> impl_;
};

}  // namespace uprobe::dwarf
