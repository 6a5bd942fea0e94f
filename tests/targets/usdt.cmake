# Targets of the USDT tests (tests/integration/cli_usdt_test.cpp). -O0 -g
# as the flag contract says, except where sys/sdt.h's argument specs are the
# point: usdt_args_o2 (registers and immediates instead of stack slots) and
# usdt_args_nopie (a non-PIE executable).
uprobe_target(usdt_args SOURCES usdt_args.c OPTIONS -O0)
uprobe_target(usdt_args_o2 SOURCES usdt_args.c OPTIONS -O2)
uprobe_target(usdt_args_nopie SOURCES usdt_args.c OPTIONS -O0 -fno-pie)
target_link_options(usdt_args_nopie PRIVATE -no-pie)
uprobe_target(usdt_rounds SOURCES usdt_rounds.c OPTIONS -O0)
uprobe_target(usdt_fork SOURCES usdt_fork.c OPTIONS -O0)
add_library(usdt_lib SHARED usdt_lib.c)
target_compile_options(usdt_lib PRIVATE -O0 -g)
uprobe_target(usdt_linked SOURCES usdt_linked.c OPTIONS -O0 LIBS usdt_lib)
uprobe_target(usdt_dlopen SOURCES usdt_dlopen.c OPTIONS -O0 LIBS ${CMAKE_DL_LIBS})
uprobe_target(usdt_throw SOURCES usdt_throw.cc OPTIONS -O0)
