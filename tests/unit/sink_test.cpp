// The JSON sink's lines, read back with an independent JSON parser
// (nlohmann::json): every field of docs/events.md, escaping, invalid UTF-8
// from the target, floats, errors, truncation and stacks. The text sink's
// lines against printf's formatting of the same fields.
#include <gtest/gtest.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "sink/sink.hpp"
#include "uprobe/latency.hpp"

namespace uprobe::sink {
namespace {

using Json = nlohmann::json;

// What a sink made by `make` writes for `events`.
std::string output_of(std::unique_ptr<Sink> (*make)(FILE*), const std::vector<Event>& events) {
    FILE* file = std::tmpfile();
    {
        auto sink = make(file);
        for (const auto& e : events) EXPECT_TRUE(sink->event(e));
    }
    std::rewind(file);
    std::string out;
    for (int c; (c = std::fgetc(file)) != EOF;) out += static_cast<char>(c);
    std::fclose(file);
    return out;
}

// The lines a JSON sink writes for `events`, parsed.
std::vector<Json> written(const std::vector<Event>& events) {
    const std::string text = output_of(make_json_sink, events);
    std::vector<Json> out;
    size_t start = 0;
    for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1)
        out.push_back(Json::parse(text.substr(start, end - start)));  // throws (and fails) on invalid JSON or UTF-8
    EXPECT_EQ(start, text.size()) << "an unterminated line: " << text.substr(start);
    return out;
}

Event event_with(std::vector<EventArg> args) {
    Event e;
    e.probe = "p";
    e.pid = 42;
    e.tid = 43;
    e.ts_ns = 1234567890123;
    e.comm = "prog";
    e.addr = 0x401000;
    e.args = std::move(args);
    return e;
}

Value text(Value::Kind kind, std::string s) {
    Value v;
    v.kind = kind;
    v.text = std::move(s);
    return v;
}

// What a text sink writes for `events`.
std::string written_text(const std::vector<Event>& events) { return output_of(make_text_sink, events); }

// perf script's layout, by printf.
std::string printf_line(const Event& e, const std::string& args) {
    char head[256];
    std::snprintf(head, sizeof head, "%16s %6d/%-6d %6" PRIu64 ".%06" PRIu64 ": %s: (%#" PRIx64 ")", e.comm.c_str(),
                  e.pid, e.tid, e.ts_ns / 1000000000, (e.ts_ns / 1000) % 1000000, e.probe.c_str(), e.addr);
    return head + args + "\n";
}

TEST(TextSink, LinesAsPrintfLaysThemOut) {
    Value number;
    number.kind = Value::Kind::Unsigned;
    number.u = 17;
    Event plain = event_with({{"a", number}, {"s", text(Value::Kind::String, "hi")}});
    Event wide = event_with({});
    wide.comm = "a-name-of-16-chr";  // no padding left
    wide.pid = 12345678;             // wider than its column
    wide.tid = 7;
    wide.ts_ns = 5;                  // 0.000000
    wide.addr = 0x7fffdeadbeef;
    Event first = event_with({});
    first.addr = 0;  // printf's %#x writes 0 bare; fmt's {:#x} wrote 0x0, which the sink keeps
    const std::string expected = printf_line(plain, " a=17 s=\"hi\"") + printf_line(wide, "");
    EXPECT_EQ(written_text({plain, wide}), expected);
    EXPECT_NE(written_text({first}).find(": (0x0)\n"), std::string::npos) << written_text({first});
}

TEST(TextSink, NonAsciiCommIsPaddedByItsWidth) {
    Event e = event_with({});
    e.comm = "caf\xc3\xa9";  // 4 characters in 5 bytes: 12 spaces before it
    const std::string line = written_text({e});
    EXPECT_EQ(line.substr(0, 17), std::string(12, ' ') + e.comm) << line;
}

TEST(JsonSink, EveryFieldInItsPlace) {
    Value sig;
    sig.kind = Value::Kind::Signed;
    sig.i = -7;
    Value big;
    big.kind = Value::Kind::Unsigned;
    big.u = UINT64_MAX;
    Value yes;
    yes.kind = Value::Kind::Bool;
    yes.u = 1;
    auto lines = written({event_with({{"s", sig}, {"u", big}, {"b", yes}})});
    ASSERT_EQ(lines.size(), 1u);
    const Json& j = lines[0];
    EXPECT_EQ(j["probe"], "p");
    EXPECT_EQ(j["pid"], 42);
    EXPECT_EQ(j["tid"], 43);
    EXPECT_EQ(j["ts_ns"], 1234567890123u);
    EXPECT_EQ(j["comm"], "prog");
    EXPECT_EQ(j["addr"], 0x401000u);
    EXPECT_EQ(j["args"]["s"], -7);
    EXPECT_EQ(j["args"]["u"].get<uint64_t>(), UINT64_MAX);
    EXPECT_EQ(j["args"]["b"], true);
    EXPECT_FALSE(j.contains("return"));
    EXPECT_FALSE(j.contains("errors"));
    EXPECT_FALSE(j.contains("truncated"));
    EXPECT_FALSE(j.contains("stack"));
    // Exactly these members.
    std::vector<std::string> keys;
    for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
    std::sort(keys.begin(), keys.end());
    EXPECT_EQ(keys, (std::vector<std::string>{"addr", "args", "comm", "pid", "probe", "tid", "ts_ns"}));
}

TEST(JsonSink, StringsAreEscapedAndInvalidUtf8Replaced) {
    const std::string tricky = std::string("q\"b\\n\n\t\x01") + "\xC3\xA9" + "\xE2\x82\xAC" + "\xF0\x9F\x98\x80";
    const std::string invalid = std::string("a\xFF") + "b\xC3" + "\xED\xA0\x80" + "c";  // bad byte, cut, surrogate
    auto lines = written({event_with({{"t", text(Value::Kind::String, tricky)},
                                      {"i", text(Value::Kind::String, invalid)}})});
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0]["args"]["t"], tricky);
    const std::string r = "\xEF\xBF\xBD";  // U+FFFD
    EXPECT_EQ(lines[0]["args"]["i"], "a" + r + "b" + r + r + r + r + "c");
}

// The probe's name and the comm are escaped once and reused while they
// repeat: each line still has its own event's, changed or not.
TEST(JsonSink, RepeatedAndChangingNamesEachLineItsOwn) {
    const std::vector<std::pair<std::string, std::string>> names = {
        {"p\"1", "a\tb"}, {"p\"1", "a\tb"}, {"p2", "a\tb"}, {"p\"1", "c\xFF"}, {"", ""}, {"", "c\xFF"}, {"p2", ""}};
    std::vector<Event> events;
    for (const auto& [probe, comm] : names) {
        Event e = event_with({});
        e.probe = probe;
        e.comm = comm;
        events.push_back(e);
    }
    auto lines = written(events);
    ASSERT_EQ(lines.size(), names.size());
    for (size_t i = 0; i < names.size(); ++i) {
        EXPECT_EQ(lines[i]["probe"], names[i].first) << "line " << i;
        const std::string comm = names[i].second == "c\xFF" ? "c\xEF\xBF\xBD" : names[i].second;
        EXPECT_EQ(lines[i]["comm"], comm) << "line " << i;
    }
}

// The line is written in room reserved from the event's size: the worst
// cases of every part (control bytes escape to six bytes each) at once,
// many lines of it past the writer's batch (run under ASan in CI).
TEST(JsonSink, WorstCaseEscapingFitsItsRoom) {
    const std::string controls(3000, '\x01');
    Event e = event_with({});
    e.probe = controls;
    e.comm = controls;
    e.is_return = true;
    e.duration_ns = UINT64_MAX;
    e.ts_ns = UINT64_MAX;
    e.pid = INT32_MIN;
    e.addr = UINT64_MAX;
    for (int i = 0; i < 20; ++i) {
        Value cut = text(Value::Kind::String, controls);
        cut.truncated = true;
        e.args.push_back({controls + std::to_string(i), cut});
        e.args.push_back({"e" + controls + std::to_string(i), text(Value::Kind::Error, controls)});
        e.args.push_back({"f" + std::to_string(i), Value::make_float(-1.2345678901234567e-300)});
        e.args.push_back({"s" + std::to_string(i), Value::make_signed(INT64_MIN)});
    }
    e.stack.push_back(StackFrame{UINT64_MAX, controls, UINT64_MAX, controls, controls, INT32_MIN, true});
    auto lines = written(std::vector<Event>(40, e));
    ASSERT_EQ(lines.size(), 40u);
    EXPECT_EQ(lines[39]["probe"], controls);
    EXPECT_EQ(lines[39]["errors"]["e" + controls + "19"], controls);
    EXPECT_EQ(lines[39]["args"]["s19"], INT64_MIN);
    EXPECT_EQ(lines[39]["truncated"].size(), 20u);
    EXPECT_EQ(lines[39]["stack"][0]["file"], controls);
}

TEST(JsonSink, FloatsStayFloatsAndNonFiniteIsNull) {
    auto f = [](double d) {
        Value v;
        v.kind = Value::Kind::Float;
        v.f = d;
        return v;
    };
    auto lines = written({event_with({{"half", f(0.5)}, {"two", f(2.0)}, {"tiny", f(1e-300)}, {"nan", f(NAN)},
                                      {"inf", f(INFINITY)}})});
    ASSERT_EQ(lines.size(), 1u);
    const Json& a = lines[0]["args"];
    EXPECT_TRUE(a["half"].is_number_float());
    EXPECT_EQ(a["half"].get<double>(), 0.5);
    EXPECT_TRUE(a["two"].is_number_float());
    EXPECT_EQ(a["two"].get<double>(), 2.0);
    EXPECT_EQ(a["tiny"].get<double>(), 1e-300);
    EXPECT_TRUE(a["nan"].is_null());
    EXPECT_TRUE(a["inf"].is_null());
}

TEST(JsonSink, ErrorsTruncationReturnsAndDuplicateNames) {
    Value bad = text(Value::Kind::Error, "bad address 0x10");
    Value cut = text(Value::Kind::String, "abc");
    cut.truncated = true;
    Value one;
    one.kind = Value::Kind::Unsigned;
    one.u = 1;
    Value two = one;
    two.u = 2;
    Event e = event_with({{"x", bad}, {"s", cut}, {"d", one}, {"d", two}});
    e.is_return = true;
    e.duration_ns = 999;
    auto lines = written({e});
    ASSERT_EQ(lines.size(), 1u);
    const Json& j = lines[0];
    EXPECT_TRUE(j["args"]["x"].is_null());
    EXPECT_EQ(j["errors"], Json({{"x", "bad address 0x10"}}));
    EXPECT_EQ(j["args"]["s"], "abc");
    EXPECT_EQ(j["truncated"], Json::array({"s"}));
    EXPECT_EQ(j["args"]["d"], 2);  // the later of two args with one name
    EXPECT_EQ(j["args"].size(), 3u);
    EXPECT_EQ(j["return"], true);
    EXPECT_EQ(j["duration_ns"], 999);
}

TEST(JsonSink, StackFrames) {
    Event e = event_with({});
    StackFrame inner{0x1000, "f(int)", 4, "prog", "f.c", 12, true};
    StackFrame outer{0x2000, "", 0, "libc.so.6", "", 0, false};
    e.stack = {inner, outer};
    auto lines = written({e});
    ASSERT_EQ(lines.size(), 1u);
    const Json& s = lines[0]["stack"];
    ASSERT_EQ(s.size(), 2u);
    EXPECT_EQ(s[0], Json({{"pc", 0x1000}, {"function", "f(int)"}, {"offset", 4}, {"object", "prog"}, {"file", "f.c"},
                          {"line", 12}, {"inlined", true}}));
    EXPECT_EQ(s[1], Json({{"pc", 0x2000}, {"function", ""}, {"offset", 0}, {"object", "libc.so.6"}}));
    EXPECT_EQ(lines[0]["args"], Json::object());
}

// Every value falls in its bucket, buckets tile 0..2^64 without gaps,
// every power of two starts one, and none is wider than 1/16 of its low.
TEST(LatencyBuckets, TileTheRangeInSixteenthsOfEachPowerOfTwo) {
    using namespace latency;
    EXPECT_EQ(bucket_low(0), 0u);
    EXPECT_EQ(bucket_high(kBuckets - 1), ~uint64_t{0});
    for (uint32_t k = 0; k + 1 < kBuckets; ++k) {
        ASSERT_EQ(bucket_high(k) + 1, bucket_low(k + 1)) << k;
        ASSERT_EQ(bucket_of(bucket_low(k)), k);
        ASSERT_EQ(bucket_of(bucket_high(k)), k);
        if (bucket_low(k) >= 16) {
            ASSERT_LE((bucket_high(k) - bucket_low(k) + 1) * 16, bucket_low(k)) << k;
        }
    }
    for (int power = 0; power < 64; ++power) {
        const uint64_t v = uint64_t{1} << power;
        EXPECT_EQ(bucket_low(bucket_of(v)), v) << power;
    }
    EXPECT_EQ(bucket_of(~uint64_t{0}), kBuckets - 1);
}

// What --latency prints, from durations counted in buckets.
std::string latency_output(const std::vector<uint64_t>& durations, bool json) {
    ProbeStats s;
    s.probe = "f";
    s.latency.resize(latency::kBuckets);
    for (uint64_t d : durations) {
        s.latency[latency::bucket_of(d)]++;
        s.latency_max_ns = std::max(s.latency_max_ns, d);
    }
    FILE* file = std::tmpfile();
    make_latency_sink(file, json)->finish({s});
    std::rewind(file);
    std::string out;
    for (int c; (c = std::fgetc(file)) != EOF;) out += static_cast<char>(c);
    std::fclose(file);
    return out;
}

TEST(LatencySink, Log2RowsAreExactAndPercentilesWithinABucket) {
    // 1..1000 ns: log2 rows count exactly; p50 is 500 (nearest rank), read
    // as the top of its bucket [496, 511]; p99 990 as the top of [960, 991].
    std::vector<uint64_t> durations;
    for (uint64_t d = 1; d <= 1000; ++d) durations.push_back(d);
    const Json j = Json::parse(latency_output(durations, true));
    EXPECT_EQ(j["count"], 1000);
    EXPECT_EQ(j["p50_ns"], 511);
    EXPECT_EQ(j["p99_ns"], 991);
    EXPECT_EQ(j["max_ns"], 1000);
    uint64_t total = 0;
    for (const auto& b : j["buckets"]) {
        const uint64_t low = b["min_ns"], high = low == 0 ? 0 : 2 * low - 1;
        EXPECT_EQ(b["count"].get<uint64_t>(), std::min<uint64_t>(high, 1000) - std::max<uint64_t>(low, 1) + 1) << low;
        total += b["count"].get<uint64_t>();
    }
    EXPECT_EQ(total, 1000u);
    const std::string text = latency_output(durations, false);
    EXPECT_NE(text.find("[512, 1K)            489 |"), std::string::npos) << text;
    EXPECT_NE(text.find("count 1000  p50 511ns  p90 927ns  p99 991ns  max 1.0us"), std::string::npos) << text;
}

}  // namespace
}  // namespace uprobe::sink
