// --latency: durations of return probes, per probe, as a log2 histogram in
// the layout of bpftrace's hist() (so its users read it at a glance), with
// percentiles. The durations come counted in buckets (ProbeStats::latency,
// uprobe/latency.hpp: the agent counts them in the program); the log2 rows
// add up whole buckets, so they are exact; a percentile is the highest
// value of the bucket that holds it (within 6.25%), at most the maximum.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <nlohmann/json.hpp>

#include "sink/sink.hpp"
#include "uprobe/latency.hpp"

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

// The log2 rows of a probe's buckets, and their total.
struct Rows {
    uint64_t counts[kBuckets] = {};
    uint64_t total = 0;
};
Rows rows_of(const std::vector<uint64_t>& buckets) {
    Rows rows;
    for (uint32_t k = 0; k < buckets.size(); ++k) {
        rows.counts[bucket_of(latency::bucket_low(k))] += buckets[k];
        rows.total += buckets[k];
    }
    return rows;
}

// Nearest rank: the bucket of the smallest value with at least p% of the
// values at or below it; its highest value, at most the maximum.
uint64_t percentile(const ProbeStats& s, uint64_t total, double p) {
    const uint64_t rank = std::clamp<uint64_t>(
        static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total))), 1, total);
    uint64_t seen = 0;
    for (uint32_t k = 0; k < s.latency.size(); ++k) {
        seen += s.latency[k];
        if (seen >= rank) return std::min(latency::bucket_high(k), s.latency_max_ns);
    }
    return s.latency_max_ns;
}

class LatencySink final : public Sink {
public:
    LatencySink(FILE* out, bool json) : out_(out), json_(json) {}
    // The session counts the durations (SessionOptions::latency_only).
    bool event(const Event&) override { return true; }
    void finish(const std::vector<ProbeStats>& stats) override {
        for (const auto& s : stats) {
            if (json_)
                print_json(s);
            else
                print_text(s);
        }
        std::fflush(out_);
    }

private:
    void print_text(const ProbeStats& s) {
        const Rows rows = rows_of(s.latency);
        if (rows.total == 0) {
            fmt::print(out_, "{}: no returns\n\n", s.probe);
            return;
        }
        int first = 0, last = kBuckets - 1;
        while (rows.counts[first] == 0) ++first;
        while (rows.counts[last] == 0) --last;
        uint64_t most = *std::max_element(rows.counts, rows.counts + kBuckets);
        fmt::print(out_, "@{} (ns):\n", s.probe);
        for (int k = first; k <= last; ++k) {
            size_t bar = static_cast<size_t>(rows.counts[k] * kBarWidth / most);
            fmt::print(out_, "{:<16}{:>8} |{:<{}}|\n", bucket_label(k), rows.counts[k], std::string(bar, '@'),
                       kBarWidth);
        }
        fmt::print(out_, "count {}  p50 {}  p90 {}  p99 {}  max {}\n\n", rows.total,
                   human_ns(percentile(s, rows.total, 50)), human_ns(percentile(s, rows.total, 90)),
                   human_ns(percentile(s, rows.total, 99)), human_ns(s.latency_max_ns));
    }

    void print_json(const ProbeStats& s) {
        const Rows rows = rows_of(s.latency);
        nlohmann::ordered_json j;
        j["probe"] = s.probe;
        j["count"] = rows.total;
        if (rows.total) {
            j["p50_ns"] = percentile(s, rows.total, 50);
            j["p90_ns"] = percentile(s, rows.total, 90);
            j["p99_ns"] = percentile(s, rows.total, 99);
            j["max_ns"] = s.latency_max_ns;
            nlohmann::ordered_json buckets = nlohmann::ordered_json::array();
            for (int k = 0; k < kBuckets; ++k) {
                if (!rows.counts[k]) continue;
                nlohmann::ordered_json b;
                b["min_ns"] = bucket_low(k);
                b["count"] = rows.counts[k];
                buckets.push_back(std::move(b));
            }
            j["buckets"] = std::move(buckets);
        }
        fmt::print(out_, "{}\n", j.dump());
    }

    FILE* out_;
    bool json_;
};

}  // namespace

std::unique_ptr<Sink> make_latency_sink(FILE* out, bool json) {
    return std::make_unique<LatencySink>(out, json);
}

}  // namespace uprobe::sink
