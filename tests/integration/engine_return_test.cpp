// Return probes (FUNC%return) end to end, in both mechanisms: trampolines
// and instruction analysis. Every test compares the traced program's
// output with an untraced run and checks every return value, which the
// targets (tests/targets/ret_*) know by construction.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "engine_support.hpp"
#include "uprobe/latency.hpp"

namespace uprobe::engine::test {
namespace {

struct Options {
    ReturnMode mode = ReturnMode::Trampoline;
    bool follow = false;
    std::function<void(Engine&, const Event&)> after_event;
    std::string engine = "ptrace";
    bool latency_only = false;
};

std::unique_ptr<Engine> make_engine(const std::string& name) {
    return name == "inline" ? make_inline_engine() : make_ptrace_engine();
}

LaunchResult launch_returns(const std::vector<std::string>& probes, const std::vector<std::string>& argv,
                            const Options& options, std::vector<std::string>* notes = nullptr) {
    LaunchResult result;
    auto engine = make_engine(options.engine);
    Watchdog watchdog(*engine);
    Collector collector;
    if (options.after_event) collector.after_event = [&](const Event& e) { options.after_event(*engine, e); };
    TraceRequest request;
    for (const auto& p : probes) request.probes.push_back(spec(p));
    request.command = argv;
    request.follow_children = options.follow;
    request.return_mode = options.mode;
    request.latency_only = options.latency_only;
    CapturedStdout capture;
    auto started = engine->start(request, collector);
    capture.restore();
    if (!started) {
        result.error = started.error().message();
        return result;
    }
    for (pid_t pid : engine->traced_processes()) watchdog.watch(pid);
    auto status = engine->run();
    if (!status)
        result.error = status.error().message();
    else
        result.status = *status;
    result.output = capture.text();
    result.events = std::move(collector.events);
    result.processes = engine->traced_processes();
    result.stats = engine->stats();
    if (notes) *notes = collector.notes;
    return result;
}

std::vector<const Event*> of_probe(const LaunchResult& r, const std::string& probe) {
    std::vector<const Event*> out;
    for (const auto& e : r.events)
        if (e.probe == probe) out.push_back(&e);
    return out;
}

// Both engines in both modes, and the inline engine's auto mode, which
// hooks the rets where it can (no tail jump, a jump for every ret) and the
// return address elsewhere.
struct Variant {
    const char* engine;
    ReturnMode mode;
};

std::string variant_name(const testing::TestParamInfo<Variant>& info) {
    return std::string(info.param.engine == std::string("inline") ? "Inline" : "Ptrace") +
           (info.param.mode == ReturnMode::Trampoline     ? "Trampoline"
            : info.param.mode == ReturnMode::Instructions ? "Instructions"
                                                          : "Auto");
}

class Returns : public testing::TestWithParam<Variant> {
protected:
    Options options() const {
        Options o;
        o.mode = GetParam().mode;
        o.engine = GetParam().engine;
        return o;
    }
    // The inline engine's instruction mode hooks rets alone: a function
    // left by a tail jump is refused at start, with one line saying `why`.
    // True (and the refusal checked) for that variant.
    void check_own_return_addresses(const std::string& probe) const;
    bool inline_insn_refuses(const std::vector<std::string>& probes, const std::vector<std::string>& argv,
                             const std::string& why) const {
        if (GetParam().engine != std::string("inline") || GetParam().mode != ReturnMode::Instructions) return false;
        auto r = launch_returns(probes, argv, options());
        EXPECT_NE(r.error.find(why), std::string::npos) << r.error;
        EXPECT_TRUE(r.events.empty());
        return true;
    }
};

constexpr const char kTailJump[] = "leaves by a tail jump";

TEST_P(Returns, EveryReturnWithItsValue) {
    const std::vector<std::string> argv = {target("ret_funcs"), "basic", "200"};
    auto r = launch_returns({"sq=square%return v=$retval"}, argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 200u);
    const uint64_t square = nm_address(target("ret_funcs"), "square");
    for (uint64_t i = 0; i < 200; ++i) {
        const Event& e = r.events[i];
        EXPECT_TRUE(e.is_return);
        EXPECT_EQ(e.probe, "sq");
        ASSERT_EQ(e.args.size(), 1u);
        EXPECT_EQ(e.args[0].name, "v");
        EXPECT_EQ(e.args[0].value.u, i * i);
        // The event's address is the function's entry (PIE: same page offset).
        EXPECT_EQ(e.addr & 0xfff, square & 0xfff);
    }
    EXPECT_EQ(r.stats.at(0).hits, 200u);
    EXPECT_EQ(r.stats.at(0).sites, 1u);
}

// Instruction mode never writes the stack: a function reading its own
// return address sees its caller's, as untraced. (A trampoline shows
// there: docs/probes.md, "Limits".) Auto mode hooks this function's ret,
// with a frame from the entry ($duration) or without.
TEST_P(Returns, TheFunctionSeesItsOwnReturnAddress) {
    if (GetParam().mode == ReturnMode::Trampoline) GTEST_SKIP() << "trampoline mode replaces the return address";
    for (const char* probe : {"ra=own_return_address%return v=$retval", "ra=own_return_address%return v=$retval d=$duration"}) {
        SCOPED_TRACE(probe);
        check_own_return_addresses(probe);
    }
}

void Returns::check_own_return_addresses(const std::string& probe) const {
    const std::vector<std::string> argv = {target("ret_funcs"), "caller", "5"};
    auto r = launch_returns({probe}, argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 5u);
    // The program prints the address less main's; the event's is the
    // function's entry, nm's distance away from main.
    const uint64_t from_main = nm_address(target("ret_funcs"), "own_return_address") - nm_address(target("ret_funcs"), "main");
    std::istringstream printed(r.output);
    for (const Event& e : r.events) {
        std::string line;
        ASSERT_TRUE(std::getline(printed, line));
        ASSERT_EQ(line.rfind("main+", 0), 0u) << line;
        EXPECT_EQ(e.args.at(0).value.u - e.addr + from_main, std::stoull(line.substr(5), nullptr, 16));
    }
}

TEST_P(Returns, EntryValuesAndDuration) {
    const std::vector<std::string> argv = {target("ret_funcs"), "basic", "50"};
    const std::vector<std::string> probes = {"square=square%return x=@entry($arg1) v=$retval:s64 d=$duration"};
    auto r = launch_returns(probes, argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 50u);
    for (int64_t i = 0; i < 50; ++i) {
        const Event& e = r.events[static_cast<size_t>(i)];
        ASSERT_EQ(e.args.size(), 3u);
        EXPECT_EQ(e.args[0].name, "x");
        EXPECT_EQ(e.args[0].value.u, static_cast<uint64_t>(i));
        EXPECT_EQ(e.args[1].value.kind, Value::Kind::Signed);
        EXPECT_EQ(e.args[1].value.i, i * i);
        EXPECT_EQ(e.args[2].name, "d");
        EXPECT_EQ(e.args[2].value.kind, Value::Kind::Unsigned);
        EXPECT_GT(e.args[2].value.u, 0u);
        EXPECT_EQ(e.args[2].value.u, e.duration_ns);
    }
}

TEST_P(Returns, FloatReturnValuesComeFromXmm0) {
    const std::vector<std::string> argv = {target("ret_funcs"), "float", "20"};
    auto r = launch_returns({"half=half%return v=$retval:f64", "third=third%return v=$retval:f32"}, argv,
                            options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    auto halves = of_probe(r, "half");
    auto thirds = of_probe(r, "third");
    ASSERT_EQ(halves.size(), 20u);
    ASSERT_EQ(thirds.size(), 20u);
    for (int i = 0; i < 20; ++i) {
        EXPECT_EQ(halves[static_cast<size_t>(i)]->args.at(0).value.kind, Value::Kind::Float);
        EXPECT_EQ(halves[static_cast<size_t>(i)]->args[0].value.f, (i + 0.5) / 2);
        EXPECT_EQ(thirds[static_cast<size_t>(i)]->args.at(0).value.f,
                  static_cast<double>(static_cast<float>(i) / 3.0f));
    }
}

// Four probes at one entry: the first reads no vector register (the
// inline engine's trampoline there saves none), the later ones read xmm0,
// and two of them take the same return.
TEST_P(Returns, ProbesSharingAnEntryEachSeeTheirValues) {
    const std::vector<std::string> argv = {target("ret_funcs"), "float", "20"};
    auto r = launch_returns({"e=half n=%di", "r1=half%return v=$retval:f64", "r2=half%return v=$retval:f64",
                             "x=half v=%xmm0:f64"},
                            argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(of_probe(r, "e").size(), 20u);
    for (const char* probe : {"r1", "r2", "x"}) {
        auto events = of_probe(r, probe);
        ASSERT_EQ(events.size(), 20u) << probe;
        for (int i = 0; i < 20; ++i) {
            const double entry = i + 0.5;
            EXPECT_EQ(events[static_cast<size_t>(i)]->args.at(0).value.f, probe[0] == 'x' ? entry : entry / 2)
                << probe << " call " << i;
        }
    }
}

// @entry strings, and more @entry values than the inline engine's shadow
// frame keeps (it records them at the entry instead); frames left by
// longjmp (leap) report nothing and take no one else's values.
TEST_P(Returns, EntryStringsAndManyEntryValues) {
    const std::vector<std::string> argv = {target("ret_funcs"), "labels", "12"};
    const std::vector<std::string> probes = {
        "sfx=suffixes%return v=$retval s=@entry(%di):string m=@entry(%si) a=@entry(%di) b=@entry(%si) "
        "c=@entry(%di) d=@entry(%si)",
        "len=label_length%return v=$retval s=@entry(%di):string", "lp=leap%return s=@entry(%di):string"};
    auto r = launch_returns(probes, argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    EXPECT_TRUE(of_probe(r, "lp").empty());
    const std::vector<std::string> labels = {"alpha", "beta", "gamma", "delta"};
    auto lengths = of_probe(r, "len");
    auto suffixes = of_probe(r, "sfx");
    ASSERT_EQ(lengths.size(), 12u);
    ASSERT_EQ(suffixes.size(), 36u);
    for (size_t i = 0; i < 12; ++i) {
        const std::string& label = labels[i % 4];
        EXPECT_EQ(lengths[i]->args.at(1).value.text, label.substr(2)) << "call " << i;
        EXPECT_EQ(lengths[i]->args.at(0).value.u, label.size() - 2) << "call " << i;
        for (size_t level = 0; level < 3; ++level) {  // innermost (m = 0) returns first
            const Event& e = *suffixes[3 * i + level];
            const size_t k = 2 - level;  // how far into the label this frame started
            EXPECT_EQ(e.args.at(0).value.u, label.size() - k) << "call " << i << " level " << level;
            EXPECT_EQ(e.args.at(1).value.text, label.substr(k)) << "call " << i << " level " << level;
            EXPECT_EQ(e.args.at(2).value.u, level) << "call " << i;
            EXPECT_EQ(e.args.at(4).value.u, level) << "call " << i;
            EXPECT_EQ(e.args.at(6).value.u, level) << "call " << i;
        }
    }
}

// Without a :TYPE, $retval of a function whose DWARF return type is double
// or float is read from xmm0 (ret_funcs is built with -g); integer
// functions keep rax, and an explicit :TYPE wins over DWARF.
TEST_P(Returns, FloatReturnTypeComesFromDwarf) {
    const std::vector<std::string> argv = {target("ret_funcs"), "float", "20"};
    auto r = launch_returns({"half=half%return v=$retval", "third=third%return v=$retval",
                             "raw=half%return v=$retval:x64"},
                            argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    auto halves = of_probe(r, "half");
    auto thirds = of_probe(r, "third");
    auto raws = of_probe(r, "raw");
    ASSERT_EQ(halves.size(), 20u);
    ASSERT_EQ(thirds.size(), 20u);
    ASSERT_EQ(raws.size(), 20u);
    for (size_t i = 0; i < 20; ++i) {
        const Value& h = halves[i]->args.at(0).value;
        const Value& t = thirds[i]->args.at(0).value;
        EXPECT_EQ(h.kind, Value::Kind::Float);
        EXPECT_EQ(h.f, (static_cast<double>(i) + 0.5) / 2);
        EXPECT_EQ(t.kind, Value::Kind::Float);
        EXPECT_EQ(t.f, static_cast<double>(static_cast<float>(i) / 3.0f));
        EXPECT_NE(raws[i]->args.at(0).value.kind, Value::Kind::Float);
    }
    auto ints = launch_returns({"sq=square%return v=$retval"}, {target("ret_funcs"), "basic", "5"}, options());
    ASSERT_EQ(ints.error, "");
    ASSERT_EQ(ints.events.size(), 5u);
    for (uint64_t i = 0; i < 5; ++i) {
        EXPECT_NE(ints.events[i].args.at(0).value.kind, Value::Kind::Float);
        EXPECT_EQ(ints.events[i].args[0].value.u, i * i);
    }
}

TEST_P(Returns, NestedProbedFunctionsReturnInnermostFirst) {
    const std::vector<std::string> argv = {target("ret_funcs"), "nested", "30"};
    auto r = launch_returns(
        {"outer=outer%return v=$retval", "middle=middle%return v=$retval", "inner=inner%return v=$retval"},
        argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 90u);
    for (uint64_t i = 0; i < 30; ++i) {
        EXPECT_EQ(r.events[3 * i].probe, "inner");
        EXPECT_EQ(r.events[3 * i].args.at(0).value.u, i + 10);
        EXPECT_EQ(r.events[3 * i + 1].probe, "middle");
        EXPECT_EQ(r.events[3 * i + 1].args.at(0).value.u, 2 * (i + 10));
        EXPECT_EQ(r.events[3 * i + 2].probe, "outer");
        EXPECT_EQ(r.events[3 * i + 2].args.at(0).value.u, 2 * (i + 10) + 1);
    }
}

TEST_P(Returns, RecursionFiveThousandDeep) {
    const std::vector<std::string> argv = {target("ret_funcs"), "recurse", "5000"};
    const std::vector<std::string> probes = {"depth=depth%return v=$retval n=@entry($arg1)"};
    auto r = launch_returns(probes, argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 5001u);
    for (uint64_t i = 0; i <= 5000; ++i) {
        EXPECT_EQ(r.events[i].args.at(0).value.u, i) << "return " << i;
        EXPECT_EQ(r.events[i].args.at(1).value.u, i);
    }
}

TEST_P(Returns, LongjmpDropsAbandonedFramesAndNeverReportsThem) {
    const std::vector<std::string> argv = {target("ret_funcs"), "longjmp", "20"};
    std::vector<std::string> notes;
    auto r = launch_returns({"jumper=jumper%return v=$retval", "sigjumper=sigjumper%return v=$retval",
                             "square=square%return v=$retval"},
                            argv, options(), &notes);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    EXPECT_TRUE(of_probe(r, "jumper").empty());
    EXPECT_TRUE(of_probe(r, "sigjumper").empty());
    auto squares = of_probe(r, "square");
    ASSERT_EQ(squares.size(), 3u);
    EXPECT_EQ(squares[0]->args.at(0).value.u, 4u);
    EXPECT_EQ(squares[1]->args.at(0).value.u, 9u);
    EXPECT_EQ(squares[2]->args.at(0).value.u, 16u);
}

TEST_P(Returns, FourThreadsExactValuesPerThread) {
    const std::vector<std::string> argv = {target("ret_funcs"), "threads", "3000"};
    const std::vector<std::string> probes = {"square=square%return x=@entry($arg1) v=$retval"};
    auto r = launch_returns(probes, argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 4u * 3000u);
    std::map<pid_t, std::set<uint64_t>> bases;
    std::map<pid_t, uint64_t> next;
    for (const auto& e : r.events) {
        uint64_t x = e.args.at(0).value.u;
        EXPECT_EQ(e.args.at(1).value.u, x * x);
        bases[e.tid].insert(x / 1000000);
        // Per thread, program order: x counts up from base.
        if (next.count(e.tid)) {
            EXPECT_EQ(x, next[e.tid]);
        }
        next[e.tid] = x + 1;
    }
    EXPECT_EQ(bases.size(), 4u);
    for (const auto& [tid, b] : bases) EXPECT_EQ(b.size(), 1u) << "thread " << tid;
}

TEST_P(Returns, TailCallsReportCalleeFirstWithTheSameValue) {
    const std::vector<std::string> argv = {target("ret_tail"), "20"};
    // The test relies on tail_outer ending in a jmp to tail_inner.
    std::string dump = shell("objdump -d --no-show-raw-insn " + target("ret_tail"));
    auto at = dump.find("<tail_outer>:");
    ASSERT_NE(at, std::string::npos);
    ASSERT_NE(dump.substr(at, 200).find("jmp"), std::string::npos) << dump.substr(at, 200);
    const std::vector<std::string> probes = {"outer=tail_outer%return v=$retval", "inner=tail_inner%return v=$retval"};
    if (inline_insn_refuses(probes, argv, kTailJump)) return;
    auto r = launch_returns(probes, argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 40u);
    for (uint64_t i = 0; i < 20; ++i) {
        uint64_t expected = 3 * (i + 1) + (i + 1 > 100);
        EXPECT_EQ(r.events[2 * i].probe, "inner");
        EXPECT_EQ(r.events[2 * i].args.at(0).value.u, expected);
        EXPECT_EQ(r.events[2 * i + 1].probe, "outer");
        EXPECT_EQ(r.events[2 * i + 1].args.at(0).value.u, expected);
    }
}

TEST_P(Returns, TailCallIntoAnUnprobedFunction) {
    const std::vector<std::string> argv = {target("ret_tail"), "20"};
    const std::vector<std::string> probes = {"tail_outer=tail_outer%return v=$retval"};
    if (inline_insn_refuses(probes, argv, kTailJump)) return;
    auto r = launch_returns(probes, argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 20u);
    for (uint64_t i = 0; i < 20; ++i) EXPECT_EQ(r.events[i].args.at(0).value.u, 3 * (i + 1));
}

TEST_P(Returns, ExceptionsPropagateExactlyAsUntraced) {
    const std::vector<std::string> argv = {target("ret_throw"), "3"};
    auto r = launch_returns({"thrower=thrower%return v=$retval:s32", "catcher=catcher%return v=$retval:s32",
                             "rethrower=rethrower%return v=$retval:s32", "calm=calm%return v=$retval:s32"},
                            argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    // Every thrower frame is unwound, so is every rethrower frame: no
    // returns. The catching frames return normally.
    EXPECT_TRUE(of_probe(r, "thrower").empty());
    EXPECT_TRUE(of_probe(r, "rethrower").empty());
    auto caught = of_probe(r, "catcher");
    ASSERT_EQ(caught.size(), 3u);
    for (const Event* e : caught) EXPECT_EQ(e->args.at(0).value.i, -4);
    auto calm = of_probe(r, "calm");
    ASSERT_EQ(calm.size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(calm[static_cast<size_t>(i)]->args.at(0).value.i, 100 + i);
}

TEST_P(Returns, ForkWithoutFollowLeavesAWorkingChild) {
    const std::vector<std::string> argv = {target("ret_funcs"), "fork", "21"};
    auto r = launch_returns({"forker=forker%return v=$retval"}, argv, options());
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, "child 42\nparent 63, child ok\n");
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 1u);
    EXPECT_EQ(r.events[0].args.at(0).value.u, 63u);
}

TEST_P(Returns, ForkWithFollowReportsBothReturns) {
    const std::vector<std::string> argv = {target("ret_funcs"), "fork", "21"};
    Options o = options();
    o.follow = true;
    auto r = launch_returns({"forker=forker%return v=$retval"}, argv, o);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, "child 42\nparent 63, child ok\n");
    ASSERT_EQ(r.events.size(), 2u);
    ASSERT_EQ(r.processes.size(), 2u);
    std::map<pid_t, uint64_t> by_pid;
    for (const auto& e : r.events) by_pid[e.pid] = e.args.at(0).value.u;
    EXPECT_EQ(by_pid[r.processes[0]], 63u);
    EXPECT_EQ(by_pid[r.processes[1]], 42u);
}

// Deeper than the inline engine's shadow stack (8,192 frames): the
// outermost 8,192 calls report their returns, the deeper ones are not
// hooked (and said so), and the program runs as untraced.
TEST(ReturnsInline, DeeperThanTheShadowStackStaysCorrect) {
    const std::vector<std::string> argv = {target("ret_funcs"), "recurse", "10000"};
    std::vector<std::string> notes;
    Options o;
    o.engine = "inline";
    auto r = launch_returns({"depth=depth%return v=$retval"}, argv, o, &notes);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    // depth(n) returns n; the hooked calls are depth(10000) .. depth(1809).
    ASSERT_EQ(r.events.size(), 8192u);
    for (uint64_t k = 0; k < 8192; ++k) EXPECT_EQ(r.events[k].args.at(0).value.u, 1809 + k) << "return " << k;
    bool said = false;
    for (const auto& n : notes) said |= n.find("1809 calls' returns were not hooked") != std::string::npos;
    EXPECT_TRUE(said);
}

// A function that is a lone ret (engine_insns' ret_fn, called 3 times):
// its entry and its return are one instruction, which the inline engine's
// instruction mode cannot tell apart; insn refuses it with one line, auto
// takes the return address at the entry, and every return is seen.
TEST(InlineReturns, ALoneRetIsRefusedByInsnAndTakenByTrampolineInAuto) {
    const std::vector<std::string> argv = {target("engine_insns")};
    Options o;
    o.engine = "inline";
    o.mode = ReturnMode::Instructions;
    auto refused = launch_returns({"r=ret_fn%return"}, argv, o);
    EXPECT_NE(refused.error.find("ret_fn returns at its first instruction"), std::string::npos) << refused.error;
    EXPECT_EQ(refused.error.find('\n'), std::string::npos) << refused.error;
    o.mode = ReturnMode::Auto;
    auto r = launch_returns({"r=ret_fn%return"}, argv, o);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    EXPECT_EQ(r.events.size(), 3u);
}

// --latency in the inline engine: the agent counts each return's duration
// in the program's shared memory and writes no record; the durations are
// real (nap() sleeps 1 ms).
TEST(InlineReturns, LatencyIsCountedInTheProgramWithoutEvents) {
    const std::vector<std::string> argv = {target("ret_funcs"), "nap", "20"};
    Options o;
    o.engine = "inline";
    o.mode = ReturnMode::Auto;
    o.latency_only = true;
    auto r = launch_returns({"nap=nap%return $duration"}, argv, o);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced(argv));
    EXPECT_TRUE(r.events.empty());
    ASSERT_EQ(r.stats.size(), 1u);
    EXPECT_EQ(r.stats[0].hits, 20u);
    ASSERT_EQ(r.stats[0].latency.size(), latency::kBuckets);
    uint64_t counted = 0;
    for (uint32_t k = 0; k < latency::kBuckets; ++k) {
        if (!r.stats[0].latency[k]) continue;
        counted += r.stats[0].latency[k];
        EXPECT_GE(latency::bucket_high(k), 1000000u) << "a bucket below 1 ms: " << latency::bucket_low(k);
    }
    EXPECT_EQ(counted, 20u);
    EXPECT_GE(r.stats[0].latency_max_ns, 1000000u);
    EXPECT_LT(r.stats[0].latency_max_ns, 1000000000u);
}

INSTANTIATE_TEST_SUITE_P(Engines, Returns,
                         testing::Values(Variant{"ptrace", ReturnMode::Trampoline},
                                         Variant{"ptrace", ReturnMode::Instructions},
                                         Variant{"inline", ReturnMode::Trampoline},
                                         Variant{"inline", ReturnMode::Instructions},
                                         Variant{"inline", ReturnMode::Auto}),
                         variant_name);

// stop() while 2000 hijacked frames are live: every return address goes
// back, and the program, released afterwards, returns through all of them.
class ReturnsDetach : public testing::TestWithParam<std::string> {};

TEST_P(ReturnsDetach, DetachDuringDeepRecursionRestoresEveryFrame) {
    int go[2];
    ASSERT_EQ(::pipe(go), 0);
    const std::vector<std::string> argv = {target("ret_funcs"), "detach", "2000", std::to_string(go[0])};
    auto engine = make_engine(GetParam());
    Watchdog watchdog(*engine);
    Collector collector;
    collector.after_event = [&](const Event& e) {
        if (e.probe == "bottom") engine->stop();
    };
    TraceRequest request;
    request.probes = {spec("waiting_depth%return v=$retval"), spec("bottom")};
    request.command = argv;
    request.return_mode = ReturnMode::Trampoline;
    CapturedStdout capture;
    ASSERT_TRUE(engine->start(request, collector).ok());
    pid_t pid = engine->traced_processes().at(0);
    watchdog.watch(pid);
    auto status = engine->run();
    ASSERT_TRUE(status.ok());
    // Detached with the program still blocked at the bottom.
    EXPECT_EQ(::kill(pid, 0), 0);
    char byte = 1;
    ASSERT_EQ(::write(go[1], &byte, 1), 1);
    int exit_status = 0;
    ASSERT_EQ(::waitpid(pid, &exit_status, 0), pid);
    capture.restore();
    ::close(go[0]);
    ::close(go[1]);
    EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << "status " << exit_status;
    EXPECT_EQ(capture.text(), "waited 2000\n");
    EXPECT_TRUE(collector.events.size() == 1u && collector.events[0].probe == "bottom");
}

INSTANTIATE_TEST_SUITE_P(Engines, ReturnsDetach, testing::Values("ptrace", "inline"));

// A jump through a function pointer (via_pointer's `jmp *%rax`) cannot be
// proven to stay or leave: refused with the instruction and a way out.
TEST(ReturnsInstructions, IndirectJumpIsRefusedWithAReason) {
    std::string dump = shell("objdump -d --no-show-raw-insn " + target("ret_tail"));
    auto at = dump.find("<via_pointer>:");
    ASSERT_NE(at, std::string::npos);
    ASSERT_NE(dump.substr(at, dump.find("\n\n", at) - at).find("jmp    *"), std::string::npos)
        << dump.substr(at, 300);
    auto r = launch_returns({"via=via_pointer%return v=$retval"}, {target("ret_tail"), "3"},
                            Options{ReturnMode::Instructions, false, {}});
    EXPECT_NE(r.error.find("indirect jump at via_pointer+"), std::string::npos) << r.error;
    EXPECT_NE(r.error.find("no bounds check"), std::string::npos) << r.error;
    EXPECT_NE(r.error.find("--return-mode=trampoline"), std::string::npos) << r.error;
    // The trampoline handles it: via_pointer(x) = pointed(x + 2) = 5 * (x + 2).
    auto t = launch_returns({"via=via_pointer%return v=$retval:s64"}, {target("ret_tail"), "3"},
                            Options{ReturnMode::Trampoline, false, {}});
    ASSERT_EQ(t.error, "");
    ASSERT_EQ(t.events.size(), 1u);
    EXPECT_EQ(t.events[0].args.at(0).value.i, 5 * (2 + 2));  // via_pointer(argc == 2)
}

// Switches compiled to jump tables (ret_switch.c, -O2): instruction mode
// reads the table from the file, proves every entry stays inside the
// function and needs no probe on the jump. Both table forms: relative
// (PIE) and absolute (-no-pie). Every return, in both modes, with the value
// known by construction.
class JumpTables : public testing::TestWithParam<std::tuple<ReturnMode, const char*>> {};

TEST_P(JumpTables, EveryCaseReturnsItsValue) {
    auto [mode, binary] = GetParam();
    const std::string bin = target(binary);
    std::string dump = shell("objdump -d --no-show-raw-insn " + bin);
    for (const char* function : {"<pick>:", "<pick32>:", "<pick8>:"}) {
        auto at = dump.find(function);
        ASSERT_NE(at, std::string::npos) << function;
        std::string body = dump.substr(at, dump.find("\n\n", at) - at);
        EXPECT_NE(body.find("jmp    *"), std::string::npos) << "no jump table in " << function << ":\n"
                                                            << body;
    }
    const long n = 40;
    const std::vector<std::string> argv = {bin, std::to_string(n)};
    auto r = launch_returns({"pick=pick%return v=$retval:s64 x=@entry($arg1)",
                             "pick32=pick32%return v=$retval:s32", "pick8=pick8%return v=$retval:s32"},
                            argv, Options{mode, false, {}});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    const int64_t picks[] = {1, 18, 7, 48, -36, 25, 106, 77, -1, -1};
    ASSERT_EQ(r.events.size(), static_cast<size_t>(3 * n));
    for (long i = 0; i < n; ++i) {
        const Event& p = r.events[static_cast<size_t>(3 * i)];
        const Event& p32 = r.events[static_cast<size_t>(3 * i + 1)];
        const Event& p8 = r.events[static_cast<size_t>(3 * i + 2)];
        // pick8('a' - 1 + i % 8): 'a'..'f' give 100..600, the rest 0.
        EXPECT_EQ(p8.probe, "pick8");
        EXPECT_EQ(p8.args.at(0).value.i, i % 8 >= 1 && i % 8 <= 6 ? 100 * (i % 8) : 0) << "pick8 #" << i;
        EXPECT_EQ(p.probe, "pick");
        EXPECT_EQ(p.args.at(0).value.i, picks[i % 10]) << "pick(" << i % 10 << ")";
        EXPECT_EQ(p.args.at(1).value.u, static_cast<uint64_t>(i % 10));
        EXPECT_EQ(p32.probe, "pick32");
        EXPECT_EQ(p32.args.at(0).value.i, i % 9 <= 6 ? 10 + i % 9 : -2) << "pick32(" << i % 9 << ")";
    }
    EXPECT_EQ(r.stats.at(0).hits, static_cast<uint64_t>(n));
    EXPECT_EQ(r.stats.at(1).hits, static_cast<uint64_t>(n));
    EXPECT_EQ(r.stats.at(2).hits, static_cast<uint64_t>(n));
}

INSTANTIATE_TEST_SUITE_P(BothModes, JumpTables,
                         testing::Combine(testing::Values(ReturnMode::Trampoline, ReturnMode::Instructions),
                                          testing::Values("ret_switch", "ret_switch_nopie")),
                         [](const testing::TestParamInfo<JumpTables::ParamType>& param_info) {
                             return std::string(std::get<0>(param_info.param) == ReturnMode::Trampoline
                                                    ? "Trampoline"
                                                    : "Instructions") +
                                    "_" +
                                    (std::string(std::get<1>(param_info.param)) == "ret_switch" ? "Pie"
                                                                                                : "NoPie");
                         });

// Go checks return addresses while it scans and moves stacks: auto mode
// must pick instruction analysis there, and report Go's register-ABI
// results (first result in rax).
TEST(ReturnsGo, AutoModeOnAGoProgram) {
    const std::string bin = target("ret_go");
    if (::access(bin.c_str(), X_OK) != 0) GTEST_SKIP() << "no Go toolchain: " << bin << " was not built";
    const std::vector<std::string> argv = {bin, "25"};
    auto r = launch_returns({"addmul=main.addmul%return v=$retval a=@entry(%ax) b=@entry(%bx)"}, argv,
                            Options{ReturnMode::Auto, false, {}});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    ASSERT_EQ(r.events.size(), 25u);
    for (uint64_t i = 0; i < 25; ++i) {
        EXPECT_EQ(r.events[i].args.at(0).value.u, 8 * i);
        EXPECT_EQ(r.events[i].args.at(1).value.u, i);
        EXPECT_EQ(r.events[i].args.at(2).value.u, 7u);
    }
}

// Go grows a goroutine's stack by copying it, so a frame's entry rsp no
// longer matches at its ret: every return is still reported with its value
// ($duration then says it is unknown), and the program is unharmed.
TEST(ReturnsGo, DeepRecursionWhileTheStackMoves) {
    const std::string bin = target("ret_go_deep");
    if (::access(bin.c_str(), X_OK) != 0) GTEST_SKIP() << "no Go toolchain: " << bin << " was not built";
    for (const char* probe : {"rec=main.rec%return v=$retval", "rec=main.rec%return v=$retval d=$duration"}) {
        auto r = launch_returns({probe}, {bin}, Options{ReturnMode::Auto, false, {}});
        ASSERT_EQ(r.error, "");
        EXPECT_EQ(r.status, 0);
        EXPECT_EQ(r.output, "rec 10000\n");
        // rec(2000) five times: each returns 0, 1, ..., 2000 in that order.
        ASSERT_EQ(r.events.size(), 5u * 2001u) << probe;
        size_t unknown = 0;
        for (size_t i = 0; i < r.events.size(); ++i) {
            EXPECT_EQ(r.events[i].args.at(0).value.u, i % 2001) << probe << " return " << i;
            if (r.events[i].args.size() > 1 && r.events[i].args[1].value.kind == Value::Kind::Error)
                ++unknown;
        }
        if (r.events[0].args.size() > 1) {
            EXPECT_LT(unknown, r.events.size()) << "some durations must be known";
        }
    }
}

// A private copy of a target for the kernel's probes, which belong to the
// file (inode): a test running beside an oracle may trace the original, and
// would find the kernel's int3 in it.
struct PrivateCopy {
    std::string dir, path;
    explicit PrivateCopy(const std::string& name) {
        char pattern[] = "/tmp/uprobe-oracle-XXXXXX";
        dir = ::mkdtemp(pattern);
        path = dir + "/" + name;
        std::filesystem::copy_file(target(name), path);
    }
    ~PrivateCopy() { std::filesystem::remove_all(dir); }
};

// The kernel's uretprobes (through bpftrace) as an independent oracle for
// counts and values.
TEST(ReturnsOracle, SameReturnsAsTheKernelsUretprobes) {
    if (::geteuid() != 0) GTEST_SKIP() << "bpftrace needs root";
    if (shell("command -v bpftrace").empty()) GTEST_SKIP() << "bpftrace is not installed";
    PrivateCopy copy("ret_funcs");
    const std::string& bin = copy.path;
    std::string kernel =
        shell("bpftrace -q -e 'uretprobe:" + bin + ":square { printf(\"%lu\\n\", retval); }' -c '" + bin +
              " basic 300' 2>/dev/null");
    std::vector<uint64_t> expected;
    std::istringstream lines(kernel);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.empty() || line.rfind("sum ", 0) == 0) continue;
        expected.push_back(std::stoull(line));
    }
    if (expected.empty()) GTEST_SKIP() << "bpftrace produced no events here: " << kernel.substr(0, 200);
    for (ReturnMode mode : {ReturnMode::Trampoline, ReturnMode::Instructions}) {
        auto r = launch_returns({"square=square%return v=$retval"}, {bin, "basic", "300"},
                                Options{mode, false, {}});
        ASSERT_EQ(r.error, "");
        std::vector<uint64_t> ours;
        for (const auto& e : r.events) ours.push_back(e.args.at(0).value.u);
        EXPECT_EQ(ours, expected);
    }
}

// The switch through a jump table (ret_switch), instruction mode against
// the kernel's uretprobes: the same returns with the same values.
TEST(ReturnsOracle, JumpTableReturnsAsTheKernelsUretprobes) {
    if (::geteuid() != 0) GTEST_SKIP() << "bpftrace needs root";
    if (shell("command -v bpftrace").empty()) GTEST_SKIP() << "bpftrace is not installed";
    PrivateCopy copy("ret_switch");
    const std::string& bin = copy.path;
    const std::string program = "uretprobe:" + bin + ":pick { printf(\"%ld\\n\", (int64)retval); }";
    std::string kernel = shell("bpftrace -q -e '" + program + "' -c '" + bin + " 50' 2>/dev/null");
    std::vector<int64_t> expected;
    std::istringstream lines(kernel);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.empty() || line.rfind("switch ", 0) == 0) continue;
        expected.push_back(std::stoll(line));
    }
    if (expected.empty()) GTEST_SKIP() << "bpftrace produced no events here: " << kernel.substr(0, 200);
    EXPECT_EQ(expected.size(), 50u);
    auto r = launch_returns({"pick=pick%return v=$retval:s64"}, {bin, "50"},
                            Options{ReturnMode::Instructions, false, {}});
    ASSERT_EQ(r.error, "");
    std::vector<int64_t> ours;
    for (const auto& e : r.events) ours.push_back(e.args.at(0).value.i);
    EXPECT_EQ(ours, expected);
}

}  // namespace
}  // namespace uprobe::engine::test
