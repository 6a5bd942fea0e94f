// Stacks and per-process counts: sinks that aggregate and print at the end.
#include <fmt/format.h>

#include <cinttypes>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>

#include "sink/sink.hpp"

namespace uprobe::sink {

std::string describe_frame(const StackFrame& frame) {
    std::string text = fmt::format("{:#x} ", frame.pc);
    if (frame.function.empty()) text += "??";
    else text += frame.function;
    if (!frame.function.empty() && !frame.inlined && frame.offset) text += fmt::format("+{:#x}", frame.offset);
    if (frame.inlined) text += " (inlined)";
    if (!frame.file.empty()) text += fmt::format(" at {}:{}", frame.file, frame.line);
    else if (!frame.object.empty()) text += " in " + frame.object;
    return text;
}

namespace {

// A frame's name in a folded line: the function, else [object], else the
// pc; ';' and ' ' would break the format.
std::string folded_name(const StackFrame& frame) {
    std::string name = !frame.function.empty() ? frame.function
                       : !frame.object.empty() ? "[" + frame.object + "]"
                                               : fmt::format("{:#x}", frame.pc);
    for (char& c : name)
        if (c == ';' || c == ' ') c = '_';
    return name;
}

class FoldedSink final : public Sink {
public:
    explicit FoldedSink(FILE* out) : out_(out) {}
    bool event(const Event& e) override {
        std::string line = e.comm;
        for (auto it = e.stack.rbegin(); it != e.stack.rend(); ++it) line += ";" + folded_name(*it);
        counts_[line]++;
        return true;
    }
    void finish(const std::vector<ProbeStats>&) override {
        for (const auto& [stack, count] : counts_) fmt::print(out_, "{} {}\n", stack, count);
        std::fflush(out_);
    }

private:
    FILE* out_;
    std::map<std::string, uint64_t> counts_;
};

class CountByProcessSink final : public Sink {
public:
    CountByProcessSink(FILE* out, bool json) : out_(out), json_(json) {}
    bool event(const Event& e) override {
        auto& entry = counts_[{e.probe, e.pid}];
        entry.first = e.comm;
        entry.second++;
        return true;
    }
    void finish(const std::vector<ProbeStats>&) override {
        if (json_) {
            for (const auto& [key, value] : counts_) {
                nlohmann::ordered_json j;
                j["probe"] = key.first;
                j["pid"] = key.second;
                j["comm"] = value.first;
                j["hits"] = value.second;
                fmt::print(out_, "{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
            }
        } else {
            size_t width = 5;
            for (const auto& [key, value] : counts_) width = std::max(width, key.first.size());
            fmt::print(out_, "{:<{}} {:>8} {:<16} {:>12}\n", "PROBE", width, "PID", "COMM", "HITS");
            for (const auto& [key, value] : counts_)
                fmt::print(out_, "{:<{}} {:>8} {:<16} {:>12}\n", key.first, width, key.second, value.first, value.second);
        }
        std::fflush(out_);
    }

private:
    FILE* out_;
    bool json_;
    std::map<std::pair<std::string, pid_t>, std::pair<std::string, uint64_t>> counts_;
};

}  // namespace

std::unique_ptr<Sink> make_folded_sink(FILE* out) { return std::make_unique<FoldedSink>(out); }
std::unique_ptr<Sink> make_count_by_process_sink(FILE* out, bool json) {
    return std::make_unique<CountByProcessSink>(out, json);
}

}  // namespace uprobe::sink
