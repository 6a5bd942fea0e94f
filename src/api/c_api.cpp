// The C ABI (uprobe/uprobe.h) over uprobe::Session. No exception or C++
// type crosses it.
#include "uprobe/uprobe.h"

#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "proc/proc.hpp"
#include "uprobe/session.hpp"

static_assert(sizeof(uprobe_regs) == sizeof(uprobe::Registers));

struct uprobe_session {
    uprobe::Session session;
    std::string error;
    uprobe_event_fn event_fn = nullptr;
    void* event_user = nullptr;
    uprobe_hold_fn hold_fn = nullptr;
    void* hold_user = nullptr;
};

namespace {

uprobe_status fail(uprobe_session* s, const uprobe::Error& e, uprobe_status status) {
    s->error = e.message();
    return status;
}

// The event in C terms; the strings point into `event`.
struct CEvent {
    uprobe_event event{};
    std::vector<uprobe_arg> args;
    explicit CEvent(const uprobe::Event& e) {
        for (const auto& a : e.args) {
            uprobe_arg c{};
            c.name = a.name.c_str();
            c.i = a.value.i;
            c.u = a.value.u;
            c.f = a.value.f;
            c.text = a.value.text.c_str();
            switch (a.value.kind) {
            case uprobe::Value::Kind::Signed: c.kind = UPROBE_VALUE_SIGNED; break;
            case uprobe::Value::Kind::Unsigned: c.kind = UPROBE_VALUE_UNSIGNED; break;
            case uprobe::Value::Kind::Hex: c.kind = UPROBE_VALUE_HEX; break;
            case uprobe::Value::Kind::Float: c.kind = UPROBE_VALUE_FLOAT; break;
            case uprobe::Value::Kind::Bool: c.kind = UPROBE_VALUE_BOOL; break;
            case uprobe::Value::Kind::String: c.kind = UPROBE_VALUE_STRING; break;
            case uprobe::Value::Kind::Text: c.kind = UPROBE_VALUE_TEXT; break;
            case uprobe::Value::Kind::Error: c.kind = UPROBE_VALUE_ERROR; break;
            }
            args.push_back(c);
        }
        event.probe_id = e.probe_id;
        event.probe = e.probe.c_str();
        event.pid = e.pid;
        event.tid = e.tid;
        event.ts_ns = e.ts_ns;
        event.comm = e.comm.c_str();
        event.addr = e.addr;
        event.is_return = e.is_return;
        event.nargs = args.size();
        event.args = args.data();
    }
};

uprobe_regs to_c(const uprobe::Registers& regs) {
    uprobe_regs out;
    std::memcpy(&out, &regs, sizeof out);
    return out;
}

}  // namespace

extern "C" {

int uprobe_api_version(void) { return uprobe::api_version(); }

uprobe_session* uprobe_session_new(void) { return new (std::nothrow) uprobe_session; }

void uprobe_session_free(uprobe_session* session) { delete session; }

const char* uprobe_last_error(const uprobe_session* session) { return session ? session->error.c_str() : "no session"; }

uprobe_status uprobe_add_probe(uprobe_session* s, const char* spec, uint32_t* id) {
    if (!spec) return fail(s, uprobe::Error("no probe spec"), UPROBE_ERR_USAGE);
    auto added = s->session.add_probe(spec);
    if (!added) return fail(s, added.error(), UPROBE_ERR_USAGE);
    if (id) *id = *added;
    return UPROBE_OK;
}

uprobe_status uprobe_remove_probe(uprobe_session* s, uint32_t id) {
    if (auto removed = s->session.remove_probe(id); !removed) return fail(s, removed.error(), UPROBE_ERR_USAGE);
    return UPROBE_OK;
}

uprobe_status uprobe_launch(uprobe_session* s, const char* const* argv) {
    std::vector<std::string> command;
    for (; argv && *argv; ++argv) command.emplace_back(*argv);
    if (auto added = s->session.add_target(uprobe::Target::launch(command)); !added)
        return fail(s, added.error(), UPROBE_ERR_USAGE);
    return UPROBE_OK;
}

uprobe_status uprobe_attach(uprobe_session* s, pid_t pid) {
    if (auto added = s->session.add_target(uprobe::Target::attach(pid)); !added)
        return fail(s, added.error(), UPROBE_ERR_USAGE);
    return UPROBE_OK;
}

uprobe_status uprobe_global(uprobe_session* s, const char* comm_glob) {
    uprobe::ProcessFilter filter;
    if (comm_glob) filter.comm = comm_glob;
    if (auto added = s->session.add_target(uprobe::Target::global(filter)); !added)
        return fail(s, added.error(), UPROBE_ERR_USAGE);
    return UPROBE_OK;
}

uprobe_status uprobe_set_condition(uprobe_session* s, const char* expression) {
    if (auto set = s->session.set_condition(expression ? expression : ""); !set)
        return fail(s, set.error(), UPROBE_ERR_USAGE);
    return UPROBE_OK;
}

void uprobe_on_event(uprobe_session* s, uprobe_event_fn callback, void* user) {
    s->event_fn = callback;
    s->event_user = user;
    if (!callback) {
        s->session.on_event(nullptr);
        return;
    }
    s->session.on_event([s](const uprobe::Event& e, const uprobe::Registers& regs) {
        CEvent c(e);
        uprobe_regs r = to_c(regs);
        switch (s->event_fn(&c.event, &r, s->event_user)) {
        case UPROBE_HOLD: return uprobe::Action::Hold;
        case UPROBE_DETACH: return uprobe::Action::Detach;
        default: return uprobe::Action::Continue;
        }
    });
}

void uprobe_on_hold(uprobe_session* s, uprobe_hold_fn callback, void* user) {
    s->hold_fn = callback;
    s->hold_user = user;
    if (!callback) {
        s->session.on_hold(nullptr);
        return;
    }
    s->session.on_hold([s](const uprobe::Event& e, const uprobe::HeldThread& held) {
        CEvent c(e);
        uprobe_regs r = to_c(held.regs);
        switch (s->hold_fn(&c.event, &r, s->hold_user)) {
        case UPROBE_RELEASE_DETACH: return uprobe::Release::Detach;
        case UPROBE_RELEASE_DETACH_STOPPED: return uprobe::Release::DetachStopped;
        default: return uprobe::Release::Resume;
        }
    });
}

uprobe_status uprobe_start(uprobe_session* s) {
    if (auto started = s->session.start(); !started) return fail(s, started.error(), UPROBE_ERR_FAILED);
    return UPROBE_OK;
}

uprobe_status uprobe_run(uprobe_session* s, int* exit_status) {
    auto status = s->session.run();
    if (!status) return fail(s, status.error(), UPROBE_ERR_FAILED);
    if (exit_status) *exit_status = *status;
    return UPROBE_OK;
}

void uprobe_stop(uprobe_session* s) { s->session.stop(); }

uint64_t uprobe_probe_hits(const uprobe_session* s, uint32_t id) {
    auto stats = s->session.stats();
    return id < stats.size() ? stats[id].hits : 0;
}

uprobe_status uprobe_read_memory(pid_t pid, uint64_t address, void* out, size_t size) {
    return uprobe::proc::read_memory(pid, address, out, size) ? UPROBE_OK : UPROBE_ERR_FAILED;
}

}  // extern "C"
