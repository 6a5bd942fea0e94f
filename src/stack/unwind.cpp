#include "stack/unwind.hpp"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>

#include <cinttypes>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>

#include "base/strings.hpp"

namespace uprobe::stack {
namespace {

struct DwflCloser {
    void operator()(Dwfl* dwfl) const { dwfl_end(dwfl); }
};

std::string dwfl_error() { return dwfl_errmsg(-1) ? dwfl_errmsg(-1) : "unknown libdwfl error"; }

const char* die_name(Dwarf_Die* die) {
    Dwarf_Attribute attr;
    const char* name = nullptr;
    if (dwarf_attr_integrate(die, DW_AT_linkage_name, &attr) || dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attr))
        name = dwarf_formstring(&attr);
    if (!name) name = dwarf_diename(die);
    if (!name && dwarf_attr_integrate(die, DW_AT_name, &attr)) name = dwarf_formstring(&attr);
    return name;
}

struct Walk {
    Dwfl* dwfl = nullptr;
    std::vector<Frame> frames;
    size_t physical = 0;
    size_t max_frames = 64;
};

// Adds the frames of one pc: the functions inlined there (innermost first,
// each placed at the call site of the one inside it) and the real one.
void add_frames(Walk& walk, Dwarf_Addr pc, Dwarf_Addr lookup) {
    Frame base;
    base.pc = pc;
    Dwfl_Module* module = dwfl_addrmodule(walk.dwfl, lookup);
    if (!module) {
        walk.frames.push_back(base);
        return;
    }
    const char* path = nullptr;
    dwfl_module_info(module, nullptr, nullptr, nullptr, nullptr, nullptr, &path, nullptr);
    if (path) base.object = std::filesystem::path(path).filename();
    GElf_Off offset = 0;
    GElf_Sym symbol;
    if (const char* name = dwfl_module_addrinfo(module, lookup, &offset, &symbol, nullptr, nullptr, nullptr)) {
        std::string_view plain = name;
        plain = plain.substr(0, plain.find('@'));  // "__libc_start_main@@GLIBC_2.34"
        base.function = demangle(plain);
        base.offset = offset + (pc - lookup);
    }
    if (Dwfl_Line* line = dwfl_module_getsrc(module, lookup)) {
        int number = 0;
        if (const char* file = dwfl_lineinfo(line, nullptr, &number, nullptr, nullptr, nullptr)) {
            base.file = file;
            base.line = number;
        }
    }
    Dwarf_Addr bias = 0;
    Dwarf_Die* cu = dwfl_module_addrdie(module, lookup, &bias);
    Dwarf_Die* scopes = nullptr;
    int count = cu ? dwarf_getscopes(cu, lookup - bias, &scopes) : 0;
    std::string file = base.file;
    int line = base.line;
    for (int i = 0; i < count; ++i) {
        if (dwarf_tag(&scopes[i]) != DW_TAG_inlined_subroutine) continue;
        Frame inlined = base;
        inlined.inlined = true;
        const char* name = die_name(&scopes[i]);
        inlined.function = name ? demangle(name) : "";
        inlined.offset = 0;
        inlined.file = file;
        inlined.line = line;
        walk.frames.push_back(inlined);
        // The next frame out is at this instance's call site.
        Dwarf_Attribute attr;
        Dwarf_Word call_line = 0, call_file = 0;
        if (dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &attr), &call_line) == 0) line = int(call_line);
        Dwarf_Files* files = nullptr;
        if (dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &attr), &call_file) == 0 &&
            dwarf_getsrcfiles(cu, &files, nullptr) == 0)
            if (const char* f = dwarf_filesrc(files, call_file, nullptr, nullptr)) file = f;
    }
    std::free(scopes);
    base.file = file;
    base.line = line;
    walk.frames.push_back(base);
}

int on_frame(Dwfl_Frame* state, void* arg) {
    auto& walk = *static_cast<Walk*>(arg);
    Dwarf_Addr pc = 0;
    bool activation = false;
    if (!dwfl_frame_pc(state, &pc, &activation)) return DWARF_CB_ABORT;
    // A return address points after the call: look up the call itself.
    add_frames(walk, pc, activation ? pc : pc - 1);
    return ++walk.physical >= walk.max_frames ? DWARF_CB_ABORT : DWARF_CB_OK;
}

using DwflPtr = std::unique_ptr<Dwfl, DwflCloser>;

Result<DwflPtr> open_process(pid_t pid) {
    static char* debuginfo_path = nullptr;
    static const Dwfl_Callbacks callbacks = {
        dwfl_linux_proc_find_elf,
        dwfl_standard_find_debuginfo,
        nullptr,
        &debuginfo_path,
    };
    DwflPtr dwfl(dwfl_begin(&callbacks));
    if (!dwfl) return Error("libdwfl: " + dwfl_error());
    if (dwfl_linux_proc_report(dwfl.get(), pid) != 0) return Error("reading the modules of " + std::to_string(pid));
    if (dwfl_report_end(dwfl.get(), nullptr, nullptr) != 0) return Error("libdwfl: " + dwfl_error());
    // The thread is stopped by us: libdwfl reads its registers and stack
    // with ptrace from this (the tracer's) thread.
    if (dwfl_linux_proc_attach(dwfl.get(), pid, true) != 0)
        return Error("unwinding " + std::to_string(pid) + ": " + dwfl_error());
    return dwfl;
}

Result<std::vector<Frame>> walk_thread(Dwfl* dwfl, pid_t tid, size_t max_frames) {
    Walk walk;
    walk.dwfl = dwfl;
    walk.max_frames = max_frames;
    // The walk ends with an error at the outermost frame (no CFI for it or
    // a zero return address); whatever was found until then is the stack.
    (void)dwfl_getthread_frames(dwfl, tid, on_frame, &walk);
    if (walk.frames.empty()) return Error("no frames for thread " + std::to_string(tid) + ": " + dwfl_error());
    return walk.frames;
}

}  // namespace

Result<std::vector<Frame>> unwind_stopped(pid_t pid, pid_t tid, size_t max_frames) {
    UPROBE_TRY(DwflPtr dwfl, open_process(pid));
    return walk_thread(dwfl.get(), tid, max_frames);
}

struct Unwinder::Impl {
    std::map<pid_t, DwflPtr> processes;
};

Unwinder::Unwinder() : impl_(std::make_unique<Impl>()) {}
Unwinder::~Unwinder() = default;

void Unwinder::forget(pid_t pid) { impl_->processes.erase(pid); }

Result<std::vector<Frame>> Unwinder::unwind(pid_t pid, pid_t tid, size_t max_frames) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto it = impl_->processes.find(pid);
        if (it == impl_->processes.end()) {
            UPROBE_TRY(DwflPtr dwfl, open_process(pid));
            it = impl_->processes.emplace(pid, std::move(dwfl)).first;
        }
        auto frames = walk_thread(it->second.get(), tid, max_frames);
        // The probe's own pc in no known module: the mappings changed.
        bool stale = !frames || frames->front().object.empty();
        if (!stale || attempt == 1) return frames;
        impl_->processes.erase(it);  // mappings changed (dlopen, exec): read them again
    }
    return Error("unreachable");
}

std::string describe(const Frame& frame) {
    char pc[32];
    std::snprintf(pc, sizeof pc, "0x%" PRIx64, frame.pc);
    std::string text = pc;
    text += " ";
    if (frame.function.empty()) {
        text += "??";
    } else {
        text += frame.function;
        if (!frame.inlined && frame.offset) {
            char off[32];
            std::snprintf(off, sizeof off, "+0x%" PRIx64, frame.offset);
            text += off;
        }
    }
    if (frame.inlined) text += " (inlined)";
    if (!frame.file.empty()) text += " at " + frame.file + ":" + std::to_string(frame.line);
    else if (!frame.object.empty()) text += " in " + frame.object;
    return text;
}

}  // namespace uprobe::stack
