// uprobe: dynamic probes on any instruction of a user program, without root.
// This file only maps the command line onto the commands.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstring>
#include <string>
#include <vector>

#include "cli/hold_command.hpp"
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
    list_cmd->add_option("--sites", list.sites,
                         "List the sites of PROBE and how the inline engine patches each (jump or int3, and why)");
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
    trace_cmd->add_option("--engine", trace.engine,
                          "auto (default: inline, or ptrace where inline cannot go), inline (in-process agent, "
                          "jump-patched sites, the program never stops), ptrace (int3, every hit stops the thread)");
    trace_cmd->add_flag("--count{probe}", trace.count_by,
                        "Print hits per probe at exit instead of events (--count=pid: per probe and process)");
    trace_cmd->add_flag("--stack{text}", trace.stack,
                        "Add the user stack to each event (libdw's unwinder, symbolized); --stack=folded: "
                        "only count stacks, printed at exit in flame-graph folded format");
    trace_cmd->add_flag("-f,--follow", trace.follow, "Follow forked children and exec");
    trace_cmd->add_flag("-v,--verbose", trace.verbose, "Say where each probe went");
    bool no_colocate = false;
    trace_cmd->add_flag("--no-colocate", no_colocate,
                        "Do not run the tracer on the CPU of a single traced thread");
    trace_cmd->add_option("--string-max", trace.string_max, "Longest string read from the target (bytes)");
    trace_cmd->add_flag("--no-drop", trace.no_drop,
                        "Inline engine: a thread whose event ring is full waits for the tracer instead of "
                        "dropping the event");
    trace_cmd->add_flag("--latency", trace.latency,
                        "At exit, a log2 histogram of each function probe's durations (FUNC or FUNC%return)");
    trace_cmd->add_option("--return-mode", trace.return_mode,
                          "How FUNC%return finds returns: trampoline (swap the return address), insn "
                          "(a breakpoint on every ret and tail jump), auto (default: insn for Go, "
                          "else trampoline)")
        ->check(CLI::IsMember({"insn", "trampoline", "auto"}));
    trace_cmd->add_option("--if", trace.condition,
                          "Only events where EXPR holds: comparisons (== != < <= > >=) of args, $pid, $tid, "
                          "$comm, numbers and \"strings\" (globs), with && || ! ( )");
    trace_cmd->add_flag("-a,--global", trace.global,
                        "Every process that maps the probes' binaries, now and later (-p, --uid, --comm, "
                        "--cgroup, --exe narrow it)");
    trace_cmd->add_option("--uid", trace.uids, "--global: only processes of this real uid (repeatable)")
        ->allow_extra_args(false);
    trace_cmd->add_option("--comm", trace.comm, "--global: only processes whose comm matches GLOB");
    trace_cmd->add_option("--cgroup", trace.cgroup, "--global: only processes in cgroup PATH or below");
    trace_cmd->add_option("--exe", trace.exe, "--global: only processes running executable PATH");
    trace.command = command;

    HoldOptions hold;
    auto* hold_cmd = app.add_subcommand(
        "hold", "Hold the first thread that hits PROBE at the probe for inspection (a prompt, or gdb with --gdb)");
    hold_cmd->add_option("probes", hold.probes, "Probe: '[NAME=]LOCATION [ARG...]'");
    hold_cmd->add_option("-p,--pid", hold.pids, "Attach to a running process (with --global: only this one)")
        ->allow_extra_args(false);
    hold_cmd->add_flag("-a,--global", hold.global, "Every process that maps the probe's binary, now and later");
    hold_cmd->add_option("--uid", hold.uids, "--global: only processes of this real uid")->allow_extra_args(false);
    hold_cmd->add_option("--comm", hold.comm, "--global: only processes whose comm matches GLOB");
    hold_cmd->add_option("--cgroup", hold.cgroup, "--global: only processes in cgroup PATH or below");
    hold_cmd->add_option("--exe", hold.exe, "--global: only processes running executable PATH");
    hold_cmd->add_option("--if", hold.condition, "Hold only a hit where EXPR holds (as trace --if)");
    hold_cmd->add_flag("--gdb", hold.gdb,
                       "Take the probes out and leave the process stopped at the probe for `gdb -p PID`");
    hold_cmd->add_option("--gdb-server", hold.gdb_server,
                         "Serve the GDB remote protocol for the held process on [HOST:]PORT (loopback by "
                         "default; PORT 0 picks one): gdb -ex 'target remote :PORT'");
    hold_cmd->add_flag("--all-stop", hold.all_stop,
                       "--gdb-server: gdb sees every thread, all stopped while gdb has control (by default the others run)");
    hold_cmd->add_flag("-v,--verbose", hold.verbose, "Progress notes: attaches, detaches, where probes went");
    hold_cmd->add_option("--string-max", hold.string_max, "Longest string read from the target (bytes)");
    hold.command = command;

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
    if (*hold_cmd) return run_hold(hold);
    trace.colocate = !no_colocate;
    trace.count = !trace.count_by.empty();
    return run_trace(trace);
}
