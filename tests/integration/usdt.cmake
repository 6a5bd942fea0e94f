# SDT (USDT) markers through the uprobe command (label: integration).
uprobe_test(cli_usdt_test integration SOURCES integration/cli_usdt_test.cpp
  DEPS uprobe_test_support nlohmann_json::nlohmann_json)
add_dependencies(cli_usdt_test uprobe usdt_args usdt_args_o2 usdt_args_nopie usdt_rounds usdt_fork usdt_lib
  usdt_linked usdt_dlopen usdt_throw)
