// Jump patches and trampolines, run for real in this process: small
// hand-assembled functions (encodings from the SDM, checked with objdump)
// are copied into an executable buffer, patched with the generated jump,
// and called; the handler records what the trampoline handed it.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "arch/x86_64/trampoline.hpp"

namespace uprobe::arch {
namespace {

struct Seen {
    int calls = 0;
    uint64_t frame[kFrameGeneralWords] = {};
    uint64_t xmm0 = 0;
    uint64_t argument = 0;
    uint32_t index = 0;
} g_seen;

extern "C" void record_hit(const uint64_t* frame, uint64_t argument, uint32_t index) {
    ++g_seen.calls;
    std::memcpy(g_seen.frame, frame, sizeof g_seen.frame);
    std::memcpy(&g_seen.xmm0, reinterpret_cast<const uint8_t*>(frame) + kFrameXmmOffset, 8);
    g_seen.argument = argument;
    g_seen.index = index;
}

// user_regs_struct slots.
constexpr int kRsi = 13, kRdi = 14, kRip = 16, kRsp = 19;

class Buffer {
public:
    Buffer() {
        void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        base_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
    }
    ~Buffer() {
        if (base_) munmap(base_, kSize);
    }
    uint8_t* at(size_t offset) { return base_ + offset; }
    uint64_t address(size_t offset) { return reinterpret_cast<uint64_t>(base_ + offset); }

    // Places `code` at offset 0, patches `site_offset` to a trampoline at
    // 4096 and returns the function's address.
    // `handler` and `return_code`: see TrampolineRequest (0: record_hit, none).
    void* patch(const std::vector<uint8_t>& code, size_t site_offset, bool vectors = false, uint64_t counter = 0,
                uint64_t handler = 0, uint64_t return_code = 0) {
        std::memcpy(at(0), code.data(), code.size());
        std::memset(at(code.size()), 0xCC, 64);
        auto displaced = check_jump_site(code, address(0), address(site_offset));
        EXPECT_TRUE(displaced) << displaced.error().message();
        if (!displaced) return nullptr;
        TrampolineRequest r;
        r.site = address(site_offset);
        r.original = std::span<const uint8_t>(at(site_offset), code.size() - site_offset + 16);
        r.displaced = *displaced;
        r.address = address(4096);
        r.handler = handler ? handler : reinterpret_cast<uint64_t>(&record_hit);
        r.return_code = return_code;
        r.argument = 0x1122334455667788;
        r.index = 7;
        r.save_vector_registers = vectors;
        r.counter = counter;
        auto t = make_trampoline(r);
        EXPECT_TRUE(t) << t.error().message();
        if (!t) return nullptr;
        std::memcpy(at(4096), t->code.data(), t->code.size());
        EXPECT_EQ(t->patch.size(), *displaced);
        std::memcpy(at(site_offset), t->patch.data(), t->patch.size());
        landing = t->landing;
        return at(0);
    }
    uint64_t landing = 0;

private:
    static constexpr size_t kSize = 65536;
    uint8_t* base_ = nullptr;
};

TEST(Trampoline, EntryProbeSeesArgumentsAndTheFunctionStillWorks) {
    Buffer b;
    // push rbp; mov rbp, rsp; lea rax, [rdi+rsi]; pop rbp; ret
    std::vector<uint8_t> code = {0x55, 0x48, 0x89, 0xE5, 0x48, 0x8D, 0x04, 0x37, 0x5D, 0xC3};
    auto* f = reinterpret_cast<long (*)(long, long)>(b.patch(code, 0));
    ASSERT_NE(f, nullptr);
    g_seen = {};
    EXPECT_EQ(f(30, 12), 42);
    EXPECT_EQ(f(-5, 2), -3);
    EXPECT_EQ(g_seen.calls, 2);
    EXPECT_EQ(g_seen.frame[kRdi], uint64_t(-5));
    EXPECT_EQ(g_seen.frame[kRsi], 2u);
    EXPECT_EQ(g_seen.frame[kRip], b.address(0));
    EXPECT_EQ(g_seen.frame[kRsp] % 16, 8u) << "rsp at entry, below the return address";
    EXPECT_EQ(g_seen.argument, 0x1122334455667788u);
    EXPECT_EQ(g_seen.index, 7u);
}

TEST(Trampoline, RedZoneOfALeafFunctionSurvives) {
    Buffer b;
    // mov [rsp-8], rdi; <site> mov rax, [rsp-8]; ret
    std::vector<uint8_t> code = {0x48, 0x89, 0x7C, 0x24, 0xF8, 0x48, 0x8B, 0x44, 0x24, 0xF8, 0xC3};
    auto* f = reinterpret_cast<long (*)(long)>(b.patch(code, 5));
    ASSERT_NE(f, nullptr);
    g_seen = {};
    EXPECT_EQ(f(0x5eed), 0x5eed);
    EXPECT_EQ(g_seen.calls, 1);
    EXPECT_EQ(g_seen.frame[kRip], b.address(5));
}

TEST(Trampoline, FlagsSurviveTheHandler) {
    Buffer b;
    // cmp rdi, rsi; <site> setl al; movzx eax, al; ret
    std::vector<uint8_t> code = {0x48, 0x39, 0xF7, 0x0F, 0x9C, 0xC0, 0x0F, 0xB6, 0xC0, 0xC3};
    auto* f = reinterpret_cast<int (*)(long, long)>(b.patch(code, 3));
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f(1, 2), 1);
    EXPECT_EQ(f(2, 1), 0);
    EXPECT_EQ(f(-1, 0), 1);
}

TEST(Trampoline, RipRelativeDisplacedInstructionReadsTheOriginalData) {
    Buffer b;
    // mov rax, [rip+0x100] (reads offset 7+0x100); ret
    std::vector<uint8_t> code = {0x48, 0x8B, 0x05, 0x00, 0x01, 0x00, 0x00, 0xC3};
    uint64_t value = 0xfeedface12345678;
    std::memcpy(b.at(7 + 0x100), &value, 8);
    auto* f = reinterpret_cast<uint64_t (*)()>(b.patch(code, 0));
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f(), value);
}

TEST(Trampoline, VectorRegistersAreSavedForTheHandler) {
    Buffer b;
    // movq rax, xmm0; ret
    std::vector<uint8_t> code = {0x66, 0x48, 0x0F, 0x7E, 0xC0, 0xC3};
    auto* f = reinterpret_cast<uint64_t (*)(double)>(b.patch(code, 0, true));
    ASSERT_NE(f, nullptr);
    double x = 1.5;
    uint64_t bits;
    std::memcpy(&bits, &x, 8);
    g_seen = {};
    // The vector registers are saved for the handler to read, not put back
    // after it: the handler must leave them alone (the agent is built with
    // -mgeneral-regs-only), which this test's handler need not, so what f
    // returns is not asserted.
    (void)f(x);
    EXPECT_EQ(g_seen.xmm0, bits);
}

TEST(Trampoline, CountingTrampolineCountsAndKeepsFlagsAndRax) {
    Buffer b;
    uint64_t counter = 0;
    // cmp rdi, rsi; <site> setl al; movzx eax, al; ret
    std::vector<uint8_t> code = {0x48, 0x39, 0xF7, 0x0F, 0x9C, 0xC0, 0x0F, 0xB6, 0xC0, 0xC3};
    auto* f = reinterpret_cast<int (*)(long, long)>(b.patch(code, 3, false, reinterpret_cast<uint64_t>(&counter)));
    ASSERT_NE(f, nullptr);
    g_seen = {};
    EXPECT_EQ(f(1, 2), 1);
    EXPECT_EQ(f(2, 1), 0);
    EXPECT_EQ(f(-1, 0), 1);
    EXPECT_EQ(counter, 3u);
    EXPECT_EQ(g_seen.calls, 0) << "a counting trampoline calls no handler";
}

// A return probe by call: the entry handler takes the return address
// (returns 1), the trampoline calls the displaced instructions, the
// function returns to the landing, which goes to a kRet return
// trampoline, whose handler puts the address back for its ret.
struct Taken {
    int entries = 0, returns = 0;
    uint64_t original = 0, slot_at_entry = 0, slot_at_return = 0, landing_seen = 0, rax = 0;
} g_taken;

extern "C" uint32_t take_return(const uint64_t* frame, uint64_t, uint32_t) {
    ++g_taken.entries;
    g_taken.slot_at_entry = frame[kRsp];
    g_taken.original = *reinterpret_cast<const uint64_t*>(frame[kRsp]);
    return 1;
}

extern "C" void give_return(uint64_t* frame, uint64_t, uint32_t) {
    ++g_taken.returns;
    g_taken.slot_at_return = frame[kRsp];
    g_taken.landing_seen = *reinterpret_cast<uint64_t*>(frame[kRsp]);
    g_taken.rax = frame[10];
    *reinterpret_cast<uint64_t*>(frame[kRsp]) = g_taken.original;
}

TEST(Trampoline, ReturnByCallComesBackThroughTheLanding) {
    Buffer b;
    auto ret_code = make_return_trampoline(b.address(8192), reinterpret_cast<uint64_t>(&give_return), 0,
                                           ReturnExit::kRet, false);
    std::memcpy(b.at(8192), ret_code.data(), ret_code.size());
    // push rbp; mov rbp, rsp; lea rax, [rdi+rsi]; pop rbp; ret
    std::vector<uint8_t> code = {0x55, 0x48, 0x89, 0xE5, 0x48, 0x8D, 0x04, 0x37, 0x5D, 0xC3};
    auto* f = reinterpret_cast<long (*)(long, long)>(
        b.patch(code, 0, false, 0, reinterpret_cast<uint64_t>(&take_return), b.address(8192)));
    ASSERT_NE(f, nullptr);
    ASSERT_NE(b.landing, 0u);
    g_taken = {};
    EXPECT_EQ(f(30, 12), 42);
    EXPECT_EQ(f(-5, 2), -3);
    EXPECT_EQ(g_taken.entries, 2);
    EXPECT_EQ(g_taken.returns, 2);
    EXPECT_EQ(g_taken.slot_at_return, g_taken.slot_at_entry) << "the landing's address sits where the caller's was";
    EXPECT_EQ(g_taken.landing_seen, b.landing);
    EXPECT_EQ(g_taken.rax, uint64_t(-3));
}

TEST(Trampoline, ReturnCodeUnusedWhenTheHandlerKeepsTheAddress) {
    Buffer b;
    // push rbp; mov rbp, rsp; lea rax, [rdi+rsi]; pop rbp; ret
    std::vector<uint8_t> code = {0x55, 0x48, 0x89, 0xE5, 0x48, 0x8D, 0x04, 0x37, 0x5D, 0xC3};
    // record_hit returns nothing: eax is whatever it left, so use a handler returning 0.
    auto keep = +[](const uint64_t*, uint64_t, uint32_t) -> uint32_t { return 0; };
    auto* f = reinterpret_cast<long (*)(long, long)>(
        b.patch(code, 0, false, 0, reinterpret_cast<uint64_t>(keep), b.address(8192)));
    ASSERT_NE(f, nullptr);
    std::memset(b.at(8192), 0xCC, 16);  // reaching the return code would trap
    EXPECT_EQ(f(30, 12), 42);
}

// Instruction-mode return probes: hooks on the rets among the displaced
// instructions, called with the registers as the ret sees them.
struct Exits {
    int entries = 0, exits = 0;
    uint64_t entry_rsp = 0, exit_rsp = 0, exit_rip = 0, exit_rax = 0;
} g_exits;

extern "C" void count_hooks(const uint64_t* frame, uint64_t, uint32_t index) {
    if (index == 1) {
        ++g_exits.entries;
        g_exits.entry_rsp = frame[kRsp];
    } else {
        ++g_exits.exits;
        g_exits.exit_rsp = frame[kRsp];
        g_exits.exit_rip = frame[kRip];
        g_exits.exit_rax = frame[10];  // rax
    }
}

// Patches `code` (at offset 0 of `b`) at `site` with displaced bytes
// through `through`, exit hooks (index 2) on `rets`.
void* patch_with_exits(Buffer& b, const std::vector<uint8_t>& code, size_t site, size_t through,
                       const std::vector<size_t>& rets, bool entry) {
    std::memcpy(b.at(0), code.data(), code.size());
    std::memset(b.at(code.size()), 0xCC, 64);
    auto displaced = check_jump_site({CodeRange{b.address(0), code}}, b.address(site), nullptr, b.address(through));
    EXPECT_TRUE(displaced) << displaced.error().message();
    if (!displaced) return nullptr;
    EXPECT_EQ(*displaced, through - site);
    TrampolineRequest r;
    r.site = b.address(site);
    r.original = std::span<const uint8_t>(b.at(site), code.size() - site + 16);
    r.displaced = *displaced;
    r.address = b.address(4096);
    r.handler = reinterpret_cast<uint64_t>(&count_hooks);
    r.index = 1;
    r.entry = entry;
    for (size_t ret : rets) r.exits.push_back({b.address(ret), 2});
    auto t = make_trampoline(r);
    EXPECT_TRUE(t) << t.error().message();
    if (!t) return nullptr;
    std::memcpy(b.at(4096), t->code.data(), t->code.size());
    std::memcpy(b.at(site), t->patch.data(), t->patch.size());
    return b.at(0);
}

TEST(Trampoline, ExitHookSeesTheRetsRegistersAndTheRetRunsInTheTrampoline) {
    Buffer b;
    // push rbp; mov rbp, rsp; lea rax, [rdi+rsi]; pop rbp; ret: the whole
    // function displaced, entry and exit hooked.
    std::vector<uint8_t> code = {0x55, 0x48, 0x89, 0xE5, 0x48, 0x8D, 0x04, 0x37, 0x5D, 0xC3};
    auto* f = reinterpret_cast<long (*)(long, long)>(patch_with_exits(b, code, 0, 10, {9}, true));
    ASSERT_NE(f, nullptr);
    g_exits = {};
    EXPECT_EQ(f(30, 12), 42);
    EXPECT_EQ(f(-5, 2), -3);
    EXPECT_EQ(g_exits.entries, 2);
    EXPECT_EQ(g_exits.exits, 2);
    EXPECT_EQ(g_exits.exit_rax, uint64_t(-3));
    EXPECT_EQ(g_exits.exit_rsp, g_exits.entry_rsp) << "the ret's rsp is the entry's";
    EXPECT_EQ(g_exits.exit_rip, b.address(9));
}

TEST(Trampoline, ExitOnlySiteEndsWithTheRet) {
    Buffer b;
    // Two paths, each to its own ret; the site (5..11) hooks the first:
    //    0: cmp rdi, rsi   3: jl 11   5: lea rax, [rdi+rsi]   9: nop   10: ret
    //   11: mov rax, rsi  14: ret
    std::vector<uint8_t> code = {0x48, 0x39, 0xF7, 0x7C, 0x06, 0x48, 0x8D, 0x04, 0x37,
                                 0x90, 0xC3, 0x48, 0x89, 0xF0, 0xC3};
    auto* f = reinterpret_cast<long (*)(long, long)>(patch_with_exits(b, code, 5, 11, {10}, false));
    ASSERT_NE(f, nullptr);
    g_exits = {};
    EXPECT_EQ(f(30, 12), 42);  // through the hooked ret
    EXPECT_EQ(f(1, 7), 7);     // the other ret, not hooked
    EXPECT_EQ(g_exits.entries, 0);
    EXPECT_EQ(g_exits.exits, 1);
    EXPECT_EQ(g_exits.exit_rax, 42u);
    EXPECT_EQ(g_exits.exit_rip, b.address(10));
}

TEST(JumpSite, ThroughARetRefusedWhenABranchLandsBeforeIt) {
    const uint64_t at = 0x1000;
    // The function of ExitOnlySiteEndsWithTheRet: jl's target (11) may end
    // a range, not lie inside one.
    std::vector<uint8_t> code = {0x48, 0x39, 0xF7, 0x7C, 0x06, 0x48, 0x8D, 0x04, 0x37,
                                 0x90, 0xC3, 0x48, 0x89, 0xF0, 0xC3};
    EXPECT_TRUE(check_jump_site({CodeRange{at, code}}, at + 5, nullptr, at + 11));
    EXPECT_FALSE(check_jump_site({CodeRange{at, code}}, at, nullptr, at + 15));
    EXPECT_FALSE(check_jump_site({CodeRange{at, code}}, at + 5, nullptr, at + 16)) << "past the function's end";
}

TEST(JumpSite, RefusesWhatAJumpCannotReplace) {
    const uint64_t at = 0x1000;
    // ret: shorter than a jump
    std::vector<uint8_t> tiny = {0xC3};
    auto r = check_jump_site(tiny, at, at);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("ends 1 bytes after"), std::string::npos) << r.error().message();
    // push rbp; mov rbp, rsp; jmp back to +1 (inside the patched bytes): eb f9 at +4 -> +6-7=-1... target 0x1001
    std::vector<uint8_t> loop = {0x55, 0x48, 0x89, 0xE5, 0xEB, 0xFB, 0xC3};
    r = check_jump_site(loop, at, at);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("lands inside"), std::string::npos) << r.error().message();
    // call rel32 first, then more bytes: the call would return inside the patch
    std::vector<uint8_t> call = {0xE8, 0x00, 0x00, 0x00, 0x00, 0x90, 0xC3};
    r = check_jump_site(call, at, at);
    ASSERT_TRUE(r) << "the call is the whole 5 bytes: its return address is after the patch";
    std::vector<uint8_t> nop_call = {0x90, 0xE8, 0x00, 0x00, 0x00, 0x00, 0x90, 0xC3};
    r = check_jump_site(nop_call, at, at);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(*r, 6u);
    std::vector<uint8_t> call_then = {0xE8, 0x00, 0x00, 0x00, 0x00, 0x90, 0xC3};
    r = check_jump_site(call_then, at, at + 0);
    EXPECT_TRUE(r);
    // jmp rax in the function: a jump table could land anywhere
    std::vector<uint8_t> table = {0x55, 0x48, 0x89, 0xE5, 0x90, 0xFF, 0xE0};
    r = check_jump_site(table, at, at);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("indirect jump"), std::string::npos) << r.error().message();
}

// A switch's jump table (gcc -O2 -fpie's form): the jump is safe when no
// entry lands inside the patched bytes, which only the table says.
TEST(JumpSite, JumpTableEntriesAreBranchTargetsToo) {
    const uint64_t at = 0x1000;
    const std::vector<uint8_t> code = {
        0x48, 0x83, 0xff, 0x06,                    // 1000: cmp rdi, 6      <- site: displaces cmp + ja
        0x77, 0x10,                                // 1004: ja 0x1016
        0x48, 0x8d, 0x15, 0x00, 0x10, 0x00, 0x00,  // 1006: lea rdx, [rip + 0x1000]  (table at 0x200d)
        0x48, 0x63, 0x04, 0xba,                    // 100d: movsxd rax, dword [rdx + rdi*4]
        0x48, 0x01, 0xd0,                          // 1011: add rax, rdx
        0xff, 0xe0,                                // 1014: jmp rax
        0x31, 0xc0,                                // 1016: xor eax, eax
        0xc3,                                      // 1018: ret
    };
    std::vector<uint64_t> targets(7, 0x1016);
    std::vector<uint8_t> table;
    auto reader = [&](const JumpTable& t) -> Result<std::span<const uint8_t>> {
        EXPECT_EQ(t.table, 0x200du);
        EXPECT_EQ(t.entries, 7u);
        table.clear();
        for (uint64_t target : targets) {
            const auto offset = static_cast<uint32_t>(static_cast<int32_t>(target - 0x200d));
            for (int i = 0; i < 4; ++i) table.push_back(static_cast<uint8_t>(offset >> (8 * i)));
        }
        return std::span<const uint8_t>(table);
    };
    const std::vector<CodeRange> parts = {{at, code}};
    auto r = check_jump_site(parts, at, reader);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(*r, 6u);
    targets[3] = 0x1004;  // the ja, inside the 6 patched bytes
    r = check_jump_site(parts, at, reader);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("jump table"), std::string::npos) << r.error().message();
    // Without the table the jump is refused, as before.
    r = check_jump_site(parts, at);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("indirect jump"), std::string::npos) << r.error().message();
    // A table that cannot be read: refused with the reader's reason.
    r = check_jump_site(parts, at, [](const JumpTable&) -> Result<std::span<const uint8_t>> { return Error("relocated"); });
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("relocated"), std::string::npos) << r.error().message();
}

// gcc moves unlikely paths to NAME.cold, which may jump back anywhere in
// the body, the patched bytes included.
TEST(JumpSite, BranchesOfTheColdPartCount) {
    const uint64_t at = 0x1000;
    // push rbp; mov rbp, rsp; nop; ret
    const std::vector<uint8_t> body = {0x55, 0x48, 0x89, 0xE5, 0x90, 0x90, 0xC3};
    // 0x5000: jmp 0x1001 (rel32: 0x1001 - 0x5005)
    const auto rel = static_cast<uint32_t>(static_cast<int32_t>(0x1001 - 0x5005));
    const std::vector<uint8_t> cold = {0xE9, static_cast<uint8_t>(rel), static_cast<uint8_t>(rel >> 8),
                                       static_cast<uint8_t>(rel >> 16), static_cast<uint8_t>(rel >> 24)};
    auto r = check_jump_site({{at, body}, {0x5000, cold}}, at);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("0x5000"), std::string::npos) << r.error().message();
    EXPECT_TRUE(check_jump_site({{at, body}}, at));
}

}  // namespace
}  // namespace uprobe::arch
