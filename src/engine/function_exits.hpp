// Where a function returns, from its code: the exits instruction-mode
// return probes hook (the ptrace engine's breakpoints, the inline engine's
// exit hooks).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "arch/x86_64/decode.hpp"
#include "uprobe/result.hpp"

namespace uprobe::engine {

// The exits of one function, from its code (instruction mode).
struct FunctionExits {
    std::vector<uint64_t> returns;  // addresses of ret instructions
    struct Jump {
        uint64_t address = 0;
        uint64_t target = 0;
    };
    std::vector<Jump> tail_jumps;  // direct jmps whose target is outside the function
    // Jumps through a jump table whose every entry is outside the function.
    std::vector<uint64_t> indirect_tail_jumps;
};

// The object the function is in, for reading its jump tables.
struct ObjectData {
    // Bytes of the file at a link-time address; fails outside its contents.
    std::function<Result<std::span<const uint8_t>>(uint64_t vaddr, size_t size)> read;
    // Position-independent (ET_DYN): absolute addresses in its data are
    // relocated at load time, so the file's bytes are not the final ones.
    bool relocated = false;
};

using arch::CodeRange;

// Decodes every part of a function (`parts[0]` is its body, at its entry)
// and lists its exits; a jump between parts stays inside. An indirect jump
// is followed through its jump table (arch/x86_64/jump_table.hpp, the table
// read from `data`): a table whose entries all stay inside (on instruction
// boundaries) needs nothing, one whose entries all leave is a tail call.
// Fails with one line naming the instruction when an exit cannot be
// proven: any other indirect jump (a computed tail call, a table not
// recognised, a table with targets on both sides, no `data`), or a
// conditional jump out of the function.
Result<FunctionExits> find_function_exits(const std::vector<CodeRange>& parts, const std::string& name,
                                          const ObjectData* data = nullptr);

}  // namespace uprobe::engine
