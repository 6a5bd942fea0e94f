// Arbitrary bytes through jump-table recognition: every indirect jmp of
// the sweep is analysed, with branch targets taken from the input too, and
// the tail of the input read as a table. Any result is fine; a crash,
// sanitizer report or a table larger than the limit is not.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/jump_table.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace uprobe::arch;
    if (size < 2) return 0;
    // First byte: how many of the following bytes are code; the rest is
    // table bytes.
    size_t code_size = std::min<size_t>(data[0], size - 1);
    std::span<const uint8_t> code(data + 1, code_size);
    std::span<const uint8_t> rest(data + 1 + code_size, size - 1 - code_size);
    constexpr uint64_t kStart = 0x401000;
    auto starts = instruction_boundaries(code, kStart);
    if (!starts.ok()) return 0;
    std::vector<uint64_t> targets;
    for (uint64_t at : *starts) {
        auto branch = classify_branch(code.subspan(at - kStart), at);
        if (branch.ok() && branch->target) targets.push_back(*branch->target);
    }
    for (uint64_t at : *starts) {
        auto branch = classify_branch(code.subspan(at - kStart), at);
        if (!branch.ok() || !branch->is_jump || !branch->is_indirect) continue;
        auto table = find_jump_table(code, kStart, at, targets);
        if (!table.ok()) continue;
        if (table->entries == 0 || table->entries > kMaxJumpTableEntries) std::abort();
        size_t want = table->entries * table->entry_size();
        (void)jump_table_targets(*table, rest.first(std::min(want, rest.size())));
    }
    return 0;
}
