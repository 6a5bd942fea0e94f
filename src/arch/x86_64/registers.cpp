#include "arch/x86_64/registers.hpp"

#include <sys/user.h>

#include <array>
#include <cctype>
#include <cstddef>
#include <cstring>
#include <string>

namespace uprobe::arch {

namespace {

constexpr uint16_t slot_of(size_t offset) { return static_cast<uint16_t>(offset / sizeof(uint64_t)); }

#define UPROBE_SLOT(field) slot_of(offsetof(struct user_regs_struct, field))

struct GeneralRegister {
    const char* name64;
    const char* name32;
    const char* name16;
    const char* name8;
    const char* name8_high;  // or nullptr
    uint16_t slot;
};

// In the order of their hardware numbers (SDM vol. 2, table 3-1), so that
// r8..r15 line up with their numeric names.
const std::array<GeneralRegister, 16> kGeneral = {{
    {"rax", "eax", "ax", "al", "ah", UPROBE_SLOT(rax)},
    {"rcx", "ecx", "cx", "cl", "ch", UPROBE_SLOT(rcx)},
    {"rdx", "edx", "dx", "dl", "dh", UPROBE_SLOT(rdx)},
    {"rbx", "ebx", "bx", "bl", "bh", UPROBE_SLOT(rbx)},
    {"rsp", "esp", "sp", "spl", nullptr, UPROBE_SLOT(rsp)},
    {"rbp", "ebp", "bp", "bpl", nullptr, UPROBE_SLOT(rbp)},
    {"rsi", "esi", "si", "sil", nullptr, UPROBE_SLOT(rsi)},
    {"rdi", "edi", "di", "dil", nullptr, UPROBE_SLOT(rdi)},
    {"r8", "r8d", "r8w", "r8b", nullptr, UPROBE_SLOT(r8)},
    {"r9", "r9d", "r9w", "r9b", nullptr, UPROBE_SLOT(r9)},
    {"r10", "r10d", "r10w", "r10b", nullptr, UPROBE_SLOT(r10)},
    {"r11", "r11d", "r11w", "r11b", nullptr, UPROBE_SLOT(r11)},
    {"r12", "r12d", "r12w", "r12b", nullptr, UPROBE_SLOT(r12)},
    {"r13", "r13d", "r13w", "r13b", nullptr, UPROBE_SLOT(r13)},
    {"r14", "r14d", "r14w", "r14b", nullptr, UPROBE_SLOT(r14)},
    {"r15", "r15d", "r15w", "r15b", nullptr, UPROBE_SLOT(r15)},
}};

struct Special {
    const char* name;
    RegisterRef ref;
};

const std::array<Special, 9> kSpecial = {{
    {"rip", {UPROBE_SLOT(rip), 8, 0}},
    {"eip", {UPROBE_SLOT(rip), 4, 0}},
    {"ip", {UPROBE_SLOT(rip), 2, 0}},
    {"rflags", {UPROBE_SLOT(eflags), 8, 0}},
    {"eflags", {UPROBE_SLOT(eflags), 4, 0}},
    {"flags", {UPROBE_SLOT(eflags), 8, 0}},
    {"fs_base", {UPROBE_SLOT(fs_base), 8, 0}},
    {"gs_base", {UPROBE_SLOT(gs_base), 8, 0}},
    {"orig_rax", {UPROBE_SLOT(orig_rax), 8, 0}},
}};

#undef UPROBE_SLOT

// Index of rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15 in kGeneral.
std::optional<RegisterRef> by_hardware_number(unsigned number) {
    if (number >= kGeneral.size()) return std::nullopt;
    return RegisterRef{kGeneral[number].slot, 8, 0};
}

}  // namespace

std::optional<RegisterRef> register_by_name(std::string_view name) {
    if (!name.empty() && name.front() == '%') name.remove_prefix(1);
    if (name.empty() || name.size() > 16) return std::nullopt;
    std::string lower(name);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));

    for (const GeneralRegister& reg : kGeneral) {
        if (lower == reg.name64) return RegisterRef{reg.slot, 8, 0};
        if (lower == reg.name32) return RegisterRef{reg.slot, 4, 0};
        if (lower == reg.name16) return RegisterRef{reg.slot, 2, 0};
        if (lower == reg.name8) return RegisterRef{reg.slot, 1, 0};
        if (reg.name8_high && lower == reg.name8_high) return RegisterRef{reg.slot, 1, 8};
        // Intel's alternative byte names r8l..r15l.
        if (lower.size() >= 3 && lower[0] == 'r' && std::isdigit(static_cast<unsigned char>(lower[1])) &&
            lower.back() == 'l' && lower.substr(0, lower.size() - 1) == reg.name64)
            return RegisterRef{reg.slot, 1, 0};
    }
    for (const Special& special : kSpecial) {
        if (lower == special.name) return special.ref;
    }
    return std::nullopt;
}

std::optional<RegisterRef> argument_register(unsigned n) {
    static constexpr unsigned kArgumentNumbers[] = {7, 6, 2, 1, 8, 9};  // rdi rsi rdx rcx r8 r9
    if (n < 1 || n > 6) return std::nullopt;
    return by_hardware_number(kArgumentNumbers[n - 1]);
}

std::optional<RegisterRef> register_by_dwarf(unsigned dwarf_regno) {
    // DWARF 0..7 are rax rdx rcx rbx rsi rdi rbp rsp; hardware order differs.
    static constexpr unsigned kDwarfToHardware[] = {0, 2, 1, 3, 6, 7, 5, 4};
    if (dwarf_regno < 8) return by_hardware_number(kDwarfToHardware[dwarf_regno]);
    if (dwarf_regno < 16) return by_hardware_number(dwarf_regno);
    if (dwarf_regno == 16) return instruction_pointer();
    return std::nullopt;
}

RegisterRef return_register() { return *by_hardware_number(0); }
RegisterRef stack_pointer() { return *by_hardware_number(4); }
RegisterRef instruction_pointer() {
    return RegisterRef{slot_of(offsetof(struct user_regs_struct, rip)), 8, 0};
}

uint64_t read_register(const struct user_regs_struct& regs, RegisterRef ref) {
    static_assert(sizeof(struct user_regs_struct) % sizeof(uint64_t) == 0);
    constexpr size_t kSlots = sizeof(struct user_regs_struct) / sizeof(uint64_t);
    if (ref.slot >= kSlots) return 0;
    uint64_t value;
    std::memcpy(&value, reinterpret_cast<const char*>(&regs) + ref.slot * sizeof(uint64_t),
                sizeof value);
    value >>= ref.shift;
    if (ref.size < 8) value &= (uint64_t{1} << (8 * ref.size)) - 1;
    return value;
}

}  // namespace uprobe::arch
