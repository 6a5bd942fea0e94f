// Where the inline engine hooks the rets of a function for its return
// probes (instruction mode): the plan, from the function's code and what
// is already placed around it, before anything is written. Used to place
// them (placement.cpp, place_exits) and to list them (uprobe list --sites).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "elf/binary.hpp"
#include "probe/resolve.hpp"
#include "uprobe/result.hpp"

namespace uprobe::engine {

// A jump site that gets exit hooks: one already placed (its bytes may be
// taken on up to a ret) or a new one whose bytes end with a ret.
struct ExitJump {
    uint64_t start = 0;  // runtime address
    size_t displaced = 0;
    bool existing = false;
    std::vector<uint64_t> rets;  // runtime addresses of the rets it hooks
};

struct ExitPlan {
    std::map<uint64_t, ExitJump> jumps;  // by start
    std::vector<uint64_t> chained;       // rets with a site of their own: its chain calls the hook
    std::vector<uint64_t> int3s;         // rets no jump reaches: an int3 each
    std::string no_jump;                 // why the first of those got none
};

// What is around the function already, in runtime addresses.
struct ExitSurroundings {
    std::function<bool(uint64_t)> site_at;  // a probe site is placed at this address
    // The jump site starting at or before an address: (start, displaced).
    std::function<std::optional<std::pair<uint64_t, size_t>>(uint64_t)> jump_at_or_before;
    std::function<bool(uint64_t, uint64_t)> bytes_free;  // [lo, hi) may take a new jump
};

// The plan for the function of `site` (a return probe's: its entry),
// loaded at `bias` (runtime = vaddr + bias). Fails with one line when its
// exits cannot be found, or one of them is not a ret (a tail jump).
Result<ExitPlan> plan_exit_hooks(elf::Binary& binary, const probe::Site& site, uint64_t bias,
                                 const ExitSurroundings& around);

}  // namespace uprobe::engine
