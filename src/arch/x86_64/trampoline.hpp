// Jump patching: a probe site's first bytes replaced by `jmp rel32` to a
// per-site trampoline that saves the thread's registers, calls a handler,
// runs the displaced instructions relocated (arch::relocate), and jumps
// back. Bytes in, bytes out: the caller decides where the trampoline lives
// and writes both.
//
// A jump replaces 5 bytes, which may span several instructions. That is
// only safe when (a) every displaced instruction lies inside the function,
// (b) no branch of the function, in any of its parts, lands strictly
// inside the replaced range (it would execute the middle of our jmp), (c)
// no displaced call other than the last one (its return address would
// point inside the range), and (d) every indirect jump of the function is
// a jump table (arch/x86_64/jump_table.hpp) whose entries, read by the
// caller, obey (b) too; any other could land anywhere. check_jump_site()
// decides this from the function's bytes; when it refuses, the caller uses
// a 1-byte int3 site.
//
// Instruction-mode return probes hook a function's rets: a ret among the
// displaced instructions gets a handler call just before its copy (an
// ExitHook), so the handler sees the registers as the ret does and the
// ret itself runs in the trampoline, returning as the return-stack buffer
// predicts. A site may be placed for its exit hooks alone: the bytes
// ending with a ret.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/jump_table.hpp"
#include "uprobe/result.hpp"

namespace uprobe::arch {

constexpr size_t kJumpPatchSize = 5;  // jmp rel32

// The bytes of a jump table's entries, from the file the caller knows;
// fails when they cannot be known (absolute entries the loader relocates).
using JumpTableReader = std::function<Result<std::span<const uint8_t>>(const JumpTable& table)>;

// How many bytes starting at `site` a jump patch displaces: the smallest
// run of whole instructions covering kJumpPatchSize bytes, checked against
// the function as described above. `parts[0]` is its body, which holds the
// site; the others, if any, its parts elsewhere. Without `read_table`, any
// indirect jump is refused. The error says why a jump cannot go there.
// With `through`, the run covers at least up to that address (to take in
// a ret for its exit hook), under the same checks.
Result<size_t> check_jump_site(const std::vector<CodeRange>& parts, uint64_t site,
                               const JumpTableReader& read_table = nullptr, uint64_t through = 0);
// The same for a function in one part.
Result<size_t> check_jump_site(std::span<const uint8_t> function, uint64_t function_address, uint64_t site);

// The frame the trampoline hands the handler (its first argument), from
// the lowest address: user_regs_struct's 27 words (rip = the site, rsp as
// at the site, orig_rax and segment words 0), one unused word, then
// xmm0..xmm15 (16 bytes each) when `save_vector_registers`.
constexpr size_t kFrameGeneralWords = 27;
constexpr size_t kFrameXmmOffset = (kFrameGeneralWords + 1) * 8;

// A ret among the displaced instructions and the index its handler call
// passes; the frame's rip is the ret's address.
struct ExitHook {
    uint64_t ret = 0;
    uint32_t index = 0;
};

struct TrampolineRequest {
    uint64_t site = 0;                     // runtime address of the patched bytes
    std::span<const uint8_t> original;     // original bytes at `site` (at least displaced + 15)
    size_t displaced = 0;                  // from check_jump_site
    uint64_t address = 0;                  // where the trampoline will be placed
    uint64_t handler = 0;                  // uint32_t handler(frame*, uint64_t argument, uint32_t index)
    uint64_t argument = 0;
    uint32_t index = 0;
    bool save_vector_registers = false;
    // Non-zero: the site is a function's entry and the handler may take
    // the return address (FUNC%return): when it returns non-zero, the
    // trampoline drops the return address and calls the displaced
    // instructions instead of jumping to them; their function then
    // returns to Trampoline::landing, which jumps to `return_code` (a
    // return trampoline made with ReturnExit::kRet).
    uint64_t return_code = 0;
    // Non-zero: a counting trampoline instead, which only does
    // `lock inc qword [counter]` (rflags and rax saved around it) before the
    // displaced instructions; no handler is called.
    uint64_t counter = 0;
    // false: no handler call before the displaced instructions (a site
    // placed only for the exit hooks among them).
    bool entry = true;
    std::vector<ExitHook> exits;
};

struct Trampoline {
    std::vector<uint8_t> code;   // to write at request.address
    std::vector<uint8_t> patch;  // to write at request.site: jmp + int3 padding
    uint64_t landing = 0;        // with request.return_code: where the function returns
};

// The handler is called with rsp 16-byte aligned, the direction flag
// clear, and the red zone (128 bytes below the thread's rsp) untouched. It
// must not change vector or x87 state unless it saves it (the agent is
// built with -mgeneral-regs-only). Fails when a displaced instruction
// cannot be relocated, or the trampoline is out of rel32 reach of the site.
Result<Trampoline> make_trampoline(const TrampolineRequest& request);

// The return trampolines of in-process return probes. A function whose
// return address was replaced returns into this code, which reserves a
// word where the return address was, saves the thread's state (with
// `save_vector_registers`, xmm0..15: xmm0/xmm1 may hold the return value,
// which only a probe that reads them needs) as a frame whose rsp is that
// word's address, calls handler(frame, argument, 0) — which must store
// the original return address in the word — and goes there with every
// register as the function returned them. How it goes
// there keeps the return-stack buffer in step:
//  - kJump, for a return address overwritten on the stack: the function's
//    ret took the buffer's entry for the caller, so an indirect jump goes
//    on (a second ret would mispredict every return above);
//  - kRet, for a trampoline's call (TrampolineRequest::return_code): the
//    function's ret took the call's entry, the caller's is next.
enum class ReturnExit { kJump, kRet };
std::vector<uint8_t> make_return_trampoline(uint64_t address, uint64_t handler, uint64_t argument, ReturnExit exit,
                                            bool save_vector_registers);

}  // namespace uprobe::arch
