# Return-probe bookkeeping of the ptrace engine (return_probes.hpp): bytes
# in, exits out; shadow stacks over this process's own memory.
uprobe_test(return_probes_test unit SOURCES unit/return_probes_test.cpp DEPS uprobe_engine)
# Jump-table recognition for instruction-mode return probes: bytes in,
# table out (arch/x86_64/jump_table.hpp).
uprobe_test(arch_jump_table_test unit SOURCES unit/arch_jump_table_test.cpp DEPS uprobe_arch)
# Hardware shadow stacks: /proc/PID/status parsing and the SHSTK marking of
# an object (against readelf), which --return-mode=auto looks at.
uprobe_test(shadow_stack_test unit SOURCES unit/shadow_stack_test.cpp DEPS uprobe_proc uprobe_elf)
add_dependencies(shadow_stack_test ret_shstk ret_tail)
