# SDT marker arguments through fetch programs: no process needed.
uprobe_test(fetch_sdt_test unit SOURCES unit/fetch_sdt_test.cpp DEPS uprobe_fetch uprobe_spec uprobe_elf)
