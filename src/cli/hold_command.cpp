#include "cli/hold_command.hpp"

#include <fmt/format.h>

#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>

#include "base/strings.hpp"
#include "cli/report.hpp"
#include "cli/supervisor.hpp"
#include "sink/sink.hpp"
#include "uprobe/session.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::cli {
namespace {

std::atomic<Session*> g_session{nullptr};
std::atomic<pid_t> g_server{0};  // the gdb server's process

// The first SIGINT ends the tracing of the other processes; one after that
// (only gdb's session is left), and SIGTERM, SIGHUP and SIGQUIT at any time,
// end the gdb server too (it takes gdb's breakpoints out and detaches).
void request_stop(int signal) {
    auto* session = g_session.load();
    if (session) session->stop();
    if (pid_t server = g_server.load(); server > 0 && (signal != SIGINT || !session)) ::kill(server, SIGTERM);
}

int g_server_quit_fd = -1;
void server_quit(int) {
    uint64_t one = 1;
    (void)!::write(g_server_quit_fd, &one, sizeof one);
}

// The gdb server for a released process, in a process of its own: a thread
// of the tracer would have its tracees' stops taken by the engine's
// waitpid(-1). Double-forked so the engine never sees it as a child. Its
// pipe `status_fd` carries its pid, a NUL byte
// once it has taken the process over, then its one line of outcome ("" when
// gdb was served) — or that line at once when taking over failed —, and
// end-of-file when it is gone.
struct ServerProcess {
    pid_t pid = 0;
    int status_fd = -1;
};

ServerProcess start_server(int listener, pid_t pid, pid_t tid, bool all_stop) {
    int status[2];
    if (::pipe2(status, O_CLOEXEC) != 0) return {};
    pid_t middle = ::fork();
    if (middle == 0) {
        ::close(status[0]);
        pid_t server = ::fork();
        if (server == 0) {
            // The server is the pipe's only writer, so its pid comes first.
            pid_t self = ::getpid();
            (void)!::write(status[1], &self, sizeof self);
            g_server_quit_fd = ::eventfd(0, EFD_CLOEXEC);
            struct sigaction sa {};
            sa.sa_handler = server_quit;
            sigemptyset(&sa.sa_mask);
            for (int s : {SIGTERM, SIGHUP, SIGQUIT}) sigaction(s, &sa, nullptr);
            std::signal(SIGINT, SIG_IGN);
            GdbServerOptions options;
            options.all_stop = all_stop;
            options.quit_fd = g_server_quit_fd;
            options.taken_over = [&] { (void)!::write(status[1], "", 1); };
            auto served = serve_gdb_on(listener, pid, tid, options);
            std::string outcome = served ? "" : served.error().message();
            (void)!::write(status[1], outcome.data(), outcome.size());
            ::_exit(served ? 0 : 1);
        }
        ::_exit(server > 0 ? 0 : 1);
    }
    ::close(status[1]);
    if (middle < 0) {
        ::close(status[0]);
        return {};
    }
    while (::waitpid(middle, nullptr, 0) < 0 && errno == EINTR) {}
    pid_t server = 0;
    if (::read(status[0], &server, sizeof server) != sizeof server || server <= 0) {
        ::close(status[0]);
        return {};
    }
    return {server, status[0]};
}

// Waits until the server has the process (then gdb finds every thread as
// the stub presents it); "" then, else why it failed.
std::string wait_for_take_over(const ServerProcess& server) {
    char first = 0;
    ssize_t n;
    while ((n = ::read(server.status_fd, &first, 1)) < 0 && errno == EINTR) {}
    if (n == 1 && first == '\0') return "";
    std::string why = n == 1 ? std::string(1, first) : std::string();
    char buffer[512];
    while ((n = ::read(server.status_fd, buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) why.append(buffer, static_cast<size_t>(n));
    return why.empty() ? "the server ended" : why;
}

// Waits until the server has finished; returns its outcome line.
std::string wait_for_server(const ServerProcess& server) {
    std::string outcome;
    char buffer[512];
    for (;;) {
        ssize_t n = ::read(server.status_fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        outcome.append(buffer, static_cast<size_t>(n));
    }
    ::close(server.status_fd);
    return outcome;
}

struct NamedRegister {
    const char* name;
    uint64_t Registers::*field;
};
constexpr NamedRegister kRegisters[] = {
    {"rax", &Registers::rax}, {"rbx", &Registers::rbx}, {"rcx", &Registers::rcx}, {"rdx", &Registers::rdx},
    {"rsi", &Registers::rsi}, {"rdi", &Registers::rdi}, {"rbp", &Registers::rbp}, {"rsp", &Registers::rsp},
    {"r8", &Registers::r8},   {"r9", &Registers::r9},   {"r10", &Registers::r10}, {"r11", &Registers::r11},
    {"r12", &Registers::r12}, {"r13", &Registers::r13}, {"r14", &Registers::r14}, {"r15", &Registers::r15},
    {"rip", &Registers::rip}, {"eflags", &Registers::eflags}, {"fs_base", &Registers::fs_base},
    {"gs_base", &Registers::gs_base},
};

void print_registers(const Registers& regs) {
    // gdb's `info registers` layout: name, hex, decimal.
    for (const auto& r : kRegisters)
        fmt::print("{:<10} {:#018x} {}\n", r.name, regs.*r.field, static_cast<int64_t>(regs.*r.field));
}

void print_backtrace(const HeldThread& held) {
    auto frames = held.backtrace();
    if (!frames) {
        fmt::print("bt: {}\n", frames.error().message());
        return;
    }
    for (size_t i = 0; i < frames->size(); ++i) fmt::print("#{:<2} {}\n", i, describe((*frames)[i]));
}

void print_args(const Event& event) {
    for (const auto& arg : event.args) fmt::print("{} = {}\n", arg.name, format_value(arg.value));
}

// A number, or a register as $NAME / NAME.
std::optional<uint64_t> parse_address(std::string word, const Registers& regs) {
    if (!word.empty() && word[0] == '$') word.erase(0, 1);
    for (const auto& r : kRegisters)
        if (word == r.name) return regs.*r.field;
    try {
        size_t used = 0;
        uint64_t value = std::stoull(word, &used, 0);
        if (used == word.size()) return value;
    } catch (...) {
    }
    return std::nullopt;
}

void examine(const HeldThread& held, std::istringstream& words) {
    std::string address_word, length_word;
    words >> address_word >> length_word;
    auto address = parse_address(address_word, held.regs);
    if (!address) {
        fmt::print("x: expected an address or a register ($rsp), got '{}'\n", address_word);
        return;
    }
    uint64_t length = 64;
    if (!length_word.empty()) {
        auto n = parse_address(length_word, held.regs);
        if (!n || *n == 0 || *n > 4096) {
            fmt::print("x: LEN is 1..4096 bytes\n");
            return;
        }
        length = *n;
    }
    std::vector<uint8_t> bytes(length);
    if (auto read = held.read(*address, bytes.data(), bytes.size()); !read) {
        fmt::print("x: {}\n", read.error().message());
        return;
    }
    for (uint64_t row = 0; row < length; row += 16) {
        std::string line = fmt::format("{:#x}:", *address + row);
        for (uint64_t k = row; k < std::min(length, row + 16); ++k) line += fmt::format(" {:02x}", bytes[k]);
        fmt::print("{}\n", line);
    }
}

void print_variable(const Event& event, const HeldThread& held, const std::string& name) {
    for (const auto& arg : event.args)
        if (arg.name == name) {
            fmt::print("{} = {}\n", name, format_value(arg.value));
            return;
        }
    std::string reg = name.empty() || name[0] != '$' ? name : name.substr(1);
    for (const auto& r : kRegisters)
        if (reg == r.name) {
            fmt::print("{} = {:#x}\n", name, held.regs.*r.field);
            return;
        }
    auto values = held.variable(name);
    if (!values) {
        fmt::print("p: {}\n", values.error().message());
        return;
    }
    for (const auto& value : *values)
        fmt::print("{} = {}\n", values->size() == 1 ? name : value.name, format_value(value.value));
}

const char* kHelp =
    "regs            the registers at the probe\n"
    "bt              the backtrace\n"
    "x ADDR [LEN]    LEN bytes of memory at ADDR (a number or $reg; LEN 64 by default)\n"
    "p EXPR          a DWARF variable at the pc (count, req->len, a[2], *p; locals, parameters, globals),\n"
    "                $params, $vars, an arg of the probe, or a register ($rdi)\n"
    "continue        resume; hold the next matching hit again\n"
    "detach          take the probes out of every process and end (also at end of input)\n";

}  // namespace

int run_hold(const HoldOptions& options) {
    SessionOptions session_options;
    session_options.string_max = options.string_max;
    session_options.process_group = ::getpgrp();
    Session session(session_options);
    for (const auto& text : options.probes) {
        auto parsed = parse_probe_spec(text);
        if (parsed.error) return report_spec_error(*parsed.error);
        if (auto added = session.add_probe(text); !added) return report_usage(added.error().message());
    }
    if (options.probes.empty()) return report_usage("hold needs a probe");
    int targets = (options.global ? 1 : 0) + (!options.command.empty() ? 1 : 0) + (!options.pids.empty() && !options.global ? 1 : 0);
    if (targets != 1) return report_usage("hold needs exactly one of --global, -p PID, or a command after --");
    if (options.global) {
        ProcessFilter filter;
        filter.pids = options.pids;
        filter.uids = options.uids;
        filter.comm = options.comm;
        filter.cgroup = options.cgroup;
        filter.exe = options.exe;
        (void)session.add_target(Target::global(filter));
    } else if (!options.command.empty()) {
        (void)session.add_target(Target::launch(options.command));
    } else {
        for (pid_t pid : options.pids)
            if (auto added = session.add_target(Target::attach(pid)); !added) return report_usage(added.error().message());
    }
    if (!options.condition.empty())
        if (auto set = session.set_condition(options.condition); !set) return report_usage("--if: " + set.error().message());

    run_supervised();
    g_session = &session;
    struct sigaction sa {};
    sa.sa_handler = request_stop;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaction(s, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    auto text = sink::make_text_sink(stdout);
    int listener = -1;  // --gdb-server: bound before anything is held
    std::string serve_host;
    uint16_t serve_port = 0;
    if (!options.gdb_server.empty()) {
        std::string port = options.gdb_server;
        if (auto colon = port.rfind(':'); colon != std::string::npos) {
            serve_host = port.substr(0, colon);
            port = port.substr(colon + 1);
        }
        auto number = parse_uint(port);
        if (!number || *number > 65535) return report_usage("--gdb-server: expected [HOST:]PORT, got '" + options.gdb_server + "'");
        auto bound = listen_for_gdb(serve_host, static_cast<uint16_t>(*number), &serve_port);
        if (!bound) return report_error(bound.error().message());
        listener = *bound;
    } else if (options.all_stop) {
        return report_usage("--all-stop goes with --gdb-server");
    }
    if (options.verbose)
        session.on_note([](std::string_view line) {
            fmt::print("uprobe: {}\n", line);
            std::fflush(stdout);
        });
    bool holding = true;  // the next matching hit is held
    bool held_once = false;
    bool handed_over = false;  // --gdb, --gdb-server: the others are traced on
    bool released = false;     // the engine let go of the handed-over process
    pid_t hand_pid = 0, hand_tid = 0;
    ServerProcess server;
    bool server_failed = false;
    session.on_event([&](const Event& event, const Registers&) {
        // The engine releases a process right after its hold; one that is
        // still here was not released (a hit while another process was
        // being attached runs on): hold again.
        if (handed_over && !released) handed_over = false;
        if (!handed_over) return holding ? Action::Hold : Action::Continue;
        text->event(event);
        std::fflush(stdout);
        return Action::Continue;
    });
    session.on_released([&](pid_t pid, bool stopped) {
        if (pid != hand_pid || !stopped) return;
        released = true;
        if (options.gdb) {
            fmt::print("process {} is left stopped at the probe, without probes; debug it with:\n  gdb -p {}\n", pid,
                       pid);
        } else {
            server = start_server(listener, hand_pid, hand_tid, options.all_stop);
            g_server = server.pid;
            std::string host = serve_host.empty() ? "127.0.0.1" : serve_host;
            std::string failed = server.pid > 0 ? wait_for_take_over(server)
                                                : std::string("cannot start the server: ") + std::strerror(errno);
            if (failed.empty()) {
                fmt::print("gdb server for process {} on {}:{}; connect with:\n  gdb -ex 'target remote {}:{}'\n",
                           pid, host, serve_port, host, serve_port);
            } else {
                fmt::print(stderr, "uprobe: {}; process {} is left stopped (kill -CONT {} resumes it)\n", failed,
                           pid, pid);
                server_failed = true;
            }
        }
        std::fflush(stdout);
    });
    session.on_hold([&](const Event& event, const HeldThread& held) {
        held_once = true;
        text->event(event);
        fmt::print("held: thread {} of process {} at {:#x}\nregisters:\n", held.tid, held.pid, held.regs.rip);
        print_registers(held.regs);
        fmt::print("backtrace:\n");
        print_backtrace(held);
        if (!event.args.empty()) fmt::print("args:\n");
        print_args(event);
        if (options.gdb || listener >= 0) {
            // Told once the process is detached (on_released): only then
            // can gdb attach.
            handed_over = true;
            hand_pid = held.pid;
            hand_tid = held.tid;
            std::fflush(stdout);
            return Release::DetachStopped;
        }
        for (;;) {
            fmt::print("(uprobe) ");
            std::fflush(stdout);
            std::string line;
            if (!std::getline(std::cin, line)) {
                fmt::print("\n");
                line = "detach";
            }
            std::istringstream words(line);
            std::string command;
            words >> command;
            if (command.empty()) continue;
            if (command == "regs") print_registers(held.regs);
            else if (command == "bt") print_backtrace(held);
            else if (command == "x") examine(held, words);
            else if (command == "p") {
                std::string name;
                words >> name;
                print_variable(event, held, name);
            } else if (command == "continue" || command == "c") {
                std::fflush(stdout);
                return Release::Resume;
            } else if (command == "detach" || command == "quit" || command == "q") {
                holding = false;
                session.stop();
                std::fflush(stdout);
                return Release::Detach;
            } else {
                fmt::print("unknown command '{}'; commands:\n{}", command, kHelp);
            }
        }
    });
    if (auto started = session.start(); !started) {
        g_session = nullptr;
        return report_error(started.error().message());
    }
    auto status = session.run();
    g_session = nullptr;
    std::fflush(stdout);
    if (listener >= 0) ::close(listener);
    if (server.pid > 0) {
        // Tracing is over; gdb may still be at work on the held process.
        std::string outcome = wait_for_server(server);
        g_server = 0;
        if (!outcome.empty()) return report_error(outcome);
    }
    if (server_failed) return 1;
    if (!status) return report_error(status.error().message());
    if (!held_once) return report_error("no matching hit before the traced processes ended");
    return 0;
}

}  // namespace uprobe::cli
