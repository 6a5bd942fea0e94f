/* count_calls: counts the calls of one function in a launched program,
 * through libuprobe's C API (include/uprobe/uprobe.h).
 *
 *   count_calls FUNCTION PROGRAM [ARG...]
 *
 * The program runs with its own output; at its exit this prints
 * "FUNCTION: N calls" on stderr and exits with the program's status. */
#include <stdio.h>
#include <stdint.h>

#include "uprobe/uprobe.h"

static uprobe_action count(const uprobe_event* event, const uprobe_regs* regs, void* user) {
    (void)event;
    (void)regs;
    ++*(uint64_t*)user;
    return UPROBE_CONTINUE;
}

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s FUNCTION PROGRAM [ARG...]\n", argv[0]);
        return 2;
    }
    uprobe_session* session = uprobe_session_new();
    uint64_t calls = 0;
    int status = 0;
    if (uprobe_add_probe(session, argv[1], NULL) != UPROBE_OK ||
        uprobe_launch(session, (const char* const*)argv + 2) != UPROBE_OK) {
        fprintf(stderr, "count_calls: %s\n", uprobe_last_error(session));
        uprobe_session_free(session);
        return 2;
    }
    uprobe_on_event(session, count, &calls);
    if (uprobe_start(session) != UPROBE_OK || uprobe_run(session, &status) != UPROBE_OK) {
        fprintf(stderr, "count_calls: %s\n", uprobe_last_error(session));
        uprobe_session_free(session);
        return 1;
    }
    fprintf(stderr, "%s: %llu calls\n", argv[1], (unsigned long long)calls);
    uprobe_session_free(session);
    return status;
}
