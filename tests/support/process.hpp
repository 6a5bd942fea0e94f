// Running programs from tests: captured output, a watchdog, no sleeps.
//
// Every spawned process gets a deadline; past it the whole process group is
// killed with SIGKILL and the result says so, so a hang fails one test
// instead of blocking CI.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace uprobe::test {

struct RunOptions {
    std::chrono::seconds timeout{60};
    std::map<std::string, std::string> env;  // added to (or replacing) ours
    std::optional<uid_t> uid;                // run as this user (tests as root)
    std::optional<gid_t> gid;
    std::string stdin_text;
};

struct RunResult {
    int status = -1;       // exit code, 128+signal, or -1 when the watchdog fired
    bool timed_out = false;
    std::string out, err;
    std::string describe() const;  // for assertion messages
};

// Runs argv[0] (PATH searched) and waits for it.
RunResult run(const std::vector<std::string>& argv, const RunOptions& options = {});

// A process started in the background, killed (with its process group) on
// destruction if still running.
class Background {
public:
    Background(const std::vector<std::string>& argv, const RunOptions& options = {});
    ~Background();
    Background(const Background&) = delete;
    Background& operator=(const Background&) = delete;

    pid_t pid() const { return pid_; }
    // Reads stdout until a line equal to `line` has been seen (or EOF or
    // the deadline); returns whether it was seen. Lines read are kept.
    bool wait_for_line(const std::string& line, std::chrono::seconds timeout = std::chrono::seconds(30));
    // Reads stdout until it contains `text` (or EOF or the deadline).
    bool wait_for_text(const std::string& text, std::chrono::seconds timeout = std::chrono::seconds(30));
    // Everything read from stdout so far.
    const std::string& out() const { return out_; }
    // Waits for exit (the watchdog applies) and returns everything captured.
    RunResult wait();
    void signal(int sig);

private:
    pid_t pid_ = -1;
    int out_fd_ = -1, err_fd_ = -1;
    std::chrono::steady_clock::time_point deadline_;
    std::string out_, err_;
    size_t scanned_ = 0;
    bool reaped_ = false;
    RunResult result_;
};

// A fresh directory under /tmp, open to every user (tests that run as
// 'nobody' write there too), removed with everything in it.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string path(const std::string& name) const { return dir_ + "/" + name; }
    const std::string& dir() const { return dir_; }

private:
    std::string dir_;
};

// Paths of our own build: the uprobe binary and a test target program.
std::string uprobe_path();
std::string target_path(const std::string& name);

// `text` split into lines, without the newlines.
std::vector<std::string> lines_of(const std::string& text);

// An unprivileged account for no-root tests ("nobody" when it exists).
std::optional<std::pair<uid_t, gid_t>> unprivileged_user();

// The byte at `address` in process `pid`, and the byte the file mapped
// there holds (from /proc/PID/maps: offset into the file), so an int3 left
// behind shows as a difference; {-1, -2} when nothing is mapped there.
std::pair<int, int> memory_and_file_byte(pid_t pid, uint64_t address);

}  // namespace uprobe::test
