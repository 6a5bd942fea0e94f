// The engine interface: what every tracing mechanism (ptrace now, the
// in-process agent later) offers the CLI.
//
// An engine owns the traced processes between start() and the end of
// run(). Whatever happens (errors, stop(), the tracer being told to quit)
// every traced process is left running on unpatched code: breakpoints
// removed, threads resumed, ptrace detached.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "uprobe/event.hpp"
#include "uprobe/result.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::engine {

struct TraceRequest {
    std::vector<ProbeSpec> probes;
    std::vector<pid_t> attach_pids;
    std::vector<std::string> command;  // launched (argv, PATH searched) when non-empty
    bool follow_children = false;      // -f: trace forked children too
    size_t string_max = 256;           // bound of a :string read, in bytes
    bool colocate = true;              // run the event loop on the CPU of a lone
                                       // traced thread (see the ptrace engine)
    pid_t process_group = 0;           // a launched command joins this process
                                       // group (0: the engine's own)
};

// Receives events on the engine's thread, in the order of the hits the
// engine saw (per thread: program order).
class EventConsumer {
public:
    virtual ~EventConsumer() = default;
    virtual void on_event(const Event& event) = 0;
    // Progress lines for -v: "attached to 1234 (3 threads)",
    // "probe p: 2 sites in /usr/lib/x86_64-linux-gnu/libc.so.6".
    virtual void on_note(std::string_view line) { (void)line; }
};

class Engine {
public:
    virtual ~Engine() = default;

    // Checks everything that can be checked up front and inserts the probes
    // (attach), or launches the command stopped and inserts them once its
    // objects are mapped. Every error is one clear line and leaves every
    // target exactly as it was (partial insertion is rolled back; a
    // launched command is killed).
    virtual Result<void> start(const TraceRequest& request, EventConsumer& consumer) = 0;

    // Runs the event loop until every traced process has exited or stop()
    // was called; then removes every breakpoint, resumes every thread and
    // detaches. Returns the launched command's exit status as a shell
    // reports it (128+signal when killed), or 0 in attach mode.
    virtual Result<int> run() = 0;

    // Asks run() to finish. Async-signal-safe and callable from any thread
    // (SIGINT/SIGTERM/SIGHUP handlers, a closed output pipe); it takes
    // effect within milliseconds even when the targets are idle.
    virtual void stop() = 0;

    virtual std::vector<ProbeStats> stats() const = 0;
    // Every process ever traced (including followed children), for the
    // exit summary.
    virtual std::vector<pid_t> traced_processes() const = 0;
};

std::unique_ptr<Engine> make_ptrace_engine();

}  // namespace uprobe::engine
