// `uprobe trace`: probes on a launched command or running processes.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace uprobe::cli {

struct TraceOptions {
    std::vector<std::string> probes;   // one spec per word
    std::vector<pid_t> pids;           // -p
    std::vector<std::string> command;  // after --
    std::string output;                // -o FILE, empty: stdout
    std::string format = "text";       // text | json
    std::string engine = "auto";
    bool count = false;                // --count
    std::string count_by;              // --count[=probe|pid]: "" when not counting
    std::string stack;                 // --stack[=text|folded]: "" for no stacks
    bool follow = false;               // -f
    bool verbose = false;              // -v
    bool colocate = true;              // --no-colocate clears it
    bool no_drop = false;              // --no-drop
    size_t string_max = 256;
    bool latency = false;              // --latency: duration histograms of function probes
    std::string return_mode = "auto";  // --return-mode=insn|trampoline|auto
    std::string condition;             // --if EXPR
    bool global = false;               // -a/--global: -p, --uid, --comm, --cgroup,
    std::vector<uid_t> uids;           // --exe then choose processes instead
    std::string comm;                  // of naming them
    std::string cgroup;
    std::string exe;
};

// Returns the process exit code: the launched command's status, 0 after
// tracing running processes, 1 on a runtime error, 2 on bad usage.
int run_trace(const TraceOptions& options);

}  // namespace uprobe::cli
