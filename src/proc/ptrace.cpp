#include "proc/ptrace.hpp"

#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "base/strings.hpp"
#include "proc/proc.hpp"

namespace uprobe::proc {
namespace {

Result<long> request(__ptrace_request what, const char* name, pid_t tid, uint64_t addr, uint64_t data) {
    errno = 0;
    long r = ::ptrace(what, tid, reinterpret_cast<void*>(addr), reinterpret_cast<void*>(data));
    if (r == -1 && errno != 0) return errno_error(std::string(name) + " of thread " + std::to_string(tid), errno);
    return r;
}

#define UPROBE_PTRACE(req, tid, addr, data) request(req, #req, tid, addr, data)

}  // namespace

Result<void> seize(pid_t tid, unsigned options) {
    UPROBE_TRY([[maybe_unused]] long r, UPROBE_PTRACE(PTRACE_SEIZE, tid, 0, options));
    return {};
}

namespace {

// The value of "Key:" in /proc/PID/status (first field), or "".
std::string status_field(pid_t pid, const std::string& key) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.compare(0, key.size() + 1, key + ":") != 0) continue;
        std::istringstream fields(line.substr(key.size() + 1));
        std::string first;
        fields >> first;
        return first;
    }
    return "";
}

std::string comm_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
    std::string comm;
    std::getline(in, comm);
    return comm;
}

}  // namespace

std::string explain_attach_failure(pid_t pid, const std::string& fallback) {
    std::string who = "process " + std::to_string(pid);
    std::string tracer = status_field(pid, "TracerPid");
    if (!tracer.empty() && tracer != "0") {
        return who + " is already traced by process " + tracer + " (" + comm_of(std::stoi(tracer)) +
               "); only one tracer at a time: detach that one first";
    }
    std::string uid = status_field(pid, "Uid");  // real uid
    if (!uid.empty() && ::geteuid() != 0 && static_cast<uid_t>(std::stoul(uid)) != ::geteuid()) {
        return who + " belongs to uid " + uid + ", not to you (uid " + std::to_string(::geteuid()) +
               "): you may trace only your own processes, unless you are root";
    }
    std::ifstream yama("/proc/sys/kernel/yama/ptrace_scope");
    int scope = 0;
    if (yama >> scope && scope > 0 && ::geteuid() != 0) {
        return "the system's ptrace policy (kernel.yama.ptrace_scope=" + std::to_string(scope) +
               ") forbids attaching to " + who +
               ": launch the program under uprobe instead (uprobe trace PROBE -- COMMAND), or ask an admin";
    }
    struct stat st {};
    std::string proc_dir = "/proc/" + std::to_string(pid);
    if (::stat(proc_dir.c_str(), &st) == 0 && st.st_uid == 0 && !uid.empty() && uid != "0" && ::geteuid() != 0) {
        return who + " is not dumpable (set-user-ID, or it called prctl(PR_SET_DUMPABLE, 0)): it cannot be traced";
    }
    return fallback;
}

Result<void> interrupt(pid_t tid) {
    UPROBE_TRY([[maybe_unused]] long r, UPROBE_PTRACE(PTRACE_INTERRUPT, tid, 0, 0));
    return {};
}

Result<void> resume(pid_t tid, Resume how, int signal) {
    Result<long> r = 0L;
    switch (how) {
    case Resume::Continue: r = UPROBE_PTRACE(PTRACE_CONT, tid, 0, static_cast<uint64_t>(signal)); break;
    case Resume::SingleStep: r = UPROBE_PTRACE(PTRACE_SINGLESTEP, tid, 0, static_cast<uint64_t>(signal)); break;
    case Resume::Listen: r = UPROBE_PTRACE(PTRACE_LISTEN, tid, 0, 0); break;
    }
    if (!r) return r.error();
    return {};
}

Result<void> detach(pid_t tid, int signal) {
    UPROBE_TRY([[maybe_unused]] long r, UPROBE_PTRACE(PTRACE_DETACH, tid, 0, static_cast<uint64_t>(signal)));
    return {};
}

Result<void> set_options(pid_t tid, unsigned options) {
    UPROBE_TRY([[maybe_unused]] long r, UPROBE_PTRACE(PTRACE_SETOPTIONS, tid, 0, options));
    return {};
}

Result<siginfo_t> get_siginfo(pid_t tid) {
    siginfo_t info{};
    UPROBE_TRY([[maybe_unused]] long r, UPROBE_PTRACE(PTRACE_GETSIGINFO, tid, 0, reinterpret_cast<uint64_t>(&info)));
    return info;
}

Result<user_regs_struct> get_regs(pid_t tid) {
    user_regs_struct regs{};
    UPROBE_TRY([[maybe_unused]] long r, UPROBE_PTRACE(PTRACE_GETREGS, tid, 0, reinterpret_cast<uint64_t>(&regs)));
    return regs;
}

Result<void> set_regs(pid_t tid, const user_regs_struct& regs) {
    UPROBE_TRY([[maybe_unused]] long r, UPROBE_PTRACE(PTRACE_SETREGS, tid, 0, reinterpret_cast<uint64_t>(&regs)));
    return {};
}

Result<user_fpregs_struct> get_fpregs(pid_t tid) {
    user_fpregs_struct regs{};
    UPROBE_TRY([[maybe_unused]] long r, UPROBE_PTRACE(PTRACE_GETFPREGS, tid, 0, reinterpret_cast<uint64_t>(&regs)));
    return regs;
}

Result<void> set_rip(pid_t tid, uint64_t rip) {
    UPROBE_TRY([[maybe_unused]] long r, UPROBE_PTRACE(PTRACE_POKEUSER, tid, offsetof(user_regs_struct, rip), rip));
    return {};
}

Result<pid_t> event_message(pid_t tid) {
    unsigned long message = 0;
    UPROBE_TRY([[maybe_unused]] long r,
               UPROBE_PTRACE(PTRACE_GETEVENTMSG, tid, 0, reinterpret_cast<uint64_t>(&message)));
    return static_cast<pid_t>(message);
}

Result<int64_t> remote_syscall(pid_t tid, uint64_t gadget, int64_t number, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                               uint64_t a5, uint64_t a6, int* deferred_signal) {
    if (deferred_signal) *deferred_signal = 0;
    UPROBE_TRY(user_regs_struct saved, get_regs(tid));
    UPROBE_TRY(pid_t pid, thread_group_of(tid));
    uint8_t original[2];
    const uint64_t at = gadget ? gadget : saved.rip;
    if (!gadget) {
        UPROBE_CHECK(read_memory(pid, at, original, sizeof original));
        const uint8_t syscall_insn[2] = {0x0f, 0x05};
        UPROBE_CHECK(write_memory(pid, at, syscall_insn, sizeof syscall_insn));
    }

    // Restores the borrowed bytes and registers on every path out.
    struct Restore {
        pid_t pid, tid;
        const user_regs_struct& regs;
        const uint8_t* bytes;  // nullptr: nothing borrowed
        ~Restore() {
            if (bytes) (void)write_memory(pid, regs.rip, bytes, 2);
            (void)set_regs(tid, regs);
        }
    } restore{pid, tid, saved, gadget ? nullptr : original};

    user_regs_struct call = saved;
    // orig_rax = -1 keeps the kernel from restarting an interrupted system
    // call of the thread on top of ours (arch/x86/kernel/signal.c); the
    // saved registers bring the restart back afterwards.
    call.orig_rax = static_cast<uint64_t>(-1);
    call.rip = at;
    call.rax = static_cast<uint64_t>(number);
    call.rdi = a1;
    call.rsi = a2;
    call.rdx = a3;
    call.r10 = a4;
    call.r8 = a5;
    call.r9 = a6;
    UPROBE_CHECK(set_regs(tid, call));
    for (int attempt = 0; attempt < 16; ++attempt) {
        UPROBE_CHECK(resume(tid, Resume::SingleStep));
        int status = 0;
        pid_t got;
        do got = ::waitpid(tid, &status, __WALL);
        while (got < 0 && errno == EINTR);
        if (got < 0) return errno_error("waiting for thread " + std::to_string(tid), errno);
        if (!WIFSTOPPED(status)) return Error("thread " + std::to_string(tid) + " exited during a remote system call");
        UPROBE_TRY(user_regs_struct after, get_regs(tid));
        if (WSTOPSIG(status) == SIGTRAP && after.rip == at + 2) return static_cast<int64_t>(after.rax);
        // Another signal stopped the thread before the step: keep it for
        // later and step again.
        if (WSTOPSIG(status) != SIGTRAP && deferred_signal && (status >> 16) == 0) *deferred_signal = WSTOPSIG(status);
        UPROBE_CHECK(set_regs(tid, call));
    }
    return Error("remote system call in thread " + std::to_string(tid) + " did not complete");
}

}  // namespace uprobe::proc
