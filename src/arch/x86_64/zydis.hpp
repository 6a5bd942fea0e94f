// Private: the one Zydis decoder/formatter setup shared by this folder.
#pragma once

#include <Zydis/Zydis.h>

#include <cstdint>
#include <span>
#include <string>

namespace uprobe::arch::detail {

struct Decoded {
    ZydisDecodedInstruction insn;
    ZydisDecodedOperand operands[ZYDIS_MAX_OPERAND_COUNT];
};

// Decodes the first instruction of `code` in 64-bit mode; false when the
// bytes are not a valid instruction or end inside one.
bool decode(std::span<const uint8_t> code, Decoded& out);

// Formats with absolute branch targets, as if the instruction sat at `address`.
std::string format(const Decoded& decoded, uint64_t address, bool att);

// "0x401000" for messages.
std::string hex(uint64_t value);

// "0f 0b ff" for messages, at most `max` bytes.
std::string hex_bytes(std::span<const uint8_t> code, size_t max);

}  // namespace uprobe::arch::detail
