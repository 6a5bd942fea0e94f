// The one choke point for ptrace(2): every request goes through here and
// failures come back as Result values naming the request and the thread.
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>
#include <string>

#include "uprobe/result.hpp"

namespace uprobe::proc {

// How a stopped thread is resumed.
enum class Resume {
    Continue,    // PTRACE_CONT
    SingleStep,  // PTRACE_SINGLESTEP (only remote syscalls use it)
    Listen,      // PTRACE_LISTEN: stay in group-stop, report SIGCONT
};

Result<void> seize(pid_t tid, unsigned options);
// Why attaching to `pid` failed, and what to do, as one line: already
// traced (by whom), another user's process, the Yama ptrace policy, a
// non-dumpable process; `fallback` when none of these applies.
std::string explain_attach_failure(pid_t pid, const std::string& fallback);
Result<void> interrupt(pid_t tid);
Result<void> resume(pid_t tid, Resume how, int signal = 0);
Result<void> detach(pid_t tid, int signal = 0);
Result<void> set_options(pid_t tid, unsigned options);
Result<user_regs_struct> get_regs(pid_t tid);
Result<void> set_regs(pid_t tid, const user_regs_struct& regs);
Result<user_fpregs_struct> get_fpregs(pid_t tid);
// The signal of a signal-delivery-stop (PTRACE_GETSIGINFO).
Result<siginfo_t> get_siginfo(pid_t tid);
// One register write: the instruction pointer (PTRACE_POKEUSER).
Result<void> set_rip(pid_t tid, uint64_t rip);
// The new thread/process id of a clone/fork/vfork event stop.
Result<pid_t> event_message(pid_t tid);

// Runs one system call inside stopped thread `tid` and returns its raw
// result (a negative errno on failure). The call executes a `syscall`
// instruction at `gadget` when non-zero (code of ours that no other thread
// runs), else borrows the two bytes at the thread's rip (only safe while no
// other thread of the process runs). Registers and borrowed bytes are
// restored before returning, whatever happens. Signals that arrive during the call are returned in
// `*deferred_signal` (0 if none) for the caller to deliver later.
Result<int64_t> remote_syscall(pid_t tid, uint64_t gadget, int64_t number, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
                               uint64_t a4 = 0, uint64_t a5 = 0, uint64_t a6 = 0, int* deferred_signal = nullptr);

}  // namespace uprobe::proc
