# Arguments by DWARF name, line/inline probes, split debug info, debuginfod
# (label: integration). Uses objcopy, readelf, and gdb/debuginfod when present.
uprobe_test(cli_dwarf_test integration SOURCES integration/cli_dwarf_test.cpp
  DEPS uprobe_test_support nlohmann_json::nlohmann_json)
add_dependencies(cli_dwarf_test uprobe dw_args dw_args_o2 dw_inline dw_malloc)
