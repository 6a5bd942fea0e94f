// `uprobe hold`: the first matching hit is held at the probe; --gdb leaves
// the process stopped there for gdb (checked with gdb in batch mode: $pc,
// a variable, and the backtrace against ours); the interactive prompt is
// driven through stdin.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <regex>

#include "process.hpp"

namespace uprobe::test {
namespace {

std::string status_field(pid_t pid, const std::string& name) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind(name + ":", 0) == 0) {
            size_t at = line.find_first_not_of(" \t", name.size() + 1);
            return at == std::string::npos ? "" : line.substr(at);
        }
    return "";
}

std::string probe() { return target_path("global_worker") + ":global_tick i=%di twice=%si"; }

// "#N  0xPC FUNC+0xOFF at FILE:LINE" lines of our backtrace, as (FUNC, LINE).
std::vector<std::pair<std::string, int>> our_frames(const std::string& out) {
    std::vector<std::pair<std::string, int>> frames;
    static const std::regex frame(R"(^#\d+\s+0x[0-9a-f]+ ([A-Za-z_][A-Za-z0-9_]*)\S* at \S+:(\d+))");
    for (const auto& line : lines_of(out)) {
        std::smatch m;
        if (std::regex_search(line, m, frame)) frames.emplace_back(m[1], std::stoi(m[2]));
    }
    return frames;
}

// gdb's "#N  [0xPC in ]FUNC (ARGS) at FILE:LINE" lines, as (FUNC, LINE).
std::vector<std::pair<std::string, int>> gdb_frames(const std::string& out) {
    std::vector<std::pair<std::string, int>> frames;
    static const std::regex frame(R"(^#\d+\s+(?:0x[0-9a-f]+ in )?([A-Za-z_][A-Za-z0-9_]*) \(.*\) at \S+:(\d+))");
    for (const auto& line : lines_of(out)) {
        std::smatch m;
        if (std::regex_search(line, m, frame)) frames.emplace_back(m[1], std::stoi(m[2]));
    }
    return frames;
}

TEST(CliHold, GdbFindsTheProcessStoppedAtTheProbe) {
    Background worker({target_path("global_worker"), "gw_gdb"});
    ASSERT_TRUE(worker.wait_for_line("ready"));
    const std::string pid = std::to_string(worker.pid());
    auto r = run({uprobe_path(), "hold", "-p", pid, probe(), "--if", "i >= 5", "--gdb"});
    ASSERT_EQ(r.status, 0) << r.describe();
    ASSERT_NE(r.out.find("gdb -p " + pid), std::string::npos) << r.describe();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(global_tick: \((0x[0-9a-f]+)\) i=(\d+) twice=)"))) << r.out;
    const std::string pc = m[1], i = m[2];
    EXPECT_GE(std::stol(i), 5);
    // Stopped (group-stop), traced by nobody, our int3 gone.
    EXPECT_EQ(status_field(worker.pid(), "State").substr(0, 1), "T");
    EXPECT_EQ(status_field(worker.pid(), "TracerPid"), "0");
    auto gdb = run({"gdb", "-nx", "-batch", "-p", pid, "-ex", "p/x $pc", "-ex", "bt", "-ex", "frame 1", "-ex",
                    "p calls", "-ex", "x/1xb $pc"});
    EXPECT_NE(gdb.out.find("$1 = " + pc), std::string::npos) << gdb.describe();
    EXPECT_NE(gdb.out.find("$2 = " + i), std::string::npos) << gdb.describe();
    EXPECT_EQ(gdb.out.find(":\t0xcc"), std::string::npos) << "int3 left behind\n" << gdb.describe();
    // Our backtrace (libdw's unwinder at the same stop) names the same
    // functions at the same lines as gdb's bt.
    auto ours = our_frames(r.out), theirs = gdb_frames(gdb.out);
    ASSERT_GE(ours.size(), 2u) << r.out;
    ASSERT_GE(theirs.size(), 2u) << gdb.out;
    EXPECT_EQ(ours[0], theirs[0]);
    EXPECT_EQ(ours[1], theirs[1]);
    EXPECT_EQ(ours[1].first, "main");
    worker.signal(SIGKILL);
}

TEST(CliHold, ThePromptInspectsContinuesAndDetaches) {
    Background worker({target_path("global_worker"), "gw_prompt"});
    ASSERT_TRUE(worker.wait_for_line("ready"));
    RunOptions options;
    options.stdin_text = "regs\nbt\nx $rsp 8\np i\np $rdi\np nosuch\ncontinue\np i\ndetach\n";
    auto r = run({uprobe_path(), "hold", "-p", std::to_string(worker.pid()), probe()}, options);
    ASSERT_EQ(r.status, 0) << r.describe();
    // Two holds, on consecutive calls: the second is i + 1.
    std::vector<long> held;
    static const std::regex event(R"(global_tick: \(0x[0-9a-f]+\) i=(\d+) twice=(\d+))");
    for (const auto& line : lines_of(r.out)) {
        std::smatch m;
        if (std::regex_search(line, m, event)) {
            held.push_back(std::stol(m[1]));
            EXPECT_EQ(std::stol(m[2]), 2 * std::stol(m[1]));
        }
    }
    ASSERT_EQ(held.size(), 2u) << r.out;
    EXPECT_EQ(held[1], held[0] + 1);
    EXPECT_NE(r.out.find("(uprobe) "), std::string::npos);
    EXPECT_NE(r.out.find("i = " + std::to_string(held[0])), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("i = " + std::to_string(held[1])), std::string::npos) << r.out;
    EXPECT_TRUE(std::regex_search(r.out, std::regex("\\$rdi = 0x[0-9a-f]+"))) << r.out;
    EXPECT_NE(r.out.find("'nosuch' is not an arg"), std::string::npos) << r.out;
    EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(0x[0-9a-f]+:( [0-9a-f]{2}){8})"))) << r.out;
    EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(#1\s+0x[0-9a-f]+ main\+0x)"))) << r.out;
    // Detached: runs on untraced, every call intact.
    EXPECT_EQ(status_field(worker.pid(), "TracerPid"), "0");
    worker.signal(SIGTERM);
    auto w = worker.wait();
    EXPECT_EQ(w.status, 0) << w.describe();
    EXPECT_NE(w.out.find("calls>0=1 bad=0"), std::string::npos) << w.describe();
}

TEST(CliHold, UsageErrors) {
    auto r = run({uprobe_path(), "hold", probe()});
    EXPECT_EQ(r.status, 2) << r.describe();
    r = run({uprobe_path(), "hold", probe(), "--if", "i >", "--", "true"});
    EXPECT_EQ(r.status, 2) << r.describe();
    EXPECT_NE(r.err.find("^"), std::string::npos) << r.describe();
}

}  // namespace
}  // namespace uprobe::test

namespace uprobe::test {
namespace {

// --gdb-server: gdb connects with `target remote`, reads $pc and a
// variable, sets a breakpoint, continues to it twice (consecutive calls),
// steps, and detaches; the program then runs on untraced and intact.
TEST(CliHold, GdbRemoteProtocolReadsContinuesAndDetaches) {
    Background worker({target_path("global_worker"), "gw_remote"});
    ASSERT_TRUE(worker.wait_for_line("ready"));
    Background holder({uprobe_path(), "hold", "-p", std::to_string(worker.pid()), probe(), "--gdb-server", "0"});
    ASSERT_TRUE(holder.wait_for_text("target remote 127.0.0.1:")) << holder.out();
    ASSERT_TRUE(holder.wait_for_text("'\n"));
    std::smatch m;
    std::string out = holder.out();
    ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(target remote 127\.0\.0\.1:(\d+))")));
    const std::string port = m[1];
    ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(global_tick: \((0x[0-9a-f]+)\) i=(\d+) )")));
    const std::string pc = m[1];
    const long i = std::stol(m[2]);
    auto gdb = run({"gdb", "-nx", "-batch", "-ex", "file " + target_path("global_worker"), "-ex",
                    "target remote 127.0.0.1:" + port, "-ex", "p/x $pc", "-ex", "frame 1", "-ex", "p calls", "-ex",
                    "break global_tick", "-ex", "continue", "-ex", "continue", "-ex", "frame 1", "-ex", "p calls",
                    "-ex", "delete", "-ex", "stepi", "-ex", "detach"});
    EXPECT_NE(gdb.out.find("$1 = " + pc), std::string::npos) << gdb.describe();
    EXPECT_NE(gdb.out.find("$2 = " + std::to_string(i)), std::string::npos) << gdb.describe();
    // The first continue stops after the prologue of the held call, the
    // second in the next call.
    EXPECT_NE(gdb.out.find("$3 = " + std::to_string(i + 1)), std::string::npos) << gdb.describe();
    EXPECT_NE(gdb.out.find("Breakpoint 1, global_tick (i=" + std::to_string(i + 1)), std::string::npos)
        << gdb.describe();
    auto h = holder.wait();
    EXPECT_EQ(h.status, 0) << h.describe();
    EXPECT_EQ(status_field(worker.pid(), "TracerPid"), "0");
    worker.signal(SIGTERM);
    auto w = worker.wait();
    EXPECT_EQ(w.status, 0) << w.describe();
    EXPECT_NE(w.out.find("calls>0=1 bad=0"), std::string::npos) << w.describe();
}

}  // namespace
}  // namespace uprobe::test

namespace uprobe::test {
namespace {

// hold --global: the first matching process is held; another one that the
// prefilter leaves out is never touched.
TEST(CliHold, GlobalHoldTakesTheFirstMatchingProcess) {
    Background insider({target_path("global_worker"), "gw_hold_in"});
    Background outsider({target_path("global_worker"), "gw_hold_out"});
    ASSERT_TRUE(insider.wait_for_line("ready"));
    ASSERT_TRUE(outsider.wait_for_line("ready"));
    auto r = run({uprobe_path(), "hold", "-a", probe(), "--comm", "gw_hold_in", "--gdb"});
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_NE(r.out.find("gdb -p " + std::to_string(insider.pid())), std::string::npos) << r.describe();
    EXPECT_EQ(status_field(insider.pid(), "State").substr(0, 1), "T");
    EXPECT_EQ(status_field(outsider.pid(), "TracerPid"), "0");
    EXPECT_EQ(r.out.find(" " + std::to_string(outsider.pid()) + "/"), std::string::npos) << r.out;
    insider.signal(SIGKILL);
    outsider.signal(SIGTERM);
    auto w = outsider.wait();
    EXPECT_NE(w.out.find("calls>0=1 bad=0"), std::string::npos) << w.describe();
}

}  // namespace
}  // namespace uprobe::test
