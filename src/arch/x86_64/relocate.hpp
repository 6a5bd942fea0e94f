// Out-of-line execution of one displaced instruction (the one a breakpoint
// replaced), with no single-step and no tracer help afterwards: the slot's
// code ends by continuing where the original instruction would have.
//
// The XOL area is mapped within ±2 GiB of the probed object, so rel32 and
// RIP-relative displacements are re-encoded relative to the slot. A branch
// target out of rel32 reach uses `jmp [rip+0]; .quad target`; a RIP-relative
// data operand out of reach cannot be rewritten without a scratch register,
// so it is refused (except `lea r64, [rip+X]`, which becomes `mov r64, imm64`).
//
// The slot never writes below rsp except where the original instruction does
// itself (a call's return address): the red zone of a leaf function may hold
// live data (System V ABI, 3.2.2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "uprobe/result.hpp"

namespace uprobe::arch {

constexpr size_t kMaxOutOfLineSize = 64;  // room one probe's slot needs

struct OutOfLine {
    std::vector<uint8_t> code;  // at most kMaxOutOfLineSize bytes
};

// Code to place at `xol_address` that, executed with the thread's registers
// exactly as they were at `address`, has the same effect as the instruction
// at `address` and then continues where it would have (address + length or
// its branch target). `insn_bytes` starts with the original instruction and
// may run on past it. Fails with "cannot run '<insn>' out of line: <why>"
// for instructions that cannot be run elsewhere correctly (int3, int n, ud2,
// hlt, xbegin, far transfers, out-of-reach RIP-relative data, ...).
//
// Known, accepted difference: `syscall` leaves the slot's return address in
// rcx (SDM vol. 2B, SYSCALL); rcx is clobbered by the syscall ABI anyway.
Result<OutOfLine> relocate(std::span<const uint8_t> insn_bytes, uint64_t address,
                           uint64_t xol_address);

}  // namespace uprobe::arch
