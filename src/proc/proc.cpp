#include "proc/proc.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/strings.hpp"
#include "base/unique_fd.hpp"

namespace uprobe::proc {
namespace {

Result<std::string> read_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno_error("reading " + path, errno);
    std::string text;
    char buffer[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno_error("reading " + path, errno);
        }
        if (n == 0) break;
        text.append(buffer, static_cast<size_t>(n));
    }
    return text;
}

std::optional<uint64_t> parse_hex(std::string_view text) {
    if (text.empty() || text.size() > 16) return std::nullopt;
    uint64_t value = 0;
    for (char c : text) {
        int digit;
        if (c >= '0' && c <= '9') digit = c - '0';
        else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
        else return std::nullopt;
        value = value << 4 | static_cast<uint64_t>(digit);
    }
    return value;
}

}  // namespace

Result<std::vector<Mapping>> parse_maps(const std::string& text) {
    std::vector<Mapping> maps;
    for (std::string_view line : split(text, '\n')) {
        if (trim(line).empty()) continue;
        // start-end perms offset major:minor inode [path]
        std::vector<std::string_view> fields;
        size_t pos = 0;
        while (fields.size() < 4 && pos < line.size()) {
            size_t space = line.find(' ', pos);
            if (space == std::string_view::npos) space = line.size();
            fields.push_back(line.substr(pos, space - pos));
            pos = space + 1;
        }
        if (fields.size() < 4) return Error("malformed maps line '" + std::string(line) + "'");
        std::string_view rest = pos < line.size() ? line.substr(pos) : std::string_view();
        size_t inode_end = rest.find(' ');
        std::string_view inode_text = rest.substr(0, inode_end);
        std::string_view path = inode_end == std::string_view::npos ? std::string_view() : trim(rest.substr(inode_end));
        fields.push_back(inode_text);

        Mapping m;
        size_t dash = fields[0].find('-');
        size_t colon = fields[3].find(':');
        auto start = parse_hex(fields[0].substr(0, dash));
        auto end = dash == std::string_view::npos ? std::nullopt : parse_hex(fields[0].substr(dash + 1));
        auto offset = parse_hex(fields[2]);
        auto major = colon == std::string_view::npos ? std::nullopt : parse_hex(fields[3].substr(0, colon));
        auto minor = colon == std::string_view::npos ? std::nullopt : parse_hex(fields[3].substr(colon + 1));
        auto inode = parse_uint(fields[4]);
        if (!start || !end || !offset || !major || !minor || !inode || fields[1].size() != 4)
            return Error("malformed maps line '" + std::string(line) + "'");
        m.start = *start;
        m.end = *end;
        m.read = fields[1][0] == 'r';
        m.write = fields[1][1] == 'w';
        m.exec = fields[1][2] == 'x';
        m.shared = fields[1][3] == 's';
        m.file_offset = *offset;
        m.device = makedev(static_cast<unsigned>(*major), static_cast<unsigned>(*minor));
        m.inode = static_cast<ino_t>(*inode);
        m.path = std::string(path);
        maps.push_back(std::move(m));
    }
    return maps;
}

Result<std::vector<Mapping>> read_maps(pid_t pid) {
    UPROBE_TRY(std::string text, read_file("/proc/" + std::to_string(pid) + "/maps"));
    return parse_maps(text);
}

Result<std::vector<pid_t>> list_threads(pid_t pid) {
    std::string path = "/proc/" + std::to_string(pid) + "/task";
    DIR* dir = ::opendir(path.c_str());
    if (!dir) {
        if (errno == ENOENT) return Error("no process with pid " + std::to_string(pid));
        return errno_error("reading " + path, errno);
    }
    std::vector<pid_t> tids;
    while (dirent* entry = ::readdir(dir)) {
        if (auto tid = parse_uint(entry->d_name)) tids.push_back(static_cast<pid_t>(*tid));
    }
    ::closedir(dir);
    return tids;
}

std::string read_comm(pid_t pid, pid_t tid) {
    auto text = read_file("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/comm");
    if (!text) return "";
    std::string comm = std::move(text).value();
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    return comm;
}

Result<std::map<uint64_t, uint64_t>> read_auxv(pid_t pid) {
    UPROBE_TRY(std::string bytes, read_file("/proc/" + std::to_string(pid) + "/auxv"));
    std::map<uint64_t, uint64_t> auxv;
    for (size_t i = 0; i + 16 <= bytes.size(); i += 16) {
        uint64_t type, value;
        std::memcpy(&type, bytes.data() + i, 8);
        std::memcpy(&value, bytes.data() + i + 8, 8);
        if (type == 0) break;
        auxv[type] = value;
    }
    return auxv;
}

Result<pid_t> thread_group_of(pid_t tid) {
    UPROBE_TRY(std::string text, read_file("/proc/" + std::to_string(tid) + "/status"));
    for (std::string_view line : split(text, '\n')) {
        if (starts_with(line, "Tgid:")) {
            if (auto tgid = parse_uint(trim(line.substr(5)))) return static_cast<pid_t>(*tgid);
        }
    }
    return Error("no Tgid in /proc/" + std::to_string(tid) + "/status");
}

bool shadow_stack_enabled(std::string_view status_text) {
    constexpr std::string_view kKey = "x86_Thread_features:";  // not x86_Thread_features_locked:
    for (std::string_view line : split(status_text, '\n')) {
        if (!starts_with(line, kKey)) continue;
        // "x86_Thread_features:\tshstk wrss ": names separated by blanks.
        std::string_view rest = line.substr(kKey.size());
        while (!rest.empty()) {
            size_t begin = rest.find_first_not_of(" \t\r");
            if (begin == std::string_view::npos) break;
            rest.remove_prefix(begin);
            size_t end = std::min(rest.find_first_of(" \t\r"), rest.size());
            if (rest.substr(0, end) == "shstk") return true;
            rest.remove_prefix(end);
        }
        return false;
    }
    return false;
}

bool shadow_stacks_supported(std::string_view status_text) {
    for (std::string_view line : split(status_text, '\n'))
        if (starts_with(line, "x86_Thread_features:")) return true;
    return false;
}

bool kernel_has_user_shadow_stacks() {
    static const bool supported = [] {
        auto text = read_file("/proc/self/status");
        return text && shadow_stacks_supported(*text);
    }();
    return supported;
}

bool thread_has_shadow_stack(pid_t pid, pid_t tid) {
    auto text = read_file("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/status");
    return text && shadow_stack_enabled(*text);
}

Result<void> read_memory(pid_t pid, uint64_t address, void* out, size_t size) {
    iovec local{out, size};
    iovec remote{reinterpret_cast<void*>(address), size};
    ssize_t n = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n == static_cast<ssize_t>(size)) return {};
    std::string path = "/proc/" + std::to_string(pid) + "/mem";
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno_error("reading " + path, errno);
    ssize_t got = ::pread(fd.get(), out, size, static_cast<off_t>(address));
    if (got != static_cast<ssize_t>(size)) {
        char hex[32];
        std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(address));
        return Error(std::string("bad address ") + hex);
    }
    return {};
}

Result<void> write_memory(pid_t pid, uint64_t address, const void* data, size_t size) {
    std::string path = "/proc/" + std::to_string(pid) + "/mem";
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) return errno_error("opening " + path, errno);
    ssize_t n = ::pwrite(fd.get(), data, size, static_cast<off_t>(address));
    if (n != static_cast<ssize_t>(size)) {
        char hex[32];
        std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(address));
        return n < 0 ? errno_error(std::string("writing process ") + std::to_string(pid) + " memory at " + hex, errno)
                     : Error(std::string("short write to process memory at ") + hex);
    }
    return {};
}

std::optional<uint64_t> free_range_near(const std::vector<Mapping>& maps, uint64_t near, uint64_t size,
                                        uint64_t reach) {
    auto distance = [near](uint64_t a) { return a > near ? a - near : near - a; };
    std::optional<uint64_t> best;
    auto consider = [&](uint64_t gap_start, uint64_t gap_end) {
        if (gap_end < gap_start + size) return;
        uint64_t candidate = near < gap_start ? gap_start : (near + size > gap_end ? gap_end - size : near);
        candidate &= ~uint64_t{0xfff};
        if (candidate < gap_start || distance(candidate) >= reach) return;
        if (!best || distance(candidate) < distance(*best)) best = candidate;
    };
    uint64_t previous_end = 0x10000;  // above vm.mmap_min_addr
    for (const auto& m : maps) {
        if (m.start > previous_end) consider(previous_end, m.start);
        previous_end = std::max(previous_end, m.end);
    }
    constexpr uint64_t kUserEnd = 0x7ffffffff000;  // x86-64, 4-level paging
    if (previous_end < kUserEnd) consider(previous_end, kUserEnd);
    return best;
}

std::string host_path(pid_t pid, const std::string& path) {
    // Same root directory and same mount namespace: the path means the same
    // file to both of us. Otherwise go through the target's root, which
    // shows its own mounts (a container's, or a private tmpfs).
    auto same = [&](const char* ours_path, const std::string& theirs_path) {
        struct stat ours {}, theirs {};
        return ::stat(ours_path, &ours) == 0 && ::stat(theirs_path.c_str(), &theirs) == 0 &&
               ours.st_dev == theirs.st_dev && ours.st_ino == theirs.st_ino;
    };
    std::string proc_dir = "/proc/" + std::to_string(pid);
    if (same("/", proc_dir + "/root") && same("/proc/self/ns/mnt", proc_dir + "/ns/mnt")) return path;
    return proc_dir + "/root" + path;
}

}  // namespace uprobe::proc
