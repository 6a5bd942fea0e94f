// Opens arbitrary bytes as an ELF file and reads everything Binary offers;
// any crash, hang or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "elf/binary.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // The debug file search must look only at the input, never the host.
    setenv("UPROBE_DEBUG_ROOT", "/nonexistent", 1);
    unsetenv("DEBUGINFOD_URLS");
    auto binary = uprobe::elf::Binary::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz");
    if (!binary) return 0;
    for (const auto& s : binary->load_segments()) {
        (void)binary->vaddr_to_offset(s.vaddr);
        (void)binary->offset_to_vaddr(s.offset);
        (void)binary->is_executable(s.vaddr);
        (void)binary->code(s.vaddr, 16);
    }
    (void)binary->build_id();
    (void)binary->debuglink();
    (void)binary->debug_file();
    for (const auto& f : binary->functions()) (void)binary->function_containing(f.vaddr + f.size / 2);
    (void)binary->find_functions("*main*");
    (void)binary->data_symbol("main");
    for (const auto& m : binary->sdt_markers()) (void)binary->is_executable(m.vaddr);
    return 0;
}
