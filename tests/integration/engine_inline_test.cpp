// What only the inline engine does, through its C++ API (the cases every
// engine supports run on it in engine_trace_test.cpp): counting in shared
// memory, the program not under ptrace while probes fire (a debugger can
// attach), a tracer killed with SIGKILL leaving a correct program, and
// another user unable to reach the shared memory.
#include <dirent.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "engine_support.hpp"

namespace uprobe::engine::test {
namespace {

LaunchResult launch_inline(const std::vector<std::string>& probes, const std::vector<std::string>& argv,
                           bool follow = false) {
    return launch(probes, argv, follow, "inline");
}

TEST(InlineEngine, CountOnlyWritesNoRecordsAndCountsExactly) {
    auto engine = make_inline_engine();
    Watchdog watchdog(*engine);
    Collector collector;
    TraceRequest request;
    request.probes.push_back(spec("add_pair"));
    request.command = {target("engine_args")};
    request.count_only = true;
    CapturedStdout capture;
    auto started = engine->start(request, collector);
    capture.restore();
    ASSERT_TRUE(started.ok()) << started.error().message();
    auto status = engine->run();
    ASSERT_TRUE(status.ok());
    EXPECT_EQ(*status, 0);
    EXPECT_TRUE(collector.events.empty());
    EXPECT_EQ(engine->stats().at(0).hits, 1000u);
}

// --no-drop: 8 threads make 800,000 hits as fast as they can, far more than
// the rings hold (1 MiB each, about 21,000 records) and far faster than the
// tracer drains them; each writer waits for room, so every hit arrives.
// And each thread's timestamps never go back (rdtsc, converted).
TEST(InlineEngine, NoDropDeliversEveryRecord) {
    struct Counter : EventConsumer {
        std::map<uint64_t, uint64_t> per_value;
        std::map<pid_t, uint64_t> last_ts;
        uint64_t backwards = 0;
        void on_event(const Event& event) override {
            per_value[event.args.at(0).value.u]++;
            uint64_t& last = last_ts[event.tid];
            if (event.ts_ns < last) ++backwards;
            last = event.ts_ns;
        }
    } counter;
    auto engine = make_inline_engine();
    Watchdog watchdog(*engine, std::chrono::seconds(120));
    TraceRequest request;
    request.probes.push_back(spec("hit index=$arg1"));
    request.command = {target("engine_threads"), "100000"};
    request.no_drop = true;
    CapturedStdout capture;
    auto started = engine->start(request, counter);
    capture.restore();
    ASSERT_TRUE(started.ok()) << started.error().message();
    for (pid_t pid : engine->traced_processes()) watchdog.watch(pid);
    auto status = engine->run();
    ASSERT_TRUE(status.ok());
    EXPECT_EQ(*status, 0);
    EXPECT_EQ(engine->stats().at(0).hits, 800000u);
    EXPECT_EQ(engine->stats().at(0).dropped, 0u);
    std::map<uint64_t, uint64_t> want;
    for (uint64_t index = 0; index < 8; ++index) want[index] = 100000;
    EXPECT_EQ(counter.per_value, want);
    EXPECT_EQ(counter.backwards, 0u);
    std::string expected;  // thread i adds hit(i) = i + 1 per iteration
    for (int i = 0; i < 8; ++i) expected += "thread " + std::to_string(i) + " total " + std::to_string((i + 1) * 100000) + "\n";
    EXPECT_EQ(capture.text(), expected);
}

TEST(InlineEngine, CountOnlyTwoProbesOnOneAddress) {
    auto engine = make_inline_engine();
    Watchdog watchdog(*engine);
    Collector collector;
    TraceRequest request;
    request.probes.push_back(spec("first=add_pair"));
    request.probes.push_back(spec("second=add_pair"));
    request.command = {target("engine_args"), "10"};
    request.count_only = true;
    CapturedStdout capture;
    auto started = engine->start(request, collector);
    capture.restore();
    ASSERT_TRUE(started.ok()) << started.error().message();
    ASSERT_TRUE(engine->run().ok());
    EXPECT_EQ(engine->stats().at(0).hits, 10u);
    EXPECT_EQ(engine->stats().at(1).hits, 10u);
}

TEST(InlineEngine, StaticProgramIsAClearError) {
    // No dynamic loader, so nothing can preload the agent.
    auto r = launch_inline({"main"}, {target("inline_static")});
    EXPECT_NE(r.error.find("agent"), std::string::npos) << r.error;
}


std::string tracer_pid_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("TracerPid:", 0) == 0) return line.substr(line.find_first_not_of(" \t", 10));
    return "?";
}

// Detaching stops every thread wherever it is: in a trampoline, in the
// handler, or with the SIGTRAP of an int3 site pending — a signal that
// must still be delivered, or the thread resumes past the displaced
// instruction. tick gets a jump (or an int3 when a thread was stopped
// inside its first bytes at the attach, and from then on, as a thread may
// still resume from that int3's copy into them); tiny, 4 bytes long,
// always an int3.
class DetachMidFlight : public ::testing::TestWithParam<const char*> {};

TEST_P(DetachMidFlight, EveryThreadKeepsItsBookkeeping) {
    Child spin("engine_spin", {"4", GetParam()});
    // Several sessions one after another: each detach is a new chance to
    // catch a thread in the middle of a hit.
    for (int session = 0; session < 6; ++session) {
        auto engine = make_inline_engine();
        Watchdog watchdog(*engine);
        watchdog.watch(spin.pid);
        Collector collector;
        collector.after_event = [&](const Event&) {
            if (collector.events.size() == 10000) engine->stop();
        };
        TraceRequest request;
        request.probes.push_back(spec(std::string(GetParam()) + " i=$arg1"));
        request.attach_pids = {spin.pid};
        auto started = engine->start(request, collector);
        ASSERT_TRUE(started.ok()) << started.error().message();
        // Probes are in, and the program is not held under ptrace.
        EXPECT_EQ(tracer_pid_of(spin.pid), "0");
        auto status = engine->run();
        ASSERT_TRUE(status.ok()) << status.error().message();
        // Per thread, i grows by one from event to event, except where a
        // full ring dropped records: every missing i is counted as dropped.
        std::map<pid_t, uint64_t> last_i;
        uint64_t missing = 0;
        for (const auto& e : collector.events) {
            auto it = last_i.find(e.tid);
            if (it != last_i.end()) {
                EXPECT_GT(e.args.at(0).value.u, it->second) << "tid " << e.tid;
                missing += e.args[0].value.u - it->second - 1;
            }
            last_i[e.tid] = e.args[0].value.u;
        }
        EXPECT_LE(missing, engine->stats().at(0).dropped);
        EXPECT_GE(last_i.size(), 1u);
        ASSERT_EQ(::kill(spin.pid, 0), 0) << "the program died after session " << session;
    }
    ::kill(spin.pid, SIGUSR1);
    EXPECT_EQ(spin.read_line(), "ok 1");
    EXPECT_TRUE(spin.exited_cleanly());
}

INSTANTIATE_TEST_SUITE_P(InlineEngine, DetachMidFlight, ::testing::Values("tick", "tiny"));

// A process attached to that runs execve takes our code away with its old
// image; the engine notices, says so, and attaches to the new program.
TEST(InlineEngine, AttachedProcessThatExecsIsTracedAgain) {
    struct Consumer : Collector {
        void on_note(std::string_view line) override {
            Collector::on_note(line);
            if (line.find("ran execve") != std::string_view::npos) reattached = true;
        }
        std::atomic<bool> reattached{false};
    } consumer;
    Child child("engine_exec", {"wait"});
    const pid_t pid = child.pid;
    auto engine = make_inline_engine();
    Watchdog watchdog(*engine);
    watchdog.watch(child.pid);
    TraceRequest request;
    request.probes.push_back(spec("work w=$arg1"));
    request.attach_pids = {child.pid};
    auto started = engine->start(request, consumer);
    ASSERT_TRUE(started.ok()) << started.error().message();
    Result<int> status = 0;
    std::thread runner([&] { status = engine->run(); });
    child.write_line("go");
    EXPECT_EQ(child.read_line(), "stage 7 sum 70");
    EXPECT_EQ(child.read_line(), "ready");  // the new program, waiting
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!consumer.reattached && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    EXPECT_TRUE(consumer.reattached);
    child.write_line("go");
    EXPECT_EQ(child.read_line(), "stage 8 sum 80");
    EXPECT_TRUE(child.exited_cleanly());
    runner.join();  // the process is gone: run() returns
    ASSERT_TRUE(status.ok()) << status.error().message();
    std::map<uint64_t, int> by_arg;
    for (const auto& e : consumer.events) by_arg[e.args.at(0).value.u]++;
    EXPECT_EQ(by_arg, (std::map<uint64_t, int>{{7, 10}, {8, 10}}));
    EXPECT_EQ(engine->stats().at(0).hits, 20u);
    EXPECT_EQ(engine->traced_processes(), std::vector<pid_t>{pid});
}

// gdb attaches to the traced program (impossible under the ptrace engine:
// a process has one tracer), reads a variable and detaches, and the probe
// keeps firing all along.
TEST(InlineEngine, DebuggerAttachesWhileProbesKeepFiring) {
    if (::system("command -v gdb >/dev/null 2>&1") != 0) GTEST_SKIP() << "gdb is not installed";
    Child spin("engine_spin");
    auto engine = make_inline_engine();
    Watchdog watchdog(*engine);
    watchdog.watch(spin.pid);
    Collector collector;
    std::atomic<size_t> seen{0};
    collector.after_event = [&](const Event&) { seen = collector.events.size(); };
    TraceRequest request;
    request.probes.push_back(spec("tick i=$arg1"));
    request.attach_pids = {spin.pid};
    auto started = engine->start(request, collector);
    ASSERT_TRUE(started.ok()) << started.error().message();
    std::string gdb_output;
    size_t before = 0, after_gdb = 0;
    // Bounded waits and a killed gdb: a hang becomes a failure.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    auto wait_for = [&](size_t count) {
        while (seen.load() < count && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    };
    std::thread debugger([&] {
        wait_for(1000);
        before = seen.load();
        gdb_output = shell("timeout -s KILL 30 gdb -nx -batch -p " + std::to_string(spin.pid) +
                           " -ex 'print (int)(tick(7))' -ex detach 2>&1");
        size_t at_detach = seen.load();
        wait_for(at_detach + 1000);
        after_gdb = seen.load();
        engine->stop();
    });
    auto status = engine->run();
    debugger.join();
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_NE(gdb_output.find("$1 = 7"), std::string::npos) << gdb_output;
    EXPECT_GT(after_gdb, before + 1000);
    // The call gdb made went through the probe too: some event has i == 7
    // out of sequence, and every other one is consecutive.
    // Missing i are records a full ring dropped, and counted as such.
    bool saw_gdb_call = false;
    uint64_t previous = collector.events.at(0).args.at(0).value.u, missing = 0;
    for (size_t k = 1; k < collector.events.size(); ++k) {
        uint64_t i = collector.events[k].args.at(0).value.u;
        if (i == 7 && previous + 1 != 7) {
            saw_gdb_call = true;
            continue;
        }
        EXPECT_GT(i, previous) << "event " << k;
        missing += i - previous - 1;
        previous = i;
    }
    EXPECT_LE(missing, engine->stats().at(0).dropped);
    // (The call itself is reported unless gdb stopped the thread inside the
    // handler: then it is a re-entry, counted and skipped.)
    (void)saw_gdb_call;
    ::kill(spin.pid, SIGUSR1);
    EXPECT_EQ(spin.read_line(), "ok 1");
    EXPECT_TRUE(spin.exited_cleanly());
}

// The tracer dies without any chance to clean up: patches, trampolines and
// the agent stay, the rings fill and drop, and the program is still right.
// The tracer is killed (SIGKILL) mid-trace; the program runs on through
// its patched sites and checks its own bookkeeping.
void tracer_killed_leaves_the_program_correct(const std::vector<std::string>& probes) {
    Child spin("engine_spin", {"2"});
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    pid_t tracer = ::fork();
    if (tracer == 0) {
        auto engine = make_inline_engine();
        Collector collector;
        bool told = false;
        collector.after_event = [&](const Event&) {
            if (!told && collector.events.size() >= 100) {
                told = true;
                (void)!::write(ready[1], "x", 1);
            }
        };
        TraceRequest request;
        for (const auto& probe : probes) request.probes.push_back(spec(probe));
        request.attach_pids = {spin.pid};
        if (!engine->start(request, collector)) ::_exit(1);
        (void)engine->run();
        ::_exit(0);
    }
    ::close(ready[1]);
    char byte = 0;
    ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "no events before the kill";
    ::close(ready[0]);
    ::kill(tracer, SIGKILL);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(tracer, &wstatus, 0), tracer);
    EXPECT_TRUE(WIFSIGNALED(wstatus));
    // Let the program run on through its patched sites with full rings for
    // a few million more calls, then check its own bookkeeping.
    std::string maps;
    {
        std::ifstream in("/proc/" + std::to_string(spin.pid) + "/maps");
        maps.assign(std::istreambuf_iterator<char>(in), {});
    }
    EXPECT_NE(maps.find("libuprobe-agent.so"), std::string::npos);
    EXPECT_EQ(tracer_pid_of(spin.pid), "0");
    ::kill(spin.pid, SIGUSR1);
    EXPECT_EQ(spin.read_line(), "ok 1");
    EXPECT_TRUE(spin.exited_cleanly());
}

TEST(InlineEngine, TracerKilledWithSigkillLeavesTheProgramCorrect) {
    tracer_killed_leaves_the_program_correct({"tick i=$arg1"});
}

// Return probes too: the program keeps returning through the landings
// and the shadow stacks of a session whose tracer is gone.
TEST(InlineEngine, TracerKilledDuringReturnProbesLeavesTheProgramCorrect) {
    tracer_killed_leaves_the_program_correct({"tick i=$arg1", "tick%return r=$retval"});
}

// A different unprivileged user can reach neither the event region nor
// any file descriptor of the traced program: the memfd lives only as
// mappings of the target (its fd is closed) and of the tracer.
TEST(InlineEngine, AnotherUserCannotReachTheSharedMemory) {
    if (::getuid() != 0) GTEST_SKIP() << "needs root to switch to another user";
    struct passwd* nobody = ::getpwnam("nobody");
    if (!nobody) GTEST_SKIP() << "no 'nobody' account";
    Child spin("engine_spin");
    auto engine = make_inline_engine();
    Watchdog watchdog(*engine);
    watchdog.watch(spin.pid);
    Collector collector;
    TraceRequest request;
    request.probes.push_back(spec("tick i=$arg1"));
    request.attach_pids = {spin.pid};
    auto started = engine->start(request, collector);
    ASSERT_TRUE(started.ok()) << started.error().message();
    // The region is mapped in the target, and no fd of the target names it.
    std::string region;
    {
        std::ifstream in("/proc/" + std::to_string(spin.pid) + "/maps");
        for (std::string line; std::getline(in, line);)
            if (line.find("memfd:uprobe-events") != std::string::npos) region = line.substr(0, line.find(' '));
    }
    ASSERT_FALSE(region.empty());
    std::string fd_dir = "/proc/" + std::to_string(spin.pid) + "/fd";
    if (DIR* d = ::opendir(fd_dir.c_str())) {
        while (dirent* entry = ::readdir(d)) {
            char link[512] = {};
            std::string path = fd_dir + "/" + entry->d_name;
            if (::readlink(path.c_str(), link, sizeof link - 1) > 0) {
                EXPECT_EQ(std::string(link).find("uprobe-events"), std::string::npos) << path;
            }
        }
        ::closedir(d);
    }
    // Another user tries every door: the mapping through map_files, the
    // target's memory, and the tracer's (our) fds and memory.
    const std::vector<std::string> doors = {
        "/proc/" + std::to_string(spin.pid) + "/map_files/" + region,
        "/proc/" + std::to_string(spin.pid) + "/mem",
        "/proc/" + std::to_string(::getpid()) + "/mem",
    };
    std::vector<std::string> our_fds;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (dirent* entry = ::readdir(d))
            if (entry->d_name[0] != '.') our_fds.push_back("/proc/" + std::to_string(::getpid()) + "/fd/" + entry->d_name);
        ::closedir(d);
    }
    int report[2];
    ASSERT_EQ(::pipe(report), 0);
    pid_t intruder = ::fork();
    if (intruder == 0) {
        ::close(report[0]);
        if (::setgid(nobody->pw_gid) != 0 || ::setuid(nobody->pw_uid) != 0) ::_exit(2);
        std::string opened;
        for (const auto& door : doors) {
            int fd = ::open(door.c_str(), O_RDONLY);
            if (fd >= 0) opened += door + " ";
        }
        for (const auto& door : our_fds) {
            int fd = ::open(door.c_str(), O_RDONLY);
            if (fd >= 0) opened += door + " ";
        }
        (void)!::write(report[1], opened.data(), opened.size());
        ::_exit(0);
    }
    ::close(report[1]);
    std::string opened;
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(report[0], buffer, sizeof buffer)) > 0) opened.append(buffer, static_cast<size_t>(n));
    ::close(report[0]);
    int wstatus = 0;
    ::waitpid(intruder, &wstatus, 0);
    ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << "could not become nobody";
    EXPECT_EQ(opened, "") << "another user opened these";
    engine->stop();
    auto status = engine->run();
    ASSERT_TRUE(status.ok());
    ::kill(spin.pid, SIGUSR1);
    EXPECT_EQ(spin.read_line(), "ok 1");
    EXPECT_TRUE(spin.exited_cleanly());
}

}  // namespace
}  // namespace uprobe::engine::test
