// The buckets of latency histograms (SessionOptions::latency_only,
// ProbeStats::latency): nanoseconds, log-linear. Values below 16 have a
// bucket each; above, each power of two is cut in 16 equal steps, so a
// bucket's width is at most 1/16 of its lowest value (percentiles read
// from them are within 6.25%) and every power of two starts a bucket (a
// log2 histogram, bpftrace's hist(), adds them up exactly). Header-only
// and dependency-free: the in-process agent counts into these buckets.
#pragma once

#include <stdint.h>

namespace uprobe::latency {

constexpr uint32_t kSteps = 16;  // buckets per power of two
constexpr uint32_t kBuckets = kSteps + (63 - 4 + 1) * kSteps;  // 976: the last holds [15 << 60, 2^64)

constexpr uint32_t bucket_of(uint64_t ns) {
    if (ns < kSteps) return static_cast<uint32_t>(ns);
    const uint32_t power = 63 - static_cast<uint32_t>(__builtin_clzll(ns));  // >= 4
    const uint32_t step = static_cast<uint32_t>(ns >> (power - 4)) & (kSteps - 1);
    return kSteps + (power - 4) * kSteps + step;
}

// The lowest value of bucket k (k < kBuckets).
constexpr uint64_t bucket_low(uint32_t k) {
    if (k < kSteps) return k;
    const uint32_t power = (k - kSteps) / kSteps + 4;
    return (uint64_t{kSteps} + (k - kSteps) % kSteps) << (power - 4);
}

// The highest value of bucket k.
constexpr uint64_t bucket_high(uint32_t k) { return k + 1 < kBuckets ? bucket_low(k + 1) - 1 : ~uint64_t{0}; }

}  // namespace uprobe::latency
