#include "cli/trace_command.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <csignal>
#include <cstdio>
#include <memory>

#include "cli/report.hpp"
#include "cli/supervisor.hpp"
#include "sink/sink.hpp"
#include "uprobe/session.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::cli {
namespace {

std::atomic<Session*> g_session{nullptr};

void request_stop(int) {
    if (auto* s = g_session.load()) s->stop();
}

std::string summary(const std::vector<ProbeStats>& stats, size_t processes, const std::string& engine) {
    std::string hits;
    uint64_t dropped = 0;
    for (const auto& s : stats) {
        hits += fmt::format("{}{}={}", hits.empty() ? "" : " ", s.probe, s.hits);
        dropped += s.dropped;
    }
    std::string line = fmt::format("uprobe: hits: {}; processes traced: {} ({} engine)", hits, processes, engine);
    if (dropped) line += fmt::format("; events dropped: {}", dropped);
    return line;
}

// --latency times functions: FUNC becomes FUNC%return under the same name,
// with $duration as its only argument (so every return mode times it from
// the entry); the probe's own arguments would never be shown.
Result<std::string> latency_probe(const ProbeSpec& spec) {
    const Location& where = spec.location;
    if (where.kind != LocationKind::Function || where.offset != 0)
        return Error("--latency times functions: probe " + spec.name + " is not FUNC or FUNC%return");
    Location timed = where;
    timed.is_return = true;
    return spec.name + "=" + to_string(timed) + " $duration";
}

}  // namespace

int run_trace(const TraceOptions& options) {
    SessionOptions session_options;
    session_options.follow_children = options.follow;
    session_options.string_max = options.string_max;
    session_options.colocate = options.colocate;
    session_options.engine = options.engine;
    session_options.count_only = options.count && options.count_by == "probe";  // per pid needs events
    session_options.latency_only = options.latency;
    session_options.no_drop = options.no_drop;
    session_options.registers = false;  // events show arguments, never registers
    session_options.stacks = !options.stack.empty();
    session_options.return_mode = options.return_mode;
    session_options.process_group = ::getpgrp();  // the user's job, before the supervisor splits off
    Session traced(session_options);
    for (const auto& text : options.probes) {
        auto parsed = parse_probe_spec(text);
        if (parsed.error) return report_spec_error(*parsed.error);
        std::string probe = text;
        if (options.latency) {
            auto timed = latency_probe(*parsed.spec);
            if (!timed) return report_usage(timed.error().message());
            probe = *timed;
        }
        if (auto added = traced.add_probe(probe); !added) return report_usage(added.error().message());
    }
    if (options.probes.empty()) return report_usage("trace needs at least one probe");
    if (options.global) {
        if (!options.command.empty()) return report_usage("--global traces running processes: no command after --");
        ProcessFilter filter;
        filter.pids = options.pids;
        filter.uids = options.uids;
        filter.comm = options.comm;
        filter.cgroup = options.cgroup;
        filter.exe = options.exe;
        (void)traced.add_target(Target::global(filter));
    } else {
        if (!options.uids.empty() || !options.comm.empty() || !options.cgroup.empty() || !options.exe.empty())
            return report_usage("--uid, --comm, --cgroup and --exe choose processes for --global");
        if (options.command.empty() && options.pids.empty())
            return report_usage("trace needs a command after --, a process with -p PID, or --global");
        if (!options.command.empty() && !options.pids.empty())
            return report_usage("give either a command after -- or -p PID, not both");
        if (!options.command.empty()) {
            if (auto added = traced.add_target(Target::launch(options.command)); !added)
                return report_usage(added.error().message());
        }
        for (pid_t pid : options.pids)
            if (auto added = traced.add_target(Target::attach(pid)); !added) return report_usage(added.error().message());
    }
    if (!options.condition.empty()) {
        if (auto set = traced.set_condition(options.condition); !set)
            return report_usage("--if: " + set.error().message());
    }
    if (options.engine != "ptrace" && options.engine != "inline" && options.engine != "auto")
        return report_usage(fmt::format("unknown engine '{}' (available: ptrace, inline, auto)", options.engine));
    if (!options.stack.empty() && options.stack != "text" && options.stack != "folded")
        return report_usage(fmt::format("unknown stack format '{}' (expected text or folded)", options.stack));
    if (options.count && options.count_by != "probe" && options.count_by != "pid")
        return report_usage(fmt::format("unknown count key '{}' (expected probe or pid)", options.count_by));
    if (options.format != "text" && options.format != "json")
        return report_usage(fmt::format("unknown format '{}' (expected text or json)", options.format));

    FILE* out = stdout;
    if (!options.output.empty()) {
        out = std::fopen(options.output.c_str(), "w");
        if (!out) return report_error(fmt::format("cannot write {}: {}", options.output, std::strerror(errno)));
    }
    std::unique_ptr<sink::Sink> output;
    if (options.latency) output = sink::make_latency_sink(out, options.format == "json");
    else if (options.stack == "folded") output = sink::make_folded_sink(out);
    else if (options.count && options.count_by == "pid")
        output = sink::make_count_by_process_sink(out, options.format == "json");
    else if (options.count) output = sink::make_count_sink(out, options.format == "json");
    else if (options.format == "json") output = sink::make_json_sink(out);
    else output = sink::make_text_sink(out);

    // Forking leaves the configured session in the tracer; nothing runs yet.
    run_supervised();

    g_session = &traced;
    struct sigaction sa {};
    sa.sa_handler = request_stop;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaction(s, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    // A closed output stops tracing (the session then detaches cleanly).
    bool closed = false;
    traced.on_event([&](const Event& e, const Registers&) {
        if (!output->event(e) && !closed) {
            closed = true;
            request_stop(0);
        }
        return Action::Continue;
    });
    if (options.verbose) traced.on_note([](std::string_view line) { fmt::print(stderr, "uprobe: {}\n", line); });
    if (auto started = traced.start(); !started) {
        g_session = nullptr;
        return report_error(started.error().message());
    }
    if (options.global) fmt::print(stderr, "uprobe: tracing every process that maps the probed binaries; Ctrl-C to end\n");
    auto status = traced.run();
    g_session = nullptr;
    auto stats = traced.stats();
    output->finish(stats);
    output.reset();
    if (out != stdout) std::fclose(out);
    // A run refused before the program's main() (see the engine) is one
    // error line, like a refusal at start: no summary of a trace that was not.
    if (!status) return report_error(status.error().message());
    std::fputs((summary(stats, traced.traced_processes().size(), traced.engine()) + "\n").c_str(), stderr);
    return options.command.empty() ? 0 : *status;
}

}  // namespace uprobe::cli
