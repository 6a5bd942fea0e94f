// `uprobe list` against independent tools: readelf's symbol tables and
// notes are the oracle for functions and SDT markers, on our own targets
// and on real system binaries.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "process.hpp"

namespace uprobe::test {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::vector<Json> list_json(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {uprobe_path(), "list", "--format", "json"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(argv);
    EXPECT_EQ(r.status, 0) << r.describe();
    std::vector<Json> out;
    for (const auto& line : lines_of(r.out)) out.push_back(Json::parse(line));
    return out;
}

// (name, address) of every defined function symbol readelf shows.
std::set<std::pair<std::string, uint64_t>> readelf_functions(const std::string& path) {
    auto r = run({"readelf", "-sW", path});
    EXPECT_EQ(r.status, 0) << r.describe();
    std::set<std::pair<std::string, uint64_t>> out;
    //    Num:    Value          Size Type    Bind   Vis      Ndx Name
    std::regex row(R"(^\s*\d+:\s+([0-9a-f]+)\s+(\S+)\s+(FUNC|IFUNC)\s+\S+\s+\S+\s+(\S+)\s+(\S+))");
    for (const auto& line : lines_of(r.out)) {
        std::smatch m;
        if (!std::regex_search(line, m, row) || m[4] == "UND") continue;
        std::string name = m[5];
        name = name.substr(0, name.find('@'));  // symbol versions are not part of the name
        out.insert({name, std::stoull(m[1], nullptr, 16)});
    }
    return out;
}

std::set<std::pair<std::string, uint64_t>> our_functions(const std::string& path) {
    std::set<std::pair<std::string, uint64_t>> out;
    for (const auto& j : list_json({"-x", path})) {
        out.insert({j.value("mangled", j["name"].get<std::string>()), j["addr"].get<uint64_t>()});
    }
    return out;
}

struct Note {
    std::string provider, name, args;
    uint64_t location = 0, base = 0, semaphore = 0;
};

// The stapsdt notes as readelf -n prints them.
std::vector<Note> readelf_markers(const std::string& path) {
    auto r = run({"readelf", "-nW", path});
    EXPECT_EQ(r.status, 0) << r.describe();
    std::vector<Note> out;
    for (const auto& line : lines_of(r.out)) {
        std::smatch m;
        if (std::regex_search(line, m, std::regex(R"(Provider: (\S+))"))) {
            out.push_back({m[1], "", "", 0, 0, 0});
        } else if (out.empty()) {
            continue;
        } else if (std::regex_search(line, m, std::regex(R"(^\s+Name: (\S+))"))) {
            out.back().name = m[1];
        } else if (std::regex_search(line, m,
                                     std::regex(R"(Location: 0x([0-9a-f]+), Base: 0x([0-9a-f]+), Semaphore: 0x([0-9a-f]+))"))) {
            out.back().location = std::stoull(m[1], nullptr, 16);
            out.back().base = std::stoull(m[2], nullptr, 16);
            out.back().semaphore = std::stoull(m[3], nullptr, 16);
        } else if (std::regex_search(line, m, std::regex(R"(^\s+Arguments: (.*)$)"))) {
            out.back().args = m[1];
        }
    }
    return out;
}

// Address of .stapsdt.base, to apply the prelink adjustment to readelf's
// raw note values (zero adjustment on unprelinked files).
uint64_t stapsdt_base(const std::string& path) {
    auto r = run({"readelf", "-SW", path});
    std::smatch m;
    for (const auto& line : lines_of(r.out)) {
        if (std::regex_search(line, m, std::regex(R"(\.stapsdt\.base\s+\S+\s+([0-9a-f]+))")))
            return std::stoull(m[1], nullptr, 16);
    }
    return 0;
}

void expect_markers_match_readelf(const std::string& path) {
    auto notes = readelf_markers(path);
    ASSERT_FALSE(notes.empty()) << path << " has no stapsdt notes per readelf";
    uint64_t base = stapsdt_base(path);
    auto ours = list_json({"-x", path, "--sdt"});
    ASSERT_EQ(ours.size(), notes.size());
    for (size_t i = 0; i < notes.size(); ++i) {
        const auto& n = notes[i];
        const auto& j = ours[i];
        uint64_t adjust = base ? base - n.base : 0;
        EXPECT_EQ(j["provider"], n.provider);
        EXPECT_EQ(j["name"], n.name);
        EXPECT_EQ(j["addr"].get<uint64_t>(), n.location + adjust) << n.name;
        EXPECT_EQ(j["semaphore"].get<uint64_t>(), n.semaphore ? n.semaphore + adjust : 0) << n.name;
        EXPECT_EQ(j["args_text"], n.args) << n.name;
    }
}

std::string libc_path() {
    for (const char* p : {"/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"})
        if (fs::exists(p)) return p;
    return "";
}

TEST(CliList, FunctionsOfOurTargetsMatchReadelf) {
    for (const char* t : {"cli_funcs", "cli_funcs_nopie"}) {
        auto path = target_path(t);
        auto expected = readelf_functions(path);
        EXPECT_EQ(our_functions(path), expected) << t;
    }
}

TEST(CliList, StaticAliasAndWeakFunctionsAreListed) {
    auto path = target_path("cli_funcs");
    auto r = run({uprobe_path(), "list", "-x", path, "add*"});
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_NE(r.out.find(" add\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" add_alias\n"), std::string::npos) << r.out;
    auto statics = list_json({"-x", path, "scale"});
    ASSERT_EQ(statics.size(), 1u);
    EXPECT_TRUE(statics[0]["local"].get<bool>());
}

TEST(CliList, LibcFunctionsMatchReadelfOfLibcAndItsDebugFile) {
    auto libc = libc_path();
    if (libc.empty()) GTEST_SKIP() << "no libc.so.6 at the usual paths";
    auto ours = our_functions(libc);
    for (const auto& f : readelf_functions(libc)) EXPECT_TRUE(ours.count(f)) << f.first;
    // libc6-dbg: static functions only the debug file names, by build-id.
    auto notes = run({"readelf", "-nW", libc});
    std::smatch m;
    ASSERT_TRUE(std::regex_search(notes.out, m, std::regex(R"(Build ID: ([0-9a-f]{2})([0-9a-f]+))")));
    std::string debug = "/usr/lib/debug/.build-id/" + std::string(m[1]) + "/" + std::string(m[2]) + ".debug";
    if (!fs::exists(debug)) GTEST_SKIP() << "libc6-dbg is not installed (" << debug << ")";
    auto from_debug = readelf_functions(debug);
    uint64_t int_malloc = 0;
    for (const auto& [name, addr] : from_debug) {
        if (name == "_int_malloc") int_malloc = addr;
        EXPECT_TRUE(ours.count({name, addr})) << name;
    }
    ASSERT_NE(int_malloc, 0u) << "the debug file has no _int_malloc";
    auto found = list_json({"-x", libc, "_int_malloc"});
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0]["addr"].get<uint64_t>(), int_malloc);
    EXPECT_TRUE(found[0]["debug_file_only"].get<bool>());
}

TEST(CliList, MarkersOfOurTargetMatchReadelf) {
    expect_markers_match_readelf(target_path("cli_funcs"));
    expect_markers_match_readelf(target_path("cli_funcs_nopie"));
    // One marker has a semaphore, the other has none (known by construction).
    auto ours = list_json({"-x", target_path("cli_funcs"), "--sdt"});
    std::map<std::string, uint64_t> sem;
    for (const auto& j : ours) sem[j["name"]] = j["semaphore"];
    EXPECT_NE(sem.at("tick"), 0u);
    EXPECT_EQ(sem.at("step"), 0u);
}

TEST(CliList, MarkersOfPython) {
    const std::string python = "/usr/bin/python3.11";
    if (!fs::exists(python)) GTEST_SKIP() << python << " is not installed";
    expect_markers_match_readelf(python);
    std::set<std::string> names;
    for (const auto& j : list_json({"-x", python, "--sdt"})) names.insert(j["name"]);
    EXPECT_TRUE(names.count("function__entry") && names.count("function__return"));
}

TEST(CliList, MarkersOfLibstdcxx) {
    const std::string lib = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";
    if (!fs::exists(lib)) GTEST_SKIP() << lib << " is not installed";
    expect_markers_match_readelf(fs::canonical(lib));
    std::set<std::string> names;
    for (const auto& j : list_json({"-x", lib, "--sdt"})) names.insert(j["name"]);
    for (const char* n : {"throw", "rethrow", "catch"}) EXPECT_TRUE(names.count(n)) << n;
}

TEST(CliList, MarkersOfPostgresAndJvmWhenPresent) {
    int checked = 0;
    for (const auto& dir : {"/usr/lib/postgresql", "/usr/lib/jvm"}) {
        if (!fs::exists(dir)) continue;
        for (const auto& e : fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied)) {
            auto name = e.path().filename().string();
            if (e.is_regular_file() && (name == "postgres" || name == "libjvm.so")) {
                expect_markers_match_readelf(e.path());
                ++checked;
            }
        }
    }
    if (!checked) GTEST_SKIP() << "neither postgres nor libjvm.so is installed";
}

TEST(CliList, ProcessListsEveryLoadedObject) {
    Background waiter({target_path("cli_waiter")});
    ASSERT_TRUE(waiter.wait_for_line("ready"));
    auto found = list_json({"-p", std::to_string(waiter.pid()), "malloc"});
    std::set<std::string> objects;
    for (const auto& j : found) objects.insert(fs::path(j["object"].get<std::string>()).filename());
    EXPECT_TRUE(objects.count("libc.so.6")) << "malloc not found in the waiter's libc";
    auto tick = list_json({"-p", std::to_string(waiter.pid()), "tick"});
    ASSERT_EQ(tick.size(), 1u);
    EXPECT_EQ(fs::canonical(tick[0]["object"].get<std::string>()), fs::canonical(target_path("cli_waiter")));
}

// Every bad input: exactly one line on stderr, a non-zero exit, no crash.
void expect_one_line_error(const std::vector<std::string>& args, const std::string& needle) {
    std::vector<std::string> argv = {uprobe_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(argv, {.timeout = std::chrono::seconds(30)});
    EXPECT_NE(r.status, 0) << r.describe();
    EXPECT_LT(r.status, 128) << "crashed: " << r.describe();
    EXPECT_EQ(lines_of(r.err).size(), 1u) << r.describe();
    EXPECT_NE(r.err.find(needle), std::string::npos) << "want '" << needle << "' in: " << r.err;
    EXPECT_EQ(r.err.rfind("uprobe: ", 0), 0u) << r.err;
}

class Scratch {
public:
    Scratch() {
        char tmpl[] = "/tmp/uprobe-test-XXXXXX";
        dir_ = mkdtemp(tmpl);
    }
    ~Scratch() { fs::remove_all(dir_); }
    std::string file(const std::string& name, const std::string& bytes) const {
        auto p = dir_ + "/" + name;
        std::ofstream(p, std::ios::binary) << bytes;
        return p;
    }
    const std::string& dir() const { return dir_; }

private:
    std::string dir_;
};

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

// --sites: how the inline engine patches each site, by construction from
// engine_insns.S (ret_fn is a lone 1-byte ret, trap_fn a 2-byte ud2: too
// short for a 5-byte jump; the others are longer, with no branch back into
// their first bytes), and the same choice the engine makes in a process.
TEST(CliList, SitesSayJumpOrInt3AndWhy) {
    const std::string bin = target_path("engine_insns");
    auto r = run({uprobe_path(), "list", "-x", bin, "--sites", "*_fn", "--format", "json"});
    ASSERT_EQ(r.status, 0) << r.describe();
    std::map<std::string, std::string> method;
    for (const auto& line : lines_of(r.out)) {
        auto j = nlohmann::json::parse(line);
        method[j["function"].get<std::string>()] = j["method"].get<std::string>();
        if (j["method"] == "int3") {
            EXPECT_NE(j["reason"].get<std::string>().find("a jump needs 5"), std::string::npos) << line;
        }
    }
    std::map<std::string, std::string> want = {{"jcc_fn", "jump"},       {"loop_fn", "jump"}, {"ret_fn", "int3"},
                                               {"rep_movsb_fn", "jump"}, {"cpuid_fn", "jump"}, {"trap_fn", "int3"}};
    EXPECT_EQ(method, want);
    // The engine agrees (trap_fn is skipped there: ud2 cannot run out of line).
    auto traced = run({uprobe_path(), "trace", "-v", "--engine", "inline", "*_fn", "--", bin});
    ASSERT_EQ(traced.status, 0) << traced.describe();
    EXPECT_NE(traced.err.find("ret_fn): int3 site"), std::string::npos) << traced.err;
    EXPECT_NE(traced.err.find("(4 jump, 1 int3)"), std::string::npos) << traced.err;
}

// A switch's indirect jump goes through a jump table whose entries, read
// from the file, do not land in the patched bytes: a jump goes there too
// (ret_switch.c: a PIE's relative tables, a non-PIE's absolute ones).
TEST(CliList, SwitchesThroughJumpTablesGetJumpSites) {
    for (const char* name : {"ret_switch", "ret_switch_nopie"}) {
        const std::string bin = target_path(name);
        auto r = run({uprobe_path(), "list", "-x", bin, "--sites", "pick*", "--format", "json"});
        ASSERT_EQ(r.status, 0) << r.describe();
        std::set<std::string> jumps;
        for (const auto& line : lines_of(r.out)) {
            auto j = nlohmann::json::parse(line);
            if (j["method"] == "jump" && j["function"].get<std::string>().find(".cold") == std::string::npos)
                jumps.insert(j["function"].get<std::string>());
        }
        EXPECT_EQ(jumps, (std::set<std::string>{"pick", "pick32", "pick8"})) << name << "\n" << r.out;
        auto traced = run({uprobe_path(), "trace", "-v", "--engine", "inline", "--count", "--format", "json", "pick",
                           "pick32", "pick8", "--", bin, "12"});
        ASSERT_EQ(traced.status, 0) << traced.describe();
        EXPECT_EQ(traced.err.find("int3 site"), std::string::npos) << traced.err;
        std::map<std::string, uint64_t> hits;
        std::string program_output;
        for (const auto& line : lines_of(traced.out)) {
            if (line.rfind("{", 0) != 0) {
                program_output += line + "\n";
                continue;
            }
            auto j = nlohmann::json::parse(line);
            hits[j["probe"].get<std::string>()] = j["hits"].get<uint64_t>();
        }
        EXPECT_EQ(program_output, run({bin, "12"}).out);
        EXPECT_EQ(hits, (std::map<std::string, uint64_t>{{"pick", 12}, {"pick32", 12}, {"pick8", 12}})) << traced.out;
    }
}

TEST(CliList, BadInputIsOneClearLine) {
    Scratch s;
    std::string elf = read_all(target_path("cli_funcs"));
    std::string aarch64 = elf.substr(0, 64);
    aarch64[18] = char(183);  // e_machine = EM_AARCH64
    aarch64[19] = 0;
    expect_one_line_error({"list", "-x", s.dir() + "/missing"}, "no such file");
    expect_one_line_error({"list", "-x", s.dir()}, "is a directory");
    expect_one_line_error({"list", "-x", s.file("text", "hello, world\n")}, "not an ELF file");
    expect_one_line_error({"list", "-x", s.file("truncated", elf.substr(0, 100))}, "truncated");
    expect_one_line_error({"list", "-x", s.file("arm", aarch64)}, "another architecture");
    expect_one_line_error({"list", "-x", target_path("cli_funcs"), "no_such_function"}, "no function");
    expect_one_line_error({"list", "-p", "999999999"}, "999999999");
    expect_one_line_error({"list"}, "exactly one of");
    expect_one_line_error({"list", "-x", target_path("cli_funcs"), "--vars", "add+1"}, "instruction boundary");
    expect_one_line_error({"list", "-x", target_path("cli_funcs"), "--sites", "add+1"}, "instruction boundary");
}

TEST(CliList, CorruptElfNeverCrashes) {
    // Flip bytes all over a real ELF: every run ends in a listing or one
    // error line, never a signal. The byte positions are deterministic.
    Scratch s;
    std::string elf = read_all(target_path("cli_funcs"));
    for (size_t step = 0; step < 40; ++step) {
        std::string copy = elf;
        for (size_t k = 0; k < 16; ++k) copy[(step * 7919 + k * 104729) % copy.size()] ^= char(0x5a + step + k);
        auto path = s.file("corrupt" + std::to_string(step), copy);
        for (const char* what : {"", "--sdt"}) {
            std::vector<std::string> argv = {uprobe_path(), "list", "-x", path};
            if (*what) argv.push_back(what);
            auto r = run(argv, {.timeout = std::chrono::seconds(30)});
            EXPECT_LT(r.status, 128) << "step " << step << ": " << r.describe();
            EXPECT_FALSE(r.timed_out);
            if (r.status != 0) {
                EXPECT_EQ(lines_of(r.err).size(), 1u) << r.describe();
            }
        }
    }
}

}  // namespace
}  // namespace uprobe::test
