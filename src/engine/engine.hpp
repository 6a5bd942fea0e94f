// The engine interface: what every tracing mechanism (ptrace now, the
// in-process agent later) offers the CLI.
//
// An engine owns the traced processes between start() and the end of
// run(). Whatever happens (errors, stop(), the tracer being told to quit)
// every traced process is left running on unpatched code: breakpoints
// removed, threads resumed, ptrace detached.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "uprobe/event.hpp"
#include "uprobe/result.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::elf {
class Binary;
}
namespace uprobe::probe {
struct Site;
}

namespace uprobe::engine {

// How return probes (FUNC%return) find the returns (docs/probes.md, "Return
// probes"): a trampoline replaces the return address on the stack at the
// entry; instruction analysis puts breakpoints on every ret and tail jump
// and never writes the stack (Go, which checks return addresses); auto uses
// instruction analysis for Go binaries, trampolines elsewhere.
enum class ReturnMode { Auto, Trampoline, Instructions };

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
    bool keep_running = false;         // global mode: run() waits for stop() even
                                       // while no process is traced (add_process)
    bool rewind_pc = false;            // the thread's own rip is the probe address
                                       // during on_hit (for unwinders; one more
                                       // ptrace call per hit)
    bool count_only = false;           // only stats() hits are wanted: an engine may
                                       // count in place and deliver no events (inline)
    bool latency_only = false;         // only return probes' durations are wanted: an
                                       // engine may count them in stats().latency and
                                       // deliver no event for those (inline)
    bool no_drop = false;              // a thread whose event ring is full waits for the
                                       // tracer instead of dropping the record (inline)
    bool registers = false;            // each record carries the general registers (inline;
                                       // else the consumer sees rip only)
    ReturnMode return_mode = ReturnMode::Auto;  // how FUNC%return probes are placed
};

// What the consumer wants done with the thread that hit (see on_hit).
enum class HitAction {
    Continue,  // resume it
    Hold,      // keep it stopped at the probe address and call on_hold
    Detach,    // take every probe out of its process and let it run untraced
};

// What becomes of a held thread when on_hold returns.
enum class HeldOutcome {
    Resume,         // run on through the probe; the process stays traced
    Detach,         // probes out, ptrace detached, the process runs on
    DetachStopped,  // probes out, detached with SIGSTOP pending, so the process
                    // sits in a group-stop at the probe address for a debugger
};

// A thread stopped at a probe address, valid only during on_hold.
struct HeldThread {
    pid_t pid = 0;
    pid_t tid = 0;
    user_regs_struct regs{};  // rip is the probe address
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
    // The hit as it happens, with the registers at the probe (rip is the
    // probe address). The default delivers the event and resumes.
    virtual HitAction on_hit(const Event& event, const user_regs_struct& regs) {
        (void)regs;
        on_event(event);
        return HitAction::Continue;
    }
    // Called on the engine's thread while `held` stays stopped (its memory
    // can be read through /proc or process_vm_readv). Other threads run on;
    // those that hit a probe meanwhile wait in their trap until this returns.
    virtual HeldOutcome on_hold(const Event& event, const HeldThread& held) {
        (void)event;
        (void)held;
        return HeldOutcome::Resume;
    }
    // Called on the engine's thread once a process has been detached for a
    // HitAction::Detach or a HeldOutcome other than Resume: its probes are
    // out and ptrace has let go; with `stopped` it sits in its group-stop at
    // the probe address. Only now can a debugger (or another tracer) attach.
    virtual void on_released(pid_t pid, bool stopped) {
        (void)pid;
        (void)stopped;
    }
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
    // reports it (128+signal when killed), or 0 in attach mode. Fails when
    // a probe is refused by a library the launched command maps at start-up
    // (known only once the dynamic linker has run): the command is then
    // killed before its main().
    virtual Result<int> run() = 0;

    // Asks run() to finish. Async-signal-safe and callable from any thread
    // (SIGINT/SIGTERM/SIGHUP handlers, a closed output pipe); it takes
    // effect within milliseconds even when the targets are idle.
    virtual void stop() = 0;

    // Asks run() to attach to `pid` as well and insert the probes into it
    // (global mode). Callable from any thread, before or during run(); the
    // attach happens on the engine's thread and failures become notes.
    virtual void add_process(pid_t pid) { (void)pid; }

    // Adds a probe while run() runs (or before): its id is the next index
    // (request.probes.size() at start, plus the probes added before it).
    // Callable from any thread; inserted on the engine's thread into every
    // traced process, failures become notes.
    virtual Result<void> add_probe(const ProbeSpec& spec) {
        (void)spec;
        return Error("this engine cannot add probes while tracing");
    }

    // Takes probe `id` out while run() runs (or before): callable from any
    // thread; on the engine's thread its breakpoints come out of every
    // traced process (the original bytes back where no other probe shares
    // the address) and it goes into no process or object from then on.
    // A note says when it is done. Return probes keep their breakpoints
    // until the end (only their events stop, in the caller).
    virtual Result<void> remove_probe(uint32_t id) {
        (void)id;
        return Error("this engine cannot remove probes while tracing");
    }

    virtual std::vector<ProbeStats> stats() const = 0;
    // Every process ever traced (including followed children), for the
    // exit summary.
    virtual std::vector<pid_t> traced_processes() const = 0;
};

std::unique_ptr<Engine> make_ptrace_engine();
// Probes inside the program: an in-process agent (libuprobe-agent.so,
// beside the uprobe binary or $UPROBE_AGENT), jump-patched sites and
// shared-memory rings; the program is stopped only while probes go in and
// out (src/engine/inline/).
std::unique_ptr<Engine> make_inline_engine();

// Why the inline engine cannot take `request`, in a few words ("" when it
// can): instruction-analysis return probes, or a launched
// program with no dynamic loader to preload the agent (static) or one that
// ignores LD_PRELOAD (set-user-ID). Decided before anything runs: a launch
// that failed half-way must not run the program again under another engine.
std::string inline_engine_unsuitable(const TraceRequest& request);

// How the inline engine patches a probe site, judged from the object's
// bytes (arch::check_jump_site): a jump that displaces `displaced` bytes,
// or (displaced 0) an int3, and `no_jump` says why. In a process, another
// probe's site in those bytes, or a thread stopped inside them, also turns
// a jump into an int3 (`uprobe trace -v` says so per site).
struct InlineSitePlan {
    size_t displaced = 0;
    std::string no_jump;
};
InlineSitePlan plan_inline_site(elf::Binary& binary, const probe::Site& site);

// How the inline engine finds the returns of a return probe's function,
// judged from the file alone as plan_inline_site does: each ret's exit
// hook and the jump that holds it, or why the return address is taken at
// the entry instead (--return-mode=auto). `keeps_frame`: the probe is
// placed at the entry too (@entry(), $duration), whose jump may take the
// rets in.
struct InlineReturnPlan {
    struct Ret {
        uint64_t ret = 0;   // vaddr of the ret
        uint64_t jump = 0;  // vaddr of the jump whose trampoline hooks it
        size_t displaced = 0;
    };
    std::vector<Ret> rets;  // empty: the return address is taken at the entry
    std::string why_not;    // then: why
};
InlineReturnPlan plan_inline_returns(elf::Binary& binary, const probe::Site& site, bool keeps_frame);
// Whether a return probe needs its entry's frame: an @entry() or $duration argument.
bool keeps_frame(const ProbeSpec& spec);

}  // namespace uprobe::engine
