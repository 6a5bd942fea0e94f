// The probe-spec grammar of docs/probes.md, form by form, and its errors
// with their exact caret columns.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "uprobe/spec.hpp"

namespace uprobe {
namespace {

ProbeSpec parse_ok(std::string_view text) {
    ParsedSpec parsed = parse_probe_spec(text);
    if (parsed.error) {
        ADD_FAILURE() << "'" << text << "' failed:\n" << parsed.error->render();
        return {};
    }
    EXPECT_TRUE(parsed.spec.has_value());
    return parsed.spec.value_or(ProbeSpec{});
}

Location location_of(std::string_view text) { return parse_ok(text).location; }

Fetch fetch_of(std::string_view arg) {
    ProbeSpec spec = parse_ok("f " + std::string(arg));
    if (spec.args.size() != 1) {
        ADD_FAILURE() << "'" << arg << "' gave " << spec.args.size() << " args";
        return {};
    }
    return spec.args[0].fetch;
}

// ---- locations ------------------------------------------------------------

TEST(SpecLocation, PlainFunction) {
    ProbeSpec spec = parse_ok("main");
    EXPECT_EQ(spec.text, "main");
    EXPECT_EQ(spec.location.kind, LocationKind::Function);
    EXPECT_EQ(spec.location.function, "main");
    EXPECT_EQ(spec.location.binary, "");
    EXPECT_EQ(spec.location.offset, 0u);
    EXPECT_FALSE(spec.location.is_return);
    EXPECT_TRUE(spec.args.empty());
    EXPECT_FALSE(spec.named);
}

TEST(SpecLocation, LibraryAndPathBinaries) {
    Location lib = location_of("libc:malloc");
    EXPECT_EQ(lib.binary, "libc");
    EXPECT_EQ(lib.function, "malloc");

    Location cxx = location_of("libstdc++:_Znwm");
    EXPECT_EQ(cxx.binary, "libstdc++");
    EXPECT_EQ(cxx.function, "_Znwm");

    Location soname = location_of("libpthread.so.0:pthread_create");
    EXPECT_EQ(soname.binary, "libpthread.so.0");
    EXPECT_EQ(soname.function, "pthread_create");

    Location path = location_of("/lib/x86_64-linux-gnu/libc.so.6:free");
    EXPECT_EQ(path.kind, LocationKind::Function);
    EXPECT_EQ(path.binary, "/lib/x86_64-linux-gnu/libc.so.6");
    EXPECT_EQ(path.function, "free");

    Location relative = location_of("./a.out:main");
    EXPECT_EQ(relative.binary, "./a.out");
    EXPECT_EQ(relative.function, "main");
}

TEST(SpecLocation, Offsets) {
    Location dec = location_of("f+4");
    EXPECT_EQ(dec.function, "f");
    EXPECT_EQ(dec.offset, 4u);
    Location hex = location_of("libc:malloc+0x1f");
    EXPECT_EQ(hex.binary, "libc");
    EXPECT_EQ(hex.function, "malloc");
    EXPECT_EQ(hex.offset, 0x1fu);
    EXPECT_EQ(location_of("f+0X10").offset, 16u);
}

TEST(SpecLocation, Return) {
    Location r = location_of("f%return");
    EXPECT_EQ(r.kind, LocationKind::Function);
    EXPECT_EQ(r.function, "f");
    EXPECT_TRUE(r.is_return);
    Location lib = location_of("libc:malloc%return");
    EXPECT_EQ(lib.binary, "libc");
    EXPECT_TRUE(lib.is_return);
}

TEST(SpecLocation, FunctionAtFile) {
    Location at = location_of("parse@src/parser.c");
    EXPECT_EQ(at.kind, LocationKind::Function);
    EXPECT_EQ(at.function, "parse");
    EXPECT_EQ(at.file, "src/parser.c");
    Location with_offset = location_of("bin/x:parse@parser.c+8");
    EXPECT_EQ(with_offset.binary, "bin/x");
    EXPECT_EQ(with_offset.file, "parser.c");
    EXPECT_EQ(with_offset.offset, 8u);
    Location with_return = location_of("parse@parser.c%return");
    EXPECT_EQ(with_return.file, "parser.c");
    EXPECT_TRUE(with_return.is_return);
}

TEST(SpecLocation, SourceLines) {
    Location simple = location_of("main.c:42");
    EXPECT_EQ(simple.kind, LocationKind::SourceLine);
    EXPECT_EQ(simple.file, "main.c");
    EXPECT_EQ(simple.line, 42u);
    EXPECT_EQ(simple.binary, "");

    Location dir = location_of("src/foo.cc:7");
    EXPECT_EQ(dir.kind, LocationKind::SourceLine);
    EXPECT_EQ(dir.file, "src/foo.cc");
    EXPECT_EQ(dir.line, 7u);

    Location slash_only = location_of("src/Makefile:3");
    EXPECT_EQ(slash_only.kind, LocationKind::SourceLine);
    EXPECT_EQ(slash_only.file, "src/Makefile");

    Location in_bin = location_of("/usr/bin/app:main.c:10");
    EXPECT_EQ(in_bin.kind, LocationKind::SourceLine);
    EXPECT_EQ(in_bin.binary, "/usr/bin/app");
    EXPECT_EQ(in_bin.file, "main.c");
    EXPECT_EQ(in_bin.line, 10u);
}

TEST(SpecLocation, FunctionRelativeLines) {
    Location rel = location_of("main:3");
    EXPECT_EQ(rel.kind, LocationKind::FunctionLine);
    EXPECT_EQ(rel.function, "main");
    EXPECT_EQ(rel.line, 3u);
    EXPECT_EQ(rel.binary, "");

    Location zero = location_of("main:0");  // the function's own line
    EXPECT_EQ(zero.kind, LocationKind::FunctionLine);
    EXPECT_EQ(zero.line, 0u);

    Location in_bin = location_of("libfoo:foo_init:12");
    EXPECT_EQ(in_bin.kind, LocationKind::FunctionLine);
    EXPECT_EQ(in_bin.binary, "libfoo");
    EXPECT_EQ(in_bin.function, "foo_init");
    EXPECT_EQ(in_bin.line, 12u);

    Location at_file = location_of("parse@parser.c:5");
    EXPECT_EQ(at_file.kind, LocationKind::FunctionLine);
    EXPECT_EQ(at_file.function, "parse");
    EXPECT_EQ(at_file.file, "parser.c");
    EXPECT_EQ(at_file.line, 5u);

    Location cxx = location_of("ns::Cls::method:2");
    EXPECT_EQ(cxx.kind, LocationKind::FunctionLine);
    EXPECT_EQ(cxx.function, "ns::Cls::method");
    EXPECT_EQ(cxx.line, 2u);
}

TEST(SpecLocation, Addresses) {
    Location a = location_of("0x401000");
    EXPECT_EQ(a.kind, LocationKind::Address);
    EXPECT_EQ(a.address, 0x401000u);
    Location b = location_of("libc:0xDEADbeef");
    EXPECT_EQ(b.kind, LocationKind::Address);
    EXPECT_EQ(b.binary, "libc");
    EXPECT_EQ(b.address, 0xdeadbeefu);
    EXPECT_EQ(location_of("0xffffffffffffffff").address, UINT64_MAX);
}

TEST(SpecLocation, SdtForms) {
    struct Case {
        const char* text;
        const char* binary;
        const char* provider;
        const char* marker;
    };
    const Case cases[] = {
        {"sdt:python:function__entry", "", "python", "function__entry"},
        {"sdt:/usr/bin/python3:python:function__entry", "/usr/bin/python3", "python", "function__entry"},
        {"sdt:libc:libc:setjmp", "libc", "libc", "setjmp"},
        {"usdt:/usr/bin/python3:python:line", "/usr/bin/python3", "python", "line"},
        {"usdt:python:line", "", "python", "line"},
        {"%python:function__entry", "", "python", "function__entry"},
        {"%function__entry", "", "*", "function__entry"},
        {"/usr/bin/python3:%python:gc__start", "/usr/bin/python3", "python", "gc__start"},
        {"libc:%memory_*", "libc", "*", "memory_*"},
        {"sdt:py*:func?ion__[er]*", "", "py*", "func?ion__[er]*"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.text);
        Location loc = location_of(c.text);
        EXPECT_EQ(loc.kind, LocationKind::Sdt);
        EXPECT_EQ(loc.binary, c.binary);
        EXPECT_EQ(loc.provider, c.provider);
        EXPECT_EQ(loc.marker, c.marker);
    }
}

TEST(SpecLocation, OperatorIsAPlainWordInSdt) {
    for (const char* text : {"sdt:p:operator x", "%p:operator x", "bin:%p:operator x", "usdt:operator:operator x"}) {
        SCOPED_TRACE(text);
        ProbeSpec spec = parse_ok(text);
        EXPECT_EQ(spec.location.kind, LocationKind::Sdt);
        EXPECT_EQ(spec.location.marker, "operator");
        ASSERT_EQ(spec.args.size(), 1u);
        EXPECT_EQ(spec.args[0].fetch.expr, "x");
    }
}

TEST(SpecLocation, CxxNames) {
    struct Case {
        const char* text;
        const char* binary;
        const char* function;
    };
    const Case cases[] = {
        {"ns::Cls::method", "", "ns::Cls::method"},
        {"libstdc++:std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >::_M_create",
         "libstdc++",
         "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >::_M_create"},
        {"std::vector<int>::push_back", "", "std::vector<int>::push_back"},
        {"std::vector<std::pair<int, int>>::size", "", "std::vector<std::pair<int, int>>::size"},
        {"operator new", "", "operator new"},
        {"libstdc++:operator new[]", "libstdc++", "operator new[]"},
        {"operator delete", "", "operator delete"},
        {"Cls::operator<<", "", "Cls::operator<<"},
        {"Cls::operator<", "", "Cls::operator<"},
        {"Cls::operator->", "", "Cls::operator->"},
        {"Cls::operator()", "", "Cls::operator()"},
        {"Cls::operator[]", "", "Cls::operator[]"},
        {"Cls::operator==", "", "Cls::operator=="},
        {"Cls::operator=", "", "Cls::operator="},
        {"Cls::operator bool", "", "Cls::operator bool"},
        {"Cls::~Cls", "", "Cls::~Cls"},
        {"(anonymous namespace)::helper", "", "(anonymous namespace)::helper"},
        {"app:f(int, char const*)", "app", "f(int, char const*)"},
        {"_ZN2ns3Cls6methodEv", "", "_ZN2ns3Cls6methodEv"},
        {"libfoo.so:_ZN2ns3Cls6methodEv", "libfoo.so", "_ZN2ns3Cls6methodEv"},
        {"foo.cold", "", "foo.cold"},
        {"foo.isra.0", "", "foo.isra.0"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.text);
        Location loc = location_of(c.text);
        EXPECT_EQ(loc.kind, LocationKind::Function);
        EXPECT_EQ(loc.binary, c.binary);
        EXPECT_EQ(loc.function, c.function);
        EXPECT_EQ(loc.offset, 0u);
        EXPECT_FALSE(loc.is_return);
    }
}

TEST(SpecLocation, CxxNamesWithSuffixes) {
    Location ret = location_of("std::vector<int>::push_back%return");
    EXPECT_EQ(ret.function, "std::vector<int>::push_back");
    EXPECT_TRUE(ret.is_return);
    Location off = location_of("libstdc++:operator new+4");
    EXPECT_EQ(off.binary, "libstdc++");
    EXPECT_EQ(off.function, "operator new");
    EXPECT_EQ(off.offset, 4u);
    Location op_ret = location_of("Cls::operator<<%return");
    EXPECT_EQ(op_ret.function, "Cls::operator<<");
    EXPECT_TRUE(op_ret.is_return);
    // Args still follow a C++ name with spaces in it.
    ProbeSpec with_args = parse_ok("operator new $arg1");
    EXPECT_EQ(with_args.location.function, "operator new");
    ASSERT_EQ(with_args.args.size(), 1u);
    EXPECT_EQ(with_args.args[0].fetch.kind, FetchKind::Arg);
}

TEST(SpecLocation, Globs) {
    const char* cases[][2] = {
        {"sys_*", "sys_*"},
        {"libc:str?cmp", "str?cmp"},
        {"[a-c]alloc", "[a-c]alloc"},
        {"*::push_back", "*::push_back"},
        {"ns::*", "ns::*"},
        {"*", "*"},
        {"[!_]*", "[!_]*"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c[0]);
        Location loc = location_of(c[0]);
        EXPECT_EQ(loc.kind, LocationKind::Function);
        EXPECT_EQ(loc.function, c[1]);
    }
    Location glob_return = location_of("libc:mem*%return");
    EXPECT_EQ(glob_return.function, "mem*");
    EXPECT_TRUE(glob_return.is_return);
}

TEST(SpecLocation, LeadingAndTrailingSpaces) {
    ProbeSpec spec = parse_ok("  main  ");
    EXPECT_EQ(spec.location.function, "main");
    EXPECT_TRUE(spec.args.empty());
    EXPECT_EQ(spec.text, "  main  ");
}

// ---- names ----------------------------------------------------------------

TEST(SpecName, Explicit) {
    ProbeSpec spec = parse_ok("alloc=libc:malloc $arg1");
    EXPECT_TRUE(spec.named);
    EXPECT_EQ(spec.name, "alloc");
    EXPECT_EQ(spec.location.binary, "libc");
    EXPECT_EQ(spec.location.function, "malloc");
    ProbeSpec op = parse_ok("assign=Cls::operator=");
    EXPECT_EQ(op.name, "assign");
    EXPECT_EQ(op.location.function, "Cls::operator=");
    ProbeSpec word_inside = parse_ok("my_operator_probe=main");
    EXPECT_EQ(word_inside.name, "my_operator_probe");
    EXPECT_EQ(word_inside.location.function, "main");
    ProbeSpec op_unnamed = parse_ok("Cls::operator==");
    EXPECT_FALSE(op_unnamed.named);
    EXPECT_EQ(op_unnamed.location.function, "Cls::operator==");
}

TEST(SpecName, Defaults) {
    const char* cases[][2] = {
        {"main", "main"},
        {"libc:malloc", "malloc"},
        {"f+4", "f_4"},
        {"f+0x10", "f_16"},
        {"f%return", "f__return"},
        {"libc:malloc%return", "malloc__return"},
        {"sdt:python:function__entry", "function__entry"},
        {"%python:gc__start", "gc__start"},
        {"sdt:python:*", "sdt"},
        {"main.c:42", "main_c_42"},
        {"src/foo.cc:7", "foo_cc_7"},
        {"main:3", "main_L3"},
        {"0x401000", "addr_0x401000"},
        {"libc:0xABC", "addr_0xabc"},
        {"ns::Cls::method", "ns_Cls_method"},
        {"std::vector<int>::push_back", "std_vector_int_push_back"},
        {"operator new", "operator_new"},
        {"sys_*", "sys_"},
        {"*", "probe"},
        {"_ZN2ns3Cls6methodEv", "_ZN2ns3Cls6methodEv"},
        {"parse@parser.c", "parse"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c[0]);
        ProbeSpec spec = parse_ok(c[0]);
        EXPECT_EQ(spec.name, c[1]);
        EXPECT_FALSE(spec.named);
    }
}

// ---- fetches --------------------------------------------------------------

TEST(SpecFetch, Registers) {
    for (const char* reg : {"rax", "eax", "ax", "al", "di", "dil", "r8", "r8d", "r8w", "r8b", "r15",
                            "rip", "rsp", "xmm0"}) {
        SCOPED_TRACE(reg);
        Fetch f = fetch_of(std::string("%") + reg);
        EXPECT_EQ(f.kind, FetchKind::Register);
        EXPECT_EQ(f.reg, reg);
    }
}

TEST(SpecFetch, SpecialVariables) {
    Fetch arg = fetch_of("$arg2");
    EXPECT_EQ(arg.kind, FetchKind::Arg);
    EXPECT_EQ(arg.index, 2u);
    EXPECT_EQ(fetch_of("$arg1").index, 1u);
    EXPECT_EQ(fetch_of("$arg12").index, 12u);
    Fetch stack = fetch_of("$stack0");
    EXPECT_EQ(stack.kind, FetchKind::Stack);
    EXPECT_EQ(stack.index, 0u);
    EXPECT_EQ(fetch_of("$stack7").index, 7u);
    EXPECT_EQ(fetch_of("$retval").kind, FetchKind::RetVal);
    EXPECT_EQ(fetch_of("$comm").kind, FetchKind::Comm);
    EXPECT_EQ(fetch_of("$pid").kind, FetchKind::Pid);
    EXPECT_EQ(fetch_of("$tid").kind, FetchKind::Tid);
    EXPECT_EQ(fetch_of("$duration").kind, FetchKind::Duration);
    EXPECT_EQ(fetch_of("$params").kind, FetchKind::Params);
    EXPECT_EQ(fetch_of("$vars").kind, FetchKind::Vars);
}

TEST(SpecFetch, Memory) {
    Fetch m = fetch_of("+8(%di)");
    EXPECT_EQ(m.kind, FetchKind::Memory);
    EXPECT_EQ(m.offset, 8);
    ASSERT_TRUE(m.inner);
    EXPECT_EQ(m.inner->kind, FetchKind::Register);
    EXPECT_EQ(m.inner->reg, "di");

    Fetch neg = fetch_of("-0x10(%rbp)");
    EXPECT_EQ(neg.kind, FetchKind::Memory);
    EXPECT_EQ(neg.offset, -16);
    ASSERT_TRUE(neg.inner);
    EXPECT_EQ(neg.inner->reg, "rbp");

    Fetch nested = fetch_of("+8(+0(%di))");
    EXPECT_EQ(nested.offset, 8);
    ASSERT_TRUE(nested.inner);
    EXPECT_EQ(nested.inner->kind, FetchKind::Memory);
    EXPECT_EQ(nested.inner->offset, 0);
    ASSERT_TRUE(nested.inner->inner);
    EXPECT_EQ(nested.inner->inner->kind, FetchKind::Register);
    EXPECT_EQ(nested.inner->inner->reg, "di");

    Fetch of_arg = fetch_of("+4($arg1)");
    ASSERT_TRUE(of_arg.inner);
    EXPECT_EQ(of_arg.inner->kind, FetchKind::Arg);
    EXPECT_EQ(of_arg.inner->index, 1u);

    Fetch extremes = fetch_of("-9223372036854775808(%sp)");
    EXPECT_EQ(extremes.offset, INT64_MIN);
    EXPECT_EQ(fetch_of("+9223372036854775807(%sp)").offset, INT64_MAX);

    Fetch deep = fetch_of("+1(+2(+3(+4(+5(%ax)))))");
    const Fetch* walk = &deep;
    for (int64_t off = 1; off <= 5; ++off) {
        ASSERT_EQ(walk->kind, FetchKind::Memory);
        EXPECT_EQ(walk->offset, off);
        walk = walk->inner.get();
        ASSERT_NE(walk, nullptr);
    }
    EXPECT_EQ(walk->reg, "ax");

    // Sixteen levels are allowed (the seventeenth is in the error table).
    std::string sixteen = "%di";
    for (int i = 0; i < 16; ++i) sixteen = "+0(" + sixteen + ")";
    EXPECT_EQ(fetch_of("@entry(" + sixteen.substr(3, sixteen.size() - 4) + ")").kind, FetchKind::Entry);
    EXPECT_EQ(fetch_of(sixteen).kind, FetchKind::Memory);
}

TEST(SpecFetch, AddressesAndSymbols) {
    Fetch addr = fetch_of("@0x601040");
    EXPECT_EQ(addr.kind, FetchKind::Address);
    EXPECT_EQ(addr.address, 0x601040u);
    Fetch sym = fetch_of("@counter");
    EXPECT_EQ(sym.kind, FetchKind::Symbol);
    EXPECT_EQ(sym.symbol, "counter");
    EXPECT_EQ(sym.offset, 0);
    Fetch sym_off = fetch_of("@table+16");
    EXPECT_EQ(sym_off.symbol, "table");
    EXPECT_EQ(sym_off.offset, 16);
    Fetch sym_neg = fetch_of("@table-0x8");
    EXPECT_EQ(sym_neg.offset, -8);
    Fetch cxx = fetch_of("@ns::global_count:u32");
    EXPECT_EQ(cxx.kind, FetchKind::Symbol);
    EXPECT_EQ(cxx.symbol, "ns::global_count");
    Fetch entry_symbol = fetch_of("@entry");  // a symbol called entry
    EXPECT_EQ(entry_symbol.kind, FetchKind::Symbol);
    EXPECT_EQ(entry_symbol.symbol, "entry");
}

TEST(SpecFetch, Entry) {
    Fetch e = fetch_of("@entry(%di)");
    EXPECT_EQ(e.kind, FetchKind::Entry);
    ASSERT_TRUE(e.inner);
    EXPECT_EQ(e.inner->kind, FetchKind::Register);
    EXPECT_EQ(e.inner->reg, "di");
    Fetch mem = fetch_of("@entry(+8($arg1))");
    ASSERT_TRUE(mem.inner);
    EXPECT_EQ(mem.inner->kind, FetchKind::Memory);
    EXPECT_EQ(mem.inner->offset, 8);
    Fetch var = fetch_of("@entry(req->len)");
    ASSERT_TRUE(var.inner);
    EXPECT_EQ(var.inner->kind, FetchKind::DwarfVar);
    EXPECT_EQ(var.inner->expr, "req->len");
}

TEST(SpecFetch, DwarfVariables) {
    for (const char* expr : {"count", "req->len", "p.field", "arr[3]", "*ptr", "req->hdr.len", "arr[2].x",
                             "*p->next", "**pp", "m[1][0x2]", "_x9", "a->b->c"}) {
        SCOPED_TRACE(expr);
        Fetch f = fetch_of(expr);
        EXPECT_EQ(f.kind, FetchKind::DwarfVar);
        EXPECT_EQ(f.expr, expr);
    }
}

TEST(SpecFetch, Types) {
    const std::pair<const char*, ValueType> cases[] = {
        {"s8", ValueType::S8},    {"s16", ValueType::S16},     {"s32", ValueType::S32},
        {"s64", ValueType::S64},  {"u8", ValueType::U8},       {"u16", ValueType::U16},
        {"u32", ValueType::U32},  {"u64", ValueType::U64},     {"x8", ValueType::X8},
        {"x16", ValueType::X16},  {"x32", ValueType::X32},     {"x64", ValueType::X64},
        {"f32", ValueType::F32},  {"f64", ValueType::F64},     {"string", ValueType::String},
        {"float", ValueType::F32}, {"double", ValueType::F64}, {"ustring", ValueType::String},
    };
    for (const auto& [type, expected] : cases) {
        SCOPED_TRACE(type);
        ProbeSpec spec = parse_ok(std::string("f %di:") + type);
        ASSERT_EQ(spec.args.size(), 1u);
        EXPECT_EQ(spec.args[0].type, expected);
        EXPECT_EQ(spec.args[0].fetch.reg, "di");
    }
    EXPECT_EQ(parse_ok("f %di").args[0].type, ValueType::Default);
    ProbeSpec mem = parse_ok("f +0(+8(%si)):string");
    EXPECT_EQ(mem.args[0].type, ValueType::String);
    EXPECT_EQ(mem.args[0].fetch.kind, FetchKind::Memory);
}

TEST(SpecArgs, ManyArgsWithNamesAndTypes) {
    ProbeSpec spec = parse_ok("alloc=libc:malloc size=%di:u64 $arg1 caller=+0(%sp):x64\t$comm");
    EXPECT_EQ(spec.name, "alloc");
    ASSERT_EQ(spec.args.size(), 4u);
    EXPECT_EQ(spec.args[0].name, "size");
    EXPECT_EQ(spec.args[0].type, ValueType::U64);
    EXPECT_EQ(spec.args[1].name, "arg1");
    EXPECT_EQ(spec.args[2].name, "caller");
    EXPECT_EQ(spec.args[2].type, ValueType::X64);
    EXPECT_EQ(spec.args[3].name, "comm");
}

TEST(SpecArgs, DefaultNames) {
    ProbeSpec spec = parse_ok(
        "f%return %di $arg2 $retval $stack3 +8(%di) -8(%bp) +0(+8(%di)) @0x1000 @table+16 @table-4 $comm "
        "$pid $tid $duration @entry($arg1) $params $vars req->len arr[2].x *p->next");
    const char* expected[] = {"di",     "arg2",     "retval",   "stack3",  "di_8",        "bp_neg8",
                              "di_8_0", "addr_0x1000", "table_16", "table_neg4", "comm", "pid",
                              "tid",    "duration", "entry_arg1", "params", "vars",       "req_len",
                              "arr_2_x", "p_next"};
    ASSERT_EQ(spec.args.size(), std::size(expected));
    for (size_t i = 0; i < spec.args.size(); ++i) EXPECT_EQ(spec.args[i].name, expected[i]) << i;
}

TEST(SpecArgs, DuplicateDefaultsGetSuffixes) {
    ProbeSpec spec = parse_ok("f %di %di di_2=%si %di arg1=%ax $arg1");
    ASSERT_EQ(spec.args.size(), 6u);
    EXPECT_EQ(spec.args[0].name, "di");
    EXPECT_EQ(spec.args[1].name, "di_3");  // di_2 is taken by the user
    EXPECT_EQ(spec.args[2].name, "di_2");
    EXPECT_EQ(spec.args[3].name, "di_4");
    EXPECT_EQ(spec.args[4].name, "arg1");
    EXPECT_EQ(spec.args[5].name, "arg1_2");
}

TEST(SpecArgs, LimitOf128) {
    std::string text = "f";
    for (int i = 0; i < 128; ++i) text += " %di";
    EXPECT_EQ(parse_ok(text).args.size(), 128u);
    ParsedSpec too_many = parse_probe_spec(text + " %si");
    ASSERT_TRUE(too_many.error);
    EXPECT_EQ(too_many.error->column, text.size() + 1);
}

// ---- errors ---------------------------------------------------------------

struct BadSpec {
    const char* text;
    const char* message;  // a substring of the message
    size_t column;
};

class SpecErrors : public ::testing::TestWithParam<BadSpec> {};

TEST_P(SpecErrors, MessageAndColumn) {
    const BadSpec& bad = GetParam();
    ParsedSpec parsed = parse_probe_spec(bad.text);
    ASSERT_FALSE(parsed.spec.has_value()) << bad.text;
    ASSERT_TRUE(parsed.error.has_value());
    EXPECT_NE(parsed.error->message.find(bad.message), std::string::npos)
        << "message: " << parsed.error->message;
    EXPECT_EQ(parsed.error->column, bad.column) << parsed.error->render();
    EXPECT_EQ(parsed.error->text, bad.text);
    EXPECT_EQ(parsed.error->message.find('\n'), std::string::npos);
}

// Columns are counted by hand from the text (0-based).
const BadSpec kBadSpecs[] = {
    // the probe as a whole
    {"", "empty probe", 0},
    {"   ", "empty probe", 0},
    {"=main", "empty probe name", 0},
    {"my-probe=main", "invalid probe name 'my-probe'", 2},
    {"1st=main", "invalid probe name", 0},
    {"grp:ev=main", "invalid probe name", 3},
    {"x=", "expected a location after '='", 2},
    {"x= %di", "expected a location after '='", 2},
    // locations
    {"libc:", "expected a function name", 5},
    {":main", "expected a binary before ':'", 0},
    {"a:b:c", "too many ':'", 3},
    {"ns::Cls:foo", "a binary name cannot contain ':'", 2},
    {"::::?:::::%?p", "a binary name cannot contain ':'", 0},
    {"operator n:%x", "a binary name cannot contain spaces", 8},
    {"x(a b):f", "a binary name cannot contain spaces", 3},
    {"a:b:c:12", "too many ':'", 1},
    {"42", "cannot start with a digit", 0},
    {"0x", "expected hex digits after '0x'", 2},
    {"0xg1", "expected hex digits after '0x'", 2},
    {"0x12zz", "unexpected 'z' after the address", 4},
    {"0x10000000000000000", "address too large", 0},
    {"f+", "offset is not a number", 2},
    {"f+x", "offset is not a number", 2},
    {"f+0x", "offset is not a number", 2},
    {"f+4%return", "%return cannot be combined with +OFFSET", 3},
    {"f%return+4", "%return cannot be combined with +OFFSET", 8},
    {"f%ret", "expected 'return' after '%'", 2},
    {"f%returns", "expected 'return' after '%'", 2},
    {"f%return@x.c", "unexpected '@' after %return", 8},
    {"f@", "expected a file name after '@'", 2},
    {"f@+4", "expected a file name after '@'", 2},
    {"main:3%return", "%return cannot be combined with a line", 6},
    {"main.c:3%return", "%return cannot be combined with a line", 8},
    {"main%return:3", "%return cannot be combined with a line", 4},
    {"main+4:3", "+OFFSET cannot be combined with a line", 4},
    {"main.c:3+4", "+OFFSET cannot be combined with a line", 8},
    {"main.c:3x", "line is not a number", 8},
    {"main.c:0", "line numbers start at 1", 7},
    {"main.c:4294967296", "line number too large", 7},
    {"fo-o", "unexpected '-' in function name", 2},
    {"f,g", "unexpected ',' in function name", 1},
    {"f#", "unexpected '#' in function name", 1},
    {"std::vector<int::size", "unbalanced '<'", 11},
    {"f(int", "unbalanced '('", 1},
    {"f)", "unbalanced ')'", 1},
    {"f>", "unbalanced '>'", 1},
    {"f<a)", "unbalanced '<'", 1},
    {"[abc", "unbalanced '['", 0},
    {"lib:[abc %di]", "unbalanced '['", 4},
    {"Cls::operator", "expected an operator after 'operator'", 13},
    // SDT
    {"sdt:", "expected PROVIDER:NAME", 4},
    {"sdt:python", "expected PROVIDER:NAME", 10},
    {"sdt:python:", "expected a marker name", 11},
    {"sdt:a:b:c:d", "too many ':'", 9},
    {"usdt:a:b:c:d", "too many ':'", 10},
    {"sdt:py-thon:x", "unexpected '-' in a provider name", 6},
    {"%", "expected a marker name", 1},
    {"%a:b:c", "too many ':'", 4},
    {"%python:fn%return", "unexpected '%' in a marker name", 10},
    {"libc:%:x", "expected a provider name", 6},
    // arguments
    {"f %", "expected a register name after '%'", 3},
    {"f %RAX", "expected a register name after '%'", 3},
    {"f %return", "%return must follow the function without a space", 2},
    {"f %di:u7", "unknown type 'u7' (expected s8..s64, u8..u64, x8..x64, f32, f64, string)", 6},
    {"f %di:", "expected a type after ':'", 6},
    {"f %di:u32:x", "unknown type 'x'", 10},
    {"f $arg0", "arguments count from 1", 6},
    {"f $arg", "expected a number after '$arg'", 6},
    {"f $stack", "expected a number after '$stack'", 8},
    {"f $arg2x", "unexpected 'x' after '$arg'", 7},
    {"f $arg99999999999", "arg number too large", 6},
    {"f $foo", "unknown special variable '$foo'", 2},
    {"f $", "expected a special variable name after '$'", 3},
    {"f +8", "expected '(' after the offset", 4},
    {"f +(%di)", "offset is not a number", 3},
    {"f +x(%di)", "offset is not a number", 3},
    {"f +8(%di", "unbalanced '('", 4},
    {"f +8(+0(%di)", "unbalanced '('", 4},
    {"f +8(%di))", "unbalanced ')'", 9},
    {"f +8(%di]", "unexpected ']' (expected ')')", 8},
    {"f +8()", "expected a fetch", 5},
    {"f +9223372036854775808(%di)", "offset too large", 3},
    {"f -9223372036854775809(%di)", "offset too large", 3},
    {"f @", "expected an address or symbol after '@'", 3},
    {"f @0x", "expected hex digits after '0x'", 5},
    {"f @sym+", "offset is not a number", 7},
    {"f @entry(", "expected a fetch", 9},
    {"f @entry(%di", "unbalanced '('", 8},
    {"f @entry(@entry(%di))", "@entry cannot be nested", 9},
    {"f req->", "expected a field name after '->'", 7},
    {"f req.", "expected a field name after '.'", 6},
    {"f arr[", "expected an index inside '[...]'", 6},
    {"f arr[i]", "expected an index inside '[...]'", 6},
    {"f arr[2", "unbalanced '['", 5},
    {"f arr[2)", "unexpected ')' (expected ']')", 7},
    {"f *", "expected a variable name", 3},
    {"f req-len", "unexpected '-' after the fetch", 5},
    {"f (%di)", "memory fetches are written +OFF(FETCH)", 2},
    {"f )", "unbalanced ')'", 2},
    {"f 42", "unexpected '4'", 2},
    {"f x-y=%di", "invalid argument name 'x-y'", 3},
    {"f =%di", "empty argument name", 2},
    {"f x=", "expected a fetch", 4},
    {"f x=%di x=%si", "duplicate argument name 'x'", 8},
    {"f %di:", "expected a type after ':'", 6},
    {"f +0(+0(+0(+0(+0(+0(+0(+0(+0(+0(+0(+0(+0(+0(+0(+0(+0(%di)))))))))))))))))",
     "fetches nest too deeply", 50},
    {"f \x01", "unexpected byte 0x01", 2},
};

INSTANTIATE_TEST_SUITE_P(Table, SpecErrors, ::testing::ValuesIn(kBadSpecs));

TEST(SpecErrorRender, ThreeLinesWithCaret) {
    ParsedSpec parsed = parse_probe_spec("f %di:u7");
    ASSERT_TRUE(parsed.error);
    EXPECT_EQ(parsed.error->render(),
              "unknown type 'u7' (expected s8..s64, u8..u64, x8..x64, f32, f64, string)\n"
              "  f %di:u7\n"
              "        ^");
}

TEST(SpecErrorRender, CaretAfterTheEndAndUnderTabs) {
    SpecError at_end{"expected a type after ':'", 6, "f %di:"};
    EXPECT_EQ(at_end.render(), "expected a type after ':'\n  f %di:\n        ^");
    SpecError tabbed{"oops", 3, "f\t%x"};
    EXPECT_EQ(tabbed.render(), "oops\n  f\t%x\n   \t ^");
}

// ---- canonical text -------------------------------------------------------

TEST(SpecToString, TypeAndKindNames) {
    EXPECT_EQ(to_string(ValueType::U32), "u32");
    EXPECT_EQ(to_string(ValueType::X8), "x8");
    EXPECT_EQ(to_string(ValueType::S64), "s64");
    EXPECT_EQ(to_string(ValueType::F64), "f64");
    EXPECT_EQ(to_string(ValueType::String), "string");
    EXPECT_EQ(to_string(ValueType::Default), "default");
    EXPECT_EQ(to_string(LocationKind::Function), "function");
    EXPECT_EQ(to_string(LocationKind::SourceLine), "source-line");
    EXPECT_EQ(to_string(LocationKind::FunctionLine), "function-line");
    EXPECT_EQ(to_string(LocationKind::Address), "address");
    EXPECT_EQ(to_string(LocationKind::Sdt), "sdt");
}

TEST(SpecToString, CanonicalLocations) {
    const char* cases[][2] = {
        {"main", "main"},
        {"libc:malloc+0x10", "libc:malloc+16"},
        {"f+0", "f"},
        {"f%return", "f%return"},
        {"parse@p.c+4", "parse@p.c+4"},
        {"main.c:42", "main.c:42"},
        {"main:3", "main:3"},
        {"parse@p.c:3", "parse@p.c:3"},
        {"0x401000", "0x401000"},
        {"libc:0xABC", "libc:0xabc"},
        {"sdt:python:line", "sdt:python:line"},
        {"usdt:/bin/py:python:line", "sdt:/bin/py:python:line"},
        {"%python:line", "sdt:python:line"},
        {"bin:%python:line", "sdt:bin:python:line"},
        {"operator new", "operator new"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c[0]);
        EXPECT_EQ(to_string(location_of(c[0])), c[1]);
    }
}

TEST(SpecToString, CanonicalFetches) {
    const char* cases[][2] = {
        {"%di", "%di"},          {"$arg3", "$arg3"},         {"$retval", "$retval"},
        {"$stack0", "$stack0"},  {"+0x8(%di)", "+8(%di)"},   {"-16(+0(%bp))", "-16(+0(%bp))"},
        {"@0X10", "@0x10"},      {"@sym+0x10", "@sym+16"},   {"@sym-1", "@sym-1"},
        {"@sym+0", "@sym"},      {"$comm", "$comm"},         {"$pid", "$pid"},
        {"$tid", "$tid"},        {"$duration", "$duration"}, {"@entry(%di)", "@entry(%di)"},
        {"$params", "$params"},  {"$vars", "$vars"},         {"*p->next[2].x", "*p->next[2].x"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c[0]);
        EXPECT_EQ(to_string(fetch_of(c[0])), c[1]);
    }
}

}  // namespace
}  // namespace uprobe
