// format_value (include/uprobe/event.hpp): lives at the bottom so that both
// the outputs and the DWARF formatter of struct members use it.
#include <charconv>
#include <cinttypes>
#include <cstdio>

#include "uprobe/event.hpp"

namespace uprobe {
namespace {

// C-style escapes for quotes, backslashes and non-printable bytes, so that
// one event stays one line.
std::string escape(const std::string& s) {
    std::string out;
    out.reserve(s.size() + 2);
    for (unsigned char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char hex[8];
                std::snprintf(hex, sizeof hex, "\\x%02x", c);
                out += hex;
            } else {
                out += char(c);
            }
        }
    }
    return out;
}

}  // namespace

std::string format_value(const Value& v) {
    char buffer[64];
    switch (v.kind) {
    case Value::Kind::Signed: return std::to_string(v.i);
    case Value::Kind::Unsigned: return std::to_string(v.u);
    case Value::Kind::Hex:
        std::snprintf(buffer, sizeof buffer, "%#" PRIx64, v.u);
        return v.u == 0 ? "0x0" : buffer;
    case Value::Kind::Float: {
        auto end = std::to_chars(buffer, buffer + sizeof buffer, v.f).ptr;
        return std::string(buffer, end);
    }
    case Value::Kind::Bool: return v.u ? "true" : "false";
    case Value::Kind::String: return "\"" + escape(v.text) + "\"" + (v.truncated ? "..." : "");
    case Value::Kind::Text: return v.text;
    case Value::Kind::Error: return "(" + v.text + ")";
    }
    return "?";
}

}  // namespace uprobe
