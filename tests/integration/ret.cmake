# Return probes (FUNC%return) in both mechanisms (label: integration).
uprobe_test(engine_return_test integration SOURCES integration/engine_return_test.cpp
  DEPS uprobe_engine uprobe_spec)
add_dependencies(engine_return_test ret_funcs ret_tail ret_switch ret_switch_nopie ret_throw ret_go engine_insns uprobe_agent)
uprobe_test(cli_return_test integration SOURCES integration/cli_return_test.cpp
  DEPS uprobe_test_support nlohmann_json::nlohmann_json)
add_dependencies(cli_return_test uprobe ret_funcs ret_tail ret_switch)
