// Placing probes in a stopped target: a jump to a trampoline where one
// fits, an int3 elsewhere; return probes; the hooks on the dynamic linker
// and the C++ unwinder.
#include "engine/inline/inline_engine.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/relocate.hpp"
#include "arch/x86_64/signal_frame.hpp"
#include "base/strings.hpp"
#include "engine/inline/exit_plan.hpp"
#include "proc/ptrace.hpp"

namespace uprobe::engine::inline_engine {
namespace {

// Where a thread stopped in code of ours (an earlier session's trampoline
// or int3 copy: anonymous executable memory) will jump next: an int3 copy
// ends with a jump to the instruction after the displaced one, which a jump
// patch of this session must not cover. Direct jumps of the next few
// instructions, up to the first unconditional one.
std::vector<uint64_t> jumps_ahead(pid_t pid, const std::vector<Mapping>& maps, uint64_t rip) {
    std::vector<uint64_t> targets;
    const Mapping* home = nullptr;
    for (const auto& m : maps)
        if (rip >= m.start && rip < m.end) home = &m;
    if (!home || !home->exec || home->inode != 0 || (!home->path.empty() && home->path[0] == '[')) return targets;
    uint8_t code[1024];
    const size_t size = std::min<uint64_t>(sizeof code, home->end - rip);
    if (!proc::read_memory(pid, rip, code, size)) return targets;
    for (size_t at = 0; at < size && targets.size() < 16;) {
        std::span<const uint8_t> rest(code + at, size - at);
        auto insn = arch::decode_one(rest, rip + at);
        auto branch = arch::classify_branch(rest, rip + at);
        if (!insn || !branch || insn->length == 0) break;
        if (branch->is_jump && branch->target) targets.push_back(*branch->target);
        if ((branch->is_jump && !branch->is_conditional) || branch->is_ret) break;
        at += insn->length;
    }
    return targets;
}

// Where a thread running a signal handler resumes when the handler
// returns: the interrupted rip of each signal frame on its stack above rsp
// (arch/x86_64/signal_frame.hpp), up to 1 MiB of it (the used part of a
// stack; an alternate signal stack may sit in a larger mapping). A jump
// patch must not cover it any more than a stopped thread's rip.
// `sigreturn_at` caches which addresses hold rt_sigreturn code. A word
// that only looks like a frame costs a jump at most (the site gets an
// int3).
std::vector<uint64_t> signal_frame_rips(pid_t pid, const std::vector<Mapping>& maps, uint64_t rsp,
                                        std::map<uint64_t, bool>& sigreturn_at) {
    std::vector<uint64_t> rips;
    auto mapping_of = [&](uint64_t address) -> const Mapping* {
        auto it = std::upper_bound(maps.begin(), maps.end(), address,
                                   [](uint64_t a, const Mapping& m) { return a < m.start; });
        return it != maps.begin() && std::prev(it)->covers(address) ? &*std::prev(it) : nullptr;
    };
    const Mapping* stack = mapping_of(rsp);
    if (!stack) return rips;
    std::vector<uint64_t> words(std::min<uint64_t>(1 << 20, stack->end - rsp) / 8);
    if (words.empty() || !proc::read_memory(pid, rsp, words.data(), words.size() * 8)) return rips;
    for (size_t i = 0; i < words.size(); ++i) {
        const Mapping* code = mapping_of(words[i]);
        if (!code || !code->exec) continue;
        auto known = sigreturn_at.find(words[i]);
        if (known == sigreturn_at.end()) {
            uint8_t bytes[arch::kSigreturnCodeSize] = {};
            const bool is = proc::read_memory(pid, words[i], bytes, sizeof bytes) && arch::is_sigreturn_code(bytes);
            known = sigreturn_at.emplace(words[i], is).first;
        }
        const size_t rip_word = i + arch::kSignalFrameRipOffset / 8;
        if (known->second && rip_word < words.size()) rips.push_back(words[rip_word]);
    }
    return rips;
}

// Where `site` of the object mapped as `any` is in the process: in one of
// the object's executable mappings.
std::optional<uint64_t> site_address(const probe::Site& site, const std::vector<Mapping>& maps, const Mapping& any) {
    for (const auto& m : maps) {
        if (m.device != any.device || m.inode != any.inode || !m.exec) continue;
        if (site.file_offset >= m.file_offset && site.file_offset < m.file_offset + (m.end - m.start))
            return m.start + (site.file_offset - m.file_offset);
    }
    return std::nullopt;
}

bool probe_wants(const ProbeSpec& spec, const Target& t, const Mapping& m, const std::string& path) {
    return probe_names_object(spec, t.pid, ObjectKey{t.exe_device, t.exe_inode}, ObjectKey{m.device, m.inode}, path);
}

// The return trampolines lie side by side (setup_returns): the one for
// overwritten return addresses, then those the jump sites' landings go to
// (arch::ReturnExit::kRet), without and with the vector registers saved.
constexpr uint64_t kReturnCodeSize = 1024;

uint64_t landings_go_to(uint64_t return_trampoline, bool vectors) {
    return return_trampoline + (vectors ? 2 : 1) * kReturnCodeSize;
}

}  // namespace

Result<uint64_t> runtime_address(elf::Binary& binary, const std::vector<Mapping>& maps, const std::string& path_end,
                                 uint64_t vaddr, dev_t device, ino_t inode) {
    auto offset = binary.vaddr_to_offset(vaddr);
    if (!offset) {
        // .bss: no file bytes; use the load bias of the object's first mapping.
        for (const auto& m : maps) {
            if (m.device != device || m.inode != inode) continue;
            auto mapped_vaddr = binary.offset_to_vaddr(m.file_offset);
            if (mapped_vaddr) return vaddr + (m.start - *mapped_vaddr);
        }
        return Error("no file offset for " + hex(vaddr) + " in " + path_end);
    }
    for (const auto& m : maps) {
        if (m.device != device || m.inode != inode) continue;
        if (*offset >= m.file_offset && *offset < m.file_offset + (m.end - m.start))
            return m.start + (*offset - m.file_offset);
    }
    return Error(path_end + " is not mapped where " + hex(vaddr) + " lives");
}

// The fallback where a jump cannot go: int3, handled by the agent's
// SIGTRAP handler in the program itself, resuming at the displaced
// instruction relocated out of line.
Result<void> InlineEngine::insert_int3(Target& t, pid_t tid, uint64_t address, std::span<const uint8_t> code,
                                       uint32_t index) {
    abi::Header* h = t.region;
    if (h->int3_count + 1 >= h->int3_capacity) return Error("too many int3 sites");
    uint8_t current = 0;
    UPROBE_CHECK(proc::read_memory(t.pid, address, &current, 1));
    if (current != code[0]) return Error("code at " + hex(address) + " differs from the file (breakpoint of another debugger?)");
    UPROBE_TRY(uint64_t slot, allocate(t, tid, address, arch::kMaxOutOfLineSize));
    UPROBE_TRY(arch::OutOfLine ool, arch::relocate(code, address, slot));
    UPROBE_CHECK(proc::write_memory(t.pid, slot, ool.code.data(), ool.code.size()));
    abi::Int3Entry* table = abi::int3_table_of(h);
    uint32_t at = abi::int3_slot_of(address, h->int3_capacity);
    // An entry of this address left removed (a probe taken out, or its
    // library unloaded) is the one the handler finds first: reused.
    while (table[at].address != 0 && table[at].address != address) at = at + 1 == h->int3_capacity ? 0 : at + 1;
    const bool reused = table[at].address == address;
    table[at].resume = slot;
    table[at].site = index;
    __atomic_store_n(&table[at].removed, 0, __ATOMIC_RELEASE);
    if (!reused) {
        __atomic_store_n(&table[at].address, address, __ATOMIC_RELEASE);
        h->int3_count++;
    }
    const uint8_t int3 = arch::kBreakpoint;
    UPROBE_CHECK(proc::write_memory(t.pid, address, &int3, 1));
    t.patches.push_back(Patch{address, true, {current}, {int3}});
    return {};
}

Result<void> InlineEngine::install(Target& t, pid_t tid) {
    if (!t.scratch) UPROBE_CHECK(map_scratch(t, tid));
    struct stat st{};
    std::string exe = "/proc/" + std::to_string(t.pid) + "/exe";
    if (::stat(exe.c_str(), &st) != 0) return errno_error(exe, errno);
    t.exe_inode = st.st_ino;
    t.exe_device = st.st_dev;
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(t.pid));
    UPROBE_TRY(t.handler, find_handler(t, maps));
    UPROBE_TRY(uint64_t region_word, find_agent_symbol(t, maps, "uprobe_agent_region", false));
    UPROBE_CHECK(proc::write_memory(t.pid, region_word, &t.remote_region, sizeof t.remote_region));
    UPROBE_CHECK(place_new_objects(t, tid, true));
    if (auto watched = watch_dynamic_linker(t, tid); !watched)
        note("dlopen tracking disabled in " + std::to_string(t.pid) + ": " + watched.error().message());
    return {};
}

// An object whose code is no longer where its probes were placed (dlclose;
// it may come back at the same addresses) took them along: what says they
// are placed there goes, or a probe there would join a chain no code calls
// any more, and detach would write into what is mapped there now.
void InlineEngine::forget_unmapped(Target& t, const std::vector<Mapping>& maps) {
    for (auto it = t.object_places.begin(); it != t.object_places.end();) {
        const std::pair<dev_t, ino_t> key = it->first;  // (lambdas below may not capture bindings: clang 14)
        const Target::ObjectPlace& place = it->second;
        const bool there = std::all_of(place.code.begin(), place.code.end(), [&](const auto& range) {
            return std::any_of(maps.begin(), maps.end(), [&](const Mapping& m) {
                return m.device == key.first && m.inode == key.second && m.start <= range.first && range.first < m.end;
            });
        });
        if (there) {
            ++it;
            continue;
        }
        auto in_code = [&](uint64_t address) {
            return std::any_of(place.code.begin(), place.code.end(),
                               [&](const auto& r) { return address >= r.first && address < r.second; });
        };
        std::erase_if(t.first_site_at, [&](const auto& e) { return in_code(e.first); });
        std::erase_if(t.jumps, [&](const auto& e) { return in_code(e.first); });
        std::erase_if(t.exit_chains, [&](const auto& e) { return in_code(e.first); });
        std::erase_if(t.planned, in_code);
        std::erase_if(t.counting_sites, [&](uint32_t i) { return i < t.sites.size() && in_code(t.sites[i].address); });
        abi::Int3Entry* table = abi::int3_table_of(t.region);
        for (const Patch& patch : t.patches)
            if (patch.int3 && in_code(patch.address))
                for (uint32_t i = 0; i < t.region->int3_capacity; ++i)
                    if (table[i].address == patch.address) __atomic_store_n(&table[i].removed, 1, __ATOMIC_RELEASE);
        std::erase_if(t.patches, [&](const Patch& p) { return in_code(p.address); });
        const bool semaphores = std::erase_if(t.semaphores, [&](const auto& e) {
            return e.first >= place.lo && e.first < place.hi;
        });
        if (semaphores) share_semaphores(t);
        t.unwinder_scanned.erase(key);
        it = t.object_places.erase(it);
    }
}

// Places the probes of every object mapped now and not seen before.
Result<void> InlineEngine::place_new_objects(Target& t, pid_t tid, bool at_start) {
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(t.pid));
    forget_unmapped(t, maps);
    std::vector<uint64_t> rips;
    UPROBE_TRY(std::vector<pid_t> tids, proc::list_threads(t.pid));
    std::map<uint64_t, bool> sigreturn_at;
    for (pid_t each : tids)
        if (auto regs = proc::get_regs(each)) {
            std::vector<uint64_t> resumes = signal_frame_rips(t.pid, maps, regs->rsp, sigreturn_at);
            resumes.push_back(regs->rip);
            for (uint64_t rip : resumes) {
                rips.push_back(rip);
                for (uint64_t next : jumps_ahead(t.pid, maps, rip)) rips.push_back(next);
            }
        }
    std::vector<bool> placed(request_.probes.size(), false);
    for (const auto& m : maps) {
        if (m.inode == 0 || !m.exec) continue;
        auto [placing, is_new] = t.object_places.try_emplace({m.device, m.inode});
        if (!is_new) continue;
        Target::ObjectPlace& place = placing->second;
        place.lo = UINT64_MAX;
        for (const auto& each : maps) {
            if (each.device != m.device || each.inode != m.inode) continue;
            if (each.exec) place.code.emplace_back(each.start, each.end);
            place.lo = std::min(place.lo, each.start);
            place.hi = std::max(place.hi, each.end);
        }
        std::string path = proc::host_path(t.pid, m.path);
        // Every probe's sites first: a jump patch placed for one probe must
        // not cover the site of another (adjacent SDT nops, say).
        for (size_t i = 0; i < request_.probes.size(); ++i) {
            if (!probe_wants(request_.probes[i], t, m, path)) continue;
            if (auto sites = sites_of(i, path))
                for (const probe::Site& site : **sites)
                    if (auto address = site_address(site, maps, m)) t.planned.insert(*address);
        }
        // Return probes last: their exit hooks may take bytes around a
        // ret, where an entry or offset probe must come first.
        std::vector<size_t> order;
        for (bool returns : {false, true})
            for (size_t i = 0; i < request_.probes.size(); ++i)
                if (request_.probes[i].location.is_return == returns) order.push_back(i);
        for (size_t i : order) {
            if (!probe_wants(request_.probes[i], t, m, path)) continue;
            placed[i] = true;
            auto inserted = insert_probe(t, tid, m, maps, i, rips);
            if (!inserted) {
                Error e = inserted.error().context("probe " + request_.probes[i].name);
                if (at_start) return e;
                note(e.message());
            }
        }
    }
    if (t.return_trampoline) insert_unwinder_hooks(t, tid, maps);  // a library with the C++ unwinder arrived
    if (at_start)
        for (size_t i = 0; i < request_.probes.size(); ++i)
            if (!placed[i])
                note("probe " + request_.probes[i].name + ": " + request_.probes[i].location.binary +
                     " is not loaded in " + std::to_string(t.pid) + " yet; pending until it is");
    return {};
}

// r_debug through the main executable's DT_DEBUG (filled in by ld.so before
// any constructor runs), and an internal int3 site at its r_brk, the
// function the dynamic linker calls around every dlopen and dlclose
// (System V gABI "Dynamic Linking", glibc <link.h>).
Result<void> InlineEngine::watch_dynamic_linker(Target& t, pid_t tid) {
    UPROBE_TRY(auto auxv, proc::read_auxv(t.pid));
    uint64_t phdr = auxv[AT_PHDR], phnum = auxv[AT_PHNUM];
    if (!phdr || !phnum || phnum > 256) return {};
    struct Phdr {
        uint32_t type, flags;
        uint64_t offset, vaddr, paddr, filesz, memsz, align;
    };
    std::vector<Phdr> headers(phnum);
    UPROBE_CHECK(proc::read_memory(t.pid, phdr, headers.data(), phnum * sizeof(Phdr)));
    std::optional<uint64_t> bias;
    uint64_t dynamic = 0;
    for (const auto& ph : headers)
        if (ph.type == 6 /* PT_PHDR */) bias = phdr - ph.vaddr;
    if (!bias) return {};
    for (const auto& ph : headers)
        if (ph.type == 2 /* PT_DYNAMIC */) dynamic = *bias + ph.vaddr;
    if (!dynamic) return {};
    uint64_t r_debug = 0;
    for (int i = 0; i < 512 && !r_debug; ++i) {
        uint64_t entry[2];
        UPROBE_CHECK(proc::read_memory(t.pid, dynamic + 16 * i, entry, sizeof entry));
        if (entry[0] == 0) break;
        if (entry[0] == 21 /* DT_DEBUG */) r_debug = entry[1];
    }
    if (!r_debug) return {};
    uint64_t r_brk = 0;
    UPROBE_CHECK(proc::read_memory(t.pid, r_debug + 16, &r_brk, sizeof r_brk));
    if (!r_brk || t.first_site_at.count(r_brk)) return {};
    t.region->r_debug = r_debug;
    return insert_internal_site(t, tid, r_brk, abi::kSiteNotify);
}

// An engine-internal int3 site (no probe of the user's) with `flags`.
Result<void> InlineEngine::insert_internal_site(Target& t, pid_t tid, uint64_t address, uint32_t flags) {
    abi::Header* h = t.region;
    if (h->site_count >= h->site_capacity) return Error("too many probe sites");
    uint8_t code[arch::kMaxInstructionLength + 1];
    UPROBE_CHECK(proc::read_memory(t.pid, address, code, sizeof code));
    const uint32_t index = h->site_count;
    abi::Site& slot = abi::sites_of(h)[index];
    std::memset(&slot, 0, sizeof slot);
    slot.probe_id = abi::kInternalProbe;
    slot.flags = flags;
    slot.address = address;
    SiteInfo info;
    info.probe_id = abi::kInternalProbe;
    info.address = address;
    t.sites.push_back(std::move(info));
    __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
    UPROBE_CHECK(insert_int3(t, tid, address, code, index));
    t.first_site_at[address] = index;
    return {};
}

// Makes and writes the trampoline of a jump site (not the jump itself).
Result<arch::Trampoline> InlineEngine::write_trampoline(Target& t, pid_t tid, uint64_t address, const JumpSite& jump) {
    // A register save, call and restore is ~350 bytes with the vector
    // registers: room for the entry's and each exit hook's.
    const uint64_t room = 1024 + 512 * jump.exits.size();
    UPROBE_TRY(uint64_t at, allocate(t, tid, address, room));
    arch::TrampolineRequest r;
    r.site = address;
    r.original = jump.code;
    r.displaced = jump.displaced;
    r.address = at;
    r.handler = t.handler;
    r.argument = t.remote_region;
    r.index = jump.first_site;
    r.save_vector_registers = jump.vectors;
    r.return_code = t.return_trampoline && jump.entry ? landings_go_to(t.return_trampoline, jump.vectors) : 0;
    r.entry = jump.entry;
    r.exits = jump.exits;
    if (request_.count_only && jump.entry) {
        // Count-only: a lock inc in the trampoline, no handler call.
        r.counter = t.remote_region + t.region->sites_offset + uint64_t{jump.first_site} * sizeof(abi::Site) +
                    offsetof(abi::Site, hits);
        t.counting_sites.insert(jump.first_site);
    }
    UPROBE_TRY(arch::Trampoline trampoline, arch::make_trampoline(r));
    if (trampoline.code.size() > room) return Error("trampoline too large");
    UPROBE_CHECK(proc::write_memory(t.pid, at, trampoline.code.data(), trampoline.code.size()));
    return trampoline;
}

// A jump site's trampoline made again (a probe joining there needs the
// vector registers saved, or a ret among its bytes an exit hook), and the
// jump sent there. Threads are stopped; one inside the old trampoline
// finishes there, as it stays mapped, and so do returns to its landing.
// Bytes displaced only now (taken in to reach a ret) keep their original
// code in place: the old trampoline still jumps back to them.
Result<void> InlineEngine::rewrite_jump(Target& t, pid_t tid, uint64_t address) {
    JumpSite& jump = t.jumps.at(address);
    UPROBE_TRY(arch::Trampoline trampoline, write_trampoline(t, tid, address, jump));
    for (Patch& patch : t.patches) {
        if (patch.address != address || patch.int3) continue;
        patch.patched.assign(trampoline.patch.begin(),
                             trampoline.patch.begin() + static_cast<long>(patch.patched.size()));
        UPROBE_CHECK(proc::write_memory(t.pid, address, patch.patched.data(), patch.patched.size()));
    }
    if (!jump.entry) return {};
    jump.landing = trampoline.landing;
    for (uint32_t i = jump.first_site;; i = abi::sites_of(t.region)[i].next - 1) {
        abi::Site& site = abi::sites_of(t.region)[i];
        if (site.flags & abi::kSiteReturnEntry) site.landing = trampoline.landing;
        if (!site.next) break;
    }
    return {};
}

// Instruction-mode return probes, for one function: each ret gets an
// exit hook calling the agent with site `index` (kSiteExit) just before it
// runs, so the function's stack is never written and its ret returns as
// the return-stack buffer predicts. Where it goes: plan_exit_hooks (an
// int3 only with `must`, --return-mode=insn).
// Without `must`, a function with a ret no jump reaches, or any exit but
// a ret (a tail jump), is left alone: false, and nothing changed (the
// caller hooks the return address at the entry instead). `dry_run` only
// says whether it would hook them.
// Probes at addresses inside the function are placed before (insert order
// in place_new_objects), so that no entry site finds its bytes taken.
Result<bool> InlineEngine::place_exits(Target& t, pid_t tid, elf::Binary& binary, const probe::Site& site,
                                       uint64_t address, uint32_t index, bool vectors, bool must,
                                       const std::vector<uint64_t>& rips, size_t* int3_exits, bool dry_run) {
    auto refuse = [&](const std::string& why) -> Result<bool> {
        if (must) return Error("--return-mode=insn: " + why);
        return false;
    };
    abi::Header* h = t.region;
    if (auto chain = t.exit_chains.find(address); chain != t.exit_chains.end()) {
        // Another return probe of this function: its hooks call this site
        // too (a framed one may be in the chain already, from the entry).
        if (dry_run) return true;
        uint32_t last = chain->second.head;
        while (abi::sites_of(h)[last].next) last = abi::sites_of(h)[last].next - 1;
        if (last != index) abi::sites_of(h)[last].next = index + 1;
        for (uint64_t at : chain->second.jumps) {
            JumpSite& jump = t.jumps.at(at);
            if (!vectors || jump.vectors) continue;
            jump.vectors = true;
            UPROBE_CHECK(rewrite_jump(t, tid, at));
        }
        return true;
    }
    const uint64_t bias = address - site.vaddr;
    ExitSurroundings around;
    around.site_at = [&t](uint64_t at) { return t.first_site_at.count(at) > 0; };
    around.jump_at_or_before = [&t](uint64_t at) -> std::optional<std::pair<uint64_t, size_t>> {
        auto it = t.jumps.upper_bound(at);
        if (it == t.jumps.begin()) return std::nullopt;
        return std::make_pair(std::prev(it)->first, std::prev(it)->second.displaced);
    };
    // No site placed or earlier int3 in the bytes, and no site still to
    // place (a return probe's entry, as all other probes come first) or
    // stopped thread after their first byte.
    around.bytes_free = [&t, &rips](uint64_t lo, uint64_t hi) {
        auto placed = t.first_site_at.lower_bound(lo);
        if (placed != t.first_site_at.end() && placed->first < hi) return false;
        auto planned = t.planned.lower_bound(lo + 1);
        if (planned != t.planned.end() && *planned < hi) return false;
        auto earlier = t.earlier_int3.lower_bound(lo);
        if (earlier != t.earlier_int3.end() && *earlier < hi) return false;
        return std::none_of(rips.begin(), rips.end(), [&](uint64_t rip) { return rip > lo && rip < hi; });
    };
    auto planned = plan_exit_hooks(binary, site, bias, around);
    if (!planned) return refuse(planned.error().message());
    if (!must && !planned->int3s.empty()) return false;
    if (dry_run) return true;

    // Then the changes.
    ExitChain chain{index, {}};
    for (auto& [start, r] : planned->jumps) {
        std::vector<arch::ExitHook> hooks;
        for (uint64_t ret : r.rets) hooks.push_back({ret, index});
        UPROBE_TRY(auto code, binary.code(start - bias, r.displaced + arch::kMaxInstructionLength));
        if (r.existing) {
            JumpSite& jump = t.jumps.at(start);
            if (r.displaced > jump.displaced) {  // bytes taken on: as in the file?
                std::vector<uint8_t> current(r.displaced - jump.displaced);
                UPROBE_CHECK(proc::read_memory(t.pid, start + jump.displaced, current.data(), current.size()));
                if (!std::equal(current.begin(), current.end(), code.begin() + static_cast<long>(jump.displaced)))
                    return Error("code at " + hex(start + jump.displaced) + " differs from the file");
            }
            jump.code.assign(code.begin(), code.end());
            jump.displaced = r.displaced;
            jump.vectors |= vectors;
            jump.exits.insert(jump.exits.end(), hooks.begin(), hooks.end());
            UPROBE_CHECK(rewrite_jump(t, tid, start));
        } else {
            std::vector<uint8_t> original(code.begin(), code.begin() + static_cast<long>(r.displaced));
            std::vector<uint8_t> current(r.displaced);
            UPROBE_CHECK(proc::read_memory(t.pid, start, current.data(), current.size()));
            if (current != original)
                return Error("code at " + hex(start) + " differs from the file (breakpoint of another debugger?)");
            JumpSite jump{std::vector<uint8_t>(code.begin(), code.end()), r.displaced, 0, vectors, 0};
            jump.entry = false;
            jump.exits = std::move(hooks);
            UPROBE_TRY(arch::Trampoline trampoline, write_trampoline(t, tid, start, jump));
            UPROBE_CHECK(proc::write_memory(t.pid, start, trampoline.patch.data(), trampoline.patch.size()));
            t.patches.push_back(Patch{start, false, original, trampoline.patch});
            t.jumps[start] = std::move(jump);
        }
        chain.jumps.push_back(start);
    }
    for (uint64_t ret : planned->chained) {
        uint32_t last = t.first_site_at.at(ret);
        while (abi::sites_of(h)[last].next) last = abi::sites_of(h)[last].next - 1;
        if (last != index) abi::sites_of(h)[last].next = index + 1;
    }
    for (uint64_t ret : planned->int3s) {
        UPROBE_TRY(auto code, binary.code(ret - bias, 1));
        UPROBE_CHECK(insert_int3(t, tid, ret, code, index));
        t.first_site_at[ret] = index;
        ++*int3_exits;
    }
    t.exit_chains[address] = std::move(chain);
    return true;
}

// Return probes: the return trampolines (once per process; any address,
// as a ret or an indirect jump reaches them) and the hooks on the C++
// unwinder. One is for return addresses overwritten on the stack (int3
// sites), the other for the jump sites' landings (arch::ReturnExit).
Result<void> InlineEngine::setup_returns(Target& t, pid_t tid) {
    if (t.return_trampoline) return {};
    UPROBE_TRY(std::vector<Mapping> maps, proc::read_maps(t.pid));
    UPROBE_TRY(uint64_t handler, find_agent_symbol(t, maps, abi::kReturnHandlerSymbol, true));
    UPROBE_TRY(t.shadow_registry, find_agent_symbol(t, maps, abi::kShadowRegistrySymbol, false));
    UPROBE_TRY(uint64_t at, allocate(t, tid, t.handler, 3 * kReturnCodeSize));
    auto put = [&](uint64_t address, arch::ReturnExit exit, bool vectors) -> Result<void> {
        std::vector<uint8_t> code = arch::make_return_trampoline(address, handler, t.remote_region, exit, vectors);
        if (code.size() > kReturnCodeSize) return Error("return trampoline too large");
        return proc::write_memory(t.pid, address, code.data(), code.size());
    };
    // An overwritten address may be any probe's, so that one saves xmm.
    UPROBE_CHECK(put(at, arch::ReturnExit::kJump, true));
    UPROBE_CHECK(put(landings_go_to(at, false), arch::ReturnExit::kRet, false));
    UPROBE_CHECK(put(landings_go_to(at, true), arch::ReturnExit::kRet, true));
    t.return_trampoline = at;
    __atomic_store_n(&t.region->return_trampoline, at, __ATOMIC_RELEASE);
    insert_unwinder_hooks(t, tid, maps);
    return {};
}

// The C++ unwinder reads return addresses from the stack, and the
// trampoline's has no unwind info (std::terminate): its entry points
// (libgcc_s, or the executable when linked statically) make the agent put
// the originals back, and the catch (libstdc++'s __cxa_begin_catch) takes
// the frames that survived again.
void InlineEngine::insert_unwinder_hooks(Target& t, pid_t tid, const std::vector<Mapping>& maps) {
    static const std::pair<const char*, uint32_t> hooks[] = {
        {"_Unwind_RaiseException", abi::kSiteUnwind}, {"_Unwind_Resume", abi::kSiteUnwind},
        {"_Unwind_ForcedUnwind", abi::kSiteUnwind},   {"_Unwind_Resume_or_Rethrow", abi::kSiteUnwind},
        {"__cxa_begin_catch", abi::kSiteCatch},
    };
    for (const auto& m : maps) {
        if (m.inode == 0 || !m.exec) continue;
        if (!t.unwinder_scanned.insert({m.device, m.inode}).second) continue;
        std::string base = m.path.substr(m.path.rfind('/') + 1);
        bool exe = m.device == t.exe_device && m.inode == t.exe_inode;
        if (!(exe || base.rfind("libgcc_s", 0) == 0 || base.rfind("libstdc++", 0) == 0)) continue;
        std::string path = proc::host_path(t.pid, m.path);
        auto binary = resolver_.binary(path);
        if (!binary) continue;
        for (const auto& [name, flags] : hooks) {
            for (const auto* symbol : (*binary)->find_functions(name)) {
                if (symbol->name != name) continue;
                auto address = runtime_address(**binary, maps, path, symbol->vaddr, m.device, m.inode);
                if (!address || t.first_site_at.count(*address)) continue;
                if (auto inserted = insert_internal_site(t, tid, *address, flags); !inserted)
                    note("return probes: exceptions through probed functions may fail: " + inserted.error().message());
            }
        }
    }
}

// Detach with frames live: every hooked return address (the return
// trampoline's, or a landing) goes back on the stack it came from
// (threads stopped). The shadow stacks stay as they are:
// a thread stopped inside the return trampoline still needs its frame. An
// address left in place is still safe: the trampoline and the agent stay,
// and a return through them resumes where it should.
void InlineEngine::restore_return_addresses(Target& t) {
    if (!t.return_trampoline || !t.shadow_registry) return;
    std::vector<uint64_t> stacks(abi::kShadowStacks);
    if (!proc::read_memory(t.pid, t.shadow_registry, stacks.data(), stacks.size() * sizeof(uint64_t))) return;
    for (uint64_t stack : stacks) {
        if (!stack) continue;
        uint32_t header[2] = {0, 0};  // owner_tid, depth
        if (!proc::read_memory(t.pid, stack, header, sizeof header)) continue;
        // A dead thread's frames are stale: its stack may be another
        // thread's now (glibc reuses thread stacks).
        const std::string task = "/proc/" + std::to_string(t.pid) + "/task/" + std::to_string(header[0]);
        if (header[0] == 0 || ::access(task.c_str(), F_OK) != 0) continue;
        const uint32_t depth = std::min(header[1], abi::kShadowDepth);
        std::vector<abi::ShadowFrame> frames(depth);
        if (depth == 0 ||
            !proc::read_memory(t.pid, stack + offsetof(abi::ShadowStack, frames), frames.data(),
                               depth * sizeof(abi::ShadowFrame)))
            continue;
        for (uint32_t i = 0; i < depth; ++i) {
            if (i > 0 && frames[i - 1].slot == frames[i].slot) continue;  // not the bottom of its chain
            uint64_t current = 0;
            if (!proc::read_memory(t.pid, frames[i].slot, &current, sizeof current)) continue;
            bool ours = current == t.return_trampoline;
            for (uint32_t j = i; j < depth && frames[j].slot == frames[i].slot; ++j) ours |= current == frames[j].landing;
            if (ours) (void)proc::write_memory(t.pid, frames[i].slot, &frames[i].original, sizeof frames[i].original);
        }
    }
}

// The agent waits at the rendezvous: stop everything, place the probes of
// the objects that came, let everything go, and tell the agent.
void InlineEngine::rescan(Target& t) {
    uint32_t seq = __atomic_load_n(&t.region->notify_seq, __ATOMIC_ACQUIRE);
    if (seq == t.acked) return;
    auto tids = stop_all(t);
    if (tids) {
        pid_t tid = std::find(tids->begin(), tids->end(), t.pid) != tids->end() ? t.pid : tids->front();
        if (auto placed = place_new_objects(t, tid, false); !placed) note(placed.error().message());
        release_all(t, *tids);
    }
    t.acked = seq;
    __atomic_store_n(&t.region->notify_ack, seq, __ATOMIC_RELEASE);
    futex(&t.region->notify_ack, FUTEX_WAKE, INT32_MAX);
}

// The sites of probe `probe_index` in the object at `path` (resolved once).
Result<const std::vector<probe::Site>*> InlineEngine::sites_of(size_t probe_index, const std::string& path) {
    auto cached = site_cache_.find({probe_index, path});
    if (cached == site_cache_.end()) {
        UPROBE_TRY(std::vector<probe::Site> sites, resolver_.resolve(request_.probes[probe_index], path));
        cached = site_cache_.emplace(std::make_pair(probe_index, path), std::move(sites)).first;
    }
    return &cached->second;
}

Result<void> InlineEngine::insert_probe(Target& t, pid_t tid, const Mapping& any, const std::vector<Mapping>& maps,
                                        size_t probe_index, const std::vector<uint64_t>& rips) {
    const ProbeSpec& spec = request_.probes[probe_index];
    std::string path = proc::host_path(t.pid, any.path);
    UPROBE_TRY(const std::vector<probe::Site>* sites, sites_of(probe_index, path));
    UPROBE_TRY(elf::Binary * binary, resolver_.binary(path));
    abi::Header* h = t.region;
    size_t int3_sites = 0, by_rets = 0, int3_exits = 0;
    auto raise_semaphore = [&](const probe::Site& site, uint64_t bias) -> Result<void> {
        if (!site.marker || !site.marker->semaphore_vaddr) return {};
        uint64_t semaphore = site.marker->semaphore_vaddr + bias;
        if (t.semaphores.count(semaphore)) return {};  // one increment per process, like the kernel's ref_ctr
        uint16_t value = 0;
        UPROBE_CHECK(proc::read_memory(t.pid, semaphore, &value, sizeof value).context("SDT semaphore"));
        ++value;
        UPROBE_CHECK(proc::write_memory(t.pid, semaphore, &value, sizeof value).context("SDT semaphore"));
        t.semaphores[semaphore]++;
        share_semaphores(t);
        return {};
    };
    // Before any site: a jump site's trampoline can call the displaced
    // instructions for a return probe only if made knowing where returns go.
    const bool any_returns = std::any_of(request_.probes.begin(), request_.probes.end(),
                                         [](const ProbeSpec& p) { return p.location.is_return; });
    if (any_returns && !request_.count_only) UPROBE_CHECK(setup_returns(t, tid));
    SitePlacement placement(spec);
    for (const probe::Site& site : *sites) {
        auto placed = [&]() -> Result<void> {
            auto found = site_address(site, maps, any);
            if (!found) return Error("address " + hex(site.vaddr) + " of " + any.path + " is not mapped executable");
            const uint64_t address = *found;
            const std::string where = "at " + hex(site.vaddr) + (site.function.empty() ? "" : " (" + site.function + ")");
            SiteInfo info;
            info.probe_id = static_cast<uint32_t>(probe_index);
            info.address = address;
            UPROBE_TRY(info.args, compile_site_args(spec, site, address, *binary, resolver_, path));
            bool needs_fpregs = false;
            std::vector<const probe::FetchProgram*> leaves;
            for (const auto& program : info.args) probe::leaf_programs(program, leaves);
            if (leaves.size() > abi::kMaxArgs)
                return Error("probe " + spec.name + " " + where + ": " + std::to_string(leaves.size()) +
                             " values to fetch; the inline engine takes at most " + std::to_string(abi::kMaxArgs));
            for (const probe::FetchProgram* leaf : leaves) {
                needs_fpregs |= leaf->needs_fpregs;
                info.programs.push_back(*leaf);
            }
            // A return probe hooks the return at the entry; counting needs
            // only the entries.
            const bool hooks_return = spec.location.is_return && !request_.count_only;
            // @entry values a shadow frame cannot keep (strings, or too
            // many) go into an entry record instead.
            bool entry_record = false;
            size_t at_entry = 0;
            // --latency: the return only adds its duration to the probe's
            // table (abi::Latency); its arguments are not read.
            const bool timed_only = hooks_return && request_.latency_only && probe_index < h->latency_probes;
            if (hooks_return && !timed_only) {
                for (const probe::FetchProgram& p : info.programs) {
                    if (!p.at_entry) continue;
                    ++at_entry;
                    entry_record |= p.format == probe::FetchFormat::String;
                }
                entry_record |= at_entry > abi::kMaxEntryValues;
            }
            if (h->site_count >= h->site_capacity || h->program_count + info.programs.size() > h->program_capacity)
                return Error("too many probe sites for the inline engine");
            const uint32_t index = h->site_count;
            abi::Site& slot = abi::sites_of(h)[index];
            std::memset(&slot, 0, sizeof slot);
            slot.probe_id = info.probe_id;
            slot.flags = request_.count_only ? uint32_t{abi::kSiteCountOnly}
                         : request_.registers ? uint32_t{abi::kSiteRegisters}
                                              : 0u;
            if (hooks_return) slot.flags |= abi::kSiteReturnEntry;
            if (timed_only) slot.flags |= abi::kSiteLatency;
            if (entry_record) slot.flags |= abi::kSiteEntryRecord;
            else if (at_entry) slot.flags |= abi::kSiteEntryValues;
            slot.address = address;
            slot.first_program = h->program_count;
            slot.arg_count = static_cast<uint32_t>(info.programs.size());
            slot.string_max = static_cast<uint32_t>(request_.string_max);
            for (size_t a = 0; a < info.programs.size(); ++a)
                abi::programs_of(h)[h->program_count + a] = info.programs[a];

            // Instruction mode (see place_exits): the return is found at the
            // function's rets. A probe that needs a frame (@entry values,
            // $duration) is also in the chain at the entry, where it keeps
            // one (kSiteExitFramed); its rets are hooked once the entry is
            // placed, so that the entry's jump can take them in.
            const bool framed = timed_only || keeps_frame(spec);
            const bool must = request_.return_mode == ReturnMode::Instructions;
            bool exit_framed = false;
            if (hooks_return && request_.return_mode != ReturnMode::Trampoline) {
                UPROBE_TRY(bool hooked, place_exits(t, tid, *binary, site, address, index, needs_fpregs, must, rips,
                                                    &int3_exits, framed));
                if (hooked) {
                    slot.flags = (slot.flags & ~uint32_t{abi::kSiteReturnEntry}) | abi::kSiteExit;
                    ++by_rets;
                    if (!framed) {
                        h->program_count += static_cast<uint32_t>(info.programs.size());
                        t.sites.push_back(std::move(info));
                        __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
                        stats_[probe_index].sites++;
                        return {};
                    }
                    slot.flags |= abi::kSiteExitFramed;
                    exit_framed = true;
                }
            }
            // The return address is taken at the entry (else not at all).
            const bool takes_return = hooks_return && !exit_framed;
            // After the entry: the rets (an int3 where a jump no longer fits).
            auto place_framed_exits = [&]() -> Result<void> {
                if (!exit_framed) return {};
                UPROBE_TRY(bool hooked, place_exits(t, tid, *binary, site, address, index, needs_fpregs, true, rips,
                                                    &int3_exits, false));
                (void)hooked;
                return {};
            };
            // An exit hook's jump at the entry itself (a short function):
            // it calls this site at the entry too.
            if (auto j = t.jumps.find(address);
                exit_framed && j != t.jumps.end() && !j->second.entry && !t.first_site_at.count(address)) {
                j->second.entry = true;
                j->second.first_site = index;
                j->second.vectors |= needs_fpregs;
                h->program_count += static_cast<uint32_t>(info.programs.size());
                t.sites.push_back(std::move(info));
                __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
                UPROBE_CHECK(rewrite_jump(t, tid, address).context(where));
                t.first_site_at[address] = index;
                UPROBE_CHECK(place_framed_exits());
                stats_[probe_index].sites++;
                return {};
            }
            if (auto existing = t.first_site_at.find(address); existing != t.first_site_at.end()) {
                // A second probe at a patched address joins its chain.
                if (t.counting_sites.count(existing->second)) info.hits_from = existing->second;
                if (auto jump = t.jumps.find(address); jump != t.jumps.end()) {
                    if (needs_fpregs && !jump->second.vectors && !request_.count_only) {
                        jump->second.vectors = true;
                        UPROBE_CHECK(rewrite_jump(t, tid, address).context(where));
                    }
                    if (takes_return) slot.landing = jump->second.landing;
                }
                uint32_t last = existing->second;
                while (abi::sites_of(h)[last].next) last = abi::sites_of(h)[last].next - 1;
                h->program_count += static_cast<uint32_t>(info.programs.size());
                t.sites.push_back(std::move(info));
                __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
                // (An instruction-mode probe may be in the chain already,
                // through an earlier one's exits.)
                if (last != index) abi::sites_of(h)[last].next = index + 1;
            } else {
                // A jump where it is safe (see arch/x86_64/trampoline.hpp),
                // else an int3 handled in the program.
                const InlineSitePlan plan = plan_inline_site(*binary, site);
                std::string no_jump = plan.no_jump;
                const size_t displaced = plan.displaced;
                if (no_jump.empty()) {
                    // The nearest sites after and before (a map: tens of thousands of sites).
                    auto after = t.first_site_at.upper_bound(address);
                    if (after != t.first_site_at.end() && after->first < address + displaced)
                        no_jump = "too close to another probe site";
                    if (auto before = t.first_site_at.lower_bound(address); before != t.first_site_at.begin() &&
                                                                            std::prev(before)->first + 5 > address)
                        no_jump = "too close to another probe site";
                    if (auto next = t.planned.upper_bound(address);
                        next != t.planned.end() && *next < address + displaced)
                        no_jump = "another probe's site is in the bytes a jump would take";
                    for (uint64_t rip : rips)
                        if (rip > address && rip < address + displaced) no_jump = "a thread is stopped inside the bytes";
                    if (auto j = t.jumps.lower_bound(address + displaced);
                        j != t.jumps.begin() && std::prev(j)->first + std::prev(j)->second.displaced > address)
                        no_jump = "a return probe's exit hook has the bytes";
                    if (auto e = t.earlier_int3.lower_bound(address);
                        e != t.earlier_int3.end() && *e < address + displaced)
                        no_jump = "an earlier session's int3 site is in the bytes (a thread may still resume from it)";
                }
                if (!no_jump.empty()) {
                    if (auto j = t.jumps.upper_bound(address);
                        j != t.jumps.begin() && std::prev(j)->first + std::prev(j)->second.displaced > address)
                        return Error("probe " + spec.name + " " + where + ": inside the bytes of a return probe's "
                                     "exit hook");
                    UPROBE_TRY(auto code, binary->code(site.vaddr, arch::kMaxInstructionLength + 1));
                    h->program_count += static_cast<uint32_t>(info.programs.size());
                    t.sites.push_back(std::move(info));
                    __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
                    UPROBE_CHECK(insert_int3(t, tid, address, code, index).context(where));
                    t.first_site_at[address] = index;
                    ++int3_sites;
                    note("probe " + spec.name + " " + where + ": int3 site (no jump: " + no_jump + ")");
                    UPROBE_CHECK(place_framed_exits());
                    stats_[probe_index].sites++;
                    UPROBE_CHECK(raise_semaphore(site, address - site.vaddr));
                    return {};
                }
                UPROBE_TRY(auto code, binary->code(site.vaddr, displaced + arch::kMaxInstructionLength));
                std::vector<uint8_t> original(code.begin(), code.begin() + static_cast<long>(displaced));
                std::vector<uint8_t> current(displaced);
                UPROBE_CHECK(proc::read_memory(t.pid, address, current.data(), current.size()));
                if (current != original)
                    return Error("code " + where + " differs from the file (breakpoint of another debugger?)");
                JumpSite jump{std::vector<uint8_t>(code.begin(), code.end()), displaced, index, needs_fpregs, 0};
                UPROBE_TRY(arch::Trampoline trampoline, write_trampoline(t, tid, address, jump).context(where));
                if (takes_return) slot.landing = trampoline.landing;
                jump.landing = trampoline.landing;
                h->program_count += static_cast<uint32_t>(info.programs.size());
                t.sites.push_back(std::move(info));
                __atomic_store_n(&h->site_count, index + 1, __ATOMIC_RELEASE);
                UPROBE_CHECK(proc::write_memory(t.pid, address, trampoline.patch.data(), trampoline.patch.size()));
                t.patches.push_back(Patch{address, false, original, trampoline.patch});
                t.jumps[address] = std::move(jump);
                t.first_site_at[address] = index;
            }
            UPROBE_CHECK(place_framed_exits());
            stats_[probe_index].sites++;
            UPROBE_CHECK(raise_semaphore(site, address - site.vaddr));
            return {};
        }();
        UPROBE_CHECK(placement.site(std::move(placed), [this](const std::string& line) { note(line); }));
    }
    UPROBE_CHECK(placement.finish());
    const size_t count = placement.placed();
    note("probe " + spec.name + ": " + std::to_string(count) + " site" + (count == 1 ? "" : "s") + " in " + any.path +
         " of " + std::to_string(t.pid) + " (" + std::to_string(count - int3_sites) + " jump, " +
         std::to_string(int3_sites) + " int3" +
         (by_rets ? "; returns hooked at the rets of " + std::to_string(by_rets) + " function" +
                        (by_rets == 1 ? "" : "s") + (int3_exits ? ", " + std::to_string(int3_exits) + " by int3" : "")
                  : "") +
         ")");
    return {};
}

}  // namespace uprobe::engine::inline_engine
