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
//
// The engine's parts, one file each, all working on the Target of a
// traced process:
//   inline_engine.cpp  start, launch and attach, the event loop, execve,
//                      detach
//   threads.cpp        stopping every thread of a target while its code
//                      changes, and letting them go
//   remote.cpp         acting inside the target: system calls, calls,
//                      memory for trampolines, loading the agent
//   placement.cpp      placing probes: jump or int3 sites, trampolines,
//                      return probes, the dynamic linker and C++ unwinder
//                      hooks
//   exit_plan.cpp      where the rets of a function get their exit hooks
//                      (placement, and uprobe list --sites)
//   events.cpp         draining the rings into events, and the counts
#pragma once

#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "agent/abi.hpp"
#include "arch/x86_64/trampoline.hpp"
#include "base/unique_fd.hpp"
#include "elf/binary.hpp"
#include "engine/common.hpp"
#include "engine/engine.hpp"
#include "probe/fetch.hpp"
#include "probe/resolve.hpp"
#include "proc/proc.hpp"

namespace uprobe::engine::inline_engine {

using proc::Mapping;
namespace abi = uprobe::agent;

static_assert(abi::kFrameXmmOffset == arch::kFrameXmmOffset);

constexpr uint64_t kAreaSize = 1 << 20;

// Room for every function of a large library (libLLVM-15: 36,687), a ring
// for each of 256 threads alive at once (a server's thread pool), and the
// latency tables of 64 probes (--latency). The memfd is sparse: a ring or
// a table costs memory only once a thread writes to it.
constexpr abi::Layout kLayout{65536, 32768, 256, 1 << 20, 16384, 64};
static_assert((kLayout.ring_size & (kLayout.ring_size - 1)) == 0, "the agent masks ring positions");

inline uint64_t rdtsc() { return __builtin_ia32_rdtsc(); }

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
    // A first rate from ~2 ms of waiting, for an agent that converts
    // durations itself (--latency) from the start.
    void prime() {
        while (monotonic_ns() - ns0_ < 2'000'000) {
        }
        calibrate();
    }
    // ns per tick as a 32.32 fixed-point number (abi::Header::ns_per_tick_q32).
    uint64_t ns_per_tick_q32() const { return static_cast<uint64_t>(ns_per_tsc_ * 4294967296.0); }
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
// it again when a probe joining there needs the vector registers saved, or
// a ret among its bytes gets an exit hook.
struct JumpSite {
    std::vector<uint8_t> code;  // the file's bytes at the site (displaced + kMaxInstructionLength)
    size_t displaced = 0;
    uint32_t first_site = 0;    // the site index the trampoline passes
    bool vectors = false;       // the trampolines save xmm0..15
    uint64_t landing = 0;       // arch::Trampoline::landing (0: no return probes can use it)
    bool entry = true;          // false: placed for its exit hooks alone (no site at its address)
    std::vector<arch::ExitHook> exits;  // rets among its bytes hooked for return probes
};

// The exit hooks of one function's instruction-mode return probes: the
// first probe's kSiteExit site (later ones join its chain) and the jump
// sites whose trampolines call it.
struct ExitChain {
    uint32_t head = 0;
    std::vector<uint64_t> jumps;
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
    // The objects whose probes are placed, and where each was mapped then
    // (its executable mappings, and the span of all its mappings, where
    // its SDT semaphores are): gone from there, its placed state goes too.
    struct ObjectPlace {
        std::vector<std::pair<uint64_t, uint64_t>> code;
        uint64_t lo = 0, hi = 0;
    };
    std::map<std::pair<dev_t, ino_t>, ObjectPlace> object_places;
    uint32_t acked = 0;                          // last notify_seq handled
    uint32_t exec_acked = 0;                     // last exec_seq handled
    uint64_t return_trampoline = 0;              // remote; 0: no return probes yet
    std::map<uint64_t, JumpSite> jumps;          // site address -> its jump's trampoline
    std::map<uint64_t, ExitChain> exit_chains;   // function entry -> its exit hooks
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

inline long futex(uint32_t* word, int op, uint32_t value, const timespec* timeout = nullptr) {
    return ::syscall(SYS_futex, word, op, value, timeout, nullptr, 0);
}

// The region (abi::Header and what follows) mapped from its memfd.
Result<abi::Header*> map_region(int fd);

// The address at which `vaddr` of `binary` (mapped as device/inode, its
// path ending in `path_end`) is loaded in the process `maps` describe.
Result<uint64_t> runtime_address(elf::Binary& binary, const std::vector<Mapping>& maps, const std::string& path_end,
                                 uint64_t vaddr, dev_t device, ino_t inode);

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
    void forget_unmapped(Target& t, const std::vector<Mapping>& maps);
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
    Result<void> rewrite_jump(Target& t, pid_t tid, uint64_t address);
    Result<bool> place_exits(Target& t, pid_t tid, elf::Binary& binary, const probe::Site& site, uint64_t address,
                             uint32_t index, bool vectors, bool must, const std::vector<uint64_t>& rips,
                             size_t* int3_exits, bool dry_run);
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

}  // namespace uprobe::engine::inline_engine
