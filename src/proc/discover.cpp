#include "proc/discover.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "base/strings.hpp"
#include "base/unique_fd.hpp"

namespace uprobe::proc {
namespace {

Result<std::string> read_small_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno_error(path, errno);
    std::string text;
    char buffer[4096];
    for (;;) {
        ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error(path, errno);
        if (n == 0) break;
        text.append(buffer, static_cast<size_t>(n));
        if (text.size() > (1u << 20)) break;
    }
    return text;
}

}  // namespace

Result<std::vector<pid_t>> list_processes() {
    DIR* dir = ::opendir("/proc");
    if (!dir) return errno_error("/proc", errno);
    std::vector<pid_t> pids;
    while (dirent* entry = ::readdir(dir)) {
        auto n = parse_uint(entry->d_name);
        if (n && *n > 0 && *n <= INT_MAX && std::strncmp(entry->d_name, "0x", 2) != 0)
            pids.push_back(static_cast<pid_t>(*n));
    }
    ::closedir(dir);
    return pids;
}

Result<ProcessInfo> read_process_info(pid_t pid) {
    const std::string base = "/proc/" + std::to_string(pid);
    ProcessInfo info;
    info.pid = pid;
    UPROBE_TRY(std::string status, read_small_file(base + "/status"));
    bool have_uid = false;
    for (std::string_view line : split(status, '\n')) {
        if (!starts_with(line, "Uid:")) continue;
        auto fields = split(trim(line.substr(4)), '\t');
        if (!fields.empty())
            if (auto uid = parse_uint(trim(fields[0]))) {
                info.uid = static_cast<uid_t>(*uid);
                have_uid = true;
            }
        break;
    }
    if (!have_uid) return Error(base + "/status has no Uid line");
    if (auto comm = read_small_file(base + "/comm")) {
        info.comm = *comm;
        if (!info.comm.empty() && info.comm.back() == '\n') info.comm.pop_back();
    }
    char target[PATH_MAX];
    ssize_t n = ::readlink((base + "/exe").c_str(), target, sizeof target - 1);
    if (n > 0) info.exe.assign(target, static_cast<size_t>(n));
    if (auto cgroup = read_small_file(base + "/cgroup")) {
        for (std::string_view line : split(*cgroup, '\n'))
            if (starts_with(line, "0::")) info.cgroup = std::string(line.substr(3));
    }
    return info;
}

Result<ProcessEvents> ProcessEvents::open() {
    int fd = ::socket(PF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (fd < 0) return errno_error("process-event connector", errno);
    ProcessEvents events(fd);
    sockaddr_nl address{};
    address.nl_family = AF_NETLINK;
    address.nl_groups = CN_IDX_PROC;
    address.nl_pid = 0;  // the kernel assigns a port id
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
        return errno_error("process-event connector: bind", errno);
    // The subscription: a netlink message carrying a cn_msg carrying
    // PROC_CN_MCAST_LISTEN.
    alignas(nlmsghdr) char request[NLMSG_LENGTH(sizeof(cn_msg) + sizeof(uint32_t))] = {};
    auto* header = reinterpret_cast<nlmsghdr*>(request);
    header->nlmsg_len = sizeof request;
    header->nlmsg_type = NLMSG_DONE;
    header->nlmsg_pid = static_cast<uint32_t>(::getpid());
    auto* message = static_cast<cn_msg*>(NLMSG_DATA(header));
    message->id.idx = CN_IDX_PROC;
    message->id.val = CN_VAL_PROC;
    message->len = sizeof(uint32_t);
    const uint32_t operation = PROC_CN_MCAST_LISTEN;
    std::memcpy(message->data, &operation, sizeof operation);
    if (::send(fd, request, sizeof request, 0) != static_cast<ssize_t>(sizeof request))
        return errno_error("process-event connector: subscribe", errno);
    return events;
}

ProcessEvents::ProcessEvents(ProcessEvents&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

ProcessEvents& ProcessEvents::operator=(ProcessEvents&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

ProcessEvents::~ProcessEvents() {
    if (fd_ >= 0) ::close(fd_);
}

std::vector<pid_t> ProcessEvents::read(bool* overflowed) {
    std::vector<pid_t> pids;
    alignas(nlmsghdr) char buffer[8192];
    for (;;) {
        ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == ENOBUFS && overflowed) *overflowed = true;
            if (errno == ENOBUFS) continue;
            break;  // EAGAIN: drained
        }
        if (n == 0) break;
        size_t left = static_cast<size_t>(n);
        for (auto* header = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(header, left);
             header = NLMSG_NEXT(header, left)) {
            if (header->nlmsg_type == NLMSG_ERROR || header->nlmsg_type == NLMSG_NOOP) continue;
            if (header->nlmsg_len < NLMSG_LENGTH(sizeof(cn_msg) + sizeof(proc_event))) continue;
            auto* message = static_cast<cn_msg*>(NLMSG_DATA(header));
            if (message->id.idx != CN_IDX_PROC || message->len < sizeof(proc_event)) continue;
            proc_event event;
            std::memcpy(&event, message->data, sizeof event);
            if (event.what == proc_event::PROC_EVENT_EXEC) pids.push_back(event.event_data.exec.process_tgid);
            // A fork copies the parent's mappings: the child may map the binary.
            if (event.what == proc_event::PROC_EVENT_FORK &&
                event.event_data.fork.child_pid == event.event_data.fork.child_tgid)
                pids.push_back(event.event_data.fork.child_tgid);
        }
    }
    return pids;
}

std::string process_state(pid_t pid) {
    auto stat = read_small_file("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) return "";
    // "PID (COMM) S ...": the comm may contain spaces and parentheses.
    size_t close = stat->rfind(')');
    if (close == std::string::npos || close + 2 >= stat->size()) return "";
    return stat->substr(close + 2, 1);
}

bool cgroup_within(const std::string& cgroup, const std::string& path) {
    std::string want = path;
    while (want.size() > 1 && want.back() == '/') want.pop_back();
    if (want == "/") return !cgroup.empty();
    if (!starts_with(cgroup, want)) return false;
    return cgroup.size() == want.size() || cgroup[want.size()] == '/';
}

}  // namespace uprobe::proc
