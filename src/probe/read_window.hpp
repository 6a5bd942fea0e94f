// The memory reads of one evaluation (one hit's arguments) made a 64-byte
// line at a time: the in-process agent reads through process_vm_readv(2)
// on itself, so that a bad pointer returns an error instead of faulting
// the program, and that call costs ~0.9 us on a VM; a struct's
// neighbouring fields then cost one call together. Allocation-free, for
// the agent (src/agent/agent.cpp).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace uprobe::probe {

// `Raw` is callable as raw(address, out, size) -> bytes read (a prefix of
// the range, 0 when its first byte cannot be read), as process_vm_readv
// returns.
template <class Raw>
class ReadWindow {
public:
    explicit ReadWindow(Raw raw) : raw_(raw) {}

    // Whether all `n` bytes at `address` could be read into `out`. A window
    // never crosses a page, so it is readable as a whole or not at all, and
    // filling it touches no page the caller did not ask for; a read across
    // two pages goes to `raw` as it is.
    bool read(uint64_t address, void* out, size_t n) {
        const uint64_t offset = address - base_;  // wraps when below the window
        if (offset >= length_ || n > length_ - offset) {
            const uint64_t page_end = (address | (kPage - 1)) + 1;  // 0: the last page
            if (n > sizeof bytes_ || page_end == 0 || n > page_end - address) return raw_(address, out, n) == n;
            base_ = address & ~uint64_t{sizeof bytes_ - 1};
            if (n > base_ + sizeof bytes_ - address) base_ = address;  // across two lines: from the read on
            const uint64_t room = page_end - base_;
            length_ = raw_(base_, bytes_, room < sizeof bytes_ ? room : sizeof bytes_);
            if (address - base_ + n > length_) return false;
        }
        auto* to = static_cast<uint8_t*>(out);
        for (size_t i = 0; i < n; ++i) to[i] = bytes_[address - base_ + i];
        return true;
    }

private:
    static constexpr uint64_t kPage = 4096;
    [[no_unique_address]] Raw raw_;
    uint64_t base_ = 0;
    uint64_t length_ = 0;
    // 64 bytes: a larger window made the agent's hit frame big enough to
    // cost ~1 ns on every hit, register-only probes included.
    uint8_t bytes_[64];
};

}  // namespace uprobe::probe
