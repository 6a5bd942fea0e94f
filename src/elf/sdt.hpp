// SystemTap SDT (USDT) markers: the probe points programs declare with
// <sys/sdt.h>, recorded in the .note.stapsdt section.
//
// Each marker is a `nop` at `vaddr` plus a note holding its provider, name,
// an optional semaphore (a 16-bit counter the program tests before
// computing expensive arguments; a tracer increments it while attached) and
// the argument text the assembler produced, e.g. "-4@%edi 8@-16(%rbp)".
//
// Argument grammar (x86-64, AT&T syntax, as sys/sdt.h emits it):
//
//   ARG      [SIZE@]OPERAND
//   SIZE     [-]N[f]    N in {1,2,4,8} bytes; '-' means signed; 'f' means a
//                       floating-point value (newer sdt.h: "8f@%xmm0")
//   OPERAND  %REG                    register ("%edi", "%r12", "%xmm0")
//            $IMM                    immediate ("$5", "$-1", "$0x10")
//            [DISP](BASE[,INDEX[,S]]) memory ("-16(%rbp)", "(%rax,%rdx,8)")
//            SYM[+-N](%rip)          symbol-relative memory ("foo+8(%rip)")
//            SYM[+-N] | N            absolute memory (non-PIC code)
//
// Without a SIZE@ prefix (old sdt.h versions) an argument is 8 bytes and
// unsigned, as bcc and bpftrace read it. Anything else (x87 %st registers,
// segment overrides, symbolic immediates) is refused with a clear message
// rather than guessed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "uprobe/result.hpp"

namespace uprobe::elf {

struct SdtOperand {
    enum class Kind { Register, Memory, Immediate };
    Kind kind = Kind::Register;
    std::string reg;      // Register: e.g. "rdi", "edi", "dil" (no '%'); Memory: base register or "" (may be "rip")
    std::string index;    // Memory: index register or ""
    uint8_t scale = 1;    // Memory: 1, 2, 4 or 8
    int64_t disp = 0;     // Memory: displacement (the +N of SYM+N when symbol is set)
    std::string symbol;   // Memory: symbol in `sym+8(%rip)` and absolute forms, or ""
    int64_t imm = 0;      // Immediate ($5)
};

struct SdtArg {
    uint8_t size = 8;        // bytes: 1, 2, 4 or 8
    bool is_signed = false;
    bool is_float = false;   // "8f@..." (the operand is then usually %xmmN)
    SdtOperand operand;
    std::string text;        // the argument as written in the note
};

struct SdtMarker {
    std::string provider, name;
    uint64_t vaddr = 0;            // link-time address of the marker's nop
    uint64_t semaphore_vaddr = 0;  // 0: none
    // The parsed arguments. When any argument fails to parse, this is empty
    // and parse_sdt_args(args_text) gives the reason.
    std::vector<SdtArg> args;
    std::string args_text;
};

// Parses one argument, "-4@%edi". Errors name the argument and the problem.
Result<SdtArg> parse_sdt_arg(std::string_view text);
// Parses a note's whole argument string (arguments separated by spaces);
// an empty string gives no arguments.
Result<std::vector<SdtArg>> parse_sdt_args(std::string_view text);

// Whether `name` (without '%') is an x86-64 register an SDT operand may use.
bool is_sdt_register(std::string_view name);

}  // namespace uprobe::elf
