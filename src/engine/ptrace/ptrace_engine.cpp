// The ptrace engine: int3 at every probe site, the displaced instruction
// run out of line (arch::relocate) so that a hit costs one trap and no
// single-step: waitpid, GETREGS, a rip write, PTRACE_CONT.
//
// State is split the way the kernel splits it: breakpoints and out-of-line
// (XOL) slots belong to an address space (shared by vfork children, copied
// by fork), threads belong to a process.
#include "engine/engine.hpp"
#include "engine/common.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <elf.h>
#include <gelf.h>
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
#include <filesystem>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/relocate.hpp"
#include "base/strings.hpp"
#include "base/unique_fd.hpp"
#include "elf/binary.hpp"
#include "probe/fetch.hpp"
#include "probe/dwarf_fetch.hpp"
#include "probe/resolve.hpp"
#include "proc/discover.hpp"
#include "proc/proc.hpp"
#include "proc/ptrace.hpp"
#include "engine/ptrace/return_probes.hpp"

namespace uprobe::engine {
namespace {

using proc::Mapping;

constexpr uint8_t kInt3 = 0xcc;
constexpr uint64_t kXolAreaSize = 256 * 1024;
constexpr uint64_t kSlotSize = arch::kMaxOutOfLineSize;

// Never PTRACE_O_EXITKILL: if we die, the targets must live on.
constexpr unsigned kOptions = PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC;

// One probe's presence at one breakpoint.
struct SiteProbe {
    uint32_t probe_id = 0;
    std::vector<probe::ArgProgram> programs;  // one per argument (DWARF ones may give several values)
    bool needs_fpregs = false;
};

// Unwind, CatchBegin: the C++ unwinder starts, a handler catches (return
// probes put hijacked return addresses back while the unwinder reads them).
enum class Internal { None, Entry, Rendezvous, Unwind, CatchBegin };

struct Breakpoint {
    uint64_t address = 0;
    uint8_t original = 0;
    uint64_t slot = 0;
    ObjectKey object;
    std::vector<SiteProbe> probes;
    Internal internal = Internal::None;
    // Return probes (return_probes.hpp): functions entered here, and what
    // this instruction is to instruction-mode return probes.
    std::vector<const ReturnSite*> returns;
    ExitRole exit = ExitRole::None;
};


// An SDT semaphore we raised: the program computes a marker's arguments
// only while its semaphore is non-zero (a tracer's job, as for the kernel's
// uprobes with ref_ctr_offset). We add exactly 1 per process and semaphore,
// however many of our probes and sites share it, and take exactly that 1
// away again (on detach, or from a fork child we do not follow, which
// inherited the raised value by copy): other tracers' counts are left alone.
struct Semaphore {
    uint16_t raised = 0;
    ObjectKey object;
};

struct AddressSpace {
    std::map<uint64_t, Breakpoint> breakpoints;
    std::map<uint64_t, Semaphore> semaphores;
    std::vector<CodeArea> xol;  // slot 0 of the first is the syscall gadget
    std::set<ObjectKey> objects;  // objects whose probes are inserted
    uint64_t r_debug = 0;
    uint64_t return_trampoline = 0;       // an int3 in the XOL area; 0: none yet
    // Return stubs (return_probes.hpp): `int3; jmp ORIGINAL` in the XOL area.
    std::unordered_map<uint64_t, uint64_t> stub_by_original, original_by_stub;
    std::set<ObjectKey> unwinder_scanned;  // objects searched for unwinder entry points
    ExitFrames exit_frames;               // instruction-mode return probes
    std::map<uint64_t, ExitInfo> exits;   // by exit instruction (instruction mode)
    // Addresses whose breakpoint was taken out while threads ran: a thread
    // may have trapped there just before, its SIGTRAP not yet seen.
    std::set<uint64_t> retired;
};

// The return stubs of one address space, looked up, and made by `make`
// when given (it returns the stub's address, 0 when it cannot).
class SpaceStubs final : public ReturnStubs {
public:
    explicit SpaceStubs(AddressSpace& space, std::function<uint64_t(uint64_t)> make = {})
        : space_(space), make_(std::move(make)) {}
    uint64_t stub_for(uint64_t original) override {
        if (auto it = space_.stub_by_original.find(original); it != space_.stub_by_original.end())
            return it->second;
        // Bounded: beyond this many call sites the shared trampoline serves.
        constexpr size_t kMaxStubs = 1024;
        if (!make_ || space_.stub_by_original.size() >= kMaxStubs) return 0;
        uint64_t stub = make_(original);
        if (!stub) return 0;
        space_.stub_by_original[original] = stub;
        space_.original_by_stub[stub] = original;
        return stub;
    }
    uint64_t original_of(uint64_t address) const override {
        auto it = space_.original_by_stub.find(address);
        return it == space_.original_by_stub.end() ? 0 : it->second;
    }

private:
    AddressSpace& space_;
    std::function<uint64_t(uint64_t)> make_;
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
    // Hardware shadow stacks (proc::thread_has_shadow_stack), read at the
    // thread's first trampoline entry: unknown until then.
    std::optional<bool> shadow_stack = std::nullopt;
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
    void add_process(pid_t pid) override;
    Result<void> add_probe(const ProbeSpec& spec) override;
    Result<void> remove_probe(uint32_t id) override;

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
    // Returns what the consumer asked for the hitting thread (Continue,
    // Detach, or Hold resolved through on_hold to Detach/DetachStopped).
    HeldOutcome emit(Thread& thread, Process& process, const Breakpoint& bp, const user_regs_struct& regs);
    void process_exited(pid_t pid, int status);
    void resume(Thread& thread, int signal = 0);
    Result<void> wait_for_all_stopped();
    void detach_all();

    // -- return probes (return_probes.hpp)
    Result<void> insert_return_probe(Process& process, pid_t tid, const probe::Site& site, uint64_t address,
                                     ObjectKey key, elf::Binary& binary, SiteProbe compiled);
    // `*unproven` is set when the function's exits cannot be proven, before
    // anything is placed.
    Result<void> insert_function_exits(Process& process, pid_t tid, const probe::Site& site, uint64_t bias,
                                       ObjectKey key, elf::Binary& binary, const ReturnSite* owner,
                                       bool* unproven);
    void insert_unwinder_hooks(Process& process, pid_t tid);
    void on_return_probe_hit(Thread& thread, Process& process, const Breakpoint& bp, const user_regs_struct& regs);
    void on_trampoline_hit(Thread& thread, Process& process, const user_regs_struct& regs);
    void emit_return(Thread& thread, Process& process, const ReturnFrame& frame, const user_regs_struct& regs,
                     bool value_known);
    void restore_return_addresses(pid_t pid);
    void note_lost_frames();
    // How returns are found in an object: --return-mode, and what auto sees.
    enum class ExitMechanism {
        Trampoline,
        Instructions,
        InstructionsWhereProven,  // else a trampoline, guarded by shadow_stack_at_entry
    };
    Result<ExitMechanism> return_mechanism(const elf::Binary& binary, pid_t pid, pid_t tid);
    bool shadow_stack_at_entry(Thread& thread, const Process& process);
    TrampolineStacks trampolines_;
    std::vector<std::unique_ptr<ReturnSite>> return_sites_;
    LostFrames lost_frames_;
    std::set<std::string> return_notes_;  // said once each

    // -- hold, detach of one process, attach while running (issue 7)
    void detach_process(pid_t pid, pid_t hitter, uint64_t address, bool leave_stopped);
    void attach_queued();
    void wake_loop_until_taken();
    void insert_queued_probes();
    void remove_queued_probes();
    Result<void> insert_probe_live(Process& process, size_t probe_index);
    Result<void> attach_running(pid_t pid);

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
    std::optional<Error> startup_error_;  // the launched command was refused at its entry point
    bool stopping_ = false;
    bool finished_ = true;
    std::atomic<bool> stop_requested_{false};
    std::atomic<bool> loop_done_{false};
    UniqueFd wake_fd_;
    std::mutex attach_mutex_;
    std::vector<pid_t> attach_queue_;
    std::set<pid_t> attach_after_adopt_;
    std::vector<ProbeSpec> probe_queue_;  // add_probe, under attach_mutex_
    std::vector<uint32_t> removal_queue_;  // remove_probe, under attach_mutex_
    std::set<size_t> removed_probes_;      // never inserted again
    std::atomic<pid_t> loop_tid_{0};

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
    if (request.command.empty() && request.attach_pids.empty() && !request.keep_running)
        return Error("nothing to trace: give a command or -p PID");
    for (const auto& spec : request.probes) {
        ProbeStats s;
        s.probe = spec.name;
        stats_.push_back(s);
        const std::string& bin = spec.location.binary;
        if (bin.find('/') != std::string::npos) {
            // The path must name a file as some target sees it: ours for a
            // launched command, or any attached process's own (its mount
            // namespace may differ from ours).
            struct stat st{};
            bool exists = ::stat(bin.c_str(), &st) == 0;
            int err = errno;
            if (bin[0] == '/')
                for (pid_t pid : request.attach_pids)
                    exists = exists || ::stat(proc::host_path(pid, bin).c_str(), &st) == 0;
            if (!exists) return errno_error(bin, err).context("probe " + spec.name);
            // For a command we launch (in our mount namespace, so the path
            // means the same file to it), an object named by path is checked
            // now, before anything runs, not when (or whether) it is mapped.
            if (!request.command.empty()) {
                if (auto sites = resolver_.resolve(spec, bin); !sites)
                    return sites.error().context("probe " + spec.name);
            }
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
        if (pid > 0 && errno == EPERM)
            return Error(proc::explain_attach_failure(pid, "not allowed to trace process " + std::to_string(pid)));
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
                    return Error(proc::explain_attach_failure(
                        pid, "cannot attach to process " + std::to_string(pid) + ": " +
                                 seized.error().message().substr(seized.error().message().rfind(": ") + 2)));
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
    return probe_names_object(spec, process.pid, process.exe, key, path);
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
            if (removed_probes_.count(i) || !probe_wants(request_.probes[i], process, key, path)) continue;
            auto inserted = insert_probe_sites(process, tid, *mapping, maps, i);
            if (!inserted) {
                Error e = inserted.error().context("probe " + request_.probes[i].name);
                if (fail_hard) return e;
                note(e.message());
            }
        }
    }
    if (space.return_trampoline) insert_unwinder_hooks(process, tid);  // a library with the C++ unwinder arrived
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
    SitePlacement placement(spec);
    for (const probe::Site& site : cached->second) {
        auto placed = [&]() -> Result<void> {
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
            SiteProbe sp;
            sp.probe_id = static_cast<uint32_t>(probe_index);
            UPROBE_TRY(sp.programs, compile_site_args(spec, site, address, *binary, resolver_, path));
            for (const auto& program : sp.programs) sp.needs_fpregs |= program.needs_fpregs();
            if (spec.location.is_return) {
                UPROBE_CHECK(insert_return_probe(process, tid, site, address, key, *binary, std::move(sp))
                                 .context("at " + hex(site.vaddr) + (site.function.empty() ? "" : " (" + site.function + ")")));
                    return {};
            }
            UPROBE_TRY(auto span, binary->code(site.vaddr, arch::kMaxInstructionLength + 1));
            std::vector<uint8_t> code(span.begin(), span.end());
            UPROBE_CHECK(insert_breakpoint(process, tid, address, code, key, std::move(sp), Internal::None)
                             .context("at " + hex(site.vaddr) + (site.function.empty() ? "" : " (" + site.function + ")")));
            if (site.marker && site.marker->semaphore_vaddr) {
                uint64_t semaphore = site.marker->semaphore_vaddr + (address - site.vaddr);
                if (!process.space->semaphores.count(semaphore)) {
                    uint16_t value = 0;
                    UPROBE_CHECK(proc::read_memory(process.pid, semaphore, &value, sizeof value).context("SDT semaphore"));
                    ++value;
                    UPROBE_CHECK(proc::write_memory(process.pid, semaphore, &value, sizeof value).context("SDT semaphore"));
                    process.space->semaphores[semaphore] = Semaphore{1, key};
                }
            }
            return {};
        }();
        UPROBE_CHECK(placement.site(std::move(placed), [this](const std::string& line) { note(line); }));
    }
    UPROBE_CHECK(placement.finish());
    const size_t count = placement.placed();
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
    if (current != code[0]) {
        if (current == kInt3)
            return Error(hex(address) + " already holds another tracer's breakpoint (a debugger's, or a kernel "
                         "uprobe of perf or bpftrace): refusing to probe it");
        return Error("code at " + hex(address) + " differs from the file (self-modifying or patched code)");
    }
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

Result<uint64_t> PtraceEngine::allocate_slot(Process& process, pid_t tid, uint64_t near) {
    AddressSpace& space = *process.space;
    if (auto slot = take_code(space.xol, kXolAreaSize, near, kSlotSize)) return *slot;
    // A free range near `near`: the gap between mappings closest to it.
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(process.pid));
    auto best = proc::free_range_near(maps, near, kXolAreaSize, code_reach(kXolAreaSize));
    if (!best) return Error("no free address range within 2 GiB of " + hex(near) + " for out-of-line code");
    uint64_t gadget = space.xol.empty() ? 0 : space.xol.front().start;
    int deferred = 0;
    UPROBE_TRY(int64_t mapped, proc::remote_syscall(tid, gadget, SYS_mmap, *best, kXolAreaSize, PROT_READ | PROT_EXEC,
                                                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                                                    static_cast<uint64_t>(-1), 0, &deferred));
    // A signal the call's single step dequeued waits for the thread's
    // resume; a second one, while one already waits, is sent again.
    if (deferred && !threads_[tid].pending_signal) threads_[tid].pending_signal = deferred;
    else if (deferred && deferred != threads_[tid].pending_signal) (void)::syscall(SYS_tgkill, process.pid, tid, deferred);
    if (mapped < 0) return errno_error("mapping out-of-line code in process " + std::to_string(process.pid),
                                       static_cast<int>(-mapped));
    if (static_cast<uint64_t>(mapped) != *best) return Error("the kernel placed out-of-line code elsewhere");
    // Slot 0: `syscall; int3`, the gadget for later remote system calls.
    const uint8_t gadget_code[3] = {0x0f, 0x05, kInt3};
    UPROBE_CHECK(proc::write_memory(process.pid, *best, gadget_code, sizeof gadget_code));
    space.xol.push_back(CodeArea{*best, 2 * kSlotSize});
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
    loop_tid_ = loop_tid;
    while ((!processes_.empty() || request_.keep_running) && !stop_requested_.load()) {
        attach_queued();
        insert_queued_probes();
        remove_queued_probes();
        if (threads_.size() != placed_for_threads_) update_colocation();
        int status = 0;
        pid_t tid = ::waitpid(-1, &status, __WALL);
        if (tid < 0) {
            if (errno == EINTR) continue;
            // Global mode with nothing traced: sleep until add_process or
            // stop() signal us (both repeat their signal until heard).
            if (errno == ECHILD && request_.keep_running) {
                ::pause();
                continue;
            }
            break;  // ECHILD: nothing left
        }
        handle_status(tid, status);
    }
    loop_tid_ = 0;
    loop_done_ = true;
    stop();  // release the helper
    waker.join();
    detach_all();
    if (startup_error_) return *startup_error_;
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
        trampolines_.forget(tid);
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

HeldOutcome PtraceEngine::emit(Thread& thread, Process& process, const Breakpoint& bp, const user_regs_struct& regs) {
    bool rewound = false;
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
            probe::evaluate_arg(spec.args[i].name, sp.programs[i], regs, memory, context, event.args);
        stats_[sp.probe_id].hits++;
        user_regs_struct at_probe = regs;
        at_probe.rip = bp.address;
        // An unwinder reading the thread itself must see the probe address,
        // not the byte after our int3; the resume sets rip again anyway.
        if (request_.rewind_pc && !rewound) rewound = proc::set_rip(thread.tid, bp.address).ok();
        HitAction action = consumer_->on_hit(event, at_probe);
        if (action == HitAction::Detach) return HeldOutcome::Detach;
        if (action == HitAction::Hold) {
            if (!rewound) rewound = proc::set_rip(thread.tid, bp.address).ok();
            HeldOutcome outcome = consumer_->on_hold(event, HeldThread{process.pid, thread.tid, at_probe});
            if (outcome != HeldOutcome::Resume) return outcome;
        }
    }
    return HeldOutcome::Resume;
}

void PtraceEngine::handle_trap(Thread& thread) {
    Process* process = process_of(thread.pid);
    auto regs = proc::get_regs(thread.tid);
    if (!process || !regs) {
        if (!stopping_) resume(thread, SIGTRAP);
        return;
    }
    if (process->space->return_trampoline && (regs->rip - 1 == process->space->return_trampoline ||
                                              process->space->original_by_stub.count(regs->rip - 1))) {
        on_trampoline_hit(thread, *process, *regs);
        return;
    }
    auto& bps = process->space->breakpoints;
    auto it = bps.find(regs->rip - 1);
    if (it == bps.end() && process->space->retired.count(regs->rip - 1)) {
        // Our int3, taken out after this thread trapped on it: run the
        // original instruction, which is back in place.
        (void)proc::set_rip(thread.tid, regs->rip - 1);
        if (!stopping_) resume(thread, 0);
        return;
    }
    if (it == bps.end()) {
        // Not ours (a SIGTRAP sent to the program, or its own int3): pass it on.
        if (stopping_) thread.pending_signal = SIGTRAP;
        else resume(thread, SIGTRAP);
        return;
    }
    Breakpoint& bp = it->second;
    if (!bp.probes.empty() && !process->silent && bp.internal == Internal::None) {
        HeldOutcome outcome = emit(thread, *process, bp, *regs);
        // A hit while one process is being attached or detached cannot
        // start another detach: it runs on through its slot.
        if (outcome != HeldOutcome::Resume && !stopping_) {
            const pid_t pid = process->pid;
            const bool stopped = outcome == HeldOutcome::DetachStopped;
            detach_process(pid, thread.tid, bp.address, stopped);
            if (!process_of(pid)) consumer_->on_released(pid, stopped);
            return;
        }
    } else if (!bp.probes.empty() && !process->silent) {
        emit(thread, *process, bp, *regs);  // internal breakpoints cannot hold
    }
    if (!process->silent && (!bp.returns.empty() || bp.exit != ExitRole::None || bp.internal == Internal::Unwind ||
                             bp.internal == Internal::CatchBegin))
        on_return_probe_hit(thread, *process, bp, *regs);
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
        // For the launched command, a probe these libraries refuse (a
        // missing marker or function in a library named by soname) fails the
        // whole trace here, before main() runs, like a refusal at start.
        if (auto synced = sync_objects(*process, thread.tid, process->root); !synced) {
            if (!process->root) {
                note(synced.error().message());
            } else {
                startup_error_ = synced.error();
                ::kill(process->pid, SIGKILL);
                return;
            }
        }
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
    // The child's stack is a copy of the forking thread's as it is now, with
    // its hijacked return addresses: snapshot the frames now, before the
    // parent runs on and returns through (pops) them.
    if (event == PTRACE_EVENT_FORK) trampolines_.copy_thread(parent.tid, child);
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
        trampolines_.forget(child);
        (void)proc::detach(child, 0);
        return;
    }
    if (!follow && !pending.vfork) {
        AddressSpace copy = *parent->space;
        // The child's stack is a copy of the forking thread's, hijacked
        // return addresses included: they would run into our trampoline.
        if (copy.return_trampoline) (void)trampolines_.restore(child, child, copy.return_trampoline, nullptr);
        trampolines_.forget(child);
        remove_breakpoint_bytes(child, copy);
        unpin(child);
        (void)proc::detach(child, 0);
        // Global mode asked for this child while it was still ours to clean.
        if (attach_after_adopt_.erase(child))
            if (auto attached = attach_running(child); !attached) note(attached.error().message());
        return;
    }
    Process& process = processes_[child];
    process.pid = child;
    process.silent = !follow;
    process.exe = parent->exe;
    process.space = pending.vfork ? parent->space : std::make_shared<AddressSpace>(*parent->space);
    process.threads.insert(child);
    if (follow) ever_traced_.push_back(child);
    if (!follow) trampolines_.forget(child);
    Thread& thread = threads_[child] = Thread{child, child, true, false, 0, {}};
    if (!stopping_) resume(thread);
}

void PtraceEngine::handle_exec(Thread& thread) {
    pid_t pid = thread.pid;
    Process* process = process_of(pid);
    if (!process) return;
    // Every other thread is gone (execve(2)); the leader carries on.
    for (pid_t tid : process->threads) trampolines_.forget(tid);
    trampolines_.forget(thread.tid);
    for (pid_t tid : process->threads)
        if (tid != thread.tid) threads_.erase(tid);
    process->threads = {thread.tid};
    thread.comm.clear();
    thread.shadow_stack.reset();  // the new program enables its own
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
        for (pid_t tid : p->threads) trampolines_.forget(tid);
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
    for (auto& [pid, process] : processes_) restore_return_addresses(pid);
    note_lost_frames();
    std::set<AddressSpace*> cleaned;
    for (auto& [pid, process] : processes_) {
        if (cleaned.insert(process.space.get()).second) remove_breakpoint_bytes(pid, *process.space);
    }
    for (auto& [tid, thread] : threads_) (void)proc::detach(tid, thread.pending_signal);
    threads_.clear();
    processes_.clear();
    finished_ = true;
}

// ------------------------------------------- one process at a time (issue 7)
// Hold outcomes and global mode act on one process while the others stay
// traced and running, so these wait for that process's threads only
// (waitpid on each tid), never for the whole session.

void PtraceEngine::add_process(pid_t pid) {
    {
        std::lock_guard lock(attach_mutex_);
        attach_queue_.push_back(pid);
    }
    wake_loop_until_taken();
}

Result<void> PtraceEngine::add_probe(const ProbeSpec& spec) {
    {
        std::lock_guard lock(attach_mutex_);
        probe_queue_.push_back(spec);
    }
    wake_loop_until_taken();
    return {};
}

void PtraceEngine::wake_loop_until_taken() {
    // As for stop(): one signal could land just before waitpid blocks, so
    // repeat it until the loop has taken the requests.
    const pid_t self = static_cast<pid_t>(::syscall(SYS_gettid));
    for (;;) {
        {
            std::lock_guard lock(attach_mutex_);
            if (attach_queue_.empty() && probe_queue_.empty() && removal_queue_.empty()) return;
        }
        pid_t loop = loop_tid_.load();
        if (loop == 0 || loop == self) return;  // taken when the loop (re)starts
        ::syscall(SYS_tgkill, ::getpid(), loop, SIGURG);
        struct timespec ts{0, 1000000};
        nanosleep(&ts, nullptr);
    }
}

Result<void> PtraceEngine::remove_probe(uint32_t id) {
    {
        std::lock_guard lock(attach_mutex_);
        removal_queue_.push_back(id);
    }
    wake_loop_until_taken();
    return {};
}

// The bytes go back while the process's threads run: a one-byte write is
// what the int3 was, and a thread that trapped just before finds the
// address in `retired` (handle_trap).
void PtraceEngine::remove_queued_probes() {
    std::vector<uint32_t> ids;
    {
        std::lock_guard lock(attach_mutex_);
        ids.swap(removal_queue_);
    }
    for (uint32_t id : ids) {
        if (id >= request_.probes.size() || !removed_probes_.insert(id).second) continue;
        size_t removed = 0;
        std::set<AddressSpace*> done;
        for (auto& [pid, process] : processes_) {
            if (!done.insert(process.space.get()).second) continue;
            auto& bps = process.space->breakpoints;
            for (auto it = bps.begin(); it != bps.end();) {
                Breakpoint& bp = it->second;
                size_t before = bp.probes.size();
                std::erase_if(bp.probes, [id](const SiteProbe& sp) { return sp.probe_id == id; });
                if (bp.probes.size() != before) ++removed;
                if (bp.probes.size() == before || !bp.probes.empty() || !bp.returns.empty() ||
                    bp.exit != ExitRole::None || bp.internal != Internal::None) {
                    ++it;
                    continue;
                }
                (void)proc::write_memory(pid, bp.address, &bp.original, 1);
                process.space->retired.insert(bp.address);
                it = bps.erase(it);
            }
        }
        note("probe " + request_.probes[id].name + ": removed from " + std::to_string(removed) +
             (removed == 1 ? " site" : " sites"));
    }
}

void PtraceEngine::insert_queued_probes() {
    std::vector<ProbeSpec> specs;
    {
        std::lock_guard lock(attach_mutex_);
        specs.swap(probe_queue_);
    }
    for (auto& spec : specs) {
        const size_t index = request_.probes.size();
        request_.probes.push_back(std::move(spec));
        ProbeStats stats;
        stats.probe = request_.probes.back().name;
        stats_.push_back(stats);
        // Objects mapped later get it through sync_objects like every probe.
        // Stops handled meanwhile may add or remove processes: go by pid.
        std::vector<pid_t> pids;
        for (auto& [pid, process] : processes_) pids.push_back(pid);
        std::set<AddressSpace*> done;
        for (pid_t pid : pids) {
            Process* process = process_of(pid);
            if (!process || process->silent || !done.insert(process->space.get()).second) continue;
            if (auto inserted = insert_probe_live(*process, index); !inserted)
                note(inserted.error().context("probe " + stats.probe).message());
        }
    }
}

// Inserting needs one stopped thread of the process (out-of-line areas are
// mapped with a remote mmap); the others run on, as when a dlopen brings
// new objects.
Result<void> PtraceEngine::insert_probe_live(Process& process, size_t probe_index) {
    if (process.threads.empty()) return {};
    pid_t tid = 0;
    for (pid_t t : process.threads)
        if (auto it = threads_.find(t); it != threads_.end() && it->second.stopped) tid = t;
    const bool we_stop = tid == 0;
    const pid_t pid = process.pid;
    const bool was_stopping = stopping_;
    if (we_stop) {
        tid = *process.threads.begin();
        stopping_ = true;
        (void)proc::interrupt(tid);
        for (;;) {
            auto it = threads_.find(tid);
            if (it == threads_.end() || it->second.stopped) break;
            int status = 0;
            pid_t got = ::waitpid(tid, &status, __WALL);
            if (got == tid) handle_status(tid, status);
            else if (got < 0 && errno != EINTR) break;
        }
        stopping_ = was_stopping;
        if (!threads_.count(tid) || !process_of(pid)) return Error("process " + std::to_string(pid) + " exited");
    }
    Result<void> outcome;
    auto maps = proc::read_maps(pid);
    if (!maps) {
        outcome = maps.error();
    } else {
        std::set<ObjectKey> seen;
        for (const auto& m : *maps) {
            if (m.inode == 0 || !m.exec) continue;
            ObjectKey key{m.device, m.inode};
            if (!process.space->objects.count(key) || !seen.insert(key).second) continue;
            std::string path = proc::host_path(pid, m.path);
            if (!probe_wants(request_.probes[probe_index], process, key, path)) continue;
            if (auto inserted = insert_probe_sites(process, tid, m, *maps, probe_index); !inserted) outcome = inserted;
        }
    }
    if (we_stop && !stopping_)
        if (auto it = threads_.find(tid); it != threads_.end() && it->second.stopped)
            resume(it->second, std::exchange(it->second.pending_signal, 0));
    return outcome;
}

void PtraceEngine::attach_queued() {
    std::vector<pid_t> pids;
    {
        std::lock_guard lock(attach_mutex_);
        pids.swap(attach_queue_);
    }
    for (pid_t pid : pids)
        if (auto attached = attach_running(pid); !attached) note(attached.error().message());
}

Result<void> PtraceEngine::attach_running(pid_t pid) {
    if (processes_.count(pid)) return {};
    // A fresh child of a traced process: still attached to us (fork
    // events) until adopt_child_with cleans and detaches it.
    if (pending_children_.count(pid) || early_stops_.count(pid)) {
        attach_after_adopt_.insert(pid);
        return {};
    }
    if (pid <= 0 || ::kill(pid, 0) != 0) return Error("process " + std::to_string(pid) + " is gone");
    Process& process = processes_[pid];
    process.pid = pid;
    process.space = std::make_shared<AddressSpace>();
    const bool was_stopping = stopping_;
    stopping_ = true;
    auto threads_of = [this, pid] {
        Process* p = process_of(pid);
        return p ? p->threads : std::set<pid_t>{};
    };
    for (bool grew = true; grew;) {
        grew = false;
        auto tids = proc::list_threads(pid);
        if (!tids) break;
        for (pid_t tid : *tids) {
            if (threads_.count(tid)) continue;
            if (!proc::seize(tid, kOptions)) continue;  // exited, or traced by someone else
            threads_[tid] = Thread{tid, pid, false, false, 0, {}};
            process.threads.insert(tid);
            grew = true;
            (void)proc::interrupt(tid);
        }
    }
    if (process.threads.empty()) {
        processes_.erase(pid);
        stopping_ = was_stopping;
        return Error("cannot attach to process " + std::to_string(pid));
    }
    ever_traced_.push_back(pid);
    for (bool waiting = true; waiting;) {
        waiting = false;
        for (pid_t tid : threads_of()) {
            auto it = threads_.find(tid);
            if (it == threads_.end() || it->second.stopped) continue;
            waiting = true;
            int status = 0;
            pid_t got = ::waitpid(tid, &status, __WALL);
            if (got == tid) handle_status(tid, status);
            else if (got < 0 && errno != EINTR) threads_.erase(tid);
            break;  // the set may have changed
        }
    }
    Process* attached = process_of(pid);
    if (!attached || attached->threads.empty()) {
        stopping_ = was_stopping;
        return Error("process " + std::to_string(pid) + " exited while being attached");
    }
    note("attached to " + std::to_string(pid) + " (" + std::to_string(attached->threads.size()) + " threads)");
    auto ready = setup_image(*attached, *attached->threads.begin(), false, false);
    if (!ready) {
        remove_breakpoint_bytes(pid, *attached->space);
        for (pid_t tid : attached->threads) {
            (void)proc::detach(tid, threads_[tid].pending_signal);
            threads_.erase(tid);
        }
        processes_.erase(pid);
        stopping_ = was_stopping;
        return ready.error().context("process " + std::to_string(pid));
    }
    stopping_ = was_stopping;
    if (!stopping_) {
        for (pid_t tid : attached->threads)
            if (auto it = threads_.find(tid); it != threads_.end() && it->second.stopped)
                resume(it->second, std::exchange(it->second.pending_signal, 0));
    }
    return {};
}

// The hitting thread goes back to the probe address with the original byte
// restored, so it runs the probed instruction itself; with leave_stopped it
// is detached with SIGSTOP (PTRACE_DETACH's signal, ptrace(2)), which puts
// the process in a group-stop right there, before that instruction runs:
// where `gdb -p` finds it.
void PtraceEngine::detach_process(pid_t pid, pid_t hitter, uint64_t address, bool leave_stopped) {
    Process* process = process_of(pid);
    if (!process) return;
    const bool was_stopping = stopping_;
    stopping_ = true;
    for (pid_t tid : process->threads)
        if (auto it = threads_.find(tid); it != threads_.end() && !it->second.stopped) (void)proc::interrupt(tid);
    auto wait_all = [&] {
        for (bool waiting = true; waiting;) {
            waiting = false;
            Process* p = process_of(pid);
            if (!p) return;
            for (pid_t tid : p->threads) {
                auto it = threads_.find(tid);
                if (it == threads_.end() || it->second.stopped) continue;
                waiting = true;
                int status = 0;
                pid_t got = ::waitpid(tid, &status, __WALL);
                if (got == tid) handle_status(tid, status);
                else if (got < 0 && errno != EINTR) {
                    p->threads.erase(tid);
                    threads_.erase(tid);
                }
                break;  // the set may have changed
            }
        }
    };
    wait_all();
    // As in detach_all: a SIGTRAP of one of our int3s may still be pending.
    for (int round = 0; round < 8; ++round) {
        Process* p = process_of(pid);
        if (!p) break;
        bool again = false;
        for (pid_t tid : p->threads) {
            auto it = threads_.find(tid);
            if (it == threads_.end() || !it->second.stopped || !sigtrap_pending(tid)) continue;
            it->second.stopped = false;
            (void)proc::resume(tid, proc::Resume::Continue, 0);
            again = true;
        }
        if (!again) break;
        wait_all();
    }
    process = process_of(pid);
    if (process) {
        restore_return_addresses(pid);
        remove_breakpoint_bytes(pid, *process->space);
        if (threads_.count(hitter)) (void)proc::set_rip(hitter, address);
        for (pid_t tid : process->threads) {
            auto it = threads_.find(tid);
            if (it == threads_.end()) continue;
            unpin(tid);
            int signal = it->second.pending_signal;
            if (leave_stopped && tid == hitter) signal = SIGSTOP;
            (void)proc::detach(tid, signal);
            threads_.erase(it);
        }
        note("detached from " + std::to_string(pid) + (leave_stopped ? ", left stopped" : ""));
        processes_.erase(pid);
        // The SIGSTOP is delivered after the detach, asynchronously: return
        // only once the process sits in its group-stop, so that whoever
        // looks next (gdb -p, a test) finds it stopped. Bounded: a process
        // that dies or is continued meanwhile ends the wait.
        for (int i = 0; leave_stopped && i < 20000; ++i) {
            std::string state = proc::process_state(pid);
            if (state != "R" && state != "S" && state != "D") break;
            struct timespec ts{0, 50000};
            nanosleep(&ts, nullptr);
        }
    }
    stopping_ = was_stopping;
}

// ---------------------------------------------------------------- return probes
// The mechanisms are in return_probes.hpp; this is their glue to the
// engine's breakpoints, threads and events.

// Go's runtime checks return addresses while it moves and scans stacks
// ("unexpected return pc"), so a trampoline would crash it: Go objects get
// instruction-mode return probes under --return-mode=auto. So do threads
// with hardware shadow stacks, whose ret compares the return address with
// the shadow copy and faults (#CP) on the trampoline's; an explicit
// trampoline mode is refused there. A launched program is stopped before
// its loader turns them on, so auto also prefers instruction mode in
// objects marked for shadow stacks on a kernel that supports them; a
// function it cannot analyse there still gets a trampoline, which a thread
// found with shadow stacks at its entry never takes (shadow_stack_at_entry).
Result<PtraceEngine::ExitMechanism> PtraceEngine::return_mechanism(const elf::Binary& binary, pid_t pid,
                                                                   pid_t tid) {
    if (request_.return_mode == ReturnMode::Instructions) return ExitMechanism::Instructions;
    if (proc::thread_has_shadow_stack(pid, tid)) {
        if (request_.return_mode == ReturnMode::Trampoline)
            return Error("thread " + std::to_string(tid) +
                         " has hardware shadow stacks (shstk in /proc/PID/status): a return trampoline would "
                         "crash it; use --return-mode=insn");
        return ExitMechanism::Instructions;
    }
    if (request_.return_mode == ReturnMode::Trampoline) return ExitMechanism::Trampoline;
    if (Elf* elf = binary.elf()) {
        size_t strings = 0;
        if (elf_getshdrstrndx(elf, &strings) == 0) {
            for (Elf_Scn* scn = elf_nextscn(elf, nullptr); scn; scn = elf_nextscn(elf, scn)) {
                GElf_Shdr header;
                if (!gelf_getshdr(scn, &header)) continue;
                const char* name = elf_strptr(elf, strings, header.sh_name);
                if (name &&
                    (std::strcmp(name, ".go.buildinfo") == 0 || std::strcmp(name, ".note.go.buildid") == 0))
                    return ExitMechanism::Instructions;
            }
        }
    }
    if (!binary.find_functions("runtime.main").empty()) return ExitMechanism::Instructions;
    if (proc::kernel_has_user_shadow_stacks() && binary.marks_shadow_stack())
        return ExitMechanism::InstructionsWhereProven;
    return ExitMechanism::Trampoline;
}

Result<void> PtraceEngine::insert_return_probe(Process& process, pid_t tid, const probe::Site& site,
                                               uint64_t address, ObjectKey key, elf::Binary& binary,
                                               SiteProbe compiled) {
    const ProbeSpec& spec = request_.probes[compiled.probe_id];
    AddressSpace& space = *process.space;
    auto rs = std::make_unique<ReturnSite>();
    rs->probe_id = compiled.probe_id;
    rs->function = address;
    UPROBE_TRY(ExitMechanism mechanism, return_mechanism(binary, process.pid, tid));
    rs->by_instructions = mechanism != ExitMechanism::Trampoline;
    for (size_t i = 0; i < compiled.programs.size(); ++i) {
        const probe::ArgProgram& program = compiled.programs[i];
        bool at_entry = !program.is_dwarf && program.plain.at_entry;
        rs->has_entry_programs |= at_entry;
        (at_entry ? rs->entry_needs_fpregs : rs->return_needs_fpregs) |= program.needs_fpregs();
        rs->reads_retval.push_back(i < spec.args.size() && spec.args[i].fetch.kind == FetchKind::RetVal);
    }
    bool timed = std::any_of(spec.args.begin(), spec.args.end(),
                             [](const ArgSpec& a) { return a.fetch.kind == FetchKind::Duration; });
    rs->needs_entry = !rs->by_instructions || rs->has_entry_programs || timed;
    rs->programs = std::move(compiled.programs);
    if (rs->by_instructions) {
        bool unproven = false;
        auto placed = insert_function_exits(process, tid, site, address - site.vaddr, key, binary, rs.get(),
                                             &unproven);
        if (!placed && !(unproven && mechanism == ExitMechanism::InstructionsWhereProven)) return placed.error();
        if (!placed) {
            note("return probe " + spec.name + ": no instruction analysis (" + placed.error().message() +
                 "): a trampoline instead");
            rs->by_instructions = false;
            rs->needs_entry = true;
        }
    }
    if (rs->by_instructions) {
        if (!rs->needs_entry) {
            stats_[rs->probe_id].sites++;
            return_sites_.push_back(std::move(rs));
            return {};
        }
    } else if (!space.return_trampoline) {
        UPROBE_TRY(uint64_t trampoline, allocate_slot(process, tid, address));
        UPROBE_CHECK(proc::write_memory(process.pid, trampoline, &kInt3, 1).context("return trampoline"));
        space.return_trampoline = trampoline;
        insert_unwinder_hooks(process, tid);
    }
    UPROBE_TRY(auto span, binary.code(site.vaddr, arch::kMaxInstructionLength + 1));
    std::vector<uint8_t> code(span.begin(), span.end());
    UPROBE_CHECK(insert_breakpoint(process, tid, address, code, key, std::nullopt, Internal::None));
    auto& entered = space.breakpoints[address].returns;
    std::erase_if(entered, [&rs](const ReturnSite* x) { return x->probe_id == rs->probe_id; });
    entered.push_back(rs.get());
    stats_[rs->probe_id].sites++;
    return_sites_.push_back(std::move(rs));
    return {};
}

// Instruction mode: a breakpoint on every exit of the function. A direct
// tail jump into a function whose only exits are rets is followed (its rets
// get exit breakpoints too), so the jumping function reports its return
// when the callee returns, with the callee's value.
Result<void> PtraceEngine::insert_function_exits(Process& process, pid_t tid, const probe::Site& site,
                                                 uint64_t bias, ObjectKey key, elf::Binary& binary,
                                                 const ReturnSite* owner, bool* unproven) {
    *unproven = true;
    if (site.function_size == 0)
        return Error("the size of " + site.function +
                     " is unknown: cannot find its returns; use --return-mode=trampoline");
    UPROBE_TRY(std::vector<CodeRange> parts, function_parts(binary, site));
    // Jump tables are read from the file; a PIE's absolute tables are
    // relocated at load time, so only its relative ones can be read there.
    ObjectData data;
    data.read = [&binary](uint64_t vaddr, size_t size) { return binary.code(vaddr, size); };
    data.relocated = binary.is_pie_or_shared();
    UPROBE_TRY(FunctionExits exits, find_function_exits(parts, site.function, &data));
    *unproven = false;
    auto place = [&](uint64_t vaddr, ExitRole role, const ReturnSite* of) -> Result<void> {
        std::optional<std::span<const uint8_t>> code;
        for (size_t length : {arch::kMaxInstructionLength + 1, size_t{8}, size_t{5}, size_t{1}}) {
            if (auto got = binary.code(vaddr, length)) {
                code = *got;
                break;
            }
        }
        if (!code) return Error("no code at " + hex(vaddr));
        uint64_t address = vaddr + bias;
        UPROBE_CHECK(insert_breakpoint(process, tid, address, {code->begin(), code->end()}, key, std::nullopt,
                                       Internal::None));
        Breakpoint& bp = process.space->breakpoints[address];
        if (bp.exit == ExitRole::None || role == ExitRole::Return) bp.exit = role;
        if (of) {
            // A probe placed again (its object was unmapped and mapped back)
            // replaces its old self.
            ExitInfo& info = process.space->exits[address];
            auto& owners = of->needs_entry ? info.framed : info.frameless;
            std::erase_if(owners, [of](const ReturnSite* x) { return x->probe_id == of->probe_id; });
            owners.push_back(of);
        }
        return {};
    };
    for (uint64_t ret : exits.returns) UPROBE_CHECK(place(ret, ExitRole::Return, owner));
    for (const auto& jump : exits.tail_jumps) {
        bool followed = false;
        const elf::Binary::Symbol* callee = binary.function_containing(jump.target);
        if (callee && callee->vaddr == jump.target && callee->size) {
            auto callee_bytes = binary.code(callee->vaddr, callee->size);
            auto callee_exits = callee_bytes ? find_function_exits({CodeRange{callee->vaddr, *callee_bytes}},
                                                                   callee->demangled, &data)
                                             : Result<FunctionExits>(callee_bytes.error());
            if (callee_exits && callee_exits->tail_jumps.empty() &&
                callee_exits->indirect_tail_jumps.empty()) {
                for (uint64_t ret : callee_exits->returns)
                    UPROBE_CHECK(place(ret, ExitRole::Return, nullptr));
                followed = true;
                ExitInfo& info = process.space->exits[jump.address + bias];
                info.callee_start = callee->vaddr + bias;
                info.callee_end = callee->vaddr + callee->size + bias;
            }
        }
        UPROBE_CHECK(place(jump.address, followed ? ExitRole::FollowedTailJump : ExitRole::TailJump,
                           owner->needs_entry ? nullptr : owner));
    }
    // A jump table whose every entry leaves: a tail call to one of several
    // functions, reported at the jump.
    for (uint64_t jump : exits.indirect_tail_jumps)
        UPROBE_CHECK(place(jump, ExitRole::TailJump, owner->needs_entry ? nullptr : owner));
    return {};
}

// The C++ unwinder reads return addresses from the stack; a trampoline
// address there has no unwind info and would end in std::terminate. So the
// unwinder's entry points (libgcc_s, or the executable when linked
// statically) put the originals back first, and the catch (libstdc++'s
// __cxa_begin_catch) takes the frames that survived again.
void PtraceEngine::insert_unwinder_hooks(Process& process, pid_t tid) {
    static const std::pair<const char*, Internal> hooks[] = {
        {"_Unwind_RaiseException", Internal::Unwind}, {"_Unwind_Resume", Internal::Unwind},
        {"_Unwind_ForcedUnwind", Internal::Unwind},   {"_Unwind_Resume_or_Rethrow", Internal::Unwind},
        {"__cxa_begin_catch", Internal::CatchBegin},
    };
    auto maps = proc::read_maps(process.pid);
    if (!maps) return;
    AddressSpace& space = *process.space;
    for (const auto& m : *maps) {
        if (m.inode == 0 || !m.exec) continue;
        ObjectKey key{m.device, m.inode};
        if (!space.unwinder_scanned.insert(key).second) continue;
        std::string base = m.path.substr(m.path.rfind('/') + 1);
        if (!(key == process.exe || starts_with(base, "libgcc_s") || starts_with(base, "libstdc++")))
            continue;
        auto binary = resolver_.binary(proc::host_path(process.pid, m.path));
        if (!binary) continue;
        for (const auto& [name, kind] : hooks) {
            for (const auto* symbol : (*binary)->find_functions(name)) {
                if (symbol->name != name) continue;
                auto offset = (*binary)->vaddr_to_offset(symbol->vaddr);
                if (!offset) continue;
                for (const auto& home : *maps) {
                    if (home.device != key.device || home.inode != key.inode || !home.exec) continue;
                    if (*offset < home.file_offset || *offset >= home.file_offset + (home.end - home.start))
                        continue;
                    auto code = (*binary)->code(symbol->vaddr, arch::kMaxInstructionLength + 1);
                    if (!code) break;
                    uint64_t address = home.start + (*offset - home.file_offset);
                    auto inserted = insert_breakpoint(process, tid, address, {code->begin(), code->end()},
                                                      key, std::nullopt, kind);
                    if (!inserted)
                        note("return probes: exceptions through probed functions may fail: " +
                             inserted.error().message());
                    break;
                }
            }
        }
    }
}

bool PtraceEngine::shadow_stack_at_entry(Thread& thread, const Process& process) {
    if (!thread.shadow_stack) thread.shadow_stack = proc::thread_has_shadow_stack(process.pid, thread.tid);
    if (*thread.shadow_stack &&
        return_notes_.insert("shadow stack " + std::to_string(thread.tid)).second)
        note("return probes: thread " + std::to_string(thread.tid) +
             " turned on hardware shadow stacks after the trampolines were placed; its returns are not "
             "reported (use --return-mode=insn)");
    return *thread.shadow_stack;
}

void PtraceEngine::on_return_probe_hit(Thread& thread, Process& process, const Breakpoint& bp,
                                       const user_regs_struct& regs) {
    AddressSpace& space = *process.space;
    const uint64_t trampoline = space.return_trampoline;
    if (bp.internal == Internal::Unwind && trampoline)
        trampolines_.unwinding(process.pid, thread.tid, trampoline);
    if (bp.internal == Internal::CatchBegin && trampoline)
        trampolines_.caught(process.pid, thread.tid, regs.rsp, trampoline, lost_frames_);
    if (!bp.returns.empty()) {
        ReturnFrame frame;
        frame.entry_ns = monotonic_ns();
        frame.slot = regs.rsp;
        std::optional<user_fpregs_struct> fpregs;
        probe::ProcessMemoryReader memory(process.pid);
        probe::FetchContext context;
        context.pid = process.pid;
        context.tid = thread.tid;
        context.comm = comm_of(thread);
        context.string_max = request_.string_max;
        for (const ReturnSite* rs : bp.returns) {
            PendingReturn pending{rs, {}};
            if (rs->has_entry_programs) {
                if (rs->entry_needs_fpregs && !fpregs)
                    if (auto fp = proc::get_fpregs(thread.tid)) fpregs = *fp;
                context.fpregs = fpregs ? &*fpregs : nullptr;
                const ProbeSpec& spec = request_.probes[rs->probe_id];
                pending.entry_values.resize(rs->programs.size());
                for (size_t i = 0; i < rs->programs.size(); ++i) {
                    const auto& program = rs->programs[i];
                    if (!program.is_dwarf && program.plain.at_entry)
                        probe::evaluate_arg(spec.args[i].name, program, regs, memory, context,
                                            pending.entry_values[i]);
                }
            }
            frame.returns.push_back(std::move(pending));
        }
        if (bp.returns.front()->by_instructions) {
            space.exit_frames.enter(std::move(frame), bp.address);
        } else if (trampoline && shadow_stack_at_entry(thread, process)) {
            // Placed before the thread turned shadow stacks on (a launch
            // stops before the loader enables them): never hijack its
            // returns, which would fault.
        } else if (trampoline) {
            // A stub per return address (near the probed function, where an
            // XOL area is): the return then needs no register write.
            const uint64_t near = bp.address;
            SpaceStubs stubs(space, [&](uint64_t original) -> uint64_t {
                auto slot = allocate_slot(process, thread.tid, near);
                if (!slot) return 0;
                uint8_t code[15] = {kInt3, 0xff, 0x25, 0, 0, 0, 0};  // int3; jmp qword [rip + 0]; .quad original
                std::memcpy(code + 7, &original, 8);
                return proc::write_memory(process.pid, *slot, code, sizeof code).ok() ? *slot : 0;
            });
            auto entered = trampolines_.enter(process.pid, thread.tid, regs.rsp, trampoline, std::move(frame),
                                              lost_frames_, &stubs);
            if (!entered && return_notes_.insert(entered.error().message()).second)
                note("return probe: " + entered.error().message() + " (that return is not reported)");
        }
    }
    if (bp.exit == ExitRole::None) return;
    auto info = space.exits.find(bp.address);
    ReturnFrame own;  // the probes of this function that have no entry breakpoint
    own.slot = regs.rsp;
    if (info != space.exits.end())
        for (const ReturnSite* rs : info->second.frameless) own.returns.push_back(PendingReturn{rs, {}});
    switch (bp.exit) {
        case ExitRole::None:
            break;
        case ExitRole::Return: {
            auto frames = space.exit_frames.returned(regs.rsp, bp.address);
            if (info != space.exits.end()) {
                for (const ReturnSite* rs : info->second.framed) {
                    bool found = false;
                    for (const auto& f : frames)
                        for (const auto& pending : f.returns) found |= pending.site == rs;
                    if (!found) own.returns.push_back(PendingReturn{rs, {}});
                }
            }
            if (!own.returns.empty()) emit_return(thread, process, own, regs, true);
            for (const auto& f : frames) emit_return(thread, process, f, regs, true);
            break;
        }
        case ExitRole::TailJump:
            if (!own.returns.empty()) emit_return(thread, process, own, regs, false);
            for (const auto& f : space.exit_frames.left_by_jump(regs.rsp))
                emit_return(thread, process, f, regs, false);
            break;
        case ExitRole::FollowedTailJump:
            if (info != space.exits.end())
                space.exit_frames.jumped_into(regs.rsp, info->second.callee_start, info->second.callee_end,
                                              std::move(own));
            break;
    }
}

void PtraceEngine::on_trampoline_hit(Thread& thread, Process& process, const user_regs_struct& regs) {
    uint64_t resume_at = 0;
    auto frames = trampolines_.returned(thread.tid, regs.rsp, &resume_at, lost_frames_);
    if (!process.silent)
        for (const auto& f : frames) emit_return(thread, process, f, regs, true);
    // A stub jumps on to its return address by itself.
    const uint64_t stub_goes_to = SpaceStubs(*process.space).original_of(regs.rip - 1);
    if (!resume_at) resume_at = stub_goes_to;
    if (resume_at && resume_at == stub_goes_to) {
        if (!stopping_) resume(thread);
        return;
    }
    if (!resume_at) {
        // No record of where this return goes: cannot happen unless the
        // program copied a hijacked return address elsewhere. Running on
        // would execute garbage; a segmentation fault is the honest end.
        note("thread " + std::to_string(thread.tid) +
             " returned through the return-probe trampoline at an unknown "
             "stack address " +
             hex(regs.rsp - 8) + "; delivering SIGSEGV");
        if (stopping_)
            thread.pending_signal = SIGSEGV;
        else
            resume(thread, SIGSEGV);
        return;
    }
    if (!proc::set_rip(thread.tid, resume_at)) return;  // died meanwhile
    if (!stopping_) resume(thread);
}

void PtraceEngine::emit_return(Thread& thread, Process& process, const ReturnFrame& frame,
                               const user_regs_struct& regs, bool value_known) {
    const uint64_t now = monotonic_ns();
    std::optional<user_fpregs_struct> fpregs;
    probe::ProcessMemoryReader memory(process.pid);
    probe::FetchContext context;
    context.pid = process.pid;
    context.tid = thread.tid;
    context.string_max = request_.string_max;
    Event event;
    event.pid = process.pid;
    event.tid = thread.tid;
    event.ts_ns = now;
    event.comm = comm_of(thread);
    context.comm = event.comm;
    event.is_return = true;
    if (frame.entry_ns) {
        event.duration_ns = now >= frame.entry_ns ? now - frame.entry_ns : 0;
        context.duration_ns = event.duration_ns;
    }
    for (const PendingReturn& pending : frame.returns) {
        const ReturnSite& rs = *pending.site;
        const ProbeSpec& spec = request_.probes[rs.probe_id];
        if (rs.return_needs_fpregs && value_known && !fpregs)
            if (auto fp = proc::get_fpregs(thread.tid)) fpregs = *fp;
        context.fpregs = fpregs ? &*fpregs : nullptr;
        event.probe_id = rs.probe_id;
        event.probe = spec.name;
        event.addr = rs.function;
        event.args.clear();
        for (size_t i = 0; i < rs.programs.size(); ++i) {
            const auto& program = rs.programs[i];
            if (!program.is_dwarf && program.plain.at_entry) {
                if (i < pending.entry_values.size())
                    event.args.insert(event.args.end(), pending.entry_values[i].begin(),
                                      pending.entry_values[i].end());
                else
                    event.args.push_back(
                        EventArg{spec.args[i].name, Value::make_error("unknown: entry not seen")});
            } else if (!frame.entry_ns && !program.is_dwarf &&
                       program.plain.format == probe::FetchFormat::Duration) {
                event.args.push_back(
                    EventArg{spec.args[i].name, Value::make_error("unknown: entry not seen")});
            } else if (!value_known && rs.reads_retval[i]) {
                event.args.push_back(
                    EventArg{spec.args[i].name, Value::make_error("unknown: left by a tail jump")});
            } else {
                probe::evaluate_arg(spec.args[i].name, program, regs, memory, context, event.args);
            }
        }
        stats_[rs.probe_id].hits++;
        // Where the function returns to (trampoline) or its ret (instructions).
        // A return event cannot hold its thread: the action is not asked.
        user_regs_struct at_return = regs;
        at_return.rip = frame.original ? frame.original : regs.rip - 1;
        (void)consumer_->on_hit(event, at_return);
    }
}

// Before detaching: every hijacked return address goes back to its slot,
// and a thread standing on the trampoline goes to its return address, so
// the program runs on untraced as if never probed.
void PtraceEngine::restore_return_addresses(pid_t pid) {
    Process* process = process_of(pid);
    if (!process) return;
    if (const uint64_t trampoline = process->space->return_trampoline) {
        for (pid_t tid : process->threads) {
            auto regs = proc::get_regs(tid);
            user_regs_struct* at = regs ? &*regs : nullptr;
            SpaceStubs stubs(*process->space);
            if (trampolines_.restore(pid, tid, trampoline, at, &stubs)) (void)proc::set_regs(tid, *at);
            trampolines_.forget(tid);
        }
    }
}

void PtraceEngine::note_lost_frames() {
    if (lost_frames_.abandoned || lost_frames_.unwound) {
        std::string line = "return probes: " + std::to_string(lost_frames_.abandoned) +
                           " calls left without returning (longjmp), " +
                           std::to_string(lost_frames_.unwound) + " unwound by exceptions";
        if (return_notes_.insert(line).second) note(line);
    }
}

}  // namespace

std::unique_ptr<Engine> make_ptrace_engine() { return std::make_unique<PtraceEngine>(); }

}  // namespace uprobe::engine
