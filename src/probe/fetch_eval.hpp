// Running a fetch program's steps without allocating, locking or throwing:
// the part of evaluation the in-process agent does at a hit (it links no
// C++ runtime). Formatting the result into a Value stays in the tracer
// (probe/fetch.hpp).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "probe/fetch_program.hpp"

namespace uprobe::probe {

enum class StepsStatus : uint8_t {
    Ok,
    BadAddress,   // a Deref could not read `acc`
    NeedsXmm,     // LoadXmm without vector registers
};

struct StepsResult {
    StepsStatus status = StepsStatus::Ok;
    uint64_t acc = 0;  // the value (String: the string's address; BadAddress: the address)
};

// `regs` is user_regs_struct read as uint64_t[27]; `xmm` is xmm0..15,
// 16 bytes each, or nullptr. `read(address, out, size)` returns whether all
// `size` bytes could be read.
template <class Read>
inline StepsResult run_steps(const FetchProgram& program, const uint64_t* regs, const uint8_t* xmm, Read&& read) {
    constexpr uint8_t kRegisterSlots = 27;
    uint64_t acc = 0;
    for (uint8_t i = 0; i < program.step_count && i < FetchProgram::kMaxSteps; ++i) {
        const FetchStep& s = program.steps[i];
        switch (s.op) {
        case FetchOp::LoadRegister: {
            uint64_t v = s.slot < kRegisterSlots ? regs[s.slot] : 0;
            v >>= s.size == 1 ? s.scale : 0;  // ah/bh/ch/dh: shift stored in scale
            acc = s.size >= 8 ? v : v & ((uint64_t{1} << (8 * s.size)) - 1);
            break;
        }
        case FetchOp::LoadXmm: {
            if (!xmm) return {StepsStatus::NeedsXmm, 0};
            const uint8_t* p = xmm + 16 * (s.slot & 15);
            acc = 0;
            for (int b = 7; b >= 0; --b) acc = (acc << 8) | p[b];
            break;
        }
        case FetchOp::LoadConst: acc = static_cast<uint64_t>(s.imm); break;
        case FetchOp::AddRegister: acc += (s.slot < kRegisterSlots ? regs[s.slot] : 0) * s.scale; break;
        case FetchOp::AddConst: acc += static_cast<uint64_t>(s.imm); break;
        case FetchOp::Deref: {
            uint64_t v = 0;
            size_t size = s.size > 8 ? 8 : s.size;
            if (!read(acc, &v, size)) return {StepsStatus::BadAddress, acc};
            acc = v;
            break;
        }
        }
    }
    return {StepsStatus::Ok, acc};
}

}  // namespace uprobe::probe
