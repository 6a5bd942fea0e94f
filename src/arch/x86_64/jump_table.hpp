// Jump tables: the indirect jump a compiler emits for a dense switch,
// recognised from the code before it, so instruction-mode return probes can
// tell where it goes. Bytes in, bytes out: the caller reads the table.
//
// Recognised (gcc and clang, x86-64, any register allocation):
//
//   cmp  IDX, N          bound: IDX <= N unsigned on the path to the jump
//   ja   DEFAULT         (or jae; or jbe/jb to the table code)
//   ...
//   jmp  [TABLE + IDX*8]                   absolute: 8-byte addresses
// or
//   lea  BASE, [rip + TABLE]
//   movsxd ENTRY, dword [BASE + IDX*4]     relative (PIC): 4-byte offsets
//   add  ENTRY, BASE                       from the table's own address
//   jmp  ENTRY
//
// with register copies, zero extension (`mov r32, r32`, `movzx`) and sign
// extension of a bound that leaves the sign bit clear in between. The
// compare may be on a byte, word, dword or qword register; a dword index
// also counts as zero-extended when the instruction just before the
// compare wrote it (clang's `lea eax, [rdi - 1]; cmp eax, 6`). The path
// from the bound to the jump must be straight-line code that no other
// branch enters, so the bound holds at the jump; anything else is not a
// proof and is refused with the reason.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "uprobe/result.hpp"

namespace uprobe::arch {

struct JumpTable {
    enum class Form : uint8_t {
        Absolute,  // 8-byte absolute addresses (non-PIC code)
        Relative,  // 4-byte signed offsets from `table` (PIC code)
    };
    Form form = Form::Absolute;
    uint64_t table = 0;    // link-time address of entry 0
    uint64_t entries = 0;  // the bound + 1: every index the jump can use
    size_t entry_size() const { return form == Form::Absolute ? 8 : 4; }
};

// The largest table accepted: a bound beyond this is more likely not a
// switch at all.
inline constexpr uint64_t kMaxJumpTableEntries = 65536;

// Analyses the indirect jmp at `jump`, inside `code` (which starts at
// `start`, on an instruction boundary). `branch_targets` lists the targets
// of every direct branch of the whole function (its cold parts too), one
// per branch, so the path from the bound to the jump can be shown to have
// no other way in. Fails with the reason the table cannot be proven.
Result<JumpTable> find_jump_table(std::span<const uint8_t> code, uint64_t start, uint64_t jump,
                                  const std::vector<uint64_t>& branch_targets);

// Where each entry of `table` sends the jump, from the table's bytes
// (`bytes.size()` must be entries * entry_size()).
Result<std::vector<uint64_t>> jump_table_targets(const JumpTable& table, std::span<const uint8_t> bytes);

}  // namespace uprobe::arch
