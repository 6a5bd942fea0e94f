// The engines end to end, through their C++ API: launched and attached
// targets whose results are known by construction. The cases every engine
// supports run once per engine (EachEngine); the rest are the ptrace
// engine's (engine_inline_test.cpp has what only the inline engine does).
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "engine_support.hpp"

namespace uprobe::engine::test {
namespace {

class EachEngine : public ::testing::TestWithParam<std::string> {
protected:
    LaunchResult launch(const std::vector<std::string>& probes, const std::vector<std::string>& argv,
                        bool follow = false) const {
        return test::launch(probes, argv, follow, GetParam());
    }
    std::unique_ptr<Engine> make() const {
        return GetParam() == "inline" ? make_inline_engine() : make_ptrace_engine();
    }
};
INSTANTIATE_TEST_SUITE_P(Engines, EachEngine, ::testing::Values("ptrace", "inline"));

TEST_P(EachEngine, EntryProbeWithTwoArgumentsOnLaunchedProgram) {
    auto r = launch({"add_pair a=$arg1 b=$arg2"}, {target("engine_args")});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced({target("engine_args")}));
    ASSERT_EQ(r.events.size(), 1000u);
    for (uint64_t i = 0; i < 1000; ++i) {
        const Event& e = r.events[i];
        ASSERT_EQ(e.args.size(), 2u);
        EXPECT_EQ(e.args[0].name, "a");
        EXPECT_EQ(e.args[0].value.u, i);
        EXPECT_EQ(e.args[1].value.u, 2 * i);
        EXPECT_EQ(e.pid, r.processes.at(0));
        EXPECT_EQ(e.tid, e.pid);
        EXPECT_EQ(e.addr, r.events[0].addr);
        EXPECT_EQ(e.comm, "engine_args");
    }
    ASSERT_EQ(r.stats.size(), 1u);
    EXPECT_EQ(r.stats[0].hits, 1000u);
    EXPECT_EQ(r.stats[0].sites, 1u);
}

TEST_P(EachEngine, StringSignedAndSymbolFetches) {
    auto r = launch({"tag s=$arg1:string n=$arg2:s32 g=@engine_global:x64 pid=$pid"}, {target("engine_args"), "3"});
    ASSERT_EQ(r.error, "");
    ASSERT_EQ(r.events.size(), 3u);
    const char* words[] = {"alpha", "beta", "gamma"};
    for (int i = 0; i < 3; ++i) {
        const auto& args = r.events[static_cast<size_t>(i)].args;
        ASSERT_EQ(args.size(), 4u);
        EXPECT_EQ(args[0].value.kind, Value::Kind::String);
        EXPECT_EQ(args[0].value.text, words[i]);
        EXPECT_FALSE(args[0].value.truncated);
        EXPECT_EQ(args[1].value.kind, Value::Kind::Signed);
        EXPECT_EQ(args[1].value.i, i + 1);
        EXPECT_EQ(args[2].value.kind, Value::Kind::Hex);
        EXPECT_EQ(args[2].value.u, 0x1234abcdu);
        EXPECT_EQ(args[3].value.i, r.processes.at(0));
    }
}

// Words around a 64-byte line boundary and inside one line (the inline
// agent reads memory a line at a time), each equal to the target's bytes.
TEST_P(EachEngine, MemoryReadsAroundALineBoundaryAreExact) {
    auto r = launch({"peek a=+0($arg1):x64 b=+8($arg1):x64 c=+6($arg1):x32 d=+70($arg1):x16 e=+1($arg1):u8"},
                    {target("engine_args"), "1"});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, run_untraced({target("engine_args"), "1"}));
    ASSERT_EQ(r.events.size(), 1u);
    // Little-endian `size` bytes at `offset` from the pointer (56 into the pattern).
    auto word = [](uint64_t offset, int size) {
        uint64_t v = 0;
        for (int i = size - 1; i >= 0; --i) v = v << 8 | (((56 + offset + static_cast<uint64_t>(i)) * 7) & 0xff);
        return v;
    };
    const auto& args = r.events[0].args;
    ASSERT_EQ(args.size(), 5u);
    EXPECT_EQ(args[0].value.u, word(0, 8)) << "within the first line";
    EXPECT_EQ(args[1].value.u, word(8, 8)) << "the next line";
    EXPECT_EQ(args[2].value.u, word(6, 4)) << "across the boundary";
    EXPECT_EQ(args[3].value.u, word(70, 2)) << "two lines on";
    EXPECT_EQ(args[4].value.u, word(1, 1));
}

TEST_P(EachEngine, BadPointerGivesAnErrorValueNotAFailedEvent) {
    // $arg2 of add_pair is 2*i: as a pointer it is unmapped for small i.
    auto r = launch({"add_pair v=+0($arg2):u64"}, {target("engine_args"), "2"});
    ASSERT_EQ(r.error, "");
    ASSERT_EQ(r.events.size(), 2u);
    EXPECT_EQ(r.events[1].args[0].value.kind, Value::Kind::Error);
    EXPECT_EQ(r.events[1].args[0].value.text, "bad address 0x2");
}

TEST_P(EachEngine, HardInstructionsRunOutOfLine) {
    const std::string bin = target("engine_insns");
    auto offset = [&](const char* label, const char* function) {
        return std::to_string(nm_address(bin, label) - nm_address(bin, function));
    };
    std::vector<std::string> probes = {
        "riprel_load", "riprel_store", "call_rel", "jmp_rel",
        "jcc=jcc_fn+" + offset("jcc_fn_site", "jcc_fn"),
        "jcc_target=jcc_fn+" + offset("jcc_fn_target", "jcc_fn"),
        "loop=loop_fn+" + offset("loop_fn_site", "loop_fn"),
        "ret_fn", "push_rip",
        "movsb=rep_movsb_fn+" + offset("rep_movsb_site", "rep_movsb_fn"),
        "syscall=syscall_getpid+" + offset("syscall_site", "syscall_getpid"),
        "cpuid=cpuid_fn+" + offset("cpuid_site", "cpuid_fn"),
        "flags=flags_roundtrip+" + offset("flags_site", "flags_roundtrip"),
    };
    auto r = launch(probes, {bin});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced({bin}));
    std::map<std::string, int> hits;
    for (const auto& e : r.events) hits[e.probe]++;
    // main calls riprel_load twice per round, jcc_fn twice (one taken), and
    // loop_fn(10) runs its loop instruction 10 times, flags_roundtrip
    // runs 9 times (its output shows the flags passed through); 3 rounds.
    std::map<std::string, int> expected = {
        {"riprel_load", 6}, {"riprel_store", 3}, {"call_rel", 3}, {"jmp_rel", 3}, {"jcc", 6},
        {"jcc_target", 3},  {"loop", 30},        {"ret_fn", 3},   {"push_rip", 3}, {"movsb", 3},
        {"syscall", 3},     {"cpuid", 3},        {"flags", 27},
    };
    EXPECT_EQ(hits, expected);
}

// A glob probe skips (with a note) a function that cannot be probed and
// probes the rest; naming that function alone is an error.
TEST_P(EachEngine, GlobProbeSkipsAFunctionThatCannotBeProbed) {
    const std::string bin = target("engine_insns");
    auto r = launch({"*_fn"}, {bin});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced({bin}));
    std::map<uint64_t, int> by_address;
    for (const auto& e : r.events) by_address[e.addr]++;
    EXPECT_EQ(by_address.size(), 5u);  // jcc_fn, loop_fn, ret_fn, rep_movsb_fn, cpuid_fn
    EXPECT_EQ(r.events.size(), 6u + 3u + 3u + 3u + 3u);  // jcc_fn is called twice a round
    EXPECT_EQ(r.stats.at(0).sites, 5u);
    size_t skipped = 0;
    for (const auto& note : r.notes)
        if (note.find("skipped") != std::string::npos && note.find("trap_fn") != std::string::npos) ++skipped;
    EXPECT_EQ(skipped, 1u);
    auto alone = launch({"trap_fn"}, {bin});
    EXPECT_NE(alone.error.find("ud2"), std::string::npos) << alone.error;
}

TEST_P(EachEngine, EightThreadsExactCounts) {
    auto r = launch({"hit i=$arg1"}, {target("engine_threads"), "20000"});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced({target("engine_threads"), "20000"}));
    std::map<uint64_t, int> by_arg;
    std::map<pid_t, int> by_tid;
    std::map<pid_t, std::set<uint64_t>> args_of_tid;
    for (const auto& e : r.events) {
        by_arg[e.args.at(0).value.u]++;
        by_tid[e.tid]++;
        args_of_tid[e.tid].insert(e.args[0].value.u);
    }
    EXPECT_EQ(r.events.size(), 8u * 20000u);
    ASSERT_EQ(by_arg.size(), 8u);
    for (auto& [arg, count] : by_arg) EXPECT_EQ(count, 20000) << "arg " << arg;
    ASSERT_EQ(by_tid.size(), 8u);
    for (auto& [tid, count] : by_tid) {
        EXPECT_EQ(count, 20000) << "tid " << tid;
        EXPECT_EQ(args_of_tid[tid].size(), 1u);
    }
}

// 400 threads, one round of 8 after another: more threads over the run
// than the inline engine has rings (64), so it must take back those of
// threads that are gone. Every hit is an event, none dropped.
TEST_P(EachEngine, ManyShortLivedThreadsLoseNoHit) {
    const std::vector<std::string> argv = {target("engine_threads"), "10", "50"};
    auto r = launch({"hit i=$arg1"}, argv);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    std::set<pid_t> tids;
    for (const auto& e : r.events) tids.insert(e.tid);
    EXPECT_EQ(r.events.size(), 50u * 8u * 10u);
    EXPECT_EQ(tids.size(), 400u);
    ASSERT_EQ(r.stats.size(), 1u);
    EXPECT_EQ(r.stats[0].hits, 50u * 8u * 10u);
    EXPECT_EQ(r.stats[0].dropped, 0u);
}

// A thread pool's worth of threads alive at once, each with its own ring
// in the inline engine.
TEST_P(EachEngine, TwoHundredThreadsAliveAtOnceLoseNoHit) {
    const std::vector<std::string> argv = {target("engine_threads"), "20", "1", "200"};
    auto r = launch({"hit i=$arg1"}, argv);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    std::map<pid_t, std::set<uint64_t>> args_by_tid;
    for (const auto& e : r.events) args_by_tid[e.tid].insert(e.args.at(0).value.u);
    EXPECT_EQ(r.events.size(), 20u * 200u);
    EXPECT_EQ(args_by_tid.size(), 200u);
    for (const auto& [tid, args] : args_by_tid) EXPECT_EQ(args.size(), 1u) << "thread " << tid;
    ASSERT_EQ(r.stats.size(), 1u);
    EXPECT_EQ(r.stats[0].hits, 20u * 200u);
    EXPECT_EQ(r.stats[0].dropped, 0u);
}

TEST_P(EachEngine, ForkWithoutFollowLeavesTheChildUntracedAndUnharmed) {
    auto r = launch({"work w=$arg1"}, {target("engine_fork")});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced({target("engine_fork")}));
    std::map<uint64_t, int> by_arg;
    for (const auto& e : r.events) {
        by_arg[e.args.at(0).value.u]++;
        EXPECT_EQ(e.pid, r.processes.at(0));
    }
    EXPECT_EQ(by_arg, (std::map<uint64_t, int>{{1, 100}, {3, 100}}));
    EXPECT_EQ(r.processes.size(), 1u);
}

TEST_P(EachEngine, ForkWithFollowTracesBoth) {
    auto r = launch({"work w=$arg1"}, {target("engine_fork")}, true);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced({target("engine_fork")}));
    ASSERT_EQ(r.processes.size(), 2u);
    std::map<uint64_t, int> by_arg;
    for (const auto& e : r.events) {
        by_arg[e.args.at(0).value.u]++;
        EXPECT_EQ(e.pid, e.args[0].value.u == 2 ? r.processes[1] : r.processes[0]);
    }
    EXPECT_EQ(by_arg, (std::map<uint64_t, int>{{1, 100}, {2, 100}, {3, 100}}));
}

TEST_P(EachEngine, VforkChildrenWithoutFollowRunUnharmedAndSilent) {
    auto r = launch({"work w=$arg1"}, {target("engine_spawn")});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, "spawned sum 33\n");
    std::map<uint64_t, int> by_arg;
    for (const auto& e : r.events) by_arg[e.args.at(0).value.u]++;
    EXPECT_EQ(by_arg, (std::map<uint64_t, int>{{1, 1}, {2, 1}}));
}

TEST_P(EachEngine, VforkChildrenWithFollowAreTracedThroughExec) {
    auto r = launch({"work w=$arg1"}, {target("engine_spawn")}, true);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, "spawned sum 33\n");
    std::map<uint64_t, int> by_arg;
    std::set<pid_t> child_pids;
    for (const auto& e : r.events) {
        by_arg[e.args.at(0).value.u]++;
        if (e.args[0].value.u == 5) child_pids.insert(e.pid);
    }
    EXPECT_EQ(by_arg, (std::map<uint64_t, int>{{1, 1}, {2, 1}, {5, 3}}));
    EXPECT_EQ(child_pids.size(), 3u);
    EXPECT_EQ(r.processes.size(), 4u);
}

TEST_P(EachEngine, ExecReResolvesProbesInTheNewImage) {
    auto r = launch({"work w=$arg1"}, {target("engine_exec")});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced({target("engine_exec")}));
    std::map<uint64_t, int> by_arg;
    for (const auto& e : r.events) by_arg[e.args.at(0).value.u]++;
    EXPECT_EQ(by_arg, (std::map<uint64_t, int>{{7, 10}, {8, 10}}));
}

TEST_P(EachEngine, PendingProbeOnDlopenedLibrary) {
    const std::string lib = std::string(UPROBE_BINARY_DIR) + "/tests/targets/libengine_plugin.so";
    auto r = launch({lib + ":plugin_fn x=$arg1:s32"}, {target("engine_dlopen"), lib});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced({target("engine_dlopen"), lib}));
    ASSERT_EQ(r.events.size(), 50u);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(r.events[static_cast<size_t>(i)].args.at(0).value.i, i);
}

// dlclose then dlopen again, at the same address as a rule: the probes are
// placed in the new copy (what was placed in the old one went with it),
// every call is seen, entries and returns.
TEST_P(EachEngine, ALibraryOpenedAgainIsProbedAgain) {
    const std::string lib = std::string(UPROBE_BINARY_DIR) + "/tests/targets/libengine_plugin.so";
    const std::vector<std::string> argv = {target("engine_dlopen"), lib, "reopen", "3"};
    auto r = launch({lib + ":plugin_fn x=$arg1:s32", "back=" + lib + ":plugin_fn%return v=$retval:s32"}, argv);
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, run_untraced(argv));
    std::vector<int64_t> entries, returns;
    for (const auto& e : r.events) (e.is_return ? returns : entries).push_back(e.args.at(0).value.i);
    ASSERT_EQ(entries.size(), 150u);
    ASSERT_EQ(returns.size(), 150u);
    for (size_t i = 0; i < 150; ++i) {
        EXPECT_EQ(entries[i], static_cast<int64_t>(i % 50));
        EXPECT_EQ(returns[i], static_cast<int64_t>(3 * (i % 50)));
    }
}

TEST_P(EachEngine, LibcProbeAtLaunch) {
    auto r = launch({"libc:getpid"}, {target("engine_insns")});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    // engine_insns calls getpid() once per round (its own syscall aside).
    EXPECT_EQ(r.events.size(), 3u);
}


TEST_P(EachEngine, AttachThenDetachWhileRunningAtFullSpeed) {
    Child spin("engine_spin");
    auto engine = make();
    Watchdog watchdog(*engine);
    watchdog.watch(spin.pid);
    Collector collector;
    collector.after_event = [&](const Event&) {
        if (collector.events.size() == 5000) engine->stop();
    };
    TraceRequest request;
    request.probes.push_back(spec("tick i=$arg1"));
    request.attach_pids = {spin.pid};
    auto started = engine->start(request, collector);
    ASSERT_TRUE(started.ok()) << started.error().message();
    auto status = engine->run();
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_EQ(*status, 0);
    ASSERT_GE(collector.events.size(), 5000u);
    // Consecutive hits of one thread see consecutive i.
    for (size_t k = 1; k < 5000; ++k)
        EXPECT_EQ(collector.events[k].args[0].value.u, collector.events[k - 1].args[0].value.u + 1);
    // Detached: it runs on, handles its signal normally and is correct.
    ::kill(spin.pid, SIGUSR1);
    EXPECT_EQ(spin.read_line(), "ok 1");
    EXPECT_TRUE(spin.exited_cleanly());
}

// Every event delivered, so every i is seen (the inline engine's rings may
// drop: its version is InlineEngine's DetachMidFlight).
TEST(EngineTrace, AttachToEveryThreadAndDetachMidFlight) {
    Child spin("engine_spin", {"4"});
    auto engine = make_ptrace_engine();
    Watchdog watchdog(*engine);
    watchdog.watch(spin.pid);
    Collector collector;
    collector.after_event = [&](const Event&) {
        if (collector.events.size() == 40000) engine->stop();
    };
    TraceRequest request;
    request.probes.push_back(spec("tick i=$arg1"));
    request.attach_pids = {spin.pid};
    auto started = engine->start(request, collector);
    ASSERT_TRUE(started.ok()) << started.error().message();
    auto status = engine->run();
    ASSERT_TRUE(status.ok()) << status.error().message();
    std::map<pid_t, uint64_t> last_i;
    for (const auto& e : collector.events) {
        auto it = last_i.find(e.tid);
        if (it != last_i.end()) {
            EXPECT_EQ(e.args.at(0).value.u, it->second + 1) << "tid " << e.tid;
        }
        last_i[e.tid] = e.args[0].value.u;
    }
    EXPECT_EQ(last_i.size(), 5u);  // main + 4 threads, all attached
    ::kill(spin.pid, SIGUSR1);
    EXPECT_EQ(spin.read_line(), "ok 1");
    EXPECT_TRUE(spin.exited_cleanly());
}

TEST_P(EachEngine, StopFromAnotherThreadWhileTheTargetIsIdle) {
    Child idle("engine_idle");
    auto engine = make();
    Watchdog watchdog(*engine);
    watchdog.watch(idle.pid);
    Collector collector;
    TraceRequest request;
    request.probes.push_back(spec("echo_len n=$arg1"));
    request.attach_pids = {idle.pid};
    auto started = engine->start(request, collector);
    ASSERT_TRUE(started.ok()) << started.error().message();
    // The target blocks in read(); stop() comes from elsewhere, before or
    // while run() waits: either way run() must return.
    std::thread stopper([&] { engine->stop(); });
    auto status = engine->run();
    stopper.join();
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_TRUE(collector.events.empty());
    idle.write_line("hello");
    EXPECT_EQ(idle.read_line(), "got hello 5");
    EXPECT_TRUE(idle.exited_cleanly());
}

TEST_P(EachEngine, AttachedProbeSeesTheHitAfterIdle) {
    Child idle("engine_idle");
    auto engine = make();
    Watchdog watchdog(*engine);
    watchdog.watch(idle.pid);
    Collector collector;
    TraceRequest request;
    request.probes.push_back(spec("echo_len n=$arg1"));
    request.attach_pids = {idle.pid};
    auto started = engine->start(request, collector);
    ASSERT_TRUE(started.ok()) << started.error().message();
    idle.write_line("four");
    auto status = engine->run();  // returns when the target exits
    idle.pid = -1;                // and has reaped it (we are its parent)
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_EQ(*status, 0);
    ASSERT_EQ(collector.events.size(), 1u);
    EXPECT_EQ(collector.events[0].args.at(0).value.u, 4u);
    EXPECT_EQ(idle.read_line(), "got four 4");
}

TEST_P(EachEngine, AttachedPendingProbeFiresAfterDlopen) {
    const std::string lib = std::string(UPROBE_BINARY_DIR) + "/tests/targets/libengine_plugin.so";
    Child child("engine_dlopen", {lib, "wait"});
    auto engine = make();
    Watchdog watchdog(*engine);
    watchdog.watch(child.pid);
    Collector collector;
    TraceRequest request;
    request.probes.push_back(spec(lib + ":plugin_fn x=$arg1:s32"));
    request.attach_pids = {child.pid};
    auto started = engine->start(request, collector);
    ASSERT_TRUE(started.ok()) << started.error().message();
    child.write_line("go");
    auto status = engine->run();
    child.pid = -1;  // exited and reaped by the engine's waitpid
    ASSERT_TRUE(status.ok()) << status.error().message();
    ASSERT_EQ(collector.events.size(), 50u);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(collector.events[static_cast<size_t>(i)].args.at(0).value.i, i);
    EXPECT_EQ(child.read_line(), "plugin sum 3675");
}

TEST_P(EachEngine, ProgramSignalsAndItsOwnInt3PassThrough) {
    auto r = launch({"step i=$arg1"}, {target("engine_signals")});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.output, "traps 6 usr1 3 sum 3\n");
    EXPECT_EQ(r.output, run_untraced({target("engine_signals")}));
    EXPECT_EQ(r.events.size(), 3u);
}

// A signal sent while the engine attaches (the threads stopped, system
// calls and a dlopen run in them) reaches the program once it runs again.
// The sender keeps one SIGUSR2 in flight all through the attach and waits
// for the program's answer to each: a lost one is never answered.
TEST_P(EachEngine, SignalsSentDuringTheAttachAreDelivered) {
    Child child("engine_signals", {"ack"});
    auto engine = make();
    Watchdog watchdog(*engine);
    watchdog.watch(child.pid);
    std::atomic<bool> attached{false}, lost{false};
    std::atomic<int> sent{0};
    std::thread sender([&] {
        for (int after = 0; after < 50 && !lost; after += attached ? 1 : 0) {
            ::kill(child.pid, SIGUSR2);
            ++sent;
            pollfd answer{child.out, POLLIN, 0};
            char c = 0;
            if (::poll(&answer, 1, 10000) != 1 || ::read(child.out, &c, 1) != 1 || c != '+') lost = true;
        }
    });
    Collector collector;
    TraceRequest request;
    request.probes.push_back(spec("step i=$arg1"));
    request.attach_pids = {child.pid};
    // Under the ptrace engine a signal stops the program until the run
    // loop passes it on, and the loop must be the attaching thread.
    Result<void> started;
    Result<int> status = 0;
    std::thread runner([&] {
        started = engine->start(request, collector);
        attached = true;
        if (started) status = engine->run();
    });
    sender.join();
    engine->stop();
    runner.join();
    ASSERT_TRUE(started.ok()) << started.error().message();
    EXPECT_FALSE(lost) << "signal " << sent << " never reached the program";
    ASSERT_TRUE(status.ok()) << status.error().message();
    ::kill(child.pid, SIGUSR1);
    EXPECT_EQ(child.read_line(), "");
    EXPECT_EQ(child.read_line(), "acked " + std::to_string(sent));
    EXPECT_TRUE(child.exited_cleanly());
}

// Attached while a signal handler runs (waiting for our line) that
// interrupted the probed function 2 bytes in: when the handler returns,
// the thread goes back there, so no jump may cover those bytes.
TEST_P(EachEngine, AHandlerThatInterruptedTheSiteReturnsIntoIt) {
    Child child("engine_signals", {"handler"});
    EXPECT_EQ(child.read_line(), "in handler");
    auto engine = make();
    Watchdog watchdog(*engine);
    watchdog.watch(child.pid);
    Collector collector;
    collector.after_event = [&](const Event&) {
        if (collector.events.size() == 10) engine->stop();
    };
    TraceRequest request;
    request.probes.push_back(spec("raise_inside"));
    request.attach_pids = {child.pid};
    auto started = engine->start(request, collector);
    ASSERT_TRUE(started.ok()) << started.error().message();
    child.write_line("go");
    auto status = engine->run();
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_EQ(collector.events.size(), 10u);
    EXPECT_EQ(child.read_line(), "ok 10");
    child.write_line("bye");
    EXPECT_TRUE(child.exited_cleanly());
}

TEST_P(EachEngine, SdtMarkersWithArgumentsAndSemaphore) {
    EXPECT_EQ(run_untraced({target("engine_sdt")}), "gated 0\n");
    auto r = launch({"sdt:engine:plain a=$arg1 b=$arg2", "sdt:engine:gated g=$arg1"}, {target("engine_sdt")});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.output, "gated 5\n");
    std::vector<int64_t> plain_a, plain_b, gated;
    for (const auto& e : r.events) {
        if (e.probe_id == 0) {
            plain_a.push_back(e.args.at(0).value.i);
            plain_b.push_back(e.args.at(1).value.i);
            EXPECT_EQ(e.args[1].value.kind, Value::Kind::Signed);  // int: "-4@..."
        } else {
            gated.push_back(e.args.at(0).value.i);  // "-8@-16(%rbp)": signed long
        }
    }
    EXPECT_EQ(plain_a, (std::vector<int64_t>{0, 1, 2, 3, 4}));
    EXPECT_EQ(plain_b, (std::vector<int64_t>{0, -1, -2, -3, -4}));
    EXPECT_EQ(gated, (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

class EngineStopAt : public ::testing::TestWithParam<size_t> {};

TEST_P(EngineStopAt, StopDuringHeavyHitsLeavesTheTargetCorrect) {
    const size_t stop_after = GetParam();
    const std::vector<std::string> argv = {target("engine_threads"), "200000"};
    auto engine = make_ptrace_engine();
    Watchdog watchdog(*engine);
    Collector collector;
    collector.after_event = [&](const Event&) {
        if (collector.events.size() == stop_after) engine->stop();
    };
    TraceRequest request;
    request.probes.push_back(spec("hit i=$arg1"));
    request.command = argv;
    CapturedStdout capture;
    auto started = engine->start(request, collector);
    capture.restore();
    ASSERT_TRUE(started.ok()) << started.error().message();
    pid_t pid = engine->traced_processes().at(0);
    watchdog.watch(pid);
    auto status = engine->run();
    ASSERT_TRUE(status.ok()) << status.error().message();
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << wstatus;
    EXPECT_EQ(capture.text(), run_untraced(argv));
    EXPECT_GE(collector.events.size(), stop_after);
}

INSTANTIATE_TEST_SUITE_P(Moments, EngineStopAt, ::testing::Values(1, 777, 30000, 100003));

TEST_P(EachEngine, TwoProbesOnOneAddressShareTheBreakpoint) {
    auto r = launch({"first=add_pair a=$arg1", "second=add_pair b=$arg2"}, {target("engine_args"), "10"});
    ASSERT_EQ(r.error, "");
    ASSERT_EQ(r.events.size(), 20u);
    for (size_t i = 0; i < 10; ++i) {
        EXPECT_EQ(r.events[2 * i].probe, "first");
        EXPECT_EQ(r.events[2 * i].args.at(0).value.u, i);
        EXPECT_EQ(r.events[2 * i + 1].probe, "second");
        EXPECT_EQ(r.events[2 * i + 1].args.at(0).value.u, 2 * i);
    }
    ASSERT_EQ(r.stats.size(), 2u);
    EXPECT_EQ(r.stats[0].hits, 10u);
    EXPECT_EQ(r.stats[1].hits, 10u);
}

TEST_P(EachEngine, KilledCommandReportsStatusAsAShellWould) {
    auto engine = make();
    Watchdog watchdog(*engine);
    Collector collector;
    TraceRequest request;
    request.probes.push_back(spec("tick"));
    request.command = {target("engine_spin")};
    CapturedStdout capture;
    auto started = engine->start(request, collector);
    capture.restore();
    ASSERT_TRUE(started.ok()) << started.error().message();
    ::kill(engine->traced_processes().at(0), SIGKILL);
    auto status = engine->run();
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_EQ(*status, 128 + SIGKILL);
}

TEST(EngineErrors, NonexistentCommand) {
    auto r = launch({"main"}, {"/nonexistent/program"});
    EXPECT_EQ(r.error, "/nonexistent/program: no such file or directory");
}

TEST(EngineErrors, NonexistentPid) {
    pid_t gone = ::fork();
    if (gone == 0) ::_exit(0);
    ::waitpid(gone, nullptr, 0);
    auto engine = make_ptrace_engine();
    Collector collector;
    TraceRequest request;
    request.probes.push_back(spec("tick"));
    request.attach_pids = {gone};
    auto started = engine->start(request, collector);
    ASSERT_FALSE(started.ok());
    EXPECT_EQ(started.error().message(), "no process with pid " + std::to_string(gone));
}

TEST(EngineErrors, UnknownFunction) {
    auto r = launch({"no_such_function_here"}, {target("engine_args")});
    EXPECT_NE(r.error.find("no_such_function_here"), std::string::npos) << r.error;
    EXPECT_TRUE(r.events.empty());
}

TEST(EngineErrors, OffsetNotOnAnInstructionBoundary) {
    // add_pair starts with push %rbp (1 byte) then mov %rsp,%rbp (3 bytes):
    // +2 is inside the mov.
    auto r = launch({"add_pair+2"}, {target("engine_args")});
    EXPECT_NE(r.error, "");
    EXPECT_NE(r.error.find("boundary"), std::string::npos) << r.error;
}

TEST(EngineErrors, ProbeOnNonExecutableAddress) {
    char address[32];
    std::snprintf(address, sizeof address, "0x%llx",
                  static_cast<unsigned long long>(nm_address(target("engine_args"), "engine_global")));
    auto r = launch({address}, {target("engine_args")});
    EXPECT_NE(r.error.find("executable"), std::string::npos) << r.error;
}

// Arguments by DWARF name (probe/dwarf_fetch.hpp; values are tested in
// cli_dwarf_test): a name not in scope stops the launch with the names that are.
TEST(EngineErrors, DwarfNameNotInScopeIsAClearError) {
    auto r = launch({"add_pair nosuch"}, {target("engine_args")});
    EXPECT_NE(r.error.find("no variable 'nosuch' at add_pair+"), std::string::npos) << r.error;
    EXPECT_NE(r.error.find("in scope: a, b"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace uprobe::engine::test
