// --latency: durations of return events, per probe, as a log2 histogram in
// the layout of bpftrace's hist() (so its users read it at a glance), with
// exact percentiles from every kept duration (8 bytes per return).
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "sink/sink.hpp"

namespace uprobe::sink {
namespace {

constexpr int kBuckets = 65;  // [0], [1], [2, 4), ... [2^63, 2^64)
constexpr size_t kBarWidth = 52;

// Bucket 0 holds 0; bucket k >= 1 holds [2^(k-1), 2^k).
int bucket_of(uint64_t value) {
    return value == 0 ? 0 : 64 - std::countl_zero(value);
}
uint64_t bucket_low(int k) {
    return k == 0 ? 0 : uint64_t{1} << (k - 1);
}

// 1024 -> "1K", as bpftrace labels its power-of-two buckets.
std::string power_label(uint64_t value) {
    static const char* suffixes[] = {"", "K", "M", "G", "T", "P", "E"};
    int i = 0;
    while (value >= 1024 && value % 1024 == 0 && i < 6) {
        value /= 1024;
        ++i;
    }
    return fmt::format("{}{}", value, suffixes[i]);
}

std::string bucket_label(int k) {
    if (k <= 1) return fmt::format("[{}]", k);
    std::string high = k == 64 ? "..." : power_label(uint64_t{1} << k);
    return fmt::format("[{}, {})", power_label(bucket_low(k)), high);
}

std::string human_ns(uint64_t ns) {
    if (ns < 1000) return fmt::format("{}ns", ns);
    if (ns < 1000000) return fmt::format("{:.1f}us", static_cast<double>(ns) / 1e3);
    if (ns < 1000000000) return fmt::format("{:.1f}ms", static_cast<double>(ns) / 1e6);
    return fmt::format("{:.2f}s", static_cast<double>(ns) / 1e9);
}

// Nearest rank: the smallest value with at least p% of the values at or below it.
uint64_t percentile(const std::vector<uint64_t>& sorted, double p) {
    size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
    return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

class LatencySink final : public Sink {
public:
    LatencySink(FILE* out, bool json) : out_(out), json_(json) {}
    bool event(const Event& e) override {
        if (e.is_return) durations_[e.probe].push_back(e.duration_ns);
        return true;
    }
    void finish(const std::vector<ProbeStats>& stats) override {
        for (const auto& s : stats) {
            auto& values = durations_[s.probe];
            std::sort(values.begin(), values.end());
            if (json_)
                print_json(s.probe, values);
            else
                print_text(s.probe, values);
        }
        std::fflush(out_);
    }

private:
    void print_text(const std::string& probe, const std::vector<uint64_t>& sorted) {
        if (sorted.empty()) {
            fmt::print(out_, "{}: no returns\n\n", probe);
            return;
        }
        uint64_t counts[kBuckets] = {};
        for (uint64_t v : sorted) counts[bucket_of(v)]++;
        int first = 0, last = kBuckets - 1;
        while (counts[first] == 0) ++first;
        while (counts[last] == 0) --last;
        uint64_t most = *std::max_element(counts, counts + kBuckets);
        fmt::print(out_, "@{} (ns):\n", probe);
        for (int k = first; k <= last; ++k) {
            size_t bar = static_cast<size_t>(counts[k] * kBarWidth / most);
            fmt::print(out_, "{:<16}{:>8} |{:<{}}|\n", bucket_label(k), counts[k], std::string(bar, '@'),
                       kBarWidth);
        }
        fmt::print(out_, "count {}  p50 {}  p90 {}  p99 {}  max {}\n\n", sorted.size(),
                   human_ns(percentile(sorted, 50)), human_ns(percentile(sorted, 90)),
                   human_ns(percentile(sorted, 99)), human_ns(sorted.back()));
    }

    void print_json(const std::string& probe, const std::vector<uint64_t>& sorted) {
        nlohmann::ordered_json j;
        j["probe"] = probe;
        j["count"] = sorted.size();
        if (!sorted.empty()) {
            j["p50_ns"] = percentile(sorted, 50);
            j["p90_ns"] = percentile(sorted, 90);
            j["p99_ns"] = percentile(sorted, 99);
            j["max_ns"] = sorted.back();
            uint64_t counts[kBuckets] = {};
            for (uint64_t v : sorted) counts[bucket_of(v)]++;
            nlohmann::ordered_json buckets = nlohmann::ordered_json::array();
            for (int k = 0; k < kBuckets; ++k) {
                if (!counts[k]) continue;
                nlohmann::ordered_json b;
                b["min_ns"] = bucket_low(k);
                b["count"] = counts[k];
                buckets.push_back(std::move(b));
            }
            j["buckets"] = std::move(buckets);
        }
        fmt::print(out_, "{}\n", j.dump());
    }

    FILE* out_;
    bool json_;
    std::map<std::string, std::vector<uint64_t>> durations_;
};

}  // namespace

std::unique_ptr<Sink> make_latency_sink(FILE* out, bool json) {
    return std::make_unique<LatencySink>(out, json);
}

}  // namespace uprobe::sink
