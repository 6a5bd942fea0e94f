// `uprobe hold`: the first matching hit is held at the probe; --gdb leaves
// the process stopped there for gdb (checked with gdb in batch mode: $pc,
// a variable, and the backtrace against ours); the interactive prompt is
// driven through stdin.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
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

// The port `uprobe hold --gdb-server 0` chose, from its line "target
// remote 127.0.0.1:PORT", once that line is whole; "" when it never came.
std::string gdb_server_port(Background& holder) {
    if (!holder.wait_for_text("target remote 127.0.0.1:") || !holder.wait_for_text("'\n")) return "";
    std::smatch m;
    const std::string out = holder.out();
    return std::regex_search(out, m, std::regex(R"(target remote 127\.0\.0\.1:(\d+))")) ? std::string(m[1]) : "";
}

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
    EXPECT_NE(r.out.find("p: arg 'nosuch': no variable 'nosuch' at global_tick+0; in scope: i, twice"),
              std::string::npos)
        << r.out;
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
    const std::string port = gdb_server_port(holder);
    ASSERT_NE(port, "") << holder.out();
    std::smatch m;
    std::string out = holder.out();
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
    // Names of this run's own (another run of this test may be under way).
    const std::string in = "gwi" + std::to_string(::getpid()), out = "gwo" + std::to_string(::getpid());
    Background insider({target_path("global_worker"), in});
    Background outsider({target_path("global_worker"), out});
    ASSERT_TRUE(insider.wait_for_line("ready"));
    ASSERT_TRUE(outsider.wait_for_line("ready"));
    Background holder({uprobe_path(), "hold", "-a", probe(), "--comm", in, "--gdb"});
    ASSERT_TRUE(holder.wait_for_text("gdb -p " + std::to_string(insider.pid()) + "\n")) << holder.out();
    EXPECT_EQ(status_field(insider.pid(), "State").substr(0, 1), "T");
    EXPECT_EQ(status_field(outsider.pid(), "TracerPid"), "0");
    // Global mode traces on after the hand-over, until told to quit.
    holder.signal(SIGINT);
    auto r = holder.wait();
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out.find(" " + std::to_string(outsider.pid()) + "/"), std::string::npos) << r.out;
    insider.signal(SIGKILL);
    outsider.signal(SIGTERM);
    auto w = outsider.wait();
    EXPECT_NE(w.out.find("calls>0=1 bad=0"), std::string::npos) << w.describe();
}

}  // namespace
}  // namespace uprobe::test

namespace uprobe::test {
namespace {

std::string rounds_probe() { return target_path("hold_rounds") + ":round_work round=%di k=%si"; }

struct RoundEvent {
    pid_t pid;
    uint64_t address;
    long round, k;
};

std::vector<RoundEvent> round_events(const std::string& out) {
    std::vector<RoundEvent> events;
    static const std::regex line_re(R"(^\s*\S+\s+(\d+)/\d+\s+\S+: round_work: \((0x[0-9a-f]+)\) round=(\d+) k=(\d+))");
    for (const auto& line : lines_of(out)) {
        std::smatch m;
        if (std::regex_search(line, m, line_re))
            events.push_back({static_cast<pid_t>(std::stol(m[1])), std::stoull(m[2], nullptr, 16), std::stol(m[3]),
                              std::stol(m[4])});
    }
    return events;
}

size_t count_of(const std::vector<RoundEvent>& events, pid_t pid) {
    size_t n = 0;
    for (const auto& e : events) n += e.pid == pid;
    return n;
}

// hold --global --gdb with three independently started processes: one is
// held and handed to gdb, the other two stay traced and every one of their
// hits is printed (three a round, exactly), until the user quits; then no
// breakpoint is left in either and all three finish intact.
TEST(CliHold, GlobalGdbHoldKeepsTheOthersTraced) {
    // Names of this run's own (another run of this test may be under way).
    const std::string comm = "hrg" + std::to_string(::getpid());
    Background a({target_path("hold_rounds"), comm + "a"});
    Background b({target_path("hold_rounds"), comm + "b"});
    Background c({target_path("hold_rounds"), comm + "c"});
    for (auto* p : {&a, &b, &c}) ASSERT_TRUE(p->wait_for_line("ready"));
    Background holder({uprobe_path(), "hold", "-a", "-v", rounds_probe(), "--comm", comm + "?", "--gdb"});
    for (auto* p : {&a, &b, &c})
        ASSERT_TRUE(holder.wait_for_text("attached to " + std::to_string(p->pid()) + " ")) << holder.out();
    a.signal(SIGUSR1);
    ASSERT_TRUE(holder.wait_for_text("gdb -p " + std::to_string(a.pid()) + "\n")) << holder.out();
    auto held = round_events(holder.out());
    ASSERT_EQ(held.size(), 1u) << holder.out();
    EXPECT_EQ(held[0].pid, a.pid());
    EXPECT_EQ(held[0].round, 0);
    EXPECT_EQ(held[0].k, 0);
    EXPECT_EQ(status_field(a.pid(), "TracerPid"), "0");
    // The others are traced on while a is held.
    b.signal(SIGUSR1);
    ASSERT_TRUE(b.wait_for_line("round 0 done"));
    c.signal(SIGUSR1);
    ASSERT_TRUE(c.wait_for_line("round 0 done"));
    b.signal(SIGUSR1);
    ASSERT_TRUE(b.wait_for_line("round 1 done"));
    EXPECT_NE(status_field(b.pid(), "TracerPid"), "0");
    // gdb finds a at the probe, in round 0's first call.
    char pc[32];
    std::snprintf(pc, sizeof pc, "%#lx", static_cast<unsigned long>(held[0].address));
    auto gdb = run({"gdb", "-nx", "-batch", "-p", std::to_string(a.pid()), "-ex", "p/x $pc", "-ex", "frame 1", "-ex",
                    "p round", "-ex", "p k"});
    EXPECT_NE(gdb.out.find(std::string("$1 = ") + pc), std::string::npos) << gdb.describe();
    EXPECT_NE(gdb.out.find("$2 = 0"), std::string::npos) << gdb.describe();
    EXPECT_NE(gdb.out.find("$3 = 0"), std::string::npos) << gdb.describe();
    holder.signal(SIGINT);
    auto r = holder.wait();
    ASSERT_EQ(r.status, 0) << r.describe();
    auto events = round_events(r.out);
    EXPECT_EQ(count_of(events, a.pid()), 1u) << r.out;
    EXPECT_EQ(count_of(events, b.pid()), 6u) << r.out;
    EXPECT_EQ(count_of(events, c.pid()), 3u) << r.out;
    for (const auto& e : events) EXPECT_TRUE(e.k >= 0 && e.k < 3) << e.k;
    // No breakpoint left anywhere; every process finishes intact.
    for (const auto& e : events) {
        auto [in_memory, in_file] = memory_and_file_byte(e.pid, e.address);
        EXPECT_EQ(in_memory, in_file) << "process " << e.pid << " at " << std::hex << e.address;
        EXPECT_NE(in_memory, 0xcc);
    }
    EXPECT_EQ(status_field(b.pid(), "TracerPid"), "0");
    EXPECT_EQ(status_field(c.pid(), "TracerPid"), "0");
    ::kill(a.pid(), SIGCONT);  // gdb's detach may leave it in its group-stop
    ASSERT_TRUE(a.wait_for_line("round 0 done"));
    for (auto* p : {&a, &b, &c}) p->signal(SIGTERM);
    EXPECT_NE(a.wait().out.find("rounds=1 bad=0"), std::string::npos);
    EXPECT_NE(b.wait().out.find("rounds=2 bad=0"), std::string::npos);
    EXPECT_NE(c.wait().out.find("rounds=1 bad=0"), std::string::npos);
}

// The same with --gdb-server: gdb reads the held process over the remote
// protocol while the others' hits keep printing; quitting after gdb has
// detached ends everything with no breakpoint left.
TEST(CliHold, GlobalGdbServerKeepsTheOthersTraced) {
    const std::string comm = "hrs" + std::to_string(::getpid());
    Background a({target_path("hold_rounds"), comm + "a"});
    Background b({target_path("hold_rounds"), comm + "b"});
    for (auto* p : {&a, &b}) ASSERT_TRUE(p->wait_for_line("ready"));
    Background holder({uprobe_path(), "hold", "-a", "-v", rounds_probe(), "--comm", comm + "?", "--gdb-server", "0"});
    for (auto* p : {&a, &b})
        ASSERT_TRUE(holder.wait_for_text("attached to " + std::to_string(p->pid()) + " ")) << holder.out();
    a.signal(SIGUSR1);
    const std::string port = gdb_server_port(holder);
    ASSERT_NE(port, "") << holder.out();
    const std::string out = holder.out();
    auto held = round_events(out);
    ASSERT_EQ(held.size(), 1u) << out;
    b.signal(SIGUSR1);
    ASSERT_TRUE(b.wait_for_line("round 0 done"));
    char pc[32];
    std::snprintf(pc, sizeof pc, "%#lx", static_cast<unsigned long>(held[0].address));
    auto gdb = run({"gdb", "-nx", "-batch", "-ex", "file " + target_path("hold_rounds"), "-ex",
                    "target remote 127.0.0.1:" + port, "-ex", "p/x $pc", "-ex", "frame 1", "-ex", "p round", "-ex",
                    "p k", "-ex", "detach"});
    EXPECT_NE(gdb.out.find(std::string("$1 = ") + pc), std::string::npos) << gdb.describe();
    EXPECT_NE(gdb.out.find("$2 = 0"), std::string::npos) << gdb.describe();
    EXPECT_NE(gdb.out.find("$3 = 0"), std::string::npos) << gdb.describe();
    // Detached by gdb, a finishes its round untraced.
    ASSERT_TRUE(a.wait_for_line("round 0 done"));
    b.signal(SIGUSR1);
    ASSERT_TRUE(b.wait_for_line("round 1 done"));
    holder.signal(SIGINT);
    auto r = holder.wait();
    ASSERT_EQ(r.status, 0) << r.describe();
    auto events = round_events(r.out);
    EXPECT_EQ(count_of(events, a.pid()), 1u) << r.out;
    EXPECT_EQ(count_of(events, b.pid()), 6u) << r.out;
    for (const auto& e : events) {
        auto [in_memory, in_file] = memory_and_file_byte(e.pid, e.address);
        EXPECT_EQ(in_memory, in_file) << "process " << e.pid;
    }
    for (auto* p : {&a, &b}) {
        EXPECT_EQ(status_field(p->pid(), "TracerPid"), "0");
        p->signal(SIGTERM);
    }
    EXPECT_NE(a.wait().out.find("rounds=1 bad=0"), std::string::npos);
    EXPECT_NE(b.wait().out.find("rounds=2 bad=0"), std::string::npos);
}

}  // namespace
}  // namespace uprobe::test

namespace uprobe::test {
namespace {

pid_t other_thread(pid_t pid) {
    for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
        pid_t tid = static_cast<pid_t>(std::stol(entry.path().filename().string()));
        if (tid != pid) return tid;
    }
    return 0;
}

// --gdb-server on a two-thread process, main thread held in held_here(7).
// By default the worker runs while gdb has main (it answers a signal, and
// passes a breakpoint gdb set) and gdb sees main alone. With --all-stop
// gdb sees both threads, all stopped while it has control (the worker's
// stack in sigwait), and a continue runs both until the worker reaches a
// breakpoint, which stops main too. By default `finish` returns 7 * 3;
// either way main prints that result once gdb has detached.
void serve_two_threads(bool all_stop) {
    Background target({target_path("hold_threads")});
    ASSERT_TRUE(target.wait_for_line("ready"));
    const pid_t worker = other_thread(target.pid());
    ASSERT_NE(worker, 0);
    std::vector<std::string> argv = {uprobe_path(),
                                     "hold",
                                     "-v",
                                     "-p",
                                     std::to_string(target.pid()),
                                     target_path("hold_threads") + ":held_here n=%di",
                                     "--gdb-server",
                                     "0"};
    if (all_stop) argv.push_back("--all-stop");
    Background holder(argv);
    ASSERT_TRUE(holder.wait_for_text("attached to " + std::to_string(target.pid()) + " ")) << holder.out();
    target.signal(SIGUSR1);
    const std::string port = gdb_server_port(holder);
    ASSERT_NE(port, "") << holder.out();
    std::smatch m;
    std::string out = holder.out();
    ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(held_here: \((0x[0-9a-f]+)\) n=7)"))) << out;
    const std::string pc = m[1];
    std::vector<std::string> gdb_argv = {"gdb", "-nx", "-batch", "-ex", "file " + target_path("hold_threads"),
                                         "-ex", "target remote 127.0.0.1:" + port, "-ex", "info threads", "-ex",
                                         "p/x $pc", "-ex", "p $rdi"};
    if (all_stop) {
        // The worker has its signal but stays stopped (group-stop, then
        // the stub's): stopped in either sense.
        target.signal(SIGUSR2);
        std::string state = status_field(worker, "State");
        EXPECT_TRUE(state.rfind("T", 0) == 0 || state.rfind("t", 0) == 0) << state;
        // The continue runs both; main ends in a sigwait nothing answers,
        // so the one stop is the worker's breakpoint.
        gdb_argv.insert(gdb_argv.end(), {"-ex", "thread 2", "-ex", "bt", "-ex", "thread 1", "-ex", "break worker_step",
                                         "-ex", "continue", "-ex", "info threads", "-ex", "delete"});
    } else {
        // The worker runs while gdb has main, through a breakpoint gdb put
        // in its way (inserted at once): the stub steps it over. Its
        // thread ending is the sign it ran.
        const std::string task = "/proc/" + std::to_string(target.pid()) + "/task/" + std::to_string(worker);
        gdb_argv.insert(gdb_argv.end(),
                        {"-ex", "set breakpoint always-inserted on", "-ex", "break worker_step", "-ex",
                         "shell kill -USR2 " + std::to_string(target.pid()), "-ex",
                         "shell while [ -e " + task + " ]; do sleep 0.01; done; echo worker-gone", "-ex", "delete",
                         "-ex", "finish"});
    }
    gdb_argv.insert(gdb_argv.end(), {"-ex", "detach"});
    auto gdb = run(gdb_argv);
    EXPECT_NE(gdb.out.find("$1 = " + pc), std::string::npos) << gdb.describe();
    EXPECT_NE(gdb.out.find("$2 = 7"), std::string::npos) << gdb.describe();
    EXPECT_NE(gdb.out.find("* 1 "), std::string::npos) << gdb.describe();
    if (all_stop) {
        // Two threads; the worker in sigwait, under worker(); the continue
        // ends at its breakpoint with main stopped too (still listed).
        EXPECT_NE(gdb.out.find("\n  2    Thread " + std::to_string(worker)), std::string::npos) << gdb.describe();
        EXPECT_TRUE(std::regex_search(gdb.out, std::regex(R"(#\d+ +0x[0-9a-f]+ in worker \(arg=)"))) << gdb.describe();
        EXPECT_NE(gdb.out.find("Thread 2 hit Breakpoint 1, worker_step (n=0)"), std::string::npos) << gdb.describe();
        EXPECT_NE(gdb.out.find("* 2    Thread " + std::to_string(worker)), std::string::npos) << gdb.describe();
    } else {
        // One thread in `info threads`: "* 1 ", no "  2 ".
        EXPECT_EQ(gdb.out.find("\n  2 "), std::string::npos) << gdb.describe();
        EXPECT_NE(gdb.out.find("worker-gone"), std::string::npos) << gdb.describe();
        EXPECT_EQ(gdb.out.find("Breakpoint 1, "), std::string::npos) << gdb.describe();
        EXPECT_NE(gdb.out.find("Value returned is $3 = 21"), std::string::npos) << gdb.describe();
    }
    auto h = holder.wait();
    EXPECT_EQ(h.status, 0) << h.describe();
    EXPECT_EQ(status_field(target.pid(), "TracerPid"), "0");
    // Main ran on from the held call (21 = 7 * 3), the worker answered;
    // both finish intact.
    target.signal(SIGTERM);
    auto t = target.wait();
    EXPECT_EQ(t.status, 0) << t.describe();
    EXPECT_NE(t.out.find("held_here=21\n"), std::string::npos) << t.describe();
    EXPECT_NE(t.out.find("worker ran\n"), std::string::npos) << t.describe();
    EXPECT_NE(t.out.find("held=21 worker=1"), std::string::npos) << t.describe();
}

TEST(CliHold, GdbServerLetsOtherThreadsRun) { serve_two_threads(false); }
TEST(CliHold, GdbServerAllStopShowsEveryThreadStopped) { serve_two_threads(true); }

}  // namespace
}  // namespace uprobe::test

namespace uprobe::test {
namespace {

// `p EXPR` at the prompt reads DWARF variables at the held pc — parameters,
// a local, an inner block's variable, a global, a unit static, through a
// pointer — and agrees with gdb stopped at the same line of the same
// (deterministic) program. -O0 keeps everything in the frame; at -O2 the
// variables live in registers with location lists.
class HoldPrint : public ::testing::TestWithParam<const char*> {};

TEST_P(HoldPrint, DwarfVariablesAgreeWithGdb) {
    const std::string program = target_path(GetParam());
    const std::vector<std::string> names = {"n", "local", "inner", "g_total", "s_calls", "p->a", "p->b"};
    RunOptions options;
    for (const auto& name : names) options.stdin_text += "p " + name + "\n";
    options.stdin_text += "detach\n";
    auto r = run({uprobe_path(), "hold", program + ":hold_vars.c:21", "--", program}, options);
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_NE(r.out.find("sum=331"), std::string::npos) << r.describe();  // ran on intact
    std::vector<std::string> gdb_argv = {"gdb", "-nx", "-batch", "-ex", "break hold_vars.c:21", "-ex", "run",
                                         "-ex", "p $pc"};
    for (const auto& name : names) gdb_argv.insert(gdb_argv.end(), {"-ex", "echo @" + name + "=", "-ex", "p " + name});
    gdb_argv.push_back(program);
    auto gdb = run(gdb_argv);
    // The same stop: the same function offset.
    std::smatch m;
    ASSERT_TRUE(std::regex_search(gdb.out, m, std::regex(R"(<mix\+(\d+)>)"))) << gdb.describe();
    char offset[32];
    std::snprintf(offset, sizeof offset, "mix\\+%#lx ", std::stoul(m[1]));
    EXPECT_TRUE(std::regex_search(r.out, std::regex(std::string("#0  0x[0-9a-f]+ ") + offset))) << offset << r.out;
    const bool optimized = std::string(GetParam()) == "hold_vars_opt";
    for (const auto& name : names) {
        std::string quoted = std::regex_replace(name, std::regex(R"([-\>])"), "\\$&");
        std::smatch ours, theirs;
        ASSERT_TRUE(std::regex_search(r.out, ours, std::regex("\\(uprobe\\) (?:" + quoted + " = |p: arg '" + quoted + "': )(.*)"))) << name;
        bool gdb_has = std::regex_search(gdb.out, theirs, std::regex("@" + quoted + "=\\$\\d+ = (.*)"));
        if (!gdb_has) {
            // Not in scope for gdb (inner at -O2): not for us either.
            EXPECT_NE(ours[0].str().find("no variable '" + name + "'"), std::string::npos) << ours[0] << gdb.describe();
        } else if (optimized && ours[1] == "(entry value unavailable)") {
            // gcc 12 describes n there only as DW_OP_entry_value(rdi): gdb
            // recovers it from the caller's call-site parameters, we do not.
            EXPECT_EQ(name, "n") << gdb.describe();
        } else {
            EXPECT_EQ(ours[1], theirs[1]) << name << "\n" << r.out << gdb.describe();
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Builds, HoldPrint, ::testing::Values("hold_vars", "hold_vars_opt"));

}  // namespace
}  // namespace uprobe::test

namespace uprobe::test {
namespace {

// Quitting while gdb is connected (SIGTERM to uprobe) ends the stub too:
// the breakpoint gdb had inserted comes out, the process is detached and
// runs on intact.
TEST(CliHold, QuitWithGdbConnectedLeavesNoBreakpoint) {
    Background a({target_path("hold_rounds"), "hr_quit"});
    ASSERT_TRUE(a.wait_for_line("ready"));
    Background holder({uprobe_path(), "hold", "-v", "-p", std::to_string(a.pid()), rounds_probe(), "--gdb-server", "0"});
    ASSERT_TRUE(holder.wait_for_text("attached to " + std::to_string(a.pid()) + " ")) << holder.out();
    a.signal(SIGUSR1);
    const std::string port = gdb_server_port(holder);
    ASSERT_NE(port, "") << holder.out();
    std::smatch m;
    const std::string status = "/proc/" + std::to_string(a.pid()) + "/status";
    auto gdb = run({"gdb", "-nx", "-batch", "-ex", "file " + target_path("hold_rounds"), "-ex",
                    "target remote 127.0.0.1:" + port, "-ex", "set breakpoint always-inserted on", "-ex",
                    "break round_work", "-ex", "shell kill -TERM " + std::to_string(holder.pid()), "-ex",
                    "shell while grep -q 'TracerPid:.[1-9]' " + status + "; do sleep 0.01; done; echo released"});
    ASSERT_NE(gdb.out.find("released"), std::string::npos) << gdb.describe();
    ASSERT_TRUE(std::regex_search(gdb.out, m, std::regex(R"(Breakpoint 1 at (0x[0-9a-f]+))"))) << gdb.describe();
    const uint64_t breakpoint = std::stoull(m[1], nullptr, 16);
    auto h = holder.wait();
    EXPECT_FALSE(h.timed_out) << h.describe();
    auto [in_memory, in_file] = memory_and_file_byte(a.pid(), breakpoint);
    EXPECT_EQ(in_memory, in_file);
    EXPECT_NE(in_memory, 0xcc);
    // It finishes the held round through the address, untraced.
    ASSERT_TRUE(a.wait_for_line("round 0 done"));
    a.signal(SIGTERM);
    auto w = a.wait();
    EXPECT_EQ(w.status, 0) << w.describe();
    EXPECT_NE(w.out.find("rounds=1 bad=0"), std::string::npos) << w.describe();
}

}  // namespace
}  // namespace uprobe::test
