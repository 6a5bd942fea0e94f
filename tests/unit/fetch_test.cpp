// Fetch programs compiled from spec text and evaluated against hand-made
// registers and memory whose contents are known by construction.
#include <sys/user.h>

#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "elf/sdt.hpp"
#include "probe/fetch.hpp"

namespace uprobe::probe {
namespace {

// Memory made of a few byte ranges; everything else is unmapped.
class FakeMemory : public MemoryReader {
public:
    void put(uint64_t address, std::string bytes) { ranges_[address] = std::move(bytes); }
    size_t read(uint64_t address, void* out, size_t size) override {
        for (const auto& [start, bytes] : ranges_) {
            if (address >= start && address < start + bytes.size()) {
                size_t n = std::min(size, static_cast<size_t>(start + bytes.size() - address));
                std::memcpy(out, bytes.data() + (address - start), n);
                return n;
            }
        }
        return 0;
    }

private:
    std::map<uint64_t, std::string> ranges_;
};

ArgSpec arg_of(const std::string& probe_text) {
    ParsedSpec parsed = parse_probe_spec(probe_text);
    if (!parsed.spec || parsed.spec->args.empty()) {
        ADD_FAILURE() << "cannot parse '" << probe_text << "'";
        return {};
    }
    return parsed.spec->args[0];
}

Value run(const std::string& probe_text, const user_regs_struct& regs, MemoryReader& memory,
          const CompileContext& context = {}, const FetchContext& fetch = {}) {
    auto program = compile_fetch(arg_of(probe_text), context);
    if (!program) {
        ADD_FAILURE() << program.error().message();
        return {};
    }
    return evaluate(*program, regs, memory, fetch);
}

std::string bytes_of(uint64_t v, size_t n = 8) { return std::string(reinterpret_cast<const char*>(&v), n); }

TEST(Fetch, RegistersAndSubRegisters) {
    user_regs_struct regs{};
    regs.rdi = 0xffffffff00000005;
    regs.rax = 0x1234;
    FakeMemory memory;
    EXPECT_EQ(run("f x=%rdi", regs, memory).u, 0xffffffff00000005u);
    EXPECT_EQ(run("f x=%edi", regs, memory).u, 5u);
    EXPECT_EQ(run("f x=%ah", regs, memory).u, 0x12u);
    EXPECT_EQ(run("f x=%al", regs, memory).u, 0x34u);
    EXPECT_EQ(run("f x=$arg1:s32", regs, memory).i, 5);
    EXPECT_EQ(run("f x=$arg1:x64", regs, memory).kind, Value::Kind::Hex);
}

TEST(Fetch, SignExtensionAndTruncation) {
    user_regs_struct regs{};
    regs.rsi = 0xfffffffe;  // -2 as an int
    FakeMemory memory;
    EXPECT_EQ(run("f x=$arg2:s32", regs, memory).i, -2);
    EXPECT_EQ(run("f x=$arg2:s8", regs, memory).i, -2);
    EXPECT_EQ(run("f x=$arg2:u16", regs, memory).u, 0xfffeu);
    EXPECT_EQ(run("f x=$arg2:s64", regs, memory).i, 0xfffffffe);
}

TEST(Fetch, MemoryStackAndSeventhArgument) {
    user_regs_struct regs{};
    regs.rdi = 0x1000;
    regs.rsp = 0x2000;
    FakeMemory memory;
    memory.put(0x1008, bytes_of(static_cast<uint64_t>(-7)));
    memory.put(0x2000, bytes_of(0x1111) + bytes_of(0x2222) + bytes_of(0x3333));
    EXPECT_EQ(run("f x=+8(%rdi):s32", regs, memory).i, -7);
    EXPECT_EQ(run("f x=+8(%rdi)", regs, memory).u, static_cast<uint64_t>(-7));
    EXPECT_EQ(run("f x=$stack1", regs, memory).u, 0x2222u);
    EXPECT_EQ(run("f x=$arg7", regs, memory).u, 0x2222u);  // above the return address
    EXPECT_EQ(run("f x=$arg8", regs, memory).u, 0x3333u);
}

TEST(Fetch, BadAddressIsAnErrorValue) {
    user_regs_struct regs{};
    regs.rdi = 0x10;
    FakeMemory memory;
    Value v = run("f x=+0(%rdi)", regs, memory);
    EXPECT_EQ(v.kind, Value::Kind::Error);
    EXPECT_EQ(v.text, "bad address 0x10");
    EXPECT_EQ(run("f x=%rdi:string", regs, memory).text, "bad address 0x10");
}

TEST(Fetch, StringsAreBoundedAndMarkedWhenCut) {
    user_regs_struct regs{};
    regs.rdi = 0x5000;
    FakeMemory memory;
    memory.put(0x5000, std::string("hello\0", 6));
    FetchContext context;
    context.string_max = 4;
    Value cut = run("f s=%rdi:string", regs, memory, {}, context);
    EXPECT_EQ(cut.kind, Value::Kind::String);
    EXPECT_EQ(cut.text, "hell");
    EXPECT_TRUE(cut.truncated);
    context.string_max = 64;
    Value whole = run("f s=%rdi:string", regs, memory, {}, context);
    EXPECT_EQ(whole.text, "hello");
    EXPECT_FALSE(whole.truncated);
    // "+0(%rdi):string" is the string at rdi+0, as in the kernel's fetches.
    EXPECT_EQ(run("f s=+0(%rdi):string", regs, memory, {}, context).text, "hello");
}

TEST(Fetch, AddressAndSymbolAddTheLoadBias) {
    user_regs_struct regs{};
    FakeMemory memory;
    memory.put(0x555500004010, bytes_of(99));
    CompileContext context;
    context.load_bias = 0x555500000000;
    context.symbol_address = [](const std::string& name) -> Result<uint64_t> {
        if (name == "counter") return uint64_t{0x4000};
        return Error("no symbol " + name);
    };
    EXPECT_EQ(run("f x=@0x4010", regs, memory, context).u, 99u);
    EXPECT_EQ(run("f x=@counter+16", regs, memory, context).u, 99u);
}

TEST(Fetch, ReturnValueAsDoubleComesFromXmm0) {
    user_regs_struct regs{};
    user_fpregs_struct fp{};
    double d = 2.5;
    std::memcpy(fp.xmm_space, &d, 8);
    FakeMemory memory;
    auto program = compile_fetch(arg_of("f%return r=$retval:f64"), {});
    ASSERT_TRUE(program.ok()) << program.error().message();
    EXPECT_TRUE(program->needs_fpregs);
    FetchContext context;
    context.fpregs = &fp;
    Value v = evaluate(*program, regs, memory, context);
    EXPECT_EQ(v.kind, Value::Kind::Float);
    EXPECT_EQ(v.f, 2.5);
}

TEST(Fetch, SdtArgumentsUseTheMarkerOperands) {
    user_regs_struct regs{};
    regs.rbp = 0x7000;
    regs.rdi = 0xffffffff;
    FakeMemory memory;
    memory.put(0x7000 - 16, bytes_of(static_cast<uint64_t>(-3)));
    Site site;
    elf::SdtMarker marker;
    marker.provider = "p";
    marker.name = "m";
    auto args = elf::parse_sdt_args("-8@-16(%rbp) -4@%edi 4@$7");
    ASSERT_TRUE(args.ok()) << args.error().message();
    marker.args = *args;
    site.marker = marker;
    CompileContext context;
    context.site = &site;
    EXPECT_EQ(run("p:m x=$arg1", regs, memory, context).i, -3);
    EXPECT_EQ(run("p:m x=$arg2", regs, memory, context).i, -1);
    EXPECT_EQ(run("p:m x=$arg3", regs, memory, context).u, 7u);
    auto missing = compile_fetch(arg_of("p:m x=$arg4"), context);
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().message().find("has 3 arguments"), std::string::npos) << missing.error().message();
}

TEST(Fetch, ClearErrors) {
    auto bad = compile_fetch(arg_of("f x=%nosuch"), {});
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find("unknown register 'nosuch'"), std::string::npos) << bad.error().message();
    auto dwarf = compile_fetch(arg_of("f x=count"), {});
    ASSERT_FALSE(dwarf.ok());
    EXPECT_NE(dwarf.error().message().find("not supported yet"), std::string::npos) << dwarf.error().message();
}

TEST(Fetch, ProgramIsAFlatCopyableRecord) {
    static_assert(std::is_trivially_copyable_v<FetchProgram>);
    user_regs_struct regs{};
    regs.rdx = 77;
    FakeMemory memory;
    auto program = compile_fetch(arg_of("f x=$arg3"), {});
    ASSERT_TRUE(program.ok());
    FetchProgram copy;
    std::memcpy(&copy, &*program, sizeof copy);
    EXPECT_EQ(evaluate(copy, regs, memory, {}).u, 77u);
}

}  // namespace
}  // namespace uprobe::probe
