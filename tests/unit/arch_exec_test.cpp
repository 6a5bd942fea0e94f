// Runs an instruction in place and its relocated copy from an XOL slot in
// this very process, from identical register and memory state, and checks
// that both end the same: same registers, flags, memory, stack, and the
// same continuation address. Facts about each instruction (encodings,
// what it loads) come from the SDM and objdump, written by hand below.
//
// Harness: arch_test_run loads a Machine into the registers and jumps to
// the code. Every place the code may continue at holds a landing stub
// `call [rip+0]; dq arch_test_landing`, which records the registers and the
// stub's address (return address - 6) and returns to the test.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "arch/x86_64/relocate.hpp"

namespace {

struct Machine {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rflags;
    uint64_t continuation;  // address of the landing stub reached
};
static_assert(sizeof(Machine) == 18 * 8);

}  // namespace

extern "C" void arch_test_run(const Machine* in, Machine* out, uint64_t entry);
extern "C" void arch_test_landing();

asm(R"(
    .intel_syntax noprefix
    .data
    .balign 8
arch_test_host_rsp: .quad 0
arch_test_out:      .quad 0
arch_test_entry:    .quad 0
arch_test_cont:     .quad 0
arch_test_scratch:  .quad 0
    .text
    .globl arch_test_run
    .type arch_test_run, @function
arch_test_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov qword ptr [rip + arch_test_host_rsp], rsp
    mov qword ptr [rip + arch_test_out], rsi
    mov qword ptr [rip + arch_test_entry], rdx
    push qword ptr [rdi + 128]
    popfq
    mov rax, [rdi + 0]
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov rsp, [rdi + 56]
    mov r8, [rdi + 64]
    mov r9, [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 40]
    jmp qword ptr [rip + arch_test_entry]
    .size arch_test_run, . - arch_test_run

    .globl arch_test_landing
    .type arch_test_landing, @function
arch_test_landing:
    pop qword ptr [rip + arch_test_cont]
    mov qword ptr [rip + arch_test_scratch], rax
    mov rax, qword ptr [rip + arch_test_out]
    mov [rax + 8], rbx
    mov [rax + 16], rcx
    mov [rax + 24], rdx
    mov [rax + 32], rsi
    mov [rax + 40], rdi
    mov [rax + 48], rbp
    mov [rax + 56], rsp
    mov [rax + 64], r8
    mov [rax + 72], r9
    mov [rax + 80], r10
    mov [rax + 88], r11
    mov [rax + 96], r12
    mov [rax + 104], r13
    mov [rax + 112], r14
    mov [rax + 120], r15
    pushfq
    pop qword ptr [rax + 128]
    mov rbx, qword ptr [rip + arch_test_scratch]
    mov [rax + 0], rbx
    mov rbx, qword ptr [rip + arch_test_cont]
    sub rbx, 6
    mov [rax + 136], rbx
    mov rsp, qword ptr [rip + arch_test_host_rsp]
    cld
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    .size arch_test_landing, . - arch_test_landing
    .att_syntax prefix
)");

namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint64_t kStatusFlags = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800;
constexpr uint64_t kZF = 0x40;
constexpr size_t kPage = 0x1000;

void put_le(Bytes& bytes, uint64_t value, size_t width) {
    for (size_t i = 0; i < width; ++i) bytes.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

Bytes concat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const Bytes& part : parts) out.insert(out.end(), part.begin(), part.end());
    return out;
}

Bytes le32(int64_t value) {
    Bytes out;
    put_le(out, static_cast<uint64_t>(value), 4);
    return out;
}

struct Mapping {
    uint8_t* base = nullptr;
    size_t size = 0;
    Mapping(void* hint, size_t length, int extra_flags) : size(length) {
        void* p = mmap(hint, length, PROT_READ | PROT_WRITE | PROT_EXEC,
                       MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
        base = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
    }
    ~Mapping() {
        if (base) munmap(base, size);
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    uint64_t address(size_t offset = 0) const { return reinterpret_cast<uint64_t>(base) + offset; }
};

// data page | code page (instruction at kCodeOffset, stubs around it) | ...
// | near XOL page. The far XOL page lies 8 GiB away, out of rel32 reach.
class ExecTest : public ::testing::Test {
protected:
    static constexpr size_t kDataOffset = 0;
    static constexpr size_t kCodeOffset = kPage + 0x400;
    static constexpr size_t kNearXolOffset = 8 * kPage;

    Mapping arena{nullptr, 16 * kPage, 0};
    std::vector<uint64_t> stack_template = std::vector<uint64_t>(512);
    std::vector<uint64_t> stack = std::vector<uint64_t>(512);
    Bytes data_template = Bytes(kPage);

    void SetUp() override {
        ASSERT_NE(arena.base, nullptr);
        for (size_t i = 0; i < data_template.size(); ++i)
            data_template[i] = static_cast<uint8_t>(i * 7 + 1);
        for (size_t i = 0; i < stack_template.size(); ++i)
            stack_template[i] = 0x5757000000000000 + i;
        std::memset(arena.base + kPage, 0xCC, 7 * kPage);
    }

    uint64_t data(size_t offset = 0) const { return arena.address(kDataOffset + offset); }
    uint64_t code() const { return arena.address(kCodeOffset); }
    uint64_t stack_top() const { return reinterpret_cast<uint64_t>(&stack[256]); }
    uint64_t& stack_slot(int index) { return stack_template[256 + index]; }

    void put_landing(uint64_t address) {
        auto* p = reinterpret_cast<uint8_t*>(address);
        const uint8_t call_rip0[] = {0xFF, 0x15, 0, 0, 0, 0};
        std::memcpy(p, call_rip0, sizeof call_rip0);
        uint64_t landing = reinterpret_cast<uint64_t>(&arch_test_landing);
        std::memcpy(p + 6, &landing, 8);
    }

    Machine initial() const {
        Machine m{};
        uint64_t* regs = &m.rax;
        for (int i = 0; i < 16; ++i) regs[i] = 0x1000000000000001ULL * static_cast<uint64_t>(i + 1);
        m.rsp = stack_top();
        m.rflags = 0x202;
        return m;
    }

    struct Outcome {
        Machine machine;
        Bytes data;
        std::vector<uint64_t> stack;
    };

    Outcome run(uint64_t entry, const Machine& in) {
        std::memcpy(arena.base + kDataOffset, data_template.data(), data_template.size());
        stack = stack_template;
        Outcome outcome{};
        arch_test_run(&in, &outcome.machine, entry);
        outcome.machine.rflags &= kStatusFlags;
        outcome.data.assign(arena.base + kDataOffset, arena.base + kDataOffset + kPage);
        outcome.stack = stack;
        return outcome;
    }

    // Runs `insn` at code() and relocated at `xol`; both must agree.
    // `continuations` are the addresses the instruction may go on at.
    // Returns the original's outcome for case-specific checks.
    Outcome compare(const Bytes& insn, const Machine& in, std::vector<uint64_t> continuations,
                    uint64_t xol) {
        std::memcpy(reinterpret_cast<void*>(code()), insn.data(), insn.size());
        for (uint64_t c : continuations) put_landing(c);
        Outcome original = run(code(), in);

        auto relocated = uprobe::arch::relocate(insn, code(), xol);
        EXPECT_TRUE(relocated.ok()) << relocated.error().message();
        if (!relocated.ok()) return original;
        std::memset(reinterpret_cast<void*>(xol), 0xCC, uprobe::arch::kMaxOutOfLineSize + 16);
        std::memcpy(reinterpret_cast<void*>(xol), relocated->code.data(), relocated->code.size());
        Outcome moved = run(xol, in);

        const uint64_t* a = &original.machine.rax;
        const uint64_t* b = &moved.machine.rax;
        const char* names[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8",
                               "r9",  "r10", "r11", "r12", "r13", "r14", "r15", "rflags",
                               "continuation"};
        for (int i = 0; i < 18; ++i) EXPECT_EQ(a[i], b[i]) << names[i];
        EXPECT_EQ(original.data, moved.data) << "data page differs";
        EXPECT_EQ(original.stack, moved.stack) << "stack differs";
        return original;
    }

    uint64_t near_xol() const { return arena.address(kNearXolOffset); }

    // An executable page 8 GiB above the arena, or 0 when the kernel will
    // not place one there.
    uint64_t far_xol() {
        if (!far_) {
            far_ = std::make_unique<Mapping>(reinterpret_cast<void*>(arena.address() + (8ULL << 30)),
                                             kPage, MAP_FIXED_NOREPLACE);
        }
        return far_->base ? far_->address() : 0;
    }

    std::unique_ptr<Mapping> far_;
};

// 48 8b 05 disp32: mov rax, [rip+disp]
TEST_F(ExecTest, RipRelativeLoad) {
    Bytes insn = concat({{0x48, 0x8B, 0x05}, le32(static_cast<int64_t>(data(0x40) - (code() + 7)))});
    Outcome out = compare(insn, initial(), {code() + 7}, near_xol());
    uint64_t expected;
    std::memcpy(&expected, data_template.data() + 0x40, 8);
    EXPECT_EQ(out.machine.rax, expected);
    EXPECT_EQ(out.machine.continuation, code() + 7);
}

// 48 89 1d disp32: mov [rip+disp], rbx
TEST_F(ExecTest, RipRelativeStore) {
    Bytes insn = concat({{0x48, 0x89, 0x1D}, le32(static_cast<int64_t>(data(0x80) - (code() + 7)))});
    Outcome out = compare(insn, initial(), {code() + 7}, near_xol());
    uint64_t stored;
    std::memcpy(&stored, out.data.data() + 0x80, 8);
    EXPECT_EQ(stored, initial().rbx);
}

// 83 3d disp32 05: cmp dword [rip+disp], 5 (immediate after the displacement)
TEST_F(ExecTest, RipRelativeCompareWithImmediate) {
    data_template[0x20] = 5;
    data_template[0x21] = data_template[0x22] = data_template[0x23] = 0;
    Bytes insn = concat({{0x83, 0x3D}, le32(static_cast<int64_t>(data(0x20) - (code() + 7))), {0x05}});
    Outcome out = compare(insn, initial(), {code() + 7}, near_xol());
    EXPECT_TRUE(out.machine.rflags & kZF);
}

// 48 c7 05 disp32 imm32: mov qword [rip+disp], imm32
TEST_F(ExecTest, RipRelativeStoreImmediate) {
    Bytes insn = concat({{0x48, 0xC7, 0x05},
                         le32(static_cast<int64_t>(data(0x100) - (code() + 11))),
                         le32(-2)});
    Outcome out = compare(insn, initial(), {code() + 11}, near_xol());
    uint64_t stored;
    std::memcpy(&stored, out.data.data() + 0x100, 8);
    EXPECT_EQ(stored, 0xFFFFFFFFFFFFFFFEULL);
}

// 48 8d 05 disp32: lea rax, [rip+disp], near and far (mov rax, imm64 form)
TEST_F(ExecTest, RipRelativeLea) {
    Bytes insn = concat({{0x48, 0x8D, 0x05}, le32(static_cast<int64_t>(data(0x10) - (code() + 7)))});
    Outcome out = compare(insn, initial(), {code() + 7}, near_xol());
    EXPECT_EQ(out.machine.rax, data(0x10));
    uint64_t far = far_xol();
    if (far == 0) GTEST_SKIP() << "no page 8 GiB away";
    out = compare(insn, initial(), {code() + 7}, far);
    EXPECT_EQ(out.machine.rax, data(0x10));
}

TEST_F(ExecTest, RipRelativeOutOfReachIsRefused) {
    uint64_t far = far_xol();
    if (far == 0) GTEST_SKIP() << "no page 8 GiB away";
    Bytes insn = concat({{0x48, 0x8B, 0x05}, le32(static_cast<int64_t>(data(0x40) - (code() + 7)))});
    auto relocated = uprobe::arch::relocate(insn, code(), far);
    ASSERT_FALSE(relocated.ok());
    EXPECT_NE(relocated.error().message().find("out of line"), std::string::npos);
}

// e8 rel32: call; the callee sees the original return address on the stack.
TEST_F(ExecTest, CallRel32NearAndFar) {
    uint64_t target = code() + 0x200;
    Bytes insn = concat({{0xE8}, le32(static_cast<int64_t>(target - (code() + 5)))});
    for (uint64_t xol : {near_xol(), far_xol()}) {
        if (xol == 0) continue;
        Outcome out = compare(insn, initial(), {target}, xol);
        EXPECT_EQ(out.machine.continuation, target);
        EXPECT_EQ(out.machine.rsp, stack_top() - 8);
        EXPECT_EQ(out.stack[255], code() + 5);
    }
}

// ff 15 disp32: call [rip+disp]
TEST_F(ExecTest, CallRipIndirect) {
    uint64_t target = code() + 0x300;
    std::memcpy(data_template.data() + 0x200, &target, 8);
    Bytes insn = concat({{0xFF, 0x15}, le32(static_cast<int64_t>(data(0x200) - (code() + 6)))});
    Outcome out = compare(insn, initial(), {target}, near_xol());
    EXPECT_EQ(out.machine.continuation, target);
    EXPECT_EQ(out.stack[255], code() + 6);
}

// ff d0: call rax; 41 ff d3: call r11
TEST_F(ExecTest, CallRegister) {
    uint64_t target = code() - 0x100;
    Machine in = initial();
    in.rax = target;
    in.r11 = target;
    for (const Bytes& insn : {Bytes{0xFF, 0xD0}, Bytes{0x41, 0xFF, 0xD3}}) {
        Outcome out = compare(insn, in, {target}, near_xol());
        EXPECT_EQ(out.machine.continuation, target);
        EXPECT_EQ(out.stack[255], code() + insn.size());
    }
}

// ff 54 24 08: call [rsp+8]; ff 14 24: call [rsp]; ff 94 24 00 01 00 00: call [rsp+0x100]
TEST_F(ExecTest, CallThroughStackSlot) {
    uint64_t target = code() + 0x180;
    stack_slot(0) = target;
    stack_slot(1) = target;
    stack_slot(32) = target;
    for (const Bytes& insn : {Bytes{0xFF, 0x54, 0x24, 0x08}, Bytes{0xFF, 0x14, 0x24},
                              Bytes{0xFF, 0x94, 0x24, 0x00, 0x01, 0x00, 0x00}}) {
        Outcome out = compare(insn, initial(), {target}, near_xol());
        EXPECT_EQ(out.machine.continuation, target);
        EXPECT_EQ(out.stack[255], code() + insn.size());
    }
}

// 74 rel8: je; 0f 85 rel32: jne — taken and not taken, near and far slots.
TEST_F(ExecTest, ConditionalJumps) {
    uint64_t target = code() + 0x40;
    Bytes je = {0x74, static_cast<uint8_t>(0x40 - 2)};
    Bytes jne = concat({{0x0F, 0x85}, le32(0x40 - 6)});
    for (uint64_t xol : {near_xol(), far_xol()}) {
        if (xol == 0) continue;
        for (uint64_t zf : {uint64_t{0}, kZF}) {
            Machine in = initial();
            in.rflags |= zf;
            Outcome out = compare(je, in, {target, code() + 2}, xol);
            EXPECT_EQ(out.machine.continuation, zf ? target : code() + 2);
            out = compare(jne, in, {target, code() + 6}, xol);
            EXPECT_EQ(out.machine.continuation, zf ? code() + 6 : target);
        }
    }
}

// e2 rel8: loop (backwards target); e3 rel8: jrcxz; e0: loopne
TEST_F(ExecTest, LoopAndJrcxz) {
    uint64_t back = code() - 0x20;
    Bytes loop = {0xE2, static_cast<uint8_t>(-0x20 - 2)};
    Bytes jrcxz = {0xE3, 0x30};
    Bytes loopne = {0xE0, 0x30};
    for (uint64_t rcx : {uint64_t{1}, uint64_t{5}, uint64_t{0}}) {
        Machine in = initial();
        in.rcx = rcx;
        Outcome out = compare(loop, in, {back, code() + 2}, near_xol());
        EXPECT_EQ(out.machine.continuation, rcx == 1 ? code() + 2 : back);
        EXPECT_EQ(out.machine.rcx, rcx - 1);
        out = compare(jrcxz, in, {code() + 0x32, code() + 2}, near_xol());
        EXPECT_EQ(out.machine.continuation, rcx == 0 ? code() + 0x32 : code() + 2);
        in.rflags |= kZF;
        out = compare(loopne, in, {code() + 0x32, code() + 2}, near_xol());
        EXPECT_EQ(out.machine.continuation, code() + 2);
    }
}

// f3 a4: rep movsb — all iterations run in the slot, then it jumps back.
TEST_F(ExecTest, RepMovsb) {
    Machine in = initial();
    in.rsi = data(0x10);
    in.rdi = data(0x300);
    in.rcx = 33;
    Outcome out = compare({0xF3, 0xA4}, in, {code() + 2}, near_xol());
    EXPECT_EQ(out.machine.rcx, 0u);
    EXPECT_EQ(out.machine.rdi, data(0x300 + 33));
    EXPECT_EQ(0, std::memcmp(out.data.data() + 0x300, data_template.data() + 0x10, 33));
}

// ff 25 disp32: jmp [rip+disp]; ff 35 disp32: push [rip+disp]; c3: ret
TEST_F(ExecTest, JumpPushAndReturnThroughMemory) {
    uint64_t target = code() + 0x280;
    std::memcpy(data_template.data() + 0x208, &target, 8);
    Bytes jmp = concat({{0xFF, 0x25}, le32(static_cast<int64_t>(data(0x208) - (code() + 6)))});
    Outcome out = compare(jmp, initial(), {target}, near_xol());
    EXPECT_EQ(out.machine.continuation, target);

    Bytes push = concat({{0xFF, 0x35}, le32(static_cast<int64_t>(data(0x208) - (code() + 6)))});
    out = compare(push, initial(), {code() + 6}, near_xol());
    EXPECT_EQ(out.stack[255], target);

    stack_slot(0) = target;
    out = compare({0xC3}, initial(), {target}, near_xol());
    EXPECT_EQ(out.machine.continuation, target);
    EXPECT_EQ(out.machine.rsp, stack_top() + 8);
}

// Instructions without RIP use: 48 01 d8 add rax,rbx; 55 push rbp;
// f3 0f 1e fa endbr64; 64 48 8b 04 25 28 00 00 00 mov rax, fs:0x28.
TEST_F(ExecTest, VerbatimInstructions) {
    for (const Bytes& insn : {Bytes{0x48, 0x01, 0xD8}, Bytes{0x55}, Bytes{0xF3, 0x0F, 0x1E, 0xFA},
                              Bytes{0x64, 0x48, 0x8B, 0x04, 0x25, 0x28, 0, 0, 0}}) {
        Outcome out = compare(insn, initial(), {code() + insn.size()}, far_xol() ? far_xol() : near_xol());
        EXPECT_EQ(out.machine.continuation, code() + insn.size());
    }
}

// eb rel8 / e9 rel32: jmp
TEST_F(ExecTest, DirectJumps) {
    Bytes short_jmp = {0xEB, 0x7E};
    Outcome out = compare(short_jmp, initial(), {code() + 0x80}, near_xol());
    EXPECT_EQ(out.machine.continuation, code() + 0x80);
    Bytes near_jmp = concat({{0xE9}, le32(-0x305)});
    out = compare(near_jmp, initial(), {code() - 0x300}, far_xol() ? far_xol() : near_xol());
    EXPECT_EQ(out.machine.continuation, code() - 0x300);
}

}  // namespace
