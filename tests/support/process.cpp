#include "process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace uprobe::test {
namespace {

pid_t spawn(const std::vector<std::string>& argv, const RunOptions& o, int* out_fd, int* err_fd) {
    int out[2], err[2], in[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(in, O_CLOEXEC)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        for (const auto& [k, v] : o.env) setenv(k.c_str(), v.c_str(), 1);
        if (o.gid) {
            setgroups(0, nullptr);
            if (setgid(*o.gid) != 0) _exit(126);
        }
        if (o.uid && setuid(*o.uid) != 0) _exit(126);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        execvp(args[0], args.data());
        dprintf(2, "exec %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    close(in[0]);
    if (!o.stdin_text.empty()) {
        (void)!write(in[1], o.stdin_text.data(), o.stdin_text.size());
    }
    close(in[1]);
    *out_fd = out[0];
    *err_fd = err[0];
    return pid;
}

// Reads whatever is available on the two pipes until `stop()` or EOF on
// both or the deadline. Returns false on deadline.
template <class Stop>
bool pump(int& out_fd, int& err_fd, std::string& out, std::string& err,
          std::chrono::steady_clock::time_point deadline, Stop stop) {
    char buf[65536];
    while (out_fd >= 0 || err_fd >= 0) {
        if (stop()) return true;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
        int n = poll(fds, 2, int(std::min<long>(left.count(), 1000)));
        if (n < 0 && errno != EINTR) return false;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            if (got > 0) {
                (i == 0 ? out : err).append(buf, size_t(got));
            } else if (got == 0 || errno != EINTR) {
                close(fds[i].fd);
                (i == 0 ? out_fd : err_fd) = -1;
            }
        }
    }
    return true;
}

int decode(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

}  // namespace

std::string RunResult::describe() const {
    std::ostringstream s;
    s << "status " << status << (timed_out ? " (killed by the test watchdog)" : "") << "\n--- stdout ---\n"
      << out.substr(0, 4000) << "\n--- stderr ---\n" << err.substr(0, 4000);
    return s.str();
}

RunResult run(const std::vector<std::string>& argv, const RunOptions& options) {
    Background bg(argv, options);
    return bg.wait();
}

Background::Background(const std::vector<std::string>& argv, const RunOptions& options)
    : deadline_(std::chrono::steady_clock::now() + options.timeout) {
    pid_ = spawn(argv, options, &out_fd_, &err_fd_);
}

Background::~Background() {
    if (pid_ > 0 && !reaped_) {
        kill(-pid_, SIGKILL);
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) close(out_fd_);
    if (err_fd_ >= 0) close(err_fd_);
}

void Background::signal(int sig) {
    if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

bool Background::wait_for_line(const std::string& line, std::chrono::seconds timeout) {
    auto deadline = std::min(deadline_, std::chrono::steady_clock::now() + timeout);
    bool seen = false;
    auto check = [&] {
        size_t pos;
        while ((pos = out_.find('\n', scanned_)) != std::string::npos) {
            if (out_.compare(scanned_, pos - scanned_, line) == 0) seen = true;
            scanned_ = pos + 1;
            if (seen) return true;
        }
        return false;
    };
    pump(out_fd_, err_fd_, out_, err_, deadline, check);
    return seen;
}

bool Background::wait_for_text(const std::string& text, std::chrono::seconds timeout) {
    auto deadline = std::min(deadline_, std::chrono::steady_clock::now() + timeout);
    auto seen = [&] { return out_.find(text) != std::string::npos; };
    pump(out_fd_, err_fd_, out_, err_, deadline, seen);
    return seen();
}

RunResult Background::wait() {
    if (reaped_) return result_;
    result_.timed_out = !pump(out_fd_, err_fd_, out_, err_, deadline_, [] { return false; });
    if (result_.timed_out) {
        kill(-pid_, SIGKILL);
        kill(pid_, SIGKILL);
    }
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    result_.status = result_.timed_out ? -1 : decode(status);
    result_.out = out_;
    result_.err = err_;
    return result_;
}

TempDir::TempDir() {
    char tmpl[] = "/tmp/uprobe-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::filesystem::permissions(dir_, std::filesystem::perms::all);
}

TempDir::~TempDir() { std::filesystem::remove_all(dir_); }

std::string uprobe_path() { return std::string(UPROBE_BINARY_DIR) + "/uprobe"; }
std::string target_path(const std::string& name) { return std::string(UPROBE_TARGETS_DIR) + "/" + name; }

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
}

std::optional<std::pair<uid_t, gid_t>> unprivileged_user() {
    if (const passwd* pw = getpwnam("nobody")) return std::make_pair(pw->pw_uid, pw->pw_gid);
    return std::nullopt;
}

std::pair<int, int> memory_and_file_byte(pid_t pid, uint64_t address) {
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    for (std::string line; std::getline(maps, line);) {
        uint64_t start = 0, end = 0, offset = 0;
        char perms[8] = {}, path[512] = {};
        if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx %*s %*s %511s", &start, &end, perms, &offset, path) < 5) continue;
        if (address < start || address >= end) continue;
        std::ifstream mem("/proc/" + std::to_string(pid) + "/mem", std::ios::binary);
        mem.seekg(static_cast<std::streamoff>(address));
        int in_memory = mem.get();
        std::ifstream file(path, std::ios::binary);
        file.seekg(static_cast<std::streamoff>(address - start + offset));
        return {in_memory, file.get()};
    }
    return {-1, -2};
}

}  // namespace uprobe::test
