// The probe-spec parser. The grammar and every disambiguation rule are in
// docs/probes.md; this file follows it section by section.
//
// The parser works on positions into the original text so that every error
// carries the column of the offending character. It never throws, never
// recurses deeper than kMaxNesting and is linear in the input, so corrupt or
// hostile input (the fuzzer's) cannot crash or hang it.
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/strings.hpp"
#include "uprobe/spec.hpp"

namespace uprobe {
namespace {

// perf probe limits a probe to 128 arguments (MAX_PROBE_ARGS); so do we.
constexpr size_t kMaxArgs = 128;
// Deeper memory fetches than this are surely a mistake, and the limit
// bounds the recursion.
constexpr int kMaxNesting = 16;

constexpr std::string_view kTypeList =
    "(expected s8..s64, u8..u64, x8..x64, f32, f64, string)";
constexpr std::string_view kFetchList =
    "(expected %REG, $argN, $retval, $stackN, $comm, $pid, $tid, $duration, "
    "$params, $vars, +OFF(FETCH), @0xADDR, @SYMBOL, @entry(FETCH) or a variable)";

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_ident_start(char c) { return is_alpha(c) || c == '_'; }
bool is_ident_char(char c) { return is_ident_start(c) || is_digit(c); }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_hex_digit(char c) {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// A character as it should appear inside a one-line message.
std::string describe(char c) {
    if (c >= 0x21 && c <= 0x7e) return std::string("'") + c + "'";
    if (c == ' ') return "a space";
    static const char kHex[] = "0123456789abcdef";
    auto byte = static_cast<unsigned char>(c);
    return std::string("byte 0x") + kHex[byte >> 4] + kHex[byte & 15];
}

// Text for a message quoting user input: printable bytes only, so the
// message stays on one line.
std::string printable(std::string_view s) {
    std::string out;
    for (char c : s) out += (c >= 0x20 && c <= 0x7e) ? c : '?';
    return out;
}

std::string hex(uint64_t value) {
    static const char kHex[] = "0123456789abcdef";
    std::string digits;
    do {
        digits.insert(digits.begin(), kHex[value & 15]);
        value >>= 4;
    } while (value != 0);
    return "0x" + digits;
}

// Turns arbitrary text into a readable identifier: every run of other
// characters becomes one '_', leading and trailing ones are dropped.
std::string sanitize(std::string_view s) {
    std::string out;
    bool last_replaced = false;
    for (char c : s) {
        if (is_ident_char(c)) {
            out += c;
            last_replaced = false;
        } else if (!last_replaced && !out.empty()) {
            out += '_';
            last_replaced = true;
        }
    }
    if (last_replaced) out.pop_back();
    if (!out.empty() && is_digit(out[0])) out.insert(out.begin(), '_');
    return out;
}

std::string offset_suffix(int64_t offset) {
    if (offset == 0) return "";
    if (offset > 0) return "_" + std::to_string(offset);
    return "_neg" + std::to_string(0 - static_cast<uint64_t>(offset));
}

std::string signed_text(int64_t offset) {
    if (offset >= 0) return "+" + std::to_string(offset);
    return "-" + std::to_string(0 - static_cast<uint64_t>(offset));
}

// The longest C++ operator token at the start of `s` ("<<=" before "<<").
size_t operator_token_length(std::string_view s) {
    static constexpr std::string_view kTokens[] = {
        "->*", "<<=", ">>=", "<=>", "()", "[]", "->", "<<", ">>", "<=", ">=", "==", "!=",
        "&&",  "||",  "++",  "--",  "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "+",
        "-",   "*",   "/",   "%",   "^",  "&",  "|",  "~",  "!",  "=",  "<",  ">",  ",",
    };
    for (std::string_view token : kTokens)
        if (s.substr(0, token.size()) == token) return token.size();
    return 0;
}

struct Span {
    size_t begin = 0;
    size_t end = 0;
    bool empty() const { return begin == end; }
};

class SpecParser {
public:
    explicit SpecParser(std::string_view text) : text_(text) {}

    ParsedSpec run() {
        ParsedSpec result;
        ProbeSpec spec;
        spec.text = std::string(text_);
        if (parse(spec)) {
            result.spec = std::move(spec);
        } else {
            result.error = std::move(error_);
        }
        return result;
    }

private:
    std::string_view text_;
    std::optional<SpecError> error_;

    bool fail(size_t column, std::string message) {
        if (!error_) error_ = SpecError{std::move(message), column, std::string(text_)};
        return false;
    }
    std::string_view view(Span s) const { return text_.substr(s.begin, s.end - s.begin); }
    char at(size_t i) const { return i < text_.size() ? text_[i] : '\0'; }
    bool looking_at(size_t i, size_t end, std::string_view s) const {
        return i <= end && end - i >= s.size() && text_.substr(i, s.size()) == s;
    }

    // ---- the whole probe ----------------------------------------------------

    bool parse(ProbeSpec& spec) {
        size_t i = 0;
        while (i < text_.size() && is_space(text_[i])) ++i;
        if (i == text_.size()) return fail(0, "empty probe");

        // NAME=: a '=' before the first space, unless it belongs to a C++
        // operator= / operator== in the function name.
        size_t word_end = i;
        while (word_end < text_.size() && !is_space(text_[word_end])) ++word_end;
        size_t eq = text_.substr(0, word_end).find('=', i);
        if (eq != std::string_view::npos && !has_operator_word({i, eq})) {
            Span name{i, eq};
            if (!check_name(name, "probe")) return false;
            spec.name = std::string(view(name));
            spec.named = true;
            i = eq + 1;
            if (i == text_.size() || is_space(text_[i]))
                return fail(i, "expected a location after '='");
        }

        size_t location_end = 0;
        std::vector<size_t> colons;
        if (!scan_location(i, location_end, colons)) return false;
        if (!parse_location({i, location_end}, colons, spec.location)) return false;
        if (!spec.named) spec.name = default_probe_name(spec.location);

        std::vector<Span> arg_names;  // for duplicate-name columns
        i = location_end;
        for (;;) {
            while (i < text_.size() && is_space(text_[i])) ++i;
            if (i == text_.size()) break;
            size_t end = i;
            while (end < text_.size() && !is_space(text_[end])) ++end;
            if (spec.args.size() == kMaxArgs)
                return fail(i, "too many arguments (at most " + std::to_string(kMaxArgs) + ")");
            ArgSpec arg;
            Span name;
            if (!parse_arg({i, end}, arg, name)) return false;
            spec.args.push_back(std::move(arg));
            arg_names.push_back(name);
            i = end;
        }
        return name_args(spec.args, arg_names);
    }

    // Whether `s` holds the C++ keyword "operator" as a whole word.
    bool has_operator_word(Span s) const {
        constexpr std::string_view kWord = "operator";
        std::string_view text = view(s);
        for (size_t k = text.find(kWord); k != std::string_view::npos; k = text.find(kWord, k + 1)) {
            size_t after = k + kWord.size();
            if ((k == 0 || !is_ident_char(text[k - 1])) && (after == text.size() || !is_ident_char(text[after])))
                return true;
        }
        return false;
    }

    bool check_name(Span name, std::string_view what) {
        if (name.empty()) return fail(name.begin, "empty " + std::string(what) + " name before '='");
        for (size_t k = name.begin; k < name.end; ++k) {
            bool ok = k == name.begin ? is_ident_start(text_[k]) : is_ident_char(text_[k]);
            if (!ok)
                return fail(k, "invalid " + std::string(what) + " name '" + printable(view(name)) +
                                   "' (names are [A-Za-z_][A-Za-z0-9_]*)");
        }
        return true;
    }

    // ---- locations ----------------------------------------------------------

    // After the identifier "operator" at [.., i): skips the operator's
    // token (and the spaces before it), so "operator new", "operator<<" and
    // "operator()" stay one name and are not taken as brackets.
    size_t skip_operator(size_t i, size_t end) const {
        size_t k = i;
        while (k < end && text_[k] == ' ') ++k;
        if (k < end && is_ident_start(text_[k])) {  // new, delete, conversions
            while (k < end && is_ident_char(text_[k])) ++k;
            if (looking_at(k, end, "[]")) k += 2;
            return k;
        }
        size_t length = operator_token_length(text_.substr(k, end - k));
        return length == 0 ? i : k + length;
    }

    // Finds the end of the location word (the first space outside brackets
    // and operator names) and the single ':' separators at bracket depth 0
    // ("::" is C++ scope, never a separator).
    bool scan_location(size_t begin, size_t& end, std::vector<size_t>& colons) {
        std::vector<size_t> open;
        size_t i = begin;
        const size_t n = text_.size();
        // In an SDT location "operator" is a plain word: "sdt:p:operator x"
        // is marker "operator" and argument "x".
        auto sdt_prefix = [&](std::string_view prefix) {
            return looking_at(begin, n, prefix) && at(begin + prefix.size()) != ':';
        };
        bool sdt = at(begin) == '%' || sdt_prefix("sdt:") || sdt_prefix("usdt:");
        while (i < n) {
            char c = text_[i];
            if (is_ident_char(c)) {
                size_t k = i;
                while (k < n && is_ident_char(text_[k])) ++k;
                i = !sdt && text_.substr(i, k - i) == "operator" ? skip_operator(k, n) : k;
                continue;
            }
            if (open.empty() && is_space(c)) break;
            if (c == '[' && open.empty()) {  // a glob class, up to its ']'
                size_t close = i + 1;
                while (close < n && text_[close] != ']' && !is_space(text_[close])) ++close;
                if (close == n || text_[close] != ']') return fail(i, "unbalanced '['");
                i = close + 1;
                continue;
            }
            if (c == '<' || c == '(' || c == '[') {
                open.push_back(i);
            } else if (c == '>' || c == ')' || c == ']') {
                char want = c == '>' ? '<' : c == ')' ? '(' : '[';
                if (open.empty()) return fail(i, "unbalanced " + describe(c));
                if (text_[open.back()] == want) {
                    open.pop_back();
                } else if (c != '>') {  // '>' inside parentheses may be a comparison
                    return fail(open.back(), "unbalanced " + describe(text_[open.back()]));
                }
            } else if (c == ':' && open.empty()) {
                if (at(i + 1) == ':') {
                    i += 2;
                    continue;
                }
                colons.push_back(i);
                if (at(i + 1) == '%') sdt = true;
            }
            ++i;
        }
        if (!open.empty()) return fail(open.back(), "unbalanced " + describe(text_[open.back()]));
        end = i;
        return true;
    }

    bool parse_location(Span where, const std::vector<size_t>& colons, Location& loc) {
        std::vector<Span> parts;
        size_t start = where.begin;
        for (size_t colon : colons) {
            parts.push_back({start, colon});
            start = colon + 1;
        }
        parts.push_back({start, where.end});
        std::string_view first = view(parts[0]);

        if ((first == "sdt" || first == "usdt") && parts.size() > 1)
            return parse_sdt(parts, 1, colons, loc);
        if (!first.empty() && first[0] == '%') return parse_percent_sdt(parts, 0, colons, loc);
        if (parts.size() >= 2 && at(parts[1].begin) == '%') {
            if (!parse_binary(parts[0], loc)) return false;
            return parse_percent_sdt(parts, 1, colons, loc);
        }

        Span last = parts.back();
        bool line_form = parts.size() >= 2 && is_digit(at(last.begin)) && last.begin < last.end &&
                         !(at(last.begin) == '0' && (at(last.begin + 1) == 'x' || at(last.begin + 1) == 'X'));
        if (line_form) {
            if (parts.size() > 3) return fail(colons[parts.size() - 4], "too many ':'-separated parts in the location");
            if (parts.size() == 3 && !parse_binary(parts[0], loc)) return false;
            Span before = parts[parts.size() - 2];
            std::string_view before_text = view(before);
            bool function_line = before_text.find('@') != std::string_view::npos ||
                                 (before_text.find('.') == std::string_view::npos &&
                                  before_text.find('/') == std::string_view::npos);
            if (function_line) {
                loc.kind = LocationKind::FunctionLine;
                if (!parse_function(before, loc, true)) return false;
            } else {
                loc.kind = LocationKind::SourceLine;
                loc.file = std::string(before_text);
            }
            return parse_line(last, loc);
        }

        if (parts.size() > 2) return fail(colons[1], "too many ':'-separated parts in the location");
        if (parts.size() == 2 && !parse_binary(parts[0], loc)) return false;
        Span target = parts.back();
        if (target.empty())
            return fail(target.begin, parts.size() == 2 ? "expected a function name after ':'"
                                                        : "expected a function name");
        char c = text_[target.begin];
        if (c == '0' && (at(target.begin + 1) == 'x' || at(target.begin + 1) == 'X')) {
            loc.kind = LocationKind::Address;
            size_t k = target.begin + 2;
            while (k < target.end && is_hex_digit(text_[k])) ++k;
            if (k == target.begin + 2) return fail(k, "expected hex digits after '0x'");
            if (k < target.end) return fail(k, "unexpected " + describe(text_[k]) + " after the address");
            auto value = parse_uint(view({target.begin, k}));
            if (!value) return fail(target.begin, "address too large");
            loc.address = *value;
            return true;
        }
        if (is_digit(c))
            return fail(target.begin, "a location cannot start with a digit (expected FUNC, 0xADDR or FILE:LINE)");
        loc.kind = LocationKind::Function;
        return parse_function(target, loc, false);
    }

    bool parse_binary(Span part, Location& loc) {
        if (part.empty()) return fail(part.begin, "expected a binary before ':'");
        // A "::" or the space of "operator new" can be left inside a part
        // that scan_location took for C++; neither belongs in a binary.
        for (size_t k = part.begin; k < part.end; ++k) {
            if (text_[k] == ':') return fail(k, "a binary name cannot contain ':'");
            if (is_space(text_[k])) return fail(k, "a binary name cannot contain spaces");
        }
        loc.binary = std::string(view(part));
        return true;
    }

    bool parse_line(Span part, Location& loc) {
        size_t k = part.begin;
        while (k < part.end && is_digit(text_[k])) ++k;
        if (k < part.end) {
            if (text_[k] == '%') return fail(k, "%return cannot be combined with a line");
            if (text_[k] == '+') return fail(k, "+OFFSET cannot be combined with a line");
            return fail(k, "line is not a number");
        }
        auto value = parse_uint(view(part));
        if (!value || *value > std::numeric_limits<uint32_t>::max())
            return fail(part.begin, "line number too large");
        if (*value == 0 && loc.kind == LocationKind::SourceLine)
            return fail(part.begin, "line numbers start at 1");
        loc.line = static_cast<uint32_t>(*value);
        return true;
    }

    // Skips a bracketed group starting at `i` ('<' or '('), whose balance
    // scan_location has already checked.
    size_t skip_group(size_t i, size_t end) const {
        int depth = 0;
        for (; i < end; ++i) {
            char c = text_[i];
            if (is_ident_char(c)) {
                size_t k = i;
                while (k < end && is_ident_char(text_[k])) ++k;
                i = (text_.substr(i, k - i) == "operator" ? skip_operator(k, end) : k) - 1;
                continue;
            }
            if (c == '<' || c == '(' || c == '[') ++depth;
            if (c == ')' || c == ']' || (c == '>' && depth > 0)) {
                if (--depth == 0) return i + 1;
            }
        }
        return end;
    }

    // FUNC[@FILE][+OFFSET|%return]; a line form allows only FUNC[@FILE].
    bool parse_function(Span part, Location& loc, bool line_form) {
        size_t i = part.begin;
        const size_t end = part.end;
        while (i < end) {
            char c = text_[i];
            if (is_ident_char(c)) {
                size_t k = i;
                while (k < end && is_ident_char(text_[k])) ++k;
                if (text_.substr(i, k - i) == "operator") {
                    size_t after = skip_operator(k, end);
                    if (after == k) return fail(k, "expected an operator after 'operator'");
                    k = after;
                }
                i = k;
            } else if (c == '.' || c == '~' || c == '*' || c == '?') {
                ++i;
            } else if (c == ':' && at(i + 1) == ':') {
                i += 2;
            } else if (c == '[') {
                size_t close = view({i + 1, end}).find(']');
                if (close == std::string_view::npos) return fail(i, "unbalanced '['");
                i = i + 1 + close + 1;
            } else if (c == '<' || c == '(') {
                i = skip_group(i, end);
            } else if (c == '@' || c == '+' || c == '%') {
                break;
            } else {
                return fail(i, "unexpected " + describe(c) + " in function name");
            }
        }
        if (i == part.begin) return fail(i, "expected a function name");
        loc.function = std::string(view({part.begin, i}));

        if (i < end && text_[i] == '@') {
            size_t k = i + 1;
            while (k < end && text_[k] != '+' && text_[k] != '%') ++k;
            if (k == i + 1) return fail(k, "expected a file name after '@'");
            loc.file = std::string(view({i + 1, k}));
            i = k;
        }
        bool has_offset = false;
        if (i < end && text_[i] == '+') {
            if (line_form) return fail(i, "+OFFSET cannot be combined with a line");
            size_t k = i + 1;
            while (k < end && is_ident_char(text_[k])) ++k;
            auto value = parse_uint(view({i + 1, k}));
            if (!value) return fail(i + 1, "offset is not a number");
            loc.offset = *value;
            has_offset = true;
            i = k;
        }
        if (i < end && text_[i] == '%') {
            if (!looking_at(i + 1, end, "return") ||
                (i + 7 < end && is_ident_char(text_[i + 7])))
                return fail(i + 1, "expected 'return' after '%'");
            if (line_form) return fail(i, "%return cannot be combined with a line");
            if (has_offset) return fail(i, "%return cannot be combined with +OFFSET");
            loc.is_return = true;
            i += 7;
            if (i < end && text_[i] == '+') return fail(i, "%return cannot be combined with +OFFSET");
        }
        if (i < end) {
            std::string after = loc.is_return ? "%return" : has_offset ? "the offset" : "the function name";
            return fail(i, "unexpected " + describe(text_[i]) + " after " + after);
        }
        return true;
    }

    // An SDT provider or marker name: identifier characters and globs.
    bool parse_sdt_name(Span part, std::string& out, std::string_view what) {
        if (part.empty()) return fail(part.begin, "expected " + std::string(what) + " name");
        for (size_t k = part.begin; k < part.end; ++k) {
            char c = text_[k];
            if (c == '[') {
                size_t close = view({k + 1, part.end}).find(']');
                if (close == std::string_view::npos) return fail(k, "unbalanced '['");
                k = k + 1 + close;
                continue;
            }
            if (!is_ident_char(c) && c != '*' && c != '?' && c != '.')
                return fail(k, "unexpected " + describe(c) + " in " + std::string(what) + " name");
        }
        out = std::string(view(part));
        return true;
    }

    // sdt:[BIN:]PROV:NAME and usdt:[BIN:]PROV:NAME; `first` indexes the part
    // after the prefix.
    bool parse_sdt(const std::vector<Span>& parts, size_t first, const std::vector<size_t>& colons,
                   Location& loc) {
        loc.kind = LocationKind::Sdt;
        size_t count = parts.size() - first;
        if (count < 2) return fail(parts.back().end, "expected PROVIDER:NAME in an SDT location");
        if (count > 3) return fail(colons[first + 2], "too many ':'-separated parts in an SDT location");
        if (count == 3 && !parse_binary(parts[first++], loc)) return false;
        return parse_sdt_name(parts[first], loc.provider, "a provider") &&
               parse_sdt_name(parts[first + 1], loc.marker, "a marker");
    }

    // perf's %[PROV:]NAME, at parts[first]; without a provider any
    // provider matches.
    bool parse_percent_sdt(const std::vector<Span>& parts, size_t first, const std::vector<size_t>& colons,
                           Location& loc) {
        loc.kind = LocationKind::Sdt;
        size_t count = parts.size() - first;
        if (count > 2) return fail(colons[first + 1], "too many ':'-separated parts in an SDT location");
        Span head = parts[first];
        head.begin += 1;  // the '%'
        if (count == 1) {
            loc.provider = "*";
            return parse_sdt_name(head, loc.marker, "a marker");
        }
        return parse_sdt_name(head, loc.provider, "a provider") &&
               parse_sdt_name(parts[first + 1], loc.marker, "a marker");
    }

    static std::string default_probe_name(const Location& loc) {
        std::string name;
        switch (loc.kind) {
        case LocationKind::Function:
            name = sanitize(loc.function);
            if (name.empty()) name = "probe";
            if (loc.is_return) return name + "__return";
            if (loc.offset != 0) return name + "_" + std::to_string(loc.offset);
            return name;
        case LocationKind::FunctionLine:
            name = sanitize(loc.function);
            if (name.empty()) name = "probe";
            return name + "_L" + std::to_string(loc.line);
        case LocationKind::SourceLine: {
            std::string_view file = loc.file;
            size_t slash = file.rfind('/');
            if (slash != std::string_view::npos) file.remove_prefix(slash + 1);
            name = sanitize(file);
            return (name.empty() ? "line" : name) + "_" + std::to_string(loc.line);
        }
        case LocationKind::Address:
            return "addr_" + hex(loc.address);
        case LocationKind::Sdt:
            name = sanitize(loc.marker);
            return name.empty() ? "sdt" : name;
        }
        return "probe";
    }

    // ---- arguments ----------------------------------------------------------

    bool parse_arg(Span word, ArgSpec& arg, Span& name) {
        name = {word.begin, word.begin};
        size_t fetch_begin = word.begin;
        size_t eq = text_.substr(0, word.end).find('=', word.begin);
        if (eq != std::string_view::npos) {
            name = {word.begin, eq};
            if (!check_name(name, "argument")) return false;
            arg.name = std::string(view(name));
            fetch_begin = eq + 1;
        }
        // :TYPE is after the last ':' that is not part of a C++ "::".
        size_t fetch_end = word.end;
        for (size_t k = word.end; k > fetch_begin; --k) {
            size_t colon = k - 1;
            if (text_[colon] != ':') continue;
            if (at(colon + 1) == ':' || (colon > 0 && text_[colon - 1] == ':')) continue;
            fetch_end = colon;
            if (!parse_type({colon + 1, word.end}, arg.type)) return false;
            break;
        }
        if (fetch_begin == fetch_end)
            return fail(fetch_begin, "expected a fetch " + std::string(kFetchList));
        size_t i = fetch_begin;
        if (!parse_fetch(i, fetch_end, 0, false, arg.fetch)) return false;
        if (i < fetch_end) {
            if (text_[i] == ')') return fail(i, "unbalanced ')'");
            return fail(i, "unexpected " + describe(text_[i]) + " after the fetch");
        }
        return true;
    }

    bool parse_type(Span part, ValueType& type) {
        if (part.empty()) return fail(part.begin, "expected a type after ':'");
        static const std::pair<std::string_view, ValueType> kTypes[] = {
            {"s8", ValueType::S8},   {"s16", ValueType::S16}, {"s32", ValueType::S32},
            {"s64", ValueType::S64}, {"u8", ValueType::U8},   {"u16", ValueType::U16},
            {"u32", ValueType::U32}, {"u64", ValueType::U64}, {"x8", ValueType::X8},
            {"x16", ValueType::X16}, {"x32", ValueType::X32}, {"x64", ValueType::X64},
            {"f32", ValueType::F32}, {"f64", ValueType::F64}, {"string", ValueType::String},
            // Aliases, for C habits and perf's user-space string type.
            {"float", ValueType::F32}, {"double", ValueType::F64}, {"ustring", ValueType::String},
        };
        for (const auto& [text, value] : kTypes) {
            if (view(part) == text) {
                type = value;
                return true;
            }
        }
        return fail(part.begin, "unknown type '" + printable(view(part)) + "' " + std::string(kTypeList));
    }

    // A decimal or 0x number made of identifier characters at `i`.
    std::optional<uint64_t> number_at(size_t& i, size_t end) const {
        size_t k = i;
        while (k < end && is_ident_char(text_[k])) ++k;
        auto value = parse_uint(view({i, k}));
        if (value) i = k;
        return value;
    }

    // A signed offset: '+' or '-' at `i`, then a number.
    bool signed_offset(size_t& i, size_t end, int64_t& offset) {
        bool negative = text_[i] == '-';
        size_t digits = i + 1;
        auto value = number_at(digits, end);
        if (!value) return fail(i + 1, "offset is not a number");
        uint64_t limit = negative ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
        if (*value > limit) return fail(i + 1, "offset too large");
        offset = negative ? static_cast<int64_t>(0 - *value) : static_cast<int64_t>(*value);
        i = digits;
        return true;
    }

    bool close_paren(size_t& i, size_t end, size_t open) {
        if (i >= end) return fail(open, "unbalanced '('");
        if (text_[i] != ')') return fail(i, "unexpected " + describe(text_[i]) + " (expected ')')");
        ++i;
        return true;
    }

    bool parse_fetch(size_t& i, size_t end, int depth, bool in_entry, Fetch& out) {
        if (i >= end) return fail(i, "expected a fetch " + std::string(kFetchList));
        char c = text_[i];
        // Only memory and @entry fetches nest; each is one level.
        if ((c == '+' || c == '-' || looking_at(i, end, "@entry(")) && depth >= kMaxNesting)
            return fail(i, "fetches nest too deeply (at most " + std::to_string(kMaxNesting) + " levels)");
        if (c == '%') {
            size_t k = i + 1;
            while (k < end && ((text_[k] >= 'a' && text_[k] <= 'z') || is_digit(text_[k]))) ++k;
            if (k == i + 1) return fail(i + 1, "expected a register name after '%'");
            if (view({i + 1, k}) == "return")
                return fail(i, "%return must follow the function without a space (FUNC%return)");
            out.kind = FetchKind::Register;
            out.reg = std::string(view({i + 1, k}));
            i = k;
            return true;
        }
        if (c == '$') return parse_special(i, end, out);
        if (c == '+' || c == '-') {
            out.kind = FetchKind::Memory;
            if (!signed_offset(i, end, out.offset)) return false;
            if (i >= end || text_[i] != '(') return fail(i, "expected '(' after the offset");
            size_t open = i++;
            auto inner = std::make_shared<Fetch>();
            if (!parse_fetch(i, end, depth + 1, in_entry, *inner)) return false;
            out.inner = std::move(inner);
            return close_paren(i, end, open);
        }
        if (c == '@') return parse_at(i, end, depth, in_entry, out);
        if (c == '*' || is_ident_start(c)) return parse_variable(i, end, out);
        if (c == '(') return fail(i, "unexpected '(' (memory fetches are written +OFF(FETCH))");
        if (c == ')' && depth == 0) return fail(i, "unbalanced ')'");
        if (c == ')') return fail(i, "expected a fetch inside the parentheses");
        return fail(i, "unexpected " + describe(c) + " " + std::string(kFetchList));
    }

    bool parse_special(size_t& i, size_t end, Fetch& out) {
        size_t k = i + 1;
        while (k < end && is_ident_char(text_[k])) ++k;
        std::string_view word = view({i + 1, k});
        if (word.empty()) return fail(i + 1, "expected a special variable name after '$'");
        static const std::pair<std::string_view, FetchKind> kPlain[] = {
            {"retval", FetchKind::RetVal}, {"comm", FetchKind::Comm},   {"pid", FetchKind::Pid},
            {"tid", FetchKind::Tid},       {"duration", FetchKind::Duration},
            {"params", FetchKind::Params}, {"vars", FetchKind::Vars},
        };
        for (const auto& [name, kind] : kPlain) {
            if (word == name) {
                out.kind = kind;
                i = k;
                return true;
            }
        }
        for (std::string_view prefix : {std::string_view("arg"), std::string_view("stack")}) {
            if (word.substr(0, prefix.size()) != prefix) continue;
            size_t digits = i + 1 + prefix.size();
            std::string_view number = view({digits, k});
            if (number.empty() || !is_digit(number[0])) break;
            for (size_t d = digits; d < k; ++d)
                if (!is_digit(text_[d]))
                    return fail(d, "unexpected " + describe(text_[d]) + " after '$" + std::string(prefix) + "'");
            auto value = parse_uint(number);
            if (!value || *value > std::numeric_limits<uint32_t>::max())
                return fail(digits, std::string(prefix) + " number too large");
            if (prefix == "arg" && *value == 0)
                return fail(digits, "$arg0 does not exist: arguments count from 1 ($arg1 is the first)");
            out.kind = prefix == "arg" ? FetchKind::Arg : FetchKind::Stack;
            out.index = static_cast<uint32_t>(*value);
            i = k;
            return true;
        }
        if (word == "arg" || word == "stack")
            return fail(k, "expected a number after '$" + std::string(word) + "'");
        return fail(i, "unknown special variable '$" + printable(word) +
                           "' (expected $argN, $retval, $stackN, $comm, $pid, $tid, $duration, $params, $vars)");
    }

    bool parse_at(size_t& i, size_t end, int depth, bool in_entry, Fetch& out) {
        size_t k = i + 1;
        if (looking_at(k, end, "entry(")) {
            if (in_entry) return fail(i, "@entry cannot be nested");
            out.kind = FetchKind::Entry;
            size_t open = k + 5;
            i = open + 1;
            auto inner = std::make_shared<Fetch>();
            if (!parse_fetch(i, end, depth + 1, true, *inner)) return false;
            out.inner = std::move(inner);
            return close_paren(i, end, open);
        }
        if (at(k) == '0' && (at(k + 1) == 'x' || at(k + 1) == 'X') && k < end) {
            size_t d = k + 2;
            while (d < end && is_hex_digit(text_[d])) ++d;
            if (d == k + 2) return fail(d, "expected hex digits after '0x'");
            auto value = parse_uint(view({k, d}));
            if (!value) return fail(k, "address too large");
            out.kind = FetchKind::Address;
            out.address = *value;
            i = d;
            return true;
        }
        if (k < end && is_ident_start(text_[k])) {
            size_t s = k;
            while (s < end) {
                if (is_ident_char(text_[s]) || text_[s] == '.') {
                    ++s;
                } else if (text_[s] == ':' && at(s + 1) == ':' && s + 2 < end && is_ident_start(text_[s + 2])) {
                    s += 2;
                } else {
                    break;
                }
            }
            out.kind = FetchKind::Symbol;
            out.symbol = std::string(view({k, s}));
            i = s;
            if (i < end && (text_[i] == '+' || text_[i] == '-')) return signed_offset(i, end, out.offset);
            return true;
        }
        return fail(k, "expected an address or symbol after '@'");
    }

    // A DWARF variable expression, checked for shape only:
    // '*'* NAME ( '->' NAME | '.' NAME | '[' NUMBER ']' )*
    bool parse_variable(size_t& i, size_t end, Fetch& out) {
        size_t k = i;
        while (k < end && text_[k] == '*') ++k;
        auto identifier = [&](size_t& p, std::string what) {
            if (p >= end || !is_ident_start(text_[p])) return fail(p, "expected " + what);
            while (p < end && is_ident_char(text_[p])) ++p;
            return true;
        };
        if (!identifier(k, "a variable name")) return false;
        for (;;) {
            if (looking_at(k, end, "->")) {
                k += 2;
                if (!identifier(k, "a field name after '->'")) return false;
            } else if (k < end && text_[k] == '.') {
                ++k;
                if (!identifier(k, "a field name after '.'")) return false;
            } else if (k < end && text_[k] == '[') {
                size_t open = k++;
                if (!number_at(k, end)) return fail(k, "expected an index inside '[...]'");
                if (k >= end) return fail(open, "unbalanced '['");
                if (text_[k] != ']') return fail(k, "unexpected " + describe(text_[k]) + " (expected ']')");
                ++k;
            } else {
                break;
            }
        }
        out.kind = FetchKind::DwarfVar;
        out.expr = std::string(view({i, k}));
        i = k;
        return true;
    }

    static std::string default_arg_name(const Fetch& fetch) {
        switch (fetch.kind) {
        case FetchKind::Register: return sanitize(fetch.reg);
        case FetchKind::Arg: return "arg" + std::to_string(fetch.index);
        case FetchKind::RetVal: return "retval";
        case FetchKind::Stack: return "stack" + std::to_string(fetch.index);
        case FetchKind::Memory:
            return (fetch.inner ? default_arg_name(*fetch.inner) : "mem") + "_" +
                   (fetch.offset < 0 ? offset_suffix(fetch.offset).substr(1) : std::to_string(fetch.offset));
        case FetchKind::Address: return "addr_" + hex(fetch.address);
        case FetchKind::Symbol: return sanitize(fetch.symbol) + offset_suffix(fetch.offset);
        case FetchKind::Comm: return "comm";
        case FetchKind::Pid: return "pid";
        case FetchKind::Tid: return "tid";
        case FetchKind::Duration: return "duration";
        case FetchKind::Entry: return "entry_" + (fetch.inner ? default_arg_name(*fetch.inner) : "value");
        case FetchKind::Params: return "params";
        case FetchKind::Vars: return "vars";
        case FetchKind::DwarfVar: return sanitize(fetch.expr);
        }
        return "arg";
    }

    // User-given names must be unique; defaults are made unique with _2, _3...
    bool name_args(std::vector<ArgSpec>& args, const std::vector<Span>& names) {
        std::set<std::string> used;
        for (size_t a = 0; a < args.size(); ++a) {
            if (args[a].name.empty()) continue;
            if (!used.insert(args[a].name).second)
                return fail(names[a].begin, "duplicate argument name '" + args[a].name + "'");
        }
        for (ArgSpec& arg : args) {
            if (!arg.name.empty()) continue;
            std::string base = default_arg_name(arg.fetch);
            if (base.empty()) base = "arg";
            std::string name = base;
            for (size_t n = 2; used.count(name) != 0; ++n) name = base + "_" + std::to_string(n);
            used.insert(name);
            arg.name = std::move(name);
        }
        return true;
    }
};

}  // namespace

ParsedSpec parse_probe_spec(std::string_view text) { return SpecParser(text).run(); }

std::string SpecError::render() const {
    std::string caret;
    for (size_t k = 0; k < column && k < text.size(); ++k) caret += text[k] == '\t' ? '\t' : ' ';
    for (size_t k = text.size(); k < column; ++k) caret += ' ';
    return message + "\n  " + text + "\n  " + caret + "^";
}

std::string_view to_string(ValueType type) {
    switch (type) {
    case ValueType::Default: return "default";
    case ValueType::S8: return "s8";
    case ValueType::S16: return "s16";
    case ValueType::S32: return "s32";
    case ValueType::S64: return "s64";
    case ValueType::U8: return "u8";
    case ValueType::U16: return "u16";
    case ValueType::U32: return "u32";
    case ValueType::U64: return "u64";
    case ValueType::X8: return "x8";
    case ValueType::X16: return "x16";
    case ValueType::X32: return "x32";
    case ValueType::X64: return "x64";
    case ValueType::F32: return "f32";
    case ValueType::F64: return "f64";
    case ValueType::String: return "string";
    }
    return "default";
}

std::string_view to_string(LocationKind kind) {
    switch (kind) {
    case LocationKind::Function: return "function";
    case LocationKind::SourceLine: return "source-line";
    case LocationKind::FunctionLine: return "function-line";
    case LocationKind::Address: return "address";
    case LocationKind::Sdt: return "sdt";
    }
    return "function";
}

std::string to_string(const Fetch& fetch) {
    auto inner = [&] { return fetch.inner ? to_string(*fetch.inner) : std::string("?"); };
    switch (fetch.kind) {
    case FetchKind::Register: return "%" + fetch.reg;
    case FetchKind::Arg: return "$arg" + std::to_string(fetch.index);
    case FetchKind::RetVal: return "$retval";
    case FetchKind::Stack: return "$stack" + std::to_string(fetch.index);
    case FetchKind::Memory: return signed_text(fetch.offset) + "(" + inner() + ")";
    case FetchKind::Address: return "@" + hex(fetch.address);
    case FetchKind::Symbol:
        return "@" + fetch.symbol + (fetch.offset == 0 ? std::string() : signed_text(fetch.offset));
    case FetchKind::Comm: return "$comm";
    case FetchKind::Pid: return "$pid";
    case FetchKind::Tid: return "$tid";
    case FetchKind::Duration: return "$duration";
    case FetchKind::Entry: return "@entry(" + inner() + ")";
    case FetchKind::Params: return "$params";
    case FetchKind::Vars: return "$vars";
    case FetchKind::DwarfVar: return fetch.expr;
    }
    return "?";
}

std::string to_string(const Location& where) {
    std::string bin = where.binary.empty() ? std::string() : where.binary + ":";
    std::string at_file = where.file.empty() ? std::string() : "@" + where.file;
    switch (where.kind) {
    case LocationKind::Function:
        return bin + where.function + at_file +
               (where.is_return ? std::string("%return")
                                : where.offset != 0 ? "+" + std::to_string(where.offset) : std::string());
    case LocationKind::SourceLine: return bin + where.file + ":" + std::to_string(where.line);
    case LocationKind::FunctionLine: return bin + where.function + at_file + ":" + std::to_string(where.line);
    case LocationKind::Address: return bin + hex(where.address);
    case LocationKind::Sdt: return "sdt:" + bin + where.provider + ":" + where.marker;
    }
    return "?";
}

}  // namespace uprobe
