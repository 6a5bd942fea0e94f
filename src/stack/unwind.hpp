// User stacks of a ptrace-stopped thread: libdw's unwinder (DWARF CFI from
// .eh_frame/.debug_frame, which also covers code without frame pointers),
// symbolized with function+offset, source file:line, and the functions
// inlined at each pc as frames of their own.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "uprobe/result.hpp"

namespace uprobe::stack {

struct Frame {
    uint64_t pc = 0;         // the return address for callers (pc of frame 0)
    std::string function;    // demangled; "" when no symbol covers pc
    uint64_t offset = 0;     // pc - function start
    std::string object;      // file of the mapping (basename)
    std::string file;        // source file when DWARF knows it, else ""
    int line = 0;
    bool inlined = false;    // a function inlined into the next frame
};

// Unwinds thread `tid` of process `pid`, which the caller holds in a
// ptrace stop (the calling thread must be its tracer). At most `max_frames`
// physical frames.
Result<std::vector<Frame>> unwind_stopped(pid_t pid, pid_t tid, size_t max_frames = 64);

// Unwinds many stops cheaply: the modules of each process (and their
// debug info) are read once and kept until the process's mappings change
// (a frame in no known module triggers one re-read) or forget() is called.
// Not thread-safe; use it from the tracer's thread.
class Unwinder {
public:
    Unwinder();
    ~Unwinder();
    Unwinder(const Unwinder&) = delete;
    Unwinder& operator=(const Unwinder&) = delete;

    Result<std::vector<Frame>> unwind(pid_t pid, pid_t tid, size_t max_frames = 64);
    void forget(pid_t pid);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// "main+0x1c (prog.c:42)"-style text of one frame.
std::string describe(const Frame& frame);

}  // namespace uprobe::stack
