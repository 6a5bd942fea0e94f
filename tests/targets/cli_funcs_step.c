// The `step` marker of cli_funcs, in its own file: sys/sdt.h decides per
// translation unit whether markers have semaphores, and this one has none.
#include <sys/sdt.h>

__attribute__((noinline)) void emit_step(int i, const char* name) { DTRACE_PROBE2(cli_funcs, step, i, name); }
