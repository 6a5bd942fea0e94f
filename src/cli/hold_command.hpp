// `uprobe hold`: the first matching hit's thread is held at the probe
// address for inspection — an interactive prompt, or handed to gdb.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace uprobe::cli {

struct HoldOptions {
    std::vector<std::string> probes;   // one spec per word
    std::vector<pid_t> pids;           // -p (with --global: a prefilter)
    std::vector<std::string> command;  // after --
    bool global = false;               // -a/--global, with the prefilters below
    std::vector<uid_t> uids;
    std::string comm;
    std::string cgroup;
    std::string exe;
    std::string condition;             // --if EXPR
    bool gdb = false;                  // --gdb: leave the process stopped for gdb -p
    std::string gdb_server;            // --gdb-server [HOST:]PORT
    bool all_stop = false;             // --all-stop: gdb sees every thread, all stopped while it has control
    bool verbose = false;              // -v: progress notes (on stdout, with the rest)
    size_t string_max = 256;
};

// The prompt reads commands from stdin (see hold_command.cpp for the list);
// end of input detaches. With --gdb or --gdb-server the held process is
// handed over and every other traced process stays traced, its hits
// printed, until the user quits (SIGINT, SIGTERM) or they all end; the gdb
// server runs in a process of its own (the tracer's waitpid would take its
// stops otherwise) and the command returns once gdb is done with it.
// Returns 0 after a hold, 1 when the traced processes ended without a
// matching hit or on a runtime error, 2 on bad usage.
int run_hold(const HoldOptions& options);

}  // namespace uprobe::cli
