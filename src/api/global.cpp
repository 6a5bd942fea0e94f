#include "api/global.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "base/strings.hpp"
#include "probe/resolve.hpp"
#include "proc/proc.hpp"

namespace uprobe::api {

bool filter_admits(const ProcessFilter& filter, const proc::ProcessInfo& info) {
    if (!filter.pids.empty() && std::find(filter.pids.begin(), filter.pids.end(), info.pid) == filter.pids.end())
        return false;
    if (!filter.uids.empty() && std::find(filter.uids.begin(), filter.uids.end(), info.uid) == filter.uids.end())
        return false;
    if (!filter.comm.empty() && !glob_match(filter.comm, info.comm)) return false;
    if (!filter.cgroup.empty() && !proc::cgroup_within(info.cgroup, filter.cgroup)) return false;
    if (!filter.exe.empty()) {
        struct stat want{}, have{};
        if (info.exe.empty() || ::stat(filter.exe.c_str(), &want) != 0) return false;
        std::string exe = "/proc/" + std::to_string(info.pid) + "/exe";
        if (::stat(exe.c_str(), &have) != 0) return false;
        if (want.st_dev != have.st_dev || want.st_ino != have.st_ino) return false;
    }
    return true;
}

GlobalWatcher::GlobalWatcher(engine::Engine& engine, std::vector<ProbeSpec> probes, ProcessFilter filter,
                             unsigned interval_ms, std::function<void(std::string_view)> note)
    : engine_(engine), probes_(std::move(probes)), filter_(std::move(filter)),
      interval_ms_(std::max(1u, interval_ms)), note_(std::move(note)) {
    for (const auto& spec : probes_) {
        const std::string& bin = spec.location.binary;
        struct stat st{};
        if (bin.find('/') != std::string::npos && ::stat(bin.c_str(), &st) == 0) files_.emplace_back(st.st_dev, st.st_ino);
        else libraries_.push_back(bin);
    }
}

GlobalWatcher::~GlobalWatcher() { stop(); }

// Only /proc files are read here: a process the filter or its maps rule
// out is never attached, never stopped.
bool GlobalWatcher::wants(pid_t pid) {
    auto info = proc::read_process_info(pid);
    if (!info || !filter_admits(filter_, *info)) return false;
    auto maps = proc::read_maps(pid);
    if (!maps) return false;  // not ours to read: not ours to trace
    for (const auto& m : *maps) {
        if (m.inode == 0 || !m.exec) continue;
        for (const auto& [device, inode] : files_)
            if (m.device == device && m.inode == inode) return true;
        for (const auto& library : libraries_)
            if (probe::Resolver::binary_matches(library, m.path)) return true;
    }
    return false;
}

void GlobalWatcher::consider(pid_t pid) {
    if (pid == ::getpid() || pid == ::getppid() || handed_.count(pid)) return;
    if (!wants(pid)) return;
    handed_.insert(pid);
    if (note_) note_("global: process " + std::to_string(pid) + " maps a probed binary");
    engine_.add_process(pid);
}

void GlobalWatcher::scan() {
    auto pids = proc::list_processes();
    if (!pids) return;
    std::set<pid_t> alive(pids->begin(), pids->end());
    // A pid that is gone may come back as another process.
    for (auto it = handed_.begin(); it != handed_.end();) it = alive.count(*it) ? std::next(it) : handed_.erase(it);
    for (pid_t pid : *pids) consider(pid);
}

void GlobalWatcher::start() {
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
    if (auto events = proc::ProcessEvents::open()) {
        events_ = std::move(*events);
        if (note_) note_("global: new processes reported by the kernel's process-event connector");
    } else if (note_) {
        note_("global: new processes found by scanning /proc every " + std::to_string(interval_ms_) + " ms (" +
              events.error().message() + ")");
    }
    thread_ = std::thread([this] { loop(); });
}

void GlobalWatcher::loop() {
    auto next_scan = std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms_);
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next_scan - std::chrono::steady_clock::now());
        pollfd fds[2] = {{stop_fd_, POLLIN, 0}, {events_ ? events_->fd() : -1, POLLIN, 0}};
        int n = ::poll(fds, 2, static_cast<int>(std::max<int64_t>(0, left.count())));
        if (n < 0 && errno != EINTR) break;
        if (fds[0].revents) break;
        if (n > 0 && fds[1].revents) {
            bool overflowed = false;
            for (pid_t pid : events_->read(&overflowed)) consider(pid);
            if (overflowed) scan();
        }
        if (std::chrono::steady_clock::now() >= next_scan) {
            scan();
            next_scan = std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms_);
        }
    }
}

void GlobalWatcher::stop() {
    if (stop_fd_ >= 0) {
        uint64_t one = 1;
        (void)!::write(stop_fd_, &one, sizeof one);
    }
    if (thread_.joinable()) thread_.join();
    if (stop_fd_ >= 0) ::close(stop_fd_);
    stop_fd_ = -1;
}

}  // namespace uprobe::api
