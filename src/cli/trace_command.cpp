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
#include "engine/engine.hpp"
#include "sink/sink.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::cli {
namespace {

std::atomic<engine::Engine*> g_engine{nullptr};

void request_stop(int) {
    if (auto* e = g_engine.load()) e->stop();
}

// Feeds the engine's events to the chosen sink; a closed output stops
// tracing (the engine then detaches cleanly).
class SinkConsumer final : public engine::EventConsumer {
public:
    SinkConsumer(sink::Sink& out, bool verbose) : out_(out), verbose_(verbose) {}
    void on_event(const Event& e) override {
        if (!out_.event(e) && !closed_) {
            closed_ = true;
            request_stop(0);
        }
    }
    void on_note(std::string_view line) override {
        if (verbose_) fmt::print(stderr, "uprobe: {}\n", line);
    }

private:
    sink::Sink& out_;
    bool verbose_;
    bool closed_ = false;
};

std::string summary(const std::vector<ProbeStats>& stats, size_t processes) {
    std::string hits;
    uint64_t dropped = 0;
    for (const auto& s : stats) {
        hits += fmt::format("{}{}={}", hits.empty() ? "" : " ", s.probe, s.hits);
        dropped += s.dropped;
    }
    std::string line = fmt::format("uprobe: hits: {}; processes traced: {}", hits, processes);
    if (dropped) line += fmt::format("; events dropped: {}", dropped);
    return line;
}

}  // namespace

int run_trace(const TraceOptions& options) {
    engine::TraceRequest request;
    for (const auto& text : options.probes) {
        auto parsed = parse_probe_spec(text);
        if (parsed.error) return report_spec_error(*parsed.error);
        request.probes.push_back(std::move(*parsed.spec));
    }
    if (request.probes.empty()) return report_usage("trace needs at least one probe");
    if (options.command.empty() && options.pids.empty())
        return report_usage("trace needs a command after -- or a process with -p PID");
    if (!options.command.empty() && !options.pids.empty())
        return report_usage("give either a command after -- or -p PID, not both");
    if (options.engine != "ptrace")
        return report_usage(fmt::format("unknown engine '{}' (available: ptrace)", options.engine));
    if (options.format != "text" && options.format != "json")
        return report_usage(fmt::format("unknown format '{}' (expected text or json)", options.format));
    request.attach_pids = options.pids;
    request.command = options.command;
    request.follow_children = options.follow;
    request.string_max = options.string_max;
    request.colocate = options.colocate;

    FILE* out = stdout;
    if (!options.output.empty()) {
        out = std::fopen(options.output.c_str(), "w");
        if (!out) return report_error(fmt::format("cannot write {}: {}", options.output, std::strerror(errno)));
    }
    std::unique_ptr<sink::Sink> output;
    if (options.count) output = sink::make_count_sink(out, options.format == "json");
    else if (options.format == "json") output = sink::make_json_sink(out);
    else output = sink::make_text_sink(out);

    request.process_group = ::getpgrp();
    run_supervised();

    auto engine = engine::make_ptrace_engine();
    g_engine = engine.get();
    struct sigaction sa {};
    sa.sa_handler = request_stop;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaction(s, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    SinkConsumer consumer(*output, options.verbose);
    if (auto started = engine->start(request, consumer); !started) {
        g_engine = nullptr;
        return report_error(started.error().message());
    }
    auto status = engine->run();
    g_engine = nullptr;
    auto stats = engine->stats();
    output->finish(stats);
    output.reset();
    if (out != stdout) std::fclose(out);
    std::fputs((summary(stats, engine->traced_processes().size()) + "\n").c_str(), stderr);
    if (!status) return report_error(status.error().message());
    return options.command.empty() ? 0 : *status;
}

}  // namespace uprobe::cli
