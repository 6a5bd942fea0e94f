// One ELF object file (executable or shared library) in link-time terms:
// its loadable segments, functions, SDT markers and where its debug info
// lives. Independent of any process: an engine maps what this returns into
// a process by file offset (runtime = mapping.start + offset - mapping.offset).
//
// Only x86-64 ET_EXEC and ET_DYN files are accepted. The file is mapped
// read-only through libelf; symbol tables, markers and the debug file are
// read lazily on first use and cached, so listing costs nothing until asked.
// A Binary is movable, not copyable, and not thread-safe (the lazy caches
// are filled without locking).
//
// Corrupt input never crashes: a malformed section is skipped, and what can
// be read is returned.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "elf/sdt.hpp"
#include "uprobe/result.hpp"

typedef struct Elf Elf;  // libelf's handle, as <libelf.h> declares it

namespace uprobe::elf {

class Binary {
public:
    // Opens and validates the file. Errors, each "PATH: reason":
    //   "no such file", "is a directory", "not an ELF file",
    //   "truncated ELF file",
    //   "ELF for another architecture (ARM aarch64); uprobe supports x86-64",
    //   "not an executable or shared object (relocatable object)" (ET_REL, ET_CORE)
    static Result<Binary> open(const std::string& path);
    // The same checks on bytes in memory (fuzzing, MiniDebugInfo). `name`
    // stands in for the path in messages. There is no directory to search,
    // so debug_file() finds only the file itself, build-id and debuginfod.
    static Result<Binary> from_bytes(std::vector<uint8_t> bytes, std::string name);

    Binary(Binary&&) noexcept;
    Binary& operator=(Binary&&) noexcept;
    ~Binary();

    const std::string& path() const;
    bool is_pie_or_shared() const;  // ET_DYN
    uint16_t type() const;          // ET_EXEC or ET_DYN
    // libelf's handle and the descriptor behind it, for layers that read
    // more (libdw's dwarf_begin_elf). Owned by this Binary. fd() is -1 for
    // from_bytes binaries.
    Elf* elf() const;
    int fd() const;

    struct Segment {
        uint64_t vaddr = 0, memsz = 0, offset = 0, filesz = 0;
        uint32_t flags = 0;  // PF_R | PF_W | PF_X
    };
    // PT_LOAD program headers, in file order.
    const std::vector<Segment>& load_segments() const;

    // Exact translation through the PT_LOAD headers: p_vaddr and p_offset
    // differ in most PIEs' later segments, so vaddr - base is not an offset.
    // nullopt outside every segment's file-backed part (e.g. .bss).
    std::optional<uint64_t> vaddr_to_offset(uint64_t vaddr) const;
    std::optional<uint64_t> offset_to_vaddr(uint64_t offset) const;
    bool is_executable(uint64_t vaddr) const;  // inside a PF_X segment
    // Bytes of the file at `vaddr`, clipped to the end of the segment's file
    // contents (so possibly shorter than `length`). Fails outside every
    // segment.
    Result<std::span<const uint8_t>> code(uint64_t vaddr, size_t length) const;

    // NT_GNU_BUILD_ID as lower-case hex, "" when none.
    std::string build_id() const;

    // Whether the object is marked as compatible with hardware shadow
    // stacks (GNU_PROPERTY_X86_FEATURE_1_SHSTK in .note.gnu.property, as
    // `ld -z shstk` or linking only CET-built objects leaves it). glibc
    // turns shadow stacks on only for programs whose objects all say so.
    bool marks_shadow_stack() const;

    struct DebugLink {
        std::string file;
        uint32_t crc = 0;
    };
    std::optional<DebugLink> debuglink() const;  // .gnu_debuglink

    struct Symbol {
        std::string name;       // as in the symbol table (mangled)
        std::string demangled;  // demangle(name); equal to name for C symbols
        uint64_t vaddr = 0;
        uint64_t size = 0;
        bool local = false;     // STB_LOCAL
        bool ifunc = false;     // STT_GNU_IFUNC: vaddr is the resolver
        bool from_debug_file = false;  // only the separate debug file or MiniDebugInfo has it
    };
    // Every defined STT_FUNC and STT_GNU_IFUNC symbol of .symtab, .dynsym,
    // the debug file's .symtab and MiniDebugInfo (.gnu_debugdata), merged:
    // one entry per (name, vaddr), so aliases stay; sorted by vaddr, then
    // name. Symbol versions are not part of the name ("malloc", not
    // "malloc@@GLIBC_2.2.5"). Reading the debug file may take the
    // debuginfod path of debug_file().
    const std::vector<Symbol>& functions() const;
    // Functions whose mangled or demangled name equals or glob-matches
    // `pattern`; the demangled name also matches without its parameter
    // list ("ns::f" finds "ns::f(int)"). In address order, no duplicates.
    std::vector<const Symbol*> find_functions(std::string_view pattern) const;
    // Functions whose symbol name is exactly `name` (no demangling, no
    // glob), in address order: an indexed lookup, for a caller that asks
    // once per site of thousands.
    std::vector<const Symbol*> functions_named(std::string_view name) const;
    // The function whose [vaddr, vaddr + size) holds `vaddr` (the innermost
    // when they nest; a global name over a local alias), or nullptr.
    const Symbol* function_containing(uint64_t vaddr) const;
    // Address of any defined symbol (objects too) named exactly `name`,
    // for @SYMBOL fetches.
    std::optional<uint64_t> data_symbol(std::string_view name) const;

    // Markers of .note.stapsdt, in note order, with vaddr and semaphore
    // adjusted by (.stapsdt.base's address - the base the note recorded), as
    // prelink may have moved the file.
    const std::vector<SdtMarker>& sdt_markers() const;

    // The separate file with debug info, searched in this order:
    //   1. the file itself, when it has .debug_info ("itself");
    //   2. ROOT/.build-id/NN/REST.debug ("build-id");
    //   3. .gnu_debuglink: DIR/FILE, DIR/.debug/FILE, ROOT/DIR/FILE where
    //      DIR is the directory of the binary's real path; the CRC32 must
    //      match, and the build-id too when both have one ("debuglink");
    //   4. debuginfod_find_debuginfo, only when DEBUGINFOD_URLS is set, with
    //      progress on stderr when it is a terminal ("debuginfod").
    // ROOT is /usr/lib/debug, or $UPROBE_DEBUG_ROOT when set (for tests).
    // nullopt: no debug info anywhere. Error: only when nothing was found
    // and a candidate was refused — "debug file X does not match Y (CRC
    // mismatch)" (or "build-id mismatch"). Searched once, then cached.
    struct DebugFile {
        std::string path;
        std::string found_by;  // "itself", "build-id", "debuglink", "debuginfod"
    };
    Result<std::optional<DebugFile>> debug_file() const;
    // debug_file() opened as a Binary (this object itself when found_by is
    // "itself"); nullptr when there is none or it fails to open.
    const Binary* debug_binary() const;

private:
    struct Impl;
    explicit Binary(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// crc32 of a whole file as .gnu_debuglink records it (zlib's crc32).
Result<uint32_t> file_crc32(const std::string& path);

}  // namespace uprobe::elf
