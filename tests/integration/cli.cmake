# End-to-end tests of the uprobe command (label: integration).
uprobe_test(cli_list_test integration SOURCES integration/cli_list_test.cpp
  DEPS uprobe_test_support nlohmann_json::nlohmann_json)
add_dependencies(cli_list_test uprobe uprobe_agent cli_funcs cli_funcs_nopie cli_waiter engine_insns)
uprobe_test(cli_trace_test integration SOURCES integration/cli_trace_test.cpp
  DEPS uprobe_test_support nlohmann_json::nlohmann_json)
add_dependencies(cli_trace_test uprobe uprobe_agent cli_funcs cli_funcs_nopie cli_waiter inline_static)
