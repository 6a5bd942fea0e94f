// Helpers of the engine tests: spec parsing, event collection, stdout
// capture of launched targets, untraced reference runs and a watchdog that
// turns a hang into a failure.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::engine::test {

inline std::string target(const std::string& name) { return std::string(UPROBE_TARGETS_DIR) + "/" + name; }

inline ProbeSpec spec(const std::string& text) {
    ParsedSpec parsed = parse_probe_spec(text);
    if (!parsed.spec) {
        ADD_FAILURE() << "bad spec '" << text << "': " << (parsed.error ? parsed.error->message : "?");
        return {};
    }
    return *parsed.spec;
}

class Collector : public EventConsumer {
public:
    void on_event(const Event& event) override {
        events.push_back(event);
        if (after_event) after_event(event);
    }
    void on_note(std::string_view line) override { notes.emplace_back(line); }
    std::vector<Event> events;
    std::vector<std::string> notes;
    std::function<void(const Event&)> after_event;
};

// Kills the watched processes and stops the engine when a test runs longer
// than `limit`; the test then fails instead of hanging.
class Watchdog {
public:
    explicit Watchdog(Engine& engine, std::chrono::seconds limit = std::chrono::seconds(60))
        : engine_(engine), thread_([this, limit] {
              std::unique_lock lock(mutex_);
              if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
                  fired_ = true;
                  for (pid_t pid : pids_)
                      if (pid > 0) ::kill(pid, SIGKILL);
                  engine_.stop();
              }
          }) {}
    ~Watchdog() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        cv_.notify_all();
        thread_.join();
        EXPECT_FALSE(fired_.load()) << "watchdog: the test hung and its processes were killed";
    }
    void watch(pid_t pid) {
        std::lock_guard lock(mutex_);
        pids_.push_back(pid);
    }

private:
    Engine& engine_;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::atomic<bool> fired_{false};
    std::vector<pid_t> pids_;
    std::thread thread_;
};

// Redirects our stdout into a temporary file while it lives, so a command
// the engine launches writes there.
class CapturedStdout {
public:
    CapturedStdout() {
        char name[] = "/tmp/uprobe-engine-test-XXXXXX";
        fd_ = ::mkstemp(name);
        path_ = name;
        std::fflush(stdout);
        saved_ = ::dup(1);
        ::dup2(fd_, 1);
    }
    void restore() {
        if (saved_ < 0) return;
        std::fflush(stdout);
        ::dup2(saved_, 1);
        ::close(saved_);
        saved_ = -1;
    }
    ~CapturedStdout() {
        restore();
        ::close(fd_);
        ::unlink(path_.c_str());
    }
    std::string text() const {
        std::ifstream in(path_);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }

private:
    int fd_ = -1, saved_ = -1;
    std::string path_;
};

// The output of an untraced run.
inline std::string run_untraced(const std::vector<std::string>& argv) {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) return "pipe failed";
    pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(pipe_fds[1], 1);
        ::close(pipe_fds[0]);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    std::string out;
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<size_t>(n));
    ::close(pipe_fds[0]);
    int status;
    ::waitpid(pid, &status, 0);
    return out;
}

// Output of a command run through popen (nm and friends).
inline std::string shell(const std::string& command) {
    std::string out;
    FILE* f = ::popen(command.c_str(), "r");
    if (!f) return out;
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) out.append(buffer, n);
    ::pclose(f);
    return out;
}

// Link-time address of `symbol` in `binary`, by nm.
inline uint64_t nm_address(const std::string& binary, const std::string& symbol) {
    std::istringstream lines(shell("nm " + binary));
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream words(line);
        std::string address, kind, name;
        if (words >> address >> kind >> name && name == symbol) return std::stoull(address, nullptr, 16);
    }
    ADD_FAILURE() << "nm finds no " << symbol << " in " << binary;
    return 0;
}

// Launches `argv` under the engine with `probes`, runs it to the end and
// returns its exit status; stdout goes to `output`.
struct LaunchResult {
    int status = -1;
    std::string output;
    std::vector<Event> events;
    std::vector<pid_t> processes;
    std::vector<ProbeStats> stats;
    std::vector<std::string> notes;
    std::string error;
};

// The inline engine loads the agent built beside these tests.
class AgentBesideTheBuild : public ::testing::Environment {
public:
    void SetUp() override { ::setenv("UPROBE_AGENT", UPROBE_BINARY_DIR "/libuprobe-agent.so", 1); }
};
inline const auto* const g_agent_env = ::testing::AddGlobalTestEnvironment(new AgentBesideTheBuild);

// Starts a target with stdin and stdout on pipes and waits for "ready".
struct Child {
    pid_t pid = -1;
    int out = -1, in = -1;
    explicit Child(const std::string& name, std::vector<std::string> args = {}) {
        int to_child[2], from_child[2];
        EXPECT_EQ(::pipe(to_child), 0);
        EXPECT_EQ(::pipe(from_child), 0);
        pid = ::fork();
        if (pid == 0) {
            ::dup2(to_child[0], 0);
            ::dup2(from_child[1], 1);
            ::close(to_child[1]);
            ::close(from_child[0]);
            std::string path = target(name);
            std::vector<char*> argv = {path.data()};
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(path.c_str(), argv.data());
            ::_exit(127);
        }
        ::close(to_child[0]);
        ::close(from_child[1]);
        in = to_child[1];
        out = from_child[0];
        EXPECT_EQ(read_line(), "ready");
    }
    std::string read_line() {
        std::string line;
        char c;
        while (::read(out, &c, 1) == 1 && c != '\n') line += c;
        return line;
    }
    void write_line(const std::string& line) {
        std::string text = line + "\n";
        EXPECT_EQ(::write(in, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    }
    // Reaps the child; true when it exited with status 0.
    bool exited_cleanly() {
        int wstatus = 0;
        pid_t got = ::waitpid(pid, &wstatus, 0);
        pid = -1;
        return got > 0 && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
    }
    ~Child() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        ::close(out);
        ::close(in);
    }
};

// `engine`: "ptrace" or "inline".
inline LaunchResult launch(const std::vector<std::string>& probes, const std::vector<std::string>& argv,
                           bool follow = false, const std::string& engine_name = "ptrace") {
    LaunchResult result;
    auto engine = engine_name == "inline" ? make_inline_engine() : make_ptrace_engine();
    Watchdog watchdog(*engine);
    Collector collector;
    TraceRequest request;
    for (const auto& p : probes) request.probes.push_back(spec(p));
    request.command = argv;
    request.follow_children = follow;
    CapturedStdout capture;
    auto started = engine->start(request, collector);
    capture.restore();
    if (!started) {
        result.error = started.error().message();
        return result;
    }
    for (pid_t pid : engine->traced_processes()) watchdog.watch(pid);
    auto status = engine->run();
    if (!status) result.error = status.error().message();
    else result.status = *status;
    result.output = capture.text();
    result.events = std::move(collector.events);
    result.notes = std::move(collector.notes);
    result.processes = engine->traced_processes();
    result.stats = engine->stats();
    return result;
}

}  // namespace uprobe::engine::test
