#include "engine/inline/exit_plan.hpp"

#include <algorithm>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/trampoline.hpp"
#include "engine/common.hpp"
#include "engine/function_exits.hpp"

namespace uprobe::engine {

// Each ret, in address order, goes
//  - into the chain of a site at the ret itself;
//  - into the jump site whose bytes hold it;
//  - into a new jump site whose bytes end with it;
//  - into the jump site just before it, its bytes taken on up to it;
//  - else into an int3.
Result<ExitPlan> plan_exit_hooks(elf::Binary& binary, const probe::Site& site, uint64_t bias,
                                 const ExitSurroundings& around) {
    if (!site.function_size) return Error("the size of " + site.function + " is unknown");
    UPROBE_TRY(std::vector<arch::CodeRange> parts, function_parts(binary, site));
    ObjectData data;
    data.read = [&binary](uint64_t vaddr, size_t size) { return binary.code(vaddr, size); };
    data.relocated = binary.is_pie_or_shared();
    UPROBE_TRY(FunctionExits exits, find_function_exits(parts, site.function, &data));
    if (!exits.tail_jumps.empty() || !exits.indirect_tail_jumps.empty())
        return Error(site.function + " leaves by a tail jump (the inline engine hooks rets only; --engine ptrace "
                     "follows tail jumps)");
    // Jump tables are read from the file; a PIE's absolute tables are
    // relocated at load time, so only its relative ones can be read there.
    auto read_table = [&binary](const arch::JumpTable& table) -> Result<std::span<const uint8_t>> {
        if (table.form == arch::JumpTable::Form::Absolute && binary.is_pie_or_shared())
            return Error("its entries are absolute addresses, which the loader relocates");
        return binary.code(table.table, table.entries * table.entry_size());
    };

    ExitPlan plan;
    // The latest jump starting at or before `at`, planned or placed.
    auto jump_below = [&](uint64_t at) -> std::optional<ExitJump> {
        std::optional<ExitJump> best;
        if (auto it = plan.jumps.upper_bound(at); it != plan.jumps.begin()) best = std::prev(it)->second;
        if (auto placed = around.jump_at_or_before(at); placed && (!best || placed->first > best->start))
            best = ExitJump{placed->first, placed->second, true, {}};
        return best;
    };
    std::vector<uint64_t> rets = exits.returns;
    std::sort(rets.begin(), rets.end());
    // The agent tells a hook at the entry from one at a ret by the address.
    if (!rets.empty() && rets.front() == site.vaddr)
        return Error(site.function + " returns at its first instruction (its entry and its ret are one)");
    for (uint64_t ret_vaddr : rets) {
        const uint64_t ret = ret_vaddr + bias;
        if (around.site_at(ret)) {
            plan.chained.push_back(ret);
            continue;
        }
        std::optional<ExitJump> below = jump_below(ret);
        if (below && ret < below->start + below->displaced) {
            plan.jumps.try_emplace(below->start, *below).first->second.rets.push_back(ret);
            continue;
        }
        // The part holding the ret goes first: check_jump_site's site is in parts[0].
        std::vector<arch::CodeRange> own = parts;
        for (size_t i = 1; i < own.size(); ++i)
            if (ret_vaddr >= own[i].start && ret_vaddr < own[i].start + own[i].code.size()) std::swap(own[0], own[i]);
        std::string why;
        auto fits = [&](uint64_t start_vaddr) {
            auto checked = arch::check_jump_site(own, start_vaddr, read_table, ret_vaddr + 1);
            if (!checked) why = checked.error().message();
            return checked && start_vaddr + *checked == ret_vaddr + 1;
        };
        std::optional<uint64_t> start;  // vaddr of a new jump's first instruction
        if (auto starts = arch::instruction_boundaries(own[0].code, own[0].start)) {
            for (uint64_t s : *starts)
                if (s + arch::kJumpPatchSize <= ret_vaddr + 1) start = s;
        }
        if (!start) why = "the function starts less than 5 bytes before it";
        const bool new_free = start && !(below && below->start + below->displaced > *start + bias) &&
                              around.bytes_free(*start + bias, ret + 1);
        if (start && !new_free) why = "another site or a stopped thread is in the bytes before it";
        if (new_free && fits(*start)) {
            plan.jumps[*start + bias] = ExitJump{*start + bias, ret_vaddr + 1 - *start, false, {ret}};
            continue;
        }
        // The jump site just before, its bytes taken on through the ret.
        if (below && below->start >= own[0].start + bias &&
            around.bytes_free(below->start + below->displaced, ret + 1) && fits(below->start - bias)) {
            ExitJump& j = plan.jumps.try_emplace(below->start, *below).first->second;
            j.displaced = ret + 1 - j.start;
            j.rets.push_back(ret);
            continue;
        }
        if (plan.int3s.empty()) plan.no_jump = "ret at " + hex(ret_vaddr) + ": " + why;
        plan.int3s.push_back(ret);
    }
    return plan;
}

}  // namespace uprobe::engine
