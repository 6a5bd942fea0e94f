// `uprobe list`: what can be probed in a binary or a running process.
#pragma once

#include <sys/types.h>

#include <string>

namespace uprobe::cli {

struct ListOptions {
    std::string binary;     // -x BIN
    pid_t pid = 0;          // -p PID: every object the process maps
    std::string pattern;    // function glob (default: all)
    bool sdt = false;       // --sdt: markers instead of functions
    std::string lines;      // --lines FUNC: probe-able source lines
    std::string vars;       // --vars LOCATION: variables at a probe point
    std::string sites;      // --sites PROBE: each site and how the inline engine patches it
    bool json = false;      // --format json
};

int run_list(const ListOptions& options);

}  // namespace uprobe::cli
