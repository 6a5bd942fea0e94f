// DebugInfo against facts from independent tools: gdb, objdump, addr2line,
// nm, and the test programs' source text (marker comments give line numbers).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <unistd.h>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>

#include "dwarf/debug_info.hpp"

namespace uprobe::dwarf {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kSrc = DWARF_DATA_SRC;
const std::string kOut = DWARF_DATA_OUT;

std::string bin(const std::string& opt, int version, const std::string& suffix = "") {
    return kOut + "/prog_" + opt + "_dw" + std::to_string(version) + suffix;
}

std::string run(const std::string& cmd) {
    std::string out;
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
    return out;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

uint32_t marker(const std::string& name, const std::string& file = "prog.c") {
    std::istringstream in(read_file(kSrc + "/" + file));
    std::string text;
    for (uint32_t line = 1; std::getline(in, text); ++line)
        if (text.find("MARK:" + name + " ") != std::string::npos ||
            (text.size() >= name.size() + 5 && text.find("MARK:" + name) + name.size() + 5 == text.size()))
            return line;
    ADD_FAILURE() << "no marker " << name;
    return 0;
}

std::unique_ptr<DebugInfo> open_ok(const std::string& path) {
    auto r = DebugInfo::open(path);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    if (!r.ok()) return nullptr;
    return std::move(r).value();
}

// "Line 28 of "prog.c" starts at address 0x1188 <add+15> and ends at ...", or
// at -O2, where a line's rows can all share one address, "Line 28 of
// "prog.c" is at address 0x11f0 <add> but contains no code." (gdb still
// breaks there).
uint64_t gdb_line_address(const std::string& path, const std::string& where) {
    std::string out = run("gdb -batch -nx -ex 'info line " + where + "' " + path);
    std::smatch m;
    if (!std::regex_search(out, m, std::regex("(?:starts at|is at) address (0x[0-9a-f]+)"))) {
        ADD_FAILURE() << "gdb said: " << out;
        return 0;
    }
    return std::stoull(m[1], nullptr, 16);
}

// "Breakpoint 1 at 0x11a7: file prog.c, line 34."
uint64_t gdb_break_address(const std::string& path, const std::string& function) {
    std::string out = run("gdb -batch -nx -ex 'break " + function + "' " + path);
    std::smatch m;
    if (!std::regex_search(out, m, std::regex("Breakpoint 1 at (0x[0-9a-f]+)"))) {
        ADD_FAILURE() << "gdb said: " << out;
        return 0;
    }
    return std::stoull(m[1], nullptr, 16);
}

uint64_t nm_address(const std::string& path, const std::string& symbol) {
    std::istringstream in(run("nm " + path));
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream words(line);
        std::string addr, kind, name;
        if (words >> addr >> kind >> name && name == symbol) return std::stoull(addr, nullptr, 16);
    }
    ADD_FAILURE() << "nm has no " << symbol;
    return 0;
}

const DebugInfo::Variable* find_var(const std::vector<DebugInfo::Variable>& vars, const std::string& name) {
    for (auto& v : vars)
        if (v.name == name) return &v;
    return nullptr;
}

// --- opening -----------------------------------------------------------------

TEST(DwarfOpen, MissingFile) {
    auto r = DebugInfo::open(kOut + "/does-not-exist");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.error().message(), HasSubstr("does-not-exist"));
}

TEST(DwarfOpen, NotElf) {
    auto r = DebugInfo::open(kSrc + "/prog.c");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.error().message(), HasSubstr("not an ELF file"));
}

TEST(DwarfOpen, StrippedBinaryHasNoDwarf) {
    auto r = DebugInfo::open(bin("O0", 5, ".stripped"));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message(), "no DWARF in " + bin("O0", 5, ".stripped"));
}

// --- source lines ----------------------------------------------------------

class DwarfEachBuild : public ::testing::TestWithParam<std::string> {};

TEST_P(DwarfEachBuild, StraightLineHasOneSiteAtGdbsAddress) {
    auto info = open_ok(GetParam());
    ASSERT_TRUE(info);
    uint32_t line = marker("add_body");
    auto sites = info->line_sites("prog.c", line);
    ASSERT_TRUE(sites.ok()) << sites.error().message();
    ASSERT_EQ(sites->size(), 1u);
    // gdb reads the same DWARF, from the full binary.
    std::string full = GetParam();
    if (full.size() > 6 && full.substr(full.size() - 6) == ".debug") full.resize(full.size() - 6);
    EXPECT_EQ((*sites)[0].vaddr, gdb_line_address(full, "prog.c:" + std::to_string(line)));
    EXPECT_EQ((*sites)[0].line, line);
    EXPECT_THAT((*sites)[0].file, ::testing::EndsWith("/prog.c"));
    EXPECT_EQ((*sites)[0].function, "add");
    EXPECT_FALSE((*sites)[0].inlined);
}

TEST_P(DwarfEachBuild, PathSuffixMatchesAndWrongDirectoryDoesNot) {
    auto info = open_ok(GetParam());
    ASSERT_TRUE(info);
    uint32_t line = marker("add_body");
    EXPECT_TRUE(info->line_sites("dwarf_data/prog.c", line).ok());
    EXPECT_TRUE(info->line_sites(kSrc + "/prog.c", line).ok());
    EXPECT_FALSE(info->line_sites("other/prog.c", line).ok());
    EXPECT_FALSE(info->line_sites("og.c", line).ok());
}

TEST_P(DwarfEachBuild, MisspelledFileSuggestsTheRealOne) {
    auto info = open_ok(GetParam());
    ASSERT_TRUE(info);
    auto r = info->line_sites("porg.c", 10);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message(), "no source file 'porg.c'; did you mean prog.c?");
}

TEST_P(DwarfEachBuild, LineWithoutCodeNamesNeighbours) {
    auto info = open_ok(GetParam());
    ASSERT_TRUE(info);
    // Line 1 is a comment; the first line with code is further down, and no
    // line with code is above it.
    auto r = info->line_sites("prog.c", 1);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.error().message(), StartsWith("no code at prog.c:1; nearest lines with code: "));
    std::smatch m;
    std::string msg = r.error().message();
    ASSERT_TRUE(std::regex_search(msg, m, std::regex("code: (\\d+)$")));
    // That neighbour must itself have code, per gdb.
    std::string full = GetParam();
    if (full.size() > 6 && full.substr(full.size() - 6) == ".debug") full.resize(full.size() - 6);
    EXPECT_NE(gdb_line_address(full, "prog.c:" + std::string(m[1])), 0u);
}

TEST_P(DwarfEachBuild, SourceOfMatchesAddr2line) {
    auto info = open_ok(GetParam());
    ASSERT_TRUE(info);
    std::string full = GetParam();
    if (full.size() > 6 && full.substr(full.size() - 6) == ".debug") full.resize(full.size() - 6);
    for (const char* fn : {"add", "process", "main"}) {
        uint64_t addr = nm_address(full, fn) + 4;
        char hex[32];
        std::snprintf(hex, sizeof hex, "0x%llx", (unsigned long long)addr);
        std::string out = run("addr2line -e " + full + " " + hex);
        std::smatch m;
        ASSERT_TRUE(std::regex_search(out, m, std::regex("([^\\s]+):(\\d+)")));
        auto where = info->source_of(addr);
        ASSERT_TRUE(where.has_value()) << fn;
        EXPECT_EQ(where->first, std::string(m[1]));
        EXPECT_EQ(where->second, std::stoul(m[2])) << fn;
    }
    auto files = info->source_files();
    EXPECT_THAT(files, ::testing::Contains(::testing::EndsWith("/prog.c")));
}

TEST_P(DwarfEachBuild, FunctionEntryIsTheSymbolAddress) {
    auto info = open_ok(GetParam());
    ASSERT_TRUE(info);
    std::string full = GetParam();
    if (full.size() > 6 && full.substr(full.size() - 6) == ".debug") full.resize(full.size() - 6);
    for (const char* fn : {"add", "process", "main"}) {
        auto inst = info->function_instances(fn);
        std::vector<DebugInfo::FunctionInstance> outline;
        for (auto& i : inst)
            if (!i.inlined) outline.push_back(i);
        ASSERT_EQ(outline.size(), 1u) << fn;
        EXPECT_EQ(outline[0].entry, nm_address(full, fn)) << fn;
        EXPECT_THAT(outline[0].file, ::testing::EndsWith("prog.c"));
        EXPECT_FALSE(outline[0].ranges.empty());
    }
    EXPECT_TRUE(info->function_instances("no_such_function").empty());
    EXPECT_GE(info->function_instances("*").size(), 3u);
}

TEST_P(DwarfEachBuild, FunctionLinesIncludeTheBody) {
    auto info = open_ok(GetParam());
    ASSERT_TRUE(info);
    auto fl = info->function_lines("add");
    ASSERT_TRUE(fl.ok()) << fl.error().message();
    EXPECT_EQ(fl->decl_line, marker("add_decl"));
    EXPECT_THAT(fl->file, ::testing::EndsWith("/prog.c"));
    auto sites = info->line_sites("prog.c", marker("add_body"));
    ASSERT_TRUE(sites.ok());
    bool found = false;
    for (auto& l : fl->lines) {
        EXPECT_GE(l.line, fl->decl_line);
        if (l.line == marker("add_body")) {
            EXPECT_EQ(l.vaddr, (*sites)[0].vaddr);
            found = true;
        }
    }
    EXPECT_TRUE(found);
    auto bad = info->function_lines("ad");
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(bad.error().message(), HasSubstr("did you mean add"));
}

INSTANTIATE_TEST_SUITE_P(Builds, DwarfEachBuild,
                         ::testing::Values(bin("O0", 4), bin("O0", 5), bin("O2", 4), bin("O2", 5),
                                           bin("O0", 5, ".debug"), bin("O2", 4, ".debug")));

// --- -O0 specifics -----------------------------------------------------------

TEST(DwarfO0, LoopHeaderHasSeveralBlocksIncludingGdbs) {
    for (int version : {4, 5}) {
        auto info = open_ok(bin("O0", version));
        ASSERT_TRUE(info);
        uint32_t line = marker("loop");
        auto sites = info->line_sites("prog.c", line);
        ASSERT_TRUE(sites.ok());
        // A for header compiles to its init part and its increment/condition
        // part, in separate places.
        EXPECT_GE(sites->size(), 2u);
        uint64_t gdb = gdb_line_address(bin("O0", version), "prog.c:" + std::to_string(line));
        std::set<uint64_t> addrs;
        for (auto& s : *sites) addrs.insert(s.vaddr);
        EXPECT_TRUE(addrs.count(gdb));
        EXPECT_EQ(addrs.size(), sites->size());
    }
}

TEST(DwarfO0, PostPrologueIsGdbsBreakpoint) {
    for (int version : {4, 5}) {
        auto info = open_ok(bin("O0", version));
        ASSERT_TRUE(info);
        for (const char* fn : {"add", "process", "main"}) {
            auto post = info->post_prologue(nm_address(bin("O0", version), fn));
            ASSERT_TRUE(post.has_value());
            EXPECT_EQ(*post, gdb_break_address(bin("O0", version), fn)) << fn;
        }
        EXPECT_FALSE(info->post_prologue(nm_address(bin("O0", version), "add") + 1).has_value());
    }
}

// gdb: "Symbol r is a complex DWARF expression: 0: DW_OP_fbreg -40 , length 8."
std::map<std::string, std::string> gdb_fbreg_locations(const std::string& path, const std::string& fn) {
    std::string out = run("gdb -batch -nx -ex 'info scope " + fn + "' " + path);
    std::map<std::string, std::string> result;
    std::regex re("Symbol (\\w+) is a complex DWARF expression:\\s+0: (DW_OP_fbreg -?\\d+)");
    for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator(); ++it)
        result[(*it)[1]] = (*it)[2];
    return result;
}

TEST(DwarfO0, VariablesMatchGdbInfoScope) {
    for (std::string path : {bin("O0", 4), bin("O0", 5), bin("O0", 5, ".debug")}) {
        auto info = open_ok(path);
        ASSERT_TRUE(info);
        std::string full = path.substr(0, path.find(".debug"));
        uint64_t at = *info->post_prologue(nm_address(full, "process"));
        auto vars = info->variables_at(at);
        ASSERT_TRUE(vars.ok()) << vars.error().message();
        auto expected = gdb_fbreg_locations(full, "process");
        ASSERT_EQ(expected.size(), 5u);
        ASSERT_EQ(vars->size(), expected.size());
        for (auto& [name, loc] : expected) {
            auto* v = find_var(*vars, name);
            ASSERT_TRUE(v) << name;
            EXPECT_EQ(DebugInfo::describe(v->location), loc) << name;
            EXPECT_FALSE(v->optimized_out);
            EXPECT_EQ(v->scope, "process");
            EXPECT_EQ(DebugInfo::describe(v->frame_base), "DW_OP_call_frame_cfa");
        }
        EXPECT_TRUE(find_var(*vars, "r")->is_parameter);
        EXPECT_TRUE(find_var(*vars, "unused_param")->is_parameter);
        EXPECT_FALSE(find_var(*vars, "total")->is_parameter);
        EXPECT_EQ(find_var(*vars, "r")->type_name, "struct req *");
        EXPECT_EQ(find_var(*vars, "total")->type_name, "counter_t");
        EXPECT_EQ(find_var(*vars, "i")->type_name, "int");
        EXPECT_EQ(find_var(*vars, "unused_const")->type_name, "int");  // const peeled
    }
}

TEST(DwarfO0, StructLayoutMatchesGdbPtype) {
    auto info = open_ok(bin("O0", 5));
    ASSERT_TRUE(info);
    auto vars = info->variables_at(*info->post_prologue(nm_address(bin("O0", 5), "process")));
    ASSERT_TRUE(vars.ok());
    const Type* ptr = find_var(*vars, "r")->type;
    ASSERT_TRUE(ptr);
    ASSERT_EQ(ptr->kind, Type::Kind::Pointer);
    EXPECT_EQ(ptr->byte_size, 8u);
    const Type* req = ptr->target;
    ASSERT_TRUE(req);
    EXPECT_EQ(req->kind, Type::Kind::Struct);
    EXPECT_EQ(req->name, "struct req");

    // "/*      8      |      16 */    char name[16];"
    std::string out = run("gdb -batch -nx -ex 'ptype /o struct req' " + bin("O0", 5));
    std::regex re("/\\*\\s+(\\d+)\\s+\\|\\s+(\\d+) \\*/\\s+(.*?)\\s*(\\w+)(\\[\\d+\\])?;");
    std::map<std::string, std::pair<uint64_t, uint64_t>> layout;
    for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator(); ++it)
        layout[(*it)[4]] = {std::stoull((*it)[1]), std::stoull((*it)[2])};
    ASSERT_EQ(layout.size(), 5u) << out;
    ASSERT_EQ(req->members.size(), 5u);
    for (auto& m : req->members) {
        ASSERT_TRUE(layout.count(m.name)) << m.name;
        EXPECT_EQ(m.offset, layout[m.name].first) << m.name;
        ASSERT_TRUE(m.type);
        EXPECT_EQ(m.type->byte_size, layout[m.name].second) << m.name;
    }
    std::smatch total;
    ASSERT_TRUE(std::regex_search(out, total, std::regex("total size \\(bytes\\):\\s+(\\d+)")));
    EXPECT_EQ(req->byte_size, std::stoull(total[1]));

    auto member = [&](const std::string& name) -> const Type::Member& {
        for (auto& m : req->members)
            if (m.name == name) return m;
        throw std::runtime_error("no member " + name);
    };
    // Facts of the C source: char name[16]; struct req *next; enum color.
    EXPECT_EQ(member("name").type->kind, Type::Kind::Array);
    EXPECT_EQ(member("name").type->count, 16u);
    EXPECT_EQ(member("name").type->display(), "char[16]");
    EXPECT_EQ(member("next").type->target, req);  // self-reference
    EXPECT_EQ(member("next").type->display(), "struct req *");
    EXPECT_EQ(member("id").type->encoding, Type::Encoding::Signed);
    EXPECT_EQ(member("len").type->encoding, Type::Encoding::Unsigned);
    const Type* color = member("color").type;
    EXPECT_EQ(color->kind, Type::Kind::Enum);
    EXPECT_EQ(color->display(), "enum color");
    std::vector<std::pair<int64_t, std::string>> enumerators = {{0, "RED"}, {5, "GREEN"}, {6, "BLUE"}};
    EXPECT_EQ(color->enumerators, enumerators);
}

TEST(DwarfO0, NoFunctionAtAddressZero) {
    auto info = open_ok(bin("O0", 5));
    ASSERT_TRUE(info);
    auto r = info->variables_at(0);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.error().message(), StartsWith("no function at 0x0"));
}

// --- -O2 specifics -----------------------------------------------------------

// DW_AT_entry_pc values of the DW_TAG_inlined_subroutine DIEs, per objdump.
std::vector<uint64_t> objdump_inlined_entries(const std::string& path) {
    std::istringstream in(run("objdump --dwarf=info " + path));
    std::string line;
    std::vector<uint64_t> out;
    bool inside = false;
    while (std::getline(in, line)) {
        if (line.find("Abbrev Number") != std::string::npos)
            inside = line.find("DW_TAG_inlined_subroutine") != std::string::npos;
        std::smatch m;
        if (inside && std::regex_search(line, m, std::regex("DW_AT_entry_pc\\s*:\\s*(0x[0-9a-f]+)")))
            out.push_back(std::stoull(m[1], nullptr, 16));
    }
    std::sort(out.begin(), out.end());
    return out;
}

TEST(DwarfO2, InlinedCopiesAreFoundWithObjdumpsEntries) {
    for (int version : {4, 5}) {
        auto info = open_ok(bin("O2", version));
        ASSERT_TRUE(info);
        auto expected = objdump_inlined_entries(bin("O2", version));
        ASSERT_EQ(expected.size(), 2u);  // square() is called twice in process()
        auto inst = info->function_instances("square");
        std::vector<uint64_t> entries;
        for (auto& i : inst) {
            EXPECT_TRUE(i.inlined);
            entries.push_back(i.entry);
        }
        EXPECT_EQ(entries, expected);
        auto glob = info->function_instances("squ*");
        EXPECT_EQ(glob.size(), inst.size());

        auto sites = info->line_sites("prog.c", marker("square_body"));
        ASSERT_TRUE(sites.ok()) << sites.error().message();
        EXPECT_GE(sites->size(), 2u);
        for (auto& s : *sites) {
            EXPECT_EQ(s.function, "square");
            EXPECT_TRUE(s.inlined);
            bool within = false;
            for (auto& i : inst)
                for (auto& [lo, hi] : i.ranges) within |= s.vaddr >= lo && s.vaddr < hi;
            EXPECT_TRUE(within);
        }
        auto fl = info->function_lines("square");
        ASSERT_TRUE(fl.ok());
        size_t body = 0;
        for (auto& l : fl->lines) body += l.line == marker("square_body");
        EXPECT_EQ(body, sites->size());
    }
}

// Per symbol, the address ranges of its location list as gdb prints them.
std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> gdb_location_ranges(
    const std::string& path, const std::string& fn) {
    std::string out = run("gdb -batch -nx -ex 'info scope " + fn + "' " + path);
    std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> result;
    std::istringstream in(out);
    std::string line, current;
    std::regex sym("^Symbol (\\w+) is multi-location"), range("Range (0x[0-9a-f]+)-(0x[0-9a-f]+)");
    while (std::getline(in, line)) {
        std::smatch m;
        if (line.rfind("Symbol ", 0) == 0) {
            current = std::regex_search(line, m, sym) ? std::string(m[1]) : "";
            continue;
        }
        if (!current.empty() && std::regex_search(line, m, range))
            result[current].emplace_back(std::stoull(m[1], nullptr, 16), std::stoull(m[2], nullptr, 16));
    }
    return result;
}

TEST(DwarfO2, OptimizedOutExactlyWhereGdbHasNoLocation) {
    auto info = open_ok(bin("O2", 5));
    ASSERT_TRUE(info);
    auto ranges = gdb_location_ranges(bin("O2", 5), "process");
    ASSERT_TRUE(ranges.count("total"));
    auto inst = info->function_instances("process");
    ASSERT_EQ(inst.size(), 1u);
    size_t checked_out = 0, checked_in = 0;
    for (auto& [name, list] : ranges) {
        for (auto& [lo, hi] : inst[0].ranges) {
            for (uint64_t a = lo; a < hi; ++a) {
                bool covered = false;
                for (auto& [rlo, rhi] : list) covered |= a >= rlo && a < rhi;
                auto vars = info->variables_at(a);
                ASSERT_TRUE(vars.ok());
                auto* v = find_var(*vars, name);
                if (!v) continue;  // a lexical block not open here
                EXPECT_EQ(v->optimized_out, !covered) << name << " at " << std::hex << a;
                (covered ? checked_in : checked_out)++;
            }
        }
    }
    EXPECT_GT(checked_out, 0u);
    EXPECT_GT(checked_in, 0u);
}

TEST(DwarfO2, ConstantLocalHasGdbsValue) {
    auto info = open_ok(bin("O2", 5));
    ASSERT_TRUE(info);
    std::string out = run("gdb -batch -nx -ex 'info scope process' " + bin("O2", 5));
    std::smatch m;
    ASSERT_TRUE(std::regex_search(out, m, std::regex("Symbol unused_const is a constant with value (\\d+)")));
    auto vars = info->variables_at(nm_address(bin("O2", 5), "process"));
    ASSERT_TRUE(vars.ok());
    auto* v = find_var(*vars, "unused_const");
    ASSERT_TRUE(v);
    EXPECT_TRUE(v->has_const_value);
    EXPECT_FALSE(v->optimized_out);
    EXPECT_EQ(v->const_value, std::stoll(m[1]));
}

TEST(DwarfO2, VariablesInsideInlinedCodeBelongToTheInlinedFunction) {
    auto info = open_ok(bin("O2", 5));
    ASSERT_TRUE(info);
    for (auto& inst : info->function_instances("square")) {
        auto vars = info->variables_at(inst.entry);
        ASSERT_TRUE(vars.ok());
        ASSERT_TRUE(find_var(*vars, "x"));
        EXPECT_TRUE(find_var(*vars, "x")->is_parameter);
        EXPECT_EQ(find_var(*vars, "x")->scope, "square");
        EXPECT_FALSE(find_var(*vars, "total"));  // the caller's
    }
}

// --- equivalences --------------------------------------------------------------

std::string summary(const DebugInfo& info) {
    std::ostringstream out;
    for (const char* m : {"square_body", "add_body", "loop", "first_square", "second_square", "main_call"}) {
        auto sites = info.line_sites("prog.c", marker(m));
        out << m << ":";
        if (!sites.ok()) out << sites.error().message();
        else
            for (auto& s : *sites) out << " " << s.vaddr << "/" << s.function << "/" << s.inlined;
        out << "\n";
    }
    for (auto& f : info.function_instances("*")) {
        out << f.name << " " << f.entry << " " << f.inlined << " " << f.decl_line;
        if (auto p = info.post_prologue(f.entry)) out << " post " << *p;
        for (uint64_t a : {f.entry, f.entry + 3, f.ranges[0].second - 1}) {
            auto vars = info.variables_at(a);
            if (!vars.ok()) continue;
            for (auto& v : *vars)
                out << " [" << v.name << " " << v.type_name << " " << DebugInfo::describe(v.location) << "]";
            if (auto src = info.source_of(a)) out << " @" << src->second;
        }
        out << "\n";
    }
    return out.str();
}

TEST(DwarfEquivalence, DebugOnlyFileAnswersLikeTheBinary) {
    for (std::string opt : {"O0", "O2"}) {
        for (int version : {4, 5}) {
            auto full = open_ok(bin(opt, version));
            auto debug = open_ok(bin(opt, version, ".debug"));
            ASSERT_TRUE(full && debug);
            EXPECT_EQ(summary(*full), summary(*debug)) << opt << version;
        }
    }
}

TEST(DwarfEquivalence, Dwarf4And5AgreeWhenTheCodeIsTheSame) {
    for (std::string opt : {"O0", "O2"}) {
        // Only meaningful when the compiler emitted identical code.
        std::string text4 = run("objdump -d --no-show-raw-insn " + bin(opt, 4) + " | tail -n +3");
        std::string text5 = run("objdump -d --no-show-raw-insn " + bin(opt, 5) + " | tail -n +3");
        if (text4 != text5) GTEST_SKIP() << "code differs between -gdwarf-4 and -gdwarf-5";
        auto d4 = open_ok(bin(opt, 4));
        auto d5 = open_ok(bin(opt, 5));
        ASSERT_TRUE(d4 && d5);
        EXPECT_EQ(summary(*d4), summary(*d5)) << opt;
    }
}

// --- C++ -----------------------------------------------------------------------

TEST(DwarfCxx, FunctionsByNameAndLinkageName) {
    std::string path = kOut + "/progxx_O0";
    auto info = open_ok(path);
    ASSERT_TRUE(info);
    auto both = info->function_instances("scale");
    ASSERT_EQ(both.size(), 2u);  // the int and double overloads
    auto by_mangled = info->function_instances("_ZN2ns5scaleEi");
    ASSERT_EQ(by_mangled.size(), 1u);
    EXPECT_EQ(by_mangled[0].entry, nm_address(path, "_ZN2ns5scaleEi"));
    EXPECT_EQ(by_mangled[0].name, "scale");
    EXPECT_EQ(by_mangled[0].decl_line, marker("scale", "prog.cpp"));
    auto sites = info->line_sites("prog.cpp", marker("scale", "prog.cpp"));
    ASSERT_TRUE(sites.ok());
    EXPECT_EQ(sites->front().vaddr, nm_address(path, "_ZN2ns5scaleEi"));
}

TEST(DwarfCxx, ReturnTypesOfOverloads) {
    // By construction (prog.cpp): ns::scale(int) returns int, ns::scale(double) double.
    std::string path = kOut + "/progxx_O0";
    auto info = open_ok(path);
    ASSERT_TRUE(info);
    const Type* as_int = info->return_type(nm_address(path, "_ZN2ns5scaleEi"));
    ASSERT_NE(as_int, nullptr);
    EXPECT_EQ(as_int->kind, Type::Kind::Base);
    EXPECT_EQ(as_int->encoding, Type::Encoding::Signed);
    EXPECT_EQ(as_int->byte_size, 4u);
    const Type* as_double = info->return_type(nm_address(path, "_ZN2ns5scaleEd"));
    ASSERT_NE(as_double, nullptr);
    EXPECT_EQ(as_double->encoding, Type::Encoding::Float);
    EXPECT_EQ(as_double->byte_size, 8u);
    EXPECT_EQ(as_double->name, "double");
    // Not the start of a function.
    EXPECT_EQ(info->return_type(nm_address(path, "_ZN2ns5scaleEd") + 1), nullptr);
}

// --- corrupt input ---------------------------------------------------------------

struct Section {
    uint64_t offset = 0, size = 0;
};

// From "objdump -h": "27 .debug_info 000003d2 0000000000000000 0000000000000000 0000305e 2**0"
Section section_of(const std::string& path, const std::string& name) {
    std::istringstream in(run("objdump -h " + path));
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream words(line);
        std::string idx, sec, size, vma, lma, off;
        if (words >> idx >> sec >> size >> vma >> lma >> off && sec == name)
            return Section{std::stoull(off, nullptr, 16), std::stoull(size, nullptr, 16)};
    }
    ADD_FAILURE() << "no section " << name;
    return {};
}

std::string temp_path(const std::string& tag) {
    return std::string(::testing::TempDir()) + "/dwarf_test_" + tag + "_" + std::to_string(getpid());
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
}

// Everything a caller might ask; must not crash, whatever the answers.
void exercise(const DebugInfo& info) {
    (void)info.line_sites("prog.c", marker("add_body"));
    (void)info.line_sites("prog.c", 1);
    (void)info.function_lines("process");
    for (auto& f : info.function_instances("*")) {
        (void)info.post_prologue(f.entry);
        (void)info.return_type(f.entry);
        if (auto vars = info.variables_at(f.entry); vars.ok())
            for (auto& v : *vars) (void)DebugInfo::describe(v.location), (void)v.type_name;
        (void)info.source_of(f.entry);
    }
    (void)info.source_files();
}

TEST(DwarfCorrupt, BadUnitLengthIsAnError) {
    std::string bytes = read_file(bin("O0", 5));
    Section s = section_of(bin("O0", 5), ".debug_info");
    ASSERT_GT(s.size, 16u);
    // unit_length 0xfffffff0 is a reserved value, and anyway past the section end.
    for (int i = 0; i < 4; ++i) bytes[s.offset + i] = char(i == 0 ? 0xf0 : 0xff);
    std::string path = temp_path("unitlen");
    write_file(path, bytes);
    auto r = DebugInfo::open(path);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.error().message(), StartsWith("corrupt DWARF in " + path));
    std::remove(path.c_str());
}

TEST(DwarfCorrupt, TruncatedLineTableIsAnError) {
    std::string bytes = read_file(bin("O0", 5));
    Section s = section_of(bin("O0", 5), ".debug_line");
    ASSERT_GT(s.size, 16u);
    // Claim the line program runs past the end of .debug_line.
    uint32_t len = uint32_t(s.size * 4);
    std::memcpy(&bytes[s.offset], &len, 4);
    std::string path = temp_path("line");
    write_file(path, bytes);
    auto info = DebugInfo::open(path);
    ASSERT_TRUE(info.ok()) << info.error().message();
    auto r = (*info)->line_sites("prog.c", marker("add_body"));
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.error().message(), StartsWith("corrupt DWARF in " + path));
    EXPECT_FALSE((*info)->source_of(nm_address(bin("O0", 5), "add")).has_value());
    std::remove(path.c_str());
}

TEST(DwarfCorrupt, RandomByteFlipsNeverCrash) {
    std::mt19937 rng(20240611);
    for (std::string src : {bin("O0", 5), bin("O2", 4)}) {
        std::string original = read_file(src);
        std::vector<Section> sections = {section_of(src, ".debug_info"), section_of(src, ".debug_line"),
                                         section_of(src, ".debug_abbrev")};
        std::string path = temp_path("flip");
        for (int round = 0; round < 150; ++round) {
            std::string bytes = original;
            const Section& s = sections[round % sections.size()];
            int flips = 1 + int(rng() % 8);
            for (int k = 0; k < flips; ++k) bytes[s.offset + rng() % s.size] ^= char(1 + rng() % 255);
            write_file(path, bytes);
            auto info = DebugInfo::open(path);
            if (info.ok()) exercise(**info);
            else EXPECT_FALSE(info.error().message().empty());
        }
        std::remove(path.c_str());
    }
}

}  // namespace
}  // namespace uprobe::dwarf
