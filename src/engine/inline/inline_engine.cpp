// The inline engine: probes run inside the traced program. The tracer
// stops the program with ptrace only while it installs (loads the agent,
// writes trampolines, patches jumps) and removes probes; in between the
// program runs untraced, and each hit costs a jump, a register save and
// the agent's handler writing a record into a shared-memory ring that this
// side drains (src/agent/abi.hpp).
//
// Launch: the command starts with LD_PRELOAD=libuprobe-agent.so and the
// region's memfd inherited; the agent's constructor maps the region and
// waits on a futex until the probes are in, so none of the program's own
// code runs unprobed. Attach: with every thread stopped, the tracer maps
// scratch code, creates the memfd inside the target (so it belongs to the
// target and is reachable only through its /proc/PID/fd, i.e. by users
// allowed to ptrace it), and calls dlopen(agent) in one thread.
#include "engine/common.hpp"
#include "engine/engine.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>

#include "agent/abi.hpp"
#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/relocate.hpp"
#include "arch/x86_64/signal_frame.hpp"
#include "arch/x86_64/trampoline.hpp"
#include "base/strings.hpp"
#include "base/unique_fd.hpp"
#include "elf/binary.hpp"
#include "probe/dwarf_fetch.hpp"
#include "probe/fetch.hpp"
#include "probe/resolve.hpp"
#include "proc/proc.hpp"
#include "proc/ptrace.hpp"

namespace uprobe::engine {
namespace {

using proc::Mapping;
namespace abi = uprobe::agent;

static_assert(abi::kFrameXmmOffset == arch::kFrameXmmOffset);

constexpr uint64_t kAreaSize = 1 << 20;
// Room for every function of a large library (libLLVM-15: 36,687), and a
// ring for each of 256 threads alive at once (a server's thread pool). The
// memfd is sparse: a ring costs memory only once a thread writes to it.
constexpr abi::Layout kLayout{65536, 32768, 256, 1 << 20, 16384};
static_assert((kLayout.ring_size & (kLayout.ring_size - 1)) == 0, "the agent masks ring positions");

uint64_t rdtsc() { return __builtin_ia32_rdtsc(); }

// The agent's rdtsc timestamps as CLOCK_MONOTONIC: a line through an
// anchor, whose rate is measured from the session's start and refreshed
// (at most every 100 ms, between drains) from a new anchor where the old
// line ends. Converted times of one thread never go back, as they did when
// each conversion measured the rate anew.
class TscClock {
public:
    void start() {
        tsc0_ = anchor_tsc_ = rdtsc();
        ns0_ = anchor_ns_ = monotonic_ns();
    }
    void calibrate() {
        const uint64_t now_ns = monotonic_ns(), now_tsc = rdtsc();
        if (now_tsc <= tsc0_ || now_ns <= ns0_) return;
        if (ns_per_tsc_ > 0 && now_ns - calibrated_ns_ < 100'000'000) return;
        if (ns_per_tsc_ > 0) {
            anchor_ns_ = to_ns(now_tsc);
            anchor_tsc_ = now_tsc;
        }
        ns_per_tsc_ = static_cast<double>(now_ns - ns0_) / static_cast<double>(now_tsc - tsc0_);
        calibrated_ns_ = now_ns;
    }
    uint64_t to_ns(uint64_t tsc) const {
        const auto since = static_cast<double>(static_cast<int64_t>(tsc - anchor_tsc_)) * ns_per_tsc_;
        return anchor_ns_ + static_cast<uint64_t>(static_cast<int64_t>(since));
    }
    // An interval, at least 1 ns when not empty.
    uint64_t interval_ns(uint64_t tsc_delta) const {
        if (tsc_delta == 0) return 0;
        return std::max<uint64_t>(1, static_cast<uint64_t>(static_cast<double>(tsc_delta) * ns_per_tsc_));
    }

private:
    uint64_t tsc0_ = 0, ns0_ = 0, anchor_tsc_ = 0, anchor_ns_ = 0, calibrated_ns_ = 0;
    double ns_per_tsc_ = 0;
};

// libuprobe-agent.so beside the running uprobe binary (build tree and
// install tree alike), or $UPROBE_AGENT.
std::string agent_path() {
    if (const char* env = ::getenv("UPROBE_AGENT")) return env;
    char self[4096];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return "libuprobe-agent.so";
    self[n] = 0;
    std::string dir(self);
    dir.resize(dir.rfind('/'));
    for (const char* candidate : {"/libuprobe-agent.so", "/../lib/libuprobe-agent.so", "/../libuprobe-agent.so"}) {
        std::string path = dir + candidate;
        if (::access(path.c_str(), R_OK) == 0) return path;
    }
    return dir + "/libuprobe-agent.so";
}

struct SiteInfo {
    uint32_t probe_id = 0;
    uint64_t address = 0;
    std::vector<probe::ArgProgram> args;        // one per argument of the probe
    std::vector<probe::FetchProgram> programs;  // their leaves, as the agent runs them
    // Count-only jump sites count in their trampoline, which knows only the
    // first site at its address: later probes there read that counter.
    int64_t hits_from = -1;
    // Records of this site drained (returns too, for a return probe's
    // entry site). A site that writes records counts no hit in the program
    // (a locked add per hit costs as much as the record): its hits are the
    // records delivered plus those dropped.
    uint64_t delivered = 0;
};

struct Patch {
    uint64_t address = 0;
    bool int3 = false;
    std::vector<uint8_t> original;
    std::vector<uint8_t> patched;
};


// A jump-patched address and what its trampoline was made from, to make
// it again when a probe joining there needs the vector registers saved.
struct JumpSite {
    std::vector<uint8_t> code;  // the file's bytes at the site (displaced + kMaxInstructionLength)
    size_t displaced = 0;
    uint32_t first_site = 0;    // the site index the trampoline passes
    bool vectors = false;       // the trampolines save xmm0..15
    uint64_t landing = 0;       // arch::Trampoline::landing (0: no return probes can use it)
};

struct Target {
    pid_t pid = 0;
    bool root = false;
    // Started with the agent preloaded (a followed child's new program):
    // its agent reports an execve itself (abi.hpp, exec_seq, pending_children).
    bool preloaded = false;
    bool alive = true;
    // @entry values of kSiteEntryRecord frames not yet returned, by (thread,
    // sequence number): the record's argument bytes and how many.
    struct EntryValues {
        std::vector<uint8_t> bytes;
        uint32_t count = 0;
    };
    std::map<std::pair<pid_t, uint64_t>, EntryValues> entry_values;
    std::map<pid_t, size_t> entry_values_of;  // entries per thread: at most a shadow stack's depth
    bool release_requested = false;  // the consumer asked for a detach (HitAction::Detach)
    std::set<pid_t> child_detach_noted;  // followed children whose Detach was noted (they stay traced)
    UniqueFd pidfd;
    abi::Header* region = nullptr;  // our mapping
    uint64_t remote_region = 0;
    uint64_t handler = 0;
    uint64_t scratch = 0;           // remote: syscall gadget at 0, call-return int3 at 3
    std::vector<SiteInfo> sites;
    std::vector<Patch> patches;
    std::vector<CodeArea> areas;
    std::map<uint64_t, uint16_t> semaphores;  // address -> how much we raised it
    std::map<uint64_t, uint32_t> first_site_at;  // address -> site index (chains)
    std::set<uint32_t> counting_sites;           // count in the trampoline
    std::set<std::pair<dev_t, ino_t>> objects;   // objects whose probes are placed
    uint32_t acked = 0;                          // last notify_seq handled
    uint32_t exec_acked = 0;                     // last exec_seq handled
    uint64_t return_trampoline = 0;              // remote; 0: no return probes yet
    std::map<uint64_t, JumpSite> jumps;          // site address -> its jump's trampoline
    uint64_t shadow_registry = 0;                // remote: the agent's shadow stack list
    std::set<std::pair<dev_t, ino_t>> unwinder_scanned;  // objects searched for unwinder entry points
    std::set<uint64_t> planned;  // every probe's sites in the objects being placed: no jump may cover one
    // Int3 sites of earlier sessions in this process. A thread that trapped
    // on one may still be in the agent's SIGTRAP handler, bound to resume
    // in its copy, which jumps back to the next instruction: no jump of
    // ours may cover that (an int3 there is fine: it covers one byte).
    std::set<uint64_t> earlier_int3;
    ino_t exe_inode = 0;
    dev_t exe_device = 0;
    ino_t agent_inode = 0;  // the agent's file (launch) or memfd (attach) in the target
    dev_t agent_device = 0;
    struct ThreadSeen {
        std::string comm;
        uint64_t last_ts = 0;  // converted times of a thread never go back
    };
    std::map<pid_t, ThreadSeen> threads;  // by tid, as their records arrive
    std::map<pid_t, std::vector<int>> held_signals;  // signals that arrived while stopped
};

long futex(uint32_t* word, int op, uint32_t value, const timespec* timeout = nullptr) {
    return ::syscall(SYS_futex, word, op, value, timeout, nullptr, 0);
}

class InlineEngine final : public Engine {
public:
    InlineEngine() { wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }
    ~InlineEngine() override {
        for (auto& t : targets_) finish_target(*t);
    }

    Result<void> start(const TraceRequest& request, EventConsumer& consumer) override;
    Result<int> run() override;
    void stop() override {
        stop_requested_.store(true);
        uint64_t one = 1;
        if (wake_fd_.valid()) (void)!::write(wake_fd_.get(), &one, sizeof one);
    }
    std::vector<ProbeStats> stats() const override;
    std::vector<pid_t> traced_processes() const override { return ever_traced_; }
    // Global mode: attached by the event loop (the thread that runs it).
    void add_process(pid_t pid) override {
        {
            std::lock_guard lock(queue_mutex_);
            attach_queue_.push_back(pid);
        }
        uint64_t one = 1;
        if (wake_fd_.valid()) (void)!::write(wake_fd_.get(), &one, sizeof one);
    }

private:
    Result<void> launch();
    // `after_exec`: refuses (kInLoader) while a thread runs in the dynamic
    // loader, which a program just past execve does before its own code.
    Result<void> attach(pid_t pid, bool after_exec = false);
    Result<std::vector<pid_t>> stop_all(Target& t);
    void release_all(Target& t, const std::vector<pid_t>& tids);
    Result<void> install(Target& t, pid_t tid);
    Result<void> place_new_objects(Target& t, pid_t tid, bool at_start);
    Result<void> watch_dynamic_linker(Target& t, pid_t tid);
    void rescan(Target& t);
    Result<void> setup_returns(Target& t, pid_t tid);
    void insert_unwinder_hooks(Target& t, pid_t tid, const std::vector<Mapping>& maps);
    Result<void> insert_internal_site(Target& t, pid_t tid, uint64_t address, uint32_t flags);
    void restore_return_addresses(Target& t);
    void follow_exec(Target& t);
    void notice_exec(Target& t);
    void attach_after_exec();
    void bank_counters(Target& t);
    void share_semaphores(Target& t);
    Result<void> inject_agent(Target& t, pid_t tid);
    Result<uint64_t> remote_call(Target& t, pid_t tid, uint64_t function, uint64_t a1, uint64_t a2);
    Result<int64_t> remote_syscall(Target& t, pid_t tid, uint64_t gadget, int64_t number, uint64_t a1 = 0,
                                   uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0, uint64_t a5 = 0, uint64_t a6 = 0);
    Result<void> map_scratch(Target& t, pid_t tid);
    Result<uint64_t> allocate(Target& t, pid_t tid, uint64_t near, uint64_t size);
    Result<void> insert_probe(Target& t, pid_t tid, const Mapping& any, const std::vector<Mapping>& maps,
                              size_t probe_index, const std::vector<uint64_t>& rips);
    Result<const std::vector<probe::Site>*> sites_of(size_t probe_index, const std::string& path);
    Result<uint64_t> find_handler(Target& t, const std::vector<Mapping>& maps);
    Result<uint64_t> find_agent_symbol(Target& t, const std::vector<Mapping>& maps, const std::string& name,
                                       bool function);
    Result<void> insert_int3(Target& t, pid_t tid, uint64_t address, std::span<const uint8_t> code, uint32_t index);
    Result<arch::Trampoline> write_trampoline(Target& t, pid_t tid, uint64_t address, const JumpSite& jump);
    Result<void> save_vectors_at(Target& t, pid_t tid, uint64_t address);
    Result<uint64_t> find_dlopen(Target& t, const std::vector<Mapping>& maps);
    void init_region(abi::Header* h);
    void drain(Target& t);
    void finish_target(Target& t);
    void remove_probes(Target& t);
    void note(const std::string& line) {
        if (consumer_) consumer_->on_note(line);
    }

    TraceRequest request_;
    EventConsumer* consumer_ = nullptr;
    probe::Resolver resolver_;
    std::string agent_;
    std::vector<std::unique_ptr<Target>> targets_;
    std::vector<pid_t> ever_traced_;
    std::vector<pid_t> exec_retry_;  // past an execve, in the loader at the last try to attach
    std::map<std::pair<size_t, std::string>, std::vector<probe::Site>> site_cache_;
    mutable std::vector<ProbeStats> stats_;
    std::vector<uint64_t> site_counts_;
    int root_status_ = 0;
    pid_t root_pid_ = 0;
    std::atomic<bool> stop_requested_{false};
    UniqueFd wake_fd_;
    std::mutex queue_mutex_;
    std::vector<pid_t> attach_queue_;  // add_process, for the loop
    TscClock clock_;
};

// ---------------------------------------------------------------- setup

// Return probes in a process with hardware shadow stacks: an int3 site's
// overwritten return address, or one hooked again after a catch, would
// fault (#CP) at its ret; the ptrace engine's instruction mode does not
// touch return addresses. Empty when there is no such conflict.
std::string shadow_stack_conflict(const TraceRequest& request) {
    const bool returns = std::any_of(request.probes.begin(), request.probes.end(),
                                     [](const ProbeSpec& p) { return p.location.is_return; });
    if (!returns) return "";
    for (pid_t pid : request.attach_pids)
        if (proc::thread_has_shadow_stack(pid, pid))
            return "process " + std::to_string(pid) + " has hardware shadow stacks (return probes need the ptrace "
                   "engine's --return-mode=insn)";
    return "";
}

Result<void> InlineEngine::start(const TraceRequest& request, EventConsumer& consumer) {
    request_ = request;
    consumer_ = &consumer;
    if (request.probes.empty()) return Error("no probes given");
    if (request.command.empty() && request.attach_pids.empty() && !request.keep_running)
        return Error("nothing to trace: give a command or -p PID");
    if (std::string why = shadow_stack_conflict(request); !why.empty()) return Error(why);
    for (const auto& spec : request.probes) {
        if (spec.location.is_return && request.return_mode == ReturnMode::Instructions)
            return Error("probe " + spec.name + ": --return-mode=insn needs --engine ptrace (the inline engine uses "
                         "trampolines)");
        ProbeStats s;
        s.probe = spec.name;
        stats_.push_back(s);
        const std::string& bin = spec.location.binary;
        // At attach a path may exist only in the target's mount namespace
        // (probe_wants compares identities through /proc/PID/root).
        if (bin.find('/') != std::string::npos && !request.command.empty()) {
            struct stat st{};
            if (::stat(bin.c_str(), &st) != 0) return errno_error(bin, errno).context("probe " + spec.name);
        }
    }
    agent_ = agent_path();
    if (::access(agent_.c_str(), R_OK) != 0) return errno_error("agent " + agent_, errno);
    clock_.start();
    if (!request.command.empty()) return launch();
    for (pid_t pid : request.attach_pids) UPROBE_CHECK(attach(pid));
    return {};
}

void InlineEngine::init_region(abi::Header* h) {
    h->magic = abi::kMagic;
    h->abi_version = abi::kAbiVersion;
    h->region_size = kLayout.total();
    h->enabled = 1;
    h->site_capacity = kLayout.site_capacity;
    h->program_capacity = kLayout.program_capacity;
    h->ring_count = kLayout.ring_count;
    h->follow_children = request_.follow_children;
    h->no_drop = request_.no_drop;
    h->ring_size = kLayout.ring_size;
    h->sites_offset = kLayout.sites_offset();
    h->programs_offset = kLayout.programs_offset();
    h->rings_offset = kLayout.rings_offset();
    h->ring_stride = kLayout.ring_stride();
    h->int3_offset = kLayout.int3_offset();
    h->int3_capacity = kLayout.int3_capacity;
    h->tracer_pid = static_cast<uint32_t>(::getpid());
}

Result<abi::Header*> map_region(int fd) {
    void* mapped = ::mmap(nullptr, kLayout.total(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mapped == MAP_FAILED) return errno_error("mapping the event region", errno);
    return static_cast<abi::Header*>(mapped);
}

Result<void> InlineEngine::launch() {
    UniqueFd memfd(static_cast<int>(::syscall(SYS_memfd_create, "uprobe-events", MFD_CLOEXEC)));
    if (!memfd.valid()) return errno_error("memfd_create", errno);
    if (::ftruncate(memfd.get(), static_cast<off_t>(kLayout.total())) != 0) return errno_error("sizing the event region", errno);
    auto target = std::make_unique<Target>();
    Target& t = *target;
    UPROBE_TRY(t.region, map_region(memfd.get()));
    init_region(t.region);

    int error_pipe[2];
    if (::pipe2(error_pipe, O_CLOEXEC) != 0) return errno_error("pipe", errno);
    std::vector<char*> argv;
    for (const auto& word : request_.command) argv.push_back(const_cast<char*>(word.c_str()));
    argv.push_back(nullptr);
    std::string fd_value = std::to_string(memfd.get()) + "," + std::to_string(kLayout.total());
    std::string preload = agent_;
    if (const char* old = ::getenv("LD_PRELOAD"); old && *old) preload += std::string(":") + old;
    pid_t group = request_.process_group;
    pid_t pid = ::fork();
    if (pid < 0) return errno_error("fork", errno);
    if (pid == 0) {
        if (group > 0) ::setpgid(0, group);
        ::close(error_pipe[0]);
        ::fcntl(memfd.get(), F_SETFD, 0);
        ::setenv(abi::kRegionFdEnv, fd_value.c_str(), 1);
        ::setenv("LD_PRELOAD", preload.c_str(), 1);
        ::execvp(argv[0], argv.data());
        int err = errno;
        (void)!::write(error_pipe[1], &err, sizeof err);
        ::_exit(127);
    }
    ::close(error_pipe[1]);
    UniqueFd error_fd(error_pipe[0]);
    int err = 0;
    ssize_t n;
    do n = ::read(error_fd.get(), &err, sizeof err);
    while (n < 0 && errno == EINTR);
    if (n == sizeof err) {
        int st;
        while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        return errno_error(request_.command[0], err);
    }
    t.pid = pid;
    t.root = true;
    root_pid_ = pid;
    ever_traced_.push_back(pid);
    auto kill_child = [&](Error e) -> Result<void> {
        ::kill(pid, SIGKILL);
        int st;
        while (::waitpid(pid, &st, __WALL) < 0 && errno == EINTR) {}
        return e;
    };
    // The agent says it is in; a program that exits (or has no dynamic
    // loader to preload it) never does.
    while (!__atomic_load_n(&t.region->agent_ready, __ATOMIC_ACQUIRE)) {
        timespec tick{0, 20000000};
        futex(&t.region->agent_ready, FUTEX_WAIT, 0, &tick);
        int st = 0;
        pid_t got = ::waitpid(pid, &st, WNOHANG);
        if (got == pid) {
            root_status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            return Error(request_.command[0] + " exited before the agent was loaded (a static program? try --engine ptrace)");
        }
        if (stop_requested_.load()) return kill_child(Error("interrupted"));
    }
    t.remote_region = t.region->self;
    struct stat agent_file{};
    if (::stat(agent_.c_str(), &agent_file) == 0) {
        t.agent_inode = agent_file.st_ino;
        t.agent_device = agent_file.st_dev;
    }
    t.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    auto tids = stop_all(t);
    if (!tids) return kill_child(tids.error());
    auto installed = install(t, pid);
    release_all(t, *tids);
    if (!installed) return kill_child(installed.error());
    __atomic_store_n(&t.region->go, 1, __ATOMIC_RELEASE);
    futex(&t.region->go, FUTEX_WAKE, INT32_MAX);
    targets_.push_back(std::move(target));
    return {};
}

// Whether process `pid` runs with our agent preloaded (abi.hpp, kRegionFdEnv).
bool agent_preloaded(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
    const std::string name = std::string(abi::kRegionFdEnv) + "=";
    for (std::string entry; std::getline(in, entry, '\0');)
        if (entry.rfind(name, 0) == 0) return true;
    return false;
}

// Whether one of the stopped threads `tids` of `pid` is in the dynamic
// loader's code: loading our agent there (a dlopen inside the loader's own
// startup) could deadlock on its lock or find its state half made.
bool in_loader(pid_t pid, const std::vector<pid_t>& tids) {
    auto maps = proc::read_maps(pid);
    if (!maps) return true;
    for (pid_t tid : tids) {
        auto regs = proc::get_regs(tid);
        if (!regs) continue;
        for (const auto& m : *maps)
            if (m.exec && regs->rip >= m.start && regs->rip < m.end &&
                m.path.substr(m.path.rfind('/') + 1).rfind("ld-", 0) == 0)
                return true;
    }
    return false;
}

constexpr const char kInLoader[] = "a thread is in the dynamic loader";

Result<void> InlineEngine::attach(pid_t pid, bool after_exec) {
    if (pid <= 0 || ::kill(pid, 0) != 0) {
        if (pid > 0 && errno == EPERM) return Error("not allowed to trace process " + std::to_string(pid));
        return Error("no process with pid " + std::to_string(pid));
    }
    auto target = std::make_unique<Target>();
    Target& t = *target;
    t.pid = pid;
    t.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    UPROBE_TRY(std::vector<pid_t> tids, stop_all(t));
    if (after_exec && in_loader(pid, tids)) {
        release_all(t, tids);
        return Error(kInLoader);
    }
    pid_t tid = std::find(tids.begin(), tids.end(), pid) != tids.end() ? pid : tids.front();
    auto done = [&]() -> Result<void> {
        UPROBE_CHECK(map_scratch(t, tid));
        UPROBE_CHECK(inject_agent(t, tid));
        return install(t, tid);
    }();
    if (!done) {
        remove_probes(t);
        release_all(t, tids);
        if (t.region) ::munmap(t.region, kLayout.total());
        t.region = nullptr;
        return done.error();
    }
    release_all(t, tids);
    note("attached to " + std::to_string(pid) + " (" + std::to_string(tids.size()) + " threads), inline engine");
    t.preloaded = agent_preloaded(pid);
    if (!std::count(ever_traced_.begin(), ever_traced_.end(), pid)) ever_traced_.push_back(pid);
    targets_.push_back(std::move(target));
    return {};
}

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

// Where a thread stopped in code of ours (an earlier session's trampoline
// or int3 copy: anonymous executable memory) will jump next: an int3 copy
// ends with a jump to the instruction after the displaced one, which a jump
// patch of this session must not cover. Direct jumps of the next few
// instructions, up to the first unconditional one.
std::vector<uint64_t> jumps_ahead(pid_t pid, const std::vector<Mapping>& maps, uint64_t rip) {
    std::vector<uint64_t> targets;
    const Mapping* home = nullptr;
    for (const auto& m : maps)
        if (rip >= m.start && rip < m.end) home = &m;
    if (!home || !home->exec || home->inode != 0 || (!home->path.empty() && home->path[0] == '[')) return targets;
    uint8_t code[1024];
    const size_t size = std::min<uint64_t>(sizeof code, home->end - rip);
    if (!proc::read_memory(pid, rip, code, size)) return targets;
    for (size_t at = 0; at < size && targets.size() < 16;) {
        std::span<const uint8_t> rest(code + at, size - at);
        auto insn = arch::decode_one(rest, rip + at);
        auto branch = arch::classify_branch(rest, rip + at);
        if (!insn || !branch || insn->length == 0) break;
        if (branch->is_jump && branch->target) targets.push_back(*branch->target);
        if ((branch->is_jump && !branch->is_conditional) || branch->is_ret) break;
        at += insn->length;
    }
    return targets;
}

// Where a thread running a signal handler resumes when the handler
// returns: the interrupted rip of each signal frame on its stack above rsp
// (arch/x86_64/signal_frame.hpp), up to 1 MiB of it (the used part of a
// stack; an alternate signal stack may sit in a larger mapping). A jump
// patch must not cover it any more than a stopped thread's rip.
// `sigreturn_at` caches which addresses hold rt_sigreturn code. A word
// that only looks like a frame costs a jump at most (the site gets an
// int3).
std::vector<uint64_t> signal_frame_rips(pid_t pid, const std::vector<Mapping>& maps, uint64_t rsp,
                                        std::map<uint64_t, bool>& sigreturn_at) {
    std::vector<uint64_t> rips;
    auto mapping_of = [&](uint64_t address) -> const Mapping* {
        auto it = std::upper_bound(maps.begin(), maps.end(), address,
                                   [](uint64_t a, const Mapping& m) { return a < m.start; });
        return it != maps.begin() && std::prev(it)->covers(address) ? &*std::prev(it) : nullptr;
    };
    const Mapping* stack = mapping_of(rsp);
    if (!stack) return rips;
    std::vector<uint64_t> words(std::min<uint64_t>(1 << 20, stack->end - rsp) / 8);
    if (words.empty() || !proc::read_memory(pid, rsp, words.data(), words.size() * 8)) return rips;
    for (size_t i = 0; i < words.size(); ++i) {
        const Mapping* code = mapping_of(words[i]);
        if (!code || !code->exec) continue;
        auto known = sigreturn_at.find(words[i]);
        if (known == sigreturn_at.end()) {
            uint8_t bytes[arch::kSigreturnCodeSize] = {};
            const bool is = proc::read_memory(pid, words[i], bytes, sizeof bytes) && arch::is_sigreturn_code(bytes);
            known = sigreturn_at.emplace(words[i], is).first;
        }
        const size_t rip_word = i + arch::kSignalFrameRipOffset / 8;
        if (known->second && rip_word < words.size()) rips.push_back(words[rip_word]);
    }
    return rips;
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

Result<uint64_t> runtime_address(elf::Binary& binary, const std::vector<Mapping>& maps, const std::string& path_end,
                                 uint64_t vaddr, dev_t device, ino_t inode) {
    auto offset = binary.vaddr_to_offset(vaddr);
    if (!offset) {
        // .bss: no file bytes; use the load bias of the object's first mapping.
        for (const auto& m : maps) {
            if (m.device != device || m.inode != inode) continue;
            auto mapped_vaddr = binary.offset_to_vaddr(m.file_offset);
            if (mapped_vaddr) return vaddr + (m.start - *mapped_vaddr);
        }
        return Error("no file offset for " + hex(vaddr) + " in " + path_end);
    }
    for (const auto& m : maps) {
        if (m.device != device || m.inode != inode) continue;
        if (*offset >= m.file_offset && *offset < m.file_offset + (m.end - m.start))
            return m.start + (*offset - m.file_offset);
    }
    return Error(path_end + " is not mapped where " + hex(vaddr) + " lives");
}

// Where `site` of the object mapped as `any` is in the process: in one of
// the object's executable mappings.
std::optional<uint64_t> site_address(const probe::Site& site, const std::vector<Mapping>& maps, const Mapping& any) {
    for (const auto& m : maps) {
        if (m.device != any.device || m.inode != any.inode || !m.exec) continue;
        if (site.file_offset >= m.file_offset && site.file_offset < m.file_offset + (m.end - m.start))
            return m.start + (site.file_offset - m.file_offset);
    }
    return std::nullopt;
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

// The fallback where a jump cannot go: int3, handled by the agent's
// SIGTRAP handler in the program itself, resuming at the displaced
// instruction relocated out of line.
Result<void> InlineEngine::insert_int3(Target& t, pid_t tid, uint64_t address, std::span<const uint8_t> code,
                                       uint32_t index) {
    abi::Header* h = t.region;
    if (h->int3_count + 1 >= h->int3_capacity) return Error("too many int3 sites");
    uint8_t current = 0;
    UPROBE_CHECK(proc::read_memory(t.pid, address, &current, 1));
    if (current != code[0]) return Error("code at " + hex(address) + " differs from the file (breakpoint of another debugger?)");
    UPROBE_TRY(uint64_t slot, allocate(t, tid, address, arch::kMaxOutOfLineSize));
    UPROBE_TRY(arch::OutOfLine ool, arch::relocate(code, address, slot));
    UPROBE_CHECK(proc::write_memory(t.pid, slot, ool.code.data(), ool.code.size()));
    abi::Int3Entry* table = abi::int3_table_of(h);
    uint32_t at = abi::int3_slot_of(address, h->int3_capacity);
    while (table[at].address != 0) at = at + 1 == h->int3_capacity ? 0 : at + 1;
    table[at].resume = slot;
    table[at].site = index;
    table[at].removed = 0;
    __atomic_store_n(&table[at].address, address, __ATOMIC_RELEASE);
    h->int3_count++;
    const uint8_t int3 = arch::kBreakpoint;
    UPROBE_CHECK(proc::write_memory(t.pid, address, &int3, 1));
    t.patches.push_back(Patch{address, true, {current}, {int3}});
    return {};
}

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

bool probe_wants(const ProbeSpec& spec, const Target& t, const Mapping& m, const std::string& path) {
    return probe_names_object(spec, t.pid, ObjectKey{t.exe_device, t.exe_inode}, ObjectKey{m.device, m.inode}, path);
}

Result<void> InlineEngine::install(Target& t, pid_t tid) {
    if (!t.scratch) UPROBE_CHECK(map_scratch(t, tid));
    struct stat st{};
    std::string exe = "/proc/" + std::to_string(t.pid) + "/exe";
    if (::stat(exe.c_str(), &st) != 0) return errno_error(exe, errno);
    t.exe_inode = st.st_ino;
    t.exe_device = st.st_dev;
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(t.pid));
    UPROBE_TRY(t.handler, find_handler(t, maps));
    UPROBE_TRY(uint64_t region_word, find_agent_symbol(t, maps, "uprobe_agent_region", false));
    UPROBE_CHECK(proc::write_memory(t.pid, region_word, &t.remote_region, sizeof t.remote_region));
    UPROBE_CHECK(place_new_objects(t, tid, true));
    if (auto watched = watch_dynamic_linker(t, tid); !watched)
        note("dlopen tracking disabled in " + std::to_string(t.pid) + ": " + watched.error().message());
    return {};
}

// Places the probes of every object mapped now and not seen before.
Result<void> InlineEngine::place_new_objects(Target& t, pid_t tid, bool at_start) {
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(t.pid));
    std::vector<uint64_t> rips;
    UPROBE_TRY(std::vector<pid_t> tids, proc::list_threads(t.pid));
    std::map<uint64_t, bool> sigreturn_at;
    for (pid_t each : tids)
        if (auto regs = proc::get_regs(each)) {
            std::vector<uint64_t> resumes = signal_frame_rips(t.pid, maps, regs->rsp, sigreturn_at);
            resumes.push_back(regs->rip);
            for (uint64_t rip : resumes) {
                rips.push_back(rip);
                for (uint64_t next : jumps_ahead(t.pid, maps, rip)) rips.push_back(next);
            }
        }
    std::set<std::pair<dev_t, ino_t>> mapped;
    std::vector<bool> placed(request_.probes.size(), false);
    for (const auto& m : maps) {
        if (m.inode == 0 || !m.exec) continue;
        mapped.insert({m.device, m.inode});
        if (!t.objects.insert({m.device, m.inode}).second) continue;
        std::string path = proc::host_path(t.pid, m.path);
        // Every probe's sites first: a jump patch placed for one probe must
        // not cover the site of another (adjacent SDT nops, say).
        for (size_t i = 0; i < request_.probes.size(); ++i) {
            if (!probe_wants(request_.probes[i], t, m, path)) continue;
            if (auto sites = sites_of(i, path))
                for (const probe::Site& site : **sites)
                    if (auto address = site_address(site, maps, m)) t.planned.insert(*address);
        }
        for (size_t i = 0; i < request_.probes.size(); ++i) {
            if (!probe_wants(request_.probes[i], t, m, path)) continue;
            placed[i] = true;
            auto inserted = insert_probe(t, tid, m, maps, i, rips);
            if (!inserted) {
                Error e = inserted.error().context("probe " + request_.probes[i].name);
                if (at_start) return e;
                note(e.message());
            }
        }
    }
    if (t.return_trampoline) insert_unwinder_hooks(t, tid, maps);  // a library with the C++ unwinder arrived
    // A dlclose'd object may come back (at another address): forget it.
    for (auto it = t.objects.begin(); it != t.objects.end();) it = mapped.count(*it) ? std::next(it) : t.objects.erase(it);
    if (at_start)
        for (size_t i = 0; i < request_.probes.size(); ++i)
            if (!placed[i])
                note("probe " + request_.probes[i].name + ": " + request_.probes[i].location.binary +
                     " is not loaded in " + std::to_string(t.pid) + " yet; pending until it is");
    return {};
}

// r_debug through the main executable's DT_DEBUG (filled in by ld.so before
// any constructor runs), and an internal int3 site at its r_brk, the
// function the dynamic linker calls around every dlopen and dlclose
// (System V gABI "Dynamic Linking", glibc <link.h>).
Result<void> InlineEngine::watch_dynamic_linker(Target& t, pid_t tid) {
    UPROBE_TRY(auto auxv, proc::read_auxv(t.pid));
    uint64_t phdr = auxv[AT_PHDR], phnum = auxv[AT_PHNUM];
    if (!phdr || !phnum || phnum > 256) return {};
    struct Phdr {
        uint32_t type, flags;
        uint64_t offset, vaddr, paddr, filesz, memsz, align;
    };
    std::vector<Phdr> headers(phnum);
    UPROBE_CHECK(proc::read_memory(t.pid, phdr, headers.data(), phnum * sizeof(Phdr)));
    std::optional<uint64_t> bias;
    uint64_t dynamic = 0;
    for (const auto& ph : headers)
        if (ph.type == 6 /* PT_PHDR */) bias = phdr - ph.vaddr;
    if (!bias) return {};
    for (const auto& ph : headers)
        if (ph.type == 2 /* PT_DYNAMIC */) dynamic = *bias + ph.vaddr;
    if (!dynamic) return {};
    uint64_t r_debug = 0;
    for (int i = 0; i < 512 && !r_debug; ++i) {
        uint64_t entry[2];
        UPROBE_CHECK(proc::read_memory(t.pid, dynamic + 16 * i, entry, sizeof entry));
        if (entry[0] == 0) break;
        if (entry[0] == 21 /* DT_DEBUG */) r_debug = entry[1];
    }
    if (!r_debug) return {};
    uint64_t r_brk = 0;
    UPROBE_CHECK(proc::read_memory(t.pid, r_debug + 16, &r_brk, sizeof r_brk));
    if (!r_brk || t.first_site_at.count(r_brk)) return {};
    t.region->r_debug = r_debug;
    return insert_internal_site(t, tid, r_brk, abi::kSiteNotify);
}

// An engine-internal int3 site (no probe of the user's) with `flags`.
Result<void> InlineEngine::insert_internal_site(Target& t, pid_t tid, uint64_t address, uint32_t flags) {
    abi::Header* h = t.region;
    if (h->site_count >= h->site_capacity) return Error("too many probe sites");
    uint8_t code[arch::kMaxInstructionLength + 1];
    UPROBE_CHECK(proc::read_memory(t.pid, address, code, sizeof code));
    const uint32_t index = h->site_count;
    abi::Site& slot = abi::sites_of(h)[index];
    std::memset(&slot, 0, sizeof slot);
    slot.probe_id = abi::kInternalProbe;
    slot.flags = flags;
    slot.address = address;
    SiteInfo info;
    info.probe_id = abi::kInternalProbe;
    info.address = address;
    t.sites.push_back(std::move(info));
    __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
    UPROBE_CHECK(insert_int3(t, tid, address, code, index));
    t.first_site_at[address] = index;
    return {};
}

// The return trampolines lie side by side (setup_returns): the one for
// overwritten return addresses, then those the jump sites' landings go to
// (arch::ReturnExit::kRet), without and with the vector registers saved.
constexpr uint64_t kReturnCodeSize = 1024;
uint64_t landings_go_to(uint64_t return_trampoline, bool vectors) {
    return return_trampoline + (vectors ? 2 : 1) * kReturnCodeSize;
}

// Makes and writes the trampoline of a jump site (not the jump itself).
Result<arch::Trampoline> InlineEngine::write_trampoline(Target& t, pid_t tid, uint64_t address, const JumpSite& jump) {
    UPROBE_TRY(uint64_t at, allocate(t, tid, address, 1024));
    arch::TrampolineRequest r;
    r.site = address;
    r.original = jump.code;
    r.displaced = jump.displaced;
    r.address = at;
    r.handler = t.handler;
    r.argument = t.remote_region;
    r.index = jump.first_site;
    r.save_vector_registers = jump.vectors;
    r.return_code = t.return_trampoline ? landings_go_to(t.return_trampoline, jump.vectors) : 0;
    if (request_.count_only) {
        // Count-only: a lock inc in the trampoline, no handler call.
        r.counter = t.remote_region + t.region->sites_offset + uint64_t{jump.first_site} * sizeof(abi::Site) +
                    offsetof(abi::Site, hits);
        t.counting_sites.insert(jump.first_site);
    }
    UPROBE_TRY(arch::Trampoline trampoline, arch::make_trampoline(r));
    if (trampoline.code.size() > 1024) return Error("trampoline too large");
    UPROBE_CHECK(proc::write_memory(t.pid, at, trampoline.code.data(), trampoline.code.size()));
    return trampoline;
}

// A probe joining a jump site needs the vector registers, which its
// trampoline does not save: the jump goes to a new trampoline that does
// (threads are stopped; one inside the old trampoline finishes there, as
// it stays mapped, and so do returns to its landing).
Result<void> InlineEngine::save_vectors_at(Target& t, pid_t tid, uint64_t address) {
    JumpSite& jump = t.jumps.at(address);
    jump.vectors = true;
    UPROBE_TRY(arch::Trampoline trampoline, write_trampoline(t, tid, address, jump));
    UPROBE_CHECK(proc::write_memory(t.pid, address, trampoline.patch.data(), trampoline.patch.size()));
    for (Patch& patch : t.patches)
        if (patch.address == address && !patch.int3) patch.patched = trampoline.patch;
    jump.landing = trampoline.landing;
    for (uint32_t i = jump.first_site;; i = abi::sites_of(t.region)[i].next - 1) {
        abi::Site& site = abi::sites_of(t.region)[i];
        if (site.flags & abi::kSiteReturnEntry) site.landing = trampoline.landing;
        if (!site.next) break;
    }
    return {};
}

// Return probes: the return trampolines (once per process; any address,
// as a ret or an indirect jump reaches them) and the hooks on the C++
// unwinder. One is for return addresses overwritten on the stack (int3
// sites), the other for the jump sites' landings (arch::ReturnExit).
Result<void> InlineEngine::setup_returns(Target& t, pid_t tid) {
    if (t.return_trampoline) return {};
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(t.pid));
    UPROBE_TRY(uint64_t handler, find_agent_symbol(t, maps, abi::kReturnHandlerSymbol, true));
    UPROBE_TRY(t.shadow_registry, find_agent_symbol(t, maps, abi::kShadowRegistrySymbol, false));
    UPROBE_TRY(uint64_t at, allocate(t, tid, t.handler, 3 * kReturnCodeSize));
    auto put = [&](uint64_t address, arch::ReturnExit exit, bool vectors) -> Result<void> {
        std::vector<uint8_t> code = arch::make_return_trampoline(address, handler, t.remote_region, exit, vectors);
        if (code.size() > kReturnCodeSize) return Error("return trampoline too large");
        return proc::write_memory(t.pid, address, code.data(), code.size());
    };
    // An overwritten address may be any probe's, so that one saves xmm.
    UPROBE_CHECK(put(at, arch::ReturnExit::kJump, true));
    UPROBE_CHECK(put(landings_go_to(at, false), arch::ReturnExit::kRet, false));
    UPROBE_CHECK(put(landings_go_to(at, true), arch::ReturnExit::kRet, true));
    t.return_trampoline = at;
    __atomic_store_n(&t.region->return_trampoline, at, __ATOMIC_RELEASE);
    insert_unwinder_hooks(t, tid, maps);
    return {};
}

// The C++ unwinder reads return addresses from the stack, and the
// trampoline's has no unwind info (std::terminate): its entry points
// (libgcc_s, or the executable when linked statically) make the agent put
// the originals back, and the catch (libstdc++'s __cxa_begin_catch) takes
// the frames that survived again.
void InlineEngine::insert_unwinder_hooks(Target& t, pid_t tid, const std::vector<Mapping>& maps) {
    static const std::pair<const char*, uint32_t> hooks[] = {
        {"_Unwind_RaiseException", abi::kSiteUnwind}, {"_Unwind_Resume", abi::kSiteUnwind},
        {"_Unwind_ForcedUnwind", abi::kSiteUnwind},   {"_Unwind_Resume_or_Rethrow", abi::kSiteUnwind},
        {"__cxa_begin_catch", abi::kSiteCatch},
    };
    for (const auto& m : maps) {
        if (m.inode == 0 || !m.exec) continue;
        if (!t.unwinder_scanned.insert({m.device, m.inode}).second) continue;
        std::string base = m.path.substr(m.path.rfind('/') + 1);
        bool exe = m.device == t.exe_device && m.inode == t.exe_inode;
        if (!(exe || base.rfind("libgcc_s", 0) == 0 || base.rfind("libstdc++", 0) == 0)) continue;
        std::string path = proc::host_path(t.pid, m.path);
        auto binary = resolver_.binary(path);
        if (!binary) continue;
        for (const auto& [name, flags] : hooks) {
            for (const auto* symbol : (*binary)->find_functions(name)) {
                if (symbol->name != name) continue;
                auto address = runtime_address(**binary, maps, path, symbol->vaddr, m.device, m.inode);
                if (!address || t.first_site_at.count(*address)) continue;
                if (auto inserted = insert_internal_site(t, tid, *address, flags); !inserted)
                    note("return probes: exceptions through probed functions may fail: " + inserted.error().message());
            }
        }
    }
}

// Detach with frames live: every hooked return address (the return
// trampoline's, or a landing) goes back on the stack it came from
// (threads stopped). The shadow stacks stay as they are:
// a thread stopped inside the return trampoline still needs its frame. An
// address left in place is still safe: the trampoline and the agent stay,
// and a return through them resumes where it should.
void InlineEngine::restore_return_addresses(Target& t) {
    if (!t.return_trampoline || !t.shadow_registry) return;
    std::vector<uint64_t> stacks(abi::kShadowStacks);
    if (!proc::read_memory(t.pid, t.shadow_registry, stacks.data(), stacks.size() * sizeof(uint64_t))) return;
    for (uint64_t stack : stacks) {
        if (!stack) continue;
        uint32_t header[2] = {0, 0};  // owner_tid, depth
        if (!proc::read_memory(t.pid, stack, header, sizeof header)) continue;
        // A dead thread's frames are stale: its stack may be another
        // thread's now (glibc reuses thread stacks).
        const std::string task = "/proc/" + std::to_string(t.pid) + "/task/" + std::to_string(header[0]);
        if (header[0] == 0 || ::access(task.c_str(), F_OK) != 0) continue;
        const uint32_t depth = std::min(header[1], abi::kShadowDepth);
        std::vector<abi::ShadowFrame> frames(depth);
        if (depth == 0 ||
            !proc::read_memory(t.pid, stack + offsetof(abi::ShadowStack, frames), frames.data(),
                               depth * sizeof(abi::ShadowFrame)))
            continue;
        for (uint32_t i = 0; i < depth; ++i) {
            if (i > 0 && frames[i - 1].slot == frames[i].slot) continue;  // not the bottom of its chain
            uint64_t current = 0;
            if (!proc::read_memory(t.pid, frames[i].slot, &current, sizeof current)) continue;
            bool ours = current == t.return_trampoline;
            for (uint32_t j = i; j < depth && frames[j].slot == frames[i].slot; ++j) ours |= current == frames[j].landing;
            if (ours) (void)proc::write_memory(t.pid, frames[i].slot, &frames[i].original, sizeof frames[i].original);
        }
    }
}

// The agent waits at the rendezvous: stop everything, place the probes of
// the objects that came, let everything go, and tell the agent.
void InlineEngine::rescan(Target& t) {
    uint32_t seq = __atomic_load_n(&t.region->notify_seq, __ATOMIC_ACQUIRE);
    if (seq == t.acked) return;
    auto tids = stop_all(t);
    if (tids) {
        pid_t tid = std::find(tids->begin(), tids->end(), t.pid) != tids->end() ? t.pid : tids->front();
        if (auto placed = place_new_objects(t, tid, false); !placed) note(placed.error().message());
        release_all(t, *tids);
    }
    t.acked = seq;
    __atomic_store_n(&t.region->notify_ack, seq, __ATOMIC_RELEASE);
    futex(&t.region->notify_ack, FUTEX_WAKE, INT32_MAX);
}

// The sites of probe `probe_index` in the object at `path` (resolved once).
Result<const std::vector<probe::Site>*> InlineEngine::sites_of(size_t probe_index, const std::string& path) {
    auto cached = site_cache_.find({probe_index, path});
    if (cached == site_cache_.end()) {
        UPROBE_TRY(std::vector<probe::Site> sites, resolver_.resolve(request_.probes[probe_index], path));
        cached = site_cache_.emplace(std::make_pair(probe_index, path), std::move(sites)).first;
    }
    return &cached->second;
}

Result<void> InlineEngine::insert_probe(Target& t, pid_t tid, const Mapping& any, const std::vector<Mapping>& maps,
                                        size_t probe_index, const std::vector<uint64_t>& rips) {
    const ProbeSpec& spec = request_.probes[probe_index];
    std::string path = proc::host_path(t.pid, any.path);
    UPROBE_TRY(const std::vector<probe::Site>* sites, sites_of(probe_index, path));
    UPROBE_TRY(elf::Binary * binary, resolver_.binary(path));
    abi::Header* h = t.region;
    size_t int3_sites = 0;
    auto raise_semaphore = [&](const probe::Site& site, uint64_t bias) -> Result<void> {
        if (!site.marker || !site.marker->semaphore_vaddr) return {};
        uint64_t semaphore = site.marker->semaphore_vaddr + bias;
        if (t.semaphores.count(semaphore)) return {};  // one increment per process, like the kernel's ref_ctr
        uint16_t value = 0;
        UPROBE_CHECK(proc::read_memory(t.pid, semaphore, &value, sizeof value).context("SDT semaphore"));
        ++value;
        UPROBE_CHECK(proc::write_memory(t.pid, semaphore, &value, sizeof value).context("SDT semaphore"));
        t.semaphores[semaphore]++;
        share_semaphores(t);
        return {};
    };
    // Before any site: a jump site's trampoline can call the displaced
    // instructions for a return probe only if made knowing where returns go.
    const bool any_returns = std::any_of(request_.probes.begin(), request_.probes.end(),
                                         [](const ProbeSpec& p) { return p.location.is_return; });
    if (any_returns && !request_.count_only) UPROBE_CHECK(setup_returns(t, tid));
    SitePlacement placement(spec);
    for (const probe::Site& site : *sites) {
        auto placed = [&]() -> Result<void> {
            auto found = site_address(site, maps, any);
            if (!found) return Error("address " + hex(site.vaddr) + " of " + any.path + " is not mapped executable");
            const uint64_t address = *found;
            const std::string where = "at " + hex(site.vaddr) + (site.function.empty() ? "" : " (" + site.function + ")");
            SiteInfo info;
            info.probe_id = static_cast<uint32_t>(probe_index);
            info.address = address;
            UPROBE_TRY(info.args, compile_site_args(spec, site, address, *binary, resolver_, path));
            bool needs_fpregs = false;
            std::vector<const probe::FetchProgram*> leaves;
            for (const auto& program : info.args) probe::leaf_programs(program, leaves);
            if (leaves.size() > abi::kMaxArgs)
                return Error("probe " + spec.name + " " + where + ": " + std::to_string(leaves.size()) +
                             " values to fetch; the inline engine takes at most " + std::to_string(abi::kMaxArgs));
            for (const probe::FetchProgram* leaf : leaves) {
                needs_fpregs |= leaf->needs_fpregs;
                info.programs.push_back(*leaf);
            }
            // A return probe hooks the return at the entry; counting needs
            // only the entries.
            const bool hooks_return = spec.location.is_return && !request_.count_only;
            // @entry values a shadow frame cannot keep (strings, or too
            // many) go into an entry record instead.
            bool entry_record = false;
            size_t at_entry = 0;
            if (hooks_return) {
                for (const probe::FetchProgram& p : info.programs) {
                    if (!p.at_entry) continue;
                    ++at_entry;
                    entry_record |= p.format == probe::FetchFormat::String;
                }
                entry_record |= at_entry > abi::kMaxEntryValues;
                UPROBE_CHECK(setup_returns(t, tid));
            }
            if (h->site_count >= h->site_capacity || h->program_count + info.programs.size() > h->program_capacity)
                return Error("too many probe sites for the inline engine");
            const uint32_t index = h->site_count;
            abi::Site& slot = abi::sites_of(h)[index];
            std::memset(&slot, 0, sizeof slot);
            slot.probe_id = info.probe_id;
            slot.flags = request_.count_only ? uint32_t{abi::kSiteCountOnly}
                         : request_.registers ? uint32_t{abi::kSiteRegisters}
                                              : 0u;
            if (hooks_return) slot.flags |= abi::kSiteReturnEntry;
            if (entry_record) slot.flags |= abi::kSiteEntryRecord;
            else if (at_entry) slot.flags |= abi::kSiteEntryValues;
            slot.address = address;
            slot.first_program = h->program_count;
            slot.arg_count = static_cast<uint32_t>(info.programs.size());
            slot.string_max = static_cast<uint32_t>(request_.string_max);
            for (size_t a = 0; a < info.programs.size(); ++a)
                abi::programs_of(h)[h->program_count + a] = info.programs[a];

            if (auto existing = t.first_site_at.find(address); existing != t.first_site_at.end()) {
                // A second probe at a patched address joins its chain.
                if (t.counting_sites.count(existing->second)) info.hits_from = existing->second;
                if (auto jump = t.jumps.find(address); jump != t.jumps.end()) {
                    if (needs_fpregs && !jump->second.vectors && !request_.count_only)
                        UPROBE_CHECK(save_vectors_at(t, tid, address).context(where));
                    if (hooks_return) slot.landing = jump->second.landing;
                }
                uint32_t last = existing->second;
                while (abi::sites_of(h)[last].next) last = abi::sites_of(h)[last].next - 1;
                h->program_count += static_cast<uint32_t>(info.programs.size());
                t.sites.push_back(std::move(info));
                __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
                abi::sites_of(h)[last].next = index + 1;
            } else {
                // A jump where it is safe (see arch/x86_64/trampoline.hpp),
                // else an int3 handled in the program.
                const InlineSitePlan plan = plan_inline_site(*binary, site);
                std::string no_jump = plan.no_jump;
                const size_t displaced = plan.displaced;
                if (no_jump.empty()) {
                    // The nearest sites after and before (a map: tens of thousands of sites).
                    auto after = t.first_site_at.upper_bound(address);
                    if (after != t.first_site_at.end() && after->first < address + displaced)
                        no_jump = "too close to another probe site";
                    if (auto before = t.first_site_at.lower_bound(address); before != t.first_site_at.begin() &&
                                                                            std::prev(before)->first + 5 > address)
                        no_jump = "too close to another probe site";
                    if (auto next = t.planned.upper_bound(address);
                        next != t.planned.end() && *next < address + displaced)
                        no_jump = "another probe's site is in the bytes a jump would take";
                    for (uint64_t rip : rips)
                        if (rip > address && rip < address + displaced) no_jump = "a thread is stopped inside the bytes";
                    if (auto e = t.earlier_int3.lower_bound(address);
                        e != t.earlier_int3.end() && *e < address + displaced)
                        no_jump = "an earlier session's int3 site is in the bytes (a thread may still resume from it)";
                }
                if (!no_jump.empty()) {
                    UPROBE_TRY(auto code, binary->code(site.vaddr, arch::kMaxInstructionLength + 1));
                    h->program_count += static_cast<uint32_t>(info.programs.size());
                    t.sites.push_back(std::move(info));
                    __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
                    UPROBE_CHECK(insert_int3(t, tid, address, code, index).context(where));
                    t.first_site_at[address] = index;
                    ++int3_sites;
                    note("probe " + spec.name + " " + where + ": int3 site (no jump: " + no_jump + ")");
                    stats_[probe_index].sites++;
                    UPROBE_CHECK(raise_semaphore(site, address - site.vaddr));
                    return {};
                }
                UPROBE_TRY(auto code, binary->code(site.vaddr, displaced + arch::kMaxInstructionLength));
                std::vector<uint8_t> original(code.begin(), code.begin() + static_cast<long>(displaced));
                std::vector<uint8_t> current(displaced);
                UPROBE_CHECK(proc::read_memory(t.pid, address, current.data(), current.size()));
                if (current != original)
                    return Error("code " + where + " differs from the file (breakpoint of another debugger?)");
                JumpSite jump{std::vector<uint8_t>(code.begin(), code.end()), displaced, index, needs_fpregs, 0};
                UPROBE_TRY(arch::Trampoline trampoline, write_trampoline(t, tid, address, jump).context(where));
                if (hooks_return) slot.landing = trampoline.landing;
                jump.landing = trampoline.landing;
                h->program_count += static_cast<uint32_t>(info.programs.size());
                t.sites.push_back(std::move(info));
                __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
                UPROBE_CHECK(proc::write_memory(t.pid, address, trampoline.patch.data(), trampoline.patch.size()));
                t.patches.push_back(Patch{address, false, original, trampoline.patch});
                t.jumps[address] = std::move(jump);
                t.first_site_at[address] = index;
            }
            stats_[probe_index].sites++;
            UPROBE_CHECK(raise_semaphore(site, address - site.vaddr));
            return {};
        }();
        UPROBE_CHECK(placement.site(std::move(placed), [this](const std::string& line) { note(line); }));
    }
    UPROBE_CHECK(placement.finish());
    const size_t count = placement.placed();
    note("probe " + spec.name + ": " + std::to_string(count) + " site" + (count == 1 ? "" : "s") + " in " + any.path +
         " of " + std::to_string(t.pid) + " (" + std::to_string(count - int3_sites) + " jump, " +
         std::to_string(int3_sites) + " int3)");
    return {};
}

// ---------------------------------------------------------------- events

// Serves a string's bytes from a record to probe::evaluate.
class RecordMemory final : public probe::MemoryReader {
public:
    RecordMemory(const uint8_t* bytes, size_t length, bool terminated)
        : bytes_(bytes), length_(length), terminated_(terminated) {}
    size_t read(uint64_t, void* out, size_t size) override {
        size_t n = std::min(size, length_);
        std::memcpy(out, bytes_, n);
        if (terminated_ && n < size) {
            static_cast<uint8_t*>(out)[n] = 0;
            ++n;
        }
        return n;
    }

private:
    const uint8_t* bytes_;
    size_t length_;
    bool terminated_;
};

// One recorded value (an ArgHeader and its bytes at `at`, `left` of them
// to go), formatted as `program` asks; moves `at` past it.
Value decode_recorded(const probe::FetchProgram& program, const probe::FetchContext& leaf_context, const uint8_t*& at,
                      const uint8_t* end, uint32_t& left, const user_regs_struct& regs) {
    if (left == 0 || at + sizeof(abi::ArgHeader) > end) return Value::make_error("not recorded");
    --left;
    const auto* arg = reinterpret_cast<const abi::ArgHeader*>(at);
    at += sizeof(abi::ArgHeader);
    if (arg->kind == abi::kArgNumber && probe::is_number(program.format))
        return probe::number_value(program, arg->value);
    probe::FetchProgram constant = program;
    constant.step_count = 1;
    constant.steps[0] = probe::FetchStep{probe::FetchOp::LoadConst, 0, 8, 1, static_cast<int64_t>(arg->value)};
    RecordMemory none(nullptr, 0, false);
    switch (arg->kind) {
    case abi::kArgBadAddress: return Value::make_error("bad address " + hex(arg->value));
    case abi::kArgString:
    case abi::kArgTruncatedString: {
        uint32_t length = std::min<uint64_t>(arg->length, static_cast<uint64_t>(end - at));
        RecordMemory memory(at, length, arg->kind == abi::kArgString);
        at += (length + 7) & ~uint32_t{7};
        return probe::evaluate(constant, regs, memory, leaf_context);
    }
    case abi::kArgNeedsTracer:
        if (program.format == probe::FetchFormat::Comm || program.format == probe::FetchFormat::Pid ||
            program.format == probe::FetchFormat::Tid || program.format == probe::FetchFormat::Duration)
            return probe::evaluate(program, regs, none, leaf_context);
        if (program.at_entry) return Value::make_error("entry value not recorded");
        return Value::make_error("floating-point registers unavailable");
    default: return probe::evaluate(constant, regs, none, leaf_context);
    }
}

void InlineEngine::drain(Target& t) {
    abi::Header* h = t.region;
    if (!h) return;
    Event event;
    user_regs_struct regs{};
    bool regs_filled = false;  // regs hold a record's registers (else zero but rip)
    uint64_t consumed = 0;
    clock_.calibrate();
    const uint32_t rings = std::min(__atomic_load_n(&h->rings_used, __ATOMIC_ACQUIRE), h->ring_count);
    for (uint32_t i = 0; i < rings; ++i) {
        abi::RingControl* r = abi::ring_of(h, i);
        uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        uint64_t tail = r->tail;
        const uint8_t* data = abi::ring_data(r);
        while (tail < head) {
            const auto* rec = reinterpret_cast<const abi::RecordHeader*>(data + tail % h->ring_size);
            if (rec->size < 8 || rec->size > h->ring_size) break;  // corrupt: stop reading this ring
            const bool is_return = rec->kind == abi::kRecordReturn;
            if (rec->kind == abi::kRecordEntry && rec->size >= sizeof(abi::RecordHeader) + sizeof(uint64_t)) {
                const auto* at = reinterpret_cast<const uint8_t*>(rec) + sizeof(abi::RecordHeader);
                const uint64_t seq = *reinterpret_cast<const uint64_t*>(at);
                at += sizeof(uint64_t);
                const pid_t tid = static_cast<pid_t>(rec->tid);
                auto [kept, added] = t.entry_values.try_emplace({tid, seq});
                kept->second.bytes.assign(at, reinterpret_cast<const uint8_t*>(rec) + rec->size);
                kept->second.count = rec->arg_count;
                // Frames left by longjmp never return: past a shadow
                // stack's depth, the oldest entry of the thread goes.
                if (added && ++t.entry_values_of[tid] > abi::kShadowDepth) {
                    t.entry_values.erase(t.entry_values.lower_bound({tid, 0}));
                    --t.entry_values_of[tid];
                }
            }
            // After a detach was asked for, nothing more of this process
            // is delivered (or counted): its hits end there, as under ptrace.
            if ((rec->kind == abi::kRecordHit || is_return) && rec->site < t.sites.size() &&
                t.sites[rec->site].probe_id < request_.probes.size() && !t.release_requested) {
                SiteInfo& site = t.sites[rec->site];
                const ProbeSpec& spec = request_.probes[site.probe_id];
                __atomic_store_n(&site.delivered, site.delivered + 1, __ATOMIC_RELAXED);  // stats() may read it
                event.probe_id = site.probe_id;
                event.probe = spec.name;
                event.pid = static_cast<pid_t>(rec->pid);
                if (event.pid != t.pid && !std::count(ever_traced_.begin(), ever_traced_.end(), event.pid))
                    ever_traced_.push_back(event.pid);  // a followed child (fork keeps the shared region)
                event.tid = static_cast<pid_t>(rec->tid);
                // A recalibration may move a conversion by a few ns either
                // way; a thread's events keep their order.
                Target::ThreadSeen& thread = t.threads[event.tid];
                event.ts_ns = thread.last_ts = std::max(thread.last_ts, clock_.to_ns(rec->tsc));
                if (thread.comm.empty()) thread.comm = proc::read_comm(event.pid, event.tid);
                event.comm = thread.comm;
                event.addr = site.address;
                event.is_return = is_return;
                const uint8_t* at = reinterpret_cast<const uint8_t*>(rec) + sizeof(abi::RecordHeader);
                const uint8_t* end = reinterpret_cast<const uint8_t*>(rec) + rec->size;
                uint32_t left = rec->arg_count;
                probe::FetchContext context;
                context.pid = event.pid;
                context.tid = event.tid;
                context.comm = event.comm;
                context.string_max = request_.string_max;
                event.duration_ns = 0;
                if (is_return && at + sizeof(uint64_t) <= end) {
                    uint64_t entry_tsc = *reinterpret_cast<const uint64_t*>(at);
                    at += sizeof(uint64_t);
                    event.duration_ns = clock_.interval_ns(rec->tsc > entry_tsc ? rec->tsc - entry_tsc : 0);
                    context.duration_ns = event.duration_ns;
                }
                // The @entry values of a kSiteEntryRecord frame: its entry's
                // record, and with it those of frames entered later (they
                // returned, or were left by longjmp or an exception).
                const bool entry_record = abi::sites_of(h)[rec->site].flags & abi::kSiteEntryRecord;
                Target::EntryValues entry_values;
                bool have_entry_values = false;
                if (is_return && entry_record && at + sizeof(uint64_t) <= end) {
                    const uint64_t seq = *reinterpret_cast<const uint64_t*>(at);
                    at += sizeof(uint64_t);
                    const pid_t tid = static_cast<pid_t>(rec->tid);
                    auto first = t.entry_values.lower_bound({tid, seq});
                    if (first != t.entry_values.end() && first->first == std::make_pair(tid, seq)) {
                        entry_values = std::move(first->second);
                        have_entry_values = true;
                    }
                    const auto last = t.entry_values.lower_bound({tid + 1, 0});
                    t.entry_values_of[tid] -= static_cast<size_t>(std::distance(first, last));
                    t.entry_values.erase(first, last);
                }
                // Zeroed only after a record that filled them: clearing 216
                // bytes per event was a tenth of the consumer's time.
                if ((abi::sites_of(h)[rec->site].flags & abi::kSiteRegisters) && at + sizeof regs <= end) {
                    static_assert(sizeof(user_regs_struct) == abi::kFrameRegisters * 8);
                    std::memcpy(&regs, at, sizeof regs);
                    at += sizeof regs;
                    regs_filled = true;
                } else if (regs_filled) {
                    regs = user_regs_struct{};
                    regs_filled = false;
                }
                // The agent ran each leaf program in the program and recorded
                // its result; here they are formatted, in the same order.
                // @entry values kept in an entry record come from there.
                const uint8_t* entry_at = entry_values.bytes.data();
                const uint8_t* entry_end = entry_at + entry_values.bytes.size();
                uint32_t entry_left = entry_values.count;
                auto recorded = [&](const probe::FetchProgram& program, const probe::FetchContext& leaf_context) -> Value {
                    if (!program.at_entry || !entry_record)
                        return decode_recorded(program, leaf_context, at, end, left, regs);
                    // The return record's own value is a placeholder.
                    if (left == 0 || at + sizeof(abi::ArgHeader) > end) return Value::make_error("not recorded");
                    --left;
                    at += sizeof(abi::ArgHeader);
                    if (!have_entry_values) return Value::make_error("entry values lost (a full ring dropped them)");
                    return decode_recorded(program, leaf_context, entry_at, entry_end, entry_left, regs);
                };
                // A plain argument's value goes into the slot the last event
                // left (its name and text keep their storage); a DWARF one
                // may be several values.
                size_t used = 0;
                for (size_t a = 0; a < site.args.size() && a < spec.args.size(); ++a) {
                    if (site.args[a].is_dwarf) {
                        event.args.resize(used);
                        probe::evaluate_arg(spec.args[a].name, site.args[a], recorded, context, event.args);
                        used = event.args.size();
                        continue;
                    }
                    if (used == event.args.size()) event.args.emplace_back();
                    EventArg& slot = event.args[used++];
                    slot.name = spec.args[a].name;
                    slot.value = recorded(site.args[a].plain, context);
                }
                event.args.resize(used);
                // Registers are in the record when asked for (TraceRequest::
                // registers), else consumers see rip only; rip is the probe's
                // address either way. Hold needs a stopped thread, which this
                // engine never has: it acts as Continue (the API refuses a
                // hold callback with this engine). Detach takes the probes
                // out after this drain (run).
                regs.rip = site.address;
                if (consumer_->on_hit(event, regs) == HitAction::Detach) {
                    if (event.pid == t.pid) t.release_requested = true;
                    else if (t.child_detach_noted.insert(event.pid).second)
                        note("process " + std::to_string(event.pid) +
                             ": a followed child shares its parent's probes in the inline engine and stays traced");
                }
            }
            tail += rec->size;
            // Room back to the writer as we go, not after the whole ring:
            // a writer waiting for room (--no-drop) runs beside us.
            if (++consumed % 256 == 0) __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
        }
        __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
    }
}

// Site i's hits: counted in the program (count-only sites), or records
// drained plus records dropped (abi.hpp, Site::hits).
uint64_t site_hits(const Target& t, size_t i) {
    const abi::Site* sites = abi::sites_of(t.region);
    const size_t counted = t.sites[i].hits_from >= 0 ? static_cast<size_t>(t.sites[i].hits_from) : i;
    return __atomic_load_n(&sites[counted].hits, __ATOMIC_RELAXED) + __atomic_load_n(&t.sites[i].delivered, __ATOMIC_RELAXED) +
           (sites[i].flags & abi::kSiteCountOnly ? 0 : __atomic_load_n(&sites[i].dropped, __ATOMIC_RELAXED));
}

std::vector<ProbeStats> InlineEngine::stats() const {
    std::vector<ProbeStats> out = stats_;
    for (const auto& t : targets_) {
        if (!t->region) continue;
        for (size_t i = 0; i < t->sites.size(); ++i) {
            if (t->sites[i].probe_id >= out.size()) continue;  // internal
            out[t->sites[i].probe_id].hits += site_hits(*t, i);
            out[t->sites[i].probe_id].dropped += __atomic_load_n(&abi::sites_of(t->region)[i].dropped, __ATOMIC_RELAXED);
        }
    }
    return out;
}

// ---------------------------------------------------------------- loop

Result<int> InlineEngine::run() {
    uint64_t rounds = 0;
    while (!stop_requested_.load()) {
        std::vector<pid_t> arrived;
        {
            std::lock_guard lock(queue_mutex_);
            arrived.swap(attach_queue_);
        }
        for (pid_t pid : arrived) {
            bool known = false;
            for (const auto& t : targets_) known |= t->pid == pid && t->alive;
            if (known) continue;
            if (auto attached = attach(pid); !attached) note(attached.error().message());
        }
        std::vector<pollfd> fds;
        fds.push_back({wake_fd_.get(), POLLIN, 0});
        std::vector<Target*> polled;
        for (auto& t : targets_) {
            if (!t->alive || !t->pidfd.valid()) continue;
            fds.push_back({t->pidfd.get(), POLLIN, 0});
            polled.push_back(t.get());
        }
        const bool waiting = polled.empty() && exec_retry_.empty();  // nothing to trace or to attach to
        if (waiting && !request_.keep_running) break;
        // Records are drained every millisecond; with nothing traced (global
        // mode), sleep until add_process or stop() writes the eventfd.
        int ready = ::poll(fds.data(), fds.size(), waiting ? -1 : 1);
        if (fds[0].revents & POLLIN) {
            uint64_t count;
            (void)!::read(wake_fd_.get(), &count, sizeof count);
        }
        std::vector<std::pair<abi::Header*, uint32_t>> adoptions;  // region, pending slot
        for (auto& t : targets_) {
            drain(*t);
            if (t->alive && t->region) {
                follow_exec(*t);
                rescan(*t);
                for (uint32_t i = 0; i < abi::kMaxPendingChildren; ++i)
                    if (__atomic_load_n(&t->region->pending_children[i], __ATOMIC_ACQUIRE))
                        adoptions.emplace_back(t->region, i);
            }
        }
        // Detaches the consumer asked for: probes out, the process runs on
        // untraced (a launched one is still waited for, for its status).
        for (auto& t : targets_) {
            if (!t->release_requested || !t->region) continue;
            finish_target(*t);
            if (t->root && ::kill(t->pid, 0) == 0) t->alive = true;
            note("detached from " + std::to_string(t->pid) + " as the consumer asked");
            consumer_->on_released(t->pid, false);
        }
        // Followed children that ran execve: a session of their own each
        // (attach reuses the agent their new program preloaded).
        for (auto [region, slot] : adoptions) {
            uint32_t* word = &region->pending_children[slot];
            const auto child = static_cast<pid_t>(__atomic_load_n(word, __ATOMIC_ACQUIRE));
            if (auto attached = attach(child); !attached)
                note("after exec in child " + std::to_string(child) + ": " + attached.error().message());
            __atomic_store_n(word, 0, __ATOMIC_RELEASE);
            futex(word, FUTEX_WAKE, INT32_MAX);
        }
        if (++rounds % 100 == 0) {  // about every 100 ms
            for (size_t i = 0; i < targets_.size(); ++i) notice_exec(*targets_[i]);
            attach_after_exec();
        }
        if (ready <= 0) continue;
        for (size_t i = 0; i < polled.size(); ++i) {
            if (!(fds[i + 1].revents & POLLIN)) continue;
            Target& t = *polled[i];
            t.alive = false;
            if (t.root) {
                int status = 0;
                pid_t got;
                do got = ::waitpid(t.pid, &status, 0);
                while (got < 0 && errno == EINTR);
                if (got == t.pid) root_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            drain(t);
        }
    }
    for (auto& t : targets_) finish_target(*t);
    return root_status_;
}

// The raised semaphores, for the agent's fork handler (abi.hpp).
void InlineEngine::share_semaphores(Target& t) {
    abi::Header* h = t.region;
    if (!h) return;
    uint32_t n = 0;
    for (const auto& [address, raised] : t.semaphores) {
        if (n == abi::kMaxSemaphores) break;
        h->semaphores[n++] = abi::SemaphoreEntry{address, raised};
    }
    __atomic_store_n(&h->semaphore_count, n, __ATOMIC_RELEASE);
}

// Moves the sites' counters into stats_ (the region is about to go, or to
// be reused for a new image) and forgets the sites.
void InlineEngine::bank_counters(Target& t) {
    for (size_t i = 0; i < t.sites.size(); ++i) {
        if (t.sites[i].probe_id >= stats_.size()) continue;  // internal
        stats_[t.sites[i].probe_id].hits += site_hits(t, i);
        stats_[t.sites[i].probe_id].dropped += __atomic_load_n(&abi::sites_of(t.region)[i].dropped, __ATOMIC_RELAXED);
    }
    t.sites.clear();
}

// A process attached to loses our code with its old image when it runs
// execve, and nothing of ours tells (a preloaded agent does: follow_exec).
// Its memory then no longer holds the region where it was: the target is
// retired and the new program attached to (attach_after_exec), as the
// ptrace engine places the probes again after an exec. What the new
// program ran in between is not seen, and a note says so.
void InlineEngine::notice_exec(Target& t) {
    if (!t.alive || t.root || t.preloaded || !t.region) return;
    uint32_t magic = 0;
    if (proc::read_memory(t.pid, t.remote_region, &magic, sizeof magic) && magic == abi::kMagic) return;
    if (::kill(t.pid, 0) != 0) return;  // gone: its pidfd tells the loop
    const pid_t pid = t.pid;
    // Nothing of ours is left in the process to take out.
    t.patches.clear();
    t.semaphores.clear();
    t.return_trampoline = 0;
    t.shadow_registry = 0;
    t.alive = false;
    finish_target(t);
    exec_retry_.push_back(pid);
}

// The processes notice_exec found past an execve: attached once out of the
// dynamic loader (tried again at the next check until then).
void InlineEngine::attach_after_exec() {
    std::vector<pid_t> waiting;
    waiting.swap(exec_retry_);
    for (pid_t pid : waiting) {
        if (::kill(pid, 0) != 0) continue;
        auto attached = attach(pid, true);
        if (attached)
            note("process " + std::to_string(pid) +
                 " ran execve: attached to its new program (its first moments were not traced)");
        else if (attached.error().message() == kInLoader)
            exec_retry_.push_back(pid);
        else
            note("after execve in " + std::to_string(pid) + ": " + attached.error().message());
    }
}

// The traced process ran execve and its agent, preloaded again and handed
// the same region (abi.hpp, exec_seq), waits: read what the old image
// left, reset the region, place the probes in the new image, let it go.
// Nothing of the old image needs restoring: exec replaced all of it, and
// its threads (the rings' owners) are gone.
void InlineEngine::follow_exec(Target& t) {
    abi::Header* h = t.region;
    const uint32_t seq = __atomic_load_n(&h->exec_seq, __ATOMIC_ACQUIRE);
    if (seq == t.exec_acked) return;
    drain(t);
    bank_counters(t);
    t.patches.clear();
    t.areas.clear();
    t.semaphores.clear();
    t.first_site_at.clear();
    t.jumps.clear();
    t.entry_values.clear();
    t.entry_values_of.clear();
    t.counting_sites.clear();
    t.objects.clear();
    t.threads.clear();
    t.scratch = 0;
    t.return_trampoline = 0;
    t.shadow_registry = 0;
    t.unwinder_scanned.clear();
    t.planned.clear();
    t.earlier_int3.clear();
    h->return_trampoline = 0;
    h->semaphore_count = 0;
    __atomic_store_n(&h->site_count, 0, __ATOMIC_RELEASE);
    h->program_count = 0;
    h->int3_count = 0;
    h->r_debug = 0;
    std::memset(abi::int3_table_of(h), 0, sizeof(abi::Int3Entry) * h->int3_capacity);
    for (uint32_t i = 0; i < std::min(h->rings_used, h->ring_count); ++i) {
        abi::RingControl* r = abi::ring_of(h, i);
        __atomic_store_n(&r->owner, 0, __ATOMIC_RELEASE);
    }
    t.remote_region = h->self;
    t.acked = __atomic_load_n(&h->notify_seq, __ATOMIC_ACQUIRE);
    if (auto tids = stop_all(t)) {
        if (auto installed = install(t, t.pid); !installed)
            note("after exec in " + std::to_string(t.pid) + ": " + installed.error().message());
        release_all(t, *tids);
    }
    t.exec_acked = seq;
    __atomic_store_n(&h->exec_ack, seq, __ATOMIC_RELEASE);
    futex(&h->exec_ack, FUTEX_WAKE, INT32_MAX);
}

void InlineEngine::remove_probes(Target& t) {
    for (auto it = t.patches.rbegin(); it != t.patches.rend(); ++it) {
        std::vector<uint8_t> current(it->patched.size());
        if (proc::read_memory(t.pid, it->address, current.data(), current.size()) && current == it->patched)
            (void)proc::write_memory(t.pid, it->address, it->original.data(), it->original.size());
        if (it->int3 && t.region) {
            abi::Int3Entry* table = abi::int3_table_of(t.region);
            for (uint32_t i = 0; i < t.region->int3_capacity; ++i)
                if (table[i].address == it->address) __atomic_store_n(&table[i].removed, 1, __ATOMIC_RELEASE);
        }
    }
    t.patches.clear();
    for (auto& [address, raised] : t.semaphores) {
        uint16_t value = 0;
        if (!proc::read_memory(t.pid, address, &value, sizeof value)) continue;
        value = value >= raised ? static_cast<uint16_t>(value - raised) : 0;
        (void)proc::write_memory(t.pid, address, &value, sizeof value);
    }
    t.semaphores.clear();
    share_semaphores(t);
}

// Takes the probes out of a live process (threads stopped, so none is in
// the middle of a patched jump; trampolines stay mapped for threads still
// inside one), then reads what is left in the rings.
void InlineEngine::finish_target(Target& t) {
    if (!t.region) return;
    // An exec not yet followed left nothing of ours in the process.
    if (__atomic_load_n(&t.region->exec_seq, __ATOMIC_ACQUIRE) != t.exec_acked) {
        t.patches.clear();
        t.semaphores.clear();
    }
    if (t.alive && ::kill(t.pid, 0) == 0) {
        auto tids = stop_all(t);
        if (tids) {
            remove_probes(t);
            restore_return_addresses(t);
            release_all(t, *tids);
        }
    }
    t.alive = false;
    drain(t);
    bank_counters(t);
    if (uint64_t lost = __atomic_load_n(&t.region->lost_returns, __ATOMIC_RELAXED))
        note("process " + std::to_string(t.pid) + ": " + std::to_string(lost) +
             " calls' returns were not hooked (a shadow stack full, or none could be mapped)");
    __atomic_store_n(&t.region->enabled, 0, __ATOMIC_RELEASE);
    // An agent waiting for an exec to be followed sees enabled = 0 and goes on.
    futex(&t.region->exec_ack, FUTEX_WAKE, INT32_MAX);
    ::munmap(t.region, kLayout.total());
    t.region = nullptr;
}

}  // namespace

std::unique_ptr<Engine> make_inline_engine() { return std::make_unique<InlineEngine>(); }

InlineSitePlan plan_inline_site(elf::Binary& binary, const probe::Site& site) {
    InlineSitePlan plan;
    // Jump tables are read from the file; a PIE's absolute tables are
    // relocated at load time, so only its relative ones can be read there.
    auto read_table = [&binary](const arch::JumpTable& table) -> Result<std::span<const uint8_t>> {
        if (table.form == arch::JumpTable::Form::Absolute && binary.is_pie_or_shared())
            return Error("its entries are absolute addresses, which the loader relocates");
        return binary.code(table.table, table.entries * table.entry_size());
    };
    if (!site.function_size) {
        plan.no_jump = "the function's size is unknown";
    } else if (auto parts = function_parts(binary, site); !parts) {
        plan.no_jump = parts.error().message();
    } else if (auto checked = arch::check_jump_site(*parts, site.vaddr, read_table); !checked) {
        plan.no_jump = checked.error().message();
    } else {
        plan.displaced = *checked;
    }
    return plan;
}

namespace {

// The file execvp would run for `name`.
std::string find_program(const std::string& name) {
    if (name.find('/') != std::string::npos) return name;
    const char* path = ::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    for (size_t at = 0; at <= dirs.size();) {
        size_t end = dirs.find(':', at);
        if (end == std::string::npos) end = dirs.size();
        std::string candidate = (end > at ? dirs.substr(at, end - at) : ".") + "/" + name;
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        at = end + 1;
    }
    return name;
}

// Whether an ELF executable names a dynamic loader (PT_INTERP); a script
// (#!) counts as one, its interpreter being an ordinary program.
std::optional<bool> has_loader(const std::string& file) {
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return std::nullopt;
    unsigned char ident[64] = {};
    if (::pread(fd.get(), ident, sizeof ident, 0) < 4) return std::nullopt;
    if (ident[0] == '#' && ident[1] == '!') return true;
    if (std::memcmp(ident, "\x7f" "ELF", 4) != 0 || ident[4] != 2 /* ELFCLASS64 */) return std::nullopt;
    uint64_t phoff = 0;
    uint16_t phentsize = 0, phnum = 0;
    std::memcpy(&phoff, ident + 32, 8);
    std::memcpy(&phentsize, ident + 54, 2);
    std::memcpy(&phnum, ident + 56, 2);
    for (uint16_t i = 0; i < phnum && i < 256; ++i) {
        uint32_t type = 0;
        if (::pread(fd.get(), &type, sizeof type, static_cast<off_t>(phoff + uint64_t{i} * phentsize)) != sizeof type)
            return std::nullopt;
        if (type == 3 /* PT_INTERP */) return true;
    }
    return false;
}

}  // namespace

std::string inline_engine_unsuitable(const TraceRequest& request) {
    for (const auto& spec : request.probes)
        if (spec.location.is_return && request.return_mode == ReturnMode::Instructions)
            return "--return-mode=insn needs the ptrace engine";
    if (std::string why = shadow_stack_conflict(request); !why.empty()) return why;
    if (request.command.empty()) return "";
    const std::string program = find_program(request.command[0]);
    struct stat st{};
    if (::stat(program.c_str(), &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)))
        return program + " is set-user-ID or set-group-ID (LD_PRELOAD is ignored)";
    if (auto loader = has_loader(program); loader && !*loader)
        return program + " is static (no dynamic loader to preload the agent)";
    return "";
}

}  // namespace uprobe::engine
