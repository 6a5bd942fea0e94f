// Stopping every thread of a target while its code changes, and letting
// them go.
#include "engine/inline/inline_engine.hpp"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "proc/ptrace.hpp"

namespace uprobe::engine::inline_engine {
namespace {

// Waits for the PTRACE_EVENT_STOP that an interrupt of `tid` asked for;
// false when the thread is gone. A signal that arrives first is delivered
// at once: kept for the detach it would be lost, as the detach happens
// from the event stop, where ptrace(2) may ignore the signal given, and a
// SIGTRAP of an int3 site lost that way resumes the thread past a
// displaced instruction.
bool until_event_stop(pid_t tid) {
    for (;;) {
        int status = 0;
        pid_t got = ::waitpid(tid, &status, __WALL);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 || !WIFSTOPPED(status)) return false;
        if ((status >> 16) == PTRACE_EVENT_STOP) return true;
        (void)proc::resume(tid, proc::Resume::Continue, WSTOPSIG(status));
        (void)proc::interrupt(tid);
    }
}

// Whether thread `tid` has a signal pending that it does not block (the
// hex masks SigPnd and SigBlk of /proc/PID/task/TID/status).
bool deliverable_signal_pending(pid_t pid, pid_t tid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/status");
    uint64_t pending = 0, blocked = 0;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("SigPnd:", 0) == 0) pending = std::strtoull(line.c_str() + 7, nullptr, 16);
        if (line.rfind("SigBlk:", 0) == 0) blocked = std::strtoull(line.c_str() + 7, nullptr, 16);
    }
    return (pending & ~blocked) != 0;
}

// Thread `tid` of `pid`, in an event stop with a signal pending: lets it dequeue
// the signal (PTRACE_CONT, no interrupt: a pending signal is taken before
// any instruction runs). An int3's SIGTRAP (si_code SI_KERNEL, one byte
// before rip) is suppressed and rip moved back onto the int3, and the
// thread stays in that signal-delivery-stop (resuming or detaching it
// with no signal discards the trap): true. Any other signal is delivered
// and the thread left running: false.
bool take_back_int3_trap(pid_t pid, pid_t tid) {
    if (!proc::resume(tid, proc::Resume::Continue, 0)) return false;
    int status = 0;
    pid_t got;
    do got = ::waitpid(tid, &status, __WALL);
    while (got < 0 && errno == EINTR);
    if (got != tid || !WIFSTOPPED(status)) return false;
    if ((status >> 16) != 0) {  // an event stop after all: nothing was dequeued
        (void)proc::resume(tid, proc::Resume::Continue, 0);
        return false;
    }
    const int signal = WSTOPSIG(status);
    auto info = proc::get_siginfo(tid);
    auto regs = proc::get_regs(tid);
    if (signal == SIGTRAP && info && info->si_code == SI_KERNEL && regs) {
        uint8_t two[2] = {};
        const bool int_3 = proc::read_memory(pid, regs->rip - 2, two, 2) && two[0] == 0xCD && two[1] == 0x03;
        if (!int_3 && proc::set_rip(tid, regs->rip - 1)) return true;
    }
    (void)proc::resume(tid, proc::Resume::Continue, signal);
    return false;
}

}  // namespace

// Seizes and stops every thread (listing again until no new one appears).
Result<std::vector<pid_t>> InlineEngine::stop_all(Target& t) {
    std::vector<pid_t> stopped;
    for (bool grew = true; grew;) {
        grew = false;
        UPROBE_TRY(std::vector<pid_t> tids, proc::list_threads(t.pid));
        for (pid_t tid : tids) {
            if (std::find(stopped.begin(), stopped.end(), tid) != stopped.end()) continue;
            auto seized = proc::seize(tid, 0);
            if (!seized) {
                if (tid == t.pid) {
                    release_all(t, stopped);
                    const std::string& m = seized.error().message();
                    return Error(proc::explain_attach_failure(
                        t.pid, "cannot attach to process " + std::to_string(t.pid) + ": " + m.substr(m.rfind(": ") + 2)));
                }
                continue;
            }
            (void)proc::interrupt(tid);
            bool stopped_ok = until_event_stop(tid);
            // A signal still pending would be dequeued by our first remote
            // system call in this thread and lost with it. An int3's
            // SIGTRAP (one of our sites hit just before the stop) is taken
            // back: the thread goes back to the int3 and meets whatever is
            // there once we are done, the handler never having run.
            // Another signal is delivered now. A thread hitting an int3
            // site in a loop would have a new trap pending at every stop,
            // so traps are never delivered here.
            for (int round = 0; stopped_ok && round < 8 && deliverable_signal_pending(t.pid, tid); ++round) {
                if (take_back_int3_trap(t.pid, tid)) break;
                (void)proc::interrupt(tid);
                stopped_ok = until_event_stop(tid);
            }
            stopped.push_back(tid);
            grew = true;
        }
    }
    return stopped;
}

// Lets the threads go, each with the signals that arrived while we held
// it: the first delivered by the detach, any others sent again.
void InlineEngine::release_all(Target& t, const std::vector<pid_t>& tids) {
    for (pid_t tid : tids) {
        std::vector<int> signals;
        if (auto it = t.held_signals.find(tid); it != t.held_signals.end()) {
            signals = std::move(it->second);
            t.held_signals.erase(it);
        }
        (void)proc::detach(tid, signals.empty() ? 0 : signals.front());
        for (size_t i = 1; i < signals.size(); ++i) (void)::syscall(SYS_tgkill, t.pid, tid, signals[i]);
    }
}

}  // namespace uprobe::engine::inline_engine
