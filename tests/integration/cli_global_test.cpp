// `uprobe trace --global`: one probe, every process that maps the binary —
// those running before the tracer and those started after it — and
// prefilters that keep every other process untouched (never attached:
// TracerPid stays 0; never hit: no event carries its pid).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <sstream>

#include "process.hpp"

namespace uprobe::test {
namespace {

// Tracer of `pid` per /proc/PID/status, or -1 when the process is gone.
int tracer_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("TracerPid:", 0) == 0) return std::stoi(line.substr(10));
    return -1;
}

// pids that appear in text-format events ("comm  PID/TID  SECONDS: probe: ...").
std::set<pid_t> event_pids(const std::string& out) {
    std::set<pid_t> pids;
    static const std::regex event(R"(^\s*\S+\s+(\d+)/(\d+)\s+[0-9.]+: tick: )");
    for (const auto& line : lines_of(out)) {
        std::smatch m;
        if (std::regex_search(line, m, event)) pids.insert(std::stoi(m[1]));
    }
    return pids;
}

// Worker names carry this test process's pid: ctest runs the cases of
// both engines at once, and a global tracer must see only its own.
std::string named(const std::string& name) { return "g" + std::to_string(::getpid() % 100000) + "_" + name; }

std::unique_ptr<Background> worker(const std::string& name) {
    auto w = std::make_unique<Background>(std::vector<std::string>{target_path("global_worker"), name});
    EXPECT_TRUE(w->wait_for_line("ready"));
    return w;
}

std::string probe() { return "tick=" + target_path("global_worker") + ":global_tick i=%di twice=%si"; }

// Whether the inline engine's agent is in `pid` (it stays after a detach).
bool has_agent(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
    std::string maps((std::istreambuf_iterator<char>(in)), {});
    return maps.find("libuprobe-agent.so") != std::string::npos;
}

// Every case once per engine.
class CliGlobal : public ::testing::TestWithParam<std::string> {};

// Ends a worker and checks it ran on unharmed: every call's arguments intact.
void finish_worker(Background& w) {
    w.signal(SIGTERM);
    auto r = w.wait();
    EXPECT_EQ(r.status, 0) << r.describe();
    EXPECT_NE(r.out.find("calls>0=1 bad=0"), std::string::npos) << r.describe();
}

TEST_P(CliGlobal, RunningAndLaterProcessesAllHit) {
    std::vector<std::unique_ptr<Background>> workers;
    for (const char* name : {"one", "two", "three"}) workers.push_back(worker(named(name)));
    Background tracer({uprobe_path(), "trace", "--engine", GetParam(), "-a", probe(), "--comm", named("*")});
    for (auto& w : workers)
        ASSERT_TRUE(tracer.wait_for_text(" " + std::to_string(w->pid()) + "/")) << "no hit in " << w->pid();
    // Started after the tracer: found by the /proc scan.
    workers.push_back(worker(named("late")));
    ASSERT_TRUE(tracer.wait_for_text(" " + std::to_string(workers.back()->pid()) + "/")) << "late process never hit";
    tracer.signal(SIGINT);
    auto r = tracer.wait();
    EXPECT_EQ(r.status, 0) << r.describe();
    EXPECT_NE(r.err.find("processes traced: 4 (" + GetParam() + " engine)"), std::string::npos) << r.describe();
    std::set<pid_t> expected;
    for (auto& w : workers) expected.insert(w->pid());
    EXPECT_EQ(event_pids(r.out), expected);
    for (auto& w : workers) {
        EXPECT_EQ(tracer_of(w->pid()), 0) << "still traced after the tracer ended";
        finish_worker(*w);
    }
}

TEST_P(CliGlobal, PrefiltersLeaveOtherProcessesUntouched) {
    for (const std::string filter : {"--comm", "--pid"}) {
        auto insider = worker(named("insider"));
        auto outsider = worker(named("outsider"));
        std::string value = filter == "--comm" ? named("in*") : std::to_string(insider->pid());
        Background tracer({uprobe_path(), "trace", "--engine", GetParam(), "--global", probe(), filter, value});
        ASSERT_TRUE(tracer.wait_for_text(" " + std::to_string(insider->pid()) + "/")) << filter;
        // The outsider keeps calling the probed function all along; sample
        // its tracer over 300 more of the insider's hits (several scans).
        std::smatch first;
        std::string seen = tracer.out();
        ASSERT_TRUE(std::regex_search(seen, first, std::regex(R"( i=(\d+) twice=)")));
        long i0 = std::stol(first[1]);
        for (long k = 1; k <= 6; ++k) {
            ASSERT_EQ(tracer_of(outsider->pid()), 0) << filter << ": outsider attached";
            ASSERT_FALSE(has_agent(outsider->pid())) << filter << ": the agent went into the outsider";
            ASSERT_TRUE(tracer.wait_for_text(" i=" + std::to_string(i0 + 50 * k) + " twice="));
        }
        tracer.signal(SIGINT);
        auto r = tracer.wait();
        EXPECT_EQ(r.status, 0) << r.describe();
        EXPECT_EQ(event_pids(r.out), std::set<pid_t>{insider->pid()}) << filter;
        EXPECT_NE(r.err.find("processes traced: 1"), std::string::npos) << r.describe();
        EXPECT_EQ(tracer_of(outsider->pid()), 0);
        EXPECT_FALSE(has_agent(outsider->pid()));
        EXPECT_EQ(has_agent(insider->pid()), GetParam() == "inline");
        finish_worker(*insider);
        finish_worker(*outsider);
    }
}

INSTANTIATE_TEST_SUITE_P(Engines, CliGlobal, ::testing::Values("ptrace", "inline"));

TEST(CliGlobalUsage, UsageErrors) {
    auto r = run({uprobe_path(), "trace", "-a", "global_tick"});
    EXPECT_EQ(r.status, 1) << r.describe();
    EXPECT_NE(r.err.find("a global probe names its binary"), std::string::npos) << r.describe();
    r = run({uprobe_path(), "trace", "-a", probe(), "--", "true"});
    EXPECT_EQ(r.status, 2) << r.describe();
    r = run({uprobe_path(), "trace", probe(), "--comm", "x", "--", "true"});
    EXPECT_EQ(r.status, 2) << r.describe();
}

}  // namespace
}  // namespace uprobe::test
