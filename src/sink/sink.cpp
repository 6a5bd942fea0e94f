#include "sink/sink.hpp"

#include <fmt/format.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string_view>
#include <nlohmann/json.hpp>

namespace uprobe::sink {
namespace {

// The text of pending lines: fmt's buffer, which fmt formats into
// directly (the text sink) and which grows without filling what it adds
// (InPlace writes there).
using Text = fmt::memory_buffer;

void put(Text& out, std::string_view s) { out.append(s.data(), s.data() + s.size()); }

// Writes whole lines. A terminal or pipe is flushed per line, since
// someone reads it as we go; lines for a regular file (or a device no one
// reads, /dev/null) are gathered here and written 1 MiB at a time (stdio's
// own buffer is 4 KiB, and a write(2) costs about 24 us here), and at the
// end.
class LineWriter {
public:
    explicit LineWriter(FILE* out) : out_(out) {
        struct stat st {};
        const bool known = fstat(fileno(out), &st) == 0;
        flush_each_ = !known || !(S_ISREG(st.st_mode) || (S_ISCHR(st.st_mode) && !isatty(fileno(out))));
        pending_.reserve(kBatch + kBatch / 4);
    }
    ~LineWriter() { (void)flush(); }
    bool write(std::string_view line) {
        put(pending_, line);
        return end_line();
    }
    // For a sink that writes its line in place: append to line(), then
    // call end_line(). Saves a copy per event.
    Text& line() { return pending_; }
    bool end_line() { return (!flush_each_ && pending_.size() < kBatch) || flush(); }

private:
    static constexpr size_t kBatch = 1 << 20;
    bool flush() {
        bool ok = std::fwrite(pending_.data(), 1, pending_.size(), out_) == pending_.size();
        pending_.clear();
        return std::fflush(out_) == 0 && ok;
    }
    FILE* out_;
    bool flush_each_;
    Text pending_;
};

// Lines are written in place: each piece makes sure of room for its
// longest text with one inline comparison, then stores through a pointer.
// A busy trace writes millions of lines, and std::string's or fmt's
// appends are calls (and fmt's width specs parse at every line).
class InPlace {
public:
    explicit InPlace(Text& text) : p_(text.data() + text.size()), text_(text), end_(text.data() + text.capacity()) {}
    // The pieces written become part of the text.
    void finish() { text_.resize(static_cast<size_t>(p_ - text_.data())); }

    void put(char c) {
        room(1);
        *p_++ = c;
    }
    void put(std::string_view s) {
        room(s.size());
        std::memcpy(p_, s.data(), s.size());
        p_ += s.size();
    }
    template <size_t N>
    void put(const char (&s)[N]) {  // a literal: a copy of known size
        room(N - 1);
        std::memcpy(p_, s, N - 1);
        p_ += N - 1;
    }
    template <class Integer>
    void integer(Integer v) {
        room(24);
        p_ = std::to_chars(p_, p_ + 24, v).ptr;
    }
    // `v` in at least `width` characters: spaces before it (right-aligned)
    // or after it, or zeros before it.
    enum class Pad { Left, Right, Zeros };
    template <class Integer>
    void integer(Integer v, size_t width, Pad pad) {
        char digits[24];
        const size_t n = static_cast<size_t>(std::to_chars(digits, digits + sizeof digits, v).ptr - digits);
        padded(std::string_view(digits, n), width, pad);
    }
    // `s`, of `s.size()` characters, in at least `width`.
    void padded(std::string_view s, size_t width, Pad pad) {
        const size_t fill = width > s.size() ? width - s.size() : 0;
        room(s.size() + fill);
        if (pad != Pad::Right) p_ = std::fill_n(p_, fill, pad == Pad::Zeros ? '0' : ' ');
        std::memcpy(p_, s.data(), s.size());
        p_ += s.size();
        if (pad == Pad::Right) p_ = std::fill_n(p_, fill, ' ');
    }
    void hex(uint64_t v) {  // as fmt's {:#x}
        room(18);
        *p_++ = '0';
        *p_++ = 'x';
        p_ = std::to_chars(p_, p_ + 16, v, 16).ptr;
    }

protected:
    void room(size_t n) {
        if (static_cast<size_t>(end_ - p_) < n) grow(n);
    }
    // Where the next piece goes, as an offset (the text may move when it
    // grows), and what was written from such an offset on.
    size_t offset() const { return static_cast<size_t>(p_ - text_.data()); }
    std::string_view since(size_t from) const { return {text_.data() + from, offset() - from}; }
    char* p_;

private:
    void grow(size_t n) {
        const size_t used = offset();
        text_.resize(used);  // what is written so far survives the move
        text_.reserve(used + n + (used + n) / 2);
        p_ = text_.data() + used;
        end_ = text_.data() + text_.capacity();
    }

    Text& text_;
    char* end_;
};

// JSON text, written in place. A string escapes to at most 6 bytes a
// byte. Strings are the target's bytes, and JSON must be UTF-8: an invalid
// byte becomes U+FFFD.
class JsonOut : public InPlace {
public:
    using InPlace::InPlace;

    void string(std::string_view s) {
        static const char kHex[] = "0123456789abcdef";
        room(6 * s.size() + 2);
        put('"');
        for (size_t i = 0; i < s.size();) {
            // Runs of plain ASCII in one piece.
            size_t plain = i;
            while (plain < s.size()) {
                const auto c = static_cast<unsigned char>(s[plain]);
                if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
                ++plain;
            }
            put(s.substr(i, plain - i));
            i = plain;
            if (i == s.size()) break;
            const auto c = static_cast<unsigned char>(s[i]);
            if (c < 0x80) {
                switch (c) {
                case '"': put("\\\""); break;
                case '\\': put("\\\\"); break;
                case '\n': put("\\n"); break;
                case '\r': put("\\r"); break;
                case '\t': put("\\t"); break;
                case '\b': put("\\b"); break;
                case '\f': put("\\f"); break;
                default:
                    put("\\u00");
                    put(kHex[c >> 4]);
                    put(kHex[c & 15]);
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
                put(s.substr(i, length));
                i += length;
            } else {
                put("\xEF\xBF\xBD");
                ++i;
            }
        }
        put('"');
    }

    // The last string written through string(s, last), and its JSON.
    struct Escaped {
        std::string raw, json;
    };
    // string(s), escaped only when it is not `last` again: a probe's name
    // and a comm repeat from one event to the next.
    void string(std::string_view s, Escaped& last) {
        if (s == last.raw && !last.json.empty()) return put(last.json);
        const size_t from = offset();
        string(s);
        last.raw = s;
        last.json = since(from);
    }

    void number(double f) {
        if (!std::isfinite(f)) {
            put("null");
            return;
        }
        room(32);
        char* start = p_;
        p_ = std::to_chars(p_, p_ + 24, f).ptr;
        std::string_view text(start, static_cast<size_t>(p_ - start));
        if (text.find_first_of(".e") == std::string_view::npos) put(".0");  // stays a float to a reader
    }

    void value(const Value& v) {
        switch (v.kind) {
        case Value::Kind::Signed: integer(v.i); return;
        case Value::Kind::Unsigned:
        case Value::Kind::Hex: integer(v.u); return;
        case Value::Kind::Float: number(v.f); return;
        case Value::Kind::Bool: v.u ? put("true") : put("false"); return;
        case Value::Kind::String:
        case Value::Kind::Text: string(v.text); return;
        case Value::Kind::Error: put("null"); return;
        }
        put("null");
    }

    void field(std::string_view key, bool& first) {
        if (!first) put(',');
        first = false;
        string(key);
        put(':');
    }
};

class TextSink final : public Sink {
public:
    explicit TextSink(FILE* out) : out_(out) {}
    // As perf script prints: "comm pid/tid sec.usec: probe: (addr) args".
    bool event(const Event& e) override {
        Text& line = out_.line();
        using Pad = InPlace::Pad;
        const bool ascii =
            std::all_of(e.comm.begin(), e.comm.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
        // fmt pads other text by its display width (code points, some two
        // columns wide).
        if (!ascii) fmt::format_to(fmt::appender(line), "{:>16}", e.comm);
        InPlace o(line);
        if (ascii) o.padded(e.comm, 16, Pad::Left);
        o.put(' ');
        o.integer(e.pid, 6, Pad::Left);
        o.put('/');
        o.integer(e.tid, 6, Pad::Right);
        o.put(' ');
        o.integer(e.ts_ns / 1000000000, 6, Pad::Left);
        o.put('.');
        o.integer((e.ts_ns / 1000) % 1000000, 6, Pad::Zeros);
        o.put(": ");
        o.put(e.probe);
        o.put(": (");
        o.hex(e.addr);
        o.put(')');
        for (const auto& a : e.args) {
            o.put(' ');
            o.put(a.name);
            o.put('=');
            o.put(format_value(a.value));
        }
        o.put('\n');
        o.finish();
        for (const auto& frame : e.stack) fmt::format_to(fmt::appender(line), "        {}\n", describe_frame(frame));
        return out_.end_line();
    }

private:
    LineWriter out_;
};

class JsonSink final : public Sink {
public:
    explicit JsonSink(FILE* out) : out_(out) {}
    bool event(const Event& e) override {
        // One member per name: a later argument of the same name (an
        // explicit one repeated by $params, say) replaces the earlier.
        std::vector<const EventArg*>& args = args_;
        args.clear();
        for (const auto& a : e.args) {
            auto same = std::find_if(args.begin(), args.end(), [&](const EventArg* b) { return b->name == a.name; });
            if (same != args.end()) *same = &a;
            else args.push_back(&a);
        }
        JsonOut j(out_.line());
        // The keys are plain ASCII, written as they are.
        j.put("{\"probe\":");
        j.string(e.probe, probe_);
        j.put(",\"pid\":");
        j.integer(e.pid);
        j.put(",\"tid\":");
        j.integer(e.tid);
        j.put(",\"ts_ns\":");
        j.integer(e.ts_ns);
        j.put(",\"comm\":");
        j.string(e.comm, comm_);
        j.put(",\"addr\":");
        j.integer(e.addr);
        if (e.is_return) {
            j.put(",\"return\":true");
            if (e.duration_ns) {
                j.put(",\"duration_ns\":");
                j.integer(e.duration_ns);
            }
        }
        j.put(",\"args\":{");
        bool first = false, first_arg = true, errors = false, truncated = false;
        for (const EventArg* a : args) {
            j.field(a->name, first_arg);
            j.value(a->value);
            errors |= a->value.kind == Value::Kind::Error;
            truncated |= a->value.truncated;
        }
        j.put('}');
        if (errors) {
            j.field("errors", first);
            j.put('{');
            bool first_error = true;
            for (const EventArg* a : args) {
                if (a->value.kind != Value::Kind::Error) continue;
                j.field(a->name, first_error);
                j.string(a->value.text);
            }
            j.put('}');
        }
        if (truncated) {
            j.field("truncated", first);
            j.put('[');
            bool first_name = true;
            for (const EventArg* a : args) {
                if (!a->value.truncated) continue;
                if (!first_name) j.put(',');
                first_name = false;
                j.string(a->name);
            }
            j.put(']');
        }
        if (!e.stack.empty()) {
            j.field("stack", first);
            j.put('[');
            for (size_t i = 0; i < e.stack.size(); ++i) {
                const StackFrame& f = e.stack[i];
                if (i) j.put(',');
                bool first_key = true;
                j.put('{');
                j.field("pc", first_key);
                j.integer(f.pc);
                j.field("function", first_key);
                j.string(f.function);
                j.field("offset", first_key);
                j.integer(f.offset);
                j.field("object", first_key);
                j.string(f.object);
                if (!f.file.empty()) {
                    j.field("file", first_key);
                    j.string(f.file);
                    j.field("line", first_key);
                    j.integer(f.line);
                }
                if (f.inlined) {
                    j.field("inlined", first_key);
                    j.put("true");
                }
                j.put('}');
            }
            j.put(']');
        }
        j.put("}\n");
        j.finish();
        return out_.end_line();
    }

private:
    LineWriter out_;
    std::vector<const EventArg*> args_;  // reused: no allocation per event
    JsonOut::Escaped probe_, comm_;
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
