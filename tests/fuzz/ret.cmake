# Jump-table recognition on arbitrary bytes must never crash or hang.
uprobe_fuzz(fuzz_jump_table SOURCES fuzz/fuzz_jump_table.cpp DEPS uprobe_arch)
