#include "cli/list_command.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "base/strings.hpp"
#include "cli/report.hpp"
#include "dwarf/debug_info.hpp"
#include "elf/binary.hpp"
#include "engine/engine.hpp"
#include "probe/dwarf_fetch.hpp"
#include "probe/resolve.hpp"
#include "proc/proc.hpp"

namespace uprobe::cli {
namespace {

using nlohmann::ordered_json;

void print_json(const ordered_json& j) {
    fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

// The objects to list: the binary given with -x, or every file-backed
// ELF object a process maps with execute permission.
struct Object {
    std::string path;  // as we open it (through /proc/PID/root when needed)
    std::string name;  // as the user knows it
};

Result<std::vector<Object>> objects_of(const ListOptions& o) {
    if (!o.binary.empty()) return std::vector<Object>{{o.binary, o.binary}};
    UPROBE_TRY(auto maps, proc::read_maps(o.pid).context(fmt::format("process {}", o.pid)));
    std::vector<Object> out;
    std::set<std::pair<dev_t, ino_t>> seen;
    for (const auto& m : maps) {
        if (!m.exec || m.inode == 0 || m.path.empty() || m.path[0] != '/') continue;
        if (!seen.insert({m.device, m.inode}).second) continue;
        out.push_back({proc::host_path(o.pid, m.path), m.path});
    }
    return out;
}

int list_functions(const std::vector<Object>& objects, const ListOptions& o) {
    bool any = false;
    for (const auto& obj : objects) {
        auto bin = elf::Binary::open(obj.path);
        if (!bin) {
            if (objects.size() == 1) return report_error(bin.error().message());
            continue;  // -p: a mapped file may be gone or unreadable; list the rest
        }
        const auto& all = bin->functions();
        std::vector<const elf::Binary::Symbol*> shown;
        if (o.pattern.empty()) {
            for (const auto& fn : all) shown.push_back(&fn);
        } else {
            shown = bin->find_functions(o.pattern);
        }
        if (shown.empty()) continue;
        any = true;
        if (!o.json && objects.size() > 1) fmt::print("# {}\n", obj.name);
        std::string text;
        for (const auto* fn : shown) {
            if (o.json) {
                ordered_json j;
                j["object"] = obj.name;
                j["name"] = fn->demangled;
                if (fn->demangled != fn->name) j["mangled"] = fn->name;
                j["addr"] = fn->vaddr;
                j["size"] = fn->size;
                j["local"] = fn->local;
                if (fn->ifunc) j["ifunc"] = true;
                if (fn->from_debug_file) j["debug_file_only"] = true;
                print_json(j);
            } else {
                text += fmt::format("{:#018x} {:>8} {}{}\n", fn->vaddr, fn->size, fn->demangled,
                                    fn->ifunc ? " [ifunc]" : "");
            }
        }
        std::fputs(text.c_str(), stdout);
    }
    if (!any && !o.pattern.empty())
        return report_error(fmt::format("no function matches '{}'", o.pattern));
    return 0;
}

int list_markers(const std::vector<Object>& objects, const ListOptions& o) {
    for (const auto& obj : objects) {
        auto bin = elf::Binary::open(obj.path);
        if (!bin) {
            if (objects.size() == 1) return report_error(bin.error().message());
            continue;
        }
        for (const auto& m : bin->sdt_markers()) {
            if (!o.pattern.empty() && !glob_match(o.pattern, m.provider + ":" + m.name) &&
                !glob_match(o.pattern, m.name))
                continue;
            if (o.json) {
                ordered_json j;
                j["object"] = obj.name;
                j["provider"] = m.provider;
                j["name"] = m.name;
                j["addr"] = m.vaddr;
                j["semaphore"] = m.semaphore_vaddr;
                ordered_json args = ordered_json::array();
                for (const auto& a : m.args) {
                    args.push_back({{"text", a.text}, {"size", a.size}, {"signed", a.is_signed}});
                }
                j["args"] = std::move(args);
                j["args_text"] = m.args_text;
                print_json(j);
            } else {
                std::string sem = m.semaphore_vaddr ? fmt::format("{:#x}", m.semaphore_vaddr) : "-";
                fmt::print("{}{}:{} {:#x} semaphore={} args={}\n", objects.size() > 1 ? obj.name + " " : "",
                           m.provider, m.name, m.vaddr, sem, m.args_text.empty() ? "-" : m.args_text);
            }
        }
    }
    return 0;
}

// Source text of a line, for `--lines`; empty when the file is not here.
class SourceCache {
public:
    std::string line(const std::string& file, uint32_t n) {
        auto [it, fresh] = files_.try_emplace(file);
        if (fresh) {
            std::ifstream in(file);
            for (std::string l; std::getline(in, l);) it->second.push_back(l);
        }
        return n >= 1 && n <= it->second.size() ? it->second[n - 1] : "";
    }

private:
    std::map<std::string, std::vector<std::string>> files_;
};

int list_lines(probe::Resolver& resolver, const Object& obj, const ListOptions& o) {
    if (auto bin = resolver.binary(obj.path); !bin) return report_error(bin.error().message());
    auto* dwarf = resolver.debug_info(obj.path);
    if (!dwarf) return report_error(fmt::format("{} has no debug info: --lines needs DWARF", obj.name));
    auto fl = dwarf->function_lines(o.lines);
    if (!fl) return report_error(fl.error().message());
    // One row per line; the addresses are every site FUNC:RELLINE accepts.
    std::map<uint32_t, std::vector<const dwarf::DebugInfo::LineSite*>> by_line;
    for (const auto& l : fl->lines) by_line[l.line].push_back(&l);
    SourceCache sources;
    if (!o.json) fmt::print("<{}@{}:{}>\n", fl->name, fl->file, fl->decl_line);
    for (const auto& [line, sites] : by_line) {
        const auto& file = sites.front()->file;
        if (o.json) {
            ordered_json j;
            j["function"] = fl->name;
            j["relline"] = int64_t(line) - int64_t(fl->decl_line);
            j["file"] = file;
            j["line"] = line;
            ordered_json addrs = ordered_json::array();
            for (const auto* s : sites) addrs.push_back(s->vaddr);
            j["addrs"] = std::move(addrs);
            print_json(j);
            continue;
        }
        std::string addrs;
        for (const auto* s : sites) addrs += fmt::format("{}{:#x}", addrs.empty() ? "" : ",", s->vaddr);
        fmt::print("{:>6}  {}:{}  {}  {}\n", int64_t(line) - int64_t(fl->decl_line),
                   std::filesystem::path(file).filename().string(), line, addrs, trim(sources.line(file, line)));
    }
    return 0;
}

int list_vars(probe::Resolver& resolver, const Object& obj, const ListOptions& o) {
    auto parsed = parse_probe_spec(o.vars);
    if (parsed.error) return report_spec_error(*parsed.error);
    ProbeSpec spec = *parsed.spec;
    // The sites a probe with arguments by name would use.
    Fetch params;
    params.kind = FetchKind::Params;
    spec.args.push_back({"params", params, ValueType::Default});
    auto sites = resolver.resolve(spec, obj.path);
    if (!sites) return report_error(sites.error().message());
    auto* dwarf = resolver.debug_info(obj.path);
    if (!dwarf) return report_error(fmt::format("{} has no debug info: --vars needs DWARF", obj.name));
    for (const auto& site : *sites) {
        auto vars = dwarf->variables_at(site.vaddr, probe::dwarf_name(site.function));  // as trace sees them
        if (!vars) return report_error(vars.error().message());
        if (!o.json)
            fmt::print("{}+{} ({:#x}){}:\n", site.function, site.function_offset, site.vaddr,
                       site.source.empty() ? "" : " at " + site.source);
        for (const auto& v : *vars) {
            std::string where = v.optimized_out ? "optimized out"
                                : v.has_const_value ? fmt::format("const {}", v.const_value)
                                                    : dwarf::DebugInfo::describe(v.location);
            if (o.json) {
                ordered_json j;
                j["addr"] = site.vaddr;
                j["function"] = site.function;
                j["name"] = v.name;
                j["kind"] = v.is_parameter ? "param" : "local";
                j["type"] = v.type_name;
                j["location"] = where;
                print_json(j);
            } else {
                fmt::print("  {:<6} {:<24} {:<16} {}\n", v.is_parameter ? "param" : "local", v.type_name, v.name,
                           where);
            }
        }
    }
    return 0;
}

// A probe site and the inline engine's method there: a jump (and the
// bytes it displaces) or an int3 (and why not a jump); `takes_return`: a
// return probe's entry where the return address is taken (and why no ret
// is hooked instead).
void print_entry_site(const probe::Site& site, const std::string& function, const std::set<uint64_t>& addresses,
                      elf::Binary& binary, bool takes_return, const std::string& why_not, bool json) {
    engine::InlineSitePlan plan = engine::plan_inline_site(binary, site);
    // As in a process: no jump over another site of the probe.
    if (auto next = addresses.upper_bound(site.vaddr); plan.no_jump.empty() && next != addresses.end() &&
                                                       *next < site.vaddr + plan.displaced) {
        plan.no_jump = "another probe's site is in the bytes a jump would take";
        plan.displaced = 0;
    }
    const std::string taken = takes_return ? "; the return address taken here (" + why_not + ")" : "";
    if (json) {
        ordered_json j;
        j["addr"] = site.vaddr;
        j["function"] = function;
        j["offset"] = site.function_offset;
        j["method"] = plan.no_jump.empty() ? "jump" : "int3";
        if (plan.no_jump.empty()) j["displaced"] = plan.displaced;
        else j["reason"] = plan.no_jump;
        if (takes_return) j["return_address"] = why_not;
        print_json(j);
    } else if (plan.no_jump.empty()) {
        fmt::print("{:#018x} {}+{}  jump ({} bytes displaced){}\n", site.vaddr, function, site.function_offset,
                   plan.displaced, taken);
    } else {
        fmt::print("{:#018x} {}+{}  int3 ({}){}\n", site.vaddr, function, site.function_offset, plan.no_jump, taken);
    }
}

// Every site of a probe and the inline engine's method there (a return
// probe's: at its rets, and at its entry when it is placed there).
int list_sites(probe::Resolver& resolver, const Object& obj, const ListOptions& o) {
    auto parsed = parse_probe_spec(o.sites);
    if (parsed.error) return report_spec_error(*parsed.error);
    auto sites = resolver.resolve(*parsed.spec, obj.path);
    if (!sites) return report_error(sites.error().message());
    auto binary = resolver.binary(obj.path);
    if (!binary) return report_error(binary.error().message());
    std::set<uint64_t> addresses;
    for (const auto& site : *sites) addresses.insert(site.vaddr);
    const bool returns = parsed.spec->location.is_return;
    const bool framed = returns && engine::keeps_frame(*parsed.spec);
    for (const auto& site : *sites) {
        const std::string function = site.function.empty() ? "?" : site.function;
        // A return probe: its rets' exit hooks (and, keeping a frame, its
        // entry), or the entry, where the return address is taken instead.
        engine::InlineReturnPlan returned;
        if (returns) returned = engine::plan_inline_returns(**binary, site, framed);
        const bool by_rets = !returned.rets.empty();
        if (!returns || !by_rets || framed) print_entry_site(site, function, addresses, **binary, returns && !by_rets,
                                                             returned.why_not, o.json);
        for (const auto& r : returned.rets) {
            const uint64_t offset = site.function_offset + (r.ret - site.vaddr);
            const uint64_t jump_offset = site.function_offset + (r.jump - site.vaddr);
            if (o.json) {
                ordered_json j;
                j["addr"] = r.ret;
                j["function"] = function;
                j["offset"] = offset;
                j["method"] = "ret hooked";
                j["jump_addr"] = r.jump;
                j["displaced"] = r.displaced;
                print_json(j);
            } else {
                fmt::print("{:#018x} {}+{}  ret hooked in the jump at {}+{} ({} bytes displaced)\n", r.ret, function,
                           offset, function, jump_offset, r.displaced);
            }
        }
    }
    return 0;
}

}  // namespace

int run_list(const ListOptions& o) {
    if (o.binary.empty() == (o.pid == 0)) return report_usage("list needs exactly one of -x BIN and -p PID");
    if (!o.binary.empty() && std::filesystem::is_directory(o.binary))
        return report_error(fmt::format("{}: is a directory", o.binary));
    auto objects = objects_of(o);
    if (!objects) return report_error(objects.error().message());
    if (!o.lines.empty() || !o.vars.empty() || !o.sites.empty()) {
        if (objects->size() != 1) return report_usage("--lines, --vars and --sites need -x BIN");
        probe::Resolver resolver;
        if (!o.sites.empty()) return list_sites(resolver, objects->front(), o);
        return o.lines.empty() ? list_vars(resolver, objects->front(), o)
                               : list_lines(resolver, objects->front(), o);
    }
    return o.sdt ? list_markers(*objects, o) : list_functions(*objects, o);
}

}  // namespace uprobe::cli
