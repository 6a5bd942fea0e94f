// A GDB remote-serial-protocol stub for one stopped thread (gdb's "Remote
// Protocol" appendix): enough for `target remote` to read and write
// registers and memory, set software breakpoints, step, continue, and
// detach. The process must not be traced (Release::DetachStopped leaves it
// so); the stub becomes its tracer for the session.
//
// By default gdb sees one thread, the held one, and the other threads run:
// the stub traces them too, only so that one of them reaching a breakpoint
// gdb set is stepped over it (gdb's breakpoints apply to the held thread)
// and so that they can be stopped for a clean detach. With all_stop gdb
// sees every thread, all-stop style: all stopped while gdb has control
// (registers of any, `thread N`), all resumed by a continue, all stopped
// again when one of them stops (a breakpoint of gdb's in any thread, a
// signal of the held one, ^C); a step moves only the thread stepped.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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
    Stub(pid_t pid, pid_t tid, const GdbServerOptions& options)
        : pid_(pid), tid_(tid), all_stop_(options.all_stop), quit_fd_(options.quit_fd), current_(tid) {}

    // Takes the process over from its group-stop: the held thread (and, by
    // default, every other thread) seized and stopped; then, by default,
    // the others resumed. Called before gdb connects.
    Result<void> take_over() {
        // TRACECLONE: a thread the process starts meanwhile is ours too, so
        // it can be stepped over gdb's breakpoints (or kept stopped).
        UPROBE_CHECK(proc::seize(tid_, PTRACE_O_TRACECLONE));
        taken_ = true;
        UPROBE_CHECK(proc::interrupt(tid_));
        if (!wait_stopped(tid_)) {
            held_gone_ = true;
            return Error("process " + std::to_string(pid_) + " exited");
        }
        for (bool grew = true; grew;) {
            grew = false;
            auto tids = proc::list_threads(pid_);
            if (!tids) break;
            for (pid_t t : *tids) {
                if (t == tid_ || others_.count(t) || !proc::seize(t, PTRACE_O_TRACECLONE)) continue;
                (void)proc::interrupt(t);
                others_[t] = Other{};
                grew = true;
            }
        }
        for (auto it = others_.begin(); it != others_.end();) {
            it->second.stopped = true;
            if (wait_stopped(it->first)) ++it;
            else it = others_.erase(it);
        }
        // all_stop: they stay stopped until gdb continues; the group-stop
        // ends at the detach.
        if (all_stop_) return {};
        // Ends the group-stop, so the others run once resumed and nothing
        // puts them back into it when we detach. The SIGCONT itself is then
        // reported by whichever thread takes it; it is passed on unseen.
        sigcont_expected_ = true;
        ::kill(pid_, SIGCONT);
        for (auto& [t, other] : others_) resume_other(t, 0);
        return {};
    }

    // Serves until gdb detaches, kills or hangs up, quit_fd fires, or the
    // process ends.
    void serve(int client) {
        client_ = client;
        int flags = ::fcntl(client_, F_GETFL);
        ::fcntl(client_, F_SETFL, flags | O_NONBLOCK);
        for (;;) {
            while (auto packet = next_packet())
                if (!handle(*packet)) return;
            if (finished_) return;
            pollfd fds[2] = {{client_, POLLIN, 0}, {quit_fd_, POLLIN, 0}};
            // Stops of traced threads are not pollable (waitpid only), so
            // while any of them runs we look every 2 ms.
            int n = ::poll(fds, quit_fd_ >= 0 ? 2 : 1, anything_running() ? 2 : -1);
            if (n < 0 && errno != EINTR) return;
            if (n > 0 && fds[1].revents) return;
            if (n > 0 && fds[0].revents && !fill()) return;
            reap();
        }
    }

    bool finished() const { return finished_; }

    // Whether a traced thread runs (its stops are only seen by reap()).
    bool anything_running() const {
        if (held_running_ || awaiting_) return true;
        for (const auto& [t, other] : others_)
            if (!other.stopped) return true;
        return false;
    }

    // Handles whatever the traced threads reported (before gdb connects,
    // too: the others must not sit in a signal stop meanwhile).
    void reap() {
        for (;;) {
            int status = 0;
            // __WNOTHREAD: only our own tracees, never another thread's.
            pid_t t = ::waitpid(-1, &status, __WALL | __WNOTHREAD | WNOHANG);
            if (t <= 0) return;
            if (t == tid_) on_held_status(status);
            else on_other_status(t, status);
            if (finished_) return;
        }
    }

    ~Stub() {
        // Whatever ended the session, the program is left running, unharmed:
        // gdb's breakpoints out, every thread detached.
        if (!killed_ && taken_) release();
    }

private:
    struct Other {
        bool stopped = false;
        int pending = 0;  // a signal to deliver on detach
    };

    // Waits for `t` to stop (after seize + interrupt); false when it exited.
    bool wait_stopped(pid_t t) {
        for (;;) {
            int status = 0;
            pid_t got = ::waitpid(t, &status, __WALL);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0 || !WIFSTOPPED(status)) return false;
            return true;
        }
    }

    void resume_other(pid_t t, int signal) {
        if (::ptrace(PTRACE_CONT, t, nullptr, reinterpret_cast<void*>(static_cast<intptr_t>(signal))) == 0)
            others_[t].stopped = false;
    }

    // Reads what gdb sent; false on hang-up.
    bool fill() {
        char buffer[4096];
        for (;;) {
            ssize_t n = ::read(client_, buffer, sizeof buffer);
            if (n > 0) {
                input_.append(buffer, static_cast<size_t>(n));
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
            return false;
        }
    }

    // The next complete packet in the input, or ^C as "\x03".
    std::optional<std::string> next_packet() {
        for (;;) {
            size_t at = input_.find_first_of("$\x03");
            if (at == std::string::npos) {
                input_.clear();  // acks, noise
                return std::nullopt;
            }
            if (input_[at] == '\x03') {
                input_.erase(0, at + 1);
                return std::string("\x03");
            }
            size_t hash = input_.find('#', at);
            if (hash == std::string::npos || hash + 2 >= input_.size()) {
                input_.erase(0, at);
                return std::nullopt;  // incomplete
            }
            std::string data = input_.substr(at + 1, hash - at - 1);
            input_.erase(0, hash + 3);
            if (ack_) write_all("+");
            return data;
        }
    }

    void write_all(const std::string& bytes) {
        for (size_t done = 0; done < bytes.size();) {
            ssize_t n = ::write(client_, bytes.data() + done, bytes.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                pollfd out{client_, POLLOUT, 0};
                ::poll(&out, 1, 1000);
                continue;
            }
            if (n <= 0) return;
            done += static_cast<size_t>(n);
        }
    }

    void send(const std::string& data) {
        unsigned sum = 0;
        for (unsigned char c : data) sum += c;
        char tail[4];
        std::snprintf(tail, sizeof tail, "#%02x", sum & 0xff);
        // gdb's '+' acknowledgements are skipped as noise by next_packet.
        write_all("$" + data + tail);
    }

    std::string stop_reply() {
        char text[64];
        std::snprintf(text, sizeof text, "T%02xthread:%x;", last_signal_ ? last_signal_ : SIGTRAP, current_);
        return text;
    }

    static std::string fmt_thread(pid_t t) {
        char text[24];
        std::snprintf(text, sizeof text, ",%x", t);
        return text;
    }

    static std::string fmt_exit(char kind, int value) {
        char text[8];
        std::snprintf(text, sizeof text, "%c%02x", kind, value & 0xff);
        return text;
    }

    bool resume_held(int signal) {
        auto request = stepping_ ? PTRACE_SINGLESTEP : PTRACE_CONT;
        if (::ptrace(request, tid_, nullptr, reinterpret_cast<void*>(static_cast<intptr_t>(signal))) != 0) return false;
        held_running_ = true;
        return true;
    }

    // Step or continue: the reply comes from reap() when the thread stops.
    void run(bool step) {
        if (all_stop_) {
            pid_t thread = cont_ > 0 && (cont_ == tid_ || others_.count(cont_)) ? cont_ : current_;
            if (step && thread != tid_) {
                // Only this thread moves.
                Other& other = others_[thread];
                if (::ptrace(PTRACE_SINGLESTEP, thread, nullptr,
                             reinterpret_cast<void*>(static_cast<intptr_t>(std::exchange(other.pending, 0)))) != 0) {
                    send("E01");
                    return;
                }
                other.stopped = false;
                stepping_other_ = thread;
                awaiting_ = true;
                return;
            }
            if (!step)
                for (auto& [t, other] : others_) resume_other(t, std::exchange(other.pending, 0));
        }
        int deliver = pending_signal_;
        pending_signal_ = 0;
        stepping_ = step;
        if (!resume_held(deliver)) {
            send("E01");
            return;
        }
        awaiting_ = true;
    }

    void stopped_held(int signal) {
        held_running_ = false;
        report_stop(tid_, signal);
    }

    // The stop reply gdb waits for; all_stop: every other thread stopped first.
    void report_stop(pid_t thread, int signal) {
        awaiting_ = false;
        last_signal_ = signal;
        current_ = thread;
        general_ = 0;
        stop_all();
        send(stop_reply());
    }

    // all_stop: interrupts every running thread and waits until each has
    // stopped; a trap at one of gdb's breakpoints is undone (rip back,
    // nothing delivered: it traps again when resumed), other signals wait
    // to be delivered at the next resume.
    void stop_all() {
        if (!all_stop_) return;
        if (held_running_) (void)proc::interrupt(tid_);
        for (auto& [t, other] : others_)
            if (!other.stopped) (void)proc::interrupt(t);
        auto undo_trap = [&](pid_t t, int& signal) {
            if (signal != SIGTRAP) return;
            auto regs = proc::get_regs(t);
            if (regs && breakpoints_.count(regs->rip - 1)) (void)proc::set_rip(t, regs->rip - 1);
            signal = 0;  // a trap of ours (breakpoint or step): nothing to deliver
        };
        for (;;) {
            bool waiting = held_running_ && !held_gone_;
            for (auto& [t, other] : others_) waiting |= !other.stopped;
            if (!waiting) return;
            int status = 0;
            pid_t t = ::waitpid(-1, &status, __WALL | __WNOTHREAD);
            if (t < 0 && errno == EINTR) continue;
            if (t < 0) return;
            bool gone = WIFEXITED(status) || WIFSIGNALED(status);
            int event = status >> 16;
            int signal = gone || event != 0 ? 0 : WSTOPSIG(status);
            if (t == tid_) {
                held_running_ = false;
                held_gone_ |= gone;
                undo_trap(t, signal);
                if (signal) pending_signal_ = signal;
                continue;
            }
            if (gone) {
                others_.erase(t);
                continue;
            }
            if (event == PTRACE_EVENT_CLONE)
                if (auto child = proc::event_message(t)) others_[*child];  // its first stop comes too
            Other& other = others_[t];
            other.stopped = true;
            undo_trap(t, signal);
            if (signal) other.pending = signal;
        }
    }

    pid_t registers_thread() const {
        if (!all_stop_) return tid_;
        if (general_ > 0 && (general_ == tid_ || others_.count(general_))) return general_;
        return current_;
    }

    void on_held_status(int status) {
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            // The held thread is gone: so is the process, or gdb's thread.
            if (awaiting_) send(WIFEXITED(status) ? fmt_exit('W', WEXITSTATUS(status)) : fmt_exit('X', WTERMSIG(status)));
            awaiting_ = false;
            held_running_ = false;
            held_gone_ = true;
            finished_ = true;
            return;
        }
        int signal = WSTOPSIG(status);
        int event = status >> 16;
        if (event == PTRACE_EVENT_CLONE) {
            if (auto child = proc::event_message(tid_)) others_[*child];
            (void)resume_held(0);
        } else if (event == PTRACE_EVENT_STOP) {
            if (interrupt_requested_) {
                interrupt_requested_ = false;
                stopped_held(SIGINT);
            } else {
                (void)resume_held(0);  // a group-stop from elsewhere: not gdb's business
            }
        } else if (event != 0) {
            (void)resume_held(0);
        } else if (signal == SIGCONT && sigcont_expected_) {
            sigcont_expected_ = false;
            (void)resume_held(SIGCONT);
        } else if (signal == SIGTRAP) {
            auto regs = proc::get_regs(tid_);
            if (regs && !stepping_ && breakpoints_.count(regs->rip - 1)) (void)proc::set_rip(tid_, regs->rip - 1);
            stopped_held(SIGTRAP);
        } else {
            pending_signal_ = signal;
            stopped_held(signal);
        }
    }

    void on_other_status(pid_t t, int status) {
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            others_.erase(t);
            return;
        }
        Other& other = others_[t];  // a new thread may report before its creator
        other.stopped = true;
        int signal = WSTOPSIG(status);
        int event = status >> 16;
        if (all_stop_) {
            on_other_status_all_stop(t, signal, event);
            return;
        }
        if (event == PTRACE_EVENT_CLONE) {
            if (auto child = proc::event_message(t)) others_[*child];
            resume_other(t, 0);
        } else if (event != 0) {
            // A new thread's first stop, or a group-stop: with all_stop the
            // new thread waits with the others; otherwise it runs.
            if (!all_stop_) resume_other(t, 0);
        } else if (signal == SIGCONT && sigcont_expected_) {
            sigcont_expected_ = false;
            resume_other(t, SIGCONT);
        } else if (signal == SIGTRAP) {
            auto regs = proc::get_regs(t);
            if (regs && breakpoints_.count(regs->rip - 1)) step_over(t, regs->rip - 1);
            else resume_other(t, SIGTRAP);
        } else {
            resume_other(t, signal);
        }
    }

    // all_stop: the other threads run only while gdb waits for a stop.
    void on_other_status_all_stop(pid_t t, int signal, int event) {
        const bool stepped = t == stepping_other_;
        if (event == PTRACE_EVENT_CLONE) {
            if (auto child = proc::event_message(t)) others_[*child];
            if (stepped) {
                if (::ptrace(PTRACE_SINGLESTEP, t, nullptr, nullptr) == 0) others_[t].stopped = false;
            } else if (awaiting_) {
                resume_other(t, 0);
            }
            return;
        }
        if (event != 0) {
            // A new thread's first stop, or a group-stop: it runs when the others do.
            if (awaiting_ && !stepped && stepping_other_ == 0) resume_other(t, 0);
            return;
        }
        if (signal == SIGTRAP) {
            auto regs = proc::get_regs(t);
            const bool at_breakpoint = !stepped && regs && breakpoints_.count(regs->rip - 1);
            if (stepped || at_breakpoint) {
                if (at_breakpoint) (void)proc::set_rip(t, regs->rip - 1);
                stepping_other_ = 0;
                report_stop(t, SIGTRAP);
                return;
            }
        }
        if (stepped) {
            // A signal before the step: delivered with it.
            if (::ptrace(PTRACE_SINGLESTEP, t, nullptr, reinterpret_cast<void*>(static_cast<intptr_t>(signal))) == 0)
                others_[t].stopped = false;
            return;
        }
        resume_other(t, signal);  // the program's own signals are not gdb's business here
    }

    // Runs thread `t` (not gdb's) over the breakpoint at `address`: the
    // original byte back, one step, the int3 again. Meanwhile the held
    // thread, if running, may pass that address unnoticed.
    void step_over(pid_t t, uint64_t address) {
        const uint8_t original = breakpoints_[address];
        (void)proc::write_memory(pid_, address, &original, 1);
        (void)proc::set_rip(t, address);
        int signal = 0;
        bool alive = true;
        for (;;) {
            if (::ptrace(PTRACE_SINGLESTEP, t, nullptr, reinterpret_cast<void*>(static_cast<intptr_t>(signal))) != 0) break;
            int status = 0;
            pid_t got;
            while ((got = ::waitpid(t, &status, __WALL)) < 0 && errno == EINTR) {}
            if (got != t || WIFEXITED(status) || WIFSIGNALED(status)) {
                alive = false;
                break;
            }
            // A signal that arrives first is delivered with the step (its
            // handler runs; the thread comes back to the breakpoint later).
            signal = (status >> 16) == 0 && WSTOPSIG(status) != SIGTRAP ? WSTOPSIG(status) : 0;
            if (signal == 0 && (status >> 16) == 0) break;  // stepped
        }
        if (breakpoints_.count(address)) (void)proc::write_memory(pid_, address, &kInt3, 1);
        if (alive) resume_other(t, 0);
        else others_.erase(t);
    }

    // Stops every thread we run, takes gdb's breakpoints out and detaches;
    // the group-stop (all_stop) ends too.
    void release() {
        std::map<uint64_t, uint8_t> removed = breakpoints_;
        remove_breakpoints();
        if (held_running_ && !held_gone_) (void)proc::interrupt(tid_);
        for (auto& [t, other] : others_)
            if (!other.stopped) (void)proc::interrupt(t);
        auto rewind_if_ours = [&](pid_t t, int& signal) {
            if (signal != SIGTRAP) return;
            if ((t == tid_ && stepping_) || t == stepping_other_) {
                signal = 0;  // the end of gdb's step
                return;
            }
            auto regs = proc::get_regs(t);
            if (regs && removed.count(regs->rip - 1)) {
                (void)proc::set_rip(t, regs->rip - 1);
                signal = 0;  // our trap, not the program's
            }
        };
        for (;;) {
            bool waiting = held_running_ && !held_gone_;
            for (auto& [t, other] : others_) waiting |= !other.stopped;
            if (!waiting) break;
            int status = 0;
            pid_t t = ::waitpid(-1, &status, __WALL | __WNOTHREAD);
            if (t < 0 && errno == EINTR) continue;
            if (t < 0) break;
            bool gone = WIFEXITED(status) || WIFSIGNALED(status);
            int signal = gone || (status >> 16) != 0 ? 0 : WSTOPSIG(status);
            if (signal == SIGCONT && sigcont_expected_) signal = 0;
            if (t == tid_) {
                held_running_ = false;
                held_gone_ |= gone;
                rewind_if_ours(t, signal);
                if (signal) pending_signal_ = signal;
                continue;
            }
            if (gone) {
                others_.erase(t);
                continue;
            }
            Other& other = others_[t];
            if ((status >> 16) == PTRACE_EVENT_CLONE)
                if (auto child = proc::event_message(t)) others_[*child];
            other.stopped = true;
            rewind_if_ours(t, signal);
            if (signal) other.pending = signal;
        }
        for (auto& [t, other] : others_) (void)proc::detach(t, other.pending);
        others_.clear();
        if (!held_gone_) (void)proc::detach(tid_, pending_signal_);
        ::kill(pid_, SIGCONT);
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
            if (held_running_) {
                interrupt_requested_ = true;
                (void)proc::interrupt(tid_);
            } else if (!awaiting_) {
                send(stop_reply());
            }
            return true;
        }
        if (awaiting_) return true;  // all-stop protocol: nothing else until the stop reply
        char kind = packet.empty() ? 0 : packet[0];
        std::string_view rest = std::string_view(packet).substr(packet.empty() ? 0 : 1);
        if (starts_with(packet, "qSupported")) {
            send("PacketSize=4000;QStartNoAckMode+;qXfer:auxv:read+");
        } else if (packet == "QStartNoAckMode") {
            send("OK");
            ack_ = false;
        } else if (packet == "?") {
            send(stop_reply());
        } else if (kind == 'H') {
            // Hg: whose registers; Hc: which thread a step moves. -1 or 0: any.
            pid_t thread = 0;
            if (packet.size() > 2 && packet[2] != '-')
                if (auto id = hex_number(std::string_view(packet).substr(2))) thread = static_cast<pid_t>(*id);
            if (packet.size() > 1 && packet[1] == 'g') general_ = thread;
            if (packet.size() > 1 && packet[1] == 'c') cont_ = thread;
            send("OK");
        } else if (packet == "QThreadEvents:0") {
            send("OK");
        } else if (packet == "qC") {
            char text[32];
            std::snprintf(text, sizeof text, "QC%x", current_);
            send(text);
        } else if (packet == "qAttached") {
            send("1");
        } else if (packet == "qfThreadInfo") {
            char text[32];
            std::snprintf(text, sizeof text, "m%x", tid_);
            std::string list = text;
            for (const auto& [t, other] : others_)
                if (all_stop_) list += fmt_thread(t);
            send(list);
        } else if (packet == "qsThreadInfo") {
            send("l");
        } else if (starts_with(packet, "qXfer:auxv:read::")) {
            send(read_auxv(std::string_view(packet).substr(17)));
        } else if (kind == 'T') {
            auto id = hex_number(rest);
            bool known = id && (pid_t(*id) == tid_ || (all_stop_ && others_.count(pid_t(*id))));
            send(known ? "OK" : "E01");
        } else if (packet == "g") {
            auto regs = proc::get_regs(registers_thread());
            send(regs ? registers_packet(*regs) : "E01");
        } else if (kind == 'G') {
            std::vector<uint8_t> bytes;
            auto regs = proc::get_regs(registers_thread());
            if (!regs || !from_hex(rest, bytes)) {
                send("E01");
            } else {
                apply_registers(bytes, *regs);
                send(proc::set_regs(registers_thread(), *regs) ? "OK" : "E01");
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
            run(kind == 's');
        } else if (kind == 'C' || kind == 'S') {
            auto signal = hex_number(rest.substr(0, rest.find(';')));
            int deliver = signal ? static_cast<int>(*signal) : 0;
            pid_t thread = all_stop_ && cont_ > 0 && others_.count(cont_) ? cont_ : tid_;
            if (thread == tid_) pending_signal_ = deliver;
            else others_[thread].pending = deliver;
            run(kind == 'S');
        } else if (kind == 'D') {
            send("OK");
            return false;  // the destructor detaches
        } else if (kind == 'k' || starts_with(packet, "vKill")) {
            remove_breakpoints();
            ::kill(pid_, SIGKILL);
            if (kind != 'k') send("OK");
            killed_ = true;
            return false;
        } else {
            send("");  // not supported: gdb falls back or does without
        }
        return true;
    }

    pid_t pid_, tid_;
    int client_ = -1;
    bool all_stop_;
    int quit_fd_;
    std::string input_;
    bool ack_ = true;
    bool killed_ = false;
    bool taken_ = false;
    bool finished_ = false;
    bool held_running_ = false;
    bool awaiting_ = false;     // gdb waits for a stop reply
    pid_t current_;             // the thread of the last stop reply
    pid_t general_ = 0;         // Hg (0: current_)
    pid_t cont_ = 0;            // Hc (0: current_)
    pid_t stepping_other_ = 0;  // all_stop: a thread other than the held one being stepped
    bool held_gone_ = false;
    bool stepping_ = false;
    bool interrupt_requested_ = false;
    bool sigcont_expected_ = false;
    int last_signal_ = SIGTRAP;
    int pending_signal_ = 0;
    std::map<uint64_t, uint8_t> breakpoints_;
    std::map<pid_t, Other> others_;  // the process's other threads we trace
};

}  // namespace

Result<int> listen_for_gdb(const std::string& host, uint16_t port, uint16_t* bound) {
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
    if (bound) *bound = ntohs(where.sin_port);
    return listener.release();
}

Result<void> serve_gdb_on(int listener, pid_t pid, pid_t tid, const GdbServerOptions& options) {
    Stub stub(pid, tid, options);
    UPROBE_CHECK(stub.take_over().context("--gdb-server"));
    if (options.taken_over) options.taken_over();
    UniqueFd client;
    while (!client.valid()) {
        pollfd fds[2] = {{listener, POLLIN, 0}, {options.quit_fd, POLLIN, 0}};
        int n = ::poll(fds, options.quit_fd >= 0 ? 2 : 1, stub.anything_running() ? 2 : -1);
        stub.reap();
        if (stub.finished()) return Error("--gdb-server: process " + std::to_string(pid) + " exited");
        if (n == 0 || (n < 0 && errno == EINTR)) continue;
        if (n < 0) return errno_error("--gdb-server: poll", errno);
        if (fds[1].revents) return {};  // quit before gdb came: the stub lets go
        client.reset(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
        if (!client.valid() && errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            return errno_error("--gdb-server: accept", errno);
    }
    int one = 1;
    ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    stub.serve(client.get());
    return {};
}

Result<void> serve_gdb(pid_t pid, pid_t tid, const std::string& host, uint16_t port,
                       const std::function<void(uint16_t port)>& listening, const GdbServerOptions& options) {
    uint16_t bound = 0;
    UPROBE_TRY(int fd, listen_for_gdb(host, port, &bound));
    UniqueFd listener(fd);
    if (listening) listening(bound);
    return serve_gdb_on(listener.get(), pid, tid, options);
}

}  // namespace uprobe
