// `uprobe trace` end to end: the traced program's own output must equal an
// untraced run, and hits and values must be exact (known by construction
// from the target's source, or from the kernel's uprobes via bpftrace).
// Every case runs once per engine.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "events.hpp"
#include "process.hpp"

namespace uprobe::test {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// What cli_funcs computes, by construction from its source: add(sum, 2*i),
// then sum += i + 1 (weak_hook).
struct FuncsModel {
    std::vector<std::pair<long, long>> add_args;
    long sum = 0;
    explicit FuncsModel(int n) {
        for (int i = 0; i < n; ++i) {
            add_args.emplace_back(sum, 2L * i);
            sum = sum + 2L * i + i + 1;
        }
    }
};

class CliTrace : public ::testing::TestWithParam<std::string> {
protected:
    std::vector<std::string> trace(std::vector<std::string> args) const {
        std::vector<std::string> argv = {uprobe_path(), "trace", "--engine", GetParam()};
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
    }
    TempDir tmp_;
};

TEST_P(CliTrace, LaunchedProgramEventsAreExactAndItsOutputUnchanged) {
    const int n = 1000;
    auto plain = run({target_path("cli_funcs"), std::to_string(n)});
    ASSERT_EQ(plain.status, 0) << plain.describe();
    for (const char* t : {"cli_funcs", "cli_funcs_nopie"}) {
        auto events = tmp_.path(std::string(t) + ".json");
        auto r = run(trace({"--format", "json", "-o", events, "add a=%di b=%si",
                            "sc=scale v=%di factor=%si:s32", "--", target_path(t), std::to_string(n)}));
        ASSERT_EQ(r.status, 0) << r.describe();
        EXPECT_EQ(r.out, plain.out) << t;
        FuncsModel model(n);
        std::vector<std::pair<long, long>> add_seen;
        std::vector<int> scale_v;
        for (const auto& e : read_events(events)) {
            if (e["probe"] == "add") add_seen.emplace_back(e["args"]["a"], e["args"]["b"]);
            if (e["probe"] == "sc") {
                EXPECT_EQ(e["args"]["factor"], 2);
                scale_v.push_back(e["args"]["v"]);
            }
        }
        EXPECT_EQ(add_seen, model.add_args) << t;
        ASSERT_EQ(scale_v.size(), size_t(n));
        for (int i = 0; i < n; ++i) EXPECT_EQ(scale_v[i], i);
        EXPECT_NE(r.err.find("add=1000"), std::string::npos) << r.err;
    }
}

TEST_P(CliTrace, StringsAndTextFormat) {
    auto r = run(trace({"emit_step i=%di:s32 name=%si:string", "--", target_path("cli_funcs"), "8"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    const char* names[] = {"zero", "one", "two", "three"};
    int i = 0;
    for (const auto& line : lines_of(r.out)) {
        if (line.find(": emit_step: (0x") == std::string::npos) continue;
        EXPECT_NE(line.find(" i=" + std::to_string(i) + " name=\"" + names[i % 4] + "\""), std::string::npos)
            << line;
        ++i;
    }
    EXPECT_EQ(i, 8) << r.out;
}

TEST_P(CliTrace, CountPrintsExactHits) {
    auto r = run(trace({"--count", "add", "weak_hook", "--", target_path("cli_funcs"), "777"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\badd\s+777\n)"))) << r.out;
    EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\bweak_hook\s+777\n)"))) << r.out;
}

// --no-drop: a burst far larger than the inline engine's ring (and faster
// than the tracer drains it) arrives whole and in order (the ptrace engine
// never drops anyway).
TEST_P(CliTrace, NoDropDeliversEveryEventOfABurst) {
    const int n = 50000;
    auto plain = run({target_path("cli_funcs"), std::to_string(n)});
    auto events = tmp_.path("burst.json");
    auto r = run(trace({"--no-drop", "--format", "json", "-o", events, "add a=%di b=%si", "--", target_path("cli_funcs"),
                        std::to_string(n)}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, plain.out);
    EXPECT_EQ(r.err.find("dropped"), std::string::npos) << r.err;
    FuncsModel model(n);
    auto seen = read_events(events);
    ASSERT_EQ(seen.size(), model.add_args.size());
    for (size_t i = 0; i < seen.size(); ++i) {
        ASSERT_EQ(seen[i]["args"]["a"].get<long>(), model.add_args[i].first) << i;
        ASSERT_EQ(seen[i]["args"]["b"].get<long>(), model.add_args[i].second) << i;
    }
}

TEST_P(CliTrace, ExitStatusOfTheCommandIsPassedOn) {
    // libc is not mapped yet when the command starts: the probe is pending
    // until the dynamic linker maps it. Every way out of a process ends in
    // one call of _exit.
    auto r = run(trace({"--count", "libc:_exit", "--", "sh", "-c", "exit 7"}));
    EXPECT_EQ(r.status, 7) << r.describe();
    EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\b_exit\s+1\n)"))) << r.describe();
}

TEST_P(CliTrace, AttachAndDetachWhileTheProgramRunsAtFullSpeed) {
    Background waiter({target_path("cli_waiter")});
    ASSERT_TRUE(waiter.wait_for_line("ready"));
    Background tracer(trace({"--format", "json", "-p", std::to_string(waiter.pid()), "tick i=%di twice=%si"}));
    // Detach with Ctrl-C once events flow.
    ASSERT_TRUE(tracer.wait_for_text("\"probe\":\"tick\""));
    tracer.signal(SIGINT);
    auto t = tracer.wait();
    EXPECT_EQ(t.status, 0) << t.describe();
    auto lines = lines_of(t.out);
    ASSERT_GT(lines.size(), 0u) << t.describe();
    for (const auto& line : lines) {
        auto e = Json::parse(line);
        EXPECT_EQ(2 * e["args"]["i"].get<long>(), e["args"]["twice"].get<long>());
    }
    // Detached: the program runs on and ends normally.
    waiter.signal(SIGTERM);
    auto w = waiter.wait();
    EXPECT_EQ(w.status, 0) << w.describe();
    EXPECT_NE(w.out.find("calls>0=1 bad=0"), std::string::npos) << w.describe();
}

TEST_P(CliTrace, KillingTheTracerWithSigkillLeavesTheProgramUnharmed) {
    Background waiter({target_path("cli_waiter")});
    ASSERT_TRUE(waiter.wait_for_line("ready"));
    Background tracer(trace({"--format", "json", "-p", std::to_string(waiter.pid()), "tick"}));
    ASSERT_TRUE(tracer.wait_for_text("\"probe\":\"tick\""));
    tracer.signal(SIGKILL);
    // The supervisor is gone; its child, the tracer, detaches and exits,
    // closing its end of the output pipe: that EOF is our signal.
    tracer.wait();
    waiter.signal(SIGTERM);
    auto w = waiter.wait();
    EXPECT_EQ(w.status, 0) << w.describe();
    EXPECT_NE(w.out.find("calls>0=1 bad=0"), std::string::npos) << w.describe();
}

TEST_P(CliTrace, AnUnprivilegedUserTracesItsOwnProgram) {
    auto user = unprivileged_user();
    if (!user) GTEST_SKIP() << "no 'nobody' account";
    if (getuid() != 0) GTEST_SKIP() << "needs root to switch to another user";
    RunOptions as_nobody{.uid = user->first, .gid = user->second};
    auto plain = run({target_path("cli_funcs"), "50"}, as_nobody);
    auto events = tmp_.path("nobody.json");
    auto r = run(trace({"--format", "json", "-o", events, "add a=%di b=%si", "--", target_path("cli_funcs"), "50"}),
                 as_nobody);
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, plain.out);
    FuncsModel model(50);
    std::vector<std::pair<long, long>> seen;
    for (const auto& e : read_events(events)) seen.emplace_back(e["args"]["a"], e["args"]["b"]);
    EXPECT_EQ(seen, model.add_args);
}

TEST_P(CliTrace, AnotherUsersProcessIsRefusedWithTheReason) {
    auto user = unprivileged_user();
    if (!user || getuid() != 0) GTEST_SKIP() << "needs root and a 'nobody' account";
    Background waiter({target_path("cli_waiter")});  // runs as root
    ASSERT_TRUE(waiter.wait_for_line("ready"));
    auto r = run(trace({"-p", std::to_string(waiter.pid()), "tick"}),
                 {.uid = user->first, .gid = user->second});
    EXPECT_EQ(r.status, 1) << r.describe();
    EXPECT_EQ(lines_of(r.err).size(), 1u) << r.describe();
    EXPECT_NE(r.err.find(std::to_string(waiter.pid())), std::string::npos) << r.err;
    waiter.signal(SIGTERM);
    EXPECT_EQ(waiter.wait().status, 0);
}

TEST_P(CliTrace, BadRequestsAreOneLineAndChangeNothing) {
    auto one_line = [&](std::vector<std::string> args, const std::string& needle) {
        auto r = run(trace(args));
        EXPECT_NE(r.status, 0) << r.describe();
        EXPECT_LT(r.status, 128) << r.describe();
        EXPECT_NE(r.err.find(needle), std::string::npos) << "want '" << needle << "': " << r.describe();
        EXPECT_EQ(r.out, "") << r.describe();
    };
    one_line({"-p", "999999999", "add"}, "999999999");
    one_line({"ad", "--", target_path("cli_funcs"), "3"}, "add");  // suggests the close name
    one_line({"add+1", "--", target_path("cli_funcs"), "3"}, "instruction boundary");
    one_line({"add a=%", "--", target_path("cli_funcs"), "3"}, "^");
    one_line({"add", "--", tmp_.path("no-such-program")}, "no-such-program");
    // A running program is left exactly as it was by a refused request.
    Background waiter({target_path("cli_waiter")});
    ASSERT_TRUE(waiter.wait_for_line("ready"));
    one_line({"-p", std::to_string(waiter.pid()), "tick", "nosuchfunction"}, "nosuchfunction");
    waiter.signal(SIGTERM);
    auto w = waiter.wait();
    EXPECT_EQ(w.status, 0) << w.describe();
}

// A process in another mount namespace: its binary exists only in its own
// view of the file system, at a path that means nothing (or something
// else) in ours. BIN is resolved through /proc/PID/root and mappings are
// matched by device and inode, never by path string.
TEST_P(CliTrace, AProcessInAnotherMountNamespace) {
    if (getuid() != 0) GTEST_SKIP() << "unshare --mount needs root";
    std::string script = "mount -t tmpfs uprobe-test /mnt && cp " + target_path("cli_waiter") +
                         " /mnt/waiter && exec /mnt/waiter";
    Background waiter({"unshare", "--mount", "--propagation", "private", "sh", "-c", script});
    if (!waiter.wait_for_line("ready")) GTEST_SKIP() << "unshare cannot run here: " << waiter.wait().err;
    // The waiter is the exec'd process: unshare forked nothing (no --fork).
    std::string pid = std::to_string(waiter.pid());
    ASSERT_FALSE(fs::exists("/mnt/waiter")) << "the test needs /mnt/waiter to be absent in our namespace";
    for (const char* probe : {"tick i=%di", "/mnt/waiter:tick i=%di"}) {
        Background tracer(trace({"--format", "json", "-p", pid, probe}));
        ASSERT_TRUE(tracer.wait_for_text("\"probe\":\"tick\"")) << probe << ": " << tracer.wait().describe();
        tracer.signal(SIGINT);
        auto t = tracer.wait();
        EXPECT_EQ(t.status, 0) << t.describe();
    }
    waiter.signal(SIGTERM);
    auto w = waiter.wait();
    EXPECT_EQ(w.status, 0) << w.describe();
    EXPECT_NE(w.out.find("calls>0=1 bad=0"), std::string::npos) << w.describe();
}

// A process that is already traced (by a debugger, or here by another
// uprobe) is refused with the reason, and the first tracer goes on.
TEST_P(CliTrace, AnAlreadyTracedProcessIsRefusedWithTheReason) {
    Background waiter({target_path("cli_waiter")});
    ASSERT_TRUE(waiter.wait_for_line("ready"));
    std::string pid = std::to_string(waiter.pid());
    Background first(trace({"--format", "json", "-p", pid, "tick"}));
    ASSERT_TRUE(first.wait_for_text("\"probe\":\"tick\""));
    auto second = run(trace({"-p", pid, "tick"}));
    EXPECT_EQ(second.status, 1) << second.describe();
    EXPECT_EQ(lines_of(second.err).size(), 1u) << second.describe();
    EXPECT_NE(second.err.find("already traced"), std::string::npos) << second.describe();
    first.signal(SIGINT);
    EXPECT_EQ(first.wait().status, 0);
    waiter.signal(SIGTERM);
    auto w = waiter.wait();
    EXPECT_EQ(w.status, 0) << w.describe();
    EXPECT_NE(w.out.find("calls>0=1 bad=0"), std::string::npos) << w.describe();
}

// A reader that goes away (`| head`) ends tracing; the program runs on.
TEST_P(CliTrace, AClosedOutputPipeDetachesCleanly) {
    Background waiter({target_path("cli_waiter")});
    ASSERT_TRUE(waiter.wait_for_line("ready"));
    std::string command;
    for (const auto& word : trace({"-p", std::to_string(waiter.pid()), "tick"})) command += "'" + word + "' ";
    auto r = run({"sh", "-c", command + "| head -n 3"});
    EXPECT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(lines_of(r.out).size(), 3u) << r.describe();
    waiter.signal(SIGTERM);
    auto w = waiter.wait();
    EXPECT_EQ(w.status, 0) << w.describe();
    EXPECT_NE(w.out.find("calls>0=1 bad=0"), std::string::npos) << w.describe();
}

// The kernel's uprobes, through bpftrace, see the same calls with the same
// arguments.
TEST_P(CliTrace, SameHitsAndValuesAsTheKernelsUprobes) {
    if (getuid() != 0) GTEST_SKIP() << "bpftrace needs root";
    if (run({"sh", "-c", "command -v bpftrace"}).status != 0) GTEST_SKIP() << "bpftrace is not installed";
    // A private copy: the kernel's uprobes belong to the file (inode), and
    // a test running beside this one may trace the original.
    const std::string t = tmp_.path("cli_funcs");
    fs::copy_file(target_path("cli_funcs"), t);
    auto k = run({"bpftrace", "-q", "-e",
                  "uprobe:" + t + ":add { printf(\"K %ld %ld\\n\", arg0, arg1); }", "-c", t + " 200"},
                 {.timeout = std::chrono::seconds(120)});
    if (k.status != 0) GTEST_SKIP() << "bpftrace cannot run here: " << k.err.substr(0, 300);
    std::vector<std::string> kernel;
    for (const auto& l : lines_of(k.out))
        if (l.rfind("K ", 0) == 0) kernel.push_back(l.substr(2));
    auto events = tmp_.path("diff.json");
    auto r = run(trace({"--format", "json", "-o", events, "add a=%di b=%si", "--", t, "200"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    std::vector<std::string> ours;
    for (const auto& e : read_events(events))
        ours.push_back(std::to_string(e["args"]["a"].get<long>()) + " " + std::to_string(e["args"]["b"].get<long>()));
    EXPECT_EQ(ours, kernel);
    EXPECT_EQ(ours.size(), 200u);
}

// --engine auto: the inline engine where it can go, and the summary says
// which engine traced; a static program (no loader to preload the agent)
// gets the ptrace engine instead, and runs once.
TEST(CliEngineAuto, InlineWhereItCanPtraceWhereItCannot) {
    TempDir tmp;
    auto plain = run({target_path("cli_funcs"), "100"});
    auto events = tmp.path("auto.json");
    auto r = run({uprobe_path(), "trace", "--engine", "auto", "--format", "json", "-o", events, "add a=%di b=%si", "--",
                  target_path("cli_funcs"), "100"});
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, plain.out);
    EXPECT_NE(r.err.find("(inline engine)"), std::string::npos) << r.err;
    FuncsModel model(100);
    auto seen = read_events(events);
    ASSERT_EQ(seen.size(), 100u);
    for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i]["args"]["a"].get<long>(), model.add_args[i].first);

    const std::string bin = target_path("inline_static");
    auto untraced = run({bin});
    auto s = run({uprobe_path(), "trace", "-v", "--engine", "auto", "twice x=%di:s32", "--", bin});
    ASSERT_EQ(s.status, 0) << s.describe();
    EXPECT_NE(s.err.find("engine: ptrace (" + bin + " is static"), std::string::npos) << s.err;
    EXPECT_NE(s.err.find("(ptrace engine)"), std::string::npos) << s.err;
    // The program's own line once (a half-tried inline launch would have
    // run it twice), and the event.
    auto lines = lines_of(s.out);
    ASSERT_EQ(lines.size(), 2u) << s.out;
    EXPECT_NE(lines[0].find("twice: ("), std::string::npos) << s.out;
    EXPECT_NE(lines[0].find(" x=21"), std::string::npos) << s.out;
    EXPECT_EQ(lines[1] + "\n", untraced.out);
}

INSTANTIATE_TEST_SUITE_P(Engines, CliTrace, ::testing::Values("ptrace", "inline"));

}  // namespace
}  // namespace uprobe::test
