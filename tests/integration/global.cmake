# Global probes, hold, and the public API (label: integration).
uprobe_test(cli_global_test integration SOURCES integration/cli_global_test.cpp DEPS uprobe_test_support)
add_dependencies(cli_global_test uprobe uprobe_agent global_worker)
uprobe_test(api_test integration SOURCES integration/api_test.cpp
  DEPS uprobe_api uprobe_elf uprobe_test_support)
add_dependencies(api_test count_calls cli_funcs global_worker hold_rounds)
target_compile_definitions(api_test PRIVATE UPROBE_EXAMPLES_DIR="${PROJECT_BINARY_DIR}/examples")
uprobe_test(cli_hold_test integration SOURCES integration/cli_hold_test.cpp DEPS uprobe_test_support)
add_dependencies(cli_hold_test uprobe global_worker hold_rounds hold_threads hold_vars hold_vars_opt)
uprobe_test(cli_stack_test integration SOURCES integration/cli_stack_test.cpp DEPS uprobe_test_support)
add_dependencies(cli_stack_test uprobe cli_funcs)
