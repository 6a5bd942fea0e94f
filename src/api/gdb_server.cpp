// A GDB remote-serial-protocol stub for one stopped thread (gdb's "Remote
// Protocol" appendix): enough for `target remote` to read and write
// registers and memory, set software breakpoints, step, continue, and
// detach. The process must not be traced (Release::DetachStopped leaves it
// so); the stub becomes its tracer for the session.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "base/strings.hpp"
#include "base/unique_fd.hpp"
#include "proc/proc.hpp"
#include "proc/ptrace.hpp"
#include "uprobe/session.hpp"

namespace uprobe {
namespace {

constexpr uint8_t kInt3 = 0xcc;

std::string to_hex(const void* data, size_t size) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    auto* bytes = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < size; ++i) {
        out += digits[bytes[i] >> 4];
        out += digits[bytes[i] & 15];
    }
    return out;
}

bool from_hex(std::string_view text, std::vector<uint8_t>& out) {
    if (text.size() % 2) return false;
    for (size_t i = 0; i < text.size(); i += 2) {
        auto nibble = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        };
        int hi = nibble(text[i]), lo = nibble(text[i + 1]);
        if (hi < 0 || lo < 0) return false;
        out.push_back(static_cast<uint8_t>(hi << 4 | lo));
    }
    return true;
}

std::optional<uint64_t> hex_number(std::string_view text) {
    if (text.empty() || text.size() > 16) return std::nullopt;
    uint64_t value = 0;
    for (char c : text) {
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return std::nullopt;
        value = value << 4 | static_cast<uint64_t>(d);
    }
    return value;
}

// gdb's amd64 'g' layout without a target description: 16 general
// registers and rip (8 bytes), eflags and 6 segment registers (4 bytes).
// A shorter reply than gdb's full register file leaves the rest (x87,
// SSE) unavailable, which gdb accepts.
std::string registers_packet(const user_regs_struct& r) {
    const uint64_t wide[] = {r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8,
                             r.r9,  r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rip};
    const uint32_t narrow[] = {uint32_t(r.eflags), uint32_t(r.cs), uint32_t(r.ss), uint32_t(r.ds),
                               uint32_t(r.es),     uint32_t(r.fs), uint32_t(r.gs)};
    return to_hex(wide, sizeof wide) + to_hex(narrow, sizeof narrow);
}

void apply_registers(const std::vector<uint8_t>& bytes, user_regs_struct& r) {
    unsigned long long* wide[] = {&r.rax, &r.rbx, &r.rcx, &r.rdx, &r.rsi, &r.rdi, &r.rbp, &r.rsp, &r.r8,
                        &r.r9,  &r.r10, &r.r11, &r.r12, &r.r13, &r.r14, &r.r15, &r.rip};
    size_t at = 0;
    for (unsigned long long* reg : wide) {
        if (at + 8 > bytes.size()) return;
        std::memcpy(reg, bytes.data() + at, 8);
        at += 8;
    }
    if (at + 4 <= bytes.size()) {
        uint32_t flags;
        std::memcpy(&flags, bytes.data() + at, 4);
        r.eflags = flags;
    }
}

class Stub {
public:
    Stub(pid_t pid, pid_t tid, int client) : pid_(pid), tid_(tid), client_(client) {}

    // Serves until gdb detaches, kills, or hangs up.
    void serve() {
        for (;;) {
            auto packet = receive();
            if (!packet) return;
            if (!handle(*packet)) return;
        }
    }

private:
    std::optional<std::string> receive() {
        std::string data;
        for (;;) {
            char c;
            ssize_t n = ::read(client_, &c, 1);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return std::nullopt;
            if (c == 0x03) return std::string("\x03");  // ^C: already stopped
            if (c != '$') continue;                      // acks, noise
            data.clear();
            for (;;) {
                n = ::read(client_, &c, 1);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) return std::nullopt;
                if (c == '#') break;
                data += c;
            }
            char checksum[2];
            for (size_t got = 0; got < 2;) {
                n = ::read(client_, checksum + got, 2 - got);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) return std::nullopt;
                got += static_cast<size_t>(n);
            }
            if (ack_) (void)!::write(client_, "+", 1);
            return data;
        }
    }

    void send(const std::string& data) {
        unsigned sum = 0;
        for (unsigned char c : data) sum += c;
        char tail[4];
        std::snprintf(tail, sizeof tail, "#%02x", sum & 0xff);
        std::string packet = "$" + data + tail;
        for (size_t done = 0; done < packet.size();) {
            ssize_t n = ::write(client_, packet.data() + done, packet.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return;
            done += static_cast<size_t>(n);
        }
        if (ack_) {
            char c;
            while (::read(client_, &c, 1) < 0 && errno == EINTR) {}
        }
    }

    std::string stop_reply() {
        char text[64];
        std::snprintf(text, sizeof text, "T%02xthread:%x;", last_signal_ ? last_signal_ : SIGTRAP, tid_);
        return text;
    }

    // Runs the thread (step or continue) until its next stop; returns the
    // reply gdb waits for.
    std::string run(bool step) {
        int deliver = pending_signal_;
        pending_signal_ = 0;
        if (step) {
            // Stepping onto one of our int3s would report a stop inside it.
            if (!ptrace_ok(PTRACE_SINGLESTEP, deliver)) return "E01";
        } else {
            if (!ptrace_ok(PTRACE_CONT, deliver)) return "E01";
        }
        for (;;) {
            int status = 0;
            pid_t got = ::waitpid(tid_, &status, __WALL);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) return "X09";
            if (WIFEXITED(status)) return fmt_exit('W', WEXITSTATUS(status));
            if (WIFSIGNALED(status)) return fmt_exit('X', WTERMSIG(status));
            int signal = WSTOPSIG(status);
            int event = status >> 16;
            if (event == PTRACE_EVENT_STOP) {
                // Group-stop (SIGSTOP from elsewhere): keep going.
                if (!ptrace_ok(PTRACE_CONT, 0)) return "E01";
                continue;
            }
            if (event != 0) {
                if (!ptrace_ok(PTRACE_CONT, 0)) return "E01";
                continue;
            }
            if (signal == SIGTRAP) {
                auto regs = proc::get_regs(tid_);
                if (regs && !step && breakpoints_.count(regs->rip - 1)) (void)proc::set_rip(tid_, regs->rip - 1);
                last_signal_ = SIGTRAP;
                return stop_reply();
            }
            last_signal_ = signal;
            pending_signal_ = signal;
            return stop_reply();
        }
    }

    static std::string fmt_exit(char kind, int value) {
        char text[8];
        std::snprintf(text, sizeof text, "%c%02x", kind, value & 0xff);
        return text;
    }

    bool ptrace_ok(__ptrace_request request, int signal) {
        return ::ptrace(request, tid_, nullptr, reinterpret_cast<void*>(static_cast<intptr_t>(signal))) == 0;
    }

    void remove_breakpoints() {
        for (auto& [address, original] : breakpoints_) (void)proc::write_memory(pid_, address, &original, 1);
        breakpoints_.clear();
    }

    std::string read_auxv(std::string_view annex) {
        // qXfer:auxv:read::OFFSET,LENGTH
        auto comma = annex.find(',');
        auto offset = hex_number(annex.substr(0, comma));
        auto length = comma == std::string_view::npos ? std::nullopt : hex_number(annex.substr(comma + 1));
        if (!offset || !length) return "E01";
        std::ifstream in("/proc/" + std::to_string(pid_) + "/auxv", std::ios::binary);
        std::string auxv((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (*offset >= auxv.size()) return "l";
        std::string chunk = auxv.substr(*offset, *length);
        std::string out = (*offset + chunk.size() >= auxv.size()) ? "l" : "m";
        // Binary data, escaped: '#', '$', '}' and '*' as '}' then c ^ 0x20.
        for (char c : chunk) {
            if (c == '#' || c == '$' || c == '}' || c == '*') {
                out += '}';
                out += static_cast<char>(c ^ 0x20);
            } else {
                out += c;
            }
        }
        return out;
    }

    // Returns false when the session is over.
    bool handle(const std::string& packet) {
        if (packet == "\x03") {
            send(stop_reply());
            return true;
        }
        char kind = packet.empty() ? 0 : packet[0];
        std::string_view rest = std::string_view(packet).substr(packet.empty() ? 0 : 1);
        if (starts_with(packet, "qSupported")) {
            send("PacketSize=4000;QStartNoAckMode+;qXfer:auxv:read+");
        } else if (packet == "QStartNoAckMode") {
            send("OK");
            ack_ = false;
        } else if (packet == "?") {
            send(stop_reply());
        } else if (kind == 'H' || packet == "QThreadEvents:0") {
            send("OK");
        } else if (packet == "qC") {
            char text[32];
            std::snprintf(text, sizeof text, "QC%x", tid_);
            send(text);
        } else if (packet == "qAttached") {
            send("1");
        } else if (packet == "qfThreadInfo") {
            char text[32];
            std::snprintf(text, sizeof text, "m%x", tid_);
            send(text);
        } else if (packet == "qsThreadInfo") {
            send("l");
        } else if (starts_with(packet, "qXfer:auxv:read::")) {
            send(read_auxv(std::string_view(packet).substr(17)));
        } else if (kind == 'T') {
            send("OK");  // the one thread is alive
        } else if (packet == "g") {
            auto regs = proc::get_regs(tid_);
            send(regs ? registers_packet(*regs) : "E01");
        } else if (kind == 'G') {
            std::vector<uint8_t> bytes;
            auto regs = proc::get_regs(tid_);
            if (!regs || !from_hex(rest, bytes)) {
                send("E01");
            } else {
                apply_registers(bytes, *regs);
                send(proc::set_regs(tid_, *regs) ? "OK" : "E01");
            }
        } else if (kind == 'm') {
            auto comma = rest.find(',');
            auto address = hex_number(rest.substr(0, comma));
            auto length = comma == std::string_view::npos ? std::nullopt : hex_number(rest.substr(comma + 1));
            if (!address || !length || *length > 0x4000) {
                send("E01");
            } else {
                std::vector<uint8_t> bytes(*length);
                if (!proc::read_memory(pid_, *address, bytes.data(), bytes.size())) {
                    send("E01");
                } else {
                    // gdb sees the program's bytes, not our breakpoints.
                    for (auto& [at, original] : breakpoints_)
                        if (at >= *address && at < *address + *length) bytes[at - *address] = original;
                    send(to_hex(bytes.data(), bytes.size()));
                }
            }
        } else if (kind == 'M') {
            auto comma = rest.find(','), colon = rest.find(':');
            auto address = hex_number(rest.substr(0, comma));
            std::vector<uint8_t> bytes;
            if (!address || colon == std::string_view::npos || !from_hex(rest.substr(colon + 1), bytes)) send("E01");
            else send(proc::write_memory(pid_, *address, bytes.data(), bytes.size()) ? "OK" : "E01");
        } else if (starts_with(packet, "Z0,") || starts_with(packet, "z0,")) {
            std::string_view args = std::string_view(packet).substr(3);
            auto address = hex_number(args.substr(0, args.find(',')));
            if (!address) {
                send("E01");
            } else if (kind == 'Z') {
                uint8_t original = 0;
                if (breakpoints_.count(*address)) {
                    send("OK");
                } else if (!proc::read_memory(pid_, *address, &original, 1) ||
                           !proc::write_memory(pid_, *address, &kInt3, 1)) {
                    send("E01");
                } else {
                    breakpoints_[*address] = original;
                    send("OK");
                }
            } else {
                auto it = breakpoints_.find(*address);
                if (it != breakpoints_.end()) {
                    (void)proc::write_memory(pid_, *address, &it->second, 1);
                    breakpoints_.erase(it);
                }
                send("OK");
            }
        } else if (kind == 'c' || kind == 's') {
            send(run(kind == 's'));
        } else if (kind == 'C' || kind == 'S') {
            auto signal = hex_number(rest.substr(0, rest.find(';')));
            pending_signal_ = signal ? static_cast<int>(*signal) : 0;
            send(run(kind == 'S'));
        } else if (kind == 'D') {
            remove_breakpoints();
            send("OK");
            (void)proc::detach(tid_, pending_signal_);
            // End the group-stop DetachStopped started: the program runs on.
            ::kill(pid_, SIGCONT);
            detached_ = true;
            return false;
        } else if (kind == 'k' || starts_with(packet, "vKill")) {
            remove_breakpoints();
            ::kill(pid_, SIGKILL);
            if (kind != 'k') send("OK");
            detached_ = true;
            return false;
        } else {
            send("");  // not supported: gdb falls back or does without
        }
        return true;
    }

public:
    ~Stub() {
        // A hang-up without detach: leave the program running, unharmed.
        if (!detached_) {
            remove_breakpoints();
            (void)proc::detach(tid_, 0);
            ::kill(pid_, SIGCONT);
        }
    }

private:
    pid_t pid_, tid_;
    int client_;
    bool ack_ = true;
    bool detached_ = false;
    int last_signal_ = SIGTRAP;
    int pending_signal_ = 0;
    std::map<uint64_t, uint8_t> breakpoints_;
};

}  // namespace

Result<void> serve_gdb(pid_t pid, pid_t tid, const std::string& host, uint16_t port,
                       const std::function<void(uint16_t port)>& listening) {
    in_addr address{};
    if (::inet_pton(AF_INET, host.empty() ? "127.0.0.1" : host.c_str(), &address) != 1)
        return Error("--gdb-server: '" + host + "' is not an IPv4 address");
    UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener.valid()) return errno_error("--gdb-server: socket", errno);
    int one = 1;
    ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in where{};
    where.sin_family = AF_INET;
    where.sin_addr = address;
    where.sin_port = htons(port);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&where), sizeof where) != 0)
        return errno_error("--gdb-server: bind to port " + std::to_string(port), errno);
    if (::listen(listener.get(), 1) != 0) return errno_error("--gdb-server: listen", errno);
    socklen_t size = sizeof where;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&where), &size);
    // The process sits in a group-stop: seize it and turn that into a
    // ptrace stop we can inspect from (ptrace(2), PTRACE_INTERRUPT).
    UPROBE_CHECK(proc::seize(tid, 0).context("--gdb-server"));
    UPROBE_CHECK(proc::interrupt(tid).context("--gdb-server"));
    for (;;) {
        int status = 0;
        pid_t got = ::waitpid(tid, &status, __WALL);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return errno_error("--gdb-server: waiting for " + std::to_string(tid), errno);
        if (!WIFSTOPPED(status)) return Error("--gdb-server: process " + std::to_string(pid) + " exited");
        break;
    }
    if (listening) listening(ntohs(where.sin_port));
    UniqueFd client;
    while (!client.valid()) {
        client.reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!client.valid() && errno != EINTR) {
            (void)proc::detach(tid, 0);
            return errno_error("--gdb-server: accept", errno);
        }
    }
    ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Stub stub(pid, tid, client.get());
    stub.serve();
    return {};
}

}  // namespace uprobe
