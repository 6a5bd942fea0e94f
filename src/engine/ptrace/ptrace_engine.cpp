// The ptrace engine: int3 at every probe site, the displaced instruction
// run out of line (arch::relocate) so that a hit costs one trap and no
// single-step: waitpid, GETREGS, a rip write, PTRACE_CONT.
//
// State is split the way the kernel splits it: breakpoints and out-of-line
// (XOL) slots belong to an address space (shared by vfork children, copied
// by fork), threads belong to a process.
#include "engine/engine.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <elf.h>
#include <sys/auxv.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/relocate.hpp"
#include "base/strings.hpp"
#include "base/unique_fd.hpp"
#include "elf/binary.hpp"
#include "probe/fetch.hpp"
#include "probe/resolve.hpp"
#include "proc/proc.hpp"
#include "proc/ptrace.hpp"

namespace uprobe::engine {
namespace {

using proc::Mapping;

constexpr uint8_t kInt3 = 0xcc;
constexpr uint64_t kXolAreaSize = 256 * 1024;
constexpr uint64_t kSlotSize = arch::kMaxOutOfLineSize;
// rel32 reach, minus room for the area itself.
constexpr uint64_t kReach = (uint64_t{1} << 31) - 2 * kXolAreaSize;

// Never PTRACE_O_EXITKILL: if we die, the targets must live on.
constexpr unsigned kOptions = PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC;

std::string hex(uint64_t v) {
    char text[32];
    std::snprintf(text, sizeof text, "0x%" PRIx64, v);
    return text;
}

uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

struct ObjectKey {
    dev_t device = 0;
    ino_t inode = 0;
    auto operator<=>(const ObjectKey&) const = default;
};

// One probe's presence at one breakpoint.
struct SiteProbe {
    uint32_t probe_id = 0;
    std::vector<probe::FetchProgram> programs;
    bool needs_fpregs = false;
};

enum class Internal { None, Entry, Rendezvous };

struct Breakpoint {
    uint64_t address = 0;
    uint8_t original = 0;
    uint64_t slot = 0;
    ObjectKey object;
    std::vector<SiteProbe> probes;
    Internal internal = Internal::None;
};

struct XolArea {
    uint64_t start = 0;
    uint64_t used = 0;  // bytes handed out; slot 0 is the syscall gadget
};

// An SDT semaphore we raised: the program computes a marker's arguments
// only while its semaphore is non-zero (a tracer's job, as for the kernel's
// uprobes with ref_ctr_offset).
struct Semaphore {
    uint16_t raised = 0;
    ObjectKey object;
};

struct AddressSpace {
    std::map<uint64_t, Breakpoint> breakpoints;
    std::map<uint64_t, Semaphore> semaphores;
    std::vector<XolArea> xol;
    std::set<ObjectKey> objects;  // objects whose probes are inserted
    uint64_t r_debug = 0;
};

struct Process {
    pid_t pid = 0;
    bool silent = false;   // traced only to keep it unharmed (non-followed vfork child)
    bool root = false;     // the launched command
    std::shared_ptr<AddressSpace> space;
    std::set<pid_t> threads;
    ObjectKey exe;
};

struct Thread {
    pid_t tid = 0;
    pid_t pid = 0;
    bool stopped = false;
    bool group_stop = false; // in a group-stop: resumed with PTRACE_LISTEN
    int pending_signal = 0;  // held back while we hold threads stopped
    std::string comm;
};

struct PendingChild {
    pid_t parent = 0;
    bool vfork = false;
};

std::atomic<int> g_wake_signal_installed{0};
void on_wake_signal(int) {}

class PtraceEngine final : public Engine {
public:
    PtraceEngine() { wake_fd_.reset(::eventfd(0, EFD_CLOEXEC)); }
    ~PtraceEngine() override {
        if (!finished_) detach_all();
    }

    Result<void> start(const TraceRequest& request, EventConsumer& consumer) override;
    Result<int> run() override;
    void stop() override {
        stop_requested_.store(true);
        uint64_t one = 1;
        if (wake_fd_.valid()) (void)!::write(wake_fd_.get(), &one, sizeof one);
    }
    std::vector<ProbeStats> stats() const override { return stats_; }
    std::vector<pid_t> traced_processes() const override { return ever_traced_; }

private:
    // -- setup
    Result<void> attach(pid_t pid);
    Result<pid_t> launch(const std::vector<std::string>& command);
    // strict: every probe on the main executable must resolve (start-up);
    // otherwise failures become notes (a followed child exec'd another program).
    Result<void> setup_image(Process& process, pid_t tid, bool at_exec, bool strict);
    Result<void> sync_objects(Process& process, pid_t tid, bool fail_hard);
    Result<void> insert_probe_sites(Process& process, pid_t tid, const Mapping& any, const std::vector<Mapping>& maps,
                                    size_t probe_index);
    Result<void> insert_breakpoint(Process& process, pid_t tid, uint64_t address, const std::vector<uint8_t>& code,
                                   ObjectKey object, std::optional<SiteProbe> probe, Internal internal);
    Result<uint64_t> allocate_slot(Process& process, pid_t tid, uint64_t near);
    Result<uint64_t> find_rendezvous(Process& process);
    void remove_breakpoint_bytes(pid_t pid, AddressSpace& space);

    // -- placement
    void update_colocation();
    void unpin(pid_t tid);

    // -- event loop
    void handle_status(pid_t tid, int status);
    void handle_stop(Thread& thread, int status);
    void handle_trap(Thread& thread);
    void handle_new_child(Thread& parent, pid_t child, int event);
    void adopt_child_with(pid_t child, int status);
    void handle_exec(Thread& thread);
    void emit(Thread& thread, Process& process, const Breakpoint& bp, const user_regs_struct& regs);
    void process_exited(pid_t pid, int status);
    void resume(Thread& thread, int signal = 0);
    Result<void> wait_for_all_stopped();
    void detach_all();

    Process* process_of(pid_t pid) {
        auto it = processes_.find(pid);
        return it == processes_.end() ? nullptr : &it->second;
    }
    const std::string& comm_of(Thread& thread) {
        if (thread.comm.empty()) thread.comm = proc::read_comm(thread.pid, thread.tid);
        return thread.comm;
    }
    void note(const std::string& line) {
        if (consumer_) consumer_->on_note(line);
    }

    TraceRequest request_;
    EventConsumer* consumer_ = nullptr;
    probe::Resolver resolver_;
    std::map<pid_t, Process> processes_;
    std::map<pid_t, Thread> threads_;
    std::map<pid_t, int> early_stops_;        // stops of children not yet announced by their parent
    std::map<pid_t, PendingChild> pending_children_;  // announced, first stop not seen
    std::vector<ProbeStats> stats_;
    std::vector<pid_t> ever_traced_;
    std::map<std::pair<size_t, ObjectKey>, std::vector<probe::Site>> site_cache_;
    pid_t root_pid_ = 0;
    int root_status_ = 0;
    bool stopping_ = false;
    bool finished_ = true;
    std::atomic<bool> stop_requested_{false};
    std::atomic<bool> loop_done_{false};
    UniqueFd wake_fd_;

    // Co-location: a hit is a stop that wakes us and a resume that wakes the
    // thread; with the two on different CPUs each wake-up crosses CPUs and a
    // hit costs ~50 us instead of ~9 us (bench/trace.sh). So while exactly
    // one thread is traced, it and the event loop share one CPU. Threads and
    // children it creates meanwhile inherit that one-CPU mask, so they are
    // remembered in pinned_ and all get the original mask back as soon as
    // there is more than one thread, or at detach.
    pid_t colocated_ = 0;
    cpu_set_t colocated_mask_{};  // its mask before we pinned it
    cpu_set_t own_mask_{};        // the event loop's mask before we pinned it
    std::set<pid_t> pinned_;
    size_t placed_for_threads_ = 0;
};

// ---------------------------------------------------------------- setup

Result<void> PtraceEngine::start(const TraceRequest& request, EventConsumer& consumer) {
    request_ = request;
    consumer_ = &consumer;
    if (request.probes.empty()) return Error("no probes given");
    if (request.command.empty() && request.attach_pids.empty()) return Error("nothing to trace: give a command or -p PID");
    for (const auto& spec : request.probes) {
        ProbeStats s;
        s.probe = spec.name;
        stats_.push_back(s);
        const std::string& bin = spec.location.binary;
        if (bin.find('/') != std::string::npos) {
            struct stat st{};
            if (::stat(bin.c_str(), &st) != 0) return errno_error(bin, errno).context("probe " + spec.name);
        }
    }
    finished_ = false;
    if (!request.command.empty()) {
        auto pid = launch(request.command);
        if (!pid) {
            finished_ = true;
            return pid.error();
        }
        return {};
    }
    stopping_ = true;  // hold every thread until all probes are in
    for (pid_t pid : request.attach_pids) {
        if (auto attached = attach(pid); !attached) {
            detach_all();
            return attached.error();
        }
    }
    stopping_ = false;
    for (auto& [tid, thread] : threads_)
        if (thread.stopped) resume(thread, std::exchange(thread.pending_signal, 0));
    return {};
}

Result<void> PtraceEngine::attach(pid_t pid) {
    if (pid <= 0 || ::kill(pid, 0) != 0) {
        if (pid > 0 && errno == EPERM) return Error("not allowed to trace process " + std::to_string(pid));
        return Error("no process with pid " + std::to_string(pid));
    }
    if (processes_.count(pid)) return {};
    Process& process = processes_[pid];
    process.pid = pid;
    process.space = std::make_shared<AddressSpace>();
    ever_traced_.push_back(pid);
    // Threads may be created while we attach: list until nothing new shows up.
    for (bool grew = true; grew;) {
        grew = false;
        UPROBE_TRY(std::vector<pid_t> tids, proc::list_threads(pid));
        for (pid_t tid : tids) {
            if (threads_.count(tid)) continue;
            auto seized = proc::seize(tid, kOptions);
            if (!seized) {
                if (tid == pid) {
                    processes_.erase(pid);
                    ever_traced_.pop_back();
                    return Error("cannot attach to process " + std::to_string(pid) + ": " +
                                 seized.error().message().substr(seized.error().message().rfind(": ") + 2));
                }
                continue;  // exited meanwhile, or auto-attached through a clone already
            }
            threads_[tid] = Thread{tid, pid, false, false, 0, {}};
            process.threads.insert(tid);
            grew = true;
            (void)proc::interrupt(tid);
        }
    }
    UPROBE_CHECK(wait_for_all_stopped());
    note("attached to " + std::to_string(pid) + " (" + std::to_string(process.threads.size()) + " threads)");
    pid_t any = *process.threads.begin();
    UPROBE_CHECK(setup_image(process, any, false, true));
    return {};
}

Result<pid_t> PtraceEngine::launch(const std::vector<std::string>& command) {
    int go[2], error_pipe[2];
    if (::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(error_pipe, O_CLOEXEC) != 0) return errno_error("pipe", errno);
    std::vector<char*> argv;
    for (const auto& word : command) argv.push_back(const_cast<char*>(word.c_str()));
    argv.push_back(nullptr);
    pid_t group = request_.process_group;
    pid_t pid = ::fork();
    if (pid < 0) return errno_error("fork", errno);
    if (pid == 0) {
        // The command belongs with the user's job (the terminal's foreground
        // group), not with the tracer, which keeps a group of its own.
        if (group > 0) ::setpgid(0, group);
        ::close(go[1]);
        ::close(error_pipe[0]);
        char byte;
        while (::read(go[0], &byte, 1) < 0 && errno == EINTR) {}
        ::execvp(argv[0], argv.data());
        int err = errno;
        (void)!::write(error_pipe[1], &err, sizeof err);
        ::_exit(127);
    }
    ::close(go[0]);
    ::close(error_pipe[1]);
    UniqueFd go_fd(go[1]), error_fd(error_pipe[0]);
    auto kill_child = [&](Error e) -> Result<pid_t> {
        ::kill(pid, SIGKILL);
        int st;
        while (::waitpid(pid, &st, __WALL) < 0 && errno == EINTR) {}
        return e;
    };
    if (auto seized = proc::seize(pid, kOptions); !seized) return kill_child(seized.error());
    char byte = 1;
    (void)!::write(go_fd.get(), &byte, 1);
    go_fd.reset();
    int err = 0;
    ssize_t n;
    do n = ::read(error_fd.get(), &err, sizeof err);
    while (n < 0 && errno == EINTR);
    if (n == sizeof err) {
        int st;
        // The child is traced: reap it (it exits 127 on its own).
        while (::waitpid(pid, &st, __WALL) >= 0 && !WIFEXITED(st) && !WIFSIGNALED(st)) (void)proc::resume(pid, proc::Resume::Continue);
        return errno_error(command[0], err);
    }
    // The exec stop.
    int status = 0;
    for (;;) {
        pid_t got = ::waitpid(pid, &status, __WALL);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return kill_child(errno_error("waiting for " + command[0], errno));
        if (!WIFSTOPPED(status)) return Error(command[0] + " exited before it could be traced");
        if ((status >> 16) == PTRACE_EVENT_EXEC) break;
        (void)proc::resume(pid, proc::Resume::Continue);
    }
    root_pid_ = pid;
    ever_traced_.push_back(pid);
    Process& process = processes_[pid];
    process.pid = pid;
    process.root = true;
    process.space = std::make_shared<AddressSpace>();
    process.threads.insert(pid);
    threads_[pid] = Thread{pid, pid, true, false, 0, {}};
    if (auto ok = setup_image(process, pid, true, true); !ok) {
        processes_.clear();
        threads_.clear();
        return kill_child(ok.error());
    }
    resume(threads_[pid]);
    return pid;
}

// Inserts the probes of every object mapped now, and arranges to hear of
// later ones: at exec time libraries are not mapped yet, so a breakpoint at
// the program's entry point catches the moment they are; after that, the
// dynamic linker's rendezvous function (r_brk of r_debug, System V gABI
// "Dynamic Linking" / glibc's <link.h>) is called around every dlopen and
// dlclose.
Result<void> PtraceEngine::setup_image(Process& process, pid_t tid, bool at_exec, bool strict) {
    struct stat st{};
    std::string exe = "/proc/" + std::to_string(process.pid) + "/exe";
    if (::stat(exe.c_str(), &st) != 0) return errno_error(exe, errno);
    process.exe = ObjectKey{st.st_dev, st.st_ino};
    UPROBE_CHECK(sync_objects(process, tid, strict));
    if (at_exec) {
        UPROBE_TRY(auto auxv, proc::read_auxv(process.pid));
        auto entry = auxv.find(AT_ENTRY);
        if (entry != auxv.end() && auxv.count(AT_BASE) && auxv[AT_BASE] != 0) {
            uint8_t bytes[16];
            UPROBE_CHECK(proc::read_memory(process.pid, entry->second, bytes, sizeof bytes));
            UPROBE_CHECK(insert_breakpoint(process, tid, entry->second, {bytes, bytes + 16}, process.exe,
                                           std::nullopt, Internal::Entry));
        }
    } else if (auto rendezvous = find_rendezvous(process); rendezvous && *rendezvous) {
        uint8_t bytes[16];
        UPROBE_CHECK(proc::read_memory(process.pid, *rendezvous, bytes, sizeof bytes));
        auto& bps = process.space->breakpoints;
        if (auto it = bps.find(*rendezvous); it != bps.end()) {
            it->second.internal = Internal::Rendezvous;
        } else {
            UPROBE_CHECK(insert_breakpoint(process, tid, *rendezvous, {bytes, bytes + 16}, ObjectKey{}, std::nullopt,
                                           Internal::Rendezvous));
        }
    }
    return {};
}

// r_debug through the main executable's DT_DEBUG, which ld.so fills in
// before the program's entry point runs; 0 for static executables.
Result<uint64_t> PtraceEngine::find_rendezvous(Process& process) {
    pid_t pid = process.pid;
    UPROBE_TRY(auto auxv, proc::read_auxv(pid));
    uint64_t phdr = auxv[AT_PHDR], phnum = auxv[AT_PHNUM];
    if (!phdr || !phnum || phnum > 256) return uint64_t{0};
    struct Phdr {
        uint32_t type, flags;
        uint64_t offset, vaddr, paddr, filesz, memsz, align;
    };
    std::vector<Phdr> headers(phnum);
    UPROBE_CHECK(proc::read_memory(pid, phdr, headers.data(), phnum * sizeof(Phdr)));
    std::optional<uint64_t> bias;
    uint64_t dynamic = 0;
    for (const auto& h : headers) {
        if (h.type == 6 /* PT_PHDR */) bias = phdr - h.vaddr;
    }
    if (!bias) return uint64_t{0};
    for (const auto& h : headers) {
        if (h.type == 2 /* PT_DYNAMIC */) dynamic = *bias + h.vaddr;
    }
    if (!dynamic) return uint64_t{0};
    for (int i = 0; i < 512; ++i) {
        uint64_t entry[2];
        UPROBE_CHECK(proc::read_memory(pid, dynamic + 16 * i, entry, sizeof entry));
        if (entry[0] == 0) break;
        if (entry[0] == 21 /* DT_DEBUG */) {
            if (entry[1] == 0) return uint64_t{0};
            process.space->r_debug = entry[1];
            uint64_t r_brk = 0;
            UPROBE_CHECK(proc::read_memory(pid, entry[1] + 16, &r_brk, sizeof r_brk));
            return r_brk;
        }
    }
    return uint64_t{0};
}

bool probe_wants(const ProbeSpec& spec, const Process& process, ObjectKey key, const std::string& path) {
    if (spec.location.binary.empty()) return key == process.exe;
    return probe::Resolver::binary_matches(spec.location.binary, path);
}

// Brings the inserted probes in line with the objects mapped now.
Result<void> PtraceEngine::sync_objects(Process& process, pid_t tid, bool fail_hard) {
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(process.pid));
    AddressSpace& space = *process.space;
    std::set<ObjectKey> mapped;
    std::map<ObjectKey, const Mapping*> first_exec;
    for (const auto& m : maps) {
        if (m.inode == 0 || !m.exec) continue;
        ObjectKey key{m.device, m.inode};
        mapped.insert(key);
        if (!first_exec.count(key)) first_exec[key] = &m;
    }
    // Unmapped objects: their breakpoints went with the memory.
    for (auto it = space.breakpoints.begin(); it != space.breakpoints.end();) {
        const ObjectKey& key = it->second.object;
        if (it->second.internal == Internal::None && !mapped.count(key)) {
            it = space.breakpoints.erase(it);
        } else {
            ++it;
        }
    }
    for (auto it = space.semaphores.begin(); it != space.semaphores.end();)
        it = mapped.count(it->second.object) ? std::next(it) : space.semaphores.erase(it);
    for (auto it = space.objects.begin(); it != space.objects.end();) {
        it = mapped.count(*it) ? std::next(it) : space.objects.erase(it);
    }
    for (const auto& [key, mapping] : first_exec) {
        if (space.objects.count(key)) continue;
        space.objects.insert(key);
        std::string path = proc::host_path(process.pid, mapping->path);
        for (size_t i = 0; i < request_.probes.size(); ++i) {
            if (!probe_wants(request_.probes[i], process, key, path)) continue;
            auto inserted = insert_probe_sites(process, tid, *mapping, maps, i);
            if (!inserted) {
                Error e = inserted.error().context("probe " + request_.probes[i].name);
                if (fail_hard) return e;
                note(e.message());
            }
        }
    }
    if (fail_hard) {
        for (size_t i = 0; i < request_.probes.size(); ++i) {
            const auto& spec = request_.probes[i];
            if (spec.location.binary.empty()) {
                if (!space.objects.count(process.exe))
                    return Error("probe " + spec.name + ": main executable of " + std::to_string(process.pid) +
                                 " is not mapped");
                continue;
            }
            bool placed = false;
            for (const auto& [key, mapping] : first_exec)
                placed |= probe_wants(spec, process, key, proc::host_path(process.pid, mapping->path));
            if (!placed)
                note("probe " + spec.name + ": " + spec.location.binary + " is not loaded in " +
                     std::to_string(process.pid) + " yet; pending until it is");
        }
    }
    return {};
}

Result<void> PtraceEngine::insert_probe_sites(Process& process, pid_t tid, const Mapping& any,
                                              const std::vector<Mapping>& maps, size_t probe_index) {
    const ProbeSpec& spec = request_.probes[probe_index];
    ObjectKey key{any.device, any.inode};
    std::string path = proc::host_path(process.pid, any.path);
    auto cached = site_cache_.find({probe_index, key});
    if (cached == site_cache_.end()) {
        UPROBE_TRY(std::vector<probe::Site> sites, resolver_.resolve(spec, path));
        cached = site_cache_.emplace(std::make_pair(probe_index, key), std::move(sites)).first;
    }
    UPROBE_TRY(elf::Binary * binary, resolver_.binary(path));
    size_t count = 0;
    for (const probe::Site& site : cached->second) {
        const Mapping* home = nullptr;
        bool in_data = false;
        for (const auto& m : maps) {
            if (m.device != key.device || m.inode != key.inode) continue;
            if (site.file_offset < m.file_offset || site.file_offset >= m.file_offset + (m.end - m.start)) continue;
            if (m.exec) home = &m;
            else in_data = true;
        }
        if (!home) {
            if (in_data)
                return Error("address " + hex(site.vaddr) + " of " + any.path + " is not executable");
            return Error("address " + hex(site.vaddr) + " of " + any.path + " is not mapped");
        }
        uint64_t address = home->start + (site.file_offset - home->file_offset);
        probe::CompileContext context;
        context.site = &site;
        context.load_bias = address - site.vaddr;
        context.symbol_address = [binary](const std::string& name) -> Result<uint64_t> {
            if (auto a = binary->data_symbol(name)) return *a;
            return Error("no symbol '" + name + "' in " + binary->path());
        };
        SiteProbe sp;
        sp.probe_id = static_cast<uint32_t>(probe_index);
        for (const auto& arg : spec.args) {
            UPROBE_TRY(probe::FetchProgram program, probe::compile_fetch(arg, context));
            sp.needs_fpregs |= program.needs_fpregs;
            sp.programs.push_back(program);
        }
        UPROBE_TRY(auto span, binary->code(site.vaddr, arch::kMaxInstructionLength + 1));
        std::vector<uint8_t> code(span.begin(), span.end());
        UPROBE_CHECK(insert_breakpoint(process, tid, address, code, key, std::move(sp), Internal::None)
                         .context("at " + hex(site.vaddr) + (site.function.empty() ? "" : " (" + site.function + ")")));
        if (site.marker && site.marker->semaphore_vaddr) {
            uint64_t semaphore = site.marker->semaphore_vaddr + context.load_bias;
            uint16_t value = 0;
            UPROBE_CHECK(proc::read_memory(process.pid, semaphore, &value, sizeof value).context("SDT semaphore"));
            ++value;
            UPROBE_CHECK(proc::write_memory(process.pid, semaphore, &value, sizeof value).context("SDT semaphore"));
            auto& raised = process.space->semaphores[semaphore];
            raised.object = key;
            raised.raised++;
        }
        ++count;
    }
    note("probe " + spec.name + ": " + std::to_string(count) + " site" + (count == 1 ? "" : "s") + " in " + any.path +
         " of " + std::to_string(process.pid));
    return {};
}

// The slot is written before the int3, so a thread can never trap on a
// breakpoint whose slot is not ready.
Result<void> PtraceEngine::insert_breakpoint(Process& process, pid_t tid, uint64_t address,
                                             const std::vector<uint8_t>& code, ObjectKey object,
                                             std::optional<SiteProbe> probe, Internal internal) {
    AddressSpace& space = *process.space;
    if (auto it = space.breakpoints.find(address); it != space.breakpoints.end()) {
        if (probe) {
            stats_[probe->probe_id].sites++;
            it->second.probes.push_back(std::move(*probe));
        }
        if (internal != Internal::None) it->second.internal = internal;
        return {};
    }
    if (code.empty()) return Error("no code at " + hex(address));
    uint8_t current = 0;
    UPROBE_CHECK(proc::read_memory(process.pid, address, &current, 1));
    if (current != code[0])
        return Error("code at " + hex(address) + " differs from the file (breakpoint of another debugger?)");
    UPROBE_TRY(uint64_t slot, allocate_slot(process, tid, address));
    UPROBE_TRY(arch::OutOfLine ool, arch::relocate(code, address, slot));
    UPROBE_CHECK(proc::write_memory(process.pid, slot, ool.code.data(), ool.code.size()));
    UPROBE_CHECK(proc::write_memory(process.pid, address, &kInt3, 1));
    Breakpoint bp;
    bp.address = address;
    bp.original = current;
    bp.slot = slot;
    bp.object = object;
    bp.internal = internal;
    if (probe) {
        stats_[probe->probe_id].sites++;
        bp.probes.push_back(std::move(*probe));
    }
    space.breakpoints.emplace(address, std::move(bp));
    return {};
}

bool within_reach(uint64_t a, uint64_t b) { return (a > b ? a - b : b - a) < kReach; }

Result<uint64_t> PtraceEngine::allocate_slot(Process& process, pid_t tid, uint64_t near) {
    AddressSpace& space = *process.space;
    for (auto& area : space.xol) {
        if (within_reach(area.start, near) && area.used + kSlotSize <= kXolAreaSize) {
            uint64_t slot = area.start + area.used;
            area.used += kSlotSize;
            return slot;
        }
    }
    // A free range near `near`: the gap between mappings closest to it.
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(process.pid));
    std::optional<uint64_t> best;
    auto consider = [&](uint64_t gap_start, uint64_t gap_end) {
        if (gap_end < gap_start + kXolAreaSize) return;
        uint64_t candidate = near < gap_start ? gap_start : (near + kXolAreaSize > gap_end ? gap_end - kXolAreaSize : near);
        candidate &= ~uint64_t{0xfff};
        if (candidate < gap_start) return;
        if (!within_reach(candidate, near)) return;
        if (!best || (candidate > near ? candidate - near : near - candidate) <
                         (*best > near ? *best - near : near - *best))
            best = candidate;
    };
    uint64_t previous_end = 0x10000;  // above vm.mmap_min_addr
    for (const auto& m : maps) {
        if (m.start > previous_end) consider(previous_end, m.start);
        previous_end = std::max(previous_end, m.end);
    }
    if (previous_end < 0x7ffffffff000) consider(previous_end, 0x7ffffffff000);
    if (!best) return Error("no free address range within 2 GiB of " + hex(near) + " for out-of-line code");
    uint64_t gadget = space.xol.empty() ? 0 : space.xol.front().start;
    int deferred = 0;
    UPROBE_TRY(int64_t mapped, proc::remote_syscall(tid, gadget, SYS_mmap, *best, kXolAreaSize, PROT_READ | PROT_EXEC,
                                                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                                                    static_cast<uint64_t>(-1), 0, &deferred));
    if (deferred) threads_[tid].pending_signal = deferred;
    if (mapped < 0) return errno_error("mapping out-of-line code in process " + std::to_string(process.pid),
                                       static_cast<int>(-mapped));
    if (static_cast<uint64_t>(mapped) != *best) return Error("the kernel placed out-of-line code elsewhere");
    // Slot 0: `syscall; int3`, the gadget for later remote system calls.
    const uint8_t gadget_code[3] = {0x0f, 0x05, kInt3};
    UPROBE_CHECK(proc::write_memory(process.pid, *best, gadget_code, sizeof gadget_code));
    space.xol.push_back(XolArea{*best, 2 * kSlotSize});
    return *best + kSlotSize;
}

void PtraceEngine::remove_breakpoint_bytes(pid_t pid, AddressSpace& space) {
    for (auto& [address, bp] : space.breakpoints) (void)proc::write_memory(pid, address, &bp.original, 1);
    for (auto& [address, semaphore] : space.semaphores) {
        uint16_t value = 0;
        if (!proc::read_memory(pid, address, &value, sizeof value)) continue;
        value = value >= semaphore.raised ? static_cast<uint16_t>(value - semaphore.raised) : 0;
        (void)proc::write_memory(pid, address, &value, sizeof value);
    }
}

// ---------------------------------------------------------------- loop

void PtraceEngine::resume(Thread& thread, int signal) {
    thread.stopped = false;
    auto how = thread.group_stop && signal == 0 ? proc::Resume::Listen : proc::Resume::Continue;
    if (!proc::resume(thread.tid, how, signal)) {
        // The thread died under us (SIGKILL): its exit status follows.
    }
}

Result<int> PtraceEngine::run() {
    if (finished_) return root_status_;
    // stop() must reach a blocked waitpid: a helper thread interrupts this
    // one with a no-op signal until the loop has seen the request (a single
    // signal could land just before waitpid blocks).
    if (!g_wake_signal_installed.exchange(1)) {
        struct sigaction sa{};
        sa.sa_handler = on_wake_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;  // no SA_RESTART: waitpid must return EINTR
        sigaction(SIGURG, &sa, nullptr);
    }
    pid_t loop_tid = static_cast<pid_t>(::syscall(SYS_gettid));
    loop_done_ = false;
    std::thread waker([this, loop_tid] {
        uint64_t value;
        while (::read(wake_fd_.get(), &value, sizeof value) < 0 && errno == EINTR) {}
        while (!loop_done_.load()) {
            ::syscall(SYS_tgkill, ::getpid(), loop_tid, SIGURG);
            struct timespec ts{0, 2000000};
            nanosleep(&ts, nullptr);
        }
    });
    while (!processes_.empty() && !stop_requested_.load()) {
        if (threads_.size() != placed_for_threads_) update_colocation();
        int status = 0;
        pid_t tid = ::waitpid(-1, &status, __WALL);
        if (tid < 0) {
            if (errno == EINTR) continue;
            break;  // ECHILD: nothing left
        }
        handle_status(tid, status);
    }
    loop_done_ = true;
    stop();  // release the helper
    waker.join();
    detach_all();
    return root_status_;
}

void PtraceEngine::unpin(pid_t tid) {
    if (pinned_.erase(tid)) (void)::sched_setaffinity(tid, sizeof colocated_mask_, &colocated_mask_);
}

void PtraceEngine::update_colocation() {
    placed_for_threads_ = threads_.size();
    pid_t want = 0;
    if (request_.colocate && !stopping_ && threads_.size() == 1) want = threads_.begin()->first;
    if (want == colocated_) return;
    if (colocated_) {
        for (pid_t tid : std::set<pid_t>(pinned_)) unpin(tid);
        (void)::sched_setaffinity(0, sizeof own_mask_, &own_mask_);
        colocated_ = 0;
    }
    if (!want) return;
    cpu_set_t theirs, ours;
    if (::sched_getaffinity(want, sizeof theirs, &theirs) != 0 || ::sched_getaffinity(0, sizeof ours, &ours) != 0)
        return;
    int cpu = ::sched_getcpu();
    if (cpu < 0 || !CPU_ISSET(cpu, &theirs) || !CPU_ISSET(cpu, &ours)) {
        cpu = -1;
        for (int c = 0; c < CPU_SETSIZE && cpu < 0; ++c)
            if (CPU_ISSET(c, &theirs) && CPU_ISSET(c, &ours)) cpu = c;
        if (cpu < 0) return;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (::sched_setaffinity(want, sizeof one, &one) != 0) return;  // not ours to move: fine
    colocated_mask_ = theirs;
    own_mask_ = ours;
    pinned_ = {want};
    (void)::sched_setaffinity(0, sizeof one, &one);
    colocated_ = want;
}

void PtraceEngine::handle_status(pid_t tid, int status) {
    auto it = threads_.find(tid);
    if (it == threads_.end()) {
        if (WIFSTOPPED(status)) {
            if (pending_children_.count(tid)) adopt_child_with(tid, status);
            else early_stops_[tid] = status;
        }
        return;
    }
    Thread& thread = it->second;
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
        pid_t pid = thread.pid;
        if (Process* p = process_of(pid)) p->threads.erase(tid);
        threads_.erase(it);
        if (tid == pid) process_exited(pid, status);
        return;
    }
    thread.stopped = true;
    handle_stop(thread, status);
}

void PtraceEngine::handle_stop(Thread& thread, int status) {
    const int signal = WSTOPSIG(status);
    const int event = status >> 16;
    switch (event) {
    case PTRACE_EVENT_CLONE:
    case PTRACE_EVENT_FORK:
    case PTRACE_EVENT_VFORK: {
        thread.group_stop = false;
        auto child = proc::event_message(thread.tid);
        pid_t tid = thread.tid;
        if (child) handle_new_child(thread, *child, event);
        // handle_new_child may have added threads: look ours up again.
        if (auto it = threads_.find(tid); it != threads_.end() && !stopping_) resume(it->second);
        return;
    }
    case PTRACE_EVENT_EXEC:
        thread.group_stop = false;
        handle_exec(thread);
        return;
    case PTRACE_EVENT_STOP:
        // Group-stop of a SEIZEd tracee (ptrace(2), "Group-stop"): stay
        // stopped, as the program's job control asked, and hear of SIGCONT.
        thread.group_stop = signal == SIGSTOP || signal == SIGTSTP || signal == SIGTTIN || signal == SIGTTOU;
        if (!stopping_) resume(thread);
        return;
    default:
        break;
    }
    thread.group_stop = false;
    if (signal == SIGTRAP) {
        handle_trap(thread);
        return;
    }
    if (stopping_) {
        thread.pending_signal = signal;
        return;
    }
    resume(thread, signal);
}

void PtraceEngine::emit(Thread& thread, Process& process, const Breakpoint& bp, const user_regs_struct& regs) {
    Event event;
    event.pid = process.pid;
    event.tid = thread.tid;
    event.ts_ns = monotonic_ns();
    event.comm = comm_of(thread);
    event.addr = bp.address;
    std::optional<user_fpregs_struct> fpregs;
    probe::ProcessMemoryReader memory(process.pid);
    probe::FetchContext context;
    context.pid = process.pid;
    context.tid = thread.tid;
    context.comm = event.comm;
    context.string_max = request_.string_max;
    for (const SiteProbe& sp : bp.probes) {
        const ProbeSpec& spec = request_.probes[sp.probe_id];
        if (sp.needs_fpregs && !fpregs) {
            if (auto fp = proc::get_fpregs(thread.tid)) fpregs = *fp;
        }
        context.fpregs = fpregs ? &*fpregs : nullptr;
        event.probe_id = sp.probe_id;
        event.probe = spec.name;
        event.is_return = spec.location.is_return;
        event.args.clear();
        for (size_t i = 0; i < sp.programs.size(); ++i)
            event.args.push_back(EventArg{spec.args[i].name, probe::evaluate(sp.programs[i], regs, memory, context)});
        stats_[sp.probe_id].hits++;
        consumer_->on_event(event);
    }
}

void PtraceEngine::handle_trap(Thread& thread) {
    Process* process = process_of(thread.pid);
    auto regs = proc::get_regs(thread.tid);
    if (!process || !regs) {
        if (!stopping_) resume(thread, SIGTRAP);
        return;
    }
    auto& bps = process->space->breakpoints;
    auto it = bps.find(regs->rip - 1);
    if (it == bps.end()) {
        // Not ours (a SIGTRAP sent to the program, or its own int3): pass it on.
        if (stopping_) thread.pending_signal = SIGTRAP;
        else resume(thread, SIGTRAP);
        return;
    }
    Breakpoint& bp = it->second;
    if (!bp.probes.empty() && !process->silent) emit(thread, *process, bp, *regs);
    const uint64_t address = bp.address;
    uint64_t next = bp.slot;
    const Internal internal = bp.internal;
    if (internal == Internal::Entry) {
        // The libraries the program needs are mapped now.
        if (bp.probes.empty()) {
            (void)proc::write_memory(process->pid, address, &bp.original, 1);
            bps.erase(it);
            next = address;
        } else {
            bp.internal = Internal::None;
        }
        if (auto synced = sync_objects(*process, thread.tid, false); !synced) note(synced.error().message());
        if (auto rendezvous = find_rendezvous(*process); rendezvous && *rendezvous) {
            uint8_t bytes[16];
            if (proc::read_memory(process->pid, *rendezvous, bytes, sizeof bytes)) {
                auto inserted = insert_breakpoint(*process, thread.tid, *rendezvous, {bytes, bytes + 16}, ObjectKey{},
                                                  std::nullopt, Internal::Rendezvous);
                if (!inserted) note("dlopen tracking disabled: " + inserted.error().message());
            }
        }
    } else if (internal == Internal::Rendezvous && process->space->r_debug) {
        int32_t state = -1;
        // r_state == RT_CONSISTENT (0): the link map is complete again.
        if (proc::read_memory(process->pid, process->space->r_debug + 24, &state, sizeof state) && state == 0) {
            if (auto synced = sync_objects(*process, thread.tid, false); !synced) note(synced.error().message());
        }
    }
    if (!proc::set_rip(thread.tid, next)) return;  // died meanwhile
    if (!stopping_) resume(thread);
}

void PtraceEngine::handle_new_child(Thread& parent, pid_t child, int event) {
    if (pinned_.count(parent.tid)) pinned_.insert(child);  // inherited the one-CPU mask
    if (event == PTRACE_EVENT_CLONE) {
        pid_t pid = parent.pid;
        threads_[child] = Thread{child, pid, false, false, 0, {}};
        if (Process* p = process_of(pid)) p->threads.insert(child);
        if (auto early = early_stops_.find(child); early != early_stops_.end()) {
            int status = early->second;
            early_stops_.erase(early);
            handle_status(child, status);
        }
        return;
    }
    pending_children_[child] = PendingChild{parent.pid, event == PTRACE_EVENT_VFORK};
    if (auto early = early_stops_.find(child); early != early_stops_.end()) {
        int status = early->second;
        early_stops_.erase(early);
        adopt_child_with(child, status);
    }
}

// The first stop of a forked child. A child we do not follow inherited our
// int3 bytes through copy-on-write: they come out before it goes free. A
// vfork child shares its parent's memory until it execs or exits, so it
// stays traced (silently) until then, its hits run out of line.
void PtraceEngine::adopt_child_with(pid_t child, int status) {
    (void)status;
    PendingChild pending = pending_children_[child];
    pending_children_.erase(child);
    Process* parent = process_of(pending.parent);
    bool follow = parent && request_.follow_children && !parent->silent;
    if (!parent) {
        (void)proc::detach(child, 0);
        return;
    }
    if (!follow && !pending.vfork) {
        AddressSpace copy = *parent->space;
        remove_breakpoint_bytes(child, copy);
        unpin(child);
        (void)proc::detach(child, 0);
        return;
    }
    Process& process = processes_[child];
    process.pid = child;
    process.silent = !follow;
    process.exe = parent->exe;
    process.space = pending.vfork ? parent->space : std::make_shared<AddressSpace>(*parent->space);
    process.threads.insert(child);
    if (follow) ever_traced_.push_back(child);
    Thread& thread = threads_[child] = Thread{child, child, true, false, 0, {}};
    if (!stopping_) resume(thread);
}

void PtraceEngine::handle_exec(Thread& thread) {
    pid_t pid = thread.pid;
    Process* process = process_of(pid);
    if (!process) return;
    // Every other thread is gone (execve(2)); the leader carries on.
    for (pid_t tid : process->threads)
        if (tid != thread.tid) threads_.erase(tid);
    process->threads = {thread.tid};
    thread.comm.clear();
    bool keep = !process->silent && (process->root || request_.follow_children);
    if (!keep) {
        unpin(thread.tid);
        (void)proc::detach(thread.tid, 0);
        threads_.erase(thread.tid);
        processes_.erase(pid);
        return;
    }
    process->space = std::make_shared<AddressSpace>();
    if (auto ok = setup_image(*process, thread.tid, true, false); !ok) note("after exec in " + std::to_string(pid) + ": " + ok.error().message());
    if (!stopping_) resume(thread);
}

void PtraceEngine::process_exited(pid_t pid, int status) {
    if (pid == root_pid_) root_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (Process* p = process_of(pid)) {
        for (pid_t tid : p->threads) threads_.erase(tid);
    }
    processes_.erase(pid);
}

Result<void> PtraceEngine::wait_for_all_stopped() {
    for (;;) {
        bool waiting = !pending_children_.empty();
        for (auto& [tid, thread] : threads_) waiting |= !thread.stopped;
        if (!waiting) return {};
        int status = 0;
        pid_t tid = ::waitpid(-1, &status, __WALL);
        if (tid < 0) {
            if (errno == EINTR) continue;
            if (errno == ECHILD) {
                threads_.clear();
                processes_.clear();
                pending_children_.clear();
                return {};
            }
            return errno_error("waitpid", errno);
        }
        handle_status(tid, status);
    }
}

bool sigtrap_pending(pid_t tid) {
    std::string path = "/proc/" + std::to_string(tid) + "/status";
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return false;
    char buffer[4096];
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer - 1);
    if (n <= 0) return false;
    buffer[n] = 0;
    const char* at = std::strstr(buffer, "SigPnd:");
    if (!at) return false;
    unsigned long long mask = std::strtoull(at + 7, nullptr, 16);
    return mask & (1ull << (SIGTRAP - 1));
}

// Stop everything, remove every int3, let every thread go. The XOL areas
// stay mapped: a thread may still be inside a slot, and it jumps back to
// the original code by itself.
void PtraceEngine::detach_all() {
    if (finished_) return;
    stopping_ = true;
    update_colocation();  // gives every thread its own mask back
    for (auto& [tid, thread] : threads_)
        if (!thread.stopped) (void)proc::interrupt(tid);
    (void)wait_for_all_stopped();
    // A thread can report our interrupt before the SIGTRAP of an int3 it has
    // just executed (get_signal() handles a trap-stop request before it
    // dequeues signals): let it dequeue the SIGTRAP as a hit now, while our
    // int3 is still known, or it would kill the program after we detach.
    for (int round = 0; round < 8; ++round) {
        bool again = false;
        for (auto& [tid, thread] : threads_) {
            if (!thread.stopped || !sigtrap_pending(tid)) continue;
            // No PTRACE_INTERRUPT here: the kernel reports a pending trap
            // request before dequeuing signals, so it would hide the SIGTRAP
            // again. The pending signal itself makes the thread stop at once.
            thread.stopped = false;
            (void)proc::resume(tid, proc::Resume::Continue, 0);
            again = true;
        }
        if (!again) break;
        (void)wait_for_all_stopped();
    }
    std::set<AddressSpace*> cleaned;
    for (auto& [pid, process] : processes_) {
        if (cleaned.insert(process.space.get()).second) remove_breakpoint_bytes(pid, *process.space);
    }
    for (auto& [tid, thread] : threads_) (void)proc::detach(tid, thread.pending_signal);
    threads_.clear();
    processes_.clear();
    finished_ = true;
}

}  // namespace

std::unique_ptr<Engine> make_ptrace_engine() { return std::make_unique<PtraceEngine>(); }

}  // namespace uprobe::engine
