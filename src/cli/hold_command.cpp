#include "cli/hold_command.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
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

void request_stop(int) {
    if (auto* s = g_session.load()) s->stop();
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
    fmt::print("p: '{}' is not an arg of this probe; name it in the probe ('PROBE {}') to read it by its "
               "DWARF name\n",
               name, name);
}

const char* kHelp =
    "regs            the registers at the probe\n"
    "bt              the backtrace\n"
    "x ADDR [LEN]    LEN bytes of memory at ADDR (a number or $reg; LEN 64 by default)\n"
    "p NAME          an arg of the probe, or a register ($rdi)\n"
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
    pid_t serve_pid = 0, serve_tid = 0;  // --gdb-server: the held thread
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
        serve_port = static_cast<uint16_t>(*number);
    }
    bool holding = true;  // the next matching hit is held
    bool held_once = false;
    bool done = false;
    session.on_event([&](const Event&, const Registers&) { return holding && !done ? Action::Hold : Action::Continue; });
    session.on_hold([&](const Event& event, const HeldThread& held) {
        held_once = true;
        text->event(event);
        fmt::print("held: thread {} of process {} at {:#x}\nregisters:\n", held.tid, held.pid, held.regs.rip);
        print_registers(held.regs);
        fmt::print("backtrace:\n");
        print_backtrace(held);
        if (!event.args.empty()) fmt::print("args:\n");
        print_args(event);
        if (!options.gdb_server.empty()) {
            done = true;
            serve_pid = held.pid;
            serve_tid = held.tid;
            session.stop();
            return Release::DetachStopped;
        }
        if (options.gdb) {
            done = true;
            fmt::print("process {} is left stopped at the probe, without probes; debug it with:\n  gdb -p {}\n",
                       held.pid, held.pid);
            std::fflush(stdout);
            session.stop();
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
                done = true;
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
    if (!status) return report_error(status.error().message());
    if (!held_once) return report_error("no matching hit before the traced processes ended");
    if (serve_pid) {
        // The session has ended: the other processes run on untraced while
        // gdb has this one (see docs/global.md).
        auto served = serve_gdb(serve_pid, serve_tid, serve_host, serve_port, [&](uint16_t port) {
            std::string host = serve_host.empty() ? "127.0.0.1" : serve_host;
            fmt::print("gdb server for process {} on {}:{}; connect with:\n  gdb -ex 'target remote {}:{}'\n",
                       serve_pid, host, port, host, port);
            std::fflush(stdout);
        });
        if (!served) return report_error(served.error().message());
    }
    return 0;
}

}  // namespace uprobe::cli
