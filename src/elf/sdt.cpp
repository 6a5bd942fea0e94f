#include "elf/sdt.hpp"

#include <array>
#include <cctype>
#include <optional>

#include "base/strings.hpp"

namespace uprobe::elf {

namespace {

constexpr std::array<std::string_view, 70> kRegisters = {
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp",
    "r8d", "r9d", "r10d", "r11d", "r12d", "r13d", "r14d", "r15d",
    "ax", "bx", "cx", "dx", "si", "di", "bp", "sp",
    "r8w", "r9w", "r10w", "r11w", "r12w", "r13w", "r14w", "r15w",
    "al", "bl", "cl", "dl", "sil", "dil", "bpl", "spl",
    "r8b", "r9b", "r10b", "r11b", "r12b", "r13b", "r14b", "r15b",
    "ah", "bh", "ch", "dh", "rip", "eip",
};

bool is_xmm(std::string_view name) {
    if (!starts_with(name, "xmm") || name.size() < 4 || name.size() > 5) return false;
    auto n = parse_uint(name.substr(3));
    return n && *n < 16 && (name.size() == 4 || name[3] != '0');
}

// A cursor over one argument's text.
class Scanner {
public:
    explicit Scanner(std::string_view text) : text_(text) {}
    bool done() const { return pos_ >= text_.size(); }
    char peek() const { return done() ? '\0' : text_[pos_]; }
    bool eat(char c) {
        if (peek() != c) return false;
        ++pos_;
        return true;
    }
    std::string_view rest() const { return text_.substr(pos_); }
    size_t pos() const { return pos_; }
    void advance(size_t n) { pos_ += n; }

    // A signed decimal or 0x-hexadecimal number.
    std::optional<int64_t> number() {
        size_t start = pos_;
        bool negative = false;
        if (peek() == '-' || peek() == '+') negative = text_[pos_++] == '-';
        size_t digits = pos_;
        if (rest().size() >= 2 && text_[pos_] == '0' && (text_[pos_ + 1] == 'x' || text_[pos_ + 1] == 'X')) {
            pos_ += 2;
            while (std::isxdigit(static_cast<unsigned char>(peek()))) ++pos_;
        } else {
            while (std::isdigit(static_cast<unsigned char>(peek()))) ++pos_;
        }
        auto value = parse_uint(text_.substr(digits, pos_ - digits));
        if (!value) {
            pos_ = start;
            return std::nullopt;
        }
        // Two's complement wrap is what the assembler meant for large values.
        uint64_t magnitude = *value;
        return static_cast<int64_t>(negative ? 0 - magnitude : magnitude);
    }

    std::string_view identifier() {
        size_t start = pos_;
        auto is_start = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == '.'; };
        if (!is_start(peek())) return {};
        while (!done() && (is_start(peek()) || std::isdigit(static_cast<unsigned char>(peek())) || peek() == '$' ||
                           peek() == '@'))
            ++pos_;
        return text_.substr(start, pos_ - start);
    }

private:
    std::string_view text_;
    size_t pos_ = 0;
};

Error arg_error(std::string_view text, std::string_view why) {
    return Error("SDT argument \"" + std::string(text) + "\": " + std::string(why));
}

Result<std::string> parse_register(Scanner& in, std::string_view text, bool allow_xmm) {
    if (!in.eat('%')) return arg_error(text, "expected a register starting with '%'");
    std::string_view rest = in.rest();
    size_t length = 0;
    while (std::isalnum(static_cast<unsigned char>(in.peek()))) {
        in.advance(1);
        ++length;
    }
    std::string name(rest.substr(0, length));
    if (is_sdt_register(name) || (allow_xmm && is_xmm(name))) return name;
    if (in.peek() == ':') return arg_error(text, "segment-relative operands are not supported");
    return arg_error(text, "unsupported register %" + name);
}

}  // namespace

bool is_sdt_register(std::string_view name) {
    for (auto reg : kRegisters)
        if (reg == name) return true;
    return false;
}

Result<SdtArg> parse_sdt_arg(std::string_view text) {
    SdtArg arg;
    arg.text = std::string(text);
    if (text.empty()) return arg_error(text, "empty argument");

    std::string_view operand_text = text;
    if (auto at = text.find('@'); at != std::string_view::npos && text[0] != '%' && text[0] != '$') {
        std::string_view size_text = text.substr(0, at);
        // Symbols may contain '@' (foo@GOTPCREL); a size prefix is only digits.
        bool looks_like_size = !size_text.empty();
        for (char c : size_text)
            if (!std::isdigit(static_cast<unsigned char>(c)) && c != '-' && c != 'f') looks_like_size = false;
        if (looks_like_size) {
            if (size_text[0] == '-') {
                arg.is_signed = true;
                size_text.remove_prefix(1);
            }
            if (!size_text.empty() && size_text.back() == 'f') {
                arg.is_float = true;
                size_text.remove_suffix(1);
            }
            auto size = parse_uint(size_text);
            if (!size || (*size != 1 && *size != 2 && *size != 4 && *size != 8))
                return arg_error(text, "size must be 1, 2, 4 or 8 bytes");
            arg.size = static_cast<uint8_t>(*size);
            operand_text = text.substr(at + 1);
        }
    }
    if (operand_text.empty()) return arg_error(text, "missing operand after '@'");

    Scanner in(operand_text);
    SdtOperand& op = arg.operand;
    if (in.peek() == '%') {
        op.kind = SdtOperand::Kind::Register;
        UPROBE_TRY(op.reg, parse_register(in, text, true));
        if (op.reg == "rip" || op.reg == "eip") return arg_error(text, "the instruction pointer is not a value");
    } else if (in.eat('$')) {
        op.kind = SdtOperand::Kind::Immediate;
        auto value = in.number();
        if (!value) return arg_error(text, "immediate must be a number");
        op.imm = *value;
    } else {
        op.kind = SdtOperand::Kind::Memory;
        bool has_displacement = false;
        if (auto symbol = in.identifier(); !symbol.empty()) {
            op.symbol = std::string(symbol);
            has_displacement = true;
            if (in.peek() == '+' || in.peek() == '-') {
                auto value = in.number();
                if (!value) return arg_error(text, "bad offset after symbol");
                op.disp = *value;
            }
        } else if (in.peek() == '-' || in.peek() == '+' || std::isdigit(static_cast<unsigned char>(in.peek()))) {
            auto value = in.number();
            if (!value) return arg_error(text, "bad displacement");
            op.disp = *value;
            has_displacement = true;
        }
        if (in.eat('(')) {
            if (in.peek() == '%') {
                UPROBE_TRY(op.reg, parse_register(in, text, false));
            }
            if (in.eat(',')) {
                UPROBE_TRY(op.index, parse_register(in, text, false));
                if (op.index == "rip" || op.index == "eip" || op.index == "rsp" || op.index == "esp")
                    return arg_error(text, "%" + op.index + " cannot be an index register");
                if (in.eat(',')) {
                    auto scale = in.number();
                    if (!scale || (*scale != 1 && *scale != 2 && *scale != 4 && *scale != 8))
                        return arg_error(text, "scale must be 1, 2, 4 or 8");
                    op.scale = static_cast<uint8_t>(*scale);
                }
            }
            if (!in.eat(')')) return arg_error(text, "expected ')'");
            if (op.reg.empty() && op.index.empty()) return arg_error(text, "memory operand without a register");
        } else if (!has_displacement) {
            if (in.peek() == '(') return arg_error(text, "expected ')'");
            return arg_error(text, "unrecognised operand");
        }
    }
    if (!in.done()) {
        if (in.peek() == ':') return arg_error(text, "segment-relative operands are not supported");
        return arg_error(text, "unexpected text \"" + std::string(in.rest()) + "\"");
    }
    return arg;
}

Result<std::vector<SdtArg>> parse_sdt_args(std::string_view text) {
    std::vector<SdtArg> args;
    size_t pos = 0;
    while (pos < text.size()) {
        if (text[pos] == ' ' || text[pos] == '\t') {
            ++pos;
            continue;
        }
        size_t end = pos;
        while (end < text.size() && text[end] != ' ' && text[end] != '\t') ++end;
        UPROBE_TRY(auto arg, parse_sdt_arg(text.substr(pos, end - pos)));
        args.push_back(std::move(arg));
        pos = end;
    }
    return args;
}

}  // namespace uprobe::elf
