// The libuprobe C++ API: a Session traces probes in launched, attached or
// all (global) processes and hands every hit to the caller's callbacks,
// which may hold the hitting thread for inspection or detach its process.
// The `uprobe` command is a client of this header only; uprobe.h offers the
// same as a C ABI.
//
// Versioning: UPROBE_API_VERSION is bumped on every incompatible change of
// this header or of uprobe.h; additions keep it. api_version() tells which
// version the linked library implements.
//
// Threads: callbacks run on the thread that called run(), one at a time, in
// the order of the hits (per traced thread: program order). stop() may be
// called from any thread and from signal handlers.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "uprobe/event.hpp"
#include "uprobe/result.hpp"
#include "uprobe/spec.hpp"

#define UPROBE_API_VERSION 1

namespace uprobe {

int api_version();

// The general-purpose registers of the hitting thread, in the order of the
// kernel's x86-64 user_regs_struct. rip is the probe address.
struct Registers {
    uint64_t r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
    uint64_t rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
    uint64_t fs_base, gs_base, ds, es, fs, gs;
};

// What the event callback wants done with the thread that hit.
enum class Action {
    Continue,  // resume it
    Hold,      // keep it stopped at the probe and call the hold callback
    Detach,    // take every probe out of its process and let it run untraced
};

// What becomes of a held thread when the hold callback returns.
enum class Release {
    Resume,         // run on through the probe; the process stays traced
    Detach,         // probes out, the process runs on untraced
    DetachStopped,  // probes out, the process left in a group-stop (SIGSTOP)
                    // at the probe address, ready for `gdb -p PID`
};

// "0x401136 main+0x1c at prog.c:42" (gdb's bt, one line per frame).
std::string describe(const StackFrame& frame);

// A thread stopped at a probe address; valid only during the hold callback.
// Other threads keep running; those that hit a probe meanwhile wait in
// their trap until the callback returns.
struct HeldThread {
    pid_t pid = 0;
    pid_t tid = 0;
    Registers regs{};
    // Reads the held process's memory (our int3 bytes show as 0xcc).
    Result<void> read(uint64_t address, void* out, size_t size) const;
    // The user stack (libdw's CFI unwinder; see src/stack/unwind.hpp).
    Result<std::vector<StackFrame>> backtrace() const;
    // A probe argument evaluated at the held pc, as if the probe had named
    // it: a DWARF variable visible there (`count`, `req->len`, `a[2]`,
    // `*p`; parameters and locals of the innermost function with their
    // location at this pc, then the object's globals), `$params`, `$vars`,
    // or a register/memory fetch (`%di`, `+8(%sp):u64`). One value per
    // name; a name not in scope fails with the names that are.
    Result<std::vector<EventArg>> variable(std::string_view expression) const;
};

// Which processes a global target ever touches. Every given criterion must
// hold; processes outside are never attached, never stopped.
struct ProcessFilter {
    std::vector<pid_t> pids;    // --pid
    std::vector<uid_t> uids;    // --uid
    std::string comm;           // --comm GLOB over /proc/PID/comm
    std::string cgroup;         // --cgroup PATH: the process's cgroup (v2 path
                                // as in /proc/PID/cgroup) is PATH or below it
    std::string exe;            // --exe PATH: /proc/PID/exe is this file
};

// What to trace. A session takes at most one launched command, any number
// of attached processes, or one global target.
struct Target {
    enum class Kind { Launch, Attach, Global };
    Kind kind = Kind::Launch;
    std::vector<std::string> command;  // Launch: argv, PATH searched
    pid_t pid = 0;                     // Attach
    ProcessFilter filter;              // Global

    static Target launch(std::vector<std::string> argv);
    static Target attach(pid_t pid);
    // Every process (of this user; any for root) that maps a probe's binary
    // now or later, within `filter`. New processes are found by a /proc
    // scan every `scan_interval_ms` (see docs/global.md); every probe of a
    // global session must name its binary (BIN:...).
    static Target global(ProcessFilter filter = {});
};

struct SessionOptions {
    bool follow_children = false;  // trace forked children and their execs
    size_t string_max = 256;       // bound of a :string read, in bytes
    bool colocate = true;          // see TraceRequest::colocate
    unsigned scan_interval_ms = 100;  // global targets: /proc scan period
    bool stacks = false;           // every event carries its user stack (Event::stack;
                                   // libdw's unwinder at each hit: slow)
    pid_t process_group = 0;       // a launched command joins this process
                                   // group (0: the tracer's own)
    // Only hit counts are wanted (stats()): the inline engine then counts in
    // the program's shared memory and the event callback is not called.
    // Ignored with a condition, which needs the events.
    bool count_only = false;
    // Only the durations of return probes are wanted, as histograms
    // (ProbeStats::latency, uprobe/latency.hpp): the inline engine counts
    // them in the program's shared memory with no record per call, the
    // ptrace engine's events are counted by the session; the event
    // callback is not called. Ignored with a condition.
    bool latency_only = false;
    // The inline engine drops (and counts) records a full ring has no room
    // for; with no_drop the writing thread waits for the tracer to drain
    // instead (so the program slows to the tracer's pace). The ptrace
    // engine never drops: it stops the thread at every hit anyway.
    bool no_drop = false;
    // The event callback's registers. The ptrace engine reads them at every
    // hit anyway; the inline engine copies the general registers into each
    // record (27 words: a two-argument record four times as long) only when
    // asked, and else gives rip alone.
    bool registers = true;
    // "ptrace" (int3, the tracer sees every hit), "inline" (an in-process
    // agent with jump-patched sites; the program is never stopped between
    // start and end) or "auto" (inline; ptrace when that is impossible).
    std::string engine = "ptrace";
    // How FUNC%return probes find returns (docs/probes.md, "Return probes"):
    // "trampoline" (the return address is swapped at the entry), "insn"
    // (breakpoints on every ret and tail jump; the stack is never written)
    // or "auto" (insn for Go binaries, trampoline elsewhere).
    std::string return_mode = "auto";
};

using EventCallback = std::function<Action(const Event& event, const Registers& regs)>;
using HoldCallback = std::function<Release(const Event& event, const HeldThread& held)>;
using NoteCallback = std::function<void(std::string_view line)>;
// A process the session has let go of (Action::Detach, Release::Detach or
// Release::DetachStopped): probes out, no longer traced; with `stopped` it
// sits in a group-stop at the probe address. Called on the run() thread
// right after the detach, so this is where a debugger can take it over
// (serve_gdb, or printing `gdb -p PID`) while the session goes on tracing
// every other process.
using ReleasedCallback = std::function<void(pid_t pid, bool stopped)>;

struct GdbServerOptions {
    // gdb sees every thread of the process, all-stop: all stopped while gdb
    // has control, all resumed by a continue, all stopped again when one
    // stops for gdb (docs/global.md). By default gdb sees the held thread
    // alone and the others run on; one that reaches a breakpoint gdb set
    // is stepped over it: gdb's breakpoints, steps and continues apply to
    // the held thread only.
    bool all_stop = false;
    // Readable (an eventfd or pipe; -1 for none): end the session early and
    // cleanly, gdb's breakpoints out and the process detached and running.
    int quit_fd = -1;
    // Called once the stub has taken the process over (every thread it
    // traces seized and stopped), before it waits for gdb's connection.
    std::function<void()> taken_over;
};

// Serves the GDB remote serial protocol on HOST:PORT (HOST "" means
// 127.0.0.1; PORT 0 picks a free one, passed to `listening`) for thread
// `tid` of a process that is stopped and not traced — as
// Release::DetachStopped leaves it. One gdb connection (`target remote
// :PORT`): registers (g/G), memory (m/M), software breakpoints (Z0/z0),
// step, continue, ^C, auxv (so gdb relocates a PIE), detach, kill. Returns
// when gdb detaches, kills or hangs up; the process then runs on untraced.
// The stub waits for its tracees with __WNOTHREAD, so the calling thread
// must not have children of its own that others wait for.
Result<void> serve_gdb(pid_t pid, pid_t tid, const std::string& host, uint16_t port,
                       const std::function<void(uint16_t port)>& listening, const GdbServerOptions& options = {});

// The same in two steps, so that a bad address is reported before anything
// is held: listen_for_gdb binds and listens (the port actually bound goes
// to `bound`; the caller owns the returned descriptor), serve_gdb_on takes
// the process over and serves one connection on it.
Result<int> listen_for_gdb(const std::string& host, uint16_t port, uint16_t* bound);
Result<void> serve_gdb_on(int listener, pid_t pid, pid_t tid, const GdbServerOptions& options = {});

class Session {
public:
    explicit Session(SessionOptions options = {});
    ~Session();  // a running session is stopped; every process left untouched
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Parses a probe spec (docs/probes.md) and returns its id, the Event's
    // probe_id. A malformed spec fails with the rendered SpecError
    // (message, spec, caret). Also while running, from any thread or a
    // callback: the probe goes into every traced process shortly after
    // (ptrace engine; insertion failures arrive as notes).
    Result<uint32_t> add_probe(std::string_view spec);
    // Stops delivering the probe's events at once, also while running,
    // from any thread or a callback. With the ptrace engine its breakpoints
    // come out of every traced process shortly after (before the engine's
    // next wait; a note "probe NAME: removed from N sites" says when), and
    // it goes into no process or library from then on; return probes, and
    // the inline engine, keep their breakpoints until the session ends.
    Result<void> remove_probe(uint32_t id);
    Result<void> add_target(Target target);

    // A predicate every event must satisfy before it reaches the callback
    // (`uprobe trace --if`): comparisons == != < <= > >= between arg names,
    // $pid, $tid, $comm and numbers or "strings" ($comm == "a*" globs),
    // combined with && || ! and parentheses. Before start(); a malformed
    // expression fails with the rendered caret message.
    Result<void> set_condition(std::string_view expression);

    // Defaults: every event is dropped and Continue; holds resume.
    void on_event(EventCallback callback);
    void on_hold(HoldCallback callback);
    void on_note(NoteCallback callback);  // progress lines ("attached to 42")
    void on_released(ReleasedCallback callback);

    // Launches or attaches and inserts every probe; one clear line on
    // failure, every target left as it was.
    Result<void> start();
    // Delivers events until every traced process has exited (never, for a
    // global target) or stop() was called; then takes every probe out and
    // detaches. Returns the launched command's exit status (128+signal when
    // killed), 0 otherwise.
    Result<int> run();
    void stop();

    // The user stack of the thread an event came from; valid only inside
    // the event or hold callback of that event (the thread is stopped).
    Result<std::vector<StackFrame>> backtrace(const Event& event) const;

    std::vector<ProbeStats> stats() const;
    std::vector<pid_t> traced_processes() const;
    // The engine the session runs on once started: "ptrace" or "inline"
    // (with engine "auto", the one it chose; "" before start()).
    std::string engine() const;
    const std::vector<ProbeSpec>& probes() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace uprobe
