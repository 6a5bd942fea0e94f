// Small pieces every engine needs in the same way.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include <functional>
#include <optional>
#include <vector>

#include "arch/x86_64/decode.hpp"
#include "probe/dwarf_fetch.hpp"
#include "uprobe/result.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::elf {
class Binary;
}
namespace uprobe::probe {
struct Site;
}

namespace uprobe::engine {

// Identity of a mapped file: what mappings are matched by, never a path.
struct ObjectKey {
    dev_t device = 0;
    ino_t inode = 0;
    auto operator<=>(const ObjectKey&) const = default;
};

// Whether `spec`'s BIN names the object `key`, mapped at `path` in process
// `pid` whose main executable is `exe`: no BIN means the main executable; a
// path names a file as the target sees it (it may live in another mount
// namespace), compared by identity; a library name matches by file name.
bool probe_names_object(const ProbeSpec& spec, pid_t pid, ObjectKey exe, ObjectKey key, const std::string& path);

// The code of the function holding `site`: its body, then its part the
// compiler moved away (gcc's NAME.cold), when the file has one.
Result<std::vector<arch::CodeRange>> function_parts(const elf::Binary& binary, const probe::Site& site);

// Whether FUNC is a glob. Such a probe names functions the user did not
// pick one by one, so a site of it that cannot be probed (a function that
// starts with ud2, say) is skipped with a note instead of failing the
// probe; the probe fails only when none of its sites could be placed.
bool is_glob_probe(const ProbeSpec& spec);

// The sites of one probe placed one by one, with the rule above.
class SitePlacement {
public:
    explicit SitePlacement(const ProbeSpec& spec) : spec_(spec), glob_(is_glob_probe(spec)) {}
    // One site's outcome: its error to return, or nothing (placed, or
    // skipped with `note` saying why).
    Result<void> site(Result<void> placed, const std::function<void(const std::string&)>& note);
    // After the last site: an error when a glob matched only unprobeable functions.
    Result<void> finish() const;
    size_t placed() const { return placed_; }

private:
    const ProbeSpec& spec_;
    bool glob_;
    size_t placed_ = 0, skipped_ = 0;
};

// The arguments of `spec` compiled for `site`, which is at `address` in
// the process, of `binary` (at `path`); DWARF is loaded only when an
// argument names variables or a return probe's bare $retval may take its
// type from it.
Result<std::vector<probe::ArgProgram>> compile_site_args(const ProbeSpec& spec, const probe::Site& site,
                                                         uint64_t address, elf::Binary& binary,
                                                         probe::Resolver& resolver, const std::string& path);

// Executable memory an engine maps into a process (out-of-line copies,
// trampolines), handed out bump-wise. A piece must be within rel32 reach
// of the site it serves, from anywhere in its area.
struct CodeArea {
    uint64_t start = 0;
    uint64_t used = 0;  // bytes handed out
};
constexpr uint64_t code_reach(uint64_t area_size) { return (uint64_t{1} << 31) - 2 * area_size; }

// `size` bytes from an area of `area_size` bytes within reach of `near`
// that has room; none when a new area must be mapped.
std::optional<uint64_t> take_code(std::vector<CodeArea>& areas, uint64_t area_size, uint64_t near, uint64_t size);

// "0x1f" for messages.
std::string hex(uint64_t value);

// CLOCK_MONOTONIC in nanoseconds: the time base of every event.
uint64_t monotonic_ns();

}  // namespace uprobe::engine
