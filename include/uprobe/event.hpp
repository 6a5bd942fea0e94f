// Events: what a probe hit produces, as every engine delivers it and every
// output (text, JSON, counts, histograms) consumes it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace uprobe {

// One fetched argument value. The kind decides formatting; `text` holds
// strings and preformatted values (enumerators, structs).
struct Value {
    enum class Kind {
        Signed,     // i
        Unsigned,   // u
        Hex,        // u, printed 0x...
        Float,      // f
        Bool,       // u != 0
        String,     // text; `truncated` when the bound cut it
        Text,       // text, printed as is (structs, enumerators)
        Error,      // text says why the value is missing ("optimized out",
                    // "bad address 0x10")
    };
    Kind kind = Kind::Unsigned;
    int64_t i = 0;
    uint64_t u = 0;
    double f = 0;
    std::string text;
    bool truncated = false;

    static Value make_signed(int64_t v) { Value x; x.kind = Kind::Signed; x.i = v; return x; }
    static Value make_unsigned(uint64_t v) { Value x; x.kind = Kind::Unsigned; x.u = v; return x; }
    static Value make_hex(uint64_t v) { Value x; x.kind = Kind::Hex; x.u = v; return x; }
    static Value make_float(double v) { Value x; x.kind = Kind::Float; x.f = v; return x; }
    static Value make_string(std::string s, bool cut) {
        Value x; x.kind = Kind::String; x.text = std::move(s); x.truncated = cut; return x;
    }
    static Value make_error(std::string why) { Value x; x.kind = Kind::Error; x.text = std::move(why); return x; }
};

// A value as text outputs show it: integers in decimal, Hex as 0x..,
// floats shortest round-trip, strings quoted with C escapes ("..." after a
// truncated one), errors in parentheses.
std::string format_value(const Value& v);

struct EventArg {
    std::string name;
    Value value;
};

// One frame of a user stack, innermost first. Functions inlined at a pc are
// frames of their own (inlined = true), placed at their call sites.
struct StackFrame {
    uint64_t pc = 0;
    std::string function;  // demangled; "" when no symbol covers pc
    uint64_t offset = 0;   // pc - function start
    std::string object;    // basename of the file mapped there
    std::string file;      // source file:line when DWARF knows them
    int line = 0;
    bool inlined = false;
};

struct Event {
    uint32_t probe_id = 0;     // index of the probe in the session
    std::string probe;         // the probe's NAME
    pid_t pid = 0;
    pid_t tid = 0;
    uint64_t ts_ns = 0;        // CLOCK_MONOTONIC at the hit
    std::string comm;          // the thread's comm
    uint64_t addr = 0;         // runtime address of the probe site
    bool is_return = false;
    // Return events: nanoseconds from the function's entry to this return
    // (what --latency aggregates); 0 otherwise.
    uint64_t duration_ns = 0;
    std::vector<EventArg> args;
    std::vector<StackFrame> stack;  // the user stack, when asked for (--stack)
};

// Per-probe totals reported at exit.
struct ProbeStats {
    std::string probe;
    uint64_t hits = 0;
    uint64_t sites = 0;   // places the probe was inserted, summed over processes
    uint64_t dropped = 0; // events lost (never silently: reported at exit)
    // SessionOptions::latency_only: the durations of the probe's returns,
    // counted per bucket of uprobe/latency.hpp (kBuckets counts; empty
    // otherwise), and the longest exactly.
    std::vector<uint64_t> latency;
    uint64_t latency_max_ns = 0;
};

}  // namespace uprobe
