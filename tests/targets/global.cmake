# Targets of the global-probe, hold and API tests (tests/integration/cli_global_test.cpp,
# cli_hold_test.cpp, api_test.cpp). -O0 -g with frame pointers: gdb and our
# unwinder must agree on every frame.
uprobe_target(global_worker SOURCES global_worker.c OPTIONS -O0 -fno-omit-frame-pointer)
uprobe_target(hold_rounds SOURCES hold_rounds.c OPTIONS -O0 -fno-omit-frame-pointer)
uprobe_target(hold_threads SOURCES hold_threads.c OPTIONS -O0 -fno-omit-frame-pointer LIBS pthread)
uprobe_target(hold_vars SOURCES hold_vars.c OPTIONS -O0 -fno-omit-frame-pointer)
uprobe_target(hold_vars_opt SOURCES hold_vars.c OPTIONS -O2)
