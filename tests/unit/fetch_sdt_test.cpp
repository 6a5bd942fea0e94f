// SDT marker arguments compiled into fetch programs and evaluated against
// hand-made registers and memory. The argument specs are the ones gcc's
// sys/sdt.h wrote for tests/targets/usdt_args.c (readelf -n) at -O0 and -O2.
#include <sys/user.h>

#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "elf/sdt.hpp"
#include "probe/fetch.hpp"

namespace uprobe::probe {
namespace {

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

template <class T>
std::string bytes_of(T v) {
    return std::string(reinterpret_cast<const char*>(&v), sizeof v);
}

// A site at a marker whose note says `args_text`; args are parsed as the
// ELF reader does (all or nothing).
Site marker_site(const std::string& args_text) {
    elf::SdtMarker marker;
    marker.provider = "usdt";
    marker.name = "m";
    marker.args_text = args_text;
    if (auto args = elf::parse_sdt_args(args_text)) marker.args = *args;
    Site site;
    site.marker = marker;
    return site;
}

Result<FetchProgram> compile(const std::string& probe_text, const Site* site) {
    ParsedSpec parsed = parse_probe_spec(probe_text);
    if (!parsed.spec || parsed.spec->args.empty()) return Error("cannot parse '" + probe_text + "'");
    CompileContext context;
    context.site = site;
    return compile_fetch(parsed.spec->args[0], context);
}

Value run(const std::string& probe_text, const Site* site, const user_regs_struct& regs, MemoryReader& memory) {
    auto program = compile(probe_text, site);
    if (!program) {
        ADD_FAILURE() << program.error().message();
        return {};
    }
    return evaluate(*program, regs, memory, {});
}

TEST(FetchSdt, StackSlotsKeepTheirSizeAndSignedness) {
    Site site = marker_site("-1@-1(%rbp) -2@-4(%rbp) -4@-8(%rbp) -8@-16(%rbp) 1@-17(%rbp) 2@-20(%rbp) 4@-24(%rbp) "
                            "8@-32(%rbp) 8@-40(%rbp)");
    ASSERT_EQ(site.marker->args.size(), 9u);
    user_regs_struct regs{};
    regs.rbp = 0x8000;
    FakeMemory memory;
    // The frame as the target's stores leave it; neighbouring bytes hold
    // junk (0x5a) that a too-wide read would pick up.
    std::string frame(64, '\x5a');
    auto store = [&](int offset, const std::string& bytes) { frame.replace(64 + offset, bytes.size(), bytes); };
    store(-1, bytes_of<int8_t>(-3));
    store(-4, bytes_of<int16_t>(-302));
    store(-8, bytes_of<int32_t>(-70002));
    store(-16, bytes_of<int64_t>(-5000000002));
    store(-17, bytes_of<uint8_t>(202));
    store(-20, bytes_of<uint16_t>(65002));
    store(-24, bytes_of<uint32_t>(4000000002u));
    store(-32, bytes_of<uint64_t>(18000000000000000002ull));
    store(-40, bytes_of<uint64_t>(0x5000));
    memory.put(0x8000 - 64, frame);
    memory.put(0x5000, std::string("gamma\0", 6));
    EXPECT_EQ(run("sdt:usdt:m $arg1", &site, regs, memory).i, -3);
    EXPECT_EQ(run("sdt:usdt:m $arg2", &site, regs, memory).i, -302);
    EXPECT_EQ(run("sdt:usdt:m $arg3", &site, regs, memory).i, -70002);
    EXPECT_EQ(run("sdt:usdt:m $arg4", &site, regs, memory).i, -5000000002);
    EXPECT_EQ(run("sdt:usdt:m $arg5", &site, regs, memory).u, 202u);
    EXPECT_EQ(run("sdt:usdt:m $arg6", &site, regs, memory).u, 65002u);
    EXPECT_EQ(run("sdt:usdt:m $arg7", &site, regs, memory).u, 4000000002u);
    EXPECT_EQ(run("sdt:usdt:m $arg8", &site, regs, memory).u, 18000000000000000002ull);
    EXPECT_EQ(run("sdt:usdt:m $arg1", &site, regs, memory).kind, Value::Kind::Signed);
    EXPECT_EQ(run("sdt:usdt:m $arg5", &site, regs, memory).kind, Value::Kind::Unsigned);
    // The argument is the char* stored in the slot: the string is where it
    // points, not in the slot itself.
    EXPECT_EQ(run("sdt:usdt:m $arg9:string", &site, regs, memory).text, "gamma");
}

TEST(FetchSdt, RegistersAndIndexedMemory) {
    Site site = marker_site("-1@%r9b -2@%si -4@%edi -8@%r8 1@%r10b 2@%r11w 4@%ebx 8@%rcx 8@(%rdx,%rax,8)");
    ASSERT_EQ(site.marker->args.size(), 9u);
    user_regs_struct regs{};
    regs.r9 = 0x12345600 | 0xfd;           // -3 in the low byte
    regs.rsi = 0xabcd0000 | 0xfed2;        // -302 in the low word
    regs.rdi = 0x7700000000 | 0xfffeee8e;  // -70002 in the low dword
    regs.r8 = static_cast<uint64_t>(-5000000002);
    regs.r10 = 0xff00 | 202;
    regs.r11 = 0xff0000 | 65002;
    regs.rbx = 0x100000000 | 4000000002u;
    regs.rcx = 18000000000000000002ull;
    regs.rdx = 0x6000;
    regs.rax = 2;
    FakeMemory memory;
    memory.put(0x6000 + 16, bytes_of<uint64_t>(0x5000));
    memory.put(0x5000, std::string("gamma\0", 6));
    EXPECT_EQ(run("sdt:usdt:m $arg1", &site, regs, memory).i, -3);
    EXPECT_EQ(run("sdt:usdt:m $arg2", &site, regs, memory).i, -302);
    EXPECT_EQ(run("sdt:usdt:m $arg3", &site, regs, memory).i, -70002);
    EXPECT_EQ(run("sdt:usdt:m $arg4", &site, regs, memory).i, -5000000002);
    EXPECT_EQ(run("sdt:usdt:m $arg5", &site, regs, memory).u, 202u);
    EXPECT_EQ(run("sdt:usdt:m $arg6", &site, regs, memory).u, 65002u);
    EXPECT_EQ(run("sdt:usdt:m $arg7", &site, regs, memory).u, 4000000002u);
    EXPECT_EQ(run("sdt:usdt:m $arg8", &site, regs, memory).u, 18000000000000000002ull);
    EXPECT_EQ(run("sdt:usdt:m $arg9:string", &site, regs, memory).text, "gamma");
}

TEST(FetchSdt, OneUnreadableArgumentSpoilsOnlyItself) {
    Site site = marker_site("8@%fs:0x28 -4@%edi");
    ASSERT_TRUE(site.marker->args.empty());  // the ELF reader gave up on the whole note
    user_regs_struct regs{};
    regs.rdi = 0xfffffff9;
    FakeMemory memory;
    EXPECT_EQ(run("sdt:usdt:m $arg2", &site, regs, memory).i, -7);
    auto first = compile("sdt:usdt:m $arg1", &site);
    ASSERT_FALSE(first.ok());
    EXPECT_EQ(first.error().message(),
              "arg 'arg1': marker usdt:m: SDT argument \"8@%fs:0x28\": segment-relative operands are not supported");
    auto third = compile("sdt:usdt:m $arg3", &site);
    ASSERT_FALSE(third.ok());
    EXPECT_EQ(third.error().message(), "arg 'arg3': marker usdt:m has 2 arguments, so there is no $arg3");
    Site one = marker_site("-4@%edi");
    auto second = compile("sdt:usdt:m $arg2", &one);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.error().message(), "arg 'arg2': marker usdt:m has 1 argument, so there is no $arg2");
}

// Outside markers, $argN and $stackN are values too: :string follows them.
TEST(FetchSdt, StringOfAStackArgumentFollowsThePointer) {
    user_regs_struct regs{};
    regs.rsp = 0x2000;
    FakeMemory memory;
    memory.put(0x2000, bytes_of<uint64_t>(0) + bytes_of<uint64_t>(0x5000));
    memory.put(0x5000, std::string("seventh\0", 8));
    EXPECT_EQ(run("f $arg7:string", nullptr, regs, memory).text, "seventh");
    EXPECT_EQ(run("f $stack1:string", nullptr, regs, memory).text, "seventh");
    // Kernel-style memory fetches still name the string's own address.
    regs.rdi = 0x5000;
    EXPECT_EQ(run("f +0(%di):string", nullptr, regs, memory).text, "seventh");
}

}  // namespace
}  // namespace uprobe::probe
