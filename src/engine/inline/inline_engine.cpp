// The inline engine's life: start, launch and attach, the event loop,
// following execve, removing the probes.
#include "engine/inline/inline_engine.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
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
#include "engine/inline/exit_plan.hpp"
#include "proc/ptrace.hpp"

namespace uprobe::engine::inline_engine {
namespace {

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

}  // namespace

// Return probes in a process with hardware shadow stacks: an int3 site's
// overwritten return address, or one hooked again after a catch, would
// fault (#CP) at its ret; instruction mode does not touch return
// addresses. Empty when there is no such conflict.
std::string shadow_stack_conflict(const TraceRequest& request) {
    if (request.return_mode == ReturnMode::Instructions) return "";  // framed probes are refused then
    const bool returns = std::any_of(request.probes.begin(), request.probes.end(),
                                     [](const ProbeSpec& p) { return p.location.is_return; });
    if (!returns) return "";
    for (pid_t pid : request.attach_pids)
        if (proc::thread_has_shadow_stack(pid, pid))
            return "process " + std::to_string(pid) + " has hardware shadow stacks (return probes need "
                   "--return-mode=insn)";
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
    if (request.latency_only) clock_.prime();
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
    h->latency_probes = kLayout.latency_probes;
    h->latency_offset = kLayout.latency_offset();
    h->ns_per_tick_q32 = clock_.ns_per_tick_q32();
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
        // An execve of an attached process is seen by reading our region's
        // magic (a system call a process): every 10 ms for a few processes,
        // every 100 ms for many (global mode). Until then the new program
        // runs untraced.
        const uint64_t exec_period = targets_.size() <= 64 ? 10 : 100;
        if (++rounds % exec_period == 0) {
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
    t.exit_chains.clear();
    t.entry_values.clear();
    t.entry_values_of.clear();
    t.counting_sites.clear();
    t.object_places.clear();
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

}  // namespace uprobe::engine::inline_engine

namespace uprobe::engine {

std::unique_ptr<Engine> make_inline_engine() { return std::make_unique<inline_engine::InlineEngine>(); }

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

InlineReturnPlan plan_inline_returns(elf::Binary& binary, const probe::Site& site, bool keeps_frame) {
    InlineReturnPlan out;
    std::optional<std::pair<uint64_t, size_t>> entry;
    if (keeps_frame) {
        const InlineSitePlan plan = plan_inline_site(binary, site);
        if (plan.no_jump.empty()) entry = std::make_pair(site.vaddr, plan.displaced);
    }
    ExitSurroundings around;
    around.site_at = [](uint64_t) { return false; };
    around.jump_at_or_before = [&entry](uint64_t at) {
        return entry && entry->first <= at ? entry : std::nullopt;
    };
    around.bytes_free = [](uint64_t, uint64_t) { return true; };
    auto plan = plan_exit_hooks(binary, site, 0, around);
    if (!plan) {
        out.why_not = plan.error().message();
        return out;
    }
    if (!plan->int3s.empty()) {
        out.why_not = "no jump for the " + plan->no_jump;
        return out;
    }
    for (const auto& [start, jump] : plan->jumps)
        for (uint64_t ret : jump.rets) out.rets.push_back({ret, start, jump.displaced});
    std::sort(out.rets.begin(), out.rets.end(), [](const auto& a, const auto& b) { return a.ret < b.ret; });
    return out;
}

namespace {

bool needs_frame(const Fetch& fetch) {
    return fetch.kind == FetchKind::Entry || fetch.kind == FetchKind::Duration || (fetch.inner && needs_frame(*fetch.inner));
}

}  // namespace

bool keeps_frame(const ProbeSpec& spec) {
    return std::any_of(spec.args.begin(), spec.args.end(), [](const ArgSpec& a) { return needs_frame(a.fetch); });
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
    // The inline engine's instruction mode hooks rets alone; the ptrace
    // engine's also follows tail jumps.
    for (const auto& spec : request.probes)
        if (spec.location.is_return && request.return_mode == ReturnMode::Instructions)
            return "--return-mode=insn: the ptrace engine's instruction mode also follows tail jumps";
    if (std::string why = inline_engine::shadow_stack_conflict(request); !why.empty()) return why;
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
