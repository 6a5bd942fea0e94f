#include "engine/function_exits.hpp"

#include <algorithm>

#include "arch/x86_64/jump_table.hpp"
#include "engine/common.hpp"

namespace uprobe::engine {

Result<FunctionExits> find_function_exits(const std::vector<CodeRange>& parts, const std::string& name,
                                          const ObjectData* data) {
    FunctionExits exits;
    if (parts.empty()) return Error(name + " has no code");
    auto inside = [&](uint64_t address) {
        for (const auto& part : parts)
            if (address >= part.start && address < part.start + part.code.size()) return true;
        return false;
    };
    struct Decoded {
        const CodeRange* part;
        uint64_t at;
        arch::BranchInfo branch;
    };
    std::vector<Decoded> decoded;
    std::vector<uint64_t> branch_targets;  // of every direct branch: jump tables need them
    std::vector<uint64_t> starts_of_all;
    for (const auto& part : parts) {
        UPROBE_TRY(std::vector<uint64_t> starts, arch::instruction_boundaries(part.code, part.start));
        for (uint64_t at : starts) {
            UPROBE_TRY(arch::BranchInfo branch,
                       arch::classify_branch(part.code.subspan(at - part.start), at));
            if ((branch.is_jump || branch.is_call) && branch.target) branch_targets.push_back(*branch.target);
            decoded.push_back({&part, at, branch});
        }
        starts_of_all.insert(starts_of_all.end(), starts.begin(), starts.end());
    }
    std::sort(starts_of_all.begin(), starts_of_all.end());
    for (const Decoded& d : decoded) {
        const CodeRange& part = *d.part;
        const uint64_t at = d.at;
        const arch::BranchInfo& branch = d.branch;
        auto where = [&] {
            return (&part == &parts.front() ? name : name + ".cold") + "+" + std::to_string(at - part.start) +
                   " (" + hex(at) + ")";
        };
        if (branch.is_ret) {
            exits.returns.push_back(at);
            continue;
        }
        if (!branch.is_jump) continue;
        if (branch.is_indirect) {
            auto refuse = [&](const std::string& why) {
                return Error("indirect jump at " + where() + " may leave the function (" + why +
                             "); use --return-mode=trampoline");
            };
            if (!data || !data->read) return refuse("no jump table analysis here");
            auto table = arch::find_jump_table(part.code, part.start, at, branch_targets);
            if (!table) return refuse("not a recognised jump table: " + table.error().message());
            if (table->form == arch::JumpTable::Form::Absolute && data->relocated)
                return refuse("its table holds absolute addresses, which the loader relocates");
            auto bytes = data->read(table->table, table->entries * table->entry_size());
            if (!bytes) return refuse("its table at " + hex(table->table) + " is not in the file");
            auto targets = arch::jump_table_targets(*table, *bytes);
            if (!targets) return refuse(targets.error().message());
            size_t outside = 0;
            for (uint64_t target : *targets) {
                if (!inside(target)) {
                    ++outside;
                    continue;
                }
                if (!std::binary_search(starts_of_all.begin(), starts_of_all.end(), target))
                    return refuse("its table sends it to " + hex(target) + ", inside an instruction");
            }
            // All inside: a branch like any other. All outside: a computed
            // tail call, reported at the jump. Both: the jump would need its
            // target decided at each hit, which is not done.
            if (outside == targets->size()) {
                exits.indirect_tail_jumps.push_back(at);
            } else if (outside != 0) {
                return refuse("its table has targets both inside and outside the function");
            }
            continue;
        }
        if (!branch.target) return Error("jump without a target at " + where());
        if (inside(*branch.target)) continue;
        if (branch.is_conditional)
            return Error("conditional jump out of the function at " + where() +
                         "; use --return-mode=trampoline");
        exits.tail_jumps.push_back({at, *branch.target});
    }
    if (exits.returns.empty() && exits.tail_jumps.empty() && exits.indirect_tail_jumps.empty())
        return Error(name + " never returns (no ret or tail jump)");
    return exits;
}

}  // namespace uprobe::engine
