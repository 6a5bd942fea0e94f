// The C++ API over the engine: probes, targets, the condition, callbacks.
#include "uprobe/session.hpp"

#include <sys/user.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <variant>

#include "api/condition.hpp"
#include "api/global.hpp"
#include "engine/engine.hpp"
#include "elf/binary.hpp"
#include "probe/dwarf_fetch.hpp"
#include "probe/resolve.hpp"
#include "proc/proc.hpp"
#include "proc/ptrace.hpp"
#include "stack/unwind.hpp"
#include "uprobe/latency.hpp"

namespace uprobe {

static_assert(sizeof(Registers) == sizeof(user_regs_struct), "Registers mirrors user_regs_struct");

int api_version() { return UPROBE_API_VERSION; }

Result<void> HeldThread::read(uint64_t address, void* out, size_t size) const {
    return proc::read_memory(pid, address, out, size);
}

namespace {
Result<std::vector<StackFrame>> unwind(pid_t pid, pid_t tid) {
    UPROBE_TRY(auto frames, stack::unwind_stopped(pid, tid));
    std::vector<StackFrame> out;
    for (const auto& f : frames) out.push_back(StackFrame{f.pc, f.function, f.offset, f.object, f.file, f.line, f.inlined});
    return out;
}
}  // namespace

std::string describe(const StackFrame& frame) {
    return stack::describe(stack::Frame{frame.pc, frame.function, frame.offset, frame.object, frame.file, frame.line,
                                        frame.inlined});
}

Result<std::vector<StackFrame>> HeldThread::backtrace() const { return unwind(pid, tid); }

Result<std::vector<EventArg>> HeldThread::variable(std::string_view expression) const {
    // The expression is parsed as the argument of a probe at this pc.
    auto parsed = parse_probe_spec("held " + std::string(expression));
    if (parsed.error) return Error(parsed.error->message);
    if (parsed.spec->args.size() != 1) return Error("one variable at a time");
    const ArgSpec& arg = parsed.spec->args.front();
    UPROBE_TRY(auto maps, proc::read_maps(pid));
    const proc::Mapping* home = nullptr;
    for (const auto& m : maps)
        if (m.covers(regs.rip) && m.exec && m.inode != 0) home = &m;
    if (!home) return Error("the held pc is in no mapped file");
    // One resolver for the life of the program: objects and their DWARF
    // are read once, however many names are printed.
    static std::mutex mutex;
    static probe::Resolver resolver;
    std::lock_guard lock(mutex);
    const std::string path = proc::host_path(pid, home->path);
    UPROBE_TRY(elf::Binary * binary, resolver.binary(path));
    probe::Site site;
    site.file_offset = regs.rip - home->start + home->file_offset;
    auto vaddr = binary->offset_to_vaddr(site.file_offset);
    if (!vaddr) return Error("the held pc is outside the loaded segments of " + home->path);
    site.vaddr = *vaddr;
    if (const auto* function = binary->function_containing(site.vaddr)) {
        site.function = function->demangled;
        site.function_vaddr = function->vaddr;
        site.function_size = function->size;
        site.function_offset = site.vaddr - function->vaddr;
    }
    probe::CompileContext context;
    context.site = &site;
    context.load_bias = regs.rip - site.vaddr;
    context.symbol_address = [binary](const std::string& name) -> Result<uint64_t> {
        if (auto a = binary->data_symbol(name)) return *a;
        return Error("no symbol '" + name + "' in " + binary->path());
    };
    probe::DwarfSource dwarf;
    if (probe::is_dwarf_arg(arg)) dwarf = probe::dwarf_source(resolver, path);
    UPROBE_TRY(probe::ArgProgram program, probe::compile_arg(arg, context, dwarf));
    user_regs_struct raw;
    std::memcpy(&raw, &regs, sizeof raw);
    std::optional<user_fpregs_struct> fpregs;
    if (program.needs_fpregs()) {
        UPROBE_TRY(auto fp, proc::get_fpregs(tid));
        fpregs = fp;
    }
    probe::ProcessMemoryReader memory(pid);
    probe::FetchContext fetch;
    fetch.pid = pid;
    fetch.tid = tid;
    fetch.fpregs = fpregs ? &*fpregs : nullptr;
    std::vector<EventArg> out;
    probe::evaluate_arg(arg.name, program, raw, memory, fetch, out);
    return out;
}

Target Target::launch(std::vector<std::string> argv) {
    Target t;
    t.kind = Kind::Launch;
    t.command = std::move(argv);
    return t;
}

Target Target::attach(pid_t pid) {
    Target t;
    t.kind = Kind::Attach;
    t.pid = pid;
    return t;
}

Target Target::global(ProcessFilter filter) {
    Target t;
    t.kind = Kind::Global;
    t.filter = std::move(filter);
    return t;
}

namespace {
Registers to_registers(const user_regs_struct& regs) {
    Registers out;
    std::memcpy(&out, &regs, sizeof out);
    return out;
}
}  // namespace

struct Session::Impl final : engine::EventConsumer {
    SessionOptions options;
    std::vector<ProbeSpec> probes;
    std::deque<std::atomic<bool>> removed;
    std::deque<std::atomic<uint64_t>> delivered;
    // latency_only: durations of return events the session saw (the
    // engine's own, counted in place, come with its stats), by probe id.
    std::map<uint32_t, std::pair<std::vector<uint64_t>, uint64_t>> latency;  // buckets, max
    std::vector<Target> targets;
    std::optional<api::Condition> condition;
    EventCallback event_callback;
    HoldCallback hold_callback;
    std::string engine_name;  // what start() chose
    NoteCallback note_callback;
    ReleasedCallback released_callback;
    std::unique_ptr<engine::Engine> engine;
    std::unique_ptr<api::GlobalWatcher> watcher;
    bool started = false;
    bool ran = false;
    bool global = false;
    // Guards probes/removed/delivered growing (add_probe while running,
    // from any thread) against the engine thread's lookups.
    mutable std::mutex probes_mutex;
    stack::Unwinder unwinder;  // --stack: modules read once per process

    void on_event(const Event& event) override { (void)event; }
    void on_note(std::string_view line) override {
        if (note_callback) note_callback(line);
    }
    engine::HitAction on_hit(const Event& event, const user_regs_struct& regs) override {
        {
            std::lock_guard lock(probes_mutex);
            if (event.probe_id >= probes.size() || removed[event.probe_id].load()) return engine::HitAction::Continue;
            if (condition && !condition->matches(event)) return engine::HitAction::Continue;
            // Every writer holds probes_mutex: no locked add needed.
            auto& count = delivered[event.probe_id];
            count.store(count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
            if (options.latency_only) {
                if (event.is_return) {
                    auto& [buckets, longest] = latency[event.probe_id];
                    if (buckets.empty()) buckets.resize(latency::kBuckets);
                    buckets[latency::bucket_of(event.duration_ns)]++;
                    longest = std::max(longest, event.duration_ns);
                }
                return engine::HitAction::Continue;
            }
        }
        if (!event_callback) return engine::HitAction::Continue;
        Action action;
        if (options.stacks) {
            Event with_stack = event;
            if (auto frames = unwinder.unwind(event.pid, event.tid)) {
                for (const auto& f : *frames)
                    with_stack.stack.push_back(StackFrame{f.pc, f.function, f.offset, f.object, f.file, f.line, f.inlined});
            }
            action = event_callback(with_stack, to_registers(regs));
        } else {
            action = event_callback(event, to_registers(regs));
        }
        switch (action) {
        case Action::Continue: return engine::HitAction::Continue;
        case Action::Hold: return engine::HitAction::Hold;
        case Action::Detach: return engine::HitAction::Detach;
        }
        return engine::HitAction::Continue;
    }
    void on_released(pid_t pid, bool stopped) override {
        if (released_callback) released_callback(pid, stopped);
    }
    engine::HeldOutcome on_hold(const Event& event, const engine::HeldThread& held) override {
        if (!hold_callback) return engine::HeldOutcome::Resume;
        HeldThread thread;
        thread.pid = held.pid;
        thread.tid = held.tid;
        thread.regs = to_registers(held.regs);
        switch (hold_callback(event, thread)) {
        case Release::Resume: return engine::HeldOutcome::Resume;
        case Release::Detach: return engine::HeldOutcome::Detach;
        case Release::DetachStopped: return engine::HeldOutcome::DetachStopped;
        }
        return engine::HeldOutcome::Resume;
    }
};

Session::Session(SessionOptions options) : impl_(std::make_unique<Impl>()) { impl_->options = options; }

Session::~Session() {
    if (impl_->watcher) impl_->watcher->stop();
    // The engine's destructor detaches whatever it still traces.
}

Result<uint32_t> Session::add_probe(std::string_view spec) {
    auto parsed = parse_probe_spec(spec);
    if (parsed.error) return Error(parsed.error->render());
    std::lock_guard lock(impl_->probes_mutex);
    if (impl_->started) {
        if (impl_->global && parsed.spec->location.binary.empty())
            return Error("probe " + parsed.spec->name + ": a global probe names its binary");
        UPROBE_CHECK(impl_->engine->add_probe(*parsed.spec));
    }
    impl_->probes.push_back(std::move(*parsed.spec));
    impl_->removed.emplace_back(false);
    impl_->delivered.emplace_back(0);
    return static_cast<uint32_t>(impl_->probes.size() - 1);
}

Result<void> Session::remove_probe(uint32_t id) {
    {
        std::lock_guard lock(impl_->probes_mutex);
        if (id >= impl_->probes.size()) return Error("no probe with id " + std::to_string(id));
        if (impl_->removed[id].exchange(true)) return {};
    }
    // The engine takes its breakpoints out too where it can (ptrace); the
    // inline engine keeps them until the end, delivering nothing.
    if (impl_->started && impl_->engine) (void)impl_->engine->remove_probe(id);
    return {};
}

Result<void> Session::add_target(Target target) {
    if (impl_->started) return Error("targets are added before start()");
    for (const auto& t : impl_->targets) {
        if (t.kind == Target::Kind::Global || target.kind == Target::Kind::Global)
            return Error("a global target traces every process: it cannot be combined with other targets");
        if (t.kind == Target::Kind::Launch || target.kind == Target::Kind::Launch)
            return Error("give either a command to launch or processes to attach to, not both");
    }
    if (target.kind == Target::Kind::Launch && target.command.empty()) return Error("empty command");
    if (target.kind == Target::Kind::Attach && target.pid <= 0)
        return Error("no process with pid " + std::to_string(target.pid));
    impl_->targets.push_back(std::move(target));
    return {};
}

Result<void> Session::set_condition(std::string_view expression) {
    if (impl_->started) return Error("the condition is set before start()");
    auto parsed = api::Condition::parse(expression);
    if (auto* error = std::get_if<SpecError>(&parsed)) return Error(error->render());
    impl_->condition = std::get<api::Condition>(std::move(parsed));
    return {};
}

void Session::on_event(EventCallback callback) { impl_->event_callback = std::move(callback); }
void Session::on_hold(HoldCallback callback) { impl_->hold_callback = std::move(callback); }
void Session::on_note(NoteCallback callback) { impl_->note_callback = std::move(callback); }
void Session::on_released(ReleasedCallback callback) { impl_->released_callback = std::move(callback); }

Result<void> Session::start() {
    Impl& s = *impl_;
    if (s.started) return Error("the session was started already");
    if (s.probes.empty()) return Error("no probes given");
    if (s.targets.empty()) return Error("nothing to trace: give a command, a process or a global target");
    if (s.condition) {
        for (const auto& name : s.condition->names()) {
            bool known = false;
            std::vector<std::string> all;
            for (const auto& spec : s.probes)
                for (const auto& arg : spec.args) {
                    known |= arg.name == name;
                    all.push_back(arg.name);
                }
            if (!known)
                return Error("condition: no probe has an arg named '" + name + "'" +
                             (all.empty() ? std::string(" (the probes have no args)") : ""));
        }
    }
    engine::TraceRequest request;
    request.probes = s.probes;
    request.follow_children = s.options.follow_children;
    request.string_max = s.options.string_max;
    request.colocate = s.options.colocate;
    request.count_only = s.options.count_only && !s.condition;
    request.latency_only = s.options.latency_only && !s.condition;
    request.no_drop = s.options.no_drop;
    request.registers = s.options.registers;
    if (s.options.return_mode == "trampoline") request.return_mode = engine::ReturnMode::Trampoline;
    else if (s.options.return_mode == "insn") request.return_mode = engine::ReturnMode::Instructions;
    else if (s.options.return_mode != "auto")
        return Error("unknown return mode '" + s.options.return_mode + "' (expected insn, trampoline or auto)");
    request.process_group = s.options.process_group;
    request.rewind_pc = s.options.stacks;
    const Target* global = nullptr;
    for (const auto& t : s.targets) {
        if (t.kind == Target::Kind::Launch) request.command = t.command;
        if (t.kind == Target::Kind::Attach) request.attach_pids.push_back(t.pid);
        if (t.kind == Target::Kind::Global) global = &t;
    }
    if (global) {
        for (const auto& spec : s.probes)
            if (spec.location.binary.empty())
                return Error("probe " + spec.name +
                             ": a global probe names its binary (BIN:" + spec.text + ", BIN a path or library name)");
        request.keep_running = true;
    }
    // auto: the inline engine unless what is asked needs a stopped thread
    // (stacks, holding) or the inline engine says it cannot, decided
    // before anything runs. An attach it then fails leaves the process as
    // it was, so the ptrace engine may still try; a failed launch is final.
    std::string not_inline;
    if (s.options.engine == "inline" && s.hold_callback)
        return Error("holding needs the ptrace engine (engine \"ptrace\", or \"auto\", which picks it)");
    if (s.options.engine == "auto") {
        if (s.options.stacks) not_inline = "--stack needs a stopped thread";
        else if (s.hold_callback) not_inline = "holding needs the ptrace engine";
        else not_inline = engine::inline_engine_unsuitable(request);
    }
    if (s.options.engine == "inline" || (s.options.engine == "auto" && not_inline.empty())) {
        s.engine = engine::make_inline_engine();
        auto inlined = s.engine->start(request, s);
        if (!inlined && (s.options.engine == "inline" || !request.command.empty())) return inlined.error();
        if (inlined) {
            s.engine_name = "inline";
            s.on_note("engine: inline");
        }
        else not_inline = inlined.error().message();
        if (!inlined) s.engine.reset();
    }
    if (!not_inline.empty()) s.on_note("engine: ptrace (" + not_inline + ")");
    if (!s.engine) {
        s.engine = engine::make_ptrace_engine();
        s.engine_name = "ptrace";
        UPROBE_CHECK(s.engine->start(request, s));
    }
    {
        std::lock_guard lock(s.probes_mutex);
        s.started = true;
        // Removed before start: out again before anything is delivered.
        for (size_t id = 0; id < s.removed.size(); ++id)
            if (s.removed[id].load()) (void)s.engine->remove_probe(static_cast<uint32_t>(id));
    }
    s.global = global != nullptr;
    if (global) {
        s.watcher = std::make_unique<api::GlobalWatcher>(*s.engine, s.probes, global->filter,
                                                         s.options.scan_interval_ms, s.note_callback);
        s.watcher->scan();
    }
    return {};
}

Result<int> Session::run() {
    Impl& s = *impl_;
    if (!s.started) return Error("run() before start()");
    if (s.ran) return Error("the session has run already");
    s.ran = true;
    if (s.watcher) s.watcher->start();
    auto status = s.engine->run();
    if (s.watcher) s.watcher->stop();
    return status;
}

void Session::stop() {
    if (impl_->engine) impl_->engine->stop();
}

Result<std::vector<StackFrame>> Session::backtrace(const Event& event) const { return unwind(event.pid, event.tid); }

std::vector<ProbeStats> Session::stats() const {
    if (!impl_->engine) return {};
    auto stats = impl_->engine->stats();
    // Hits the condition filtered out, or of removed probes, are not hits
    // the caller saw.
    // Durations the engine timed in place are hits no event brought.
    const bool counted_in_place = impl_->options.count_only && !impl_->condition;
    std::lock_guard lock(impl_->probes_mutex);
    for (size_t i = 0; i < stats.size() && i < impl_->delivered.size() && !counted_in_place; ++i) {
        uint64_t timed_in_place = 0;
        for (uint64_t n : stats[i].latency) timed_in_place += n;
        stats[i].hits = impl_->delivered[i].load() + timed_in_place;
    }
    for (const auto& [id, seen] : impl_->latency) {
        if (id >= stats.size()) continue;
        ProbeStats& s = stats[id];
        if (s.latency.empty()) s.latency.resize(latency::kBuckets);
        for (uint32_t k = 0; k < latency::kBuckets; ++k) s.latency[k] += seen.first[k];
        s.latency_max_ns = std::max(s.latency_max_ns, seen.second);
    }
    return stats;
}

std::vector<pid_t> Session::traced_processes() const {
    return impl_->engine ? impl_->engine->traced_processes() : std::vector<pid_t>{};
}

const std::vector<ProbeSpec>& Session::probes() const { return impl_->probes; }

std::string Session::engine() const { return impl_->engine_name; }

}  // namespace uprobe
