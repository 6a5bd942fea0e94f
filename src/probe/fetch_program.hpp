// The compiled form of one probe argument: a flat, fixed-size program
// with no pointers or heap data, shared byte for byte between the tracer
// (which compiles and formats, probe/fetch.hpp) and the in-process agent
// (which runs the steps at a hit, probe/fetch_eval.hpp). Changing the
// layout changes the agent's ABI: bump agent::kAbiVersion (agent/abi.hpp).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <type_traits>

namespace uprobe::probe {

enum class FetchOp : uint8_t {
    LoadRegister,  // acc = regs[slot] (general purpose, as uint64_t[] of user_regs_struct)
    LoadXmm,       // acc = low 64 bits of xmm[slot] (needs the FP registers)
    LoadConst,     // acc = imm
    AddRegister,   // acc += regs[slot] * scale
    AddConst,      // acc += imm
    Deref,         // acc = *(uint<size*8>*)acc, zero-extended
};

struct FetchStep {
    FetchOp op = FetchOp::LoadConst;
    uint8_t slot = 0;
    uint8_t size = 8;   // Deref: bytes to read (1, 2, 4, 8)
    uint8_t scale = 1;  // AddRegister
    int64_t imm = 0;
};

// Duration: $duration of a return probe, from FetchContext::duration_ns.
enum class FetchFormat : uint8_t { Unsigned, Signed, Hex, Float, String, Comm, Pid, Tid, Duration };
// The formats of a number the steps compute (the first four).
constexpr bool is_number(FetchFormat f) { return f <= FetchFormat::Float; }

struct FetchProgram {
    static constexpr size_t kMaxSteps = 12;
    FetchStep steps[kMaxSteps];
    uint8_t step_count = 0;
    FetchFormat format = FetchFormat::Unsigned;
    uint8_t value_size = 8;  // bytes of the value the steps produce (truncation)
    bool needs_fpregs = false;
    // @entry(FETCH) of a return probe: the engine evaluates the program at
    // the function's entry and reports that value with the return.
    bool at_entry = false;
};
static_assert(std::is_trivially_copyable_v<FetchProgram>);

}  // namespace uprobe::probe
