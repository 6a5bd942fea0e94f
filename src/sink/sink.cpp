#include "sink/sink.hpp"

#include <fmt/format.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <string_view>
#include <nlohmann/json.hpp>

namespace uprobe::sink {
namespace {

// Writes whole lines. A terminal or pipe is flushed per line, since
// someone reads it as we go; lines for a regular file are gathered here
// and written 1 MiB at a time (stdio's own buffer is 4 KiB, and a write(2)
// costs about 24 us here), and at the end.
class LineWriter {
public:
    explicit LineWriter(FILE* out) : out_(out) {
        struct stat st {};
        flush_each_ = fstat(fileno(out), &st) != 0 || !S_ISREG(st.st_mode);
    }
    ~LineWriter() { (void)flush(); }
    bool write(const std::string& line) {
        if (flush_each_)
            return std::fwrite(line.data(), 1, line.size(), out_) == line.size() && std::fflush(out_) == 0;
        pending_ += line;
        return pending_.size() < kBatch || flush();
    }

private:
    static constexpr size_t kBatch = 1 << 20;
    bool flush() {
        bool ok = std::fwrite(pending_.data(), 1, pending_.size(), out_) == pending_.size();
        pending_.clear();
        return std::fflush(out_) == 0 && ok;
    }
    FILE* out_;
    bool flush_each_;
    std::string pending_;
};

class TextSink final : public Sink {
public:
    explicit TextSink(FILE* out) : out_(out) {}
    bool event(const Event& e) override {
        std::string line = fmt::format("{:>16} {:>6}/{:<6} {:>6}.{:06}: {}: ({:#x})", e.comm, e.pid,
                                       e.tid, e.ts_ns / 1000000000, (e.ts_ns / 1000) % 1000000,
                                       e.probe, e.addr);
        for (const auto& a : e.args) {
            line += ' ';
            line += a.name;
            line += '=';
            line += format_value(a.value);
        }
        line += '\n';
        for (const auto& frame : e.stack) line += "        " + describe_frame(frame) + "\n";
        return out_.write(line);
    }

private:
    LineWriter out_;
};

// JSON text is written directly, without a document tree: a busy trace
// writes millions of lines. Strings are the target's bytes, and JSON must
// be UTF-8: an invalid byte becomes U+FFFD.
void append_string(std::string& out, std::string_view s) {
    static const char kHex[] = "0123456789abcdef";
    out += '"';
    for (size_t i = 0; i < s.size();) {
        // Runs of plain ASCII in one piece.
        size_t plain = i;
        while (plain < s.size()) {
            const auto c = static_cast<unsigned char>(s[plain]);
            if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
            ++plain;
        }
        out.append(s.data() + i, plain - i);
        i = plain;
        if (i == s.size()) break;
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    out += "\\u00";
                    out += kHex[c >> 4];
                    out += kHex[c & 15];
                } else {
                    out += static_cast<char>(c);
                }
            }
            ++i;
            continue;
        }
        // A well-formed sequence (RFC 3629, table 3-7 of Unicode 15): the
        // lead byte's length and the second byte's range.
        size_t length = 0;
        unsigned char low = 0x80, high = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) length = 2;
        else if (c >= 0xE0 && c <= 0xEF) length = 3, low = c == 0xE0 ? 0xA0 : 0x80, high = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4) length = 4, low = c == 0xF0 ? 0x90 : 0x80, high = c == 0xF4 ? 0x8F : 0xBF;
        bool valid = length > 0 && i + length <= s.size();
        for (size_t k = 1; valid && k < length; ++k) {
            const auto b = static_cast<unsigned char>(s[i + k]);
            valid = k == 1 ? (b >= low && b <= high) : (b >= 0x80 && b <= 0xBF);
        }
        if (valid) {
            out.append(s.data() + i, length);
            i += length;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    out += '"';
}

template <class Integer>
void append_integer(std::string& out, Integer v) {
    char buffer[24];
    out.append(buffer, std::to_chars(buffer, buffer + sizeof buffer, v).ptr);
}

void append_number(std::string& out, double f) {
    if (!std::isfinite(f)) {
        out += "null";
        return;
    }
    char buffer[32];
    auto end = std::to_chars(buffer, buffer + sizeof buffer, f).ptr;
    std::string_view text(buffer, static_cast<size_t>(end - buffer));
    out += text;
    if (text.find_first_of(".e") == std::string_view::npos) out += ".0";  // stays a float to a reader
}

void append_value(std::string& out, const Value& v) {
    switch (v.kind) {
    case Value::Kind::Signed: append_integer(out, v.i); return;
    case Value::Kind::Unsigned:
    case Value::Kind::Hex: append_integer(out, v.u); return;
    case Value::Kind::Float: append_number(out, v.f); return;
    case Value::Kind::Bool: out += v.u ? "true" : "false"; return;
    case Value::Kind::String:
    case Value::Kind::Text: append_string(out, v.text); return;
    case Value::Kind::Error: out += "null"; return;
    }
    out += "null";
}

void append_field(std::string& out, std::string_view key, bool& first) {
    if (!first) out += ',';
    first = false;
    append_string(out, key);
    out += ':';
}

class JsonSink final : public Sink {
public:
    explicit JsonSink(FILE* out) : out_(out) {}
    bool event(const Event& e) override {
        std::string& j = line_;
        j.clear();
        bool first = true;
        j += '{';
        append_field(j, "probe", first);
        append_string(j, e.probe);
        append_field(j, "pid", first);
        append_integer(j, e.pid);
        append_field(j, "tid", first);
        append_integer(j, e.tid);
        append_field(j, "ts_ns", first);
        append_integer(j, e.ts_ns);
        append_field(j, "comm", first);
        append_string(j, e.comm);
        append_field(j, "addr", first);
        append_integer(j, e.addr);
        if (e.is_return) {
            append_field(j, "return", first);
            j += "true";
            if (e.duration_ns) {
                append_field(j, "duration_ns", first);
                append_integer(j, e.duration_ns);
            }
        }
        // One member per name: a later argument of the same name (an
        // explicit one repeated by $params, say) replaces the earlier.
        std::vector<const EventArg*> args;
        for (const auto& a : e.args) {
            auto same = std::find_if(args.begin(), args.end(), [&](const EventArg* b) { return b->name == a.name; });
            if (same != args.end()) *same = &a;
            else args.push_back(&a);
        }
        append_field(j, "args", first);
        j += '{';
        bool first_arg = true, errors = false, truncated = false;
        for (const EventArg* a : args) {
            append_field(j, a->name, first_arg);
            append_value(j, a->value);
            errors |= a->value.kind == Value::Kind::Error;
            truncated |= a->value.truncated;
        }
        j += '}';
        if (errors) {
            append_field(j, "errors", first);
            j += '{';
            bool first_error = true;
            for (const EventArg* a : args) {
                if (a->value.kind != Value::Kind::Error) continue;
                append_field(j, a->name, first_error);
                append_string(j, a->value.text);
            }
            j += '}';
        }
        if (truncated) {
            append_field(j, "truncated", first);
            j += '[';
            bool first_name = true;
            for (const EventArg* a : args) {
                if (!a->value.truncated) continue;
                if (!first_name) j += ',';
                first_name = false;
                append_string(j, a->name);
            }
            j += ']';
        }
        if (!e.stack.empty()) {
            append_field(j, "stack", first);
            j += '[';
            for (size_t i = 0; i < e.stack.size(); ++i) {
                const StackFrame& f = e.stack[i];
                if (i) j += ',';
                bool first_key = true;
                j += '{';
                append_field(j, "pc", first_key);
                append_integer(j, f.pc);
                append_field(j, "function", first_key);
                append_string(j, f.function);
                append_field(j, "offset", first_key);
                append_integer(j, f.offset);
                append_field(j, "object", first_key);
                append_string(j, f.object);
                if (!f.file.empty()) {
                    append_field(j, "file", first_key);
                    append_string(j, f.file);
                    append_field(j, "line", first_key);
                    append_integer(j, f.line);
                }
                if (f.inlined) {
                    append_field(j, "inlined", first_key);
                    j += "true";
                }
                j += '}';
            }
            j += ']';
        }
        j += "}\n";
        return out_.write(j);
    }

private:
    LineWriter out_;
    std::string line_;  // reused: no allocation per event once it has grown
};

class CountSink final : public Sink {
public:
    CountSink(FILE* out, bool json) : out_(out), json_(json) {}
    bool event(const Event&) override { return true; }
    void finish(const std::vector<ProbeStats>& stats) override {
        if (json_) {
            for (const auto& s : stats) {
                nlohmann::ordered_json j;
                j["probe"] = s.probe;
                j["hits"] = s.hits;
                if (s.dropped) j["dropped"] = s.dropped;
                out_.write(j.dump() + "\n");
            }
            return;
        }
        size_t width = 5;
        for (const auto& s : stats) width = std::max(width, s.probe.size());
        out_.write(fmt::format("{:<{}} {:>12}\n", "PROBE", width, "HITS"));
        for (const auto& s : stats) out_.write(fmt::format("{:<{}} {:>12}\n", s.probe, width, s.hits));
    }

private:
    LineWriter out_;
    bool json_;
};

}  // namespace

std::unique_ptr<Sink> make_text_sink(FILE* out) { return std::make_unique<TextSink>(out); }
std::unique_ptr<Sink> make_json_sink(FILE* out) { return std::make_unique<JsonSink>(out); }
std::unique_ptr<Sink> make_count_sink(FILE* out, bool json) { return std::make_unique<CountSink>(out, json); }

}  // namespace uprobe::sink
