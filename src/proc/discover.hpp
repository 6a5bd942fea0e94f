// Finding processes: what global probes need to decide, from /proc alone
// and without touching a process, whether it should ever be traced.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "uprobe/result.hpp"

namespace uprobe::proc {

// Every process id in /proc now (a snapshot: processes come and go).
Result<std::vector<pid_t>> list_processes();

struct ProcessInfo {
    pid_t pid = 0;
    uid_t uid = 0;       // real uid (Uid: of /proc/PID/status)
    std::string comm;    // /proc/PID/comm
    std::string exe;     // /proc/PID/exe as the kernel names it; "" when unreadable
    std::string cgroup;  // the cgroup v2 path ("0::PATH" of /proc/PID/cgroup); "" without v2
};

// Reads the facts above; fails when the process is gone. Fields that need
// more privilege than we have stay empty.
Result<ProcessInfo> read_process_info(pid_t pid);

// The kernel's process-event connector (NETLINK_CONNECTOR, CN_IDX_PROC;
// linux/cn_proc.h): every fork and exec in the system, reported as it
// happens. Subscribing needs CAP_NET_ADMIN (root), so open() fails for
// everyone else and the caller falls back to scanning /proc.
class ProcessEvents {
public:
    static Result<ProcessEvents> open();
    ProcessEvents(ProcessEvents&&) noexcept;
    ProcessEvents& operator=(ProcessEvents&&) noexcept;
    ~ProcessEvents();

    int fd() const { return fd_; }  // readable when events wait
    // Drains what is queued without blocking: the pids that just exec'd,
    // and the new processes of forks. A lost event (the socket's buffer
    // overflowed, ENOBUFS) sets *overflowed: rescan /proc then.
    std::vector<pid_t> read(bool* overflowed);

private:
    explicit ProcessEvents(int fd) : fd_(fd) {}
    int fd_ = -1;
};

// The one-letter state of /proc/PID/stat ("R", "S", "T", "t", "Z"...);
// "" when the process is gone.
std::string process_state(pid_t pid);

// Whether `cgroup` is `path` or below it ("/a/b" is under "/a", not "/ab").
bool cgroup_within(const std::string& cgroup, const std::string& path);

}  // namespace uprobe::proc
