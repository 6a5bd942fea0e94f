// Outputs: where events go. A sink formats events as they arrive and may
// print a report when tracing ends. Sinks know events and nothing of
// engines or processes.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "uprobe/event.hpp"

namespace uprobe::sink {

class Sink {
public:
    virtual ~Sink() = default;
    // Returns false when the output is gone (closed pipe): tracing should stop.
    virtual bool event(const Event& e) = 0;
    // Called once at the end with the per-probe totals.
    virtual void finish(const std::vector<ProbeStats>& stats) { (void)stats; }
};

// One line per event, like perf script:
//   "            comm  PID/TID     SECONDS: probe: (ADDR) name=value ..."
std::unique_ptr<Sink> make_text_sink(FILE* out);
// One JSON object per line; the schema is in docs/events.md.
std::unique_ptr<Sink> make_json_sink(FILE* out);
// No events; hits per probe at the end ("--count").
std::unique_ptr<Sink> make_count_sink(FILE* out, bool json);

// No events; at the end, per probe, a log2 histogram of return events'
// durations drawn like bpftrace's hist(), then count, p50/p90/p99 and max
// ("--latency"; src/sink/latency.cpp). JSON: one object per probe.
std::unique_ptr<Sink> make_latency_sink(FILE* out, bool json);

// No events; at the end, one line per distinct user stack with its count,
// "comm;outermost;...;innermost COUNT" (Brendan Gregg's folded format, read
// by flamegraph.pl and speedscope; src/sink/folded.cpp). Events need stacks.
std::unique_ptr<Sink> make_folded_sink(FILE* out);
// No events; at the end, hits per probe and process ("--count=pid"):
// "PROBE PID COMM HITS", or JSON objects with those keys.
std::unique_ptr<Sink> make_count_by_process_sink(FILE* out, bool json);

// "0x401136 main+0x1c at prog.c:42": one frame as text output shows it.
std::string describe_frame(const StackFrame& frame);


}  // namespace uprobe::sink
