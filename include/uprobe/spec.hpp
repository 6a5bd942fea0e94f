// Probe specifications: the grammar every command and engine shares.
//
// One probe is one command-line word (see docs/probes.md):
//
//   [NAME=]LOCATION [ARG ...]
//
//   LOCATION  [BIN:]FUNC            function entry (FUNC may be a glob, a
//                                   mangled or demangled C++ name)
//             [BIN:]FUNC+OFFSET     an instruction inside FUNC
//             [BIN:]FUNC%return     every return of FUNC
//             [BIN:]FUNC@FILE       FUNC defined in source file FILE
//             [BIN:]FILE:LINE       a source line
//             [BIN:]FUNC:RELLINE    a line relative to FUNC's first line
//             [BIN:]0xADDR          a link-time virtual address in BIN
//             sdt:[BIN:]PROV:NAME   an SDT/USDT marker (also %PROV:NAME and
//                                   usdt:BIN:PROV:NAME)
//   ARG       [NAME=]FETCH[:TYPE]
//
// The parser only checks syntax; whether a function, file or register
// exists is decided by the resolver and the engines.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace uprobe {

enum class LocationKind {
    Function,      // FUNC, FUNC+OFFSET, FUNC%return, FUNC@FILE
    SourceLine,    // FILE:LINE
    FunctionLine,  // FUNC:RELLINE
    Address,       // 0xADDR
    Sdt,           // sdt:PROVIDER:NAME
};

struct Location {
    LocationKind kind = LocationKind::Function;
    // Path of the object, a library name such as "libc", or empty for the
    // main executable of the target.
    std::string binary;
    std::string function;   // Function, FunctionLine: name or glob
    std::string file;       // SourceLine: file; Function: the @FILE part
    uint64_t offset = 0;    // Function: +OFFSET in bytes
    uint32_t line = 0;      // SourceLine: line; FunctionLine: relative line
    uint64_t address = 0;   // Address
    bool is_return = false; // Function: %return
    std::string provider;   // Sdt (may be a glob)
    std::string marker;     // Sdt (may be a glob)
};

enum class FetchKind {
    Register,    // %REG                    reg
    Arg,         // $argN (1-based)         index
    RetVal,      // $retval
    Stack,       // $stackN                 index (8-byte slots above rsp)
    Memory,      // +OFF(FETCH) / -OFF(..)  offset, inner
    Address,     // @0xADDR                 address
    Symbol,      // @SYMBOL[+OFF]           symbol, offset
    Comm,        // $comm
    Pid,         // $pid
    Tid,         // $tid
    Duration,    // $duration (return probes: ns since entry)
    Entry,       // @entry(FETCH)           inner, captured at entry
    Params,      // $params: every parameter (DWARF)
    Vars,        // $vars: everything in scope (DWARF)
    DwarfVar,    // count, req->len, p.field, arr[3], *ptr   expr
};

enum class ValueType {
    Default,  // from DWARF, the marker's spec, or u64 (x64 for pointers)
    S8, S16, S32, S64,
    U8, U16, U32, U64,
    X8, X16, X32, X64,
    F32, F64,
    String,
};

struct Fetch {
    FetchKind kind = FetchKind::Register;
    std::string reg;                  // Register: name without '%' ("di", "rax")
    uint32_t index = 0;               // Arg, Stack
    int64_t offset = 0;               // Memory, Symbol
    uint64_t address = 0;             // Address
    std::string symbol;               // Symbol
    std::string expr;                 // DwarfVar: the expression as written
    std::shared_ptr<const Fetch> inner;  // Memory, Entry
};

struct ArgSpec {
    std::string name;  // as given, or a readable default ("arg1", "di", "req_len")
    Fetch fetch;
    ValueType type = ValueType::Default;
};

struct ProbeSpec {
    std::string text;   // the spec as the user wrote it
    std::string name;   // NAME= if given, else derived from the location
    bool named = false; // NAME= was given
    Location location;
    std::vector<ArgSpec> args;
};

// A malformed spec: a one-line message and the 0-based column of the
// offending character in the spec text, for a caret under it.
struct SpecError {
    std::string message;
    size_t column = 0;
    std::string text;  // the spec being parsed

    // "message" followed by the spec and a caret line, for stderr.
    std::string render() const;
};

// Parses one probe: the location and its arguments separated by spaces
// ("f x=%di"). A probe given as several command-line words is joined with
// single spaces first. Exactly one of `spec` and `error` is set.
struct ParsedSpec {
    std::optional<ProbeSpec> spec;
    std::optional<SpecError> error;
};
ParsedSpec parse_probe_spec(std::string_view text);

// Name helpers shared with the output code.
std::string_view to_string(ValueType type);
std::string_view to_string(LocationKind kind);
std::string to_string(const Fetch& fetch);     // canonical text of a fetch
std::string to_string(const Location& where);  // canonical text of a location

}  // namespace uprobe
