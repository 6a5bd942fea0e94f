# Targets of the CLI tests (tests/integration/cli_*.cpp).
uprobe_target(cli_funcs SOURCES cli_funcs.c cli_funcs_step.c OPTIONS -O1 -fno-inline)
uprobe_target(cli_funcs_nopie SOURCES cli_funcs.c cli_funcs_step.c OPTIONS -O1 -fno-inline -fno-pie)
target_link_options(cli_funcs_nopie PRIVATE -no-pie)
uprobe_target(cli_waiter SOURCES cli_waiter.c OPTIONS -O1)
