// Acting inside a stopped target: system calls and calls made in one of
// its threads, memory for trampolines, loading the agent.
#include "engine/inline/inline_engine.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>

#include "base/strings.hpp"
#include "proc/ptrace.hpp"

namespace uprobe::engine::inline_engine {
namespace {

// `pid` as its own pid namespace numbers it (the last NSpid of its status).
pid_t own_pid_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("NSpid:", 0) != 0) continue;
        auto last = line.find_last_of(" \t");
        if (auto n = parse_uint(line.substr(last + 1))) return static_cast<pid_t>(*n);
    }
    return pid;
}

// The agent as the target sees it: a mapping named like our agent file.
// A memfd copy (attach) shows as "/memfd:libuprobe-agent.so (deleted)".
const Mapping* loaded_agent(const std::vector<Mapping>& maps) {
    for (const auto& m : maps)
        if (m.inode != 0 && m.path.find("libuprobe-agent.so") != std::string::npos) return &m;
    return nullptr;
}

}  // namespace

// proc::remote_syscall in stopped thread `tid`; a signal that arrives
// meanwhile is held for release_all.
Result<int64_t> InlineEngine::remote_syscall(Target& t, pid_t tid, uint64_t gadget, int64_t number, uint64_t a1,
                                             uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6) {
    int deferred = 0;
    auto result = proc::remote_syscall(tid, gadget, number, a1, a2, a3, a4, a5, a6, &deferred);
    if (deferred) t.held_signals[tid].push_back(deferred);
    return result;
}

// An r-x area near `near` (remote mmap), bump-allocated.
Result<uint64_t> InlineEngine::allocate(Target& t, pid_t tid, uint64_t near, uint64_t size) {
    size = (size + 15) & ~uint64_t{15};
    if (auto at = take_code(t.areas, kAreaSize, near, size)) return *at;
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(t.pid));
    auto best = proc::free_range_near(maps, near, kAreaSize, code_reach(kAreaSize));
    if (!best) return Error("no free address range within 2 GiB of " + hex(near) + " for a trampoline");
    UPROBE_TRY(int64_t mapped, remote_syscall(t, tid, t.scratch, SYS_mmap, *best, kAreaSize, PROT_READ | PROT_EXEC,
                                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                                              static_cast<uint64_t>(-1), 0));
    if (mapped < 0) return errno_error("mapping trampolines in process " + std::to_string(t.pid), static_cast<int>(-mapped));
    t.areas.push_back(CodeArea{static_cast<uint64_t>(mapped), size});
    return static_cast<uint64_t>(mapped);
}

// One page of our code in the target: `syscall; int3` (the gadget of
// remote system calls), an int3 that remote calls return to, and strings.
Result<void> InlineEngine::map_scratch(Target& t, pid_t tid) {
    UPROBE_TRY(int64_t mapped, remote_syscall(t, tid, 0, SYS_mmap, 0, 4096, PROT_READ | PROT_EXEC,
                                              MAP_PRIVATE | MAP_ANONYMOUS, static_cast<uint64_t>(-1), 0));
    if (mapped < 0) return errno_error("mapping scratch code in process " + std::to_string(t.pid), static_cast<int>(-mapped));
    t.scratch = static_cast<uint64_t>(mapped);
    const uint8_t code[4] = {0x0f, 0x05, 0xcc, 0xcc};
    UPROBE_CHECK(proc::write_memory(t.pid, t.scratch, code, sizeof code));
    return {};
}

// Calls function(a1, a2) in stopped thread `tid` and returns rax; every
// register is restored afterwards. Below the red zone, with the stack
// aligned as at a call; returns to the scratch int3.
Result<uint64_t> InlineEngine::remote_call(Target& t, pid_t tid, uint64_t function, uint64_t a1, uint64_t a2) {
    UPROBE_TRY(user_regs_struct saved, proc::get_regs(tid));
    struct Restore {
        pid_t tid;
        const user_regs_struct& regs;
        ~Restore() { (void)proc::set_regs(tid, regs); }
    } restore{tid, saved};
    user_regs_struct call = saved;
    uint64_t return_to = t.scratch + 3;
    call.rsp = ((saved.rsp - 512) & ~uint64_t{15}) - 8;
    UPROBE_CHECK(proc::write_memory(t.pid, call.rsp, &return_to, sizeof return_to));
    call.orig_rax = static_cast<uint64_t>(-1);
    call.rip = function;
    call.rdi = a1;
    call.rsi = a2;
    call.rax = 0;
    UPROBE_CHECK(proc::set_regs(tid, call));
    for (int attempt = 0; attempt < 1000; ++attempt) {
        UPROBE_CHECK(proc::resume(tid, proc::Resume::Continue, 0));
        int status = 0;
        pid_t got;
        do got = ::waitpid(tid, &status, __WALL);
        while (got < 0 && errno == EINTR);
        if (got < 0) return errno_error("waiting for thread " + std::to_string(tid), errno);
        if (!WIFSTOPPED(status)) return Error("process " + std::to_string(t.pid) + " exited while loading the agent");
        UPROBE_TRY(user_regs_struct after, proc::get_regs(tid));
        if (WSTOPSIG(status) == SIGTRAP && after.rip == return_to + 1) return after.rax;
        if (WSTOPSIG(status) == SIGSEGV || WSTOPSIG(status) == SIGBUS || WSTOPSIG(status) == SIGILL)
            return Error("loading the agent faulted in process " + std::to_string(t.pid));
        if ((status >> 16) == 0 && WSTOPSIG(status) != SIGTRAP) t.held_signals[tid].push_back(WSTOPSIG(status));
    }
    return Error("loading the agent did not complete in process " + std::to_string(t.pid));
}

Result<uint64_t> InlineEngine::find_dlopen(Target& t, const std::vector<Mapping>& maps) {
    for (const auto& m : maps) {
        if (!m.exec || m.inode == 0 || m.path.find("/libc.so") == std::string::npos) continue;
        std::string path = proc::host_path(t.pid, m.path);
        UPROBE_TRY(elf::Binary * libc, resolver_.binary(path));
        for (const auto& f : libc->functions())
            if (f.name == "dlopen" && !f.local) return runtime_address(*libc, maps, path, f.vaddr, m.device, m.inode);
        return Error(path + " exports no dlopen (glibc older than 2.34?)");
    }
    return Error("process " + std::to_string(t.pid) + " has no libc mapped (a static program? try --engine ptrace)");
}

Result<uint64_t> InlineEngine::find_agent_symbol(Target& t, const std::vector<Mapping>& maps, const std::string& name,
                                                 bool function) {
    UPROBE_TRY(elf::Binary * agent, resolver_.binary(agent_));
    std::optional<uint64_t> vaddr;
    if (function) {
        for (const auto& f : agent->functions())
            if (f.name == name) vaddr = f.vaddr;
    } else {
        vaddr = agent->data_symbol(name);
    }
    if (!vaddr) return Error(agent_ + " has no symbol " + name + " (a different build?)");
    for (const auto& m : maps)
        if (m.inode == t.agent_inode && m.device == t.agent_device)
            return runtime_address(*agent, maps, agent_, *vaddr, m.device, m.inode);
    return Error("the agent is not loaded in process " + std::to_string(t.pid));
}

Result<uint64_t> InlineEngine::find_handler(Target& t, const std::vector<Mapping>& maps) {
    return find_agent_symbol(t, maps, abi::kHandlerSymbol, true);
}

// Attach: the agent goes in as a memfd copy of our file, so a target in
// another mount namespace (or chroot) loads exactly our bytes, and no path
// of ours needs to exist there. An agent of an earlier session is reused;
// one whose session's tracer is alive means the process is taken.
Result<void> InlineEngine::inject_agent(Target& t, pid_t tid) {
    auto remote = [&](int64_t number, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0,
                      uint64_t a5 = 0, uint64_t a6 = 0) {
        return remote_syscall(t, tid, t.scratch, number, a1, a2, a3, a4, a5, a6);
    };
    const std::string pid_text = std::to_string(t.pid);
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(t.pid));
    uint64_t previous_region = 0;
    if (const Mapping* agent = loaded_agent(maps)) {
        t.agent_inode = agent->inode;
        t.agent_device = agent->device;
        UPROBE_TRY(uint64_t region_word, find_agent_symbol(t, maps, "uprobe_agent_region", false));
        uint64_t region = 0;
        abi::Header old{};
        if (proc::read_memory(t.pid, region_word, &region, sizeof region) && region &&
            proc::read_memory(t.pid, region, &old, sizeof old) && old.magic == abi::kMagic && old.enabled &&
            old.tracer_pid && ::kill(static_cast<pid_t>(old.tracer_pid), 0) == 0)
            return Error("process " + pid_text + " is already traced by process " + std::to_string(old.tracer_pid) +
                         " (uprobe, inline engine); only one tracer at a time: detach that one first");
        if (old.magic == abi::kMagic) previous_region = region;
    } else {
        UniqueFd file(::open(agent_.c_str(), O_RDONLY | O_CLOEXEC));
        if (!file.valid()) return errno_error(agent_, errno);
        std::string bytes;
        char buffer[65536];
        for (ssize_t n; (n = ::read(file.get(), buffer, sizeof buffer)) > 0;) bytes.append(buffer, static_cast<size_t>(n));
        const std::string name = "libuprobe-agent.so";
        UPROBE_CHECK(proc::write_memory(t.pid, t.scratch + 64, name.c_str(), name.size() + 1));
        UPROBE_TRY(int64_t fd, remote(SYS_memfd_create, t.scratch + 64, MFD_CLOEXEC));
        if (fd < 0) return errno_error("memfd_create in process " + pid_text, static_cast<int>(-fd));
        auto loaded = [&]() -> Result<void> {
            uint64_t size = (bytes.size() + 4095) & ~uint64_t{4095};
            UPROBE_TRY(int64_t staging, remote(SYS_mmap, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                               static_cast<uint64_t>(-1), 0));
            if (staging < 0) return errno_error("staging the agent in process " + pid_text, static_cast<int>(-staging));
            UPROBE_CHECK(proc::write_memory(t.pid, static_cast<uint64_t>(staging), bytes.data(), bytes.size()));
            for (uint64_t done = 0; done < bytes.size();) {
                UPROBE_TRY(int64_t n, remote(SYS_write, static_cast<uint64_t>(fd), static_cast<uint64_t>(staging) + done,
                                             bytes.size() - done));
                if (n <= 0) return errno_error("copying the agent into process " + pid_text, static_cast<int>(-n));
                done += static_cast<uint64_t>(n);
            }
            (void)remote(SYS_munmap, static_cast<uint64_t>(staging), size);
            struct stat st{};
            std::string fd_path = "/proc/" + pid_text + "/fd/" + std::to_string(fd);
            if (::stat(fd_path.c_str(), &st) != 0) return errno_error(fd_path, errno);
            t.agent_inode = st.st_ino;
            t.agent_device = st.st_dev;
            // Not /proc/self/...: the loader records this name in the link
            // map, and a debugger reading it would open its own fd N (a
            // pipe, say, and block). The target's own pid, as its pid
            // namespace numbers it, names the same file for everyone.
            std::string self_path = "/proc/" + std::to_string(own_pid_of(t.pid)) + "/fd/" + std::to_string(fd);
            UPROBE_CHECK(proc::write_memory(t.pid, t.scratch + 128, self_path.c_str(), self_path.size() + 1));
            UPROBE_TRY(uint64_t dlopen_at, find_dlopen(t, maps));
            UPROBE_TRY(uint64_t handle, remote_call(t, tid, dlopen_at, t.scratch + 128, RTLD_NOW));
            if (handle == 0) return Error("the dynamic loader of process " + pid_text + " refused the agent");
            return {};
        }();
        (void)remote(SYS_close, static_cast<uint64_t>(fd));
        UPROBE_CHECK(loaded);
    }
    // The event region: created inside the target, so it is the target's
    // (reachable through its /proc/PID/fd only while the fd is open, which
    // is just long enough for us to map it too).
    const std::string name = "uprobe-events";
    UPROBE_CHECK(proc::write_memory(t.pid, t.scratch + 64, name.c_str(), name.size() + 1));
    UPROBE_TRY(int64_t fd, remote(SYS_memfd_create, t.scratch + 64, MFD_CLOEXEC));
    if (fd < 0) return errno_error("memfd_create in process " + pid_text, static_cast<int>(-fd));
    auto close_remote = [&] { (void)remote(SYS_close, static_cast<uint64_t>(fd)); };
    UPROBE_TRY(int64_t sized, remote(SYS_ftruncate, static_cast<uint64_t>(fd), kLayout.total()));
    if (sized < 0) {
        close_remote();
        return errno_error("sizing the event region", static_cast<int>(-sized));
    }
    UPROBE_TRY(int64_t mapped, remote(SYS_mmap, 0, kLayout.total(), PROT_READ | PROT_WRITE, MAP_SHARED,
                                      static_cast<uint64_t>(fd), 0));
    std::string path = "/proc/" + pid_text + "/fd/" + std::to_string(fd);
    UniqueFd ours(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    close_remote();
    if (mapped < 0) return errno_error("mapping the event region in process " + pid_text, static_cast<int>(-mapped));
    if (!ours.valid()) return errno_error(path, errno);
    UPROBE_TRY(t.region, map_region(ours.get()));
    init_region(t.region);
    t.region->self = static_cast<uint64_t>(mapped);
    t.region->agent_pid = static_cast<uint32_t>(t.pid);
    t.region->previous_region = previous_region;
    t.remote_region = static_cast<uint64_t>(mapped);
    // The earlier sessions' regions stay mapped in the process, each naming
    // the one before (the agent walks the same chain).
    for (int hops = 0; previous_region && hops < 64; ++hops) {
        abi::Header old{};
        if (!proc::read_memory(t.pid, previous_region, &old, sizeof old) || old.magic != abi::kMagic) break;
        if (old.int3_capacity <= kLayout.int3_capacity && old.int3_offset < old.region_size) {
            std::vector<abi::Int3Entry> table(old.int3_capacity);
            if (proc::read_memory(t.pid, previous_region + old.int3_offset, table.data(),
                                  table.size() * sizeof(abi::Int3Entry)))
                for (const auto& e : table)
                    if (e.address) t.earlier_int3.insert(e.address);
        }
        previous_region = old.previous_region;
    }
    return {};
}

}  // namespace uprobe::engine::inline_engine
