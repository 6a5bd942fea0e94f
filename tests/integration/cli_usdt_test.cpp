// `uprobe trace` on SDT (USDT) markers, end to end: every spelling, argument
// sizes and signedness, semaphores (raised while traced, in followed fork
// children, in libraries loaded later; lowered on detach and in fork
// children we do not follow), and real programs: Debian's python3.11,
// libstdc++'s exception markers, postgres. Expected values come from the
// targets' sources (by construction), from the programs themselves
// (sys.setprofile, printed addresses), from readelf, and from bpftrace's
// usdt probes (the kernel's uprobes) where root and the kernel allow.
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "events.hpp"
#include "process.hpp"

namespace uprobe::test {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char* kPython = "/usr/bin/python3.11";

std::vector<Json> events_of(const std::vector<Json>& events, const std::string& probe) {
    std::vector<Json> out;
    for (const auto& e : events)
        if (e["probe"] == probe) out.push_back(e);
    return out;
}

bool have_bpftrace() {
    return getuid() == 0 && run({"sh", "-c", "command -v bpftrace"}).status == 0;
}

// Runs a bpftrace program with -c COMMAND, its own output to a file (the
// command's goes to stdout). nullopt when bpftrace cannot run here.
std::optional<std::vector<std::string>> bpftrace(const std::string& program, const std::string& command,
                                                 const TempDir& tmp, std::string* command_out = nullptr) {
    std::string out = tmp.path("bpftrace.txt");
    auto r = run({"bpftrace", "-q", "-o", out, "-e", program, "-c", command}, {.timeout = std::chrono::seconds(120)});
    if (r.status != 0) return std::nullopt;
    if (command_out) *command_out = r.out;
    std::ifstream in(out);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) lines.push_back(line);
    return lines;
}

// A marker's note as readelf prints it: link-time semaphore address.
std::optional<uint64_t> readelf_semaphore(const std::string& binary, const std::string& provider,
                                          const std::string& name) {
    auto r = run({"readelf", "-n", binary});
    if (r.status != 0) return std::nullopt;
    auto lines = lines_of(r.out);
    for (size_t i = 0; i + 2 < lines.size(); ++i) {
        if (lines[i].find("Provider: " + provider) == std::string::npos) continue;
        if (lines[i + 1].find("Name: " + name) == std::string::npos) continue;
        std::smatch m;
        if (std::regex_search(lines[i + 2], m, std::regex("Semaphore: (0x[0-9a-f]+)")))
            return std::stoull(m[1], nullptr, 16);
    }
    return std::nullopt;
}

bool is_pie_or_library(const std::string& binary) {
    return run({"readelf", "-h", binary}).out.find("DYN (") != std::string::npos;
}

class CliUsdt : public ::testing::TestWithParam<std::string> {
protected:
    std::vector<std::string> trace(std::vector<std::string> args) const {
        std::vector<std::string> argv = {uprobe_path(), "trace", "--engine", GetParam()};
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
    }
    // A refused request: one line on stderr containing `needle`, a
    // non-zero exit (not a crash), no events.
    void expect_refused(const RunResult& r, const std::string& needle) const {
        EXPECT_NE(r.status, 0) << r.describe();
        EXPECT_LT(r.status, 128) << r.describe();
        EXPECT_EQ(lines_of(r.err).size(), 1u) << r.describe();
        EXPECT_NE(r.err.find(needle), std::string::npos) << "want '" << needle << "': " << r.describe();
        EXPECT_EQ(r.out, "") << r.describe();
    }
    TempDir tmp_;
};

// ---------------------------------------------------------------- spellings

TEST_P(CliUsdt, EverySpellingNamesTheSameMarkerAndTheyShareOneSemaphoreIncrement) {
    const std::string t = target_path("usdt_args");
    EXPECT_EQ(run({t, "3"}).out, "iterations 3 gated 0 semaphore 0\n");
    auto events = tmp_.path("spellings.json");
    auto r = run(trace({"--format", "json", "-o", events, "a=sdt:usdt:gated $arg1", "b=%usdt:gated $arg1",
                        "c=usdt:" + t + ":usdt:gated $arg1", "d=sdt:" + t + ":usdt:gated $arg1",
                        "e=" + t + ":%usdt:gated $arg1", "f=%gated $arg1", "g=sdt:us?t:g*ed $arg1", "--", t, "3"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    // Seven probes on one marker: the semaphore is up by exactly one.
    EXPECT_EQ(r.out, "iterations 3 gated 3 semaphore 1\n");
    auto all = read_events(events);
    for (const char* probe : {"a", "b", "c", "d", "e", "f", "g"}) {
        std::vector<long> seen;
        for (const auto& e : events_of(all, probe)) seen.push_back(e["args"]["arg1"]);
        EXPECT_EQ(seen, (std::vector<long>{0, 1, 2})) << probe;
    }
}

TEST_P(CliUsdt, GlobsOnProviderAndNameMatchSeveralMarkers) {
    const std::string t = target_path("usdt_args");
    auto events = tmp_.path("globs.json");
    auto r = run(trace({"--format", "json", "-o", events, "t=sdt:usdt:t* $arg1", "all=sdt:*:*", "--", t, "2"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    auto all = read_events(events);
    // Per iteration i: types (arg1 = -1-i), then twice at its two sites (1, 2).
    std::vector<long> t_args;
    for (const auto& e : events_of(all, "t")) t_args.push_back(e["args"]["arg1"]);
    EXPECT_EQ(t_args, (std::vector<long>{-1, 1, 2, -2, 1, 2}));
    // sdt:*:* also takes usdt:gated, which then fires: 4 markers per iteration.
    EXPECT_EQ(events_of(all, "all").size(), 8u);
    EXPECT_EQ(r.out, "iterations 2 gated 2 semaphore 1\n");
}

// ---------------------------------------------------------------- arguments

// sys/sdt.h describes s1..u8 as -1@, -2@, -4@, -8@, 1@, 2@, 4@, 8@ of stack
// slots at -O0, of registers at -O2, and the name as a char* in a stack slot
// or an indexed memory operand.
TEST_P(CliUsdt, ArgumentsHaveTheMarkersSizeAndSignedness) {
    const int n = 4;
    const char* names[] = {"alpha", "beta", "gamma"};
    for (const char* target : {"usdt_args", "usdt_args_o2", "usdt_args_nopie"}) {
        SCOPED_TRACE(target);
        const std::string t = target_path(target);
        auto events = tmp_.path(std::string(target) + ".json");
        auto r = run(trace({"--format", "json", "-o", events,
                            "sdt:usdt:types $arg1 $arg2 $arg3 $arg4 $arg5 $arg6 $arg7 $arg8 name=$arg9:string",
                            "x=sdt:usdt:types $arg1:x8 $arg4:x64", "--", t, std::to_string(n)}));
        ASSERT_EQ(r.status, 0) << r.describe();
        EXPECT_EQ(r.out, run({t, std::to_string(n)}).out);
        auto all = read_events(events);
        auto types = events_of(all, "types");
        auto hex = events_of(all, "x");
        ASSERT_EQ(types.size(), size_t(n));
        ASSERT_EQ(hex.size(), size_t(n));
        for (int i = 0; i < n; ++i) {
            const auto& a = types[i]["args"];
            EXPECT_EQ(a["arg1"].get<int64_t>(), -1 - i);
            EXPECT_EQ(a["arg2"].get<int64_t>(), -300 - i);
            EXPECT_EQ(a["arg3"].get<int64_t>(), -70000 - i);
            EXPECT_EQ(a["arg4"].get<int64_t>(), -5000000000L - i);
            EXPECT_EQ(a["arg5"].get<uint64_t>(), 200u + i);
            EXPECT_EQ(a["arg6"].get<uint64_t>(), 65000u + i);
            EXPECT_EQ(a["arg7"].get<uint64_t>(), 4000000000u + i);
            EXPECT_EQ(a["arg8"].get<uint64_t>(), 18000000000000000000ull + i);
            EXPECT_EQ(a["name"], names[i % 3]);
            // An explicit type reads the same bytes the other way.
            EXPECT_EQ(hex[i]["args"]["arg1"].get<uint64_t>(), uint64_t(uint8_t(-1 - i)));
            EXPECT_EQ(hex[i]["args"]["arg4"].get<uint64_t>(), uint64_t(-5000000000L - i));
        }
    }
}

TEST_P(CliUsdt, SameValuesAsBpftracesUsdtProbes) {
    if (!have_bpftrace()) GTEST_SKIP() << "bpftrace needs root and must be installed";
    for (const char* target : {"usdt_args", "usdt_args_o2", "usdt_args_nopie"}) {
        SCOPED_TRACE(target);
        const std::string t = target_path(target);
        // bpftrace 0.17 reads at most 6 USDT arguments on x86-64.
        auto kernel = bpftrace("usdt:" + t + ":usdt:types { printf(\"%ld %ld %ld %ld %lu %lu\\n\", arg0, arg1, arg2, "
                               "arg3, arg4, arg5); } usdt:" + t + ":usdt:gated { printf(\"gated %ld\\n\", arg0); }",
                               t + " 5", tmp_);
        if (!kernel) GTEST_SKIP() << "bpftrace cannot run here";
        auto events = tmp_.path("ours.json");
        auto r = run(trace({"--format", "json", "-o", events, "sdt:usdt:types $arg1 $arg2 $arg3 $arg4 $arg5 $arg6",
                            "sdt:usdt:gated $arg1", "--", t, "5"}));
        ASSERT_EQ(r.status, 0) << r.describe();
        std::vector<std::string> ours;
        for (const auto& e : read_events(events)) {
            const auto& a = e["args"];
            if (e["probe"] == "gated") {
                ours.push_back("gated " + a["arg1"].dump());
                continue;
            }
            ours.push_back(a["arg1"].dump() + " " + a["arg2"].dump() + " " + a["arg3"].dump() + " " +
                           a["arg4"].dump() + " " + a["arg5"].dump() + " " + a["arg6"].dump());
        }
        EXPECT_EQ(ours, *kernel);
        EXPECT_EQ(ours.size(), 10u);
    }
}

TEST_P(CliUsdt, ArgumentBeyondTheMarkersCountIsOneClearLine) {
    const std::string t = target_path("usdt_args");
    expect_refused(run(trace({"sdt:usdt:gated $arg2", "--", t, "3"})), "has 1 argument, so there is no $arg2");
    expect_refused(run(trace({"sdt:usdt:types $arg10", "--", t, "3"})), "has 9 arguments, so there is no $arg10");
}

TEST_P(CliUsdt, MissingMarkerNamesTheNearOnesOrSaysThereAreNone) {
    expect_refused(run(trace({"sdt:usdt:gatd", "--", target_path("usdt_args"), "3"})), "did you mean usdt:gated?");
    expect_refused(run(trace({"sdt:nosuch:marker", "--", target_path("usdt_throw"), "1"})), "has no SDT markers");
    // A library given by path is checked before the program starts; one
    // given by name once the dynamic linker has mapped it, before main().
    for (std::string lib : {target_path("libusdt_lib.so"), std::string("libusdt_lib")}) {
        expect_refused(run(trace({"sdt:" + lib + ":usdt_lib:nosuch", "--", target_path("usdt_linked")})),
                       "it has usdt_lib:gated, usdt_lib:plain");
        expect_refused(run(trace({"sdt:" + lib + ":usdt_lib:gatd", "--", target_path("usdt_linked")})),
                       "did you mean usdt_lib:gated");
    }
}

// ---------------------------------------------------------------- semaphores

// usdt_rounds runs one round of ten guarded markers per SIGUSR1 and prints
// "round R fired F semaphores G B".
class Rounds {
public:
    Rounds() : target_({target_path("usdt_rounds")}) { ready_ = target_.wait_for_line("ready"); }
    bool ready() const { return ready_; }
    pid_t pid() const { return target_.pid(); }
    // Runs the next round; returns its line without "round R ", or "" on failure.
    std::string next() {
        ++round_;
        target_.signal(SIGUSR1);
        std::string head = "round " + std::to_string(round_) + " ";
        if (!target_.wait_for_text(head)) return "";
        const std::string& out = target_.out();
        size_t at = out.find(head);
        size_t end = out.find('\n', at);
        return out.substr(at + head.size(), end - at - head.size());
    }
    RunResult finish() {
        target_.signal(SIGTERM);
        return target_.wait();
    }

private:
    Background target_;
    bool ready_ = false;
    int round_ = 0;
};

TEST_P(CliUsdt, SemaphoreIsUpWhileAttachedAndDownAfterDetach) {
    Rounds rounds;
    ASSERT_TRUE(rounds.ready());
    EXPECT_EQ(rounds.next(), "fired 0 semaphores 0 0");
    // Two probes on usdt:gated, one on usdt:badarg: its second argument is
    // readable although its first is not.
    Background tracer(trace({"--format", "json", "-p", std::to_string(rounds.pid()), "sdt:usdt:gated i=$arg1",
                             "again=sdt:usdt:gated", "sdt:usdt:badarg x=$arg2"}));
    // The tracer says nothing until it is attached and a round is traced:
    // rounds run, each followed by a short wait for its events, until one
    // runs entirely traced.
    std::string line;
    for (int i = 0; i < 30; ++i) {
        line = rounds.next();
        ASSERT_NE(line, "") << "target stopped answering";
        if (line == "fired 10 semaphores 1 1") break;
        tracer.wait_for_text("\"probe\"", std::chrono::seconds(1));
    }
    ASSERT_EQ(line, "fired 10 semaphores 1 1");
    ASSERT_TRUE(tracer.wait_for_text("\"x\":9}"));
    tracer.signal(SIGINT);
    auto t = tracer.wait();
    EXPECT_EQ(t.status, 0) << t.describe();
    // The last round was traced whole: ten hits of each probe, in order.
    std::vector<long> i_seen, x_seen;
    size_t again = 0;
    for (const auto& l : lines_of(t.out)) {
        auto e = Json::parse(l);
        if (e["probe"] == "gated") i_seen.push_back(e["args"]["i"]);
        if (e["probe"] == "again") ++again;
        if (e["probe"] == "badarg") x_seen.push_back(e["args"]["x"]);
    }
    ASSERT_GE(i_seen.size(), 10u);
    EXPECT_EQ(again, i_seen.size());
    EXPECT_EQ(x_seen.size(), i_seen.size());
    std::vector<long> last(i_seen.end() - 10, i_seen.end());
    EXPECT_EQ(last, (std::vector<long>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
    std::vector<long> last_x(x_seen.end() - 10, x_seen.end());
    EXPECT_EQ(last_x, last);
    // Detached: the program's is-enabled checks are false again.
    EXPECT_EQ(rounds.next(), "fired 0 semaphores 0 0");
    EXPECT_EQ(rounds.finish().status, 0);
}

TEST_P(CliUsdt, UnreadableArgumentSpecIsRefusedAndLeavesTheSemaphoresAlone) {
    Rounds rounds;
    ASSERT_TRUE(rounds.ready());
    EXPECT_EQ(rounds.next(), "fired 0 semaphores 0 0");
    // usdt:gated goes in first (raising its semaphore), then $arg1 of
    // usdt:badarg ("8@%fs:0x28") is refused: everything is rolled back.
    expect_refused(run(trace({"-p", std::to_string(rounds.pid()), "sdt:usdt:gated", "sdt:usdt:badarg $arg1"})),
                   "8@%fs:0x28");
    EXPECT_EQ(rounds.next(), "fired 0 semaphores 0 0");
    // Launched: the program is not run at all.
    auto r = run(trace({"sdt:usdt:gated", "sdt:usdt:badarg $arg1", "--", target_path("usdt_rounds")}));
    expect_refused(r, "segment-relative");
    EXPECT_EQ(rounds.finish().status, 0);
}

TEST_P(CliUsdt, ForkChildrenFollowedKeepTheSemaphoreOthersGetItLowered) {
    const std::string t = target_path("usdt_fork");
    EXPECT_EQ(run({t}).out, "child fired 0 semaphore 0\nparent fired 0 semaphore 0\n");
    // Not followed: the child inherited the raised value and gets it taken
    // back before it runs.
    auto r = run(trace({"--count", "sdt:usdt:gated", "--", t}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_NE(r.out.find("child fired 0 semaphore 0\nparent fired 6 semaphore 1\n"), std::string::npos)
        << r.describe();
    // Followed: the child's copy stays raised, and its hits are reported.
    auto events = tmp_.path("fork.json");
    r = run(trace({"-f", "--format", "json", "-o", events, "sdt:usdt:gated $arg1", "--", t}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, "child fired 3 semaphore 1\nparent fired 6 semaphore 1\n");
    // Events are in program order per thread; the two processes' may interleave.
    std::map<long, std::vector<long>> values_by_pid;
    for (const auto& e : read_events(events)) values_by_pid[e["pid"].get<long>()].push_back(e["args"]["arg1"]);
    std::set<std::vector<long>> sequences;
    for (const auto& [pid, values] : values_by_pid) sequences.insert(values);
    EXPECT_EQ(sequences, (std::set<std::vector<long>>{{0, 0, 0, 2, 2, 2}, {1, 1, 1}}));
}

// ---------------------------------------------------------------- libraries

TEST_P(CliUsdt, MarkersInALinkedAndInADlopenedLibrary) {
    const std::string lib = target_path("libusdt_lib.so");
    struct Case {
        std::vector<std::string> command;
        std::string bin;
    };
    for (const Case& c : {Case{{target_path("usdt_linked")}, "libusdt_lib"},
                          Case{{target_path("usdt_dlopen"), lib}, "libusdt_lib"},
                          Case{{target_path("usdt_dlopen"), lib}, lib}}) {
        SCOPED_TRACE(c.command[0] + " " + c.bin);
        EXPECT_EQ(run(c.command).out, "fired 0 semaphore 0\n");
        auto events = tmp_.path("lib.json");
        std::vector<std::string> args = {"--format", "json", "-o", events,
                                         "sdt:" + c.bin + ":usdt_lib:plain $arg1 $arg2",
                                         "sdt:" + c.bin + ":usdt_lib:gated $arg1", "--"};
        args.insert(args.end(), c.command.begin(), c.command.end());
        auto r = run(trace(args));
        ASSERT_EQ(r.status, 0) << r.describe();
        EXPECT_EQ(r.out, "fired 4 semaphore 1\n");
        std::vector<std::string> seen;
        for (const auto& e : read_events(events)) {
            std::string text = e["probe"].get<std::string>() + " " + e["args"]["arg1"].dump();
            if (e["args"].contains("arg2")) text += " " + e["args"]["arg2"].dump();
            seen.push_back(text);
        }
        EXPECT_EQ(seen, (std::vector<std::string>{"plain 0 0", "gated 0", "plain 1 -1", "gated 1", "plain 2 -2",
                                                  "gated 2", "plain 3 -3", "gated 3"}));
    }
}

// ---------------------------------------------------------------- real programs

// The lines of usdt_calls.py, counted from 1, that hold `text`.
int line_of(const std::string& file, const std::string& text) {
    std::ifstream in(file);
    int number = 0;
    for (std::string line; std::getline(in, line);) {
        ++number;
        if (line.find(text) != std::string::npos) return number;
    }
    return -1;
}

bool python_has_markers() {
    return fs::exists(kPython) && readelf_semaphore(kPython, "python", "function__return").has_value();
}

const std::string kPythonProbes[] = {"sdt:python:function__entry file=$arg1:string func=$arg2:string line=$arg3",
                                     "sdt:python:function__return file=$arg1:string func=$arg2:string line=$arg3"};

// CPython 3.11 fires function__return at every return, yield and unwind,
// but function__entry only when a suspended generator is resumed by
// throw() or close() (CPython issue gh-98894): the script's entries are its
// two such resumptions, at the line of its yield.
TEST_P(CliUsdt, PythonCallTraceMatchesTheInterpretersOwnProfileHook) {
    if (!python_has_markers()) GTEST_SKIP() << kPython << " with SDT markers is not installed";
    const std::string script = std::string(UPROBE_SOURCE_DIR) + "/tests/targets/usdt_calls.py";
    auto plain = run({kPython, script});
    ASSERT_EQ(plain.status, 0) << plain.describe();
    ASSERT_EQ(plain.out, "total 135\n");
    auto profiled = run({kPython, script, "--profile"});
    ASSERT_EQ(profiled.status, 0) << profiled.describe();
    std::vector<std::string> oracle = lines_of(profiled.err);
    ASSERT_GE(oracle.size(), 20u) << profiled.describe();

    auto events = tmp_.path("python.json");
    auto r = run(trace({"--format", "json", "-o", events, kPythonProbes[0], kPythonProbes[1], "--", kPython, script}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, plain.out);
    std::vector<std::string> returns, entries;
    for (const auto& e : read_events(events)) {
        const auto& a = e["args"];
        if (a["file"] != script || a["func"] == "<module>") continue;
        std::string text = a["func"].get<std::string>() + " " + std::to_string(a["line"].get<int>());
        (e["probe"] == "function__entry" ? entries : returns).push_back(text);
    }
    std::vector<std::string> expected_returns;
    for (const auto& line : oracle) expected_returns.push_back(line.substr(std::string("return ").size()));
    EXPECT_EQ(returns, expected_returns);
    std::string at_yield = "gen " + std::to_string(line_of(script, "yield j"));
    EXPECT_EQ(entries, (std::vector<std::string>{at_yield, at_yield}));
}

TEST_P(CliUsdt, PythonMarkersAreGuardedBySemaphoresRaisedOnlyWhileTraced) {
    if (!python_has_markers()) GTEST_SKIP() << kPython << " with SDT markers is not installed";
    if (is_pie_or_library(kPython)) GTEST_SKIP() << kPython << " is position-independent";
    auto entry = readelf_semaphore(kPython, "python", "function__entry");
    auto ret = readelf_semaphore(kPython, "python", "function__return");
    ASSERT_TRUE(entry && ret);
    ASSERT_NE(*entry, 0u);
    const std::string script = std::string(UPROBE_SOURCE_DIR) + "/tests/targets/usdt_calls.py";
    std::vector<std::string> command = {kPython, script, "--semaphores", std::to_string(*entry), std::to_string(*ret)};
    auto plain = run(command);
    ASSERT_EQ(plain.status, 0) << plain.describe();
    EXPECT_EQ(plain.err, "semaphores 0 0\n");
    std::vector<std::string> args = {"--count", kPythonProbes[0], kPythonProbes[1], "--"};
    args.insert(args.end(), command.begin(), command.end());
    auto r = run(trace(args));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_NE(r.err.find("semaphores 1 1\n"), std::string::npos) << r.describe();
}

TEST_P(CliUsdt, PythonReturnsSameAsBpftrace) {
    if (!python_has_markers()) GTEST_SKIP() << kPython << " with SDT markers is not installed";
    if (!have_bpftrace()) GTEST_SKIP() << "bpftrace needs root and must be installed";
    const std::string script = std::string(UPROBE_SOURCE_DIR) + "/tests/targets/usdt_calls.py";
    std::string filter = "/str(arg0) == \"" + script + "\"/";
    auto kernel = bpftrace(std::string("usdt:") + kPython + ":python:function__entry " + filter +
                               " { printf(\"E %s %d\\n\", str(arg1), arg2); } usdt:" + kPython +
                               ":python:function__return " + filter + " { printf(\"R %s %d\\n\", str(arg1), arg2); }",
                           std::string(kPython) + " " + script, tmp_);
    if (!kernel) GTEST_SKIP() << "bpftrace cannot run here";
    auto events = tmp_.path("python.json");
    auto r = run(trace({"--format", "json", "-o", events, kPythonProbes[0], kPythonProbes[1], "--", kPython, script}));
    ASSERT_EQ(r.status, 0) << r.describe();
    std::vector<std::string> ours;
    for (const auto& e : read_events(events)) {
        const auto& a = e["args"];
        if (a["file"] != script) continue;
        ours.push_back(std::string(e["probe"] == "function__entry" ? "E " : "R ") + a["func"].get<std::string>() +
                       " " + std::to_string(a["line"].get<int>()));
    }
    EXPECT_EQ(ours, *kernel);
    EXPECT_GE(ours.size(), 20u);
}

// usdt_throw prints the address of typeid(int) and of every caught object;
// libstdcxx:throw's arguments are the thrown object and its type_info.
TEST_P(CliUsdt, LibstdcxxThrowAndCatchMarkers) {
    const int n = 7;
    const std::string t = target_path("usdt_throw");
    auto events = tmp_.path("throw.json");
    auto r = run(trace({"--format", "json", "-o", events, "sdt:libstdc++:libstdcxx:throw obj=$arg1 tinfo=$arg2",
                        "sdt:libstdc++:libstdcxx:catch", "--", t, std::to_string(n)}));
    ASSERT_EQ(r.status, 0) << r.describe();
    auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), size_t(n + 1)) << r.describe();
    uint64_t typeinfo = std::stoull(lines[0].substr(lines[0].find("0x")), nullptr, 16);
    std::vector<std::string> order;
    size_t throws = 0;
    for (const auto& e : read_events(events)) {
        order.push_back(e["probe"]);
        if (e["probe"] != "throw") continue;
        const std::string& caught = lines.at(1 + throws);
        EXPECT_EQ(e["args"]["obj"].get<uint64_t>(), std::stoull(caught.substr(caught.find("0x")), nullptr, 16));
        EXPECT_EQ(e["args"]["tinfo"].get<uint64_t>(), typeinfo);
        ++throws;
    }
    std::vector<std::string> expected;
    for (int i = 0; i < n; ++i) {
        expected.push_back("throw");
        expected.push_back("catch");
    }
    EXPECT_EQ(order, expected);
}

TEST_P(CliUsdt, LibstdcxxMarkersSameCountsAsBpftrace) {
    if (!have_bpftrace()) GTEST_SKIP() << "bpftrace needs root and must be installed";
    const std::string t = target_path("usdt_throw");
    // A private copy of the libstdc++ the target maps: the kernel's uprobes
    // bpftrace puts on it (system-wide, see below) then touch no other
    // test's processes, and ours never meet theirs on one instruction.
    std::smatch m;
    std::string ldd = run({"ldd", t}).out;
    ASSERT_TRUE(std::regex_search(ldd, m, std::regex(R"(libstdc\+\+\.so\.6 => (\S+))"))) << ldd;
    fs::create_directories(tmp_.path("lib"));
    const std::string lib = tmp_.path("lib/libstdc++.so.6");
    fs::copy_file(std::string(m[1]), lib);
    RunOptions with_copy{.env = {{"LD_LIBRARY_PATH", tmp_.path("lib")}}};
    // bpftrace 0.17 finds no location for these markers with -c (the library
    // is not mapped yet), so it traces the library system-wide, from before
    // the target starts (BEGIN runs once every probe is attached).
    std::string quoted = "usdt:\"" + lib + "\":libstdcxx:";
    Background kernel({"bpftrace", "-q", "-e",
                       "BEGIN { printf(\"go\\n\"); } " + quoted + "throw { printf(\"%d throw\\n\", pid); } " + quoted +
                           "catch { @catches[pid]++; printf(\"%d catch %d\\n\", pid, @catches[pid]); "
                           "if (@catches[pid] == 5) { exit(); } }"},
                      {.timeout = std::chrono::seconds(120)});
    if (!kernel.wait_for_line("go")) GTEST_SKIP() << "bpftrace cannot run here: " << kernel.wait().describe();
    Background untraced({t, "5"}, with_copy);
    std::string pid = std::to_string(untraced.pid());
    EXPECT_EQ(untraced.wait().status, 0);
    // Only the target maps the copy: bpftrace ends itself at its 5th catch.
    auto k = kernel.wait();
    EXPECT_EQ(k.status, 0) << k.describe();
    std::vector<std::string> theirs;
    for (const auto& line : lines_of(k.out))
        if (line.rfind(pid + " ", 0) == 0) theirs.push_back(line.substr(pid.size() + 1, 5));

    auto r = run(trace({"sdt:" + lib + ":libstdcxx:throw", "sdt:libstdc++:libstdcxx:catch", "--", t, "5"}), with_copy);
    ASSERT_EQ(r.status, 0) << r.describe();
    std::vector<std::string> ours;
    for (const auto& line : lines_of(r.out)) {
        if (line.find(": throw: (") != std::string::npos) ours.push_back("throw");
        if (line.find(": catch: (") != std::string::npos) ours.push_back("catch");
    }
    EXPECT_EQ(ours, theirs) << k.describe();
    EXPECT_EQ(ours.size(), 10u);
}

// A throwaway cluster in a temporary directory, run by the postgres account
// on a unix socket there; postgres forks a backend per connection, so -f.
TEST_P(CliUsdt, PostgresQueryStartCarriesTheQueryText) {
    std::string bin;
    for (const char* dir : {"/usr/lib/postgresql"}) {
        if (!fs::exists(dir)) continue;
        for (const auto& version : fs::directory_iterator(dir))
            if (fs::exists(version.path() / "bin/postgres")) bin = version.path() / "bin";
    }
    if (bin.empty()) GTEST_SKIP() << "postgres is not installed";
    if (!readelf_semaphore(bin + "/postgres", "postgresql", "query__start"))
        GTEST_SKIP() << "postgres was built without SDT markers";
    if (getuid() != 0) GTEST_SKIP() << "needs root to run postgres as its own user";
    struct passwd* pw = getpwnam("postgres");
    if (!pw) GTEST_SKIP() << "no 'postgres' account";
    RunOptions as_postgres{.timeout = std::chrono::seconds(60), .uid = pw->pw_uid, .gid = pw->pw_gid};
    const std::string data = tmp_.path("data");
    auto init = run({bin + "/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"}, as_postgres);
    if (init.status != 0) GTEST_SKIP() << "initdb failed: " << init.describe();

    const std::string postgres = bin + "/postgres";
    auto events = tmp_.path("pg.json");
    // The server's log goes to stdout, where "ready" can be waited for.
    Background server(trace({"-f", "--format", "json", "-o", events,
                             "sdt:" + postgres + ":postgresql:query__start query=$arg1:string", "--", "sh", "-c",
                             "exec " + postgres + " -D " + data + " -k " + tmp_.dir() +
                                 " -c listen_addresses= 2>&1"}),
                      as_postgres);
    ASSERT_TRUE(server.wait_for_text("ready to accept connections")) << server.out();
    const std::string query = "SELECT 'uprobe-' || 6*7";
    auto psql = run({"psql", "-h", tmp_.dir(), "-d", "postgres", "-Atc", query}, as_postgres);
    EXPECT_EQ(psql.out, "uprobe-42\n") << psql.describe();
    auto stop = run({bin + "/pg_ctl", "stop", "-D", data, "-m", "fast"}, as_postgres);
    EXPECT_EQ(stop.status, 0) << stop.describe();
    auto s = server.wait();
    EXPECT_EQ(s.status, 0) << s.describe();
    std::vector<std::string> queries;
    for (const auto& e : read_events(events)) queries.push_back(e["args"]["query"]);
    EXPECT_EQ(queries, (std::vector<std::string>{query}));
}

INSTANTIATE_TEST_SUITE_P(Engines, CliUsdt, ::testing::Values("ptrace", "inline"));

}  // namespace
}  // namespace uprobe::test
