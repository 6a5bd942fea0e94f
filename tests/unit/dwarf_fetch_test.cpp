// Arguments by DWARF name compiled at real sites of gcc-built targets
// (tests/targets/dw_*.c) and evaluated against synthetic registers and
// memory: no process. Expected layouts come from gcc compiling the same
// struct here (offsetof, sizeof), frame facts from the x86-64 psABI.
#include "probe/dwarf_fetch.hpp"

#include <dwarf.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <map>

#include "dwarf/debug_info.hpp"
#include "elf/binary.hpp"
#include "probe/resolve.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::probe {
namespace {

std::string target(const std::string& name) { return std::string(UPROBE_TARGETS_DIR) + "/" + name; }

// Memory as a set of byte ranges; everything else is unreadable.
class FakeMemory : public MemoryReader {
public:
    void put(uint64_t address, const void* data, size_t size) {
        const auto* bytes = static_cast<const uint8_t*>(data);
        for (size_t i = 0; i < size; ++i) bytes_[address + i] = bytes[i];
    }
    size_t read(uint64_t address, void* out, size_t size) override {
        auto* o = static_cast<uint8_t*>(out);
        for (size_t i = 0; i < size; ++i) {
            auto it = bytes_.find(address + i);
            if (it == bytes_.end()) return i;
            o[i] = it->second;
        }
        return size;
    }

private:
    std::map<uint64_t, uint8_t> bytes_;
};

// The same declarations as dw_args.c, laid out by the compiler of this test.
enum color { RED, GREEN = 5, BLUE };
struct point {
    int x;
    int y;
};
struct request {
    int id;
    unsigned short flags;
    char name[8];
    const char* path;
    struct point where;
    enum color color;
    double weight;
    bool urgent;
    unsigned kind : 3;
    unsigned level : 5;
    struct request* next;
};

class DwarfFetch : public ::testing::Test {
protected:
    // The one site of `probe` in `binary`, and its arguments compiled there.
    Result<std::vector<ArgProgram>> compile(const std::string& binary, const std::string& probe) {
        auto parsed = parse_probe_spec(probe);
        if (!parsed.spec) return Error("bad spec: " + parsed.error->message);
        UPROBE_TRY(auto sites, resolver_.resolve(*parsed.spec, target(binary)));
        if (sites.empty()) return Error("no site");
        site_ = sites.front();
        CompileContext context;
        context.site = &site_;
        DwarfSource source = dwarf_source(resolver_, target(binary));
        std::vector<ArgProgram> out;
        for (const auto& arg : parsed.spec->args) {
            UPROBE_TRY(auto program, compile_arg(arg, context, source));
            out.push_back(std::move(program));
        }
        names_.clear();
        for (const auto& arg : parsed.spec->args) names_.push_back(arg.name);
        return out;
    }
    std::vector<EventArg> evaluate_all(const std::vector<ArgProgram>& programs, const user_regs_struct& regs,
                                       MemoryReader& memory) {
        std::vector<EventArg> out;
        FetchContext context;
        for (size_t i = 0; i < programs.size(); ++i) evaluate_arg(names_[i], programs[i], regs, memory, context, out);
        return out;
    }

    Resolver resolver_;
    Site site_;
    std::vector<std::string> names_;
};

TEST_F(DwarfFetch, CanonicalFrameAddressFollowsThePsAbi) {
    const CallFrames* frames = resolver_.call_frames(target("dw_args"));
    ASSERT_NE(frames, nullptr);
    auto* bin = *resolver_.binary(target("dw_args"));
    auto handle = bin->find_functions("handle");
    ASSERT_EQ(handle.size(), 1u);
    // At the first instruction the return address is at rsp: CFA = rsp + 8.
    auto at_entry = frames->cfa_at(handle[0]->vaddr);
    ASSERT_TRUE(at_entry.ok()) << at_entry.error().message();
    EXPECT_EQ(at_entry->dwarf_register, 7u);
    EXPECT_EQ(at_entry->offset, 8);
    // After push %rbp; mov %rsp,%rbp (-O0 keeps the frame pointer): rbp + 16.
    auto* dwarf = resolver_.debug_info(target("dw_args"));
    ASSERT_NE(dwarf, nullptr);
    auto body = frames->cfa_at(*dwarf->post_prologue(handle[0]->vaddr));
    ASSERT_TRUE(body.ok()) << body.error().message();
    EXPECT_EQ(body->dwarf_register, 6u);
    EXPECT_EQ(body->offset, 16);
    EXPECT_FALSE(frames->cfa_at(0).ok());
}

TEST_F(DwarfFetch, RegisterParametersOfOptimizedCodeAtTheEntry) {
    auto programs = compile("dw_inline", "scale v factor");
    ASSERT_TRUE(programs.ok()) << programs.error().message();
    user_regs_struct regs{};
    regs.rdi = 41;              // psABI: first integer argument
    regs.rsi = uint64_t(-3);    // second, a negative int
    FakeMemory memory;
    auto values = evaluate_all(*programs, regs, memory);
    ASSERT_EQ(values.size(), 2u);
    EXPECT_EQ(values[0].value.kind, Value::Kind::Signed);
    EXPECT_EQ(values[0].value.i, 41);
    EXPECT_EQ(values[1].value.i, -3);
}

TEST_F(DwarfFetch, StructsStringsEnumsAndBitFieldsFromMemory) {
    auto programs = compile("dw_args", "handle r=*req req->name req->path req->next->where.y req->next->color "
                                       "req->next->next->id req->where");
    ASSERT_TRUE(programs.ok()) << programs.error().message();
    const uint64_t first = 0x100000, second = 0x200000, path = 0x300000, rbp = 0x7fff0000;
    request a{};
    a.id = 7;
    a.flags = 0x10;
    std::strcpy(a.name, "first");
    a.path = reinterpret_cast<const char*>(path);
    a.where = {-1, 2};
    a.color = GREEN;
    a.weight = 1.5;
    a.urgent = true;
    a.kind = 5;
    a.level = 9;
    a.next = reinterpret_cast<request*>(second);
    request b{};
    b.where = {3, 4};
    b.color = BLUE;
    b.next = nullptr;
    FakeMemory memory;
    memory.put(first, &a, sizeof a);
    memory.put(second, &b, sizeof b);
    memory.put(path, "/srv/a", 7);
    // Wherever the frame keeps `req`, it holds &a: fill the whole frame.
    for (uint64_t at = rbp - 256; at < rbp + 16; at += 8) memory.put(at, &first, 8);
    user_regs_struct regs{};
    regs.rbp = rbp;
    regs.rsp = rbp - 256;
    auto values = evaluate_all(*programs, regs, memory);
    ASSERT_EQ(values.size(), 7u);
    EXPECT_EQ(values[0].value.text,
              "{id=7, flags=16, name=\"first\", path=\"/srv/a\", where={x=-1, y=2}, color=GREEN, weight=1.5, "
              "urgent=true, kind=5, level=9, next=0x200000}");
    EXPECT_EQ(values[1].value.kind, Value::Kind::String);
    EXPECT_EQ(values[1].value.text, "first");
    EXPECT_EQ(values[2].value.text, "/srv/a");
    EXPECT_EQ(values[3].value.i, 4);
    EXPECT_EQ(values[4].value.text, "BLUE");
    // A NULL on the way is that value's error, not the probe's.
    EXPECT_EQ(values[5].value.kind, Value::Kind::Error);
    EXPECT_EQ(values[5].value.text, "bad address 0x0");
    EXPECT_EQ(values[6].value.text, "{x=-1, y=2}");
}

TEST_F(DwarfFetch, MistakesFailAtCompileTimeWithOneLine) {
    auto missing = compile("dw_args", "handle nosuch");
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().message(),
              "arg 'nosuch': no variable 'nosuch' at handle+" + std::to_string(site_.function_offset) +
                  "; in scope: req, count, label, tag, ratio, total, scaled");
    auto dot = compile("dw_args", "handle req.id");
    ASSERT_FALSE(dot.ok());
    EXPECT_EQ(dot.error().message(), "arg 'req_id': 'req' is a pointer: write req->id");
    auto arrow = compile("dw_args", "by_value p->x");
    ASSERT_FALSE(arrow.ok());
    EXPECT_EQ(arrow.error().message(), "arg 'p_x': 'p' is not a pointer: write p.x");
    auto index = compile("dw_args", "handle count[1]");
    ASSERT_FALSE(index.ok());
    EXPECT_NE(index.error().message().find("'count' is int, not a pointer"), std::string::npos)
        << index.error().message();
    auto syntax = compile("dw_args", "handle x=req->");
    ASSERT_FALSE(syntax.ok());
    EXPECT_NE(syntax.error().message().find("expected a field name"), std::string::npos) << syntax.error().message();
}

TEST_F(DwarfFetch, PlainArgumentsCompileAsBefore) {
    auto programs = compile("dw_args", "handle a=%di");
    ASSERT_TRUE(programs.ok()) << programs.error().message();
    ASSERT_EQ(programs->size(), 1u);
    EXPECT_FALSE((*programs)[0].is_dwarf);
    user_regs_struct regs{};
    regs.rdi = 99;
    FakeMemory memory;
    auto values = evaluate_all(*programs, regs, memory);
    EXPECT_EQ(values[0].value.u, 99u);
}

// Location expressions as bytes in, values out: synthetic DWARF operations
// and types, synthetic registers and memory.
class Locations : public ::testing::Test {
protected:
    Locations() {
        int_type.kind = dwarf::Type::Kind::Base;
        int_type.name = "int";
        int_type.byte_size = 4;
        int_type.encoding = dwarf::Type::Encoding::Signed;
        long_type = int_type;
        long_type.name = "long";
        long_type.byte_size = 8;
        point.kind = dwarf::Type::Kind::Struct;
        point.name = "struct point";
        point.byte_size = 8;
        point.members = {{"x", 0, &int_type, 0, 0}, {"y", 4, &int_type, 0, 0}};
    }
    static dwarf::DebugInfo::Op op(uint8_t atom, uint64_t number = 0, uint64_t number2 = 0) {
        dwarf::DebugInfo::Op o;
        o.atom = atom;
        o.number = number;
        o.number2 = number2;
        return o;
    }
    Value value_of(const dwarf::Type* type, std::vector<dwarf::DebugInfo::Op> location, VariableSite site = {}) {
        dwarf::DebugInfo::Variable v;
        v.name = "v";
        v.type = type;
        v.location = std::move(location);
        ArgProgram program;
        program.is_dwarf = true;
        program.values.emplace_back("v", compile_variable(v, site));
        std::vector<EventArg> out;
        evaluate_arg("v", program, regs, memory, FetchContext{}, out);
        return out.at(0).value;
    }
    dwarf::Type int_type, long_type, point;
    user_regs_struct regs{};
    FakeMemory memory;
};

TEST_F(Locations, AStructInOneRegisterOrInRegisterPieces) {
    regs.rdi = (uint64_t{2} << 32) | 0xffffffffu;
    EXPECT_EQ(value_of(&point, {op(DW_OP_reg5)}).text, "{x=-1, y=2}");
    regs.rdi = 0x12345678ffffffffu;  // only the low 4 bytes are x
    regs.rsi = 0xabcdef0000000002u;
    EXPECT_EQ(value_of(&point, {op(DW_OP_reg5), op(DW_OP_piece, 4), op(DW_OP_reg4), op(DW_OP_piece, 4)}).text,
              "{x=-1, y=2}");
    // A piece with no location is that field's "optimized out".
    EXPECT_EQ(value_of(&point, {op(DW_OP_piece, 4), op(DW_OP_reg4), op(DW_OP_piece, 4)}).text,
              "{x=(optimized out), y=2}");
}

TEST_F(Locations, ComputedValuesConstantsAndAddresses) {
    // gcc -O2's "(long) (int) rbx * 3".
    std::vector<dwarf::DebugInfo::Op> times3 = {op(DW_OP_breg3, 0), op(DW_OP_const1u, 32), op(DW_OP_shl),
                                                op(DW_OP_const1u, 32), op(DW_OP_shra), op(DW_OP_lit3),
                                                op(DW_OP_mul), op(DW_OP_stack_value)};
    regs.rbx = 0xdeadbeef00000007u;
    EXPECT_EQ(value_of(&long_type, times3).i, 21);
    regs.rbx = 0x00000000fffffffbu;  // -5 as an int
    EXPECT_EQ(value_of(&long_type, times3).i, -15);

    auto implicit = op(DW_OP_implicit_value, 4);
    implicit.block = {0x40, 0xe2, 0x01, 0x00};  // 123456
    EXPECT_EQ(value_of(&int_type, {implicit}).i, 123456);
    EXPECT_EQ(value_of(&int_type, {op(DW_OP_lit31), op(DW_OP_stack_value)}).i, 31);

    int32_t stored = -77;
    memory.put(0x5000, &stored, 4);
    VariableSite loaded;
    loaded.load_bias = 0x1000;  // DW_OP_addr is link-time
    EXPECT_EQ(value_of(&int_type, {op(DW_OP_addr, 0x4000)}, loaded).i, -77);
    regs.rbp = 0x5010;
    EXPECT_EQ(value_of(&int_type, {op(DW_OP_breg6, uint64_t(-16))}).i, -77);
}

TEST_F(Locations, EntryValuesOnlyAtTheEntry) {
    auto entry = op(DW_OP_entry_value);
    entry.nested = {op(DW_OP_reg5)};
    regs.rdi = 42;
    VariableSite at_entry;
    at_entry.at_function_entry = true;
    EXPECT_EQ(value_of(&int_type, {entry, op(DW_OP_stack_value)}, at_entry).i, 42);
    Value later = value_of(&int_type, {entry, op(DW_OP_stack_value)});
    EXPECT_EQ(later.kind, Value::Kind::Error);
    EXPECT_EQ(later.text, "entry value unavailable");
}

TEST_F(Locations, WhatCannotBeCompiledIsAnErrorValueNeverACrash) {
    EXPECT_EQ(value_of(&int_type, {op(DW_OP_plus)}).kind, Value::Kind::Error);
    Value unsupported = value_of(&int_type, {op(DW_OP_GNU_variable_value, 0x1234)});
    EXPECT_EQ(unsupported.kind, Value::Kind::Error);
    EXPECT_NE(unsupported.text.find("unsupported location"), std::string::npos) << unsupported.text;
    Value no_cfa = value_of(&int_type, {op(DW_OP_call_frame_cfa)});
    EXPECT_EQ(no_cfa.kind, Value::Kind::Error);
    Value unreadable = value_of(&int_type, {op(DW_OP_breg5, 0)});  // rdi = 0
    EXPECT_EQ(unreadable.text, "bad address 0x0");
    EXPECT_EQ(value_of(nullptr, {op(DW_OP_reg5)}).kind, Value::Kind::Error);
    // Every operation on an empty stack, alone: no crash, a value or an error.
    for (int atom = 0; atom < 0x100; ++atom) (void)value_of(&point, {op(uint8_t(atom), 1, 1)});
}

}  // namespace
}  // namespace uprobe::probe
