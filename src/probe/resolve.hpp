// The resolver: probe locations to concrete sites in one object file.
//
// Resolution is per object, in link-time terms (virtual addresses and file
// offsets), independent of any process: an engine maps a site into a
// process by finding the mapping of the object's file (matched by device
// and inode) that covers site.file_offset.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "elf/sdt.hpp"
#include "uprobe/result.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::elf { class Binary; }
namespace uprobe::dwarf { class DebugInfo; }

namespace uprobe::probe {

class CallFrames;

// One place to put a breakpoint.
struct Site {
    uint64_t vaddr = 0;          // link-time virtual address in the object
    uint64_t file_offset = 0;    // file offset of that instruction
    std::string function;        // containing function (demangled), or ""
    uint64_t function_offset = 0;
    uint64_t function_vaddr = 0; // start and size of the containing function,
    uint64_t function_size = 0;  // for return probes and boundary checks
    std::string source;          // "file.c:42" when debug info knows it
    std::optional<elf::SdtMarker> marker;  // Sdt locations
};

// Whether any argument names DWARF variables ($params, $vars, `req->len`).
// Function-entry probes with such arguments are placed after the
// prologue, where -O0 code has stored the parameters in their homes.
bool uses_dwarf_names(const ProbeSpec& spec);

class Resolver {
public:
    Resolver();
    ~Resolver();
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    // Opens (once, then cached by path) an object file and its debug info.
    Result<elf::Binary*> binary(const std::string& path);
    // The object's DWARF, from itself or a separate debug file; nullptr
    // when it has none.
    dwarf::DebugInfo* debug_info(const std::string& path);
    // Why debug_info(path) is nullptr ("... has no debug info (install ...)").
    std::string debug_info_error(const std::string& path);
    // Call frame information of the object (for frame bases of variables);
    // nullptr when it has none.
    const CallFrames* call_frames(const std::string& path);

    // Every site of `spec` in the object at `path`. Fails with one clear
    // line (naming close matches) when the location matches nothing there,
    // or when an offset is not on an instruction boundary.
    Result<std::vector<Site>> resolve(const ProbeSpec& spec, const std::string& path);

    // Whether a spec's BIN part names the object at `path`: a path (same
    // file), or a library name ("libc" matches libc.so.6 and libc-2.36.so).
    // An empty BIN means the main executable and is decided by the caller.
    static bool binary_matches(const std::string& spec_binary, const std::string& path);

private:
    struct Object;
    std::map<std::string, std::unique_ptr<Object>> objects_;
};

}  // namespace uprobe::probe
