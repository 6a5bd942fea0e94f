#include "engine/common.hpp"

#include <sys/stat.h>
#include <time.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>

#include "elf/binary.hpp"
#include "probe/resolve.hpp"
#include "proc/proc.hpp"

namespace uprobe::engine {

Result<std::vector<probe::ArgProgram>> compile_site_args(const ProbeSpec& spec, const probe::Site& site,
                                                         uint64_t address, elf::Binary& binary,
                                                         probe::Resolver& resolver, const std::string& path) {
    probe::CompileContext context;
    context.site = &site;
    context.load_bias = address - site.vaddr;
    context.at_return = spec.location.is_return;
    context.symbol_address = [&binary](const std::string& name) -> Result<uint64_t> {
        if (auto a = binary.data_symbol(name)) return *a;
        return Error("no symbol '" + name + "' in " + binary.path());
    };
    probe::DwarfSource dwarf;
    for (const auto& arg : spec.args)
        if ((probe::is_dwarf_arg(arg) || (spec.location.is_return && probe::wants_return_type(arg))) &&
            !dwarf.debug_info && dwarf.missing.empty())
            dwarf = probe::dwarf_source(resolver, path);
    std::vector<probe::ArgProgram> programs;
    for (const auto& arg : spec.args) {
        UPROBE_TRY(probe::ArgProgram program, probe::compile_arg(arg, context, dwarf));
        programs.push_back(std::move(program));
    }
    return programs;
}

Result<void> SitePlacement::site(Result<void> placed, const std::function<void(const std::string&)>& note) {
    if (placed) {
        ++placed_;
        return {};
    }
    if (!glob_) return placed.error();
    note("probe " + spec_.name + ": skipped " + placed.error().message());
    ++skipped_;
    return {};
}

Result<void> SitePlacement::finish() const {
    if (placed_ == 0 && skipped_ > 0)
        return Error("probe " + spec_.name + ": no function matching '" + spec_.location.function + "' could be probed");
    return {};
}

std::optional<uint64_t> take_code(std::vector<CodeArea>& areas, uint64_t area_size, uint64_t near, uint64_t size) {
    const uint64_t reach = code_reach(area_size);
    for (auto& area : areas) {
        const uint64_t distance = area.start > near ? area.start - near : near - area.start;
        if (distance < reach && area.used + size <= area_size) {
            const uint64_t at = area.start + area.used;
            area.used += size;
            return at;
        }
    }
    return std::nullopt;
}

Result<std::vector<arch::CodeRange>> function_parts(const elf::Binary& binary, const probe::Site& site) {
    if (site.function_size == 0) return Error("the size of " + site.function + " is unknown");
    UPROBE_TRY(auto bytes, binary.code(site.function_vaddr, site.function_size));
    std::vector<arch::CodeRange> parts = {{site.function_vaddr, bytes}};
    if (const auto* symbol = binary.function_containing(site.function_vaddr)) {
        for (const auto* cold : binary.functions_named(symbol->name + ".cold")) {
            if (cold->size == 0) continue;
            if (auto cold_bytes = binary.code(cold->vaddr, cold->size)) parts.push_back({cold->vaddr, *cold_bytes});
        }
    }
    return parts;
}

bool is_glob_probe(const ProbeSpec& spec) {
    return spec.location.kind == LocationKind::Function && spec.location.function.find_first_of("*?[") != std::string::npos;
}

bool probe_names_object(const ProbeSpec& spec, pid_t pid, ObjectKey exe, ObjectKey key, const std::string& path) {
    const std::string& bin = spec.location.binary;
    if (bin.empty()) return key == exe;
    if (bin.find('/') != std::string::npos) {
        std::string absolute = bin[0] == '/' ? bin : std::filesystem::absolute(bin).string();
        struct stat st {};
        return ::stat(proc::host_path(pid, absolute).c_str(), &st) == 0 && st.st_dev == key.device &&
               st.st_ino == key.inode;
    }
    return probe::Resolver::binary_matches(bin, path);
}

std::string hex(uint64_t value) {
    char text[32];
    std::snprintf(text, sizeof text, "0x%" PRIx64, value);
    return text;
}

uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace uprobe::engine
