// Return-probe bookkeeping without a traced process: function exits from
// hand-encoded machine code (encodings from the SDM, vol. 2), shadow
// stacks over a "stack" in this process's own memory (process_vm_readv and
// writev work on ourselves), and instruction-mode frames.
#include "engine/ptrace/return_probes.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace uprobe::engine {
namespace {

constexpr uint64_t kStart = 0x1000;

Result<FunctionExits> exits_of(const std::vector<uint8_t>& code, std::vector<CodeRange> more = {}) {
    std::vector<CodeRange> parts = {{kStart, code}};
    parts.insert(parts.end(), more.begin(), more.end());
    return find_function_exits(parts, "f");
}

TEST(FunctionExits, RetsAndDirectTailJumps) {
    // 0x1000: test edi,edi (85 ff); 0x1002: je +3 (74 03) -> 0x1007, inside;
    // 0x1004: mov eax,edi (89 f8); 0x1006: ret (c3);
    // 0x1007: jmp rel32 (e9) to 0x1007 + 5 + 0x100 = 0x110c, outside.
    std::vector<uint8_t> code = {0x85, 0xff, 0x74, 0x03, 0x89, 0xf8, 0xc3, 0xe9, 0x00, 0x01, 0x00, 0x00};
    auto exits = exits_of(code);
    ASSERT_TRUE(exits.ok()) << exits.error().message();
    EXPECT_EQ(exits->returns, (std::vector<uint64_t>{0x1006}));
    ASSERT_EQ(exits->tail_jumps.size(), 1u);
    EXPECT_EQ(exits->tail_jumps[0].address, 0x1007u);
    EXPECT_EQ(exits->tail_jumps[0].target, 0x110cu);
}

TEST(FunctionExits, IndirectJumpIsRefusedWithItsPlace) {
    // 0x1000: nop (90); 0x1001: jmp rax (ff e0).
    auto exits = exits_of({0x90, 0xff, 0xe0});
    ASSERT_FALSE(exits.ok());
    EXPECT_NE(exits.error().message().find("indirect jump at f+1 (0x1001)"), std::string::npos)
        << exits.error().message();
}

TEST(FunctionExits, ConditionalJumpOutIsRefused) {
    // 0x1000: je +0x10 (74 10) -> 0x1012, outside; 0x1002: ret.
    auto exits = exits_of({0x74, 0x10, 0xc3});
    ASSERT_FALSE(exits.ok());
    EXPECT_NE(exits.error().message().find("conditional jump out of the function at f+0"), std::string::npos)
        << exits.error().message();
}

TEST(FunctionExits, ColdPartIsInside) {
    // Body: je rel32 to the cold part at 0x2000 (0f 84 rel32: 0x2000 - 0x1006 = 0xffa);
    // ret. Cold: ret.
    std::vector<uint8_t> body = {0x0f, 0x84, 0xfa, 0x0f, 0x00, 0x00, 0xc3};
    std::vector<uint8_t> cold = {0xc3};
    auto exits = exits_of(body, {{0x2000, cold}});
    ASSERT_TRUE(exits.ok()) << exits.error().message();
    EXPECT_EQ(exits->returns, (std::vector<uint64_t>{0x1006, 0x2000}));
    EXPECT_TRUE(exits->tail_jumps.empty());
}

// A switch on rdi in 0..2 through a relative jump table at 0x2000 (gcc's
// PIC form); the table's three entries are given per test.
struct SwitchFunction {
    std::vector<uint8_t> code = {
        0x48, 0x83, 0xff, 0x02,                    // 1000: cmp rdi, 2
        0x77, 0x15,                                // 1004: ja 0x101b
        0x48, 0x8d, 0x15, 0xf3, 0x0f, 0x00, 0x00,  // 1006: lea rdx, [rip + 0xff3]  (0x2000)
        0x48, 0x63, 0x04, 0xba,                    // 100d: movsxd rax, dword [rdx + rdi*4]
        0x48, 0x01, 0xd0,                          // 1011: add rax, rdx
        0xff, 0xe0,                                // 1014: jmp rax
        0xb8, 0x01, 0x00, 0x00, 0x00,              // 1016: mov eax, 1
        0xc3,                                      // 101b: ret
    };
    std::vector<uint8_t> table;
    bool relocated = false;

    explicit SwitchFunction(std::vector<uint64_t> targets) {
        for (uint64_t target : targets) {
            int32_t offset = static_cast<int32_t>(static_cast<int64_t>(target) - 0x2000);
            for (int i = 0; i < 4; ++i)
                table.push_back(static_cast<uint8_t>(static_cast<uint32_t>(offset) >> (8 * i)));
        }
    }
    Result<FunctionExits> exits() const {
        ObjectData data;
        data.read = [this](uint64_t vaddr, size_t size) -> Result<std::span<const uint8_t>> {
            // As elf::Binary::code: clipped at the end of the file's contents.
            if (vaddr != 0x2000) return Error("not in the file");
            return std::span<const uint8_t>(table).first(std::min(size, table.size()));
        };
        data.relocated = relocated;
        return find_function_exits({{kStart, code}}, "f", &data);
    }
};

TEST(FunctionExits, JumpTableInsideNeedsNoProbe) {
    auto exits = SwitchFunction({0x1016, 0x101b, 0x1016}).exits();
    ASSERT_TRUE(exits.ok()) << exits.error().message();
    EXPECT_EQ(exits->returns, (std::vector<uint64_t>{0x101b}));
    EXPECT_TRUE(exits->tail_jumps.empty());
    EXPECT_TRUE(exits->indirect_tail_jumps.empty());
}

TEST(FunctionExits, JumpTableLeavingIsATailJump) {
    auto exits = SwitchFunction({0x5000, 0x6000, 0x5000}).exits();
    ASSERT_TRUE(exits.ok()) << exits.error().message();
    EXPECT_EQ(exits->indirect_tail_jumps, (std::vector<uint64_t>{0x1014}));
}

TEST(FunctionExits, UnprovableJumpTablesAreRefused) {
    auto refused = [](const SwitchFunction& f, const std::string& why) {
        auto exits = f.exits();
        ASSERT_FALSE(exits.ok());
        EXPECT_NE(exits.error().message().find("indirect jump at f+20 (0x1014)"), std::string::npos)
            << exits.error().message();
        EXPECT_NE(exits.error().message().find(why), std::string::npos) << exits.error().message();
    };
    refused(SwitchFunction({0x1016, 0x1017, 0x101b}), "inside an instruction");
    refused(SwitchFunction({0x1016, 0x6000, 0x101b}), "both inside and outside");
    SwitchFunction short_table({0x1016, 0x101b});  // three entries needed, the file has two
    refused(short_table, "is cut short");
}

TEST(FunctionExits, AbsoluteTableOfARelocatedObjectIsRefused) {
    // cmp rdi, 6; ja 0x100d (the ret); jmp qword [rdi*8 + 0x3000]; ret
    std::vector<uint8_t> code = {0x48, 0x83, 0xff, 0x06, 0x77, 0x07, 0xff,
                                 0x24, 0xfd, 0x00, 0x30, 0x00, 0x00, 0xc3};
    std::vector<uint8_t> table(7 * 8, 0);
    ObjectData data;
    data.read = [&](uint64_t, size_t size) -> Result<std::span<const uint8_t>> {
        return std::span<const uint8_t>(table).first(std::min(size, table.size()));
    };
    data.relocated = true;
    auto exits = find_function_exits({{kStart, code}}, "f", &data);
    ASSERT_FALSE(exits.ok());
    EXPECT_NE(exits.error().message().find("the loader relocates"), std::string::npos)
        << exits.error().message();
}

TEST(FunctionExits, NoExitIsAnError) {
    // ud2 (0f 0b): never returns.
    EXPECT_FALSE(exits_of({0x0f, 0x0b}).ok());
}

ReturnFrame frame_of(const ReturnSite* site) {
    ReturnFrame f;
    f.entry_ns = 1;
    f.returns.push_back(PendingReturn{site, {}});
    return f;
}

// A fake stack in our own memory: slots[i] holds a return address.
class TrampolineStacksTest : public testing::Test {
protected:
    static constexpr uint64_t kTrampoline = 0x7000;
    uint64_t slot(size_t i) { return reinterpret_cast<uint64_t>(&stack_[i]); }
    uint64_t stack_[8] = {0x401000, 0x401100, 0x401200, 0x401300, 0x401400, 0x401500, 0x401600, 0x401700};
    pid_t pid_ = ::getpid();
    pid_t tid_ = ::getpid();
    TrampolineStacks stacks_;
    LostFrames lost_;
    ReturnSite site_;
};

TEST_F(TrampolineStacksTest, NestedEntriesReturnInOrder) {
    // Slots decrease as the stack grows: outer at [6], inner at [4].
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(6), kTrampoline, frame_of(&site_), lost_).ok());
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(4), kTrampoline, frame_of(&site_), lost_).ok());
    EXPECT_EQ(stack_[6], kTrampoline);
    EXPECT_EQ(stack_[4], kTrampoline);
    uint64_t resume = 0;
    auto inner = stacks_.returned(tid_, slot(4) + 8, &resume, lost_);  // rsp after the ret
    ASSERT_EQ(inner.size(), 1u);
    EXPECT_EQ(resume, 0x401400u);
    auto outer = stacks_.returned(tid_, slot(6) + 8, &resume, lost_);
    ASSERT_EQ(outer.size(), 1u);
    EXPECT_EQ(resume, 0x401600u);
    EXPECT_EQ(lost_.abandoned, 0u);
}

TEST_F(TrampolineStacksTest, TailJumpSharesTheSlotAndReturnsCalleeFirst) {
    ReturnSite callee;
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(5), kTrampoline, frame_of(&site_), lost_).ok());
    // The caller jumped: the callee's entry finds the trampoline in the same slot.
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(5), kTrampoline, frame_of(&callee), lost_).ok());
    uint64_t resume = 0;
    auto done = stacks_.returned(tid_, slot(5) + 8, &resume, lost_);
    ASSERT_EQ(done.size(), 2u);
    EXPECT_EQ(done[0].returns[0].site, &callee);
    EXPECT_EQ(done[1].returns[0].site, &site_);
    EXPECT_EQ(resume, 0x401500u);
}

TEST_F(TrampolineStacksTest, LongjmpAbandonsDeeperFramesButNeverLosesTheirReturnAddress) {
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(6), kTrampoline, frame_of(&site_), lost_).ok());
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(3), kTrampoline, frame_of(&site_), lost_).ok());
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(1), kTrampoline, frame_of(&site_), lost_).ok());
    // longjmp to above [3]; a new call then enters with its return address at [5].
    stack_[5] = 0x405000;
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(5), kTrampoline, frame_of(&site_), lost_).ok());
    EXPECT_EQ(lost_.abandoned, 2u);
    uint64_t resume = 0;
    EXPECT_EQ(stacks_.returned(tid_, slot(5) + 8, &resume, lost_).size(), 1u);
    EXPECT_EQ(resume, 0x405000u);
    EXPECT_EQ(stacks_.returned(tid_, slot(6) + 8, &resume, lost_).size(), 1u);
    EXPECT_EQ(resume, 0x401600u);
}

TEST_F(TrampolineStacksTest, UnwindingRestoresAndTheCatchTakesSurvivorsBack) {
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(6), kTrampoline, frame_of(&site_), lost_).ok());  // catcher
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(3), kTrampoline, frame_of(&site_), lost_).ok());  // thrower
    stacks_.unwinding(pid_, tid_, kTrampoline);
    EXPECT_EQ(stack_[6], 0x401600u);
    EXPECT_EQ(stack_[3], 0x401300u);
    // Caught in the frame below [6]: rsp is between [3] and [6].
    stacks_.caught(pid_, tid_, slot(5), kTrampoline, lost_);
    EXPECT_EQ(lost_.unwound, 1u);
    EXPECT_EQ(stack_[6], kTrampoline);
    uint64_t resume = 0;
    EXPECT_EQ(stacks_.returned(tid_, slot(6) + 8, &resume, lost_).size(), 1u);
    EXPECT_EQ(resume, 0x401600u);
}

TEST_F(TrampolineStacksTest, RestorePutsEveryAddressBackAndMovesAThreadOffTheTrampoline) {
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(6), kTrampoline, frame_of(&site_), lost_).ok());
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(2), kTrampoline, frame_of(&site_), lost_).ok());
    // The inner function has just returned onto the trampoline.
    user_regs_struct regs{};
    regs.rip = kTrampoline;
    regs.rsp = slot(2) + 8;
    EXPECT_TRUE(stacks_.restore(pid_, tid_, kTrampoline, &regs));
    EXPECT_EQ(regs.rip, 0x401200u);
    EXPECT_EQ(stack_[6], 0x401600u);
}

// Stubs: one address per original return address; 0x401300 has none (the
// trampoline serves it).
class FakeStubs final : public ReturnStubs {
public:
    uint64_t stub_for(uint64_t original) override {
        if (original == 0x401300) return 0;
        return 0x9000 + (original & 0xfff);
    }
    uint64_t original_of(uint64_t address) const override {
        return address >= 0x9000 && address < 0xa000 ? 0x401000 + (address & 0xfff) : 0;
    }
};

TEST_F(TrampolineStacksTest, StubsReplaceTheTrampolineWhereThereIsOne) {
    FakeStubs stubs;
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(6), kTrampoline, frame_of(&site_), lost_, &stubs).ok());
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(3), kTrampoline, frame_of(&site_), lost_, &stubs).ok());
    EXPECT_EQ(stack_[6], 0x9600u);
    EXPECT_EQ(stack_[3], kTrampoline);  // no stub for 0x401300
    uint64_t resume = 0;
    EXPECT_EQ(stacks_.returned(tid_, slot(3) + 8, &resume, lost_).size(), 1u);
    EXPECT_EQ(resume, 0x401300u);
    // A tail jump finds the stub in the slot: shared, same original.
    ReturnSite callee;
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(6), kTrampoline, frame_of(&callee), lost_, &stubs).ok());
    auto done = stacks_.returned(tid_, slot(6) + 8, &resume, lost_);
    ASSERT_EQ(done.size(), 2u);
    EXPECT_EQ(done[0].returns[0].site, &callee);
    EXPECT_EQ(resume, 0x401600u);
}

TEST_F(TrampolineStacksTest, UnwindingAndRestoreKnowTheStubs) {
    FakeStubs stubs;
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(6), kTrampoline, frame_of(&site_), lost_, &stubs).ok());
    ASSERT_TRUE(stacks_.enter(pid_, tid_, slot(4), kTrampoline, frame_of(&site_), lost_, &stubs).ok());
    stacks_.unwinding(pid_, tid_, kTrampoline);
    EXPECT_EQ(stack_[6], 0x401600u);
    EXPECT_EQ(stack_[4], 0x401400u);
    stacks_.caught(pid_, tid_, slot(5), kTrampoline, lost_);  // [6] survives, hijacked by its stub again
    EXPECT_EQ(stack_[6], 0x9600u);
    // Standing on a stub with no frame for its slot (entered before we
    // attached, say): moved to the stub's own return address.
    user_regs_struct regs{};
    regs.rip = 0x9700;
    regs.rsp = slot(5) + 8;
    EXPECT_TRUE(stacks_.restore(pid_, tid_, kTrampoline, &regs, &stubs));
    EXPECT_EQ(regs.rip, 0x401700u);
    EXPECT_EQ(stack_[6], 0x401600u);
}

TEST(ExitFrames, TailPendingFrameReturnsOnlyThroughItsCallee) {
    ReturnSite caller, other;
    ExitFrames frames;
    ReturnFrame f = frame_of(&caller);
    f.slot = 0x7ff0;
    frames.enter(std::move(f), 0x1000);
    frames.jumped_into(0x7ff0, 0x2000, 0x2100, ReturnFrame{});
    // The callee's ret at 0x2050 with the same rsp returns the caller.
    auto done = frames.returned(0x7ff0, 0x2050);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].returns[0].site, &caller);
    // A pending frame whose callee never returned (longjmp) is stale for any other ret.
    f = frame_of(&caller);
    f.slot = 0x7ff0;
    frames.enter(std::move(f), 0x1000);
    frames.jumped_into(0x7ff0, 0x2000, 0x2100, ReturnFrame{});
    ReturnFrame g = frame_of(&other);
    g.slot = 0x7ff0;
    frames.enter(std::move(g), 0x3000);  // not the callee: the pending frame goes
    done = frames.returned(0x7ff0, 0x3010);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].returns[0].site, &other);
}

}  // namespace
}  // namespace uprobe::engine
