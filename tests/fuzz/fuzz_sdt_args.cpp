// parse_sdt_args on arbitrary text: must return a value or an error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "elf/sdt.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto args = uprobe::elf::parse_sdt_args(std::string_view(reinterpret_cast<const char*>(data), size));
    if (args) {
        for (const auto& arg : *args) (void)uprobe::elf::parse_sdt_arg(arg.text);
    }
    return 0;
}
