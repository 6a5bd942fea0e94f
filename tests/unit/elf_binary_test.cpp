// Binary against independent tools: readelf's program headers, symbol
// tables and notes, on system files and on the elf_data/ programs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "elf/binary.hpp"

namespace uprobe::elf {
namespace {

using ::testing::HasSubstr;

const char* const kLibc = "/lib/x86_64-linux-gnu/libc.so.6";
const char* const kLibstdcxx = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";
const char* const kPython = "/usr/bin/python3.11";

bool exists(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

std::string run(const std::string& command) {
    std::string out;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return out;
    char buffer[65536];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
    ::pclose(pipe);
    return out;
}

std::vector<std::string> words(const std::string& line) {
    std::istringstream in(line);
    return {std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
}

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

uint64_t hex(const std::string& text) { return std::stoull(text, nullptr, 16); }

std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A scratch directory removed at the end of the test.
struct TempDir {
    std::string path;
    TempDir() {
        char templ[] = "/tmp/uprobe-elf-test-XXXXXX";
        path = ::mkdtemp(templ);
    }
    ~TempDir() { [[maybe_unused]] int rc = std::system(("rm -rf '" + path + "'").c_str()); }
    std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
        std::string file = path + "/" + name;
        std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                    static_cast<std::streamsize>(bytes.size()));
        return file;
    }
};

// Sets an environment variable for one scope.
struct ScopedEnv {
    std::string name;
    std::optional<std::string> old;
    ScopedEnv(std::string variable, const std::string& value) : name(std::move(variable)) {
        if (const char* v = std::getenv(name.c_str())) old = v;
        ::setenv(name.c_str(), value.c_str(), 1);
    }
    ~ScopedEnv() {
        if (old) ::setenv(name.c_str(), old->c_str(), 1);
        else ::unsetenv(name.c_str());
    }
};

Binary open_or_die(const std::string& path) {
    auto binary = Binary::open(path);
    if (!binary) ADD_FAILURE() << binary.error().message();
    return std::move(binary).value();
}

// ---- bad input -----------------------------------------------------------

std::string open_error(const std::string& path) {
    auto binary = Binary::open(path);
    if (binary) return "(opened)";
    EXPECT_EQ(binary.error().message().find('\n'), std::string::npos);
    return binary.error().message();
}

TEST(BinaryOpen, MissingPathAndDirectory) {
    EXPECT_EQ(open_error("/nonexistent/uprobe/file"), "/nonexistent/uprobe/file: no such file");
    EXPECT_EQ(open_error("/tmp"), "/tmp: is a directory");
}

TEST(BinaryOpen, NotElf) {
    TempDir dir;
    std::vector<uint8_t> random(4096);
    uint32_t state = 12345;
    for (auto& b : random) b = static_cast<uint8_t>((state = state * 1103515245 + 12345) >> 16);
    EXPECT_THAT(open_error(dir.write("random", random)), HasSubstr(": not an ELF file"));
    EXPECT_THAT(open_error(dir.write("empty", {})), HasSubstr(": not an ELF file"));
    std::string text = "#!/bin/sh\necho hi\n";
    EXPECT_THAT(open_error(dir.write("script", {text.begin(), text.end()})), HasSubstr(": not an ELF file"));
}

TEST(BinaryOpen, TruncatedCopiesOfARealElf) {
    TempDir dir;
    auto whole = read_file(ELF_TEST_PIE);
    ASSERT_GT(whole.size(), 8192u);
    for (size_t n : {size_t{5}, size_t{20}, size_t{63}, size_t{64}, size_t{200}, size_t{4096}, whole.size() / 2,
                     whole.size() - 1}) {
        std::vector<uint8_t> head(whole.begin(), whole.begin() + static_cast<long>(n));
        EXPECT_THAT(open_error(dir.write("truncated", head)), HasSubstr(": truncated ELF file")) << n << " bytes";
    }
}

TEST(BinaryOpen, OtherArchitectureAndKinds) {
    TempDir dir;
    auto header = read_file(ELF_TEST_PIE);
    // e_machine is the little-endian half-word at offset 18 (gABI "ELF Header").
    auto aarch64 = header;
    aarch64[18] = 183;  // EM_AARCH64
    aarch64[19] = 0;
    EXPECT_THAT(open_error(dir.write("aarch64", aarch64)),
                HasSubstr(": ELF for another architecture (ARM aarch64); uprobe supports x86-64"));
    auto relocatable = header;
    relocatable[16] = 1;  // e_type = ET_REL
    EXPECT_THAT(open_error(dir.write("object.o", relocatable)), HasSubstr(": not an executable or shared object"));
    auto core = header;
    core[16] = 4;  // ET_CORE
    EXPECT_THAT(open_error(dir.write("core", core)), HasSubstr(": not an executable or shared object"));
}

TEST(BinaryOpen, FromBytesReadsEverythingOfACorruptCopy) {
    auto bytes = read_file(ELF_TEST_PIE);
    // Scribble over the middle (section contents) and the section headers'
    // offsets: reading must not crash, whatever it returns.
    for (size_t i = bytes.size() / 3; i < bytes.size(); i += 7) bytes[i] ^= 0x5a;
    auto binary = Binary::from_bytes(bytes, "corrupt");
    if (binary) {
        (void)binary->functions();
        (void)binary->sdt_markers();
        (void)binary->build_id();
        (void)binary->debuglink();
        (void)binary->function_containing(0x1000);
    }
}

// ---- segments ------------------------------------------------------------

struct ReadelfSegment {
    uint64_t offset, vaddr, filesz, memsz;
    bool executable;
};

std::vector<ReadelfSegment> readelf_loads(const std::string& path) {
    std::vector<ReadelfSegment> out;
    for (const auto& line : lines(run("readelf -lW '" + path + "'"))) {
        auto w = words(line);
        // LOAD offset vaddr paddr filesz memsz flags... align
        if (w.size() < 8 || w[0] != "LOAD") continue;
        bool x = false;
        for (size_t i = 6; i + 1 < w.size(); ++i) x |= w[i].find('E') != std::string::npos;
        out.push_back({hex(w[1]), hex(w[2]), hex(w[4]), hex(w[5]), x});
    }
    return out;
}

void expect_segments_match_readelf(const std::string& path, bool has_shifted_segment) {
    SCOPED_TRACE(path);
    auto binary = open_or_die(path);
    auto expected = readelf_loads(path);
    const auto& segments = binary.load_segments();
    ASSERT_EQ(segments.size(), expected.size());
    bool saw_shifted = false;
    for (size_t i = 0; i < segments.size(); ++i) {
        const auto& e = expected[i];
        EXPECT_EQ(segments[i].vaddr, e.vaddr);
        EXPECT_EQ(segments[i].offset, e.offset);
        EXPECT_EQ(segments[i].filesz, e.filesz);
        EXPECT_EQ(segments[i].memsz, e.memsz);
        saw_shifted |= e.vaddr != e.offset;
        if (e.filesz == 0) continue;
        uint64_t middle = e.filesz / 2;
        EXPECT_EQ(binary.vaddr_to_offset(e.vaddr + middle), e.offset + middle);
        EXPECT_EQ(binary.offset_to_vaddr(e.offset + middle), e.vaddr + middle);
        EXPECT_EQ(binary.is_executable(e.vaddr + middle), e.executable);
        if (e.memsz > e.filesz) {
            EXPECT_EQ(binary.vaddr_to_offset(e.vaddr + e.filesz), std::nullopt);  // .bss
        }
    }
    if (has_shifted_segment) {
        EXPECT_TRUE(saw_shifted) << "expected a segment whose p_vaddr != p_offset";
    }
}

TEST(BinarySegments, MatchReadelf) {
    // A PIE's RW segment starts a page above its file offset (readelf -lW).
    expect_segments_match_readelf(ELF_TEST_PIE, true);
    expect_segments_match_readelf(ELF_TEST_NOPIE, true);
    expect_segments_match_readelf(kLibc, false);
    if (exists(kPython)) expect_segments_match_readelf(kPython, true);
}

TEST(BinarySegments, CodeBytesComeFromTheSegmentsFileOffset) {
    auto binary = open_or_die(ELF_TEST_PIE);
    auto file = read_file(ELF_TEST_PIE);
    for (const auto& e : readelf_loads(ELF_TEST_PIE)) {
        if (e.filesz < 16) continue;
        auto bytes = binary.code(e.vaddr + 8, 8);
        ASSERT_TRUE(bytes.ok());
        ASSERT_EQ(bytes->size(), 8u);
        EXPECT_TRUE(std::equal(bytes->begin(), bytes->end(), file.begin() + static_cast<long>(e.offset + 8)));
        // Clipped at the end of the segment's file contents.
        auto tail = binary.code(e.vaddr + e.filesz - 4, 100);
        ASSERT_TRUE(tail.ok());
        EXPECT_EQ(tail->size(), 4u);
    }
    EXPECT_FALSE(binary.code(0xffffffff00000000ull, 4).ok());
}

// ---- symbols -------------------------------------------------------------

using NameAddress = std::set<std::pair<std::string, uint64_t>>;

// Defined FUNC and IFUNC symbols of every table readelf shows, versions
// stripped.
NameAddress readelf_functions(const std::string& path) {
    NameAddress out;
    for (const auto& line : lines(run("readelf -sW '" + path + "' 2>/dev/null"))) {
        auto w = words(line);
        // Num: Value Size Type Bind Vis Ndx Name
        if (w.size() < 8 || (w[3] != "FUNC" && w[3] != "IFUNC") || w[6] == "UND") continue;
        std::string name = w[7];
        name = name.substr(0, name.find('@'));
        out.insert({name, hex(w[1])});
    }
    return out;
}

NameAddress ours(const Binary& binary) {
    NameAddress out;
    for (const auto& s : binary.functions()) out.insert({s.name, s.vaddr});
    return out;
}

TEST(BinaryFunctions, TestProgramMatchesReadelf) {
    auto binary = open_or_die(ELF_TEST_NOPIE);
    EXPECT_EQ(ours(binary), readelf_functions(ELF_TEST_NOPIE));
    auto local = binary.find_functions("elf_test_local_work*");
    ASSERT_FALSE(local.empty());
    EXPECT_TRUE(local[0]->local);
    EXPECT_FALSE(local[0]->from_debug_file);
    // Sorted by address, each entry once.
    const auto& all = binary.functions();
    for (size_t i = 1; i < all.size(); ++i) {
        EXPECT_LE(all[i - 1].vaddr, all[i].vaddr);
        EXPECT_FALSE(all[i - 1].vaddr == all[i].vaddr && all[i - 1].name == all[i].name);
    }
}

TEST(BinaryFunctions, LibcWithItsDebugFileMatchesReadelf) {
    auto binary = open_or_die(kLibc);
    auto debug = binary.debug_file();
    ASSERT_TRUE(debug.ok()) << debug.error().message();
    NameAddress expected = readelf_functions(kLibc);
    if (*debug) {
        // Independent check of the build-id path: readelf's Build ID note.
        std::string id;
        for (const auto& line : lines(run(std::string("readelf -n ") + kLibc)))
            if (auto at = line.find("Build ID: "); at != std::string::npos) id = line.substr(at + 10);
        EXPECT_EQ(binary.build_id(), id);
        EXPECT_EQ((*debug)->found_by, "build-id");
        EXPECT_EQ((*debug)->path, "/usr/lib/debug/.build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug");
        auto more = readelf_functions((*debug)->path);
        expected.insert(more.begin(), more.end());
    }
    EXPECT_EQ(ours(binary), expected);
}

TEST(BinaryFunctions, LibcDebugOnlyFunctionFromLibc6Dbg) {
    auto binary = open_or_die(kLibc);
    auto debug = binary.debug_file();
    if (!debug.ok() || !*debug) GTEST_SKIP() << "libc6-dbg is not installed";
    auto found = binary.find_functions("_int_malloc");
    ASSERT_EQ(found.size(), 1u);
    EXPECT_TRUE(found[0]->from_debug_file);
    EXPECT_TRUE(found[0]->local);
    EXPECT_TRUE(readelf_functions(kLibc).count({"_int_malloc", found[0]->vaddr}) == 0);
    EXPECT_EQ(readelf_functions((*debug)->path).count({"_int_malloc", found[0]->vaddr}), 1u);
    // An address inside it maps back to it.
    const auto* inside = binary.function_containing(found[0]->vaddr + found[0]->size / 2);
    ASSERT_NE(inside, nullptr);
    EXPECT_EQ(inside->name, "_int_malloc");
}

TEST(BinaryFunctions, PythonDynsymMatchesReadelf) {
    if (!exists(kPython)) GTEST_SKIP() << kPython << " is not installed";
    ScopedEnv root("UPROBE_DEBUG_ROOT", "/nonexistent");
    auto binary = open_or_die(kPython);
    EXPECT_EQ(ours(binary), readelf_functions(kPython));
}

TEST(BinaryFunctions, CxxNamesMatchDemangledWithAndWithoutParameters) {
    auto binary = open_or_die(kLibstdcxx);
    // nm -C is an independent demangler.
    std::string nm = run(std::string("nm -D --defined-only ") + kLibstdcxx + " | grep -w _ZSt9terminatev");
    ASSERT_THAT(nm, HasSubstr("_ZSt9terminatev"));
    auto by_mangled = binary.find_functions("_ZSt9terminatev");
    ASSERT_EQ(by_mangled.size(), 1u);
    EXPECT_EQ(by_mangled[0]->demangled, words(run(std::string("echo _ZSt9terminatev | c++filt")))[0]);
    auto by_demangled = binary.find_functions("std::terminate()");
    auto without_params = binary.find_functions("std::terminate");
    ASSERT_EQ(by_demangled.size(), 1u);
    ASSERT_EQ(without_params.size(), 1u);
    EXPECT_EQ(by_demangled[0], by_mangled[0]);
    EXPECT_EQ(without_params[0], by_mangled[0]);
    EXPECT_FALSE(binary.find_functions("std::terminat*").empty());
    EXPECT_TRUE(binary.find_functions("no_such_function_anywhere").empty());
}

TEST(BinaryFunctions, FunctionContainingMatchesNmSizes) {
    auto binary = open_or_die(ELF_TEST_NOPIE);
    // nm -S: address size type name.
    int checked = 0;
    for (const auto& line : lines(run(std::string("nm -S --defined-only ") + ELF_TEST_NOPIE))) {
        auto w = words(line);
        if (w.size() != 4 || (w[2] != "T" && w[2] != "t")) continue;
        uint64_t start = hex(w[0]), size = hex(w[1]);
        if (size < 2) continue;
        const auto* found = binary.function_containing(start + size - 1);
        ASSERT_NE(found, nullptr) << w[3];
        EXPECT_EQ(found->vaddr, start) << w[3];
        ++checked;
    }
    EXPECT_GT(checked, 3);
}

TEST(BinaryFunctions, DataSymbolMatchesNm) {
    auto binary = open_or_die(ELF_TEST_PIE);
    auto w = words(run(std::string("nm --defined-only ") + ELF_TEST_PIE + " | grep -w elf_test_counter"));
    ASSERT_EQ(w.size(), 3u);
    EXPECT_EQ(binary.data_symbol("elf_test_counter"), hex(w[0]));
    EXPECT_EQ(binary.data_symbol("no_such_symbol"), std::nullopt);
}

// ---- SDT markers -----------------------------------------------------------

struct ReadelfMarker {
    std::string provider, name, args;
    uint64_t pc = 0, base = 0, semaphore = 0;
};

std::vector<ReadelfMarker> readelf_markers(const std::string& path) {
    std::vector<ReadelfMarker> out;
    for (const auto& line : lines(run("readelf -n '" + path + "'"))) {
        auto w = words(line);
        if (w.empty()) continue;
        if (w[0] == "Provider:") out.push_back({w.size() > 1 ? w[1] : ""});
        if (out.empty()) continue;
        if (w[0] == "Name:") out.back().name = w.size() > 1 ? w[1] : "";
        if (w[0] == "Location:" && w.size() >= 6) {
            out.back().pc = hex(w[1]);    // "0x...,"
            out.back().base = hex(w[3]);
            out.back().semaphore = hex(w[5]);
        }
        if (w[0] == "Arguments:") {
            auto at = line.find("Arguments:") + 10;
            std::string args = line.substr(at);
            while (!args.empty() && args.front() == ' ') args.erase(0, 1);
            out.back().args = args;
        }
    }
    return out;
}

std::optional<uint64_t> readelf_section_address(const std::string& path, const std::string& section) {
    for (const auto& line : lines(run("readelf -SW '" + path + "'"))) {
        auto w = words(line);
        for (size_t i = 0; i + 2 < w.size(); ++i)
            if (w[i] == section) return hex(w[i + 2]);
    }
    return std::nullopt;
}

void expect_markers_match_readelf(const std::string& path, size_t at_least) {
    SCOPED_TRACE(path);
    auto binary = open_or_die(path);
    auto expected = readelf_markers(path);
    ASSERT_GE(expected.size(), at_least);
    auto base = readelf_section_address(path, ".stapsdt.base");
    const auto& markers = binary.sdt_markers();
    ASSERT_EQ(markers.size(), expected.size());
    for (size_t i = 0; i < markers.size(); ++i) {
        const auto& e = expected[i];
        uint64_t shift = base ? *base - e.base : 0;
        EXPECT_EQ(markers[i].provider, e.provider);
        EXPECT_EQ(markers[i].name, e.name);
        EXPECT_EQ(markers[i].vaddr, e.pc + shift) << e.name;
        EXPECT_EQ(markers[i].semaphore_vaddr, e.semaphore ? e.semaphore + shift : 0) << e.name;
        EXPECT_EQ(markers[i].args_text, e.args);
        EXPECT_EQ(markers[i].args.size(), words(e.args).size()) << e.name << ": " << e.args;
        EXPECT_TRUE(binary.is_executable(markers[i].vaddr));
    }
}

TEST(BinarySdt, TestProgramsMatchReadelf) {
    expect_markers_match_readelf(ELF_TEST_PIE, 5);
    expect_markers_match_readelf(ELF_TEST_NOPIE, 5);
    auto binary = open_or_die(ELF_TEST_PIE);
    const SdtMarker* busy = nullptr;
    for (const auto& m : binary.sdt_markers())
        if (m.name == "busy") busy = &m;
    ASSERT_NE(busy, nullptr);
    // The semaphore is the symbol the program defined (nm), in .probes.
    auto w = words(run(std::string("nm ") + ELF_TEST_PIE + " | grep -w elftest_busy_semaphore"));
    ASSERT_EQ(w.size(), 3u);
    EXPECT_EQ(busy->semaphore_vaddr, hex(w[0]));
}

TEST(BinarySdt, SystemBinariesMatchReadelf) {
    // readelf -n lists 8 python markers in Debian 12's 3.11 build.
    if (exists(kPython)) expect_markers_match_readelf(kPython, 8);
    expect_markers_match_readelf(kLibstdcxx, 3);
    auto binary = open_or_die(kLibstdcxx);
    std::set<std::string> names;
    for (const auto& m : binary.sdt_markers()) names.insert(m.provider + ":" + m.name);
    EXPECT_TRUE(names.count("libstdcxx:throw") && names.count("libstdcxx:rethrow") && names.count("libstdcxx:catch"));
}

// ---- debug files -----------------------------------------------------------

TEST(BinaryDebugFile, ItselfWhenItHasDwarf) {
    auto binary = open_or_die(ELF_TEST_PIE);
    auto debug = binary.debug_file();
    ASSERT_TRUE(debug.ok());
    ASSERT_TRUE(debug->has_value());
    EXPECT_EQ((*debug)->found_by, "itself");
    EXPECT_EQ(binary.debug_binary(), &binary);
    Binary moved = std::move(binary);
    EXPECT_EQ(moved.debug_binary(), &moved);
}

TEST(BinaryDebugFile, DebuglinkNextToTheBinary) {
    ScopedEnv root("UPROBE_DEBUG_ROOT", "/nonexistent");
    std::string stripped = std::string(ELF_TEST_VARIANTS) + "/linked/" + "elf_sdt_pie";
    auto binary = open_or_die(stripped);
    auto link = binary.debuglink();
    ASSERT_TRUE(link.has_value());
    EXPECT_EQ(link->file, "elf_sdt_pie.debug");
    auto crc = file_crc32(stripped + ".debug");
    ASSERT_TRUE(crc.ok());
    EXPECT_EQ(link->crc, *crc);
    auto debug = binary.debug_file();
    ASSERT_TRUE(debug.ok()) << debug.error().message();
    ASSERT_TRUE(debug->has_value());
    EXPECT_EQ((*debug)->found_by, "debuglink");
    EXPECT_EQ((*debug)->path, stripped + ".debug");
    // The stripped file has only .dynsym; the local function comes from the
    // debug file's .symtab.
    auto local = binary.find_functions("elf_test_local_work*");
    ASSERT_FALSE(local.empty());
    EXPECT_TRUE(local[0]->from_debug_file);
    EXPECT_EQ(ours(binary), readelf_functions(ELF_TEST_PIE));
}

TEST(BinaryDebugFile, WrongCrcIsRefused) {
    ScopedEnv root("UPROBE_DEBUG_ROOT", "/nonexistent");
    std::string stripped = std::string(ELF_TEST_VARIANTS) + "/badcrc/elf_sdt_pie";
    auto binary = open_or_die(stripped);
    auto debug = binary.debug_file();
    ASSERT_FALSE(debug.ok());
    EXPECT_EQ(debug.error().message(),
              "debug file " + stripped + ".debug does not match " + stripped + " (CRC mismatch)");
    EXPECT_EQ(binary.debug_binary(), nullptr);
    EXPECT_TRUE(binary.find_functions("elf_test_local_work*").empty());
}

TEST(BinaryDebugFile, BuildIdUnderTheDebugRoot) {
    TempDir root;
    auto binary = open_or_die(std::string(ELF_TEST_VARIANTS) + "/badcrc/elf_sdt_pie");
    std::string id;
    for (const auto& line : lines(run(std::string("readelf -n ") + ELF_TEST_PIE)))
        if (auto at = line.find("Build ID: "); at != std::string::npos) id = line.substr(at + 10);
    ASSERT_GT(id.size(), 2u);
    EXPECT_EQ(binary.build_id(), id);
    std::string dir = root.path + "/.build-id/" + id.substr(0, 2);
    ASSERT_EQ(::mkdir((root.path + "/.build-id").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    std::string target = dir + "/" + id.substr(2) + ".debug";
    ASSERT_EQ(::symlink((std::string(ELF_TEST_VARIANTS) + "/linked/elf_sdt_pie.debug").c_str(), target.c_str()), 0);
    ScopedEnv env("UPROBE_DEBUG_ROOT", root.path);
    auto debug = binary.debug_file();
    ASSERT_TRUE(debug.ok()) << debug.error().message();
    ASSERT_TRUE(debug->has_value());
    EXPECT_EQ((*debug)->found_by, "build-id");
    EXPECT_EQ((*debug)->path, target);
}

TEST(BinaryDebugFile, MiniDebugInfo) {
    ScopedEnv root("UPROBE_DEBUG_ROOT", "/nonexistent");
    std::string mini = std::string(ELF_TEST_VARIANTS) + "/mini/elf_sdt_pie";
    auto binary = open_or_die(mini);
    auto debug = binary.debug_file();
    ASSERT_TRUE(debug.ok());
    EXPECT_FALSE(debug->has_value());
    auto local = binary.find_functions("elf_test_local_work*");
    ASSERT_FALSE(local.empty());
    EXPECT_TRUE(local[0]->from_debug_file);
    EXPECT_EQ(ours(binary), readelf_functions(ELF_TEST_PIE));
}

}  // namespace
}  // namespace uprobe::elf
