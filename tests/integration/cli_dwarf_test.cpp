// Arguments by DWARF name, line and inline probes, and split debug info,
// end to end through `uprobe`. Expected values come from the targets'
// sources (tests/targets/dw_*.c, known by construction), from gdb as an
// oracle, and from binutils (objcopy, readelf); traced programs must print
// exactly what they print untraced. Every case runs once per engine.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "events.hpp"
#include "process.hpp"

namespace uprobe::test {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::vector<Json> events_of(const std::vector<Json>& all, const std::string& probe) {
    std::vector<Json> out;
    for (const auto& e : all)
        if (e["probe"] == probe) out.push_back(e);
    return out;
}

// The line of tests/targets/dw_args.c marked "@line:NAME".
int marked_line(const std::string& name) {
    std::ifstream in(std::string(UPROBE_SOURCE_DIR) + "/tests/targets/dw_args.c");
    int n = 0;
    for (std::string line; std::getline(in, line);) {
        ++n;
        if (line.find("@line:" + name) != std::string::npos) return n;
    }
    return 0;
}

// Environment with no way to find debug info but the one a test sets up.
std::map<std::string, std::string> isolated_env(const std::string& debug_root) {
    return {{"UPROBE_DEBUG_ROOT", debug_root}, {"DEBUGINFOD_URLS", ""}};
}

std::string build_id(const std::string& binary) {
    auto r = run({"readelf", "-n", binary});
    std::smatch m;
    if (!std::regex_search(r.out, m, std::regex(R"(Build ID: ([0-9a-f]+))"))) return "";
    return m[1];
}

bool has_section(const std::string& binary, const std::string& section) {
    auto r = run({"readelf", "-S", "-W", binary});
    return r.out.find(" " + section + " ") != std::string::npos;
}

// The forms of one program: unstripped, stripped with its debug file found
// by build-id (under `root`) or by .gnu_debuglink (next to it).
struct SplitForms {
    std::string full, by_build_id, by_debuglink, debug_file, root, empty_root;
};

void make_split_forms(const TempDir& tmp, const std::string& target, SplitForms& f) {
    f.full = tmp.path(target);
    fs::copy_file(target_path(target), f.full);
    f.debug_file = tmp.path(target + ".debug.orig");
    ASSERT_EQ(run({"objcopy", "--only-keep-debug", f.full, f.debug_file}).status, 0);
    std::string id = build_id(f.full);
    ASSERT_GT(id.size(), 2u);
    f.root = tmp.path("root");
    f.empty_root = tmp.path("empty-root");
    fs::create_directories(f.root + "/.build-id/" + id.substr(0, 2));
    fs::create_directories(f.empty_root);
    fs::copy_file(f.debug_file, f.root + "/.build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug");
    fs::create_directories(tmp.path("bid"));
    f.by_build_id = tmp.path("bid/" + target);
    ASSERT_EQ(run({"objcopy", "--strip-all", f.full, f.by_build_id}).status, 0);
    fs::create_directories(tmp.path("link"));
    f.by_debuglink = tmp.path("link/" + target);
    fs::copy_file(f.debug_file, tmp.path("link/" + target + ".debug"));
    ASSERT_EQ(run({"objcopy", "--strip-all", "--add-gnu-debuglink=" + tmp.path("link/" + target + ".debug"), f.full,
                   f.by_debuglink})
                  .status,
              0);
    // The stripped forms really have neither DWARF nor a symbol table.
    for (const auto* s : {&f.by_build_id, &f.by_debuglink}) {
        ASSERT_FALSE(has_section(*s, ".debug_info")) << *s;
        ASSERT_FALSE(has_section(*s, ".symtab")) << *s;
    }
}

class CliDwarf : public ::testing::TestWithParam<std::string> {
protected:
    std::vector<std::string> trace(std::vector<std::string> args) const {
        std::vector<std::string> argv = {uprobe_path(), "trace", "--engine", GetParam()};
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
    }
    static std::vector<std::string> list(std::vector<std::string> args) {
        std::vector<std::string> argv = {uprobe_path(), "list"};
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
    }
    TempDir tmp_;
};

TEST_P(CliDwarf, EntryArgumentsByNameAreExact) {
    auto plain = run({target_path("dw_args"), "3"});
    ASSERT_EQ(plain.status, 0) << plain.describe();
    auto events_path = tmp_.path("e.json");
    auto r = run(trace({"--format", "json", "-o", events_path,
                        "handle count label tag ratio r=*req req->name req->next->name req->where.y req->next->color",
                        "by_value p c flag", "sum_table values[2] first=*values n", "--", target_path("dw_args"), "3"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, plain.out);
    auto all = read_events(events_path);

    auto handle = events_of(all, "handle");
    ASSERT_EQ(handle.size(), 3u);
    std::regex whole_request(
        R"(\{id=7, flags=16, name="first", path="/srv/a", where=\{x=-1, y=2\}, color=GREEN, weight=1\.5, )"
        R"(urgent=true, kind=5, level=9, next=0x[0-9a-f]+\})");
    for (int k = 0; k < 3; ++k) {
        const auto& a = handle[k]["args"];
        EXPECT_EQ(a["count"], k + 1);
        EXPECT_EQ(a["label"], "one");
        EXPECT_EQ(a["tag"], "'x'");
        EXPECT_EQ(a["ratio"], 0.5);
        EXPECT_TRUE(std::regex_match(a["r"].get<std::string>(), whole_request)) << a["r"];
        EXPECT_EQ(a["req_name"], "first");
        EXPECT_EQ(a["req_next_name"], "second");
        EXPECT_EQ(a["req_where_y"], 2);
        EXPECT_EQ(a["req_next_color"], "BLUE");
        EXPECT_FALSE(handle[k].contains("errors")) << handle[k];
    }
    auto by_value = events_of(all, "by_value");
    ASSERT_EQ(by_value.size(), 3u);
    for (int k = 0; k < 3; ++k) {
        const auto& a = by_value[k]["args"];
        EXPECT_EQ(a["p"], "{x=-1, y=2}");
        EXPECT_EQ(a["c"], "GREEN");
        EXPECT_EQ(a["flag"], k % 2 == 0);
    }
    auto sum = events_of(all, "sum_table");
    ASSERT_EQ(sum.size(), 1u);
    EXPECT_EQ(sum[0]["args"]["values_2"], 30);
    EXPECT_EQ(sum[0]["args"]["first"], 10);
    EXPECT_EQ(sum[0]["args"]["n"], 5);
}

TEST_P(CliDwarf, ParamsAndVarsNameEachVariable) {
    auto plain = run({target_path("dw_args"), "1"});
    auto r = run(trace({"--format", "json", "handle $params", "sum_table $vars", "--", target_path("dw_args"), "1"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    std::vector<nlohmann::ordered_json> handle, sum;
    std::string program_out;
    for (const auto& line : lines_of(r.out)) {
        if (line.empty() || line[0] != '{') {
            program_out += line + "\n";
            continue;
        }
        auto e = nlohmann::ordered_json::parse(line);
        (e["probe"] == "handle" ? handle : sum).push_back(e);
    }
    ASSERT_EQ(handle.size(), 1u);
    std::vector<std::string> names;  // in the order of the declarations
    for (auto it = handle[0]["args"].begin(); it != handle[0]["args"].end(); ++it) names.push_back(it.key());
    EXPECT_EQ(names, (std::vector<std::string>{"req", "count", "label", "tag", "ratio"}));
    EXPECT_EQ(program_out, plain.out);
    EXPECT_EQ(handle[0]["args"]["count"], 1);
    ASSERT_EQ(sum.size(), 1u);
    EXPECT_EQ(sum[0]["args"]["n"], 5);
    EXPECT_TRUE(sum[0]["args"].contains("sum")) << sum[0];  // the local, not yet assigned at the entry
}

TEST_P(CliDwarf, LineProbeLocalsMatchGdb) {
    int line = marked_line("after_scaled");
    ASSERT_GT(line, 0);
    std::string where = "dw_args.c:" + std::to_string(line);
    auto plain = run({target_path("dw_args"), "4"});
    auto r = run(trace({"--format", "json", where + " count total scaled", "--", target_path("dw_args"), "4"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    std::vector<Json> all;
    std::string program_out;
    for (const auto& l : lines_of(r.out)) {
        if (!l.empty() && l[0] == '{') all.push_back(Json::parse(l));
        else program_out += l + "\n";
    }
    EXPECT_EQ(program_out, plain.out);
    ASSERT_EQ(all.size(), 4u) << r.out;
    for (long c = 1; c <= 4; ++c) {
        long total = 7 * c + c * (c - 1) / 2;  // sum of req->id + i for i < count, id = 7
        EXPECT_EQ(all[c - 1]["args"]["count"], c);
        EXPECT_EQ(all[c - 1]["args"]["total"], total);
        EXPECT_EQ(all[c - 1]["args"]["scaled"], 3 * total);
    }
    // gdb, stopped at the same line, agrees on the locals of the first call.
    auto gdb = run({"gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off", "-ex", "break " + where, "-ex", "run",
                    "-ex", "info locals", "--args", target_path("dw_args"), "1"},
                   RunOptions{std::chrono::seconds(60), {{"DEBUGINFOD_URLS", ""}}, {}, {}, {}});
    if (gdb.status != 0 || gdb.out.find("total = ") == std::string::npos) GTEST_SKIP() << "gdb unusable here: " << gdb.describe();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(gdb.out, m, std::regex(R"(total = (-?\d+)\s+scaled = (-?\d+))"))) << gdb.out;
    EXPECT_EQ(all[0]["args"]["total"], std::stol(m[1]));
    EXPECT_EQ(all[0]["args"]["scaled"], std::stol(m[2]));
}

// -O2: parameters in registers (a struct in one register, a float in
// xmm0), locals computed by DWARF arithmetic or optimized out; gdb says
// which.
TEST_P(CliDwarf, OptimizedBuildValuesInRegistersAndOptimizedOutAgreeWithGdb) {
    auto plain = run({target_path("dw_args_o2"), "3"});
    auto events_path = tmp_.path("o2.json");
    auto r = run(trace({"--format", "json", "-o", events_path, "by_value p c flag p.y",
                        "handle count label tag ratio req->name req->where", "--", target_path("dw_args_o2"), "3"}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, plain.out);
    auto all = read_events(events_path);
    auto by_value = events_of(all, "by_value");
    auto handle = events_of(all, "handle");
    ASSERT_EQ(by_value.size(), 3u);
    ASSERT_EQ(handle.size(), 3u);
    for (int k = 0; k < 3; ++k) {
        EXPECT_EQ(by_value[k]["args"]["p"], "{x=-1, y=2}");
        EXPECT_EQ(by_value[k]["args"]["p_y"], 2);
        EXPECT_EQ(by_value[k]["args"]["c"], "GREEN");
        EXPECT_EQ(by_value[k]["args"]["flag"], k % 2 == 0);
        EXPECT_EQ(handle[k]["args"]["count"], k + 1);
        EXPECT_EQ(handle[k]["args"]["label"], "one");
        EXPECT_EQ(handle[k]["args"]["tag"], "'x'");
        EXPECT_EQ(handle[k]["args"]["ratio"], 0.5);
        EXPECT_EQ(handle[k]["args"]["req_name"], "first");
        EXPECT_EQ(handle[k]["args"]["req_where"], "{x=-1, y=2}");
    }

    int line = marked_line("after_scaled");
    std::string where = "dw_args.c:" + std::to_string(line);
    auto line_events = tmp_.path("o2-line.json");
    auto at_line = run(trace({"--format", "json", "-o", line_events, where + " total scaled", "--",
                              target_path("dw_args_o2"), "1"}));
    ASSERT_EQ(at_line.status, 0) << at_line.describe();
    auto line_hits = read_events(line_events);
    ASSERT_EQ(line_hits.size(), 1u);
    auto event = line_hits[0];
    auto gdb = run({"gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off", "-ex", "break " + where, "-ex", "run",
                    "-ex", "info locals", "--args", target_path("dw_args_o2"), "1"},
                   RunOptions{std::chrono::seconds(60), {{"DEBUGINFOD_URLS", ""}}, {}, {}, {}});
    if (gdb.status != 0 || gdb.out.find("scaled = ") == std::string::npos) GTEST_SKIP() << "gdb unusable here: " << gdb.describe();
    for (const char* name : {"total", "scaled"}) {
        std::smatch m;
        ASSERT_TRUE(std::regex_search(gdb.out, m, std::regex(std::string(name) + R"( = (<optimized out>|-?\d+))")))
            << gdb.out;
        if (m[1] == "<optimized out>") {
            EXPECT_EQ(event["errors"][name], "optimized out") << event;
        } else {
            EXPECT_EQ(event["args"][name], std::stol(m[1])) << event;
        }
    }
    EXPECT_EQ(event["args"]["scaled"], 21);  // 3 * (7 + 0), by construction
}

TEST_P(CliDwarf, NameNotInScopeIsOneLineListingTheNamesInScopeAndNothingRuns) {
    auto r = run(trace({"handle nosuch", "--", target_path("dw_args"), "1"}));
    EXPECT_NE(r.status, 0) << r.describe();
    EXPECT_NE(r.err.find("no variable 'nosuch'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("in scope: req, count, label, tag, ratio, total, scaled"), std::string::npos) << r.err;
    EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
    EXPECT_EQ(r.out.find("grand"), std::string::npos) << "the program ran: " << r.out;

    auto field = run(trace({"handle req->nope", "--", target_path("dw_args"), "1"}));
    EXPECT_NE(field.status, 0);
    EXPECT_NE(field.err.find("struct request has no field 'nope' (fields: id, flags, name, path"), std::string::npos)
        << field.err;
    auto dot = run(trace({"handle req.id", "--", target_path("dw_args"), "1"}));
    EXPECT_NE(dot.status, 0);
    EXPECT_NE(dot.err.find("'req' is a pointer: write req->id"), std::string::npos) << dot.err;
}

// dw_inline.c: scale() is inlined into use_a (n calls, factor 3) and use_b
// (2n calls, v = i + 1, factor 5), and called once out of line through a
// pointer (v = n, factor 7).
TEST_P(CliDwarf, InlinedFunctionIsProbedAtEveryInstanceAndItsOutOfLineCopy) {
    const int n = 3;
    auto plain = run({target_path("dw_inline"), std::to_string(n)});
    auto events_path = tmp_.path("inline.json");
    auto r = run(trace({"--format", "json", "-o", events_path, "scale v factor", "--", target_path("dw_inline"),
                        std::to_string(n)}));
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, plain.out);
    auto all = read_events(events_path);
    ASSERT_EQ(all.size(), size_t(n + 2 * n + 1));
    int a = 0, b = 0, optimized_out = 0;
    for (size_t i = 0; i + 1 < all.size(); ++i) {
        const auto& args = all[i]["args"];
        // Where the compiler kept a value, it must be the right one; where
        // not, the event says so for that variable and still fires.
        for (const char* name : {"v", "factor"}) {
            if (args[name].is_null()) {
                EXPECT_EQ(all[i]["errors"][name], "optimized out") << all[i];
                ++optimized_out;
            }
        }
        bool in_a = i < size_t(n);
        if (args["v"].is_number()) {
            EXPECT_EQ(args["v"], in_a ? a : b + 1) << all[i];
        }
        if (args["factor"].is_number()) {
            EXPECT_EQ(args["factor"], in_a ? 3 : 5) << all[i];
        }
        (in_a ? a : b)++;
    }
    EXPECT_GT(optimized_out, 0) << "gcc -O2 leaves scale's parameters without a location at its inlined entries";
    EXPECT_EQ(all.back()["args"]["v"], n);
    EXPECT_EQ(all.back()["args"]["factor"], 7);

    // The functions it was inlined into see their own parameters at their
    // entry (not the inlined callee's), in registers: optimized code is
    // probed at the entry itself.
    auto own = run(trace({"--format", "json", "use_b v", "--", target_path("dw_inline"), std::to_string(n)}));
    ASSERT_EQ(own.status, 0) << own.describe();
    int k = 0;
    for (const auto& l : lines_of(own.out)) {
        if (l.empty() || l[0] != '{') continue;
        EXPECT_EQ(Json::parse(l)["args"]["v"], k++) << l;
    }
    EXPECT_EQ(k, 2 * n);
}

TEST_P(CliDwarf, ListLinesShowsExactlyTheLinesProbesAccept) {
    for (const auto& [target, function] : {std::pair<std::string, std::string>{"dw_args", "handle"},
                                           {"dw_args", "main"}, {"dw_inline", "scale"}}) {
        auto listed = run(list({"-x", target_path(target), "--lines", function, "--format", "json"}));
        ASSERT_EQ(listed.status, 0) << listed.describe();
        std::set<long> rel;
        std::map<long, std::set<uint64_t>> addrs;
        for (const auto& l : lines_of(listed.out)) {
            auto j = Json::parse(l);
            rel.insert(j["relline"].get<long>());
            for (const auto& a : j["addrs"]) addrs[j["relline"]].insert(a.get<uint64_t>());
        }
        ASSERT_FALSE(rel.empty());
        for (long n = *rel.begin() - 1; n <= *rel.rbegin() + 1; ++n) {
            if (n < 0) continue;
            auto probe = run(list({"-x", target_path(target), "--vars", function + ":" + std::to_string(n),
                                   "--format", "json"}));
            if (!rel.count(n)) {
                EXPECT_NE(probe.status, 0) << function << ":" << n << " is not listed but resolves: " << probe.out;
                EXPECT_NE(probe.err.find("no code at"), std::string::npos) << probe.err;
                continue;
            }
            EXPECT_EQ(probe.status, 0) << function << ":" << n << " is listed but fails: " << probe.describe();
            std::set<uint64_t> sites;
            for (const auto& l : lines_of(probe.out)) sites.insert(Json::parse(l)["addr"].get<uint64_t>());
            // A line whose sites have no variables prints nothing to compare.
            if (!sites.empty()) {
                EXPECT_EQ(sites, addrs[n]) << function << ":" << n;
            }
        }
    }
}

TEST_P(CliDwarf, SplitDebugInfoGivesTheSameListsAndEvents) {
    SplitForms f;
    ASSERT_NO_FATAL_FAILURE(make_split_forms(tmp_, "dw_args", f));
    int line = marked_line("after_scaled");
    std::string where = "dw_args.c:" + std::to_string(line);
    std::vector<std::vector<std::string>> queries = {
        {},  // every function, static ones included
        {"sum_table"},
        {"--lines", "handle"},
        {"--lines", "main"},
        {"--vars", "handle"},
        {"--vars", where},
        {"--vars", "sum_table"},
    };
    auto listing = [&](const std::string& bin, const std::string& root, const std::vector<std::string>& q) {
        std::vector<std::string> args = {"-x", bin};
        args.insert(args.end(), q.begin(), q.end());
        return run(list(args), RunOptions{std::chrono::seconds(60), isolated_env(root), {}, {}, {}});
    };
    auto events = [&](const std::string& bin, const std::string& root) {
        // (Not $vars at an entry: locals not yet assigned hold stack garbage.)
        auto r = run(trace({"--format", "json", "handle $params r=*req", where + " $vars", "sum_table n values[1]", "--",
                            bin, "3"}),
                     RunOptions{std::chrono::seconds(60), isolated_env(root), {}, {}, {}});
        std::vector<std::string> out;
        std::string program;
        for (const auto& l : lines_of(r.out)) {
            if (l.empty() || l[0] != '{') {
                program += l + "\n";
                continue;
            }
            auto j = Json::parse(l);
            // Addresses of the stack and the load base differ between runs.
            std::string args = std::regex_replace(j["args"].dump(), std::regex("0x[0-9a-f]+|\"req\":[0-9]+"), "ADDR");
            out.push_back(j["probe"].get<std::string>() + " " + args);
        }
        out.push_back("status " + std::to_string(r.status) + " program " + program);
        return out;
    };
    for (const auto& q : queries) {
        auto want = listing(f.full, f.empty_root, q);
        ASSERT_EQ(want.status, 0) << want.describe();
        ASSERT_FALSE(want.out.empty());
        for (const auto& [bin, root] : {std::pair{f.by_build_id, f.root}, std::pair{f.by_debuglink, f.empty_root}}) {
            auto got = listing(bin, root, q);
            EXPECT_EQ(got.status, 0) << got.describe();
            EXPECT_EQ(got.out, want.out) << bin << " list " << (q.empty() ? "" : q[0] + " " + q.back());
        }
    }
    auto want = events(f.full, f.empty_root);
    ASSERT_EQ(want.size(), 3u + 3u + 1u + 1u);
    EXPECT_EQ(want.back(), "status 0 program " + run({f.full, "3"}).out);
    EXPECT_EQ(events(f.by_build_id, f.root), want);
    EXPECT_EQ(events(f.by_debuglink, f.empty_root), want);
}

TEST_P(CliDwarf, DebugFileWithTheWrongCrcOrBuildIdIsRefused) {
    SplitForms f;
    ASSERT_NO_FATAL_FAILURE(make_split_forms(tmp_, "dw_args", f));
    // Another program's debug file where each lookup looks.
    std::string other = tmp_.path("other.debug");
    ASSERT_EQ(run({"objcopy", "--only-keep-debug", target_path("dw_inline"), other}).status, 0);
    fs::copy_file(other, tmp_.path("link/dw_args.debug"), fs::copy_options::overwrite_existing);
    std::string id = build_id(f.full);
    fs::copy_file(other, f.root + "/.build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug",
                  fs::copy_options::overwrite_existing);
    for (const auto& [bin, root, why] : {std::tuple{f.by_debuglink, f.empty_root, std::string("CRC mismatch")},
                                         std::tuple{f.by_build_id, f.root, std::string("build-id mismatch")}}) {
        auto r = run(trace({"handle count", "--", bin, "1"}),
                     RunOptions{std::chrono::seconds(60), isolated_env(root), {}, {}, {}});
        EXPECT_NE(r.status, 0) << r.describe();
        EXPECT_NE(r.err.find("does not match"), std::string::npos) << r.err;
        EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
        EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
        EXPECT_EQ(r.out.find("grand"), std::string::npos) << "the program ran: " << r.out;
    }
}

std::string libc_path() {
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);) {
        auto slash = line.find('/');
        if (slash == std::string::npos) continue;
        std::string path = line.substr(slash);
        if (fs::path(path).filename().string().starts_with("libc.so")) return path;
    }
    return "";
}

TEST_P(CliDwarf, LibcStaticFunctionWithArgumentsByName) {
    std::string libc = libc_path();
    ASSERT_FALSE(libc.empty());
    std::string id = build_id(libc);
    if (id.size() < 3 || !fs::exists("/usr/lib/debug/.build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug"))
        GTEST_SKIP() << "libc6-dbg is not installed for " << libc;
    auto plain = run({target_path("dw_malloc")});
    auto events_path = tmp_.path("malloc.json");
    auto r = run(trace({"--format", "json", "-o", events_path, "libc:_int_malloc bytes", "--", target_path("dw_malloc")}),
                 RunOptions{std::chrono::seconds(60), {{"DEBUGINFOD_URLS", ""}}, {}, {}, {}});
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, plain.out);
    int seen = 0;
    for (const auto& e : read_events(events_path)) {
        ASSERT_TRUE(e["args"]["bytes"].is_number()) << e;
        seen += e["args"]["bytes"] == 123456;
    }
    EXPECT_GE(seen, 1) << "dw_malloc mallocs 123456 bytes, below the mmap threshold";
}

// A free TCP port on loopback (the kernel picks it; closed before use).
int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
        port = ntohs(addr.sin_port);
    ::close(fd);
    return port;
}

// The HTTP status of GET `path` on loopback:`port`, 0 when not answering.
int http_status(int port, const std::string& path) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(uint16_t(port));
    int status = 0;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
        if (::write(fd, request.data(), request.size()) == ssize_t(request.size())) {
            char buf[64] = {};
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 10000) == 1 && ::read(fd, buf, sizeof buf - 1) > 12) status = std::atoi(buf + 9);
        }
    }
    ::close(fd);
    return status;
}

TEST_P(CliDwarf, DebuginfodServesTheDebugFileAndTheCacheKeepsIt) {
    if (!fs::exists("/usr/bin/debuginfod")) GTEST_SKIP() << "debuginfod (Debian package debuginfod) is not installed";
    SplitForms f;
    ASSERT_NO_FATAL_FAILURE(make_split_forms(tmp_, "dw_args", f));
    fs::create_directories(tmp_.path("served"));
    fs::copy_file(f.debug_file, tmp_.path("served/dw_args.debug"));
    std::string id = build_id(f.full);
    int port = free_port();
    ASSERT_GT(port, 0);
    auto server = std::make_unique<Background>(
        std::vector<std::string>{"debuginfod", "-p", std::to_string(port), "-d", tmp_.path("db.sqlite"), "-F",
                                 tmp_.path("served"), "-t", "0", "-g", "0"},
        RunOptions{std::chrono::seconds(240), {}, {}, {}, {}});
    // Ready when it serves the file (the first scan is asynchronous): a
    // bounded poll of the URL the client will ask for.
    int status = 0;
    for (int attempt = 0; attempt < 600 && status != 200; ++attempt) {
        status = http_status(port, "/buildid/" + id + "/debuginfo");
        if (status != 200) ::poll(nullptr, 0, 50);
    }
    ASSERT_EQ(status, 200) << "debuginfod did not serve " << id;

    auto plain = run({f.by_build_id, "2"});
    std::map<std::string, std::string> env = {{"UPROBE_DEBUG_ROOT", f.empty_root},
                                              {"DEBUGINFOD_URLS", "http://127.0.0.1:" + std::to_string(port)},
                                              {"DEBUGINFOD_CACHE_PATH", tmp_.path("cache")}};
    auto traced = [&] {
        auto r = run(trace({"--format", "json", "handle count label req->name", "--", f.by_build_id, "2"}),
                     RunOptions{std::chrono::seconds(120), env, {}, {}, {}});
        std::vector<std::string> out;
        std::string program_out;
        for (const auto& l : lines_of(r.out)) {
            if (!l.empty() && l[0] == '{') out.push_back(Json::parse(l)["args"].dump());
            else program_out += l + "\n";
        }
        EXPECT_EQ(r.status, 0) << r.describe();
        EXPECT_EQ(program_out, plain.out);
        return out;
    };
    std::vector<std::string> want = {R"({"count":1,"label":"one","req_name":"first"})",
                                     R"({"count":2,"label":"one","req_name":"first"})"};
    EXPECT_EQ(traced(), want);
    EXPECT_TRUE(fs::exists(tmp_.path("cache/" + id + "/debuginfo"))) << "not cached";
    server.reset();  // stops the server: the second run has only the cache
    EXPECT_EQ(http_status(port, "/metrics"), 0);
    EXPECT_EQ(traced(), want);
}

INSTANTIATE_TEST_SUITE_P(Engines, CliDwarf, ::testing::Values("ptrace", "inline"));

}  // namespace
}  // namespace uprobe::test
