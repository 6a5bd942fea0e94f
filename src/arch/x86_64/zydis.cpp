#include "arch/x86_64/zydis.hpp"

#include <cstdio>

namespace uprobe::arch::detail {

namespace {

struct Tools {
    ZydisDecoder decoder;
    ZydisFormatter intel;
    ZydisFormatter att;
    Tools() {
        ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
        ZydisFormatterInit(&intel, ZYDIS_FORMATTER_STYLE_INTEL);
        ZydisFormatterInit(&att, ZYDIS_FORMATTER_STYLE_ATT);
    }
};

const Tools& tools() {
    static const Tools instance;
    return instance;
}

}  // namespace

bool decode(std::span<const uint8_t> code, Decoded& out) {
    if (code.empty()) return false;
    return ZYAN_SUCCESS(
        ZydisDecoderDecodeFull(&tools().decoder, code.data(), code.size(), &out.insn, out.operands));
}

std::string format(const Decoded& decoded, uint64_t address, bool att) {
    char buffer[256];
    const ZydisFormatter& formatter = att ? tools().att : tools().intel;
    if (!ZYAN_SUCCESS(ZydisFormatterFormatInstruction(&formatter, &decoded.insn, decoded.operands,
                                                      decoded.insn.operand_count_visible, buffer,
                                                      sizeof buffer, address, nullptr))) {
        return "(unformattable)";
    }
    return buffer;
}

std::string hex(uint64_t value) {
    char text[24];
    std::snprintf(text, sizeof text, "%#llx", static_cast<unsigned long long>(value));
    return text;
}

std::string hex_bytes(std::span<const uint8_t> code, size_t max) {
    std::string text;
    for (size_t i = 0; i < code.size() && i < max; ++i) {
        char byte[4];
        std::snprintf(byte, sizeof byte, "%02x", code[i]);
        if (!text.empty()) text += ' ';
        text += byte;
    }
    return text;
}

}  // namespace uprobe::arch::detail
