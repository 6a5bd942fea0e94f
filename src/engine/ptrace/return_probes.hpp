// Return probes of the ptrace engine (FUNC%return), in two modes.
//
// Trampoline mode: at the function's entry the return address at [rsp] is
// replaced by the address of an int3 in the XOL area (the trampoline) and
// the original goes on a per-thread shadow stack kept here, with the stack
// address it was taken from (the slot). The trampoline's hit pops the
// frames of that slot and resumes at the original address.
//
// Instruction mode: the stack is never written. The function is decoded and
// every instruction that leaves it (ret, a jmp outside it) gets a
// breakpoint; an entry breakpoint records the entry rsp, which is the rsp
// at every exit of a well-formed function. Frames are kept per address
// space and keyed by that rsp, so a frame survives its thread changing
// (Go moves goroutines between threads).
//
// A frame that can no longer return (longjmp, an exception, a Go stack
// move) is dropped, never reported: a return event is always a real return
// with its real value.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "arch/x86_64/decode.hpp"
#include "engine/function_exits.hpp"
#include "probe/dwarf_fetch.hpp"
#include "probe/fetch.hpp"
#include "uprobe/event.hpp"
#include "uprobe/result.hpp"

namespace uprobe::engine {

// What an instruction is to instruction-mode return probes.
enum class ExitRole : uint8_t {
    None,
    Return,            // a ret: the frames of this rsp return
    TailJump,          // a jmp out to code without exit breakpoints: reported now, value unknown
    FollowedTailJump,  // a jmp out to a function whose rets have exit breakpoints
};

// One return probe on one function in one address space. Created when the
// probe is inserted, immutable after, alive as long as the engine.
struct ReturnSite {
    uint32_t probe_id = 0;
    uint64_t function = 0;                    // runtime address of the entry
    std::vector<probe::ArgProgram> programs;  // one per argument
    std::vector<bool> reads_retval;           // per argument: $retval (unknown at a tail jump)
    bool entry_needs_fpregs = false;          // an @entry() program reads xmm
    bool return_needs_fpregs = false;         // $retval:f64 and friends
    bool has_entry_programs = false;
    bool by_instructions = false;  // instruction mode, else trampoline
    // Instruction mode without @entry() or $duration needs no entry
    // breakpoint: each return costs one trap instead of two.
    bool needs_entry = true;
};

// What one exit instruction (instruction mode) knows beyond its role.
struct ExitInfo {
    // Return probes without an entry breakpoint whose function this
    // instruction leaves: reported straight from this hit.
    std::vector<const ReturnSite*> frameless;
    // Return probes with an entry breakpoint whose function this ret
    // leaves: reported without entry values when their frame is missing
    // (entered before we attached, or Go moved the stack since the entry).
    std::vector<const ReturnSite*> framed;
    // FollowedTailJump: the runtime extent of the function jumped into.
    uint64_t callee_start = 0, callee_end = 0;
};

struct PendingReturn {
    const ReturnSite* site = nullptr;
    // Per argument: the values of @entry() arguments, taken at the entry.
    std::vector<std::vector<EventArg>> entry_values;
};

struct ReturnFrame {
    // Trampoline: where the return address was taken from (rsp at entry).
    // Instruction mode: rsp at entry.
    uint64_t slot = 0;
    uint64_t original = 0;  // trampoline: the return address we replaced
    uint64_t hijack = 0;    // trampoline: what we wrote there (the trampoline or a return stub)
    uint64_t entry_ns = 0;  // 0: not known (no entry breakpoint)
    // Trampoline: the function was entered by a tail jump from a probed
    // function, whose frame holds the slot. Instruction mode: the function
    // left by a tail jump and returns when the frame it jumped into does.
    bool shared_slot = false;
    // Instruction mode, shared_slot: the function jumped into, whose ret
    // returns this frame too.
    uint64_t callee_start = 0, callee_end = 0;
    std::vector<PendingReturn> returns;
};

// How counts of frames that ended without a return event are kept: they go
// into the probe's `dropped` count and a note at exit says why.
struct LostFrames {
    uint64_t abandoned = 0;  // longjmp, or a stack the program left otherwise
    uint64_t unwound = 0;    // a C++ exception (or another unwinder) passed through
};

// Return stubs: one small piece of code per original return address
// (`int3; jmp ORIGINAL`), written over return addresses instead of the
// one shared trampoline. After its int3 the thread runs on to the original
// by itself, so the tracer need not move it: one system call less per
// return. Where there is no stub (none could be made), the trampoline.
class ReturnStubs {
public:
    virtual ~ReturnStubs() = default;
    // The stub that returns to `original`, made on first use; 0 for none.
    virtual uint64_t stub_for(uint64_t original) = 0;
    // The return address the stub at `address` goes to; 0 when it is no stub.
    virtual uint64_t original_of(uint64_t address) const = 0;
};

// Per-thread shadow stacks of trampoline mode.
class TrampolineStacks {
public:
    // A function with return probes is entered; `rsp` points at its return
    // address. Frames below rsp were abandoned and are dropped first.
    // Reads [rsp]: the trampoline or a stub there means a tail jump from a
    // probed function (the frame shares the slot); otherwise it is replaced
    // by its stub from `stubs` (when given and it has one) or `trampoline`.
    // Fails (and records nothing) when the stack cannot be read or written.
    Result<void> enter(pid_t pid, pid_t tid, uint64_t rsp, uint64_t trampoline, ReturnFrame frame,
                       LostFrames& lost, ReturnStubs* stubs = nullptr);

    // The trampoline was hit; `rsp` is the thread's rsp after the ret.
    // Returns the frames that returned, innermost first, and the address to
    // resume at; empty when no frame owns the slot (then `*resume_at` is
    // still set if an abandoned frame remembers it, else 0).
    std::vector<ReturnFrame> returned(pid_t tid, uint64_t rsp, uint64_t* resume_at, LostFrames& lost);

    // An unwinder starts on `tid` (_Unwind_RaiseException and friends): it
    // reads return addresses from the stack, and the trampoline has no
    // unwind info. Every hijacked slot gets its original back; the frames
    // wait until the unwinder lands (caught()).
    void unwinding(pid_t pid, pid_t tid, uint64_t trampoline);
    // A handler caught the exception (__cxa_begin_catch) with `rsp` inside
    // the catching frame: frames above it are live again and re-hijacked
    // (if their slot still holds the original), those below were unwound.
    void caught(pid_t pid, pid_t tid, uint64_t rsp, uint64_t trampoline, LostFrames& lost);

    // Puts every hijacked return address of `tid` back (in the memory of
    // `pid`, which is the thread's process, or a forked copy of it) where
    // the slot still holds what was written there. When `regs` is given and
    // the thread stands on the trampoline or a stub (before its int3), its
    // rip is moved to the original return address (written through
    // `*regs`; the caller sets them). Returns whether `*regs` changed.
    bool restore(pid_t pid, pid_t tid, uint64_t trampoline, user_regs_struct* regs,
                 const ReturnStubs* stubs = nullptr);

    void copy_thread(pid_t from, pid_t to) { stacks_[to] = stacks_[from]; }
    void forget(pid_t tid) { stacks_.erase(tid); }
    bool empty() const { return stacks_.empty(); }

private:
    struct Stack {
        std::vector<ReturnFrame> frames;     // oldest first: slots decrease
        std::vector<ReturnFrame> suspended;  // restored while an unwinder runs
        // Slots of dropped frames and their return addresses, so a frame
        // dropped by mistake (a signal stack above the frames) still
        // returns where it should, without an event.
        std::map<uint64_t, uint64_t> abandoned;
    };
    // Drops frames whose slot is below rsp (or at it, when `including`).
    void drop_below(Stack& stack, uint64_t rsp, LostFrames& lost, bool including);
    std::map<pid_t, Stack> stacks_;
};

// Frames of instruction mode, per address space, keyed by the entry rsp.
class ExitFrames {
public:
    // `function` (its runtime entry) is entered with frame.slot = rsp. Older
    // frames of that rsp never returned (longjmp, a Go stack move) unless
    // they tail-jumped into `function`.
    void enter(ReturnFrame frame, uint64_t function);
    // The ret at `at` runs with `rsp`: the frames of that rsp, innermost
    // first (a tail-jumping frame after the frame it jumped into). A
    // tail-jumping frame whose callee does not hold `at` is stale: dropped.
    std::vector<ReturnFrame> returned(uint64_t rsp, uint64_t at);
    // A jump out to code without exit breakpoints: the frames of `rsp`
    // are reported now, without a return value.
    std::vector<ReturnFrame> left_by_jump(uint64_t rsp);
    // A jump into [callee_start, callee_end), whose rets have exit
    // breakpoints: the frame of `rsp` (and `pending`, the frameless probes
    // of the jumping function, when it has any) return with the callee.
    void jumped_into(uint64_t rsp, uint64_t callee_start, uint64_t callee_end, ReturnFrame pending);

private:
    std::map<uint64_t, std::vector<ReturnFrame>> frames_;
};

}  // namespace uprobe::engine
