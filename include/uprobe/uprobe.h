/* libuprobe's C ABI: the C++ Session API (uprobe/session.hpp) for C and
 * for other languages' foreign-function interfaces and debuggers.
 *
 * Handles are opaque. Every call that can fail returns a uprobe_status;
 * uprobe_last_error() then tells why in one line (a malformed spec or
 * condition: several lines, the last with a caret under the bad character).
 * Callbacks run on the thread that called uprobe_run(); the pointers they
 * receive are valid only during the call. UPROBE_API_VERSION is bumped on
 * every incompatible change (it is the C++ API's version too).
 */
#ifndef UPROBE_UPROBE_H
#define UPROBE_UPROBE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifndef UPROBE_API_VERSION
#define UPROBE_API_VERSION 1
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct uprobe_session uprobe_session;

typedef enum uprobe_status {
    UPROBE_OK = 0,
    UPROBE_ERR_USAGE = 1,  /* malformed spec or condition, call out of order */
    UPROBE_ERR_FAILED = 2, /* the request was fine, doing it failed */
} uprobe_status;

/* What the event callback wants done with the thread that hit. */
typedef enum uprobe_action {
    UPROBE_CONTINUE = 0,
    UPROBE_HOLD = 1,   /* keep it stopped at the probe; the hold callback runs */
    UPROBE_DETACH = 2, /* take the probes out of its process, let it run */
} uprobe_action;

/* What becomes of a held thread when the hold callback returns. */
typedef enum uprobe_release {
    UPROBE_RELEASE_RESUME = 0,
    UPROBE_RELEASE_DETACH = 1,
    UPROBE_RELEASE_DETACH_STOPPED = 2, /* left in a group-stop for `gdb -p` */
} uprobe_release;

/* x86-64 general-purpose registers in user_regs_struct order; rip is the
 * probe address. */
typedef struct uprobe_regs {
    uint64_t r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
    uint64_t rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
    uint64_t fs_base, gs_base, ds, es, fs, gs;
} uprobe_regs;

typedef enum uprobe_value_kind {
    UPROBE_VALUE_SIGNED, UPROBE_VALUE_UNSIGNED, UPROBE_VALUE_HEX, UPROBE_VALUE_FLOAT,
    UPROBE_VALUE_BOOL, UPROBE_VALUE_STRING, UPROBE_VALUE_TEXT,
    UPROBE_VALUE_ERROR /* text says why the value is missing */
} uprobe_value_kind;

typedef struct uprobe_arg {
    const char* name;
    uprobe_value_kind kind;
    int64_t i;        /* SIGNED */
    uint64_t u;       /* UNSIGNED, HEX, BOOL */
    double f;         /* FLOAT */
    const char* text; /* STRING, TEXT, ERROR; "" otherwise */
} uprobe_arg;

typedef struct uprobe_event {
    uint32_t probe_id; /* as returned by uprobe_add_probe */
    const char* probe; /* the probe's name */
    pid_t pid, tid;
    uint64_t ts_ns;    /* CLOCK_MONOTONIC */
    const char* comm;
    uint64_t addr;     /* runtime address of the probe site */
    int is_return;
    size_t nargs;
    const uprobe_arg* args;
} uprobe_event;

typedef uprobe_action (*uprobe_event_fn)(const uprobe_event* event, const uprobe_regs* regs, void* user);
/* The held thread is event->tid of event->pid; read its memory with
 * uprobe_read_memory while the callback runs. */
typedef uprobe_release (*uprobe_hold_fn)(const uprobe_event* event, const uprobe_regs* regs, void* user);

int uprobe_api_version(void);

uprobe_session* uprobe_session_new(void);
/* Stops and detaches a running session; every process is left untouched. */
void uprobe_session_free(uprobe_session* session);
/* The message of the last failed call on `session` ("" if none). */
const char* uprobe_last_error(const uprobe_session* session);

/* A probe spec as on the command line (docs/probes.md); *id may be NULL.
 * Also while running (from a callback or another thread). */
uprobe_status uprobe_add_probe(uprobe_session* session, const char* spec, uint32_t* id);
/* Its events stop at once (also while running); the ptrace engine then takes
 * its breakpoints out of every traced process (see Session::remove_probe). */
uprobe_status uprobe_remove_probe(uprobe_session* session, uint32_t id);
/* argv ends with NULL; PATH is searched. */
uprobe_status uprobe_launch(uprobe_session* session, const char* const* argv);
uprobe_status uprobe_attach(uprobe_session* session, pid_t pid);
/* Every process mapping a probe's binary, now and later; comm_glob may be
 * NULL (no filter). */
uprobe_status uprobe_global(uprobe_session* session, const char* comm_glob);
/* An event predicate, as `uprobe trace --if`. */
uprobe_status uprobe_set_condition(uprobe_session* session, const char* expression);

void uprobe_on_event(uprobe_session* session, uprobe_event_fn callback, void* user);
void uprobe_on_hold(uprobe_session* session, uprobe_hold_fn callback, void* user);

uprobe_status uprobe_start(uprobe_session* session);
/* Until every traced process exited or uprobe_stop; *exit_status (may be
 * NULL) gets the launched command's status as a shell reports it. */
uprobe_status uprobe_run(uprobe_session* session, int* exit_status);
/* From any thread or a signal handler. */
void uprobe_stop(uprobe_session* session);

/* Events delivered so far for probe `id` (after the condition). */
uint64_t uprobe_probe_hits(const uprobe_session* session, uint32_t id);

uprobe_status uprobe_read_memory(pid_t pid, uint64_t address, void* out, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* UPROBE_UPROBE_H */
