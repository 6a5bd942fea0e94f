#include "probe/resolve.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "arch/x86_64/decode.hpp"
#include "base/strings.hpp"
#include "dwarf/debug_info.hpp"
#include "elf/binary.hpp"

namespace uprobe::probe {

struct Resolver::Object {
    elf::Binary binary;
    std::unique_ptr<dwarf::DebugInfo> dwarf;
    bool dwarf_tried = false;
    std::optional<Error> dwarf_error;  // why there is no DWARF, for messages
};

Resolver::Resolver() = default;
Resolver::~Resolver() = default;

Result<elf::Binary*> Resolver::binary(const std::string& path) {
    if (auto it = objects_.find(path); it != objects_.end()) return &it->second->binary;
    UPROBE_TRY(auto bin, elf::Binary::open(path));
    auto object = std::make_unique<Object>(Object{std::move(bin), nullptr, false, std::nullopt});
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
        if (!loc.file.empty() && !matches.empty()) {
            UPROBE_TRY(auto* dwarf, need_dwarf(fmt::format("{}@{}", loc.function, loc.file)));
            std::erase_if(matches, [&](const auto* fn) { return !defined_in(*dwarf, *fn, loc.file); });
            if (matches.empty())
                return Error(fmt::format("no function '{}' defined in {} in {}", loc.function, loc.file, path));
        }
        if (matches.empty()) {
            std::vector<std::string> names;
            if (!has_glob(loc.function)) {
                for (const auto& fn : bin->functions()) names.push_back(fn.demangled);
            }
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
                vaddr = dwarf->post_prologue(fn->vaddr).value_or(fn->vaddr);
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
            if (names.empty()) return Error(fmt::format("{} has no SDT markers", path));
            return Error(fmt::format("no SDT marker {}:{} in {}{}", loc.provider, loc.marker, path,
                                     suggestion(loc.provider + ":" + loc.marker, names)));
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
