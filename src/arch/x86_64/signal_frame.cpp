#include "arch/x86_64/signal_frame.hpp"

#include <algorithm>

namespace uprobe::arch {

bool is_sigreturn_code(std::span<const uint8_t> code) {
    static constexpr uint8_t kMovRax[] = {0x48, 0xC7, 0xC0, 0x0F, 0x00, 0x00, 0x00, 0x0F, 0x05};
    static constexpr uint8_t kMovEax[] = {0xB8, 0x0F, 0x00, 0x00, 0x00, 0x0F, 0x05};
    auto starts_with = [&](std::span<const uint8_t> pattern) {
        return code.size() >= pattern.size() && std::equal(pattern.begin(), pattern.end(), code.begin());
    };
    return starts_with(kMovRax) || starts_with(kMovEax);
}

}  // namespace uprobe::arch
