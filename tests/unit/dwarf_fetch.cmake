# Arguments by DWARF name: compiled at sites of gcc-built targets, evaluated
# against synthetic registers and memory (no process).
uprobe_test(dwarf_fetch_test unit SOURCES unit/dwarf_fetch_test.cpp DEPS uprobe_probe uprobe_fetch uprobe_spec)
add_dependencies(dwarf_fetch_test dw_args dw_inline)
