// Global targets: a background /proc scan that hands every process mapping
// a probe's binary, and passing the prefilter, to the engine.
//
// How soon a new process is covered: as root, the kernel's process-event
// connector reports each exec and fork as it happens, and the process is
// attached within about a millisecond (libraries it maps later are found by
// the next scan); otherwise within one scan period (100 ms by default) of
// the moment it maps the binary. Hits before that are missed. See
// docs/global.md.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "engine/engine.hpp"
#include "proc/discover.hpp"
#include "uprobe/session.hpp"

namespace uprobe::api {

// Whether `info` passes every criterion of `filter`.
bool filter_admits(const ProcessFilter& filter, const proc::ProcessInfo& info);

class GlobalWatcher {
public:
    // Every probe must name its binary (checked by the caller).
    GlobalWatcher(engine::Engine& engine, std::vector<ProbeSpec> probes, ProcessFilter filter,
                  unsigned interval_ms, std::function<void(std::string_view)> note);
    ~GlobalWatcher();  // stops the scan
    // One scan now, on the caller's thread (start-up: the processes there
    // already are get their probes before run() delivers anything).
    void scan();
    void start();
    void stop();

private:
    bool wants(pid_t pid);
    void consider(pid_t pid);
    void loop();

    engine::Engine& engine_;
    std::vector<ProbeSpec> probes_;
    std::vector<std::pair<dev_t, ino_t>> files_;  // probes naming a path
    std::vector<std::string> libraries_;         // probes naming a library
    ProcessFilter filter_;
    unsigned interval_ms_;
    std::function<void(std::string_view)> note_;
    std::set<pid_t> handed_;  // given to the engine (never twice)
    std::optional<proc::ProcessEvents> events_;  // root only
    std::thread thread_;
    int stop_fd_ = -1;  // an eventfd: stop() wakes the loop's poll
};

}  // namespace uprobe::api
