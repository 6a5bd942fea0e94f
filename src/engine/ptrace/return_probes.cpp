#include "engine/ptrace/return_probes.hpp"

#include "engine/common.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/jump_table.hpp"

namespace uprobe::engine {
namespace {

// The stack is ordinary writable memory: process_vm_readv/writev cost one
// system call and no file descriptor (proc::write_memory goes through
// /proc/PID/mem, which text needs).
bool read_word(pid_t pid, uint64_t address, uint64_t* value) {
    iovec local{value, 8};
    iovec remote{reinterpret_cast<void*>(address), 8};
    return ::process_vm_readv(pid, &local, 1, &remote, 1, 0) == 8;
}

bool write_word(pid_t pid, uint64_t address, uint64_t value) {
    iovec local{&value, 8};
    iovec remote{reinterpret_cast<void*>(address), 8};
    return ::process_vm_writev(pid, &local, 1, &remote, 1, 0) == 8;
}

// Writes `original` back into `slot` if it still holds the trampoline
// address (a slot the program reused for something else stays untouched).
void put_back(pid_t pid, uint64_t slot, uint64_t original, uint64_t trampoline) {
    uint64_t current = 0;
    if (read_word(pid, slot, &current) && current == trampoline) (void)write_word(pid, slot, original);
}

constexpr size_t kAbandonedMemory = 4096;

}  // namespace

// ---------------------------------------------------------------- trampoline

void TrampolineStacks::drop_below(Stack& stack, uint64_t rsp, LostFrames& lost, bool including) {
    while (!stack.frames.empty() &&
           (stack.frames.back().slot < rsp || (including && stack.frames.back().slot == rsp))) {
        const ReturnFrame& f = stack.frames.back();
        if (!f.shared_slot) {
            if (stack.abandoned.size() >= kAbandonedMemory) stack.abandoned.erase(stack.abandoned.begin());
            stack.abandoned[f.slot] = f.original;
        }
        lost.abandoned += f.returns.size();
        stack.frames.pop_back();
    }
    for (auto it = stack.suspended.begin(); it != stack.suspended.end();) {
        if (it->slot < rsp) {
            lost.unwound += it->returns.size();
            it = stack.suspended.erase(it);
        } else {
            ++it;
        }
    }
}

Result<void> TrampolineStacks::enter(pid_t pid, pid_t tid, uint64_t rsp, uint64_t trampoline,
                                     ReturnFrame frame, LostFrames& lost, ReturnStubs* stubs) {
    Stack& stack = stacks_[tid];
    uint64_t return_address = 0;
    if (!read_word(pid, rsp, &return_address)) return Error("cannot read the return address at " + hex(rsp));
    const bool hijacked = return_address == trampoline || (stubs && stubs->original_of(return_address));
    // A call wrote a real return address into the slot: a frame recorded
    // for the same slot is gone too (a longjmp left it, the call reused it).
    drop_below(stack, rsp, lost, !hijacked);
    frame.slot = rsp;
    if (hijacked) {
        // A tail jump from a probed function: the slot is hijacked already,
        // and its frame returns when this one does.
        if (stack.frames.empty() || stack.frames.back().slot != rsp)
            return Error("return address at " + hex(rsp) + " is the trampoline but no frame owns it");
        frame.shared_slot = true;
        frame.original = stack.frames.back().original;
        frame.hijack = stack.frames.back().hijack;
    } else {
        uint64_t hijack = stubs ? stubs->stub_for(return_address) : 0;
        if (!hijack) hijack = trampoline;
        if (!write_word(pid, rsp, hijack)) return Error("cannot write the return address at " + hex(rsp));
        frame.original = return_address;
        frame.hijack = hijack;
        stack.abandoned.erase(rsp);
    }
    stack.frames.push_back(std::move(frame));
    return {};
}

std::vector<ReturnFrame> TrampolineStacks::returned(pid_t tid, uint64_t rsp, uint64_t* resume_at,
                                                    LostFrames& lost) {
    *resume_at = 0;
    std::vector<ReturnFrame> done;
    auto found = stacks_.find(tid);
    if (found == stacks_.end()) return done;
    Stack& stack = found->second;
    const uint64_t slot = rsp - 8;
    drop_below(stack, slot, lost, false);
    // The frame of the slot, and the frames that tail-jumped into it.
    while (!stack.frames.empty() && stack.frames.back().slot == slot) {
        bool shared = stack.frames.back().shared_slot;
        done.push_back(std::move(stack.frames.back()));
        stack.frames.pop_back();
        if (!shared) break;
    }
    if (!done.empty()) {
        *resume_at = done.back().original;
    } else if (auto a = stack.abandoned.find(slot); a != stack.abandoned.end()) {
        *resume_at = a->second;
        stack.abandoned.erase(a);
    }
    if (stack.frames.empty() && stack.suspended.empty() && stack.abandoned.empty()) stacks_.erase(found);
    return done;
}

void TrampolineStacks::unwinding(pid_t pid, pid_t tid, uint64_t trampoline) {
    auto found = stacks_.find(tid);
    if (found == stacks_.end()) return;
    Stack& stack = found->second;
    for (auto& f : stack.frames) {
        if (!f.shared_slot) put_back(pid, f.slot, f.original, f.hijack ? f.hijack : trampoline);
        stack.suspended.push_back(std::move(f));
    }
    stack.frames.clear();
}

void TrampolineStacks::caught(pid_t pid, pid_t tid, uint64_t rsp, uint64_t trampoline, LostFrames& lost) {
    auto found = stacks_.find(tid);
    if (found == stacks_.end() || found->second.suspended.empty()) return;
    Stack& stack = found->second;
    std::vector<ReturnFrame> live;
    for (auto& f : stack.suspended) {
        if (f.slot < rsp) {
            lost.unwound += f.returns.size();
            continue;
        }
        uint64_t current = 0;
        if (!f.shared_slot) {
            // The slot must still hold the address we put back; otherwise
            // the frame is gone and the memory reused.
            if (!read_word(pid, f.slot, &current) || current != f.original ||
                !write_word(pid, f.slot, f.hijack ? f.hijack : trampoline)) {
                lost.unwound += f.returns.size();
                continue;
            }
        } else if (live.empty() || live.back().slot != f.slot) {
            lost.unwound += f.returns.size();
            continue;
        }
        live.push_back(std::move(f));
    }
    stack.suspended.clear();
    // Frames pushed while the unwinder ran (a destructor calling a probed
    // function) are deeper than every suspended one.
    live.insert(live.end(), std::make_move_iterator(stack.frames.begin()),
                std::make_move_iterator(stack.frames.end()));
    std::stable_sort(live.begin(), live.end(),
                     [](const ReturnFrame& a, const ReturnFrame& b) { return a.slot > b.slot; });
    stack.frames = std::move(live);
}

bool TrampolineStacks::restore(pid_t pid, pid_t tid, uint64_t trampoline, user_regs_struct* regs,
                               const ReturnStubs* stubs) {
    auto found = stacks_.find(tid);
    bool moved = false;
    const uint64_t stub_goes_to = regs && stubs ? stubs->original_of(regs->rip) : 0;
    if (regs && (regs->rip == trampoline || stub_goes_to)) {
        // Stopped on the trampoline (or a stub) after the ret, before its
        // int3: the slot is popped already.
        uint64_t resume_at = 0;
        if (found != stacks_.end()) {
            LostFrames ignored;
            (void)returned(tid, regs->rsp, &resume_at, ignored);
            found = stacks_.find(tid);
        }
        if (!resume_at) resume_at = stub_goes_to;
        if (resume_at) {
            regs->rip = resume_at;
            moved = true;
        }
    }
    if (found == stacks_.end()) return moved;
    for (const auto& f : found->second.frames)
        if (!f.shared_slot) put_back(pid, f.slot, f.original, f.hijack ? f.hijack : trampoline);
    return moved;
}

// ---------------------------------------------------------------- instructions

void ExitFrames::enter(ReturnFrame frame, uint64_t function) {
    auto& at = frames_[frame.slot];
    std::erase_if(at, [&](const ReturnFrame& f) { return !(f.shared_slot && f.callee_start == function); });
    at.push_back(std::move(frame));
}

std::vector<ReturnFrame> ExitFrames::returned(uint64_t rsp, uint64_t at) {
    std::vector<ReturnFrame> done;
    auto it = frames_.find(rsp);
    if (it == frames_.end()) return done;
    for (auto f = it->second.rbegin(); f != it->second.rend(); ++f) {
        if (f->shared_slot && !(at >= f->callee_start && at < f->callee_end)) continue;
        done.push_back(std::move(*f));
    }
    frames_.erase(it);
    return done;
}

std::vector<ReturnFrame> ExitFrames::left_by_jump(uint64_t rsp) {
    std::vector<ReturnFrame> done;
    auto it = frames_.find(rsp);
    if (it == frames_.end()) return done;
    for (auto f = it->second.rbegin(); f != it->second.rend(); ++f) done.push_back(std::move(*f));
    frames_.erase(it);
    return done;
}

void ExitFrames::jumped_into(uint64_t rsp, uint64_t callee_start, uint64_t callee_end, ReturnFrame pending) {
    auto it = frames_.find(rsp);
    if (it != frames_.end() && !it->second.empty() && !it->second.back().shared_slot) {
        ReturnFrame& jumping = it->second.back();
        jumping.shared_slot = true;
        jumping.callee_start = callee_start;
        jumping.callee_end = callee_end;
    }
    if (pending.returns.empty()) return;
    pending.slot = rsp;
    pending.shared_slot = true;
    pending.callee_start = callee_start;
    pending.callee_end = callee_end;
    frames_[rsp].push_back(std::move(pending));
}

}  // namespace uprobe::engine
