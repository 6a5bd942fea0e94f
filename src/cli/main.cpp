// uprobe: dynamic probes on any instruction of a user program, without root.
// This file only maps the command line onto the commands.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstring>
#include <string>
#include <vector>

#include "cli/list_command.hpp"
#include "cli/report.hpp"
#include "cli/trace_command.hpp"

int main(int argc, char** argv) {
    using namespace uprobe::cli;

    // Everything after the first "--" is the command to launch, untouched
    // by option parsing (its own options must not be read as ours).
    std::vector<std::string> command;
    int ours = argc;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--") == 0) {
            ours = i;
            command.assign(argv + i + 1, argv + argc);
            break;
        }
    }

    CLI::App app{"uprobe: dynamic probes on user programs, in user space, without root.\n"
                 "Probe syntax: docs/probes.md (perf-probe-like: [NAME=]LOCATION [ARG...])."};
    app.require_subcommand(1);
    app.set_version_flag("--version", "uprobe 0.1.0");

    ListOptions list;
    auto* list_cmd = app.add_subcommand("list", "List functions, markers, lines or variables that can be probed");
    list_cmd->add_option("-x,--exec", list.binary, "Binary (executable or shared library) to inspect");
    list_cmd->add_option("-p,--pid", list.pid, "Process whose loaded objects to inspect");
    list_cmd->add_option("pattern", list.pattern, "Function name or glob (default: all)");
    list_cmd->add_flag("--sdt", list.sdt, "List SDT/USDT markers with semaphores and arguments");
    list_cmd->add_option("--lines", list.lines, "List the source lines of FUNC that line probes accept");
    list_cmd->add_option("--vars", list.vars, "List the variables available at LOCATION");
    std::string list_format = "text";
    list_cmd->add_option("--format", list_format, "text or json")->check(CLI::IsMember({"text", "json"}));

    TraceOptions trace;
    auto* trace_cmd = app.add_subcommand(
        "trace", "Trace probes on a command (after --) or on running processes (-p)");
    trace_cmd->add_option("probes", trace.probes, "Probes: '[NAME=]LOCATION [ARG...]', one per word");
    // One value per -p, so "-p 42 'probe'" does not read the probe as a pid.
    trace_cmd->add_option("-p,--pid", trace.pids, "Attach to a running process (repeatable)")
        ->allow_extra_args(false);
    trace_cmd->add_option("-o,--output", trace.output, "Write events to FILE instead of stdout");
    trace_cmd->add_option("--format", trace.format, "text (default) or json");
    trace_cmd->add_option("--engine", trace.engine, "ptrace (default)");
    trace_cmd->add_flag("--count", trace.count, "Print hits per probe at exit instead of events");
    trace_cmd->add_flag("-f,--follow", trace.follow, "Follow forked children and exec");
    trace_cmd->add_flag("-v,--verbose", trace.verbose, "Say where each probe went");
    bool no_colocate = false;
    trace_cmd->add_flag("--no-colocate", no_colocate,
                        "Do not run the tracer on the CPU of a single traced thread");
    trace_cmd->add_option("--string-max", trace.string_max, "Longest string read from the target (bytes)");
    trace.command = command;

    try {
        app.parse(ours, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
        // One line, as for every other error.
        return report_usage(e.what());
    }

    if (*list_cmd) {
        list.json = list_format == "json";
        if (!command.empty()) return report_usage("list takes no command after --");
        return run_list(list);
    }
    trace.colocate = !no_colocate;
    return run_trace(trace);
}
