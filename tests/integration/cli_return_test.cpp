// `uprobe trace` with return probes: --return-mode, --latency (bpftrace
// hist() layout, count and percentiles), the text of return events.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "process.hpp"

namespace uprobe::test {
namespace {

std::vector<std::string> trace(std::vector<std::string> args) {
    std::vector<std::string> argv = {uprobe_path(), "trace", "--engine", "ptrace"};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

std::vector<std::string> file_lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

// The parameter: "ENGINE/MODE"; trace() takes it apart.
class CliReturn : public ::testing::TestWithParam<std::string> {
protected:
    std::vector<std::string> trace(std::vector<std::string> args) const {
        const std::string& p = GetParam();
        std::vector<std::string> argv = {uprobe_path(), "trace", "--engine", p.substr(0, p.find('/')),
                                         "--return-mode", p.substr(p.find('/') + 1)};
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
    }
};

TEST_P(CliReturn, ReturnEventsShowValueEntryArgumentAndDuration) {
    const std::string bin = target_path("ret_funcs");
    TempDir tmp;
    const std::string events = tmp.path("events.txt");
    auto r = run(trace({"-o", events, "sq=square%return v=$retval x=@entry($arg1) d=$duration", "--", bin, "basic", "4"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, run({bin, "basic", "4"}).out);
    auto lines = file_lines(events);
    ASSERT_EQ(lines.size(), 4u);
    for (int i = 0; i < 4; ++i) {
        std::smatch m;
        ASSERT_TRUE(std::regex_search(lines[static_cast<size_t>(i)], m,
                                      std::regex(R"( sq: \(0x[0-9a-f]+\) v=(\d+) x=(\d+) d=(\d+)$)")))
            << lines[static_cast<size_t>(i)];
        EXPECT_EQ(std::stoi(m[1]), i * i);
        EXPECT_EQ(std::stoi(m[2]), i);
        EXPECT_GT(std::stoll(m[3]), 0);
    }
}

TEST_P(CliReturn, LatencyPrintsAHistogramPerFunction) {
    const std::string bin = target_path("ret_funcs");
    auto r = run(trace(
        {"--latency", "square", "nothing=half", "--", bin, "basic", "300"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    auto lines = lines_of(r.out);
    // The program's line, then the square histogram, then the empty one.
    ASSERT_GE(lines.size(), 5u) << r.out;
    EXPECT_EQ(lines[0], "sum 8955050");  // sum of i*i for i < 300
    EXPECT_EQ(lines[1], "@square (ns):");
    uint64_t total = 0;
    size_t i = 2;
    std::regex row(R"(^(\[\d+[KMGT]?(, \d+[KMGT]?\))?\]?)\s+(\d+) \|(@*) *\|$)");
    for (; i < lines.size(); ++i) {
        std::smatch m;
        if (!std::regex_match(lines[i], m, row)) break;
        total += std::stoull(m[3]);
        EXPECT_EQ(lines[i].size(), 16u + 8u + 2u + 52u + 1u) << lines[i];
    }
    EXPECT_EQ(total, 300u);
    ASSERT_LT(i, lines.size());
    EXPECT_TRUE(std::regex_match(lines[i], std::regex(R"(count 300  p50 \S+  p90 \S+  p99 \S+  max \S+)")))
        << lines[i];
    EXPECT_NE(r.out.find("nothing: no returns"), std::string::npos) << r.out;
}

TEST_P(CliReturn, LatencyAsJson) {
    const std::string bin = target_path("ret_funcs");
    auto r = run(trace({"--latency", "--format", "json", "-o", "/dev/stdout",
                        "square", "--", bin, "basic", "50"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), 2u) << r.out;
    auto j = nlohmann::json::parse(lines[1]);
    EXPECT_EQ(j["probe"], "square");
    EXPECT_EQ(j["count"], 50);
    uint64_t total = 0;
    for (const auto& b : j["buckets"]) total += b["count"].get<uint64_t>();
    EXPECT_EQ(total, 50u);
    EXPECT_LE(j["p50_ns"].get<uint64_t>(), j["p99_ns"].get<uint64_t>());
    EXPECT_LE(j["p99_ns"].get<uint64_t>(), j["max_ns"].get<uint64_t>());
}

// The durations are real: nap() sleeps 1 ms, so no call may read less
// (the inline engine's agent converts its own timestamps to ns; the
// session counts the ptrace engine's), and none near a second.
TEST_P(CliReturn, LatencyOfACallOfKnownLeastDuration) {
    const std::string bin = target_path("ret_funcs");
    auto r = run(trace({"--latency", "--format", "json", "-o", "/dev/stdout", "nap", "--", bin, "nap", "20"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), 2u) << r.out;
    EXPECT_EQ(lines[0], "slept 20000 us");
    auto j = nlohmann::json::parse(lines[1]);
    EXPECT_EQ(j["count"], 20);
    for (const auto& b : j["buckets"]) EXPECT_GE(b["min_ns"].get<uint64_t>(), 524288u) << b;  // [512K, 1M) holds 1 ms
    EXPECT_GE(j["p50_ns"].get<uint64_t>(), 1000000u);
    EXPECT_LE(j["p50_ns"].get<uint64_t>(), j["p90_ns"].get<uint64_t>());
    EXPECT_LE(j["p90_ns"].get<uint64_t>(), j["p99_ns"].get<uint64_t>());
    EXPECT_LE(j["p99_ns"].get<uint64_t>(), j["max_ns"].get<uint64_t>());
    EXPECT_LT(j["max_ns"].get<uint64_t>(), 1000000000u);
}

// half(x) = x / 2 returns a double: with DWARF, a bare $retval shows it
// (xmm0); a copy without debug info (strip --strip-debug, the symbols stay)
// has nothing to say it is not an integer, so rax it is, as before.
TEST_P(CliReturn, FloatReturnTypeFromDwarf) {
    const std::string bin = target_path("ret_funcs");
    TempDir dir;
    const std::string events = dir.path("events.txt");
    auto r = run(trace({"-o", events, "h=half%return v=$retval", "--", bin, "float", "3"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, run({bin, "float", "3"}).out);
    auto lines = file_lines(events);
    ASSERT_EQ(lines.size(), 3u);
    const char* expected[] = {" v=0.25", " v=0.75", " v=1.25"};  // (i + 0.5) / 2
    for (size_t i = 0; i < 3; ++i) {
        const std::string& line = lines[i];
        ASSERT_GE(line.size(), std::string(expected[i]).size()) << line;
        EXPECT_EQ(line.substr(line.size() - std::string(expected[i]).size()), expected[i]) << line;
    }

    const std::string stripped = dir.path("ret_funcs_stripped");
    auto strip = run({"strip", "--strip-debug", "-o", stripped, bin});
    ASSERT_EQ(strip.status, 0) << strip.describe();
    const std::string raw_events = dir.path("raw.txt");
    auto raw = run(trace({"-o", raw_events, "h=half%return v=$retval", "--", stripped, "float", "1"}));
    ASSERT_EQ(raw.status, 0) << raw.describe();
    std::ifstream raw_in(raw_events);
    std::string raw_text((std::istreambuf_iterator<char>(raw_in)), std::istreambuf_iterator<char>());
    EXPECT_TRUE(std::regex_search(raw_text, std::regex(R"( h: \(0x[0-9a-f]+\) v=\d+\n)"))) << raw_text;
}

// list --sites for return probes: where the inline engine hooks each ret
// (square's one ret, found by objdump), or, where a branch lands in the
// bytes before a ret (depth), that the return address is taken at the
// entry instead; and the tracer does the same.
TEST(CliReturnSites, RetsHookedOrTheReturnAddressTakenAndWhy) {
    const std::string bin = target_path("ret_funcs");
    auto dump = run({"objdump", "-d", "--no-show-raw-insn", bin});
    ASSERT_EQ(dump.status, 0) << dump.describe();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(dump.out, m, std::regex(R"(<square>:\n(?:.*\n)*?\s+([0-9a-f]+):\s+ret)")));
    const uint64_t ret = std::stoull(m[1], nullptr, 16);

    auto r = run({uprobe_path(), "list", "-x", bin, "--sites", "square%return", "--format", "json"});
    ASSERT_EQ(r.status, 0) << r.describe();
    auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), 1u) << r.out;
    auto j = nlohmann::json::parse(lines[0]);
    EXPECT_EQ(j["method"], "ret hooked");
    EXPECT_EQ(j["addr"].get<uint64_t>(), ret);
    EXPECT_LE(j["jump_addr"].get<uint64_t>() + 5, ret + 1);
    EXPECT_EQ(j["jump_addr"].get<uint64_t>() + j["displaced"].get<uint64_t>(), ret + 1) << "the jump's bytes end with the ret";

    r = run({uprobe_path(), "list", "-x", bin, "--sites", "depth%return", "--format", "json"});
    ASSERT_EQ(r.status, 0) << r.describe();
    lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), 1u) << r.out;
    j = nlohmann::json::parse(lines[0]);
    EXPECT_EQ(j["function"], "depth");
    EXPECT_NE(j["return_address"].get<std::string>().find("lands inside the patched bytes"), std::string::npos) << r.out;

    auto traced = run({uprobe_path(), "trace", "-v", "--engine", "inline", "sq=square%return", "dp=depth%return", "--",
                       bin, "recurse", "3"});
    ASSERT_EQ(traced.status, 0) << traced.describe();
    EXPECT_TRUE(std::regex_search(traced.err, std::regex(R"(probe sq: 1 site .*returns hooked at the rets of 1 function)")))
        << traced.err;
    EXPECT_TRUE(std::regex_search(traced.err, std::regex(R"(probe dp: 1 site .*\(1 jump, 0 int3\)\n)"))) << traced.err;
}

INSTANTIATE_TEST_SUITE_P(Modes, CliReturn,
                         ::testing::Values("ptrace/trampoline", "ptrace/insn", "inline/trampoline", "inline/auto"));

TEST(CliReturnErrors, LatencyNeedsFunctions) {
    auto r = run(trace({"--latency", "square+4", "--", target_path("ret_funcs")}));
    EXPECT_EQ(r.status, 2) << r.describe();
    EXPECT_NE(r.err.find("--latency times functions"), std::string::npos) << r.err;
}

TEST(CliReturnErrors, UnknownReturnMode) {
    auto r = run(trace({"--return-mode", "magic", "square%return", "--", target_path("ret_funcs")}));
    EXPECT_EQ(r.status, 2) << r.describe();
    EXPECT_NE(r.err.find("--return-mode"), std::string::npos) << r.err;
}

TEST(CliReturnErrors, InsnModeRefusesAnUnprovableIndirectJump) {
    auto r = run(trace({"--return-mode", "insn", "via_pointer%return", "--", target_path("ret_tail"), "3"}));
    EXPECT_EQ(r.status, 1) << r.describe();
    EXPECT_NE(r.err.find("indirect jump at via_pointer+"), std::string::npos) << r.err;
    EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
}

// A switch compiled to a jump table: insn mode proves the table stays in
// the function; same events as the trampoline, and the program's output.
TEST(CliReturnModes, InsnModeFollowsAJumpTable) {
    const std::string bin = target_path("ret_switch");
    std::vector<std::string> outputs;
    for (const char* mode : {"insn", "trampoline"}) {
        auto r = run(trace(
            {"--return-mode", mode, "--format", "json", "p=pick%return v=$retval:s64", "--", bin, "12"}));
        ASSERT_EQ(r.status, 0) << r.describe();
        std::string values;
        for (const auto& line : lines_of(r.out))
            if (line.find("\"probe\"") != std::string::npos)
                values += nlohmann::json::parse(line)["args"]["v"].dump() + " ";
        outputs.push_back(values);
    }
    EXPECT_EQ(outputs[0], "1 18 7 48 -36 25 106 77 -1 -1 1 18 ");
    EXPECT_EQ(outputs[0], outputs[1]);
}

}  // namespace
}  // namespace uprobe::test
