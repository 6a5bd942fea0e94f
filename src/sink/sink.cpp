#include "sink/sink.hpp"

#include <fmt/format.h>

#include <sys/stat.h>

#include <cerrno>
#include <nlohmann/json.hpp>

namespace uprobe::sink {
namespace {

// Writes whole lines. A terminal or pipe is flushed per line, since
// someone reads it as we go; a regular file is flushed at the end only,
// which keeps a busy trace from paying a write(2) per event.
class LineWriter {
public:
    explicit LineWriter(FILE* out) : out_(out) {
        struct stat st {};
        flush_each_ = fstat(fileno(out), &st) != 0 || !S_ISREG(st.st_mode);
    }
    ~LineWriter() { std::fflush(out_); }
    bool write(const std::string& line) {
        if (std::fwrite(line.data(), 1, line.size(), out_) != line.size()) return false;
        return !flush_each_ || std::fflush(out_) == 0;
    }

private:
    FILE* out_;
    bool flush_each_;
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

nlohmann::json to_json(const Value& v) {
    switch (v.kind) {
    case Value::Kind::Signed: return v.i;
    case Value::Kind::Unsigned:
    case Value::Kind::Hex: return v.u;
    case Value::Kind::Float: return v.f;
    case Value::Kind::Bool: return v.u != 0;
    case Value::Kind::String:
    case Value::Kind::Text: return v.text;
    case Value::Kind::Error: return nullptr;
    }
    return nullptr;
}

class JsonSink final : public Sink {
public:
    explicit JsonSink(FILE* out) : out_(out) {}
    bool event(const Event& e) override {
        nlohmann::ordered_json j;
        j["probe"] = e.probe;
        j["pid"] = e.pid;
        j["tid"] = e.tid;
        j["ts_ns"] = e.ts_ns;
        j["comm"] = e.comm;
        j["addr"] = e.addr;
        if (e.is_return) j["return"] = true;
        if (e.is_return && e.duration_ns) j["duration_ns"] = e.duration_ns;
        nlohmann::ordered_json args = nlohmann::ordered_json::object();
        nlohmann::ordered_json errors, truncated;
        for (const auto& a : e.args) {
            args[a.name] = to_json(a.value);
            if (a.value.kind == Value::Kind::Error) errors[a.name] = a.value.text;
            if (a.value.truncated) truncated.push_back(a.name);
        }
        j["args"] = std::move(args);
        if (!errors.is_null()) j["errors"] = std::move(errors);
        if (!truncated.is_null()) j["truncated"] = std::move(truncated);
        if (!e.stack.empty()) {
            nlohmann::ordered_json frames = nlohmann::ordered_json::array();
            for (const auto& f : e.stack) {
                nlohmann::ordered_json frame;
                frame["pc"] = f.pc;
                frame["function"] = f.function;
                frame["offset"] = f.offset;
                frame["object"] = f.object;
                if (!f.file.empty()) {
                    frame["file"] = f.file;
                    frame["line"] = f.line;
                }
                if (f.inlined) frame["inlined"] = true;
                frames.push_back(std::move(frame));
            }
            j["stack"] = std::move(frames);
        }
        // Replace invalid UTF-8 rather than throw: target strings are bytes.
        return out_.write(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    }

private:
    LineWriter out_;
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
