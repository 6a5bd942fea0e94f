#include "arch/x86_64/trampoline.hpp"

#include <algorithm>
#include <initializer_list>
#include <string>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/relocate.hpp"
#include "arch/x86_64/zydis.hpp"

namespace uprobe::arch {
namespace {

using detail::hex;

bool fits_rel32(int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; }

class Code {
public:
    explicit Code(uint64_t base) : base_(base) {}
    uint64_t here() const { return base_ + bytes_.size(); }
    void bytes(std::initializer_list<uint8_t> b) { bytes_.insert(bytes_.end(), b); }
    void bytes(std::span<const uint8_t> b) { bytes_.insert(bytes_.end(), b.begin(), b.end()); }
    void u32(uint32_t v) {
        for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    void u64(uint64_t v) {
        for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    // mov [rsp+disp32], r64 (store) or mov r64, [rsp+disp32] (load); reg 0..15.
    void rsp_move(bool store, uint8_t reg, uint32_t disp) {
        bytes_.push_back(static_cast<uint8_t>(0x48 | ((reg >> 3) << 2)));
        bytes_.push_back(store ? 0x89 : 0x8B);
        bytes_.push_back(static_cast<uint8_t>(0x84 | ((reg & 7) << 3)));  // mod=10 rm=100 (SIB)
        bytes_.push_back(0x24);                                         // base rsp, no index
        u32(disp);
    }
    // movdqu [rsp+disp32], xmmN (store) or movdqu xmmN, [rsp+disp32].
    void rsp_xmm(bool store, uint8_t reg, uint32_t disp) {
        bytes_.push_back(0xF3);
        if (reg >= 8) bytes_.push_back(0x44);  // REX.R
        bytes_.push_back(0x0F);
        bytes_.push_back(store ? 0x7F : 0x6F);
        bytes_.push_back(static_cast<uint8_t>(0x84 | ((reg & 7) << 3)));
        bytes_.push_back(0x24);
        u32(disp);
    }
    std::vector<uint8_t>& raw() { return bytes_; }

private:
    uint64_t base_;
    std::vector<uint8_t> bytes_;
};

// Register numbers (ModRM encoding) and their user_regs_struct slots.
enum Reg : uint8_t { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15 };
struct Slot {
    Reg reg;
    uint32_t slot;
};
constexpr Slot kSaved[] = {{R15, 0}, {R14, 1}, {R13, 2}, {R12, 3}, {RBP, 4}, {RBX, 5}, {R11, 6},
                           {R10, 7}, {R9, 8},  {R8, 9},  {RCX, 11}, {RDX, 12}, {RSI, 13}, {RDI, 14}};
// The handler follows the System V ABI, so only caller-saved registers can
// change under it (rax comes back through the push, and rbx, which the
// trampoline itself uses, from the frame).
constexpr Slot kRestored[] = {{R11, 6}, {R10, 7}, {R9, 8}, {R8, 9}, {RCX, 11}, {RDX, 12}, {RSI, 13}, {RDI, 14}};
constexpr uint32_t kSlotRbx = 5, kSlotRax = 10, kSlotRip = 16, kSlotFlags = 18, kSlotRsp = 19;
constexpr uint32_t kRedZone = 128;

// Puts back the flags the handler may change (the arithmetic ones and
// DF, which the trampoline clears) from the pushed rflags word (at rbx),
// clobbering rax and rcx (restored after). popfq would do it in one
// instruction, but costs about as much as the rest of the trampoline.
void emit_restore_flags(Code& c) {
    c.bytes({0x48, 0x8B, 0x0B});              // mov rcx, [rbx]: rflags
    c.bytes({0x89, 0xC8});                    // mov eax, ecx
    c.bytes({0xC1, 0xE8, 0x0B});              // shr eax, 11
    c.bytes({0x83, 0xE0, 0x01});              // and eax, 1: OF
    c.bytes({0x6B, 0xC0, 0x7F});              // imul eax, eax, 0x7f
    c.bytes({0xF6, 0xC5, 0x04});              // test ch, 4: DF
    c.bytes({0x74, 0x01});                    // jz +1
    c.bytes({0xFD});                          // std
    c.bytes({0x04, 0x7F});                    // add al, 0x7f: OF set iff al was 0x7f
    c.bytes({0x88, 0xCC});                    // mov ah, cl: SF ZF AF PF CF
    c.bytes({0x9E});                          // sahf (OF and DF untouched)
}

// Saves the thread's state as the frame and calls the handler (its
// result is in eax); emit_restore() follows. rbx, saved in the frame and
// kept by the handler (System V), holds where rflags and rax were pushed:
// the way back to the thread's rsp is then a register move, not a load
// the rest of the trampoline would wait for (~1 ns a trampoline).
void emit_save_and_call(Code& c, const TrampolineRequest& r) {
    const uint32_t frame = r.save_vector_registers ? static_cast<uint32_t>(kFrameXmmOffset + 16 * 16)
                                                   : static_cast<uint32_t>(kFrameXmmOffset);
    c.bytes({0x48, 0x8D, 0x64, 0x24, 0x80});  // lea rsp, [rsp-128]: skip the red zone
    c.bytes({0x50});                          // push rax
    c.bytes({0x9C});                          // pushfq
    c.bytes({0x48, 0x89, 0xE0});              // mov rax, rsp
    c.bytes({0x48, 0x83, 0xE4, 0xF0});        // and rsp, -16
    c.bytes({0x48, 0x81, 0xEC});              // sub rsp, frame
    c.u32(frame);
    for (const Slot& s : kSaved) c.rsp_move(true, s.reg, s.slot * 8);
    c.bytes({0x48, 0x89, 0xC3});  // mov rbx, rax
    c.bytes({0x48, 0x8B, 0x48, 0x08});  // mov rcx, [rax+8]: the pushed rax
    c.rsp_move(true, RCX, kSlotRax * 8);
    c.bytes({0x48, 0x8B, 0x08});  // mov rcx, [rax]: the pushed flags
    c.rsp_move(true, RCX, kSlotFlags * 8);
    c.bytes({0x48, 0x8D, 0x88});  // lea rcx, [rax + 16 + 128]: rsp at the site
    c.u32(16 + kRedZone);
    c.rsp_move(true, RCX, kSlotRsp * 8);
    c.bytes({0x48, 0xB9});  // mov rcx, imm64: rip = the site
    c.u64(r.site);
    c.rsp_move(true, RCX, kSlotRip * 8);
    c.bytes({0x31, 0xC9});  // xor ecx, ecx: orig_rax, cs, ss, bases and segments read as 0
    for (uint32_t slot : {15u, 17u, 20u, 21u, 22u, 23u, 24u, 25u, 26u}) c.rsp_move(true, RCX, slot * 8);
    if (r.save_vector_registers)
        for (uint8_t x = 0; x < 16; ++x) c.rsp_xmm(true, x, static_cast<uint32_t>(kFrameXmmOffset + 16 * x));
    c.bytes({0xFC});              // cld (the ABI's requirement at a call)
    c.bytes({0x48, 0x89, 0xE7});  // mov rdi, rsp
    c.bytes({0x48, 0xBE});        // mov rsi, imm64
    c.u64(r.argument);
    c.bytes({0xBA});  // mov edx, imm32
    c.u32(r.index);
    c.bytes({0x48, 0xB8});  // mov rax, imm64
    c.u64(r.handler);
    c.bytes({0xFF, 0xD0});  // call rax
}

// Puts back the state emit_save_and_call saved, rsp as at the site.
void emit_restore(Code& c) {
    // Vector registers are not restored: the handler leaves them alone
    // (see make_trampoline), so they were saved for it to read only.
    emit_restore_flags(c);
    for (const Slot& s : kRestored) c.rsp_move(false, s.reg, s.slot * 8);
    c.rsp_move(false, RAX, kSlotRbx * 8);            // the thread's rbx, read while the frame is above rsp
    c.bytes({0x48, 0x89, 0xDC});                     // mov rsp, rbx
    c.bytes({0x48, 0x89, 0xC3});                     // mov rbx, rax
    c.bytes({0x48, 0x8D, 0x64, 0x24, 0x08});         // lea rsp, [rsp+8]: over the pushed flags
    c.bytes({0x58});                                 // pop rax
    c.bytes({0x48, 0x8D, 0xA4, 0x24});               // lea rsp, [rsp+128]
    c.u32(kRedZone);
}

// lock inc of a counter, rflags and rax preserved.
void emit_counter(Code& c, const TrampolineRequest& r) {
    c.bytes({0x48, 0x8D, 0x64, 0x24, 0x80});  // lea rsp, [rsp-128]
    c.bytes({0x9C});                          // pushfq
    c.bytes({0x50});                          // push rax
    c.bytes({0x48, 0xB8});                    // mov rax, imm64
    c.u64(r.counter);
    c.bytes({0xF0, 0x48, 0xFF, 0x00});        // lock inc qword [rax]
    c.bytes({0x58});                          // pop rax
    c.bytes({0x9D});                          // popfq
    c.bytes({0x48, 0x8D, 0xA4, 0x24});        // lea rsp, [rsp+128]
    c.u32(kRedZone);
}

}  // namespace

Result<size_t> check_jump_site(const std::vector<CodeRange>& parts, uint64_t site, const JumpTableReader& read_table,
                               uint64_t through) {
    if (parts.empty()) return Error("no code");
    const std::span<const uint8_t> function = parts[0].code;
    const uint64_t function_address = parts[0].start;
    const uint64_t end = function_address + function.size();
    if (site < function_address || site >= end) return Error("site " + hex(site) + " is outside its function");
    auto boundaries = instruction_boundaries(function, function_address);
    if (!boundaries) return Error("the function cannot be decoded: " + boundaries.error().message());
    size_t displaced = 0;
    bool started = false;
    for (uint64_t start : *boundaries) {
        if (start == site) started = true;
        if (!started) continue;
        if (start >= std::max(site + kJumpPatchSize, through)) break;
        auto insn = decode_one(function.subspan(start - function_address), start);
        if (!insn) return insn.error();
        displaced = start + insn->length - site;
    }
    if (!started) return Error("site " + hex(site) + " is not on an instruction boundary");
    if (displaced < kJumpPatchSize)
        return Error("the function ends " + std::to_string(end - site) + " bytes after the site (a jump needs 5)");
    if (site + displaced < through) return Error("the function ends before " + hex(through));
    auto inside_patch = [&](uint64_t target) { return target > site && target < site + displaced; };

    struct Decoded {
        const CodeRange* part;
        uint64_t at;
        BranchInfo branch;
    };
    std::vector<Decoded> decoded;
    std::vector<uint64_t> branch_targets;  // of every direct branch: jump tables need them
    for (const CodeRange& part : parts) {
        auto starts = &part == &parts[0] ? boundaries : instruction_boundaries(part.code, part.start);
        if (!starts) return Error("a part of the function cannot be decoded: " + starts.error().message());
        for (uint64_t start : *starts) {
            auto branch = classify_branch(part.code.subspan(start - part.start), start);
            if (!branch) return branch.error();
            if ((branch->is_jump || branch->is_call) && branch->target) branch_targets.push_back(*branch->target);
            decoded.push_back({&part, start, *branch});
        }
    }
    for (const Decoded& d : decoded) {
        const BranchInfo& branch = d.branch;
        if (branch.target && inside_patch(*branch.target))
            return Error("the branch at " + hex(d.at) + " lands inside the patched bytes");
        if (branch.is_jump && branch.is_indirect) {
            auto refuse = [&](const std::string& why) {
                return Error("the function has an indirect jump at " + hex(d.at) + " (" + why + ")");
            };
            if (!read_table) return refuse("a jump table may land anywhere");
            auto table = find_jump_table(d.part->code, d.part->start, d.at, branch_targets);
            if (!table) return refuse("not a recognised jump table: " + table.error().message());
            auto bytes = read_table(*table);
            if (!bytes) return refuse("its table cannot be read: " + bytes.error().message());
            auto targets = jump_table_targets(*table, *bytes);
            if (!targets) return refuse(targets.error().message());
            for (uint64_t target : *targets)
                if (inside_patch(target))
                    return Error("the jump table of " + hex(d.at) + " sends it inside the patched bytes");
        }
        if (branch.is_call && d.part == &parts[0] && d.at >= site && d.at + 1 < site + displaced) {
            auto insn = decode_one(function.subspan(d.at - function_address), d.at);
            if (insn && d.at + insn->length < site + displaced)
                return Error("the call at " + hex(d.at) + " would return inside the patched bytes");
        }
    }
    return displaced;
}

Result<size_t> check_jump_site(std::span<const uint8_t> function, uint64_t function_address, uint64_t site) {
    return check_jump_site({CodeRange{function_address, function}}, site);
}

std::vector<uint8_t> make_return_trampoline(uint64_t address, uint64_t handler, uint64_t argument, ReturnExit exit,
                                            bool save_vector_registers) {
    Code c(address);
    c.bytes({0x48, 0x8D, 0x64, 0x24, 0xF8});  // lea rsp, [rsp-8]: the word the handler fills
    TrampolineRequest r;
    r.site = address;
    r.handler = handler;
    r.argument = argument;
    r.save_vector_registers = save_vector_registers;
    emit_save_and_call(c, r);
    emit_restore(c);
    if (exit == ReturnExit::kRet) {
        c.bytes({0xC3});  // ret
    } else {
        // The word stays inside the red zone, which signal delivery skips.
        c.bytes({0x48, 0x8D, 0x64, 0x24, 0x08});  // lea rsp, [rsp+8]
        c.bytes({0xFF, 0x64, 0x24, 0xF8});        // jmp qword [rsp-8]
    }
    return std::move(c.raw());
}

Result<Trampoline> make_trampoline(const TrampolineRequest& r) {
    if (r.displaced < kJumpPatchSize || r.original.size() < r.displaced)
        return Error("bad trampoline request: " + std::to_string(r.displaced) + " displaced bytes");
    int64_t reach = static_cast<int64_t>(r.address - (r.site + kJumpPatchSize));
    if (!fits_rel32(reach)) return Error("trampoline at " + hex(r.address) + " is out of reach of " + hex(r.site));

    if (r.counter && !r.exits.empty()) return Error("bad trampoline request: a counting site has no exit hooks");
    Code c(r.address);
    size_t to_call_tail = 0;  // where the rel32 of `jnz call tail` goes
    if (r.counter) {
        emit_counter(c, r);
    } else if (r.entry) {
        emit_save_and_call(c, r);
        if (r.return_code) {
            c.bytes({0x85, 0xC0});  // test eax, eax
            c.bytes({0x0F, 0x85});  // jnz rel32
            to_call_tail = c.raw().size();
            c.u32(0);
        }
        emit_restore(c);
    }
    const uint64_t first_copy = c.here();

    // The displaced instructions, each relocated where it lands; a jump of
    // one copy back into the patched range goes to the copy instead.
    std::vector<std::pair<uint64_t, uint64_t>> copies;  // original address -> copy address
    std::vector<std::pair<size_t, uint64_t>> jumps;      // rel32 offset in code -> original target
    size_t offset = 0;
    while (offset < r.displaced) {
        uint64_t at = r.site + offset;
        auto insn = decode_one(r.original.subspan(offset), at);
        if (!insn) return insn.error();
        copies.emplace_back(at, c.here());  // a jump to a hooked ret runs its hook too
        for (const ExitHook& hook : r.exits) {
            if (hook.ret != at) continue;
            TrampolineRequest exit = r;
            exit.site = hook.ret;
            exit.index = hook.index;
            emit_save_and_call(c, exit);
            emit_restore(c);
        }
        uint64_t copy = c.here();
        UPROBE_TRY(OutOfLine ool, relocate(r.original.subspan(offset), at, copy));
        size_t base = c.raw().size();
        c.bytes(ool.code);
        auto starts = instruction_boundaries(ool.code, copy);
        if (!starts) return starts.error();
        for (uint64_t s : *starts) {
            size_t o = base + (s - copy);
            if (c.raw()[o] != 0xE9) continue;
            int32_t rel = 0;
            for (int i = 0; i < 4; ++i) rel |= static_cast<int32_t>(uint32_t{c.raw()[o + 1 + i]} << (8 * i));
            uint64_t target = s + 5 + static_cast<int64_t>(rel);
            if (target > r.site && target < r.site + r.displaced) jumps.emplace_back(o + 1, target);
        }
        offset += insn->length;
    }
    for (auto [at, target] : jumps) {
        uint64_t copy = 0;
        for (auto [original, moved] : copies)
            if (original == target) copy = moved;
        if (!copy) return Error("a displaced instruction jumps into the middle of another");
        uint64_t from = r.address + at + 4;
        uint32_t rel = static_cast<uint32_t>(static_cast<int64_t>(copy - from));
        for (int i = 0; i < 4; ++i) c.raw()[at + i] = static_cast<uint8_t>(rel >> (8 * i));
    }

    Trampoline t;
    if (to_call_tail) {
        // The handler took the return address: the displaced instructions
        // are called, so the function's ret comes back to `landing` as the
        // return-stack buffer predicts, and so does the return code's ret
        // to the caller.
        const uint32_t rel = static_cast<uint32_t>(c.here() - (r.address + to_call_tail + 4));
        for (int i = 0; i < 4; ++i) c.raw()[to_call_tail + i] = static_cast<uint8_t>(rel >> (8 * i));
        emit_restore(c);
        c.bytes({0x48, 0x8D, 0x64, 0x24, 0x08});  // lea rsp, [rsp+8]: over the return address
        c.bytes({0xE8});                          // call rel32: the displaced instructions
        c.u32(static_cast<uint32_t>(first_copy - (c.here() + 4)));
        t.landing = c.here();
        c.bytes({0xFF, 0x25, 0x00, 0x00, 0x00, 0x00});  // jmp qword [rip]
        c.u64(r.return_code);
    }
    t.code = std::move(c.raw());
    // The last copy fell through to site + displaced by itself, unless it
    // ended control flow (ret, jmp).
    t.patch.push_back(0xE9);
    for (int i = 0; i < 4; ++i) t.patch.push_back(static_cast<uint8_t>(static_cast<uint32_t>(reach) >> (8 * i)));
    while (t.patch.size() < r.displaced) t.patch.push_back(0xCC);
    return t;
}

}  // namespace uprobe::arch
