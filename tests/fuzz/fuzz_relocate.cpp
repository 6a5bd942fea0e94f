// Arbitrary bytes through every entry point of uprobe_arch: decode, sweep,
// classify and relocate to near and far slots. Any result is fine; a crash,
// sanitizer report or an oversized slot is not.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "arch/x86_64/decode.hpp"
#include "arch/x86_64/relocate.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace uprobe::arch;
    std::span<const uint8_t> bytes(data, size);
    constexpr uint64_t kAddress = 0x555555554000;
    (void)decode_one(bytes, kAddress);
    (void)decode_one(bytes, kAddress, Syntax::att);
    (void)instruction_boundaries(bytes, kAddress);
    (void)classify_branch(bytes, kAddress);
    const uint64_t slots[] = {kAddress + 0x10000, kAddress - 0x7ffff000, kAddress + 0x100000000,
                              0x1000, 0xfffffffffffff000};
    for (uint64_t slot : slots) {
        auto relocated = relocate(bytes, kAddress, slot);
        if (relocated.ok() && relocated->code.size() > kMaxOutOfLineSize) std::abort();
    }
    return 0;
}
