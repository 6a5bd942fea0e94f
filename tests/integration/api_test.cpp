// The public API (uprobe/session.hpp, uprobe/uprobe.h) as a client sees it:
// the C example counting calls, conditions, removal while running, register
// snapshots, holding a thread, detaching one process, and leaving it
// stopped for gdb. Expected values come from the targets' sources (cli_funcs
// calls add(sum, 2*i) n times) and from gdb.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>
#include <optional>
#include <regex>

#include "process.hpp"
#include "uprobe/session.hpp"
#include "uprobe/uprobe.h"

namespace uprobe::test {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    return s;
}

std::string proc_field(pid_t pid, const std::string& name) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind(name + ":", 0) == 0) return std::string(trim(line.substr(name.size() + 1)));
    return "";
}

TEST(Api, VersionsAgree) {
    EXPECT_EQ(api_version(), UPROBE_API_VERSION);
    EXPECT_EQ(uprobe_api_version(), UPROBE_API_VERSION);
}

TEST(Api, CountCallsExampleCountsEveryCall) {
    auto plain = run({target_path("cli_funcs"), "300"});
    ASSERT_EQ(plain.status, 0) << plain.describe();
    auto r = run({std::string(UPROBE_EXAMPLES_DIR) + "/count_calls", "add", target_path("cli_funcs"), "300"});
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.out, plain.out);
    EXPECT_NE(r.err.find("add: 300 calls"), std::string::npos) << r.describe();
    auto bad = run({std::string(UPROBE_EXAMPLES_DIR) + "/count_calls", "add x=%", target_path("cli_funcs")});
    EXPECT_EQ(bad.status, 2) << bad.describe();
}

TEST(Api, ConditionRemovalAndRegisters) {
    Session session;
    auto add = session.add_probe("add a=%di b=%si");
    auto hook = session.add_probe("weak_hook x=%di");
    ASSERT_TRUE(add);
    ASSERT_TRUE(hook);
    ASSERT_TRUE(session.add_target(Target::launch({target_path("cli_funcs"), "100"})));
    // b = 2*i: i in 5..9 for add; weak_hook(i) has x = i < 20 always here.
    ASSERT_TRUE(session.set_condition("(b >= 10 && b < 20) || (x < 20 && !(x == 3))"));
    std::vector<long> b_seen, x_seen;
    session.on_event([&](const Event& e, const Registers& regs) {
        EXPECT_EQ(regs.rip, e.addr);
        EXPECT_EQ(static_cast<int64_t>(regs.rdi), e.args.at(0).value.kind == Value::Kind::Signed
                                                      ? e.args[0].value.i
                                                      : static_cast<int64_t>(e.args[0].value.u));
        if (e.probe_id == *add) b_seen.push_back(static_cast<long>(e.args.at(1).value.u));
        if (e.probe_id == *hook) {
            x_seen.push_back(static_cast<long>(e.args.at(0).value.u));
            if (x_seen.size() == 4) {
                EXPECT_TRUE(session.remove_probe(*hook));
            }
        }
        return Action::Continue;
    });
    ASSERT_TRUE(session.start());
    auto status = session.run();
    ASSERT_TRUE(status);
    EXPECT_EQ(*status, 0);
    EXPECT_EQ(b_seen, (std::vector<long>{10, 12, 14, 16, 18}));
    EXPECT_EQ(x_seen, (std::vector<long>{0, 1, 2, 4}));  // 3 fails the condition; removed after 4 events
    auto stats = session.stats();
    EXPECT_EQ(stats.at(*add).hits, 5u);
}

// The inline engine copies the registers into each record for the API's
// callback (SessionOptions::registers, on by default), and leaves them out
// when told: then the callback sees rip alone.
TEST(Api, InlineEngineCallbacksSeeTheRegisters) {
    for (bool registers : {true, false}) {
        SessionOptions options;
        options.engine = "inline";
        options.registers = registers;
        Session session(options);
        ASSERT_TRUE(session.add_probe("add a=%di b=%si"));
        ASSERT_TRUE(session.add_target(Target::launch({target_path("cli_funcs"), "100"})));
        size_t seen = 0, matching = 0;
        session.on_event([&](const Event& e, const Registers& regs) {
            ++seen;
            EXPECT_EQ(regs.rip, e.addr);
            if (regs.rdi == e.args.at(0).value.u && regs.rsi == e.args.at(1).value.u && regs.rsp != 0) ++matching;
            return Action::Continue;
        });
        ASSERT_TRUE(session.start());
        auto status = session.run();
        ASSERT_TRUE(status);
        EXPECT_EQ(*status, 0);
        EXPECT_EQ(session.engine(), "inline");
        EXPECT_EQ(seen, 100u);
        EXPECT_EQ(matching, registers ? 100u : 0u) << "registers " << registers;
    }
}

// Action::Detach under the inline engine: the probes come out after the
// event that asked (the next hit of the same round is not delivered), the
// released callback names the process, and it runs on untraced with its
// code as in the file.
TEST(Api, InlineEngineDetachFromTheCallback) {
    Background target({target_path("hold_rounds"), "hr_inline"});
    ASSERT_TRUE(target.wait_for_line("ready"));
    SessionOptions options;
    options.engine = "inline";
    Session session(options);
    auto probe = session.add_probe(target_path("hold_rounds") + ":round_work k=%si");
    ASSERT_TRUE(probe);
    ASSERT_TRUE(session.add_target(Target::attach(target.pid())));
    std::vector<long> ks;
    uint64_t address = 0;
    pid_t released = 0;
    session.on_event([&](const Event& e, const Registers&) {
        ks.push_back(static_cast<long>(e.args.at(0).value.u));
        address = e.addr;
        return ks.size() == 2 ? Action::Detach : Action::Continue;
    });
    session.on_released([&](pid_t pid, bool stopped) {
        released = pid;
        EXPECT_FALSE(stopped);
    });
    ASSERT_TRUE(session.start());
    EXPECT_EQ(session.engine(), "inline");
    target.signal(SIGUSR1);
    ASSERT_TRUE(target.wait_for_line("round 0 done"));
    auto status = session.run();  // returns once the only process is let go
    ASSERT_TRUE(status);
    EXPECT_EQ(released, target.pid());
    EXPECT_EQ(ks, (std::vector<long>{0, 1}));
    EXPECT_EQ(session.stats().at(*probe).hits, 2u);
    ASSERT_NE(address, 0u);
    auto [in_memory, in_file] = memory_and_file_byte(target.pid(), address);
    EXPECT_EQ(in_memory, in_file);
    target.signal(SIGUSR1);
    ASSERT_TRUE(target.wait_for_line("round 1 done"));
    target.signal(SIGTERM);
    auto t = target.wait();
    EXPECT_EQ(t.status, 0) << t.describe();
    EXPECT_NE(t.out.find("rounds=2 bad=0"), std::string::npos) << t.out;
    EXPECT_EQ(ks.size(), 2u);
}

TEST(Api, InlineEngineRefusesAHoldCallback) {
    SessionOptions options;
    options.engine = "inline";
    Session session(options);
    ASSERT_TRUE(session.add_probe("add a=%di"));
    ASSERT_TRUE(session.add_target(Target::launch({target_path("cli_funcs"), "3"})));
    session.on_hold([](const Event&, const HeldThread&) { return Release::Resume; });
    auto started = session.start();
    ASSERT_FALSE(started);
    EXPECT_NE(started.error().message().find("holding needs the ptrace engine"), std::string::npos)
        << started.error().message();
}

TEST(Api, MalformedInputIsAnErrorWithACaret) {
    Session session;
    auto bad = session.add_probe("add x=%");
    ASSERT_FALSE(bad);
    auto condition = session.set_condition("a >< 3");
    ASSERT_FALSE(condition);
    EXPECT_NE(condition.error().message().find("^"), std::string::npos) << condition.error().message();
    ASSERT_TRUE(session.add_probe("add a=%di"));
    ASSERT_TRUE(session.set_condition("nosuch > 3"));
    ASSERT_TRUE(session.add_target(Target::launch({target_path("cli_funcs"), "1"})));
    auto started = session.start();
    ASSERT_FALSE(started);
    EXPECT_NE(started.error().message().find("nosuch"), std::string::npos);
    EXPECT_FALSE(session.add_target(Target::global()));
}

TEST(Api, HoldResumeThenDetachLeavesTheProgramIntact) {
    auto plain = run({target_path("cli_funcs"), "50"});
    Session session;
    ASSERT_TRUE(session.add_probe("add a=%di b=%si"));
    ASSERT_TRUE(session.add_target(Target::launch({target_path("cli_funcs"), "50"})));
    int hits = 0, holds = 0;
    session.on_event([&](const Event&, const Registers&) { return ++hits == 1 ? Action::Hold : Action::Detach; });
    session.on_hold([&](const Event& e, const HeldThread& held) {
        ++holds;
        EXPECT_EQ(held.regs.rip, e.addr);
        EXPECT_EQ(held.pid, e.pid);
        // At function entry the return address is on top of the stack and
        // points into the caller (main), below the probe's object end.
        uint64_t return_address = 0;
        EXPECT_TRUE(held.read(held.regs.rsp, &return_address, sizeof return_address));
        EXPECT_NE(return_address, 0u);
        EXPECT_EQ(proc_field(held.pid, "State").substr(0, 1), "t");  // ptrace stop
        return Release::Resume;
    });
    ASSERT_TRUE(session.start());
    auto status = session.run();
    ASSERT_TRUE(status);
    EXPECT_EQ(hits, 2);
    EXPECT_EQ(holds, 1);
    EXPECT_EQ(session.stats().at(0).hits, 2u);
    EXPECT_EQ(*status, 0);
}

TEST(Api, DetachStoppedLeavesTheProcessForGdbAtTheProbe) {
    Session session;
    ASSERT_TRUE(session.add_probe("global_tick i=%di"));
    ASSERT_TRUE(session.add_target(Target::launch({target_path("global_worker"), "gw_held"})));
    pid_t pid = 0;
    uint64_t pc = 0;
    int64_t i = -1;
    session.on_event([&](const Event& e, const Registers&) {
        i = static_cast<int64_t>(e.args.at(0).value.u);
        return Action::Hold;
    });
    session.on_hold([&](const Event& e, const HeldThread& held) {
        pid = held.pid;
        pc = e.addr;
        return Release::DetachStopped;
    });
    ASSERT_TRUE(session.start());
    auto status = session.run();  // ends: the only process is detached
    ASSERT_TRUE(status);
    ASSERT_GT(pid, 0);
    // Stopped (group-stop, "T"), traced by nobody.
    EXPECT_EQ(proc_field(pid, "State").substr(0, 1), "T");
    EXPECT_EQ(proc_field(pid, "TracerPid"), "0");
    auto gdb = run({"gdb", "-nx", "-batch", "-p", std::to_string(pid), "-ex", "p/x $pc", "-ex", "frame 1", "-ex",
                    "p calls"});
    char want_pc[64];
    std::snprintf(want_pc, sizeof want_pc, "$1 = 0x%llx", static_cast<unsigned long long>(pc));
    EXPECT_NE(gdb.out.find(want_pc), std::string::npos) << want_pc << "\n" << gdb.describe();
    EXPECT_NE(gdb.out.find("$2 = " + std::to_string(i)), std::string::npos) << gdb.describe();
    ::kill(pid, SIGKILL);
    int st;
    ::waitpid(pid, &st, 0);
}

}  // namespace
}  // namespace uprobe::test

namespace uprobe::test {
namespace {

// A probe added from a callback while tracing goes into the running
// process: its events follow at once, at the same hits as the first probe.
TEST(Api, AProbeAddedWhileRunningFiresAtTheNextHits) {
    Session session;
    auto first = session.add_probe("global_tick i=%di");
    ASSERT_TRUE(first);
    ASSERT_TRUE(session.add_target(Target::launch({target_path("global_worker"), "gw_added"})));
    std::optional<uint32_t> late;
    std::vector<long> first_i, late_twice;
    pid_t pid = 0;
    bool stopped = false;  // hits taken while detaching still arrive: not counted
    session.on_event([&](const Event& e, const Registers&) {
        pid = e.pid;
        if (stopped) return Action::Continue;
        if (e.probe_id == *first) {
            first_i.push_back(static_cast<long>(e.args.at(0).value.u));
            if (first_i.size() == 5) {
                auto added = session.add_probe("late=global_tick twice=%si");
                EXPECT_TRUE(added) << (added ? "" : added.error().message());
                if (added) late = *added;
            }
        } else if (late && e.probe_id == *late) {
            late_twice.push_back(static_cast<long>(e.args.at(0).value.u));
            // Same breakpoint, probes in order: this hit's i came just before.
            EXPECT_EQ(late_twice.back(), 2 * first_i.back());
            if (late_twice.size() == 5) {
                stopped = true;
                session.stop();
            }
        }
        return Action::Continue;
    });
    ASSERT_TRUE(session.start());
    ASSERT_TRUE(session.run());
    EXPECT_EQ(late_twice.size(), 5u);
    ASSERT_TRUE(late);
    EXPECT_GE(session.stats().at(*late).hits, 5u);
    EXPECT_EQ(session.stats().at(*late).sites, 1u);
    ASSERT_GT(pid, 0);
    ::kill(pid, SIGKILL);
    int st;
    ::waitpid(pid, &st, 0);
}

// remove_probe while running takes the int3 out of the process: after the
// note, the probed address holds the file's byte again while the process
// is still traced (by the other probe), and the program runs on correctly:
// round 1 makes no event of the removed probe, three of the other.
TEST(Api, RemoveProbeWhileRunningRestoresTheBytes) {
    Background target({target_path("hold_rounds"), "hr_remove"});
    ASSERT_TRUE(target.wait_for_line("ready"));
    const std::string binary = target_path("hold_rounds");
    Session session;
    auto entry = session.add_probe(binary + ":round_work k=%si");
    auto line = session.add_probe(binary + ":main+0");  // never hit again: keeps the process traced
    ASSERT_TRUE(entry && line);
    ASSERT_TRUE(session.add_target(Target::attach(target.pid())));
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<long> ks;
    uint64_t address = 0;
    bool attached = false, removed = false;
    session.on_note([&](std::string_view note) {
        std::lock_guard lock(mutex);
        if (note.find("attached to " + std::to_string(target.pid())) != std::string_view::npos) attached = true;
        if (note.find("probe round_work: removed from 1 site") != std::string_view::npos) removed = true;
        changed.notify_all();
    });
    session.on_event([&](const Event& e, const Registers&) {
        std::lock_guard lock(mutex);
        EXPECT_EQ(e.probe_id, *entry);
        ks.push_back(static_cast<long>(e.args.at(0).value.u));
        address = e.addr;
        if (ks.size() == 3) {
            EXPECT_TRUE(session.remove_probe(*entry));  // from the callback
        }
        return Action::Continue;
    });
    // ptrace: the thread that attaches (start) is the one that runs.
    std::thread runner([&] {
        auto started = session.start();
        EXPECT_TRUE(started) << (started ? "" : started.error().message());
        if (started) {
            EXPECT_TRUE(session.run());
        }
    });
    auto wait_for = [&](bool& flag) {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, std::chrono::seconds(30), [&] { return flag; });
    };
    EXPECT_TRUE(wait_for(attached));
    target.signal(SIGUSR1);
    ASSERT_TRUE(target.wait_for_line("round 0 done"));
    EXPECT_TRUE(wait_for(removed));
    {
        std::lock_guard lock(mutex);
        EXPECT_EQ(ks, (std::vector<long>{0, 1, 2}));
        ASSERT_NE(address, 0u);
    }
    auto [in_memory, in_file] = memory_and_file_byte(target.pid(), address);
    EXPECT_EQ(in_memory, in_file);
    EXPECT_NE(in_memory, 0xcc);
    EXPECT_NE(proc_field(target.pid(), "TracerPid"), "0");  // still traced
    target.signal(SIGUSR1);
    ASSERT_TRUE(target.wait_for_line("round 1 done"));
    session.stop();
    runner.join();
    EXPECT_EQ(ks.size(), 3u);
    EXPECT_EQ(proc_field(target.pid(), "TracerPid"), "0");
    target.signal(SIGTERM);
    auto t = target.wait();
    EXPECT_EQ(t.status, 0) << t.describe();
    EXPECT_NE(t.out.find("rounds=2 bad=0"), std::string::npos) << t.describe();
}

}  // namespace
}  // namespace uprobe::test
