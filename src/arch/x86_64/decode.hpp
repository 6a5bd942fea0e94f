// x86-64 instruction decoding: lengths, text and branch shape of machine
// code given as bytes. No process access: callers pass the original bytes
// (never a breakpoint we planted).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "uprobe/result.hpp"

namespace uprobe::arch {

constexpr uint8_t kBreakpoint = 0xCC;  // int3
constexpr size_t kMaxInstructionLength = 15;  // SDM vol. 2, 2.3.11

enum class Syntax { intel, att };

struct Instruction {
    uint64_t address = 0;
    uint8_t length = 0;
    std::string text;  // e.g. "push rbp"; branch targets printed as absolute addresses
};

// Decodes the first instruction of `code`, which sits at `address`. Fails
// when the bytes are invalid or end before the instruction does.
Result<Instruction> decode_one(std::span<const uint8_t> code, uint64_t address,
                               Syntax syntax = Syntax::intel);

// Linear sweep from `address` over all of `code`; returns each instruction's
// start address. The error names the address of the first undecodable bytes
// (data in code, or a range that does not start on an instruction).
Result<std::vector<uint64_t>> instruction_boundaries(std::span<const uint8_t> code,
                                                     uint64_t address);

// One contiguous part of a function's code: its body, or a part the
// compiler moved away (gcc's NAME.cold for unlikely paths).
struct CodeRange {
    uint64_t start = 0;
    std::span<const uint8_t> code;
};

// How an instruction leaves: what a return probe or a relocator must know.
struct BranchInfo {
    bool is_ret = false;
    bool is_jump = false;         // jmp, jcc, loop*, jrcxz (direct or indirect)
    bool is_call = false;
    bool is_conditional = false;  // jcc, loop*, jrcxz: may fall through
    bool is_indirect = false;     // target comes from a register or memory
    std::optional<uint64_t> target;  // direct branches only
};

Result<BranchInfo> classify_branch(std::span<const uint8_t> code, uint64_t address);

}  // namespace uprobe::arch
