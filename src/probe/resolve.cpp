#include "probe/resolve.hpp"

#include <dwarf.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "arch/x86_64/decode.hpp"
#include "base/strings.hpp"
#include "dwarf/debug_info.hpp"
#include "elf/binary.hpp"
#include "probe/dwarf_fetch.hpp"

namespace uprobe::probe {

struct Resolver::Object {
    elf::Binary binary;
    std::unique_ptr<dwarf::DebugInfo> dwarf;
    bool dwarf_tried = false;
    std::optional<Error> dwarf_error;  // why there is no DWARF, for messages
    std::unique_ptr<CallFrames> frames;
    bool frames_tried = false;
};

Resolver::Resolver() = default;
Resolver::~Resolver() = default;

Result<elf::Binary*> Resolver::binary(const std::string& path) {
    if (auto it = objects_.find(path); it != objects_.end()) return &it->second->binary;
    UPROBE_TRY(auto bin, elf::Binary::open(path));
    auto object = std::make_unique<Object>(Object{std::move(bin), nullptr, false, std::nullopt, nullptr, false});
    auto* raw = &object->binary;
    objects_.emplace(path, std::move(object));
    return raw;
}

dwarf::DebugInfo* Resolver::debug_info(const std::string& path) {
    auto bin = binary(path);
    if (!bin) return nullptr;
    Object& object = *objects_.at(path);
    if (!object.dwarf_tried) {
        object.dwarf_tried = true;
        auto found = object.binary.debug_file();
        if (!found) {
            object.dwarf_error = found.error();
        } else if (!*found) {
            object.dwarf_error = Error(fmt::format("{} has no debug info (install its -dbg package, "
                                                   "or set DEBUGINFOD_URLS)", path));
        } else {
            auto opened = dwarf::DebugInfo::open((*found)->path);
            if (opened) object.dwarf = std::move(opened).value();
            else object.dwarf_error = opened.error();
        }
    }
    return object.dwarf.get();
}

std::string Resolver::debug_info_error(const std::string& path) {
    if (debug_info(path)) return "";
    auto it = objects_.find(path);
    if (it == objects_.end()) {
        auto bin = binary(path);
        return bin ? "none found" : bin.error().message();
    }
    return it->second->dwarf_error ? it->second->dwarf_error->message() : "none found";
}

const CallFrames* Resolver::call_frames(const std::string& path) {
    if (!binary(path)) return nullptr;
    Object& object = *objects_.at(path);
    if (!object.frames_tried) {
        object.frames_tried = true;
        std::string debug_path;
        if (auto found = object.binary.debug_file(); found && *found) debug_path = (*found)->path;
        if (auto opened = CallFrames::open(path, debug_path)) object.frames = std::move(opened).value();
    }
    return object.frames.get();
}

namespace {

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

// Fills the file offset and containing function of a site at `vaddr`;
// fails when the address is not code of this object.
Result<Site> make_site(const elf::Binary& bin, uint64_t vaddr, const std::string& path) {
    if (!bin.is_executable(vaddr))
        return Error(fmt::format("{} is not in an executable segment of {}", hex(vaddr), path));
    auto offset = bin.vaddr_to_offset(vaddr);
    if (!offset) return Error(fmt::format("{} has no file contents in {}", hex(vaddr), path));
    Site site;
    site.vaddr = vaddr;
    site.file_offset = *offset;
    if (const auto* fn = bin.function_containing(vaddr)) {
        site.function = fn->demangled;
        site.function_vaddr = fn->vaddr;
        site.function_size = fn->size;
        site.function_offset = vaddr - fn->vaddr;
    }
    return site;
}

// An address inside a function must start an instruction: a breakpoint in
// the middle of one corrupts it. Decodes the function from its start.
Result<void> check_boundary(const elf::Binary& bin, const Site& site) {
    if (site.function_size == 0 || site.vaddr == site.function_vaddr) return {};
    UPROBE_TRY(auto bytes, bin.code(site.function_vaddr, site.function_size));
    UPROBE_TRY(auto starts, arch::instruction_boundaries(bytes, site.function_vaddr));
    auto it = std::lower_bound(starts.begin(), starts.end(), site.vaddr);
    if (it != starts.end() && *it == site.vaddr) return {};
    std::string near;
    if (it != starts.begin()) near = fmt::format("{}+{}", site.function, *(it - 1) - site.function_vaddr);
    if (it != starts.end())
        near += fmt::format("{}{}+{}", near.empty() ? "" : " and ", site.function, *it - site.function_vaddr);
    return Error(fmt::format("{}+{} is not on an instruction boundary (nearest: {})", site.function,
                             site.function_offset, near));
}

std::string suggestion(std::string_view word, const std::vector<std::string>& names) {
    auto near = closest(word, names);
    if (near.empty()) return "";
    std::string out = "; did you mean ";
    for (size_t i = 0; i < near.size(); ++i) out += (i ? ", " : "") + near[i];
    return out + "?";
}

// FUNC@FILE: keeps the functions whose DWARF says they come from FILE.
bool defined_in(dwarf::DebugInfo& dwarf, const elf::Binary::Symbol& fn, std::string_view file) {
    for (const auto& inst : dwarf.function_instances(fn.name)) {
        if (inst.inlined || inst.entry != fn.vaddr) continue;
        for (const auto* f : {&inst.decl_file, &inst.file}) {
            if (*f == file) return true;
            if (f->size() > file.size() && f->ends_with(file) && (*f)[f->size() - file.size() - 1] == '/')
                return true;
        }
    }
    return false;
}

bool path_matches(const std::string& path, std::string_view file) {
    return path == file ||
           (path.size() > file.size() && path.ends_with(file) && path[path.size() - file.size() - 1] == '/');
}

// Where a function-entry probe with arguments by name goes. Unoptimized
// code keeps variables in stack homes that its prologue fills in, and its
// DWARF describes them there (frame-base relative) for the whole function:
// at the entry they would read garbage, so the probe moves past the
// prologue (as gdb and perf probe do). Optimized code describes parameters
// in their registers at the entry, where nothing has clobbered them yet,
// and often only as entry values later: the entry is the better place.
uint64_t argument_site(const dwarf::DebugInfo& dwarf, uint64_t entry, const std::string& function) {
    auto vars = dwarf.variables_at(entry, dwarf_name(function));
    if (!vars) return entry;
    for (const auto& v : *vars) {
        if (!v.location.empty() && v.location.front().atom == DW_OP_fbreg)
            return dwarf.post_prologue(entry).value_or(entry);
    }
    return entry;
}

}  // namespace

bool uses_dwarf_names(const ProbeSpec& spec) {
    for (const auto& arg : spec.args) {
        const Fetch* f = &arg.fetch;
        while ((f->kind == FetchKind::Memory || f->kind == FetchKind::Entry) && f->inner) f = f->inner.get();
        if (f->kind == FetchKind::DwarfVar || f->kind == FetchKind::Params || f->kind == FetchKind::Vars)
            return true;
    }
    return false;
}

Result<std::vector<Site>> Resolver::resolve(const ProbeSpec& spec, const std::string& path) {
    UPROBE_TRY(elf::Binary * bin, binary(path));
    const Location& loc = spec.location;
    std::vector<Site> sites;

    auto need_dwarf = [&](std::string_view what) -> Result<dwarf::DebugInfo*> {
        if (auto* d = debug_info(path)) return d;
        const auto& why = objects_.at(path)->dwarf_error;
        return Error(fmt::format("{} needs debug info: {}", what, why ? why->message() : "none found"));
    };

    switch (loc.kind) {
    case LocationKind::Function: {
        auto matches = bin->find_functions(loc.function);
        // A function the compiler inlined is probed at each inlined
        // instance too, as perf probe does: otherwise the calls that were
        // inlined would silently not count. Exact names only (a glob names
        // symbols); not for +OFFSET or %return, which only make sense in
        // an out-of-line copy. Uses DWARF only when the object has it.
        std::vector<dwarf::DebugInfo::FunctionInstance> inlined;
        if (!has_glob(loc.function) && loc.offset == 0 && !loc.is_return) {
            if (auto* dwarf = debug_info(path)) {
                for (auto& inst : dwarf->function_instances(loc.function)) {
                    if (!inst.inlined) continue;
                    if (!loc.file.empty() && !path_matches(inst.decl_file, loc.file) && !path_matches(inst.file, loc.file))
                        continue;
                    inlined.push_back(std::move(inst));
                }
            }
        }
        if (!loc.file.empty() && !matches.empty()) {
            UPROBE_TRY(auto* dwarf, need_dwarf(fmt::format("{}@{}", loc.function, loc.file)));
            std::erase_if(matches, [&](const auto* fn) { return !defined_in(*dwarf, *fn, loc.file); });
            if (matches.empty() && inlined.empty())
                return Error(fmt::format("no function '{}' defined in {} in {}", loc.function, loc.file, path));
        }
        if (matches.empty() && inlined.empty()) {
            std::vector<std::string> names;
            if (!has_glob(loc.function)) {
                for (const auto& fn : bin->functions()) names.push_back(fn.demangled);
            }
            // A stripped object's functions may be only in its debug file:
            // when that was refused, that is the reason to give.
            auto debug = bin->debug_file();
            if (!debug)
                return Error(fmt::format("no function '{}' in {}: {}", loc.function, path, debug.error().message()));
            return Error(fmt::format("no function '{}' in {}{}", loc.function, path,
                                     suggestion(loc.function, names)));
        }
        std::set<uint64_t> seen;  // aliases share an address: one site each
        for (const auto* fn : matches) {
            if (!seen.insert(fn->vaddr).second) continue;
            if (loc.offset && fn->size && loc.offset >= fn->size)
                return Error(fmt::format("{}+{} is past the end of {} ({} bytes)", fn->demangled, loc.offset,
                                         fn->demangled, fn->size));
            uint64_t vaddr = fn->vaddr + loc.offset;
            // Variables by DWARF name live in their stack homes only after
            // the prologue, so such probes go there, as perf probe does.
            if (loc.offset == 0 && !loc.is_return && uses_dwarf_names(spec)) {
                UPROBE_TRY(auto* dwarf, need_dwarf("arguments by name"));
                vaddr = argument_site(*dwarf, fn->vaddr, fn->demangled);
            }
            UPROBE_TRY(Site site, make_site(*bin, vaddr, path));
            // The symbol asked for names the site, not whichever alias
            // function_containing preferred.
            site.function = fn->demangled;
            site.function_vaddr = fn->vaddr;
            site.function_size = fn->size;
            site.function_offset = vaddr - fn->vaddr;
            UPROBE_CHECK(check_boundary(*bin, site));
            sites.push_back(std::move(site));
        }
        for (const auto& inst : inlined) {
            if (!seen.insert(inst.entry).second) continue;
            UPROBE_TRY(Site site, make_site(*bin, inst.entry, path));
            UPROBE_CHECK(check_boundary(*bin, site));
            // Named after the function asked for; the event's address and
            // source say which caller it was inlined into.
            site.function = inst.name;
            site.function_offset = 0;  // the inlined instance's entry; function_vaddr stays the caller's
            if (auto* dwarf = debug_info(path)) {
                if (auto src = dwarf->source_of(inst.entry)) site.source = fmt::format("{}:{}", src->first, src->second);
            }
            sites.push_back(std::move(site));
        }
        break;
    }
    case LocationKind::Address: {
        UPROBE_TRY(Site site, make_site(*bin, loc.address, path));
        UPROBE_CHECK(check_boundary(*bin, site));
        sites.push_back(std::move(site));
        break;
    }
    case LocationKind::SourceLine: {
        UPROBE_TRY(auto* dwarf, need_dwarf(fmt::format("{}:{}", loc.file, loc.line)));
        UPROBE_TRY(auto lines, dwarf->line_sites(loc.file, loc.line));
        for (const auto& line : lines) {
            UPROBE_TRY(Site site, make_site(*bin, line.vaddr, path));
            site.source = fmt::format("{}:{}", line.file, line.line);
            if (!line.function.empty()) site.function = line.function;
            sites.push_back(std::move(site));
        }
        break;
    }
    case LocationKind::FunctionLine: {
        UPROBE_TRY(auto* dwarf, need_dwarf(fmt::format("{}:{}", loc.function, loc.line)));
        UPROBE_TRY(auto fl, dwarf->function_lines(loc.function));
        uint32_t want = fl.decl_line + loc.line;
        std::vector<uint32_t> have;
        for (const auto& line : fl.lines) {
            have.push_back(line.line - fl.decl_line);
            if (line.line != want) continue;
            UPROBE_TRY(Site site, make_site(*bin, line.vaddr, path));
            site.source = fmt::format("{}:{}", line.file, line.line);
            site.function = line.function.empty() ? fl.name : line.function;
            sites.push_back(std::move(site));
        }
        if (sites.empty()) {
            std::sort(have.begin(), have.end());
            have.erase(std::unique(have.begin(), have.end()), have.end());
            return Error(fmt::format("no code at {}:{} ({}:{}); lines of {} with code: {}", loc.function, loc.line,
                                     fl.file, want, loc.function, fmt::join(have, ", ")));
        }
        break;
    }
    case LocationKind::Sdt: {
        std::vector<std::string> names;
        for (const auto& m : bin->sdt_markers()) {
            names.push_back(m.provider + ":" + m.name);
            if (!glob_match(loc.provider, m.provider) || !glob_match(loc.marker, m.name)) continue;
            UPROBE_TRY(Site site, make_site(*bin, m.vaddr, path));
            site.marker = m;
            sites.push_back(std::move(site));
        }
        if (sites.empty()) {
            if (names.empty())
                return Error(fmt::format("{} has no SDT markers{}", path,
                                         loc.binary.empty() ? " (for a library's, name it: sdt:LIBRARY:PROVIDER:NAME)"
                                                            : ""));
            std::string near = suggestion(loc.provider + ":" + loc.marker, names);
            if (near.empty()) {
                // Nothing close: say what there is (a marker may be emitted at several sites).
                std::sort(names.begin(), names.end());
                names.erase(std::unique(names.begin(), names.end()), names.end());
                constexpr size_t kShown = 8;
                auto shown = names.begin() + static_cast<ptrdiff_t>(std::min(names.size(), kShown));
                near = fmt::format("; it has {}{}", fmt::join(names.begin(), shown, ", "),
                                   names.size() > kShown ? fmt::format(" and {} more", names.size() - kShown) : "");
            }
            return Error(fmt::format("no SDT marker {}:{} in {}{}", loc.provider, loc.marker, path, near));
        }
        break;
    }
    }
    return sites;
}

bool Resolver::binary_matches(const std::string& spec_binary, const std::string& path) {
    if (spec_binary.empty()) return false;
    if (spec_binary.find('/') != std::string::npos) {
        struct stat a {}, b {};
        if (::stat(spec_binary.c_str(), &a) == 0 && ::stat(path.c_str(), &b) == 0)
            return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
        return std::filesystem::path(spec_binary).lexically_normal() ==
               std::filesystem::path(path).lexically_normal();
    }
    // A library name: "libc" matches libc.so.6 and libc-2.36.so, but not
    // libcrypt.so.1; a full soname matches itself.
    std::string base = std::filesystem::path(path).filename();
    if (base == spec_binary) return true;
    if (!starts_with(base, spec_binary)) return false;
    char next = base[spec_binary.size()];
    return next == '.' || next == '-';
}

}  // namespace uprobe::probe
